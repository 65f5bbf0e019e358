//! One shared observation per master: a single paginated DescribeInstances, records
//! listing and CA listing serve every node of that master.
//!
//! A snapshot is reused until it is older than the resync age; the operator's own
//! launches, terminations and writes are folded into it, so 1,000 nodes reconciled in
//! a row cost one describe, not 1,000. Its CA listing alone is refreshed more often: the
//! shared CA watch lists it every `signing.pollInterval` while a node waits on the CA,
//! and every new listing wakes the nodes whose certname's entry changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

// tokio's clock, so a paused test clock (the simulation) ages snapshots.
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::error::ReconcileError;
use super::services::MasterServices;
use crate::ca::CertState;
use crate::cloud::{tags, Instance, InstanceState};
use crate::observation::{CaListing as Listing, MasterObservation};
use crate::records::ListedRecord;
use crate::signing_watch::{changed_nodes, live_certnames};
use crate::sync::lock;

/// What was observed of one master's cloud, bucket and CA, and when: the observation
/// (data, in core) with its timing, read budget and an index of its instances. It derefs
/// to the observation, so `snapshot.records` reads the data; instances are added with
/// [`Snapshot::add_instance`] only, which keeps the index.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The instances, records and CA listing seen.
    observed: MasterObservation,
    /// Positions in `observed.instances` by instance id and by the node UID tag: a node's
    /// pass looks its instances up, not through every instance of the master (10,000
    /// nodes' passes would otherwise cost 10⁸ tag reads).
    by_id: imbl::HashMap<String, usize>,
    by_node: imbl::HashMap<String, Vec<usize>>,
    /// The operator's own launches that no describe has shown yet, with when each was
    /// launched: they are in `observed.instances` so that no pass launches twice, but
    /// they are not evidence that EC2 has them.
    awaited: imbl::HashMap<String, Instant>,
    /// Per-certname CA reads left for this CA listing while it is failing: nodes waiting
    /// for a CSR fall back to them, at most this many per poll interval.
    pub degraded_reads: Arc<AtomicUsize>,
    /// When it was taken.
    pub taken: Instant,
    /// When its CA listing was taken (at or after `taken`).
    pub ca_taken: Instant,
}

impl std::ops::Deref for Snapshot {
    type Target = MasterObservation;

    fn deref(&self) -> &MasterObservation {
        &self.observed
    }
}

/// Per-certname CA reads allowed per failed CA listing (per poll interval and master).
pub const DEGRADED_READS_PER_POLL: usize = 50;

impl Snapshot {
    /// Takes one per-certname CA read of the budget; `false` when it is spent.
    pub fn take_degraded_read(&self) -> bool {
        self.degraded_reads
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// A snapshot of `observed`, taken `now`, with a new index.
    pub fn new(
        observed: MasterObservation,
        degraded_reads: Arc<AtomicUsize>,
        now: Instant,
    ) -> Self {
        let mut snapshot = Snapshot {
            observed: MasterObservation {
                instances: imbl::Vector::new(),
                ..observed
            },
            degraded_reads,
            taken: now,
            ca_taken: now,
            by_id: imbl::HashMap::new(),
            by_node: imbl::HashMap::new(),
            awaited: imbl::HashMap::new(),
        };
        for instance in observed.instances {
            snapshot.add_instance(instance);
        }
        snapshot
    }

    /// Adds an instance unless one of its id is there already (the first seen is kept).
    pub fn add_instance(&mut self, instance: Instance) {
        if self.by_id.contains_key(&instance.id) {
            return;
        }
        let at = self.observed.instances.len();
        self.by_id.insert(instance.id.clone(), at);
        if let Some(uid) = instance.tags.get(tags::NODE_UID) {
            self.by_node.entry(uid.clone()).or_default().push(at);
        }
        self.observed.instances.push_back(instance);
    }

    /// Notes that `id`, launched `at`, is in the snapshot by the operator's own launch,
    /// not by a describe.
    pub fn await_launch(&mut self, id: &str, at: Instant) {
        self.awaited.insert(id.to_string(), at);
    }

    /// When the operator launched `id`, if no describe has shown it since.
    pub fn awaited_since(&self, id: &str) -> Option<Instant> {
        self.awaited.get(id).copied()
    }

    /// The instance of this id, if seen.
    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.by_id
            .get(id)
            .and_then(|&at| self.observed.instances.get(at))
    }

    /// Instances launched for one node (by UID tag).
    pub fn node_instances(&self, node_uid: &str) -> Vec<Instance> {
        self.by_node
            .get(node_uid)
            .into_iter()
            .flatten()
            .filter_map(|&at| self.observed.instances.get(at).cloned())
            .collect()
    }

