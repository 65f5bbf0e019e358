//! One seeded trial: a world, a schedule of moves, the invariants after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use puppet_conductor::api::node::Phase;
use puppet_conductor::api::PuppetNode;
use puppet_conductor::cloud::{tags, Cloud, InstanceSettings, InstanceState, LaunchRequest};
use puppet_conductor::controller::master_cache::GuardedMaster;
use puppet_conductor::fakes::{Call, Fate, FaultKind, System};
use puppet_conductor::identity;
use puppet_conductor::runner::pool_triggers::{pool_owned, pool_view_of};
use puppet_conductor::runner::slim::slim_cached;
use puppet_conductor::runner::wiring::GuardedNode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::agents::{self, AgentState};
use crate::api::MemoryApi;
use crate::fixtures::Fixtures;
use crate::gate::SchedGate;
use crate::world::*;

/// How one trial is shaped.
#[derive(Clone, Debug)]
pub struct Config {
    /// Steps with user actions, faults and crashes.
    pub chaos_steps: usize,
    /// Steps after faults stop in which every node must converge.
    pub quiet_steps: usize,
    /// Most nodes alive at once.
    pub max_nodes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            chaos_steps: 80,
            quiet_steps: 1500,
            max_nodes: 3,
        }
    }
}

/// Who sent a CSR.
#[derive(Clone, Debug)]
enum Submitter {
    /// The agent of the instance launched for the certname's incarnation.
    Genuine,
    /// A certname squatter without the challenge.
    Forged,
    /// Someone who read a waiting CSR and sends its challenge with their own key.
    Replay,
}

/// A trial's outcome.
pub struct Outcome {
    pub steps: usize,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    /// The master had `orphans.action: Cleanup`.
    pub cleanup: bool,
    /// What the master's orphan sweep removed.
    pub swept: Swept,
    /// Pause moves made (nodes and master paused).
    pub pauses: usize,
    /// Reconciles that started while their object was paused (and not being deleted):
    /// nodes, and the master.
    pub paused_passes: (usize, usize),
    /// What the trial's pool did, when it had one.
    pub pool: Option<PoolTally>,
}

/// A pool trial's figures: nodes the pool created, and its roll after the faults.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolTally {
    pub created: usize,
    /// A roll after the faults stopped completed.
    pub rolled: bool,
    /// The fewest Ready nodes and the most live instances seen during that roll, and
    /// its bounds (`replicas - maxUnavailable`, `replicas + maxSurge`).
    pub roll_min_ready: usize,
    pub roll_max_instances: usize,
    pub roll_floor: usize,
    pub roll_ceiling: usize,
}

/// A roll under way after the faults stopped: its bounds and what it has seen.
#[derive(Clone, Copy, Debug)]
struct Roll {
    floor: usize,
    ceiling: usize,
    min_ready: usize,
    max_instances: usize,
}

/// The annotation that pauses a node or a master.
const PAUSED: &str = "puppet-conductor.dev/paused";

/// The calls that change something in EC2, the bucket or the CA.
fn mutates(call: &Call) -> bool {
    matches!(
        (call.system, call.operation),
        (System::Ec2, "RunInstances" | "TerminateInstances")
            | (System::Ca, "sign" | "clean" | "remove_request")
            | (System::S3, "PutObject" | "DeleteObject")
    )
}

/// Whether an object (as the API holds it) carries the paused annotation.
fn is_paused(obj: &Value) -> bool {
    obj["metadata"]["annotations"][PAUSED].as_str() == Some("true")
}

/// Removals the master's passes made (calls that landed), by system.
#[derive(Clone, Copy, Debug, Default)]
pub struct Swept {
    pub instances: usize,
    pub certificates: usize,
    pub objects: usize,
}

impl Swept {
    pub fn any(&self) -> bool {
        self.instances + self.certificates + self.objects > 0
    }

    pub fn add(&mut self, other: Swept) {
        self.instances += other.instances;
        self.certificates += other.certificates;
        self.objects += other.objects;
    }
}

pub struct Trial {
    cfg: Config,
    rng: StdRng,
    /// The master signs by policy (`autosign`), not in the operator.
    policy: bool,
    /// The master's `orphans.action` is `Cleanup`.
    cleanup: bool,
    /// Leftover instances of an earlier life launched so far.
    leftovers: usize,
    swept: Swept,
    /// UIDs of the nodes whose deletion leaves everything in place: created with
    /// `deletionPolicy: Orphan`, or removed with their finalizer stripped.
    orphans: BTreeSet<String>,
    /// Certnames `autosign` allowed (the CA signed them at submission).
    autosigned: BTreeSet<String>,
    step: usize,
    trace: Vec<String>,
    violations: Vec<String>,
    api: MemoryApi,
    gate: SchedGate,
    fx: Fixtures,
    factory: Arc<SimFactory>,
    op: Operator,
    /// Last trigger hash per object (the watch model).
    seen: BTreeMap<ObjKey, u64>,
    /// Last resourceVersion handled per object.
    revisions: BTreeMap<ObjKey, String>,
    /// Last (data, deletion) hash per Secret.
    secrets: BTreeMap<String, u64>,
    /// The resourceVersion of each Secret the Secret store was last given.
    secret_revisions: BTreeMap<String, String>,
    /// The master's trigger of its nodes (`runner::triggers::master_nodes_trigger`).
    master_nodes: Option<u64>,
    agents: BTreeMap<String, AgentState>,
    submitters: BTreeMap<String, Submitter>,
    /// Challenge and instance id of every genuine CSR an attacker could read while it waited.
    readable: BTreeMap<String, (String, String)>,
    /// Whether the master carried the operator's finalizer when last seen.
    master_finalized: bool,
    /// Node UID → name, for every node ever created.
    names: BTreeMap<String, String>,
    /// Node UID → step its deletion began.
    deleting_since: BTreeMap<String, usize>,
    /// Node UID → (incarnation, step) of the newest launch seen.
    newest_launch: BTreeMap<String, (i64, usize)>,
    /// Tokio task → (object, step it started).
    tasks: BTreeMap<tokio::task::Id, (ObjKey, usize)>,
    /// Certname → start step of the reconcile whose sign call was released last.
    sign_calls: BTreeMap<String, usize>,
    signs_seen: usize,
    signed_certnames: BTreeSet<String>,
    outages: BTreeSet<System>,
    bad_credentials: bool,
    namespace_deleted: bool,
    node_seq: usize,
    starts_at: BTreeMap<(ObjKey, Instant), usize>,
    quiet: bool,
    /// Step of the last loss of the records bucket.
    records_lost_at: Option<usize>,
    /// Node UID → events that may legitimately cost it an incarnation (its instance
    /// terminated or lost, its certificate cleaned, a sign whose outcome the operator
    /// cannot know): every launch after the first needs one.
    losses: BTreeMap<String, usize>,
    /// Certname → step a genuine agent last sent its CSR, and its key (hex SHA-256).
    csr_sent_at: BTreeMap<String, (usize, String)>,
    /// A Secret was deleted before anything held it (a user error nothing can undo in a
    /// terminating namespace).
    unheld_secret_lost: bool,
    /// When the hold sweep last ran.
    last_sweep: Instant,
    /// Consecutive wakes of an object caused by the operator's own writes.
    self_wakes: BTreeMap<ObjKey, usize>,
    /// "node certname" pairs whose status last said CertificateSigned=True.
    signed_in_status: BTreeSet<String>,
    /// Certnames some status ever said were signed.
    status_said_signed: BTreeSet<String>,
    /// Certname → step it was signed.
    signed_at: BTreeMap<String, usize>,
    /// Reconciles that started while their object was paused and not being deleted: task →
    /// who paused it (as the API showed when the pass started).
    paused_tasks: BTreeMap<tokio::task::Id, String>,
    pauses: usize,
    paused_passes: (usize, usize),
    /// The trial has a pool (`pools::POOL`): its maxSurge and maxUnavailable.
    pool: Option<(i64, i64)>,
    pool_tally: PoolTally,
    /// The pool's view of each of its nodes (`pool_view_of`), by name: a change wakes it.
    pool_views: BTreeMap<String, u64>,
    /// The UID each node name has now (a pool reuses names).
    current_uid: BTreeMap<String, String>,
    /// Of the pool pass that started last: its spec's `replicas + maxSurge`, and whether
    /// it started paused.
    pool_pass: Option<(usize, bool)>,
    roll: Option<Roll>,
}

fn secrets() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            CA_SECRET,
            vec![("tls.crt", "c"), ("tls.key", "k"), ("ca.crt", "a")],
        ),
        (
            CLOUD_SECRET,
            vec![("accessKeyId", "good"), ("secretAccessKey", "s")],
        ),
        (CHALLENGE_SECRET, vec![("key", "k")]),
    ]
}

fn hash_of(v: &Value) -> u64 {
    let d = Sha256::digest(v.to_string().as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap())
}

/// What wakes a reconcile of an object: the runner's own watch predicates, or, with
/// `PC_SIM_WATCH=all`, every change (the runner's watch before it filtered its own
/// status writes), to show what the simulation finds without them.
fn trigger(kind: Kind, obj: &Value) -> u64 {
    if std::env::var("PC_SIM_WATCH").is_ok_and(|v| v == "all") {
        return hash_of(&obj["metadata"]["resourceVersion"]);
    }
    let hash = match kind {
        Kind::Node => serde_json::from_value::<PuppetNode>(obj.clone())
            .ok()
            .and_then(|n| puppet_conductor::runner::triggers::node_trigger(&n)),
        Kind::Pool => serde_json::from_value::<puppet_conductor::api::PuppetNodePool>(obj.clone())
            .ok()
            .and_then(|p| puppet_conductor::runner::pool_triggers::pool_trigger(&p)),
        Kind::Master | Kind::Watch => {
            serde_json::from_value::<puppet_conductor::api::PuppetMaster>(obj.clone())
                .ok()
                .and_then(|m| puppet_conductor::runner::triggers::master_trigger(&m))
        }
    };
    hash.unwrap_or_else(|| hash_of(&obj["metadata"]["resourceVersion"]))
}

