//! A pool's status (server-side apply, only when it changed) and its condition flips.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::pool::PuppetNodePool;
use crate::controller::error::ReconcileError;
use crate::controller::{Context, FIELD_MANAGER};
use crate::pool::{pool_status, Member, PoolView};
use crate::status::master::flipped;

/// Writes the status `members` and `view` give, unless the pool already has it.
pub(super) async fn write_status(
    ctx: &Context,
    pool: &PuppetNodePool,
    ns: &str,
    members: &[Member],
    view: &PoolView<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ReconcileError> {
    let before = pool.status.as_ref();
    let status = pool_status(before, members, view, now);
    if before == Some(&status) {
        return Ok(());
    }
    let old_conditions = before.map(|s| s.conditions.as_slice()).unwrap_or_default();
    for c in flipped(old_conditions, &status.conditions) {
        // Available going False, a failure, a pause: worth a Warning. A first status
        // says only a failure or a pause (a new pool is not yet available by nature).
        let warning = matches!(
            (c.type_.as_str(), c.status.as_str()),
            ("Available", "False") | ("ReplicaFailure", "True") | ("Paused", "True")
        );
        let first = !old_conditions.iter().any(|o| o.type_ == c.type_);
        if first && !(warning && c.type_ != "Available") {
            continue;
        }
        ctx.events
            .publish(
                &pool.object_ref(&()),
                warning,
                &format!("{}{}", c.type_, c.status),
                "Status",
                format!("{} is {}: {}", c.type_, c.status, c.message),
            )
            .await;
    }
    let api: Api<PuppetNodePool> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({
        "apiVersion": "puppet-conductor.dev/v1alpha1",
        "kind": "PuppetNodePool",
        // Only for this pool, not a namesake made since.
        "metadata": {"uid": pool.meta().uid},
        "status": status,
    });
    api.patch_status(
        &pool.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(ReconcileError::Kube)?;
    Ok(())
}
