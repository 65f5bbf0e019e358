//! How the controllers are put together: their trigger streams (filtered so that the
//! operator's own status writes wake nothing), the cross-object triggers from a master to
//! its nodes and from a Secret to the masters referencing it, the guard against malformed
//! objects, the sweep releasing Secret holds no master needs, and the bounded drain on
//! shutdown.
//!
//! The streams come in as arguments, so the same wiring runs on API watches in
//! production and on hand-fed streams in tests (kube-fake-client has no watch).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::error_boundary::InvalidObject;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, PredicateConfig, WatchStreamExt};
use kube::Resource;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::pool_triggers::{pool_trigger, GuardedPool};
use super::triggers::{guarded_trigger, master_trigger, node_trigger, SecretMeta};
use crate::api::node::PuppetNode;
use crate::controller::error::chain;
use crate::controller::secret_hold::{referenced_secrets, release_unneeded, stale_holds};
use crate::controller::{master, node, pool, Context, ReconcileError};

/// A PuppetNode as watched: a malformed object arrives as an error instead of stalling
/// the watcher.
pub type GuardedNode = DeserializeGuard<PuppetNode>;
/// A PuppetMaster as watched.
pub use crate::controller::master_cache::GuardedMaster;

/// The nodes (from the node store) that reference `master`: they are reconciled again
/// when the master changes.
pub fn nodes_of_master(
    master: &GuardedMaster,
    nodes: &[Arc<GuardedNode>],
) -> Vec<ObjectRef<GuardedNode>> {
    let meta = master.meta();
    let (Some(name), namespace) = (meta.name.as_deref(), meta.namespace.as_deref()) else {
        return Vec::new();
    };
    nodes
        .iter()
        .filter_map(|guarded| match &guarded.0 {
            Ok(node)
                if node.spec.master_ref.name == name
                    && node.meta().namespace.as_deref() == namespace =>
            {
                Some(ObjectRef::from_obj(guarded.as_ref()))
            }
            _ => None,
        })
        .collect()
}

/// The masters (from the master store) that reference `secret`: they are reconciled again
/// when it changes (rotated, created, deleted).
pub fn masters_of_secret(
    secret: &SecretMeta,
    masters: &[Arc<GuardedMaster>],
) -> Vec<ObjectRef<GuardedMaster>> {
    let meta = secret.meta();
    let Some(name) = meta.name.as_deref() else {
        return Vec::new();
    };
    masters
        .iter()
        .filter_map(|guarded| match &guarded.0 {
            Ok(m)
                if m.meta().namespace == meta.namespace && referenced_secrets(m).contains(name) =>
            {
                Some(ObjectRef::from_obj(guarded.as_ref()))
            }
            _ => None,
        })
        .collect()
}

/// Master changes that re-trigger nodes: spec changes (a new generation, which
/// deletion bumps too) and its paused annotation (`master_nodes_trigger`), so the
/// master's own status writes do not reconcile all its nodes
/// again. A Secret rotation does not reach the nodes this way: their services are re-read
/// per pass, keyed by the Secrets' resourceVersions, so their next pass uses the new ones.
pub fn master_triggers(
    masters: impl Stream<Item = Result<GuardedMaster, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<GuardedMaster, watcher::Error>> + Send + 'static {
    masters.predicate_filter(super::triggers::master_nodes_trigger, Default::default())
}

/// The node a `namespace/name` key (the instances' node tag) names.
pub fn node_ref(key: &str) -> Option<ObjectRef<GuardedNode>> {
    let (ns, name) = key.split_once('/')?;
    (!ns.is_empty() && !name.is_empty()).then(|| ObjectRef::new(name).within(ns))
}

/// The PuppetNode controller: triggered by node changes (not by their status writes), by
/// changes of their master, and by the master's shared observation (`wakes`:
/// `namespace/name` keys): a describe that found a node's instance gone, or a CA listing
/// that changed its certname's entry.
pub fn node_controller(
    nodes: impl Stream<Item = Result<GuardedNode, watcher::Error>> + Send + 'static,
    store: Store<GuardedNode>,
    masters: impl Stream<Item = Result<GuardedMaster, watcher::Error>> + Send + 'static,
    wakes: impl Stream<Item = String> + Send + 'static,
    concurrency: u16,
) -> Controller<GuardedNode> {
    let lookup = store.clone();
    let nodes = nodes.predicate_filter(
        |n: &GuardedNode| guarded_trigger(n, node_trigger),
        PredicateConfig::default(),
    );
    Controller::for_stream(nodes, store)
        .watches_stream(masters, move |master| {
            nodes_of_master(&master, &lookup.state())
        })
        .reconcile_on(wakes.filter_map(|key| std::future::ready(node_ref(&key))))
        .with_config(controller::Config::default().concurrency(concurrency))
}