impl Trial {
    pub async fn new(seed: u64, cfg: Config) -> Self {
        let api = MemoryApi::default();
        let gate = SchedGate::default();
        let fx = Fixtures::new(gate.clone()).await;
        let client = api.client();
        let factory = Arc::new(SimFactory {
            client: client.clone(),
            ec2: fx.ec2.clone(),
            records: fx.records.clone(),
            ca: fx.ca.clone(),
            ca_pem: fx.ca_pem.clone(),
        });
        for (name, data) in [
            (
                CA_SECRET,
                vec![("tls.crt", "c"), ("tls.key", "k"), ("ca.crt", "a")],
            ),
            (
                CLOUD_SECRET,
                vec![("accessKeyId", "good"), ("secretAccessKey", "s")],
            ),
            (CHALLENGE_SECRET, vec![("key", "k")]),
        ] {
            api.create("secrets", NS, secret_object(name, &data))
                .unwrap();
        }
        let mut rng = StdRng::seed_from_u64(seed);
        // A quarter of the trials sign by policy: puppetserver runs `autosign` at submission.
        let policy = rng.random_bool(0.25);
        // A third clean up orphans (short minAge), so the sweep acts within a trial.
        let cleanup = rng.random_bool(1.0 / 3.0);
        api.create("puppetmasters", NS, trial_master_object(policy, cleanup))
            .unwrap();
        let op = Operator::start(client, factory.clone());
        let mut t = Self {
            cfg,
            rng,
            policy,
            cleanup,
            leftovers: 0,
            swept: Swept::default(),
            orphans: BTreeSet::new(),
            autosigned: BTreeSet::new(),
            step: 0,
            trace: Vec::new(),
            violations: Vec::new(),
            api,
            gate,
            fx,
            factory,
            op,
            seen: BTreeMap::new(),
            revisions: BTreeMap::new(),
            secrets: BTreeMap::new(),
            secret_revisions: BTreeMap::new(),
            master_nodes: None,
            agents: BTreeMap::new(),
            submitters: BTreeMap::new(),
            readable: BTreeMap::new(),
            master_finalized: false,
            names: BTreeMap::new(),
            deleting_since: BTreeMap::new(),
            newest_launch: BTreeMap::new(),
            tasks: BTreeMap::new(),
            sign_calls: BTreeMap::new(),
            signs_seen: 0,
            signed_certnames: BTreeSet::new(),
            outages: BTreeSet::new(),
            bad_credentials: false,
            namespace_deleted: false,
            node_seq: 0,
            starts_at: BTreeMap::new(),
            quiet: false,
            records_lost_at: None,
            losses: BTreeMap::new(),
            csr_sent_at: BTreeMap::new(),
            unheld_secret_lost: false,
            signed_in_status: BTreeSet::new(),
            status_said_signed: BTreeSet::new(),
            self_wakes: BTreeMap::new(),
            last_sweep: Instant::now(),
            signed_at: BTreeMap::new(),
            paused_tasks: BTreeMap::new(),
            pauses: 0,
            paused_passes: (0, 0),
            pool: None,
            pool_tally: PoolTally::default(),
            pool_views: BTreeMap::new(),
            current_uid: BTreeMap::new(),
            pool_pass: None,
            roll: None,
        };
        t.create_node();
        // A fifth of the trials have a pool of one to three nodes (they cost three times as
        // much as the others).
        if t.rng.random_bool(0.2) {
            let (surge, unavailable) = [(1, 0), (0, 1), (1, 1), (2, 0)][t.rng.random_range(0..4)];
            let replicas = t.rng.random_range(1..=3);
            t.note(format!(
                "user creates pool {} ({replicas} nodes, maxSurge {surge}, maxUnavailable {unavailable})",
                crate::pools::POOL
            ));
            t.api
                .create(
                    "puppetnodepools",
                    NS,
                    crate::pools::pool_object(
                        replicas,
                        surge,
                        unavailable,
                        crate::pools::IMAGES[0],
                        &["role::web"],
                    ),
                )
                .expect("the trial's pool");
            t.pool = Some((surge, unavailable));
        }
        if cleanup {
            t.note(format!(
                "the master cleans up orphans (minAge {}s)",
                ORPHAN_MIN_AGE.as_secs()
            ));
            // Something for the sweep from the start.
            t.leftover_instance().await;
        }
        t
    }

    fn note(&mut self, line: String) {
        self.trace.push(format!(
            "{:>4} t={:>6.1}s {line}",
            self.step,
            self.elapsed()
        ));
    }

    fn elapsed(&self) -> f64 {
        self.fx.clock_origin.elapsed().as_secs_f64()
    }

    /// Something that may legitimately cost node `uid` its incarnation.
    fn loss(&mut self, uid: &str) {
        *self.losses.entry(uid.to_string()).or_default() += 1;
    }

    /// A loss for every node that exists now.
    fn loss_for_all(&mut self) {
        let uids: Vec<String> = self.names.keys().cloned().collect();
        for uid in uids {
            self.loss(&uid);
        }
    }

    /// The node whose derived certname (or signature record key) `target` names.
    fn uid_of_target(&self, target: &str) -> Option<String> {
        let certname = target
            .rsplit('/')
            .next()
            .unwrap_or(target)
            .trim_end_matches(".json");
        let (base, _) = certname.rsplit_once('-')?;
        self.names
            .keys()
            .find(|uid| {
                identity::certname(uid, 1, None)
                    .rsplit_once('-')
                    .is_some_and(|(b, _)| b == base)
            })
            .cloned()
    }

    /// A sign call, or the write of the signature record that precedes it, whose outcome
    /// the operator cannot learn: the incarnation's challenge is spent by design.
    fn note_uncertain_sign(&mut self, call: &Call, fate: Fate, delivery: bool) {
        let signing = (call.system == System::Ca && call.operation == "sign")
            || (call.system == System::S3
                && call.operation == "PutObject"
                && call.target.contains("signatures/"));
        let uncertain = if delivery {
            fate == Fate::Lost
        } else {
            matches!(fate, Fate::Lost | Fate::Fail(FaultKind::Timeout))
        };
        if signing && uncertain {
            if let Some(uid) = self.uid_of_target(&call.target) {
                self.loss(&uid);
            }
        }
    }

    fn violation(&mut self, what: String) {
        self.note(format!("VIOLATION: {what}"));
        self.violations.push(what);
    }

    /// Lets every task run until it parks at the gate or finishes.
    async fn settle(&mut self) {
        // Paused clock: a 1 ns sleep returns only once every other task is idle.
        tokio::time::sleep(Duration::from_nanos(1)).await;
        self.gate.prune();
    }

    pub async fn run(mut self) -> Outcome {
        for _ in 0..self.cfg.chaos_steps {
            if !self.step_once().await {
                break;
            }
        }
        self.quiet = true;
        self.outages.clear();
        if self.bad_credentials {
            self.set_credentials(true);
        }
        self.note("faults stop".into());
        // Every pause is lifted with the faults.
        for obj in self.live_nodes() {
            if is_paused(&obj) {
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.set_paused(Kind::Node, &name, false);
            }
        }
        if self
            .api
            .get("puppetmasters", NS, MASTER)
            .is_some_and(|m| is_paused(&m))
        {
            self.set_paused(Kind::Master, MASTER, false);
        }
        if self
            .api
            .get("puppetnodepools", NS, crate::pools::POOL)
            .is_some_and(|p| is_paused(&p))
        {
            self.set_paused(Kind::Pool, crate::pools::POOL, false);
        }
        // A user puts back Secrets a prune removed (impossible in a terminating namespace).
        for (name, data) in secrets() {
            if self.api.get("secrets", NS, name).is_none() && !self.namespace_deleted {
                self.note(format!("user re-creates Secret {name}"));
                let _ = self.api.create("secrets", NS, secret_object(name, &data));
            }
        }
        let mut converged = false;
        let mut budget = self.cfg.quiet_steps;
        let mut taken = 0;
        // At least the quiet steps, and at least two visibility graces of the clock: a
        // restarted operator waits a grace before it reads a launch EC2 lost as gone.
        let quiet_since = Instant::now();
        let at_least = 2 * puppet_conductor::controller::snapshot::LAUNCH_VISIBILITY_GRACE
            + Duration::from_secs(120);
        while taken < budget
            || (quiet_since.elapsed() < at_least && taken < 4 * self.cfg.quiet_steps)
        {
            if !self.violations.is_empty() {
                break;
            }
            if self.converged() {
                // A pool trial then rolls its pool, with as many quiet steps again.
                if self.start_roll() {
                    budget = taken + self.cfg.quiet_steps;
                } else {
                    self.finish_roll();
                    converged = true;
                    break;
                }
            }
            self.step_once().await;
            taken += 1;
        }
        if self.violations.is_empty() && !converged {
            let state = self.describe_state();
            self.violation(format!(
                "did not converge within {} quiet steps: {state}",
                self.cfg.quiet_steps
            ));
        }
        self.op.kill();
        Outcome {
            steps: self.step,
            violations: self.violations,
            trace: self.trace,
            cleanup: self.cleanup,
            swept: self.swept,
            pauses: self.pauses,
            pool: self.pool.map(|_| self.pool_tally),
            paused_passes: self.paused_passes,
        }
    }

