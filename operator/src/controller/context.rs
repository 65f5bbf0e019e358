//! State shared by every reconcile: clients, caches and settings parsed once at start.

use std::sync::Arc;
use std::time::Duration;

use super::backoff::Backoff;
use super::certname_owners::CertnameOwners;
use super::events::EventSink;
use super::finalizers::AddedFinalizers;
use super::guards::{
    Absences, CsrRemovals, LaunchAttempts, ReplacementSlots, UnsignedClaims,
    DEFAULT_MAX_REPLACEMENTS,
};
use super::master::MasterMemory;
use super::master_cache::MasterCache;
use super::node_cache::NodeCache;
use super::secret_cache::SecretCache;
use super::services::ServiceFactory;
use super::snapshot::SnapshotCache;
use crate::metrics::Metrics;
use crate::orphans::OrphanTracker;

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
    /// The masters as the watch sees them (node passes read their master here).
    pub master_cache: MasterCache,
    /// The Secrets' metadata as the watch sees it (holds are checked here first).
    pub secret_cache: SecretCache,
    /// Finalizers this process added that the caches do not show yet.
    pub added_finalizers: AddedFinalizers,
    /// The nodes as the watch sees them (a master's pass counts them here).
    pub node_cache: NodeCache,
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
            master_cache: MasterCache::default(),
            secret_cache: SecretCache::default(),
            added_finalizers: AddedFinalizers::default(),
            node_cache: NodeCache::default(),
        }
    }

    /// Forgets every per-master cache, series and client of a deleted master
    /// (`namespace/name`), so the operator's memory follows the masters that exist.
    pub async fn forget_master(&self, master_key: &str) {
        self.snapshots.forget(master_key);
        self.services.forget(master_key).await;
        self.masters.forget(master_key);
        self.orphans.forget_master(master_key);
        self.csr_removals.forget(master_key);
        self.metrics.forget_master(master_key);
        self.added_finalizers.forget_master(master_key);
    }

    /// Shares `metrics` (the registry the HTTP server exposes).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::api::master::PuppetMaster;
    use crate::controller::events::MemoryEvents;
    use crate::controller::services::MasterServices;
    use crate::controller::ReconcileError;

    struct NoServices;

    #[async_trait::async_trait]
    impl ServiceFactory for NoServices {
        async fn services(&self, _: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
            Err(ReconcileError::MasterNotFound("none".into()))
        }
    }

    async fn context() -> Context {
        let client = kube_fake_client::ClientBuilder::new()
            .build()
            .await
            .unwrap();
        Context::new(
            client,
            Arc::new(NoServices),
            Arc::new(MemoryEvents::default()),
            NodeSettings::default(),
        )
    }

    #[tokio::test]
    async fn forgetting_a_master_drops_its_caches_and_series_and_keeps_the_others() {
        let ctx = context().await;
        for m in ["ns/gone", "ns/kept"] {
            ctx.snapshots.invalidate(m).await;
            ctx.metrics
                .set_nodes_by_phase(m, &BTreeMap::from([("Ready".to_string(), 2)]));
            ctx.metrics.set_oldest_pending_csr_age(m, 5.0);
            ctx.metrics.set_orphans_left(m, &[("record", 1)]);
            assert!(ctx.masters.first_warning(m, "csr-1"));
        }
        assert_eq!(ctx.snapshots.masters(), 2);

        ctx.forget_master("ns/gone").await;

        assert_eq!(ctx.snapshots.masters(), 1);
        assert!(
            ctx.masters.first_warning("ns/gone", "csr-1"),
            "a forgotten master's CSR is warned about again"
        );
        assert!(!ctx.masters.first_warning("ns/kept", "csr-1"));
        let text = ctx.metrics.encode().unwrap();
        assert!(!text.contains("master=\"ns/gone\""), "{text}");
        assert!(text.contains("master=\"ns/kept\""), "{text}");
    }

    #[tokio::test]
    async fn warnings_are_kept_only_for_csrs_still_unknown() {
        let ctx = context().await;
        assert!(ctx.masters.first_warning("ns/m", "a"));
        assert!(ctx.masters.first_warning("ns/m", "b"));
        assert!(ctx.masters.first_warning("ns/other", "b"));
        ctx.masters.retain_warnings("ns/m", &HashSet::from(["a"]));
        assert!(
            !ctx.masters.first_warning("ns/m", "a"),
            "still waiting: not again"
        );
        assert!(
            ctx.masters.first_warning("ns/m", "b"),
            "gone, then back: warned again"
        );
        assert!(
            !ctx.masters.first_warning("ns/other", "b"),
            "other masters untouched"
        );
    }
}