/// The PuppetMaster controller: triggered by master changes (not by its status writes) and
/// by changes of the Secrets it references.
pub fn master_controller(
    masters: impl Stream<Item = Result<GuardedMaster, watcher::Error>> + Send + 'static,
    store: Store<GuardedMaster>,
    secrets: impl Stream<Item = Result<SecretMeta, watcher::Error>> + Send + 'static,
    concurrency: u16,
) -> Controller<GuardedMaster> {
    let lookup = store.clone();
    let masters = masters.predicate_filter(
        |m: &GuardedMaster| guarded_trigger(m, master_trigger),
        PredicateConfig::default(),
    );
    Controller::for_stream(masters, store)
        .watches_stream(secrets, move |secret| {
            masters_of_secret(&secret, &lookup.state())
        })
        .with_config(controller::Config::default().concurrency(concurrency))
}

/// How long a pool waits after a change of one of its nodes before its pass, so that a
/// burst of node changes (a roll, a scale) costs one pass and one list.
pub const POOL_DEBOUNCE: Duration = Duration::from_secs(1);

/// The PuppetNodePool controller: triggered by pool changes (not by its status writes) and
/// by the changes of its nodes that it reads (`pool_triggers::pool_node_triggers`).
pub fn pool_controller(
    pools: impl Stream<Item = Result<GuardedPool, watcher::Error>> + Send + 'static,
    store: Store<GuardedPool>,
    nodes: impl Stream<Item = Result<PuppetNode, watcher::Error>> + Send + 'static,
    concurrency: u16,
) -> Controller<GuardedPool> {
    let pools = pools.predicate_filter(
        |p: &GuardedPool| guarded_trigger(p, pool_trigger),
        PredicateConfig::default(),
    );
    Controller::for_stream(pools, store)
        .owns_stream(nodes)
        .with_config(
            controller::Config::default()
                .concurrency(concurrency)
                .debounce(POOL_DEBOUNCE),
        )
}

/// The caches the hold sweep reads.
pub struct HoldCaches {
    /// Secret metadata in scope.
    pub secrets: Store<SecretMeta>,
    /// PuppetMasters in scope.
    pub masters: Store<GuardedMaster>,
    /// PuppetNodes in scope.
    pub nodes: Store<GuardedNode>,
}

/// One pass of the hold sweep: the held Secrets the caches show no master needs, each
/// namespace's confirmed against the API before anything is released.
pub async fn sweep_holds(ctx: &Context, caches: &HoldCaches) {
    let candidates = {
        let masters = caches.masters.state();
        let nodes = caches.nodes.state();
        let secrets = caches.secrets.state();
        stale_holds(
            secrets.iter().map(|s| &s.metadata),
            &masters.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
            &nodes.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
        )
    };
    for (namespace, names) in candidates {
        if let Err(error) = release_unneeded(ctx, &namespace, &names).await {
            tracing::warn!(namespace, error = %chain(&error), "releasing unneeded Secret holds failed; retried on the next sweep");
        }
    }
}

/// How long the sweep waits after a master change before it looks, so that the master
/// cache (a watch of its own) has the new spec.
const SWEEP_SETTLE: Duration = Duration::from_secs(1);

/// Releases Secret holds no master needs any more (a reference changed, a master was
/// removed without releasing them): every `period`, and shortly after a master's spec
/// changes (a message on `woken`). Stops at `shutdown`.
pub async fn hold_sweep(
    ctx: Arc<Context>,
    caches: HoldCaches,
    mut woken: mpsc::UnboundedReceiver<()>,
    period: Duration,
    shutdown: CancellationToken,
) {
    // Empty caches would make every hold look stale (each then costs API reads to confirm).
    let ready = async {
        futures::join!(
            caches.secrets.wait_until_ready(),
            caches.masters.wait_until_ready(),
            caches.nodes.wait_until_ready()
        )
    };
    tokio::select! {
        _ = ready => {}
        () = shutdown.cancelled() => return,
    }
    loop {
        sweep_holds(&ctx, &caches).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
            Some(()) = woken.recv() => {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(SWEEP_SETTLE) => {}
                }
                while woken.try_recv().is_ok() {}
            }
        }
    }
}