    /// The observation (for the pure parts that read it whole).
    pub fn observed(&self) -> &MasterObservation {
        &self.observed
    }
}

/// The CA's certificates and CSRs by certname. The listing only refines status and
/// revocation; an unreachable CA must not stop launches or deletion of instances, so it
/// is optional (`None`).
type CaListing = Option<Listing>;

async fn list_ca(master_key: &str, services: &MasterServices) -> CaListing {
    match services.ca.list(None).await {
        Ok(list) => Some(list.into_iter().map(|c| (c.name.clone(), c)).collect()),
        Err(error) => {
            let why = super::error::chain(&error);
            tracing::warn!(master = master_key, error = %why, "CA listing failed; waiting nodes are read one by one");
            None
        }
    }
}

fn degraded_budget(listing: &CaListing) -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(if listing.is_none() {
        DEGRADED_READS_PER_POLL
    } else {
        0
    }))
}

#[derive(Default)]
struct Slot {
    snapshot: Option<Arc<Snapshot>>,
    /// The snapshot must not be used again (invalidated); it is kept as what the next
    /// observation is compared with, so no change between the two goes unwoken.
    stale: bool,
    /// The last describe's live instances (id, node tag), kept across invalidations: the
    /// next describe is compared with them to wake the nodes whose instance went.
    live: Option<Vec<(String, String)>>,
}

/// The live (pending or running) instances by id with their node's `namespace/name` tag.
pub fn live_instances(instances: &[Instance]) -> Vec<(String, String)> {
    instances
        .iter()
        .filter(|i| matches!(i.state, InstanceState::Pending | InstanceState::Running))
        .filter_map(|i| Some((i.id.clone(), i.tags.get(tags::NODE)?.clone())))
        .collect()
}

/// The nodes with an instance live `before` that is not live now: stopping, stopped or
/// missing (terminated outside the operator, or lost).
pub fn vanished_nodes(before: &[(String, String)], now: &[(String, String)]) -> BTreeSet<String> {
    before
        .iter()
        .filter(|(id, _)| !now.iter().any(|(live, _)| live == id))
        .map(|(_, node)| node.clone())
        .collect()
}

/// How long an instance this process launched is kept in the master's snapshot while
/// DescribeInstances does not show it yet. EC2 is eventually consistent: a describe
/// taken seconds after RunInstances may miss the instance, and a pass reading that as
/// "gone" would launch a second incarnation beside it.
pub const LAUNCH_VISIBILITY_GRACE: Duration = Duration::from_secs(300);

/// Snapshots by master key (`namespace/name`).
#[derive(Default)]
pub struct SnapshotCache {
    slots: std::sync::Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
    /// Instances launched by this process, per master, with when: until a describe shows
    /// them (or the grace ends) they are merged into every new snapshot.
    launches: std::sync::Mutex<HashMap<String, Vec<(Instance, Instant)>>>,
    /// Where the nodes to reconcile now, not at their resync, are sent (`namespace/name`):
    /// a describe found their instance gone, or a CA listing changed their entry.
    wakes: std::sync::Mutex<Vec<UnboundedSender<String>>>,
}

/// The described instances plus those launched within `grace` that the describe does
/// not show yet; returns what is still awaited.
pub fn merge_recent_launches(
    described: &mut Vec<Instance>,
    recent: Vec<(Instance, Instant)>,
    now: Instant,
    grace: Duration,
) -> Vec<(Instance, Instant)> {
    let mut awaited = Vec::new();
    for (instance, at) in recent {
        if described.iter().any(|i| i.id == instance.id) || now.duration_since(at) >= grace {
            continue;
        }
        described.push(instance.clone());
        awaited.push((instance, at));
    }
    awaited
}

impl SnapshotCache {
    fn slot(&self, master_key: &str) -> Arc<Mutex<Slot>> {
        lock(&self.slots)
            .entry(master_key.to_string())
            .or_default()
            .clone()
    }

    /// The master's snapshot, taken anew when missing or older than `max_age`, with its
    /// CA listing alone taken anew when older than `ca_max_age`. Concurrent callers for
    /// one master wait for a single observation (single flight).
    pub async fn get(
        &self,
        master_key: &str,
        services: &MasterServices,
        max_age: Duration,
        ca_max_age: Duration,
    ) -> Result<Arc<Snapshot>, ReconcileError> {
        let slot = self.slot(master_key);
        let mut slot = slot.lock().await;
        if let Some(s) = slot.snapshot.as_ref().filter(|_| !slot.stale) {
            if s.taken.elapsed() < max_age {
                if s.ca_taken.elapsed() < ca_max_age {
                    return Ok(s.clone());
                }
                let next = self.relist_ca(master_key, services, s).await;
                slot.snapshot = Some(next.clone());
                return Ok(next);
            }
        }
        self.take(&mut slot, master_key, services).await
    }

