//! The PuppetNode reconciler: validate → observe → plan → act → sign → status, one file
//! a stage.

pub mod act;
mod converge;
mod desired;
mod observe;
mod report;
pub mod sign;
mod status;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};

use self::converge::converge;
use self::desired::{NodeIdentity, Pass};
use self::report::report_failure;
use self::validate::validate;
use crate::api::master::{PuppetMaster, SigningMode};
use crate::api::node::{Phase, PuppetNode};
use crate::controller::error::ReconcileError;
use crate::controller::finalizers::{
    add_finalizer, has_finalizer, master_finalizer_key, remove_finalizer,
};
use crate::controller::signing_watch::poll_interval;
use crate::controller::{Context, NODE_FINALIZER};
use puppet_conductor_core::pause::{holds_actions, node_pause};

/// One reconcile pass of a node (the `Controller`'s reconcile function).
pub async fn reconcile(
    node: Arc<PuppetNode>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let id = NodeIdentity::of(&node)?;
    let result = reconcile_inner(node.clone(), &ctx, &id).await;
    match &result {
        Ok(_) => ctx.backoff.reset(&id.key),
        Err(error) if matches!(error.root(), ReconcileError::CleanupInProgress(_)) => {
            ctx.backoff.reset(&id.key)
        }
        Err(error) => report_failure(&node, &ctx, error).await,
    }
    result
}

/// Error policy: permanent errors wait for a change; transient ones back off per object,
/// refusals no sooner than the converging interval (`ReconcileError::retry_delay`).
pub fn error_policy(node: Arc<PuppetNode>, error: &ReconcileError, ctx: Arc<Context>) -> Requeue {
    if error.is_permanent() {
        return Requeue::await_change();
    }
    if matches!(error.root(), ReconcileError::CleanupInProgress(_)) {
        return Requeue::requeue(ctx.settings.converging);
    }
    let key = format!(
        "{}/{}",
        node.namespace().unwrap_or_default(),
        node.name_any()
    );
    Requeue::requeue(error.retry_delay(&ctx.backoff, &key, ctx.settings.converging))
}

async fn reconcile_inner(
    node: Arc<PuppetNode>,
    ctx: &Context,
    id: &NodeIdentity,
) -> Result<Requeue, ReconcileError> {
    let ns = node
        .namespace()
        .ok_or(ReconcileError::MissingMetadata("namespace"))?;
    let nodes: Api<PuppetNode> = Api::namespaced(ctx.client.clone(), &ns);
    let masters: Api<PuppetMaster> = Api::namespaced(ctx.client.clone(), &ns);

    let deleting = node.meta().deletion_timestamp.is_some();
    let finalized = has_finalizer(node.as_ref(), NODE_FINALIZER);
    if deleting && !finalized {
        return Ok(Requeue::await_change());
    }

    let master = ctx
        .master_cache
        .get(&ctx.client, &ns, &node.spec.master_ref.name)
        .await?
        .ok_or_else(|| ReconcileError::MasterNotFound(id.master_key.clone()))?;
    // The node's own paused annotation, or its master's. It holds every write of the pass
    // below, the finalizer first, but never a deletion's cleanup (`Pass::held`).
    let pause = node_pause(
        &node.name_any(),
        node.meta().annotations.as_ref(),
        &master.name_any(),
        master.meta().annotations.as_ref(),
    );
    let held = holds_actions(pause.as_ref(), deleting);
    let services = ctx.services.services(&master).await?;
    // The spec with its master's defaults, before anything is written. A node being
    // deleted is cleaned up whatever its spec has become.
    let settings = match validate(&node, &master, &services, id) {
        Ok(settings) => Some(settings),
        Err(_) if deleting => None,
        Err(error) => return Err(error),
    };

    // Observe before adding the finalizer: a node whose cloud was never reachable (bad
    // credentials, wrong endpoint) holds nothing to clean up and must stay deletable.
    let snapshot = ctx
        .snapshots
        .get(
            &id.master_key,
            &services,
            ctx.settings.snapshot_max_age,
            ca_listing_age_limit(&master, &node, ctx.settings.snapshot_max_age),
        )
        .await?;

    // A paused node that was never finalized launched nothing: it has nothing to clean up,
    // so it gets no finalizer (and holds neither the master nor its Secrets) until it
    // resumes.
    let node = if deleting || finalized || held {
        node
    } else {
        // Before this node can launch anything, the Secrets its cleanup needs are held:
        // a namespace deleted before the master's first pass would take them otherwise.
        // The master likewise: deleted before its first pass, it would vanish and leave
        // this node nothing to clean up with.
        // One pass of a master at a time: the others then find the holds noted, instead
        // of reading the Secrets and racing to patch them and the master.
        {
            let _turn = ctx.added_finalizers.flight(&id.master_key).await;
            super::secret_hold::hold(ctx, &ns, &master).await?;
            let noted = master_finalizer_key(&id.master_key);
            let cached = master.meta().resource_version.as_deref();
            if master.meta().deletion_timestamp.is_none()
                && !has_finalizer(&master, super::MASTER_FINALIZER)
                && !ctx.added_finalizers.noted(&noted, cached)
            {
                add_finalizer(&masters, &master, super::MASTER_FINALIZER).await?;
                ctx.added_finalizers.note(&noted, cached);
            }
        }
        Arc::new(add_finalizer(&nodes, &node, NODE_FINALIZER).await?)
    };
    // The same finalizer mechanism as the master's: cleanup runs while the object is
    // being deleted, and only a cleanup that confirmed everything gone (`Ok`) releases.
    let cleanup = node.meta().deletion_timestamp.is_some();
    let result = converge(Pass {
        node: &node,
        master: &master,
        services: &services,
        snapshot: &snapshot,
        ctx,
        id,
        settings: settings.as_ref(),
        deleting: cleanup,
        pause: pause.as_ref(),
    })
    .await;
    if !cleanup {
        return result;
    }
    let requeue = result?;
    match remove_finalizer(&nodes, node.as_ref(), NODE_FINALIZER).await {
        Ok(()) => Ok(requeue),
        // A pass that started from a stale copy after an earlier pass released the node:
        // the object is gone, so the finalizer is too; nothing failed.
        Err(ReconcileError::Kube(kube::Error::Api(api))) if api.code == 404 => {
            Ok(Requeue::await_change())
        }
        Err(error) => Err(error),
    }
}

/// How old the CA listing of the master's shared snapshot may be for this pass. A node
/// waiting for its CSR in `Operator` mode reads one at most `signing.pollInterval` old
/// (the CA watch keeps it so, one listing per master per interval); other passes take it
/// with the snapshot.
fn ca_listing_age_limit(master: &PuppetMaster, node: &PuppetNode, max_age: Duration) -> Duration {
    let waiting = node.status.as_ref().and_then(|s| s.phase) == Some(Phase::AwaitingCsr);
    match master.spec.signing.mode {
        SigningMode::Operator if waiting => poll_interval(master).min(max_age),
        _ => max_age,
    }
}

#[cfg(test)]
mod tests;
