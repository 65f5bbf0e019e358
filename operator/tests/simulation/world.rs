//! One simulated world: the in-memory API, the fakes behind a scheduling gate, and the
//! operator (the real controllers' reconcile and error-policy functions, driven the way
//! kube-runtime drives them: one reconcile per object at a time, requeues, watch
//! triggers, a restart that forgets all memory).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use puppet_conductor::api::master::{
    CaSpec, CloudProvider, CloudSpec, NodeDefaults, OrphanAction, OrphanSpec, PuppetMasterSpec,
    RecordsSpec, SigningMode,
};
use puppet_conductor::api::{PuppetMaster, PuppetNode, PuppetNodePool, SecretRef};
use puppet_conductor::controller::context::NodeSettings;
use puppet_conductor::controller::error::chain;
use puppet_conductor::controller::events::MemoryEvents;
use puppet_conductor::controller::master_cache::GuardedMaster;
use puppet_conductor::controller::services::{MasterServices, ServiceFactory};
use puppet_conductor::controller::{master, node, pool, signing_watch, Context, ReconcileError};
use puppet_conductor::fakes::ca::FakeCa;
use puppet_conductor::fakes::ec2::FakeEc2;
use puppet_conductor::fakes::records::FakeRecords;
use puppet_conductor::identity::ChallengeKey;
use puppet_conductor::runner::wiring::GuardedNode;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::api::MemoryApi;

pub const NS: &str = "fleet";
pub const MASTER: &str = "m";
pub const CA_SECRET: &str = "ca-client";
pub const CLOUD_SECRET: &str = "cloud";
pub const CHALLENGE_SECRET: &str = "m-challenge-key";
pub const KEY: [u8; 32] = [7u8; 32];

/// The kinds the operator reconciles, and the runner's CA watch of a master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Master,
    Node,
    Watch,
    Pool,
}

impl Kind {
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Master | Kind::Watch => "puppetmasters",
            Kind::Node => "puppetnodes",
            Kind::Pool => "puppetnodepools",
        }
    }
}

pub type ObjKey = (Kind, String);

/// Builds each master's services from its Secrets, read through the API as the real
/// factory reads them, around the shared fakes.
pub struct SimFactory {
    pub client: kube::Client,
    pub ec2: Arc<FakeEc2>,
    pub records: Arc<FakeRecords>,
    pub ca: Arc<FakeCa>,
    pub ca_pem: String,
}

#[async_trait::async_trait]
impl ServiceFactory for SimFactory {
    async fn services(&self, m: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
        let ns = m.namespace().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let mut names = vec![m.spec.ca.client_secret_ref.name.clone()];
        names.extend(
            m.spec
                .cloud
                .credentials_secret_ref
                .as_ref()
                .map(|r| r.name.clone()),
        );
        names.push(
            m.spec
                .signing
                .challenge_key_secret_ref
                .as_ref()
                .map_or_else(|| CHALLENGE_SECRET.to_string(), |r| r.name.clone()),
        );
        for name in names {
            if secrets
                .get_opt(&name)
                .await
                .map_err(ReconcileError::Kube)?
                .is_none()
            {
                return Err(ReconcileError::Secret {
                    name,
                    problem: "not found".into(),
                });
            }
        }
        Ok(Arc::new(MasterServices {
            cloud: self.ec2.clone(),
            records: self.records.clone(),
            ca: self.ca.clone(),
            ca_cert_pem: self.ca_pem.clone(),
            challenge_key: ChallengeKey::from_bytes(&KEY).map_err(|e| ReconcileError::Secret {
                name: CHALLENGE_SECRET.into(),
                problem: e.to_string(),
            })?,
        }))
    }
}

/// The `orphans.minAge` of a master that cleans up orphans.
pub const ORPHAN_MIN_AGE: Duration = Duration::from_secs(60);

/// A master that reports orphans and never removes them (the default `orphans`).
pub fn master_object(policy: bool) -> Value {
    trial_master_object(policy, false)
}

/// The trial's master; `policy`: `signing.mode: Policy` (puppetserver runs `autosign`);
/// `cleanup`: `orphans: {action: Cleanup, minAge: 60s}`.
pub fn trial_master_object(policy: bool, cleanup: bool) -> Value {
    let mut spec = PuppetMasterSpec {
        server: "puppet.example.com".into(),
        port: 8140,
        ca: CaSpec {
            url: "https://127.0.0.1:8140".into(),
            client_secret_ref: SecretRef {
                name: CA_SECRET.into(),
            },
        },
        cloud: CloudSpec {
            provider: CloudProvider::Ec2,
            region: "us-east-1".into(),
            endpoint: None,
            credentials_secret_ref: Some(SecretRef {
                name: CLOUD_SECRET.into(),
            }),
        },
        records: RecordsSpec {
            bucket: "records".into(),
            prefix: "nodes/".into(),
            endpoint: None,
            force_path_style: true,
            region: None,
            credentials_secret_ref: None,
        },
        signing: Default::default(),
        node_defaults: NodeDefaults {
            image_id: Some("ami-0123456789abcdef0".into()),
            instance_type: Some("t3.small".into()),
            subnet_id: Some("subnet-0123456789abcdef0".into()),
            security_group_ids: vec!["sg-0123456789abcdef0".into()],
            ..Default::default()
        },
        orphans: Default::default(),
    };
    if policy {
        spec.signing.mode = SigningMode::Policy;
    }
    if cleanup {
        spec.orphans = OrphanSpec {
            action: OrphanAction::Cleanup,
            min_age: ORPHAN_MIN_AGE.into(),
        };
    }
    json!({"metadata": {"name": MASTER}, "spec": spec})
}