    /// A whole new observation of the master into `slot`: one describe, one records
    /// listing, one CA listing; wakes the nodes whose instance went or whose CA entry
    /// changed since the slot's last observation.
    async fn take(
        &self,
        slot: &mut Slot,
        master_key: &str,
        services: &MasterServices,
    ) -> Result<Arc<Snapshot>, ReconcileError> {
        let mut instances = services.cloud.describe_master_instances(master_key).await?;
        let live = live_instances(&instances);
        if let Some(before) = slot.live.replace(live.clone()) {
            self.wake(vanished_nodes(&before, &live));
        }
        let awaited = self.merge_launches(master_key, &mut instances);
        let instances = imbl::Vector::from(instances);
        let records = services.records.list().await?;
        let certificates = list_ca(master_key, services).await;
        if let (Some(before), Some(after)) = (&slot.snapshot, &certificates) {
            let certnames = live_certnames(&instances);
            self.wake(changed_nodes(
                before.certificates.as_ref(),
                after,
                &certnames,
            ));
        }
        let degraded_reads = degraded_budget(&certificates);
        let observed = MasterObservation {
            instances,
            records,
            certificates,
        };
        let mut snapshot = Snapshot::new(observed, degraded_reads, Instant::now());
        for (instance, at) in awaited {
            snapshot.await_launch(&instance.id, at);
        }
        let snapshot = Arc::new(snapshot);
        slot.snapshot = Some(snapshot.clone());
        slot.stale = false;
        Ok(snapshot)
    }

    /// `snapshot` with a new CA listing; wakes the nodes whose certname's entry changed.
    async fn relist_ca(
        &self,
        master_key: &str,
        services: &MasterServices,
        snapshot: &Snapshot,
    ) -> Arc<Snapshot> {
        let mut next = snapshot.clone();
        let listing = list_ca(master_key, services).await;
        if let Some(after) = &listing {
            let certnames = live_certnames(&snapshot.instances);
            self.wake(changed_nodes(
                snapshot.certificates.as_ref(),
                after,
                &certnames,
            ));
        }
        next.degraded_reads = degraded_budget(&listing);
        next.observed.certificates = listing;
        next.ca_taken = Instant::now();
        Arc::new(next)
    }

    /// The shared CA watch of one master, called once per `interval`: while a node waits
    /// on the CA (its live instance's certname is not signed, or the CA is unknown), lists
    /// the CA unless a pass listed it within half an interval, which wakes the nodes whose
    /// entry changed. Nothing is
    /// read before a node pass has observed the master, nor while nothing waits. Whether
    /// a node waits: the watch looks again one `interval` later.
    pub async fn watch_ca(
        &self,
        master_key: &str,
        services: &MasterServices,
        interval: Duration,
    ) -> bool {
        let slot = self.slot(master_key);
        let mut slot = slot.lock().await;
        let s = match slot.snapshot.clone() {
            // Invalidated (after a signature, say) and not taken again since: observed
            // anew, or a CSR arriving now would wait for some node's own pass.
            Some(_) if slot.stale => match self.take(&mut slot, master_key, services).await {
                Ok(s) => return s.awaits_signing(),
                Err(error) => {
                    let why = super::error::chain(&error);
                    tracing::debug!(master = master_key, error = %why, "CA watch: observation failed");
                    return true;
                }
            },
            Some(s) => s,
            None => return false,
        };
        if !s.awaits_signing() {
            return false;
        }
        // Half an interval, not a whole one: the watch looks once per interval, and a
        // listing a node pass took just after its last look would otherwise make it skip
        // a look and a CSR wait two intervals.
        if s.ca_taken.elapsed() >= interval / 2 {
            slot.snapshot = Some(self.relist_ca(master_key, services, &s).await);
        }
        true
    }

    async fn update(&self, master_key: &str, change: impl FnOnce(&mut Snapshot)) {
        let slot = self.slot(master_key);
        let mut slot = slot.lock().await;
        if let Some(s) = &slot.snapshot {
            let mut next = (**s).clone();
            change(&mut next);
            slot.snapshot = Some(Arc::new(next));
        }
    }

