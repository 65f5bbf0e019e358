//! State shared by every reconcile: clients, caches and settings parsed once at start.

use std::sync::Arc;
use std::time::Duration;

use super::backoff::Backoff;
use super::certname_owners::CertnameOwners;
use super::events::EventSink;
use super::guards::{
    Absences, CsrRemovals, LaunchAttempts, ReplacementSlots, UnsignedClaims,
    DEFAULT_MAX_REPLACEMENTS,
};
use super::master::MasterMemory;
use super::orphans::OrphanTracker;
use super::services::ServiceFactory;
use super::snapshot::SnapshotCache;
use crate::metrics::Metrics;

/// Settings of the controllers, parsed once at start.
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
    /// Requeue interval of a healthy master (probes, counts, orphan sweep).
    pub master_resync: Duration,
    /// Which objects this replica manages (sharding).
    pub scope: Scope,
    /// Nodes of one master replaced at once because their certificate vanished.
    pub max_replacements_per_master: usize,
    /// How long an instance status or a record names must be missing from every describe
    /// before it counts as vanished (EC2's describe lags behind its launches).
    pub instance_visibility_grace: Duration,
}

/// The objects one operator replica manages: a namespace and/or a label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Only objects matching this label selector.
    pub label_selector: Option<String>,
}

impl Scope {
    /// An API over this scope's namespace (or all namespaces).
    pub fn api<K>(&self, client: kube::Client) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => kube::Api::namespaced(client, ns),
            None => kube::Api::all(client),
        }
    }
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            operator_id: "default".to_string(),
            snapshot_max_age: Duration::from_secs(10),
            resync: Duration::from_secs(300),
            converging: Duration::from_secs(10),
            master_resync: Duration::from_secs(60),
            scope: Scope::default(),
            max_replacements_per_master: DEFAULT_MAX_REPLACEMENTS,
            instance_visibility_grace: super::snapshot::LAUNCH_VISIBILITY_GRACE,
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
    /// What the master reconciler remembers between passes.
    pub masters: MasterMemory,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// CSR first sightings and orphans already reported, per master.
    pub orphans: OrphanTracker,
    /// Which node owns a certname on a CA shared by several masters.
    pub certname_owners: CertnameOwners,
    /// Pace of removing refused CSRs, per master.
    pub csr_removals: CsrRemovals,
    /// Nodes being replaced because their certificate vanished, per master.
    pub replacements: ReplacementSlots,
    /// Instances named by status or records that describes do not show.
    pub absences: Absences,
    /// Nodes whose last launch failed with an unknown outcome.
    pub launch_attempts: LaunchAttempts,
    /// Sign requests the CA refused whose records still say "asked".
    pub unsigned_claims: UnsignedClaims,
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
            masters: MasterMemory::default(),
            metrics: Arc::new(Metrics::new()),
            orphans: OrphanTracker::default(),
            certname_owners: CertnameOwners::default(),
            csr_removals: CsrRemovals::default(),
            replacements: ReplacementSlots::default(),
            absences: Absences::default(),
            launch_attempts: LaunchAttempts::default(),
            unsigned_claims: UnsignedClaims::default(),
        }
    }

    /// Shares `metrics` (the registry the HTTP server exposes).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }
}