    async fn step_once(&mut self) -> bool {
        self.settle().await;
        self.observe().await;
        if !self.violations.is_empty() {
            return false;
        }
        self.act().await;
        self.step += 1;
        true
    }

    // ---- observation: completions, the watch model, invariants ----

    async fn observe(&mut self) {
        for (key, after, error) in self.op.collect().await {
            let what = match error {
                Some(e) => format!("failed: {e}"),
                None => "ok".into(),
            };
            self.note(format!("{key:?} done ({what}), requeue {after:?}"));
        }
        for name in self.op.wake_nodes() {
            self.note(format!(
                "{name}: woken by the master's observation (instance gone or CA entry changed)"
            ));
        }
        self.watch();
        self.check_instances();
        self.check_signatures();
        self.check_roll();
    }

    /// A node as the watch step sees it: its UID for its name (a namesake made after a
    /// deletion is a new node, and the old one's cleanup is checked), and, for a pool's
    /// node, what wakes the pool and what bounds its creation.
    fn node_seen(&mut self, name: &str, uid: &str, obj: &Value) {
        if let Some(old) = self.current_uid.insert(name.to_string(), uid.to_string()) {
            if old != uid {
                self.note(format!("node {name} is a new node now (UID {uid})"));
                self.check_cleanup(&old);
            }
        }
        let new = !self.names.contains_key(uid);
        self.names
            .entry(uid.to_string())
            .or_insert_with(|| name.to_string());
        if crate::pools::controller_uid(obj).is_none() {
            return;
        }
        let Ok(node) = serde_json::from_value::<PuppetNode>(obj.clone()) else {
            return;
        };
        if !pool_owned(&node) {
            return;
        }
        let view = pool_view_of(&node);
        if self.pool_views.insert(name.to_string(), view) != Some(view) {
            self.op
                .schedule((Kind::Pool, crate::pools::POOL.to_string()), Instant::now());
        }
        if !new {
            return;
        }
        self.pool_tally.created += 1;
        self.note(format!("the pool's node {name} appears (UID {uid})"));
        let count = crate::pools::pool_spec(&self.api).map_or(0, |spec| {
            crate::pools::pool_nodes(&self.api, &spec.uid).len()
        });
        match self.pool_pass {
            Some((_, true)) => self.violation(format!(
                "the pool created node {name} in a pass that started paused"
            )),
            Some((cap, false)) if count > cap => self.violation(format!(
                "the pool created node {name} and has {count} nodes (deleting ones too), more than replicas + maxSurge = {cap} of the spec its pass read"
            )),
            _ => {}
        }
    }

    /// During the roll after the faults stopped: never fewer Ready nodes than
    /// `replicas - maxUnavailable`, never more live instances than `replicas + maxSurge`.
    fn check_roll(&mut self) {
        let Some(mut roll) = self.roll else {
            return;
        };
        let Some(spec) = crate::pools::pool_spec(&self.api) else {
            return;
        };
        let nodes = crate::pools::pool_nodes(&self.api, &spec.uid);
        let ready = crate::pools::ready_count(&nodes);
        let live = crate::pools::live_instances(&self.fx.instances(), &crate::pools::uids(&nodes));
        roll.min_ready = roll.min_ready.min(ready);
        roll.max_instances = roll.max_instances.max(live);
        self.roll = Some(roll);
        if ready < roll.floor {
            self.violation(format!(
                "during the roll {ready} of the pool's nodes were Ready, fewer than replicas - maxUnavailable = {}",
                roll.floor
            ));
        }
        if live > roll.ceiling {
            self.violation(format!(
                "during the roll the pool's nodes had {live} live instances, more than replicas + maxSurge = {}",
                roll.ceiling
            ));
        }
    }

    /// Once everything converged after the faults, a pool whose nodes are all Ready is
    /// rolled (a new image): whether a roll started.
    fn start_roll(&mut self) -> bool {
        if self.pool.is_none() || self.roll.is_some() || self.pool_tally.rolled {
            return false;
        }
        let Some(spec) = crate::pools::pool_spec(&self.api) else {
            return false;
        };
        let master_ok = self
            .api
            .get("puppetmasters", NS, MASTER)
            .is_some_and(|m| m["metadata"]["deletionTimestamp"].is_null());
        if spec.deleting
            || spec.paused
            || spec.replicas == 0
            || !master_ok
            || self.namespace_deleted
        {
            return false;
        }
        let nodes = crate::pools::pool_nodes(&self.api, &spec.uid);
        if nodes.len() != spec.replicas || crate::pools::ready_count(&nodes) != spec.replicas {
            return false;
        }
        let image = self
            .api
            .get("puppetnodepools", NS, crate::pools::POOL)
            .and_then(|p| {
                p["spec"]["template"]["spec"]["instance"]["imageId"]
                    .as_str()
                    .map(String::from)
            })
            .unwrap_or_default();
        let next = crate::pools::IMAGES
            .iter()
            .find(|i| **i != image)
            .copied()
            .unwrap_or(crate::pools::IMAGES[0]);
        self.note(format!(
            "user changes the pool's image to {next}: a roll of {} nodes (maxSurge {}, maxUnavailable {})",
            spec.replicas, spec.surge, spec.unavailable
        ));
        self.api.edit(
            "puppetnodepools",
            NS,
            crate::pools::POOL,
            &json!({"spec": {"template": {"spec": {"instance": {"imageId": next}}}}}),
        );
        self.roll = Some(Roll {
            floor: spec.replicas.saturating_sub(spec.unavailable),
            ceiling: spec.replicas + spec.surge,
            min_ready: spec.replicas,
            max_instances: 0,
        });
        true
    }

    /// The pool trial's figures, with its roll's once the roll is done.
    fn finish_roll(&mut self) {
        if let Some(roll) = self.roll.take() {
            self.pool_tally.rolled = true;
            self.pool_tally.roll_min_ready = roll.min_ready;
            self.pool_tally.roll_max_instances = roll.max_instances;
            self.pool_tally.roll_floor = roll.floor;
            self.pool_tally.roll_ceiling = roll.ceiling;
        }
    }

