//! The PuppetNodePool reconciler: observe the nodes the pool owns (a quorum list) → plan
//! (`pool::plan_pool`, pure) → act (create, delete, rewrite in place) → status (server-side
//! apply, only when it changed).
//!
//! The nodes are read from the API, not from the watch cache: a pass must never act on a
//! view that has not seen the previous pass's creations and deletions, or it creates or
//! deletes twice. Passes are debounced by the runner, so a burst of node changes costs one
//! list.

mod act;
mod observe;
mod status;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};

use self::act::act;
use self::observe::{observe, Observed};
use self::status::write_status;
use crate::api::pool::PuppetNodePool;
use crate::api::PAUSED_ANNOTATION;
use crate::controller::error::{chain, ReconcileError};
use crate::controller::Context;
use crate::pool::status::PROGRESSING;
use crate::pool::{bounds, launch_hash, matches, plan_pool, selector_string, Bounds, PoolView};
use crate::status::conditions::reason_of;

/// Backoff key of a pool: apart from the node and master of the same name.
fn backoff_key(pool: &PuppetNodePool) -> String {
    format!(
        "pool:{}/{}",
        pool.namespace().unwrap_or_default(),
        pool.name_any()
    )
}

/// One reconcile pass of a pool.
pub async fn reconcile(
    pool: Arc<PuppetNodePool>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let result = reconcile_inner(&pool, &ctx).await;
    if result.is_ok() {
        ctx.backoff.reset(&backoff_key(&pool));
    }
    result
}

/// Error policy: an invalid spec waits for a change; the rest back off per pool.
pub fn error_policy(
    pool: Arc<PuppetNodePool>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Requeue {
    tracing::warn!(pool = %pool.name_any(), error = %chain(error), "pool reconcile failed");
    if error.is_permanent() {
        return Requeue::await_change();
    }
    Requeue::requeue(error.retry_delay(&ctx.backoff, &backoff_key(&pool), ctx.settings.converging))
}

async fn reconcile_inner(pool: &PuppetNodePool, ctx: &Context) -> Result<Requeue, ReconcileError> {
    // Deleting: the garbage collector deletes the nodes (each cleans up behind its own
    // finalizer); the pool makes no new ones.
    if pool.meta().deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    let ns = pool
        .namespace()
        .ok_or(ReconcileError::MissingMetadata("namespace"))?;
    let spec = &pool.spec;
    let hash = launch_hash(&spec.template.spec);
    let now = chrono::Utc::now();
    let observed = observe(ctx, pool, &ns, &hash, now).await?;
    let (bounds, selector) = match checked(pool) {
        Ok(checked) => checked,
        Err(why) => return refuse(ctx, pool, &ns, &hash, &observed, &why, now).await,
    };
    let paused = paused_by(ctx, pool, &ns).await?;
    let failure = match &paused {
        Some(_) => None,
        None => {
            let plan = plan_pool(
                spec.strategy.type_,
                bounds,
                spec.scale_down_order,
                &observed.members,
            );
            act(ctx, pool, &ns, &hash, &observed, &plan).await.err()
        }
    };
    let failure_text = failure.as_ref().map(|e| chain(e));
    let view = PoolView {
        generation: pool.meta().generation,
        hash: &hash,
        selector: &selector,
        paused: paused.as_deref(),
        failure: failure_text.as_deref(),
        invalid: None,
        bounds,
    };
    write_status(ctx, pool, &ns, &observed.members, &view, now).await?;
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(Requeue::requeue(next_look(pool, &observed, ctx)))
}

/// The pool's bounds and printed selector, or what the schema could not refuse (an older
/// CRD may have let it in): a bound that is no count or percentage, a selector that its
/// template's labels do not match.
fn checked(pool: &PuppetNodePool) -> Result<(Bounds, String), String> {
    let spec = &pool.spec;
    let bounds = bounds(spec).map_err(|e| e.to_string())?;
    if !matches(&spec.selector, Some(&spec.template.metadata.labels)) {
        return Err(crate::pool::PoolError::TemplateOutsideSelector.to_string());
    }
    let selector = selector_string(&spec.selector);
    Ok((bounds, selector))
}

/// A spec the pool cannot act on: said in its status (`Progressing=False`, reason
/// `InvalidSpec`) and in a Warning event, and nothing is created or deleted until it
/// changes.
async fn refuse(
    ctx: &Context,
    pool: &PuppetNodePool,
    ns: &str,
    hash: &str,
    observed: &Observed,
    why: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Requeue, ReconcileError> {
    let conditions = pool.status.as_ref().map(|s| s.conditions.as_slice());
    // Once per spec: its nodes' changes wake the pool too.
    let said = reason_of(conditions.unwrap_or_default(), PROGRESSING) == Some("InvalidSpec")
        && pool.status.as_ref().and_then(|s| s.observed_generation) == pool.meta().generation;
    if !said {
        ctx.events
            .publish(
                &pool.object_ref(&()),
                true,
                "InvalidSpec",
                "Validate",
                format!("the pool cannot act on its spec: {why}"),
            )
            .await;
    }
    let view = PoolView {
        generation: pool.meta().generation,
        hash,
        selector: "",
        paused: None,
        failure: None,
        invalid: Some(why),
        bounds: Bounds {
            replicas: usize::try_from(pool.spec.replicas).unwrap_or(0),
            max_surge: 0,
            max_unavailable: 0,
        },
    };
    write_status(ctx, pool, ns, &observed.members, &view, now).await?;
    Err(ReconcileError::InvalidSpec(why.to_string()))
}

/// Why the pool is paused: its own annotation, or its template's master's.
async fn paused_by(
    ctx: &Context,
    pool: &PuppetNodePool,
    ns: &str,
) -> Result<Option<String>, ReconcileError> {
    // The nodes' and masters' own reading of the annotation.
    let set = |annotations: &std::collections::BTreeMap<String, String>| {
        crate::pause::paused(Some(annotations))
    };
    if set(pool.annotations()) {
        return Ok(Some(format!(
            "the pool carries {PAUSED_ANNOTATION}=\"true\""
        )));
    }
    let master_name = &pool.spec.template.spec.master_ref.name;
    let master = ctx.master_cache.get(&ctx.client, ns, master_name).await?;
    Ok(master
        .filter(|m| set(m.annotations()))
        .map(|_| format!("PuppetMaster {master_name} carries {PAUSED_ANNOTATION}=\"true\"")))
}

/// When to look again without a change: when the first Ready node that is not yet
/// available becomes so (`minReadySeconds`), else at the resync.
fn next_look(pool: &PuppetNodePool, observed: &Observed, ctx: &Context) -> Duration {
    let min_ready = i64::from(pool.spec.min_ready_seconds);
    let now = chrono::Utc::now().timestamp();
    observed
        .members
        .iter()
        .filter(|m| !m.deleting)
        .filter_map(|m| m.ready_since)
        .map(|since| since + min_ready - now)
        .filter(|left| *left > 0)
        .min()
        .map_or(ctx.settings.resync, |left| {
            Duration::from_secs(u64::try_from(left).unwrap_or(1))
        })
}

#[cfg(test)]
mod tests;