/// A node; `orphan`: `deletionPolicy: Orphan` (its instance, certificate and records
/// are left in place when it is deleted).
pub fn node_object(name: &str, classes: &[&str], orphan: bool) -> Value {
    let policy = if orphan { "Orphan" } else { "Delete" };
    json!({"metadata": {"name": name}, "spec": {"masterRef": {"name": MASTER}, "classes": classes, "deletionPolicy": policy}})
}

pub fn secret_object(name: &str, data: &[(&str, &str)]) -> Value {
    let encoded: BTreeMap<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(base64(v.as_bytes()))))
        .collect();
    json!({"metadata": {"name": name}, "type": "Opaque", "data": encoded})
}

pub fn base64_str(text: &str) -> String {
    base64(text.as_bytes())
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A reconcile in flight.
pub struct Running {
    pub handle: JoinHandle<(Action, Option<String>)>,
}

/// The operator process: its memory lives in `ctx`; a crash replaces it.
pub struct Operator {
    pub ctx: Arc<Context>,
    pub running: BTreeMap<ObjKey, Running>,
    pub queue: BTreeMap<ObjKey, Instant>,
    pub rerun: BTreeSet<ObjKey>,
    /// Reconciles started per object (for the self-wake bound).
    pub starts: BTreeMap<ObjKey, usize>,
    /// Nodes the shared observation wakes (the runner's `reconcile_on`): a describe found
    /// their instance gone, or a CA listing changed their entry.
    pub wakes: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// The master store node passes read (the runner's master watch): the trial's watch
    /// step writes into it what it sees, when it schedules the triggers.
    pub masters: kube::runtime::reflector::store::Writer<GuardedMaster>,
    /// The node store a master's pass counts from (the runner's node watch); ready only
    /// once the trial's first watch step after a start delivered every node.
    pub nodes: kube::runtime::reflector::store::Writer<GuardedNode>,
    pub nodes_synced: bool,
    /// The Secret metadata store the holds read (the runner's Secret watch).
    pub secrets: kube::runtime::reflector::store::Writer<PartialObjectMeta<Secret>>,
}

pub fn settings() -> NodeSettings {
    NodeSettings {
        operator_id: "sim".into(),
        ..Default::default()
    }
}

impl Operator {
    pub fn start(client: kube::Client, factory: Arc<SimFactory>) -> Self {
        let events = Arc::new(MemoryEvents::default());
        let ctx = Arc::new(Context::new(client, factory, events, settings()));
        let wakes = ctx.snapshots.subscribe_wakes();
        let (store, masters) = kube::runtime::reflector::store();
        ctx.master_cache.attach(store);
        let (store, nodes) = kube::runtime::reflector::store();
        ctx.node_cache.attach(store);
        let (store, secrets) = kube::runtime::reflector::store();
        ctx.secret_cache.attach(store);
        Self {
            ctx,
            wakes,
            masters,
            nodes,
            nodes_synced: false,
            secrets,
            running: BTreeMap::new(),
            queue: BTreeMap::new(),
            rerun: BTreeSet::new(),
            starts: BTreeMap::new(),
        }
    }

    /// Queue `key` at `at` (the earliest wins, as kube-runtime's scheduler does).
    pub fn schedule(&mut self, key: ObjKey, at: Instant) {
        if self.running.contains_key(&key) {
            if at <= Instant::now() {
                self.rerun.insert(key);
            } else {
                let e = self.queue.entry(key).or_insert(at);
                *e = (*e).min(at);
            }
            return;
        }
        let e = self.queue.entry(key).or_insert(at);
        *e = (*e).min(at);
    }

    /// Objects due now and not running, in key order.
    pub fn due(&self) -> Vec<ObjKey> {
        let now = Instant::now();
        self.queue
            .iter()
            .filter(|(k, at)| **at <= now && !self.running.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Starts one reconcile of `key` with the object as the API has it now.
    pub fn spawn(&mut self, api: &MemoryApi, key: ObjKey) -> Option<tokio::task::Id> {
        self.queue.remove(&key);
        let value = api.get(key.0.plural(), NS, &key.1)?;
        let ctx = self.ctx.clone();
        let handle = match key.0 {
            Kind::Node => {
                let obj: PuppetNode = serde_json::from_value(value).ok()?;
                tokio::spawn(async move {
                    let obj = Arc::new(obj);
                    match node::reconcile(obj.clone(), ctx.clone()).await {
                        Ok(a) => (a, None),
                        Err(e) => {
                            let why = chain(&e);
                            (node::error_policy(obj, &e, ctx), Some(why))
                        }
                    }
                })
            }
            Kind::Pool => {
                let obj: PuppetNodePool = serde_json::from_value(value).ok()?;
                tokio::spawn(async move {
                    let obj = Arc::new(obj);
                    match pool::reconcile(obj.clone(), ctx.clone()).await {
                        Ok(a) => (a, None),
                        Err(e) => {
                            let why = chain(&e);
                            (pool::error_policy(obj, &e, ctx), Some(why))
                        }
                    }
                })
            }
            Kind::Watch => {
                let obj: PuppetMaster = serde_json::from_value(value).ok()?;
                // The runner asks its node store; here the API's nodes are that store.
                let nodes: Vec<PuppetNode> = api
                    .list("puppetnodes", NS)
                    .into_iter()
                    .filter_map(|n| serde_json::from_value(n).ok())
                    .collect();
                let waiting = signing_watch::master_awaits_signing(&obj, nodes.iter());
                tokio::spawn(async move {
                    match signing_watch::watch_signing(&obj, &ctx, waiting).await {
                        Some(after) => (Action::requeue(after), None),
                        None => (Action::await_change(), None),
                    }
                })
            }
            Kind::Master => {
                let obj: PuppetMaster = serde_json::from_value(value).ok()?;
                tokio::spawn(async move {
                    let obj = Arc::new(obj);
                    match master::reconcile(obj.clone(), ctx.clone()).await {
                        Ok(a) => (a, None),
                        Err(e) => {
                            let why = chain(&e);
                            (master::error_policy(obj, &e, ctx), Some(why))
                        }
                    }
                })
            }
        };
        let id = handle.id();
        *self.starts.entry(key.clone()).or_default() += 1;
        self.running.insert(key, Running { handle });
        Some(id)
    }

    /// Collects finished reconciles: their requeue, or a rerun when triggered meanwhile.
    pub async fn collect(&mut self) -> Vec<(ObjKey, Option<Duration>, Option<String>)> {
        let done: Vec<ObjKey> = self
            .running
            .iter()
            .filter(|(_, r)| r.handle.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in done {
            let Some(r) = self.running.remove(&key) else {
                continue;
            };
            let (action, error) = match r.handle.await {
                Ok(x) => x,
                Err(e) => panic!("reconcile of {key:?} panicked: {e}"),
            };
            let after = requeue_after(&action);
            if let Some(d) = after {
                self.schedule(key.clone(), Instant::now() + d);
            }
            if self.rerun.remove(&key) {
                self.schedule(key.clone(), Instant::now());
            }
            // The runner looks at each master's CA every tick; here the watch is queued
            // when a node pass may have made a node wait on the CA (a launch, say).
            let watch = (Kind::Watch, MASTER.to_string());
            if key.0 == Kind::Node
                && !self.queue.contains_key(&watch)
                && !self.running.contains_key(&watch)
            {
                // As the runner's tick: at most one look per second.
                self.schedule(watch, Instant::now() + Duration::from_secs(1));
            }
            out.push((key, after, error));
        }
        out
    }

    /// Queues now the nodes the shared observation woke.
    pub fn wake_nodes(&mut self) -> Vec<String> {
        let mut woken = Vec::new();
        while let Ok(key) = self.wakes.try_recv() {
            if let Some((_, name)) = key.split_once('/') {
                self.schedule((Kind::Node, name.to_string()), Instant::now());
                woken.push(name.to_string());
            }
        }
        woken
    }

    /// A crash: every reconcile stops where it is.
    pub fn kill(&mut self) {
        for (_, r) in std::mem::take(&mut self.running) {
            r.handle.abort();
        }
    }
}

/// kube's `Action` keeps its delay private; its Debug form is `Action { requeue_after: Some(10s) }`.
pub fn requeue_after(action: &Action) -> Option<Duration> {
    let text = format!("{action:?}");
    let inner = text.split("Some(").nth(1)?.split(')').next()?;
    let (number, unit) = inner
        .find(|c: char| c.is_alphabetic() || c == 'µ')
        .map(|i| inner.split_at(i))?;
    let n: f64 = number.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1e3,
        "µs" => n / 1e6,
        "ns" => n / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn requeue_delays_are_read_back() {
        use super::*;
        assert_eq!(
            requeue_after(&Action::requeue(Duration::from_secs(10))),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            requeue_after(&Action::requeue(Duration::from_millis(1500))),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(requeue_after(&Action::await_change()), None);
    }
}
