//! State shared by every reconcile: clients, caches and settings parsed once at start.

use std::sync::Arc;
use std::time::Duration;

use super::backoff::Backoff;
use super::events::EventSink;
use super::services::ServiceFactory;
use super::snapshot::SnapshotCache;

/// Settings of the node controller.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Name of this operator installation, written into every tag and record.
    pub operator_id: String,
    /// How long a master snapshot (describe + listings) is reused.
    pub snapshot_max_age: Duration,
    /// Requeue interval once a node is converged (level-triggered resync).
    pub resync: Duration,
    /// Requeue interval while a node is converging (instance starting, CSR awaited).
    pub converging: Duration,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            operator_id: "default".to_string(),
            snapshot_max_age: Duration::from_secs(10),
            resync: Duration::from_secs(300),
            converging: Duration::from_secs(10),
        }
    }
}

/// Shared by all reconciles.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// Builds each master's services.
    pub services: Arc<dyn ServiceFactory>,
    /// Shared per-master observations.
    pub snapshots: SnapshotCache,
    /// Events on nodes and masters.
    pub events: Arc<dyn EventSink>,
    /// Per-object retry backoff.
    pub backoff: Backoff,
    /// Settings.
    pub settings: NodeSettings,
}

impl Context {
    /// A context with the default backoff (1 s doubling to 5 min).
    pub fn new(
        client: kube::Client,
        services: Arc<dyn ServiceFactory>,
        events: Arc<dyn EventSink>,
        settings: NodeSettings,
    ) -> Self {
        Self {
            client,
            services,
            snapshots: SnapshotCache::default(),
            events,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            settings,
        }
    }
}