/// Runs `work` to its end, or, once `shutdown` is cancelled, for at most `grace` more:
/// what is still running then is dropped, which aborts the reconciles in flight (each step
/// is idempotent, so the next leader repeats it). True when `work` ended by itself.
pub async fn drain_within(
    work: impl Future<Output = ()>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> bool {
    tokio::pin!(work);
    tokio::select! {
        () = &mut work => return true,
        () = shutdown.cancelled() => {}
    }
    tokio::time::timeout(grace, work).await.is_ok()
}

fn reference_of(kind: &str, invalid: &InvalidObject) -> ObjectReference {
    ObjectReference {
        api_version: Some("puppet-conductor.dev/v1alpha1".to_string()),
        kind: Some(kind.to_string()),
        name: invalid.metadata.name.clone(),
        namespace: invalid.metadata.namespace.clone(),
        uid: invalid.metadata.uid.clone(),
        resource_version: invalid.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// A malformed object gets a Warning event and waits for a fix; the others go on.
async fn reject_invalid(kind: &str, invalid: &InvalidObject, ctx: &Context) -> ReconcileError {
    ctx.events
        .publish(
            &reference_of(kind, invalid),
            true,
            "InvalidObject",
            "Reconcile",
            format!("the object cannot be read as a {kind}: {}", invalid.error),
        )
        .await;
    ReconcileError::InvalidObject(invalid.error.clone())
}

/// The span every reconcile of `kind` runs in.
pub(crate) fn reconcile_span(
    kind: &'static str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> tracing::Span {
    // `object`, not `name`: a JSON line's span already has a `name` key (the span's), and
    // a parser keeps one of two equal keys.
    tracing::info_span!(
        "reconcile",
        kind,
        namespace = meta.namespace.as_deref().unwrap_or_default(),
        object = meta.name.as_deref().unwrap_or_default(),
    )
}

fn record(ctx: &Context, kind: &str, started: Instant, result: &Result<Requeue, ReconcileError>) {
    let category = match result {
        Ok(_) => None,
        // Waiting for cleanup is progress, not an error.
        Err(e) if matches!(e.root(), ReconcileError::CleanupInProgress(_)) => None,
        Err(e) => Some(e.root().category()),
    };
    ctx.metrics
        .count_reconcile(kind, started.elapsed(), category);
}

/// The node controller's reconcile function: unwraps the guard, times and counts.
pub async fn reconcile_node(
    object: Arc<GuardedNode>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let started = Instant::now();
    let span = reconcile_span("PuppetNode", object.meta());
    let result = match &object.0 {
        Ok(n) => {
            node::reconcile(Arc::new(n.clone()), ctx.clone())
                .instrument(span)
                .await
        }
        Err(invalid) => Err(reject_invalid("PuppetNode", invalid, &ctx)
            .instrument(span)
            .await),
    };
    record(&ctx, "PuppetNode", started, &result);
    result
}

/// The node controller's error policy.
pub fn node_error_policy(
    object: Arc<GuardedNode>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Requeue {
    match &object.0 {
        Ok(n) => node::error_policy(Arc::new(n.clone()), error, ctx),
        Err(_) => Requeue::await_change(),
    }
}

/// The master controller's reconcile function.
pub async fn reconcile_master(
    object: Arc<GuardedMaster>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let started = Instant::now();
    let span = reconcile_span("PuppetMaster", object.meta());
    let result = match &object.0 {
        Ok(m) => {
            master::reconcile(Arc::new(m.clone()), ctx.clone())
                .instrument(span)
                .await
        }
        Err(invalid) => Err(reject_invalid("PuppetMaster", invalid, &ctx)
            .instrument(span)
            .await),
    };
    record(&ctx, "PuppetMaster", started, &result);
    result
}

/// The master controller's error policy.
pub fn master_error_policy(
    object: Arc<GuardedMaster>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Requeue {
    match &object.0 {
        Ok(m) => master::error_policy(Arc::new(m.clone()), error, ctx),
        Err(_) => Requeue::await_change(),
    }
}

/// The pool controller's reconcile function.
pub async fn reconcile_pool(
    object: Arc<GuardedPool>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let started = Instant::now();
    let span = reconcile_span("PuppetNodePool", object.meta());
    let result = match &object.0 {
        Ok(p) => {
            pool::reconcile(Arc::new(p.clone()), ctx.clone())
                .instrument(span)
                .await
        }
        Err(invalid) => Err(reject_invalid("PuppetNodePool", invalid, &ctx)
            .instrument(span)
            .await),
    };
    record(&ctx, "PuppetNodePool", started, &result);
    result
}

/// The pool controller's error policy.
pub fn pool_error_policy(
    object: Arc<GuardedPool>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Requeue {
    match &object.0 {
        Ok(p) => pool::error_policy(Arc::new(p.clone()), error, ctx),
        Err(_) => Requeue::await_change(),
    }
}