    /// A stream of the nodes (`namespace/name`) to reconcile now: a new describe found
    /// their instance gone, or a new CA listing changed their certname's entry.
    pub fn subscribe_wakes(&self) -> UnboundedReceiver<String> {
        let (tx, rx) = unbounded_channel();
        lock(&self.wakes).push(tx);
        rx
    }

    fn wake(&self, nodes: BTreeSet<String>) {
        if nodes.is_empty() {
            return;
        }
        lock(&self.wakes).retain(|tx| nodes.iter().all(|n| tx.send(n.clone()).is_ok()));
    }

    /// Folds the recent launches a describe does not show yet into `instances`; returns
    /// them with their launch times.
    fn merge_launches(
        &self,
        master_key: &str,
        instances: &mut Vec<Instance>,
    ) -> Vec<(Instance, Instant)> {
        let mut launches = lock(&self.launches);
        let recent = launches.remove(master_key).unwrap_or_default();
        let awaited =
            merge_recent_launches(instances, recent, Instant::now(), LAUNCH_VISIBILITY_GRACE);
        if !awaited.is_empty() {
            launches.insert(master_key.to_string(), awaited.clone());
        }
        awaited
    }

    /// Folds an instance the operator just launched into the snapshot. An instance known by
    /// id is one instance: when a describe newer than the launch already holds it (the
    /// RunInstances answer arrived late), what the describe saw is kept. Until a describe
    /// shows it, later snapshots keep it too (EC2's describe lags behind its launches).
    pub async fn launched(&self, master_key: &str, instance: Instance) {
        let now = Instant::now();
        lock(&self.launches)
            .entry(master_key.to_string())
            .or_default()
            .push((instance.clone(), now));
        self.update(master_key, |s| {
            if s.instance(&instance.id).is_none() {
                s.await_launch(&instance.id, now);
            }
            s.add_instance(instance)
        })
        .await;
    }

    /// Records that a record was written (or deleted, with `None`).
    pub async fn record(&self, master_key: &str, certname: &str, listed: Option<ListedRecord>) {
        self.update(master_key, |s| {
            let records = &mut s.observed.records;
            match listed {
                Some(l) => {
                    records.records.insert(certname.to_string(), l);
                }
                None => {
                    records.records.remove(certname);
                    records.check_ins.remove(certname);
                    records.signatures.remove(certname);
                }
            }
        })
        .await;
    }

    /// Records that a certname was revoked and cleaned at the CA.
    pub async fn revoked(&self, master_key: &str, certname: &str) {
        self.update(master_key, |s| {
            if let Some(c) = s.observed.certificates.as_mut() {
                c.remove(certname);
            }
        })
        .await;
    }

    /// Forgets a master's snapshot: the next pass (or look of the CA watch) observes
    /// afresh, and compares with it.
    pub async fn invalidate(&self, master_key: &str) {
        let slot = self.slot(master_key);
        slot.lock().await.stale = true;
    }

    /// Drops everything cached for a master (it was deleted).
    pub fn forget(&self, master_key: &str) {
        lock(&self.slots).remove(master_key);
        lock(&self.launches).remove(master_key);
    }

    /// How many masters have a cache slot.
    pub fn masters(&self) -> usize {
        lock(&self.slots).len()
    }
}