    fn watch(&mut self) {
        let now = Instant::now();
        // The first step after a start is the watches' initial list: the node store is
        // ready (stands for a LIST) only once it holds every node.
        let initial = !self.op.nodes_synced;
        if initial {
            self.op.nodes.apply_watcher_event(&watcher::Event::Init);
        }
        let mut present = BTreeSet::new();
        let mut changed_nodes = Vec::new();
        // The API server's garbage collector: nodes of a pool that is gone are deleted.
        if self.pool.is_some() {
            for name in crate::pools::collect_garbage(&self.api) {
                self.note(format!(
                    "the garbage collector deletes node {name} (its pool is gone)"
                ));
            }
        }
        for kind in [Kind::Master, Kind::Node, Kind::Pool] {
            for (name, rv) in self.api.revisions(kind.plural(), NS) {
                let key = (kind, name.clone());
                present.insert(key.clone());
                if self.revisions.get(&key) == Some(&rv) {
                    continue;
                }
                self.revisions.insert(key.clone(), rv);
                let Some(obj) = self.api.get(kind.plural(), NS, &name) else {
                    continue;
                };
                let h = trigger(kind, &obj);
                if self.seen.get(&key) != Some(&h) {
                    let first = self.seen.insert(key.clone(), h).is_none();
                    self.op.schedule(key.clone(), now);
                    // The operator's own write woke it: a chain of those is a loop.
                    let chain = self.self_wakes.entry(key.clone()).or_default();
                    if !first && self.api.changed_by_operator(kind.plural(), NS, &name) {
                        *chain += 1;
                    } else {
                        *chain = 0;
                    }
                    if *chain > 6 {
                        let n = *chain;
                        self.violation(format!(
                            "{key:?} woke itself {n} times in a row with its own writes"
                        ));
                    }
                }
                match kind {
                    Kind::Pool => {}
                    Kind::Node => {
                        let uid = obj["metadata"]["uid"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        self.node_seen(&name, &uid, &obj);
                        if !obj["metadata"]["deletionTimestamp"].is_null() {
                            self.deleting_since.entry(uid).or_insert(self.step);
                        }
                        if let Ok(mut node) = serde_json::from_value::<GuardedNode>(obj.clone()) {
                            slim_cached(&mut node);
                            let event = if initial {
                                watcher::Event::InitApply(node)
                            } else {
                                watcher::Event::Apply(node)
                            };
                            self.op.nodes.apply_watcher_event(&event);
                        }
                        changed_nodes.push(obj);
                    }
                    // Not an API kind: the watch step never lists it.
                    Kind::Watch => {}
                    Kind::Master => {
                        if let Ok(mut master) = serde_json::from_value::<GuardedMaster>(obj.clone())
                        {
                            slim_cached(&mut master);
                            self.op
                                .masters
                                .apply_watcher_event(&watcher::Event::Apply(master));
                        }
                        self.master_finalized = obj["metadata"]["finalizers"]
                            .as_array()
                            .is_some_and(|f| f.iter().any(|f| f == "puppet-conductor.dev/nodes"));
                        // The runner's master-to-nodes predicate: a new generation, or a
                        // pause or unpause, reconciles every node of the master.
                        let g = serde_json::from_value::<puppet_conductor::api::PuppetMaster>(
                            obj.clone(),
                        )
                        .ok()
                        .and_then(|m| puppet_conductor::runner::triggers::master_nodes_trigger(&m));
                        if self.master_nodes.is_some() && self.master_nodes != g {
                            for (n, _) in self.api.revisions("puppetnodes", NS) {
                                self.op.schedule((Kind::Node, n), now);
                            }
                        }
                        self.master_nodes = g;
                    }
                }
            }
        }
        if initial {
            self.op.nodes.apply_watcher_event(&watcher::Event::InitDone);
            self.op.nodes_synced = true;
        }
        // Secret changes (data, deletion; not the operator's finalizer writes) wake the
        // master; every change goes to the Secret metadata store.
        let mut secrets_present = BTreeSet::new();
        for (name, rv) in self.api.revisions("secrets", NS) {
            secrets_present.insert(name.clone());
            let Some(obj) = self.api.get("secrets", NS, &name) else {
                continue;
            };
            if self.secret_revisions.insert(name.clone(), rv.clone()) != Some(rv) {
                if let Ok(meta) = serde_json::from_value::<PartialObjectMeta<Secret>>(obj.clone()) {
                    self.op
                        .secrets
                        .apply_watcher_event(&watcher::Event::Apply(meta));
                }
            }
            let h = hash_of(&json!([obj["data"], obj["metadata"]["deletionTimestamp"]]));
            if self.secrets.insert(name, h) != Some(h) {
                self.op.schedule((Kind::Master, MASTER.to_string()), now);
            }
        }
        let gone_secrets: Vec<String> = self
            .secret_revisions
            .keys()
            .filter(|name| !secrets_present.contains(*name))
            .cloned()
            .collect();
        for name in gone_secrets {
            self.secret_revisions.remove(&name);
            let meta: PartialObjectMeta<Secret> = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": NS},
            }))
            .expect("a Secret's metadata");
            self.op
                .secrets
                .apply_watcher_event(&watcher::Event::Delete(meta));
        }
        for obj in changed_nodes {
            self.check_conditions(obj);
        }
        let gone: Vec<ObjKey> = self
            .revisions
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if key.0 == Kind::Master {
                let gone = json!({
                    "apiVersion": "puppet-conductor.dev/v1alpha1",
                    "kind": "PuppetMaster",
                    "metadata": {"name": key.1, "namespace": NS},
                });
                if let Ok(master) = serde_json::from_value::<GuardedMaster>(gone) {
                    self.op
                        .masters
                        .apply_watcher_event(&watcher::Event::Delete(master));
                }
            }
            if key.0 == Kind::Node {
                let gone = json!({
                    "apiVersion": "puppet-conductor.dev/v1alpha1",
                    "kind": "PuppetNode",
                    "metadata": {"name": key.1, "namespace": NS},
                });
                if let Ok(node) = serde_json::from_value::<GuardedNode>(gone) {
                    self.op
                        .nodes
                        .apply_watcher_event(&watcher::Event::Delete(node));
                }
            }
            self.seen.remove(&key);
            self.revisions.remove(&key);
            self.op.queue.remove(&key);
            self.note(format!("{key:?} is gone from the API"));
            if key.0 == Kind::Pool {
                continue;
            }
            if key.0 == Kind::Node {
                if self.pool_views.remove(&key.1).is_some() {
                    self.op
                        .schedule((Kind::Pool, crate::pools::POOL.to_string()), now);
                }
                let uid = self.current_uid.remove(&key.1).or_else(|| {
                    self.names
                        .iter()
                        .find(|(_, n)| **n == key.1)
                        .map(|(u, _)| u.clone())
                });
                if let Some(uid) = uid {
                    self.check_cleanup(&uid);
                }
            } else if self.master_finalized && !self.api.list("puppetnodes", NS).is_empty() {
                self.violation("the master was released while PuppetNodes still name it".into());
            }
        }
    }

    /// At most one live instance per node, never two incarnations at once, and no
    /// incarnation launched without a loss that called for it.
    fn check_instances(&mut self) {
        let mut live: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut unneeded = Vec::new();
        for i in self.fx.instances() {
            let uid = i.tags.get(tags::NODE_UID).cloned().unwrap_or_default();
            let inc = i
                .tags
                .get(tags::INCARNATION)
                .and_then(|t| identity::parse_incarnation(t))
                .unwrap_or(0);
            let newest = self.newest_launch.entry(uid.clone()).or_insert((0, 0));
            if inc > newest.0 {
                *newest = (inc, self.step);
                let losses = self.losses.get(&uid).copied().unwrap_or(0);
                if inc as usize > losses + 1 {
                    let name = self.names.get(&uid).cloned().unwrap_or_default();
                    unneeded.push(format!(
                        "node {name} launched incarnation {inc} after {losses} loss(es) of its instance or certificate: a replacement without a cause"
                    ));
                }
            }
            if matches!(i.state, InstanceState::Pending | InstanceState::Running) {
                live.entry(uid)
                    .or_default()
                    .push(format!("{} (incarnation {inc})", i.id));
            }
        }
        for what in unneeded {
            self.violation(what);
        }
        for (uid, ids) in live {
            if ids.len() > 1 {
                let name = self.names.get(&uid).cloned().unwrap_or_default();
                self.violation(format!(
                    "node {name} has {} live instances: {ids:?}",
                    ids.len()
                ));
            }
        }
    }

    /// Nothing is left of a node whose deletion completed.
    fn check_cleanup(&mut self, uid: &str) {
        let name = self.names.get(uid).cloned().unwrap_or_default();
        if self.orphans.contains(uid) {
            // `deletionPolicy: Orphan`: released at once, everything left in place.
            return;
        }
        for i in self.fx.instances() {
            if i.tags.get(tags::NODE_UID).map(String::as_str) == Some(uid)
                && matches!(i.state, InstanceState::Pending | InstanceState::Running)
            {
                self.violation(format!(
                    "deleted node {name} left instance {} {}",
                    i.id, i.state
                ));
            }
        }
        let newest = self
            .newest_launch
            .get(uid)
            .map_or(1, |(inc, _)| *inc)
            .max(1);
        for inc in 1..=newest + 1 {
            let certname = identity::certname(uid, inc, None);
            // With the records lost after signing, nothing proves the operator signed it:
            // the trust rules forbid revoking it (reported, not revoked).
            // (The signing pass claimed the signature when it began; a loss after that
            // destroys the claim even if the CA signs only later.)
            let evidence_lost = self.records_lost_at.is_some_and(|lost| {
                self.signed_at
                    .get(&certname)
                    .is_some_and(|signed| *signed <= lost)
                    || self
                        .sign_calls
                        .get(&certname)
                        .is_some_and(|asked| *asked <= lost)
            });
            if self.fx.ca_signed_now(&certname) && !evidence_lost {
                self.violation(format!(
                    "deleted node {name} left certificate {certname} signed"
                ));
            }
            if self.fx.has_records(&certname) {
                self.violation(format!("deleted node {name} left records of {certname}"));
            }
            // A CSR an agent sent before the deletion began was there for the cleanup to see
            // (an attacker's, sent during the release, may stay: the master's sweep's).
            let sent_before = match (
                self.csr_sent_at.get(&certname),
                self.deleting_since.get(uid),
            ) {
                (Some((sent, key)), Some(since)) if sent < since => Some(key.clone()),
                _ => None,
            };
            let waiting = |key: &str| {
                self.fx
                    .ca
                    .requests()
                    .iter()
                    .any(|c| c.certname == certname && c.public_key_sha256 == key)
            };
            if sent_before.is_some_and(|key| waiting(&key)) {
                self.violation(format!(
                    "deleted node {name} left the CSR of {certname} waiting, sent before its deletion began"
                ));
            }
        }
    }

    /// The nodes whose things `call` removes, if it lands: (node UID, what), read from
    /// the fakes (an instance's tag) and the call (a certname, a bucket key).
    /// `None` when `call` removes nothing.
    fn removal_targets(&self, call: &Call) -> Option<Vec<(String, String)>> {
        let target = &call.target;
        Some(match (call.system, call.operation) {
            (System::Ec2, "TerminateInstances") => {
                let instances = self.fx.instances();
                target
                    .split(',')
                    .filter_map(|id| {
                        let i = instances.iter().find(|i| i.id == id)?;
                        let uid = i.tags.get(tags::NODE_UID)?.clone();
                        Some((uid, format!("terminated instance {id}")))
                    })
                    .collect()
            }
            (System::Ca, "clean" | "remove_request") => self
                .uid_of_target(target)
                .map(|uid| (uid, format!("cleaned {target} at the CA")))
                .into_iter()
                .collect(),
            (System::S3, "DeleteObject") => self
                .uid_of_target(target)
                .map(|uid| (uid, format!("deleted {target}")))
                .into_iter()
                .collect(),
            _ => return None,
        })
    }

    /// A removal that lands: the master's orphan sweep never takes anything of a node the
    /// API still has (deleting ones too: their own finalizer cleans up), and a node's pass
    /// never takes another live node's things.
    fn check_removal(&mut self, call: &Call, task: Option<tokio::task::Id>) {
        let Some((key, started)) = task.and_then(|t| self.tasks.get(&t)).cloned() else {
            return;
        };
        let Some(targets) = self.removal_targets(call) else {
            return;
        };
        if key.0 == Kind::Master {
            self.note(format!(
                "  the master's sweep: {:?} {} {}",
                call.system, call.operation, call.target
            ));
            match call.system {
                System::Ec2 => self.swept.instances += 1,
                System::Ca => self.swept.certificates += 1,
                System::S3 => self.swept.objects += 1,
            }
        }
        let existing: BTreeMap<String, bool> = self
            .live_nodes()
            .iter()
            .map(|n| {
                (
                    n["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    !n["metadata"]["deletionTimestamp"].is_null(),
                )
            })
            .collect();
        for (uid, what) in targets {
            let Some(deleting) = existing.get(&uid).copied() else {
                continue;
            };
            let name = self.names.get(&uid).cloned().unwrap_or_default();
            match key.0 {
                Kind::Master => {
                    self.violation(format!(
                        "the master's orphan sweep (pass of step {started}) {what} of node {name}, which still exists (deleting: {deleting})"
                    ));
                }
                Kind::Node if !deleting && self.names.get(&uid) != Some(&key.1) => {
                    self.violation(format!(
                        "the pass of node {} {what} of live node {name}",
                        key.1
                    ));
                }
                _ => {}
            }
        }
    }

    /// What nodes that are gone from the API left behind and a `Cleanup` master must
    /// remove: live instances, signed certificates and records. Waiting CSRs are not
    /// counted: their age is the operator's wall clock's, which a trial barely moves.
    /// Nothing while a poisoned CSR breaks the CA's listing: the sweep needs the CA, the
    /// cloud and the bucket all answering (an unknown is not "no owner").
    fn orphans_left(&self) -> Vec<String> {
        let mut left = Vec::new();
        if self
            .fx
            .ca
            .requests()
            .iter()
            .any(|c| c.certname.starts_with("poison"))
        {
            return left;
        }
        let live: BTreeSet<String> = self
            .live_nodes()
            .iter()
            .filter_map(|n| n["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        for i in self.fx.instances() {
            let uid = i.tags.get(tags::NODE_UID).cloned().unwrap_or_default();
            if !live.contains(&uid)
                && matches!(i.state, InstanceState::Pending | InstanceState::Running)
            {
                left.push(format!("instance {} {}", i.id, i.state));
            }
        }
        for uid in self.names.keys().filter(|u| !live.contains(*u)) {
            let newest = self.newest_launch.get(uid).map_or(1, |(inc, _)| *inc);
            for inc in 1..=newest.max(1) + 1 {
                let certname = identity::certname(uid, inc, None);
                if self.fx.ca_signed_now(&certname) {
                    left.push(format!("certificate {certname}"));
                }
                if self.fx.records.record(&certname).is_some() {
                    left.push(format!("record of {certname}"));
                }
            }
        }
        left
    }

    /// Every signature the CA made was allowed by the trust rules when it was asked for.
    fn check_signatures(&mut self) {
        let signed = self.fx.signed_history();
        for (certname, public_key_sha) in signed.into_iter().skip(self.signs_seen) {
            self.signs_seen += 1;
            let asked_at = self.sign_calls.get(&certname).copied().unwrap_or(self.step);
            self.signed_at.entry(certname.clone()).or_insert(self.step);
            if !self.signed_certnames.insert(certname.clone()) {
                if self.records_forgot(&certname) {
                    self.note(format!(
                        "{certname} signed again: every trace of its first signature was destroyed"
                    ));
                } else {
                    self.violation(format!("{certname} was signed a second time"));
                }
                continue;
            }
            match self.submitters.get(&public_key_sha).cloned() {
                None => self.violation(format!("{certname} signed for a key no agent sent")),
                Some(Submitter::Forged) => {
                    self.violation(format!("{certname} signed for a forged CSR (no challenge)"))
                }
                Some(Submitter::Replay) | Some(Submitter::Genuine) => {}
            }
            let Some(uid) = self
                .names
                .keys()
                .find(|u| (1..=20).any(|inc| identity::certname(u, inc, None) == certname))
                .cloned()
            else {
                self.violation(format!("{certname} signed but no node ever had it"));
                continue;
            };
            let inc = (1..=20)
                .find(|inc| identity::certname(&uid, *inc, None) == certname)
                .unwrap_or(0);
            // Autosign decides from the records alone: its rule (never once the record
            // says deleting or fencing) is checked when it decides.
            if let Some(since) = self
                .deleting_since
                .get(&uid)
                .filter(|_| !self.autosigned.contains(&certname))
            {
                if *since < asked_at {
                    self.violation(format!(
                        "{certname} signed for a node deleting since step {since} (asked at step {asked_at})"
                    ));
                }
            }
            if let Some((newest, at)) = self.newest_launch.get(&uid) {
                if *newest > inc && *at < asked_at {
                    self.violation(format!(
                        "{certname} signed for incarnation {inc} after incarnation {newest} launched"
                    ));
                }
            }
        }
    }

    /// A condition never claims what observation did not see.
    fn check_conditions(&mut self, obj: Value) {
        let Ok(node) = serde_json::from_value::<PuppetNode>(obj) else {
            return;
        };
        let Some(status) = node.status.as_ref() else {
            return;
        };
        let name = node.metadata.name.clone().unwrap_or_default();
        let signed = status
            .conditions
            .iter()
            .find(|c| c.type_ == "CertificateSigned")
            .map(|c| (c.status == "True", c.reason.clone()));
        // Said of the same certname: a new incarnation's "no CSR yet" is about another one.
        let said = format!("{name} {}", status.certname.as_deref().unwrap_or_default());
        let was_signed = self.signed_in_status.contains(&said);
        if let (Some((false, reason)), Some(certname)) = (&signed, &status.certname) {
            // Unknown is not empty: a certificate the CA still holds is never "no CSR".
            if was_signed && reason == "NoRequest" && self.fx.ca_signed_now(certname) {
                self.violation(format!(
                    "{name} says no CSR for {certname} while the CA holds its signed certificate"
                ));
            }
        }
        if matches!(signed, Some((true, _))) {
            if let Some(c) = &status.certname {
                self.status_said_signed.insert(c.clone());
            }
            self.signed_in_status.insert(said);
        } else {
            self.signed_in_status.remove(&said);
        }
        if status.phase != Some(Phase::Ready) {
            return;
        }
        let certname = status.certname.clone().unwrap_or_default();
        if !self.signed_certnames.contains(&certname) {
            self.violation(format!("{name} is Ready but {certname} was never signed"));
        }
        let known = status
            .instance_id
            .as_ref()
            .is_some_and(|id| self.fx.instances().iter().any(|i| &i.id == id));
        if !known && !self.fx.ec2_lost {
            self.violation(format!(
                "{name} is Ready with instance {:?} that never existed",
                status.instance_id
            ));
        }
    }

    fn converged(&self) -> bool {
        if !self.op.running.is_empty() || !self.gate.parked().is_empty() {
            return false;
        }
        if self.namespace_deleted {
            if self.api.namespace_gone(NS) {
                return true;
            }
            // Stated permanent failure: the cleanup credentials were deleted before the
            // operator could hold them, and cannot be put back.
            return self.unheld_secret_lost
                && self.api.list("puppetnodes", NS).iter().all(|o| {
                    o["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["reason"] == "secret")
                    })
                });
        }
        let master_deleting = self
            .api
            .list("puppetmasters", NS)
            .iter()
            .any(|m| !m["metadata"]["deletionTimestamp"].is_null());
        let nodes = self.api.list("puppetnodes", NS);
        if master_deleting && nodes.is_empty() {
            return false;
        }
        let master_gone = self.api.list("puppetmasters", NS).is_empty();
        // Orphans are the sweep's to remove while its master lives.
        if self.cleanup && !master_deleting && !master_gone && !self.orphans_left().is_empty() {
            return false;
        }
        let nodes_done = nodes.into_iter().all(|obj| {
            let certname = obj["status"]["certname"].as_str().unwrap_or_default();
            let phase = obj["status"]["phase"].as_str();
            obj["metadata"]["deletionTimestamp"].is_null()
                && (matches!(phase, Some("Ready") | Some("Failed"))
                    // A master being deleted launches nothing new; it waits for its nodes.
                    || (master_deleting && phase == Some("Pending"))
                    // Deleted before the operator ever held it: its nodes cannot act.
                    || (master_gone && phase == Some("Pending"))
                    // A replayed challenge won the race: the agent is locked out, as the
                    // trust rules accept (a challenge is worth one signature).
                    || (phase == Some("Signed") && self.hijacked(certname))
                    // Its certificate was cleaned and the bucket emptied before any status
                    // recorded it: nothing remembers it, and its agent, holding it, sends no
                    // new CSR (a csrTimeout would replace the node).
                    || (phase == Some("AwaitingCSR") && self.evidence_destroyed(certname)))
        });
        if !nodes_done {
            return false;
        }
        // The pool has its count, every node made from its current template, and its
        // status says so for its current spec.
        if let Some(spec) = crate::pools::pool_spec(&self.api) {
            if !spec.deleting && !master_deleting && !master_gone {
                let nodes = crate::pools::pool_nodes(&self.api, &spec.uid);
                let pool = self.api.get("puppetnodepools", NS, crate::pools::POOL);
                let status = pool.as_ref().map(|p| &p["status"]);
                let reported = pool.as_ref().is_some_and(|p| {
                    p["status"]["observedGeneration"] == p["metadata"]["generation"]
                }) && status.is_some_and(|st| {
                    st["updatedReplicas"].as_u64() == Some(spec.replicas as u64)
                        && st["replicas"].as_u64() == Some(spec.replicas as u64)
                });
                if nodes.len() != spec.replicas
                    || !crate::pools::all_updated(&nodes, &spec.hash)
                    || !reported
                {
                    return false;
                }
            }
        }
        true
    }

    /// Every trace of `certname`'s signature is gone: the CA no longer holds it, the bucket
    /// was emptied after it was signed, and no status ever said it was signed. Neither
    /// the operator nor `autosign` can then know it was (DESIGN rule 3 needs that memory).
    fn evidence_destroyed(&self, certname: &str) -> bool {
        !self.fx.ca_signed_now(certname) && self.records_forgot(certname)
    }

    /// The bucket was emptied after `certname` was first signed, and no status ever said
    /// it was signed (the CA can sign it again only once that certificate is gone).
    fn records_forgot(&self, certname: &str) -> bool {
        let signed_at = self.signed_at.get(certname);
        !self.status_said_signed.contains(certname)
            && self
                .records_lost_at
                .is_some_and(|lost| signed_at.is_some_and(|at| *at <= lost))
    }

    fn hijacked(&self, certname: &str) -> bool {
        self.fx
            .signed_key(certname)
            .and_then(|k| self.submitters.get(&k))
            .is_some_and(|s| matches!(s, Submitter::Replay))
    }

    fn describe_state(&self) -> String {
        let nodes: Vec<String> = self
            .api
            .list("puppetnodes", NS)
            .iter()
            .map(|o| {
                let ready = o["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .map(|c| format!("{}: {}", c["reason"], c["message"]))
                    .unwrap_or_default();
                format!(
                    "{} phase={} deleting={} ready=({ready})",
                    o["metadata"]["name"],
                    o["status"]["phase"],
                    !o["metadata"]["deletionTimestamp"].is_null()
                )
            })
            .collect();
        let masters = self.api.list("puppetmasters", NS).len();
        let orphans = if self.cleanup {
            format!(", orphans left {:?}", self.orphans_left())
        } else {
            String::new()
        };
        format!(
            "nodes [{}], masters {masters}{orphans}, parked {}, running {}, queued {:?}",
            nodes.join("; "),
            self.gate.parked().len(),
            self.op.running.len(),
            self.op.queue.keys().collect::<Vec<_>>()
        )
    }

    // ---- moves ----

    async fn act(&mut self) {
        let parked = self.gate.parked();
        let due = self.op.due();
        let agents = self.agents_with_work();
        let mut weights: Vec<(u32, u8)> = Vec::new();
        if !parked.is_empty() {
            weights.push((40, 0));
        }
        if !due.is_empty() {
            weights.push((25, 1));
        }
        if !agents.is_empty() {
            weights.push((10, 2));
        }
        if !self.quiet {
            weights.push((8, 3));
        }
        // Time passes now and then whatever else is possible (agents wait, boots finish).
        weights.push((4, 4));
        let total: u32 = weights.iter().map(|w| w.0).sum();
        let mut pick = self.rng.random_range(0..total);
        let mut choice = weights[0].1;
        for (w, c) in &weights {
            if pick < *w {
                choice = *c;
                break;
            }
            pick -= w;
        }
        match choice {
            0 => {
                let (seq, call, task) = parked[self.rng.random_range(0..parked.len())].clone();
                let delivery = self.gate.is_delivery(seq);
                let fate = match self.fate_for(call.system) {
                    // A late answer on its way back arrives, or is lost on the way.
                    _ if delivery && self.quiet => Fate::Answer,
                    Fate::Answer | Fate::Late if delivery => Fate::Answer,
                    _ if delivery => Fate::Lost,
                    fate => fate,
                };
                if !delivery && fate != Fate::Fail(FaultKind::Unavailable) {
                    self.note_sign_call(&call, task);
                }
                if !delivery && !matches!(fate, Fate::Fail(_)) {
                    self.check_removal(&call, task);
                    self.check_paused(&call, task);
                }
                self.note_uncertain_sign(&call, fate, delivery);
                let what = if delivery { "late answer of" } else { "answer" };
                self.note(format!(
                    "{what} {:?} {} {} -> {fate:?}",
                    call.system, call.operation, call.target
                ));
                self.gate.release(seq, fate);
            }
            1 => {
                let key = due[self.rng.random_range(0..due.len())].clone();
                let now = Instant::now();
                let n = {
                    let n = self.starts_at.entry((key.clone(), now)).or_default();
                    *n += 1;
                    *n
                };
                if n > 8 {
                    self.violation(format!(
                        "{key:?} reconciled {n} times without time passing: it wakes itself"
                    ));
                    return;
                }
                self.note(format!("start {key:?}"));
                let paused = self.paused_by(&key);
                if key.0 == Kind::Pool {
                    self.pool_pass = crate::pools::pool_spec(&self.api)
                        .map(|spec| (spec.replicas + spec.surge, paused.is_some()));
                }
                if let Some(id) = self.op.spawn(&self.api, key.clone()) {
                    if let Some(by) = paused {
                        self.note(format!("  (paused: {by})"));
                        match key.0 {
                            Kind::Node => self.paused_passes.0 += 1,
                            _ => self.paused_passes.1 += 1,
                        }
                        self.paused_tasks.insert(id, by);
                    }
                    self.tasks.insert(id, (key, self.step));
                }
            }
            2 => {
                let id = agents[self.rng.random_range(0..agents.len())].clone();
                self.agent_acts(&id).await;
            }
            3 => self.chaos().await,
            _ => self.advance().await,
        }
    }

    fn fate_for(&mut self, system: System) -> Fate {
        if system == System::Ec2 && self.bad_credentials {
            return Fate::Fail(FaultKind::Denied);
        }
        if self.outages.contains(&system) {
            return Fate::Fail(FaultKind::Unavailable);
        }
        if self.quiet {
            return Fate::Answer;
        }
        match self.rng.random_range(0..100) {
            0..=79 => Fate::Answer,
            // Applied now, answered after other calls (and time) have passed.
            80..=84 => Fate::Late,
            85..=87 => Fate::Fail(FaultKind::Unavailable),
            88..=90 => Fate::Fail(FaultKind::Timeout),
            91..=92 => Fate::Fail(FaultKind::Throttled),
            _ => Fate::Lost,
        }
    }

    async fn advance(&mut self) {
        let now = Instant::now();
        let next = self
            .op
            .queue
            .values()
            .filter(|at| **at > now)
            .min()
            .copied();
        let to = next.unwrap_or(now + Duration::from_secs(30));
        // Agents and boots move on in whole seconds at least.
        let to = to.max(now + Duration::from_millis(500));
        self.note(format!("time passes {:.1}s", (to - now).as_secs_f64()));
        tokio::time::sleep_until(to).await;
        // The runner's hold sweep: Secrets held for no live master are released.
        if to.duration_since(self.last_sweep) >= self.op.ctx.settings.master_resync {
            self.last_sweep = to;
            let names: BTreeSet<String> = secrets().iter().map(|(n, _)| n.to_string()).collect();
            if let Ok(released) = puppet_conductor::controller::secret_hold::release_unneeded(
                &self.op.ctx,
                NS,
                &names,
            )
            .await
            {
                if !released.is_empty() {
                    self.note(format!("hold sweep releases {released:?}"));
                }
            }
        }
    }

    fn create_node(&mut self) {
        if self.namespace_deleted {
            return;
        }
        let name = format!("n{}", self.node_seq);
        self.node_seq += 1;
        // More Orphan nodes under Cleanup: what they leave is the sweep's to remove.
        let orphan = self.rng.random_bool(if self.cleanup { 0.5 } else { 0.1 });
        match self.api.create(
            "puppetnodes",
            NS,
            node_object(&name, &["role::web"], orphan),
        ) {
            Ok(obj) => {
                let uid = obj["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if orphan {
                    self.orphans.insert(uid.clone());
                }
                self.names.insert(uid, name.clone());
                let how = if orphan {
                    " (deletionPolicy Orphan)"
                } else {
                    ""
                };
                self.note(format!("user creates node {name}{how}"));
            }
            Err(e) => self.note(format!("user cannot create node {name}: {e}")),
        }
    }

    fn live_nodes(&self) -> Vec<Value> {
        self.api.list("puppetnodes", NS)
    }

    fn set_credentials(&mut self, good: bool) {
        self.bad_credentials = !good;
        let id = if good { "good" } else { "bad" };
        self.api.edit(
            "secrets",
            NS,
            CLOUD_SECRET,
            &json!({"data": {"accessKeyId": crate::world::base64_str(id)}}),
        );
        self.note(format!("cloud credentials are now {id}"));
    }

    async fn chaos(&mut self) {
        let nodes = self.live_nodes();
        let names: Vec<String> = nodes
            .iter()
            .map(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        match self.rng.random_range(0..114) {
            0..=19 => {
                if names.len() < self.cfg.max_nodes {
                    self.create_node();
                }
            }
            20..=31 => {
                if let Some(name) = pick(&mut self.rng, &names) {
                    self.note(format!("user deletes node {name}"));
                    self.api.delete("puppetnodes", NS, &name);
                }
            }
            32..=39 => {
                if let Some(name) = pick(&mut self.rng, &names) {
                    let class = format!("role::r{}", self.rng.random_range(0..5));
                    self.note(format!("user sets classes of {name} to {class}"));
                    self.api.edit(
                        "puppetnodes",
                        NS,
                        &name,
                        &json!({"spec": {"classes": [class]}}),
                    );
                }
            }
            40..=45 => {
                let ids: Vec<String> = self
                    .fx
                    .instances()
                    .into_iter()
                    .filter(|i| !i.state.is_terminating())
                    .map(|i| i.id)
                    .collect();
                if let Some(id) = pick(&mut self.rng, &ids) {
                    self.note(format!("someone terminates {id} outside the operator"));
                    let owner = self
                        .fx
                        .instances()
                        .into_iter()
                        .find(|i| i.id == id)
                        .and_then(|i| i.tags.get(tags::NODE_UID).cloned());
                    if let Some(uid) = owner {
                        self.loss(&uid);
                    }
                    self.fx.ec2.terminate_outside(&id);
                }
            }
            46..=51 => {
                self.note("the operator crashes and restarts".into());
                self.crash().await;
            }
            52..=57 => {
                let system = [System::Ec2, System::S3, System::Ca][self.rng.random_range(0..3)];
                if self.outages.remove(&system) {
                    self.note(format!("{system:?} is back"));
                } else {
                    self.outages.insert(system);
                    self.note(format!("{system:?} is down"));
                }
            }
            58..=61 => {
                let good = self.bad_credentials;
                self.set_credentials(good);
            }
            62..=65 => self.hostile_csr().await,
            66..=68 => {
                let signed: Vec<String> = self.signed_certnames.iter().cloned().collect();
                if let Some(c) = pick(&mut self.rng, &signed) {
                    self.note(format!("an admin cleans {c} at the CA"));
                    if let Some(uid) = self.uid_of_target(&c) {
                        self.loss(&uid);
                    }
                    self.fx.ca.clean_outside(&c);
                }
            }
            69..=70 => {
                self.note("EC2 loses every instance".into());
                self.loss_for_all();
                self.fx.lose_ec2();
            }
            71..=72 => {
                self.note("the records bucket is emptied".into());
                self.loss_for_all();
                self.fx.records.lose_state();
                self.records_lost_at = Some(self.step);
            }
            73..=74 => {
                self.note("EC2 and the bucket lose their state together".into());
                self.loss_for_all();
                self.fx.lose_ec2();
                self.fx.records.lose_state();
                self.records_lost_at = Some(self.step);
            }
            75 => {
                self.note("user deletes the master".into());
                self.api.delete("puppetmasters", NS, MASTER);
            }
            76 => {
                self.note("user deletes the namespace".into());
                self.namespace_deleted = true;
                self.api.delete_namespace(NS);
            }
            77..=78 => {
                let s = [CA_SECRET, CLOUD_SECRET][self.rng.random_range(0..2)];
                let held = self.api.get("secrets", NS, s).is_some_and(|o| {
                    o["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| !f.is_empty())
                });
                self.note(format!("a GitOps prune deletes Secret {s} (held: {held})"));
                if self.api.delete("secrets", NS, s) && !held {
                    self.unheld_secret_lost = true;
                }
            }
            79..=80 => {
                self.note("a poisoned CSR breaks the CA's listings".into());
                let n = self.node_seq;
                let _ = self.fx.ca.submit_csr(
                    &format!("poison{n}"),
                    &agents::poison_csr(&format!("poison{n}")),
                );
            }
            85..=92 if self.cleanup => {
                // A node stuck deleting (say) is removed by force: what it launched is an
                // orphan.
                let launched: Vec<String> = nodes
                    .iter()
                    .filter(|n| n["status"]["instanceId"].is_string())
                    .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
                    .collect();
                if let Some(name) = pick(&mut self.rng, &launched) {
                    self.note(format!(
                        "an admin strips the finalizers of node {name} and deletes it"
                    ));
                    // The UID of the node of that name now (a pool reuses names).
                    let uid = nodes
                        .iter()
                        .find(|n| n["metadata"]["name"] == name.as_str())
                        .and_then(|n| n["metadata"]["uid"].as_str())
                        .map(String::from);
                    self.orphans.extend(uid);
                    self.api.edit(
                        "puppetnodes",
                        NS,
                        &name,
                        &json!({"metadata": {"finalizers": null}}),
                    );
                    self.api.delete("puppetnodes", NS, &name);
                }
            }
            93..=95 if self.cleanup => self.leftover_instance().await,
            81..=84 => {
                // A user edits the master: every node is reconciled for its new generation.
                let interval = if self.rng.random_bool(0.5) {
                    "5s"
                } else {
                    "10s"
                };
                self.note(format!(
                    "user sets the master's signing.pollInterval to {interval}"
                ));
                self.api.edit(
                    "puppetmasters",
                    NS,
                    MASTER,
                    &json!({"spec": {"signing": {"pollInterval": interval}}}),
                );
            }
            // Pauses, rare enough that most trials run unpaused; all lifted at step 80.
            100..=101 => {
                if let Some(name) = pick(&mut self.rng, &names) {
                    self.set_paused(Kind::Node, &name, true);
                }
            }
            102 => {
                let paused: Vec<String> = nodes
                    .iter()
                    .filter(|n| is_paused(n))
                    .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
                    .collect();
                if let Some(name) = pick(&mut self.rng, &paused) {
                    self.set_paused(Kind::Node, &name, false);
                }
            }
            103..=104 => self.set_paused(Kind::Master, MASTER, true),
            105 => self.set_paused(Kind::Master, MASTER, false),
            // The pool's users: scale, change the image (a roll) or the classes (in
            // place), pause, delete it.
            106..=108 if self.pool.is_some() => {
                let replicas = self.rng.random_range(0..=4);
                if self.api.edit(
                    "puppetnodepools",
                    NS,
                    crate::pools::POOL,
                    &json!({"spec": {"replicas": replicas}}),
                ) {
                    self.note(format!("user scales the pool to {replicas}"));
                }
            }
            109 if self.pool.is_some() => {
                let image = crate::pools::IMAGES[self.rng.random_range(0..3)];
                if self.api.edit(
                    "puppetnodepools",
                    NS,
                    crate::pools::POOL,
                    &json!({"spec": {"template": {"spec": {"instance": {"imageId": image}}}}}),
                ) {
                    self.note(format!("user sets the pool's image to {image}"));
                }
            }
            110 if self.pool.is_some() => {
                let class = format!("role::r{}", self.rng.random_range(0..5));
                if self.api.edit(
                    "puppetnodepools",
                    NS,
                    crate::pools::POOL,
                    &json!({"spec": {"template": {"spec": {"classes": [class]}}}}),
                ) {
                    self.note(format!("user sets the pool's classes to {class}"));
                }
            }
            111 if self.pool.is_some() => self.set_paused(Kind::Pool, crate::pools::POOL, true),
            112 if self.pool.is_some() => self.set_paused(Kind::Pool, crate::pools::POOL, false),
            113 if self.pool.is_some() && self.rng.random_bool(0.3) => {
                if self.api.delete("puppetnodepools", NS, crate::pools::POOL) {
                    self.note(format!("user deletes pool {}", crate::pools::POOL));
                }
            }
            _ => {
                if names.len() < self.cfg.max_nodes {
                    self.create_node();
                }
            }
        }
    }

    /// A user sets (or removes) the paused annotation of a node or the master.
    fn set_paused(&mut self, kind: Kind, name: &str, paused: bool) {
        let value = if paused { json!("true") } else { Value::Null };
        let what = match kind {
            Kind::Node => format!("node {name}"),
            Kind::Pool => format!("pool {name}"),
            _ => "the master".to_string(),
        };
        let verb = if paused { "pauses" } else { "unpauses" };
        if self.api.edit(
            kind.plural(),
            NS,
            name,
            &json!({"metadata": {"annotations": {PAUSED: value}}}),
        ) {
            self.note(format!("user {verb} {what}"));
            if paused {
                self.pauses += 1;
            }
        }
    }

    /// Who pauses the object of a reconcile about to start, as the API shows it now (the
    /// watch step of this step gave the operator's stores the same): `None` when nothing
    /// does, or when it is being deleted (a deletion is never paused).
    fn paused_by(&self, key: &ObjKey) -> Option<String> {
        let obj = self.api.get(key.0.plural(), NS, &key.1)?;
        if !obj["metadata"]["deletionTimestamp"].is_null() {
            return None;
        }
        match key.0 {
            Kind::Node if is_paused(&obj) => Some(format!("node {}", key.1)),
            Kind::Node => {
                let master = obj["spec"]["masterRef"]["name"].as_str()?;
                self.api
                    .get("puppetmasters", NS, master)
                    .filter(is_paused)
                    .map(|_| format!("its master {master}"))
            }
            Kind::Master if is_paused(&obj) => Some("the master".to_string()),
            Kind::Pool if is_paused(&obj) => Some("the pool".to_string()),
            Kind::Pool => self
                .api
                .get("puppetmasters", NS, MASTER)
                .filter(is_paused)
                .map(|_| format!("its master {MASTER}")),
            _ => None,
        }
    }

    /// A call that lands from a reconcile that started paused: a paused node's pass
    /// launches, terminates, signs, writes and deletes nothing, and a paused master's pass
    /// removes nothing. (Calls of passes that started before the pause may still land.)
    fn check_paused(&mut self, call: &Call, task: Option<tokio::task::Id>) {
        let Some(id) = task else { return };
        let Some(by) = self.paused_tasks.get(&id).cloned() else {
            return;
        };
        let Some((key, started)) = self.tasks.get(&id).cloned() else {
            return;
        };
        let forbidden = match key.0 {
            Kind::Node => mutates(call),
            Kind::Master => self.removal_targets(call).is_some(),
            Kind::Watch | Kind::Pool => false,
        };
        if forbidden {
            self.violation(format!(
                "the pass of {:?} {} (step {started}, paused by {by}) made {:?} {} {}",
                key.0, key.1, call.system, call.operation, call.target
            ));
        }
    }

    /// An instance this installation launched in an earlier life for a node long gone
    /// (say, before a restore of the cluster): tagged as the operator tags its launches,
    /// owned by no node here, a genuine orphan.
    async fn leftover_instance(&mut self) {
        self.leftovers += 1;
        let uid = format!("00000000-0000-4000-9000-{:012}", self.leftovers);
        let certname = identity::certname(&uid, 1, None);
        let request = LaunchRequest {
            instance: InstanceSettings::new("ami-0123456789abcdef0", "t3.small"),
            tags: [
                (tags::OPERATOR, "sim"),
                (tags::MASTER, &format!("{NS}/{MASTER}")),
                (tags::NODE_UID, &uid),
                (tags::CERTNAME, &certname),
                (tags::INCARNATION, "1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            user_data: String::new(),
            client_token: certname.clone(),
        };
        // From outside any task: the gate lets it through at once.
        match self.fx.ec2.launch(&request).await {
            Ok(i) => self.note(format!(
                "an instance {} of a node long gone ({certname}) is found running",
                i.id
            )),
            Err(e) => self.note(format!("no leftover instance: {e}")),
        }
    }

    /// A sign call that lands: the reconcile that asked for it, for the trust checks.
    fn note_sign_call(&mut self, call: &Call, task: Option<tokio::task::Id>) {
        if call.operation != "sign" {
            return;
        }
        let started = task
            .and_then(|t| self.tasks.get(&t))
            .map_or(self.step, |(_, s)| *s);
        self.sign_calls.insert(call.target.clone(), started);
    }

    async fn crash(&mut self) {
        for (seq, call, task) in self.gate.parked() {
            if self.rng.random_bool(0.5) {
                // Landing as the process dies: still asked by the reconcile that made it.
                let delivery = self.gate.is_delivery(seq);
                if !delivery {
                    self.note_sign_call(&call, task);
                    self.check_removal(&call, task);
                    self.check_paused(&call, task);
                }
                self.note_uncertain_sign(&call, Fate::Lost, delivery);
                self.note(format!(
                    "  {:?} {} {} landed, answer lost",
                    call.system, call.operation, call.target
                ));
                self.gate.release(seq, Fate::Lost);
            } else if self.gate.is_delivery(seq) {
                // A late answer on its way back: the call landed already, and its answer
                // dies with the process whatever else happens (seed 807131: a signature
                // record marked "asked", the process gone before it asked).
                self.note_uncertain_sign(&call, Fate::Lost, true);
                self.note(format!(
                    "  {:?} {} {} had landed, late answer lost",
                    call.system, call.operation, call.target
                ));
            } else if call.system == System::Ca && call.operation == "sign" {
                // Never sent, but the process died asking: its record says the CA was
                // asked, so the challenge is spent all the same.
                if let Some(uid) = self.uid_of_target(&call.target) {
                    self.loss(&uid);
                }
            }
        }
        tokio::task::yield_now().await;
        self.op.kill();
        self.gate.drain();
        self.settle().await;
        // A restart takes seconds (a new pod, the leader lease): EC2's describe lag is over.
        tokio::time::sleep(Duration::from_secs(5)).await;
        self.op = Operator::start(self.api.client(), self.factory.clone());
        self.seen.clear();
        self.revisions.clear();
        self.secret_revisions.clear();
        self.tasks.clear();
        self.paused_tasks.clear();
    }

    async fn hostile_csr(&mut self) {
        let nodes = self.live_nodes();
        let Some(node) = pick(&mut self.rng, &nodes) else {
            return;
        };
        let uid = node["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let inc = node["status"]["incarnation"].as_i64().unwrap_or(1);
        let certname = identity::certname(&uid, inc, None);
        let seen = self.readable.get(&certname).cloned();
        let (challenge, kind, instance) = match seen {
            Some((challenge, instance)) if self.rng.random_bool(0.5) => {
                (challenge, Submitter::Replay, instance)
            }
            _ => (
                "not-the-challenge".to_string(),
                Submitter::Forged,
                node["status"]["instanceId"]
                    .as_str()
                    .unwrap_or("i-0")
                    .to_string(),
            ),
        };
        let (pem, public_key) = agents::csr(&certname, &challenge, &instance);
        let sha = hex::encode(Sha256::digest(&public_key));
        let accepted = self.fx.ca.submit_csr(&certname, &pem).is_ok();
        self.note(format!(
            "attacker sends a {kind:?} CSR for {certname} (accepted: {accepted})"
        ));
        self.submitters.insert(sha, kind);
        if accepted {
            self.autosign(&certname, &pem).await;
        }
    }

    /// An agent run asks the ENC (as puppetserver runs `puppet-conductor enc`), which
    /// records the check-in; whether it classified the node.
    async fn ask_enc(&self, certname: &str) -> bool {
        let answer =
            puppet_conductor::enc::classify(self.fx.records.as_ref(), certname, chrono::Utc::now())
                .await;
        matches!(answer, Ok(puppet_conductor::enc::Answer::Classified(_)))
    }

    /// Policy mode: puppetserver runs `puppet-conductor autosign` on a submitted CSR and
    /// signs it when that allows it. It must never allow one while the incarnation's
    /// record says fencing or deleting (or is missing).
    async fn autosign(&mut self, certname: &str, pem: &str) {
        if !self.policy {
            return;
        }
        let state = self.fx.records.record(certname).map(|r| r.state);
        let decision =
            puppet_conductor::autosign::decide(self.fx.records.as_ref(), certname, pem, false)
                .await;
        self.note(format!(
            "puppetserver runs autosign for {certname}: {decision:?}"
        ));
        if !matches!(decision, Ok(puppet_conductor::autosign::Decision::Sign)) {
            return;
        }
        if state != Some(puppet_conductor::records::RecordState::Live) {
            self.violation(format!(
                "autosign allowed {certname} while its record was {state:?}"
            ));
        }
        self.autosigned.insert(certname.to_string());
        self.sign_calls.insert(certname.to_string(), self.step);
        if let Err(e) = self.fx.ca.sign_outside(certname) {
            self.note(format!("  puppetserver could not sign {certname}: {e}"));
        }
    }

    fn agents_with_work(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for i in self.fx.instances() {
            // A leftover of an earlier life runs no agent that matters here.
            if !i
                .tags
                .get(tags::NODE_UID)
                .is_some_and(|u| self.names.contains_key(u))
            {
                continue;
            }
            // A shutting-down instance still runs its agent for a while.
            if !matches!(
                i.state,
                InstanceState::Running | InstanceState::ShuttingDown
            ) {
                continue;
            }
            let state = self
                .agents
                .entry(i.id.clone())
                .or_insert(AgentState::Booted);
            // A classified agent runs again at its run interval: that matters here only
            // once its check-in is gone (the bucket emptied), so it runs again then.
            let checked_in = || {
                i.tags
                    .get(tags::CERTNAME)
                    .is_some_and(|c| self.fx.records.check_in(c).is_some())
            };
            if *state != AgentState::Classified || !checked_in() {
                out.push(i.id.clone());
            }
        }
        out
    }

    async fn agent_acts(&mut self, id: &str) {
        let Some(instance) = self.fx.instances().into_iter().find(|i| i.id == id) else {
            return;
        };
        let certname = instance
            .tags
            .get(tags::CERTNAME)
            .cloned()
            .unwrap_or_default();
        let state = self.agents.get(id).cloned().unwrap_or(AgentState::Booted);
        match state {
            AgentState::Booted => {
                let user_data = self.fx.ec2.user_data(id).unwrap_or_default();
                let (challenge, pp_instance_id) = agents::csr_attributes(&user_data, id);
                let (pem, public_key) = agents::csr(&certname, &challenge, &pp_instance_id);
                let sha = hex::encode(Sha256::digest(&public_key));
                match self.fx.ca.submit_csr(&certname, &pem) {
                    Ok(()) => {
                        self.submitters.insert(sha.clone(), Submitter::Genuine);
                        self.readable.insert(
                            certname.clone(),
                            (challenge.clone(), pp_instance_id.clone()),
                        );
                        self.fx.remember_csr(id, pem.clone());
                        self.csr_sent_at
                            .insert(certname.clone(), (self.step, sha.clone()));
                        self.agents.insert(
                            id.to_string(),
                            AgentState::Submitted {
                                public_key: sha.into_bytes(),
                            },
                        );
                        self.note(format!("agent of {id} sends its CSR for {certname}"));
                        self.autosign(&certname, &pem).await;
                    }
                    Err(e) => self.note(format!("agent of {id} cannot send its CSR: {e}")),
                }
            }
            AgentState::Submitted { public_key } => {
                let sha = String::from_utf8(public_key.clone()).unwrap_or_default();
                if self.fx.signed_key(&certname).as_deref() == Some(sha.as_str()) {
                    self.agents
                        .insert(id.to_string(), AgentState::Certified { public_key });
                    self.note(format!("agent of {id} fetches its certificate"));
                } else if !self.fx.ca_has_any(&certname) {
                    // Its CSR was removed (refused, or cleaned): the agent sends it again.
                    if let Some(pem) = self.fx.csr_of(id) {
                        let resent = self.fx.ca.submit_csr(&certname, &pem).is_ok();
                        if resent {
                            self.csr_sent_at
                                .insert(certname.clone(), (self.step, sha.clone()));
                        }
                        self.note(format!(
                            "agent of {id} sends its CSR again (accepted: {resent})"
                        ));
                        if resent {
                            self.autosign(&certname, &pem).await;
                        }
                    }
                } else {
                    self.note(format!("agent of {id} waits for its certificate"));
                }
            }
            AgentState::Certified { .. } => {
                let classified = self.ask_enc(&certname).await;
                self.note(format!(
                    "agent of {id} asks for its catalog (classified: {classified})"
                ));
                if classified {
                    self.agents.insert(id.to_string(), AgentState::Classified);
                }
            }
            AgentState::Classified => {
                let classified = self.ask_enc(&certname).await;
                self.note(format!(
                    "agent of {id} runs again and asks for its catalog (classified: {classified})"
                ));
            }
        }
    }
}

fn pick<T: Clone>(rng: &mut StdRng, items: &[T]) -> Option<T> {
    (!items.is_empty()).then(|| items[rng.random_range(0..items.len())].clone())
}
