//! One shared observation per master: a single paginated DescribeInstances, records
//! listing and CA listing serve every node of that master.
//!
//! A snapshot is reused until it is older than the resync age; the operator's own
//! launches, terminations and writes are folded into it, so 1,000 nodes reconciled in
//! a row cost one describe, not 1,000. Its CA listing alone may be refreshed more often
//! (Operator-mode signing polls the CA at `signing.pollInterval`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::error::ReconcileError;
use super::services::MasterServices;
use crate::ca::{CertState, CertificateInfo};
use crate::cloud::{tags, Instance, InstanceState};
use crate::records::{ListedRecord, RecordListing};

/// What was observed of one master's cloud, bucket and CA.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Every instance tagged for the master, any state.
    pub instances: Vec<Instance>,
    /// Records and check-ins under the master's prefix.
    pub records: RecordListing,
    /// Certificates and CSRs by certname; `None` when the CA could not be listed.
    pub certificates: Option<HashMap<String, CertificateInfo>>,
    /// Per-certname CA reads left for this CA listing while it is failing: nodes waiting
    /// for a CSR fall back to them, at most this many per poll interval.
    pub degraded_reads: Arc<AtomicUsize>,
    /// When it was taken.
    pub taken: Instant,
    /// When its CA listing was taken (at or after `taken`).
    pub ca_taken: Instant,
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

    /// Instances launched for one node (by UID tag).
    pub fn node_instances(&self, node_uid: &str) -> Vec<Instance> {
        self.instances
            .iter()
            .filter(|i| i.tags.get(tags::NODE_UID).map(String::as_str) == Some(node_uid))
            .cloned()
            .collect()
    }
}

/// The CA's certificates and CSRs by certname. The listing only refines status and
/// revocation; an unreachable CA must not stop launches or deletion of instances, so it
/// is optional (`None`).
type CaListing = Option<HashMap<String, CertificateInfo>>;

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
}

/// Snapshots by master key (`namespace/name`).
#[derive(Default)]
pub struct SnapshotCache {
    slots: std::sync::Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
}

impl SnapshotCache {
    fn slot(&self, master_key: &str) -> Arc<Mutex<Slot>> {
        match self.slots.lock() {
            Ok(mut map) => map.entry(master_key.to_string()).or_default().clone(),
            // A poisoned map only loses sharing, never correctness: observe afresh.
            Err(_) => Arc::new(Mutex::new(Slot::default())),
        }
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
        if let Some(s) = &slot.snapshot {
            if s.taken.elapsed() < max_age {
                if s.ca_taken.elapsed() < ca_max_age {
                    return Ok(s.clone());
                }
                let mut next = (**s).clone();
                let listing = list_ca(master_key, services).await;
                next.degraded_reads = degraded_budget(&listing);
                next.certificates = listing;
                next.ca_taken = Instant::now();
                let next = Arc::new(next);
                slot.snapshot = Some(next.clone());
                return Ok(next);
            }
        }
        let instances = services.cloud.describe_master_instances(master_key).await?;
        let records = services.records.list().await?;
        let certificates = list_ca(master_key, services).await;
        let degraded_reads = degraded_budget(&certificates);
        let now = Instant::now();
        let snapshot = Arc::new(Snapshot {
            instances,
            records,
            certificates,
            degraded_reads,
            taken: now,
            ca_taken: now,
        });
        slot.snapshot = Some(snapshot.clone());
        Ok(snapshot)
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

    /// Folds an instance the operator just launched into the snapshot. An instance known by
    /// id is one instance: when a describe newer than the launch already holds it (the
    /// RunInstances answer arrived late), what the describe saw is kept.
    pub async fn launched(&self, master_key: &str, instance: Instance) {
        self.update(master_key, |s| {
            if !s.instances.iter().any(|i| i.id == instance.id) {
                s.instances.push(instance);
            }
        })
        .await;
    }

    /// Marks instances the operator just asked to terminate as shutting down.
    pub async fn terminated(&self, master_key: &str, ids: &[String]) {
        self.update(master_key, |s| {
            for i in s.instances.iter_mut().filter(|i| ids.contains(&i.id)) {
                if i.state != InstanceState::Terminated {
                    i.state = InstanceState::ShuttingDown;
                }
            }
        })
        .await;
    }

    /// Records that a record was written (or deleted, with `None`).
    pub async fn record(&self, master_key: &str, certname: &str, listed: Option<ListedRecord>) {
        self.update(master_key, |s| match listed {
            Some(l) => {
                s.records.records.insert(certname.to_string(), l);
            }
            None => {
                s.records.records.remove(certname);
                s.records.check_ins.remove(certname);
                s.records.signatures.remove(certname);
            }
        })
        .await;
    }

    /// Records that a certname was revoked and cleaned at the CA.
    pub async fn revoked(&self, master_key: &str, certname: &str) {
        self.update(master_key, |s| {
            if let Some(c) = s.certificates.as_mut() {
                c.remove(certname);
            }
        })
        .await;
    }

    /// Forgets a master's snapshot (the next pass observes afresh).
    pub async fn invalidate(&self, master_key: &str) {
        let slot = self.slot(master_key);
        slot.lock().await.snapshot = None;
    }
}

/// Is a certificate or CSR of this certname present at the CA (not yet cleaned)?
pub fn ca_has(certificates: &HashMap<String, CertificateInfo>, certname: &str) -> bool {
    certificates
        .get(certname)
        .is_some_and(|c| matches!(c.state, CertState::Requested | CertState::Signed))
}
