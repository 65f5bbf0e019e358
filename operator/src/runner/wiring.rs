//! How the two controllers are put together: their trigger streams, the cross-object
//! trigger from a master to its nodes, and the guard against malformed objects.
//!
//! The streams come in as arguments, so the same wiring runs on API watches in
//! production and on hand-fed streams in tests (kube-fake-client has no watch).

use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::error_boundary::InvalidObject;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use tracing::Instrument;

use crate::api::master::PuppetMaster;
use crate::api::node::PuppetNode;
use crate::controller::{master, node, Context, ReconcileError};

/// A PuppetNode as watched: a malformed object arrives as an error instead of stalling
/// the watcher.
pub type GuardedNode = DeserializeGuard<PuppetNode>;
/// A PuppetMaster as watched.
pub type GuardedMaster = DeserializeGuard<PuppetMaster>;

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

/// Master changes that re-trigger nodes: spec changes only (a new generation), so the
/// master's own status writes do not reconcile all its nodes again.
pub fn master_triggers(
    masters: impl Stream<Item = Result<GuardedMaster, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<GuardedMaster, watcher::Error>> + Send + 'static {
    masters.predicate_filter(kube::runtime::predicates::generation, Default::default())
}

/// The PuppetNode controller: triggered by node changes and by changes of their master.
pub fn node_controller(
    nodes: impl Stream<Item = Result<GuardedNode, watcher::Error>> + Send + 'static,
    store: Store<GuardedNode>,
    masters: impl Stream<Item = Result<GuardedMaster, watcher::Error>> + Send + 'static,
    concurrency: u16,
) -> Controller<GuardedNode> {
    let lookup = store.clone();
    Controller::for_stream(nodes, store)
        .watches_stream(masters, move |master| {
            nodes_of_master(&master, &lookup.state())
        })
        .with_config(controller::Config::default().concurrency(concurrency))
}

/// The PuppetMaster controller.
pub fn master_controller(
    masters: impl Stream<Item = Result<GuardedMaster, watcher::Error>> + Send + 'static,
    store: Store<GuardedMaster>,
    concurrency: u16,
) -> Controller<GuardedMaster> {
    Controller::for_stream(masters, store)
        .with_config(controller::Config::default().concurrency(concurrency))
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

fn span(
    kind: &'static str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> tracing::Span {
    tracing::info_span!(
        "reconcile",
        kind,
        namespace = meta.namespace.as_deref().unwrap_or_default(),
        name = meta.name.as_deref().unwrap_or_default(),
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
    let span = span("PuppetNode", object.meta());
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
    let span = span("PuppetMaster", object.meta());
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