/// Is a certificate or CSR of this certname present at the CA (not yet cleaned)?
pub fn ca_has(certificates: &Listing, certname: &str) -> bool {
    certificates
        .get(certname)
        .is_some_and(|c| matches!(c.state, CertState::Requested | CertState::Signed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> Instance {
        Instance {
            id: id.into(),
            state: InstanceState::Pending,
            tags: Default::default(),
            private_ip: None,
            public_ip: None,
            zone: None,
            launch_time: None,
            image_id: None,
            instance_type: None,
            subnet_id: None,
            security_group_ids: vec![],
            http_tokens: None,
        }
    }

    fn of_node(id: &str, node: &str, state: InstanceState) -> Instance {
        let mut i = instance(id);
        i.state = state;
        i.tags.insert(tags::NODE.into(), node.into());
        i
    }

    #[test]
    fn a_describe_without_a_live_instance_names_its_node() {
        let before = [
            of_node("i-1", "ns/a", InstanceState::Running),
            of_node("i-2", "ns/b", InstanceState::Running),
            of_node("i-3", "ns/c", InstanceState::Pending),
            of_node("i-4", "ns/d", InstanceState::Terminated),
        ];
        let after = [
            of_node("i-1", "ns/a", InstanceState::Running),
            of_node("i-2", "ns/b", InstanceState::ShuttingDown),
            of_node("i-4", "ns/d", InstanceState::Terminated),
        ];
        let (before, after) = (live_instances(&before), live_instances(&after));
        let woken: Vec<_> = vanished_nodes(&before, &after).into_iter().collect();
        assert_eq!(
            woken,
            ["ns/b", "ns/c"],
            "stopping and missing, not running or long gone"
        );
        assert!(vanished_nodes(&after, &after).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_launch_the_describe_does_not_show_yet_is_kept_until_the_grace_ends() {
        let launched = Instant::now();
        tokio::time::advance(Duration::from_secs(2)).await;
        let mut described = vec![instance("i-other")];
        let awaited = merge_recent_launches(
            &mut described,
            vec![(instance("i-new"), launched)],
            Instant::now(),
            LAUNCH_VISIBILITY_GRACE,
        );
        assert_eq!(described.len(), 2, "kept while EC2 lags");
        assert_eq!(awaited.len(), 1);

        // Once the describe shows it, the describe's view is the one kept.
        let mut seen = vec![Instance {
            state: InstanceState::Running,
            ..instance("i-new")
        }];
        let awaited =
            merge_recent_launches(&mut seen, awaited, Instant::now(), LAUNCH_VISIBILITY_GRACE);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].state, InstanceState::Running);
        assert!(awaited.is_empty());

        // Still missing after the grace: it is gone, not lagging.
        let mut described = Vec::new();
        tokio::time::advance(LAUNCH_VISIBILITY_GRACE).await;
        merge_recent_launches(
            &mut described,
            vec![(instance("i-new"), launched)],
            Instant::now(),
            LAUNCH_VISIBILITY_GRACE,
        );
        assert!(described.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_launch_no_describe_showed_is_awaited_since_its_launch_across_snapshots() {
        use crate::fakes::{ca::FakeCa, ec2::FakeEc2, records::FakeRecords};
        let services = MasterServices {
            cloud: Arc::new(FakeEc2::default()),
            records: Arc::new(FakeRecords::default()),
            ca: Arc::new(FakeCa::default()),
            ca_cert_pem: String::new(),
            challenge_key: crate::identity::ChallengeKey::generate(),
        };
        let cache = SnapshotCache::default();
        let age = Duration::from_secs(60);
        let get = || cache.get("ns/pm", &services, age, age);
        assert!(get().await.unwrap().instances.is_empty());
        let launched = Instant::now();
        cache.launched("ns/pm", instance("i-new")).await;
        let s = get().await.unwrap();
        assert!(
            s.instance("i-new").is_some(),
            "folded into the cached snapshot"
        );
        assert_eq!(s.awaited_since("i-new"), Some(launched));

        // A new observation whose describe does not show it keeps it, and its launch time.
        tokio::time::advance(age).await;
        let s = get().await.unwrap();
        assert!(s.taken > launched);
        assert!(s.instance("i-new").is_some());
        assert_eq!(s.awaited_since("i-new"), Some(launched));

        tokio::time::advance(LAUNCH_VISIBILITY_GRACE).await;
        let s = get().await.unwrap();
        assert!(s.instance("i-new").is_none(), "gone after the grace");
        assert_eq!(s.awaited_since("i-new"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn instances_are_found_by_id_and_node_and_an_id_is_added_once() {
        let tagged = |id: &str, uid: &str, state| {
            let mut i = of_node(id, "ns/n", state);
            i.tags.insert(tags::NODE_UID.into(), uid.into());
            i
        };
        let observed = MasterObservation {
            instances: vec![
                tagged("i-1", "uid-a", InstanceState::Terminated),
                tagged("i-2", "uid-b", InstanceState::Running),
                instance("i-untagged"),
            ]
            .into(),
            records: Default::default(),
            certificates: None,
        };
        let mut s = Snapshot::new(observed, degraded_budget(&None), Instant::now());
        s.add_instance(tagged("i-3", "uid-a", InstanceState::Pending));
        // Known by id: the first view is kept (a describe newer than the launch).
        s.add_instance(tagged("i-2", "uid-b", InstanceState::Pending));
        let ids = |uid| {
            s.node_instances(uid)
                .into_iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("uid-a"), ["i-1", "i-3"]);
        assert_eq!(ids("uid-b"), ["i-2"]);
        assert!(ids("uid-none").is_empty());
        assert_eq!(
            s.instance("i-2").map(|i| i.state),
            Some(InstanceState::Running)
        );
        assert!(s.instance("i-untagged").is_some());
        assert!(s.instance("i-9").is_none());
        assert_eq!(s.instances.len(), 4);
    }
}
