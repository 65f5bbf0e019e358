//! The orphan sweep of one master: observe waiting CSRs, find what no live node owns,
//! report or clean it up, and publish the ages and counts.

use chrono::Utc;

use kube::ResourceExt;

use super::sweep::sweep;
use super::{live_nodes, LiveNodes, NodeView};
use crate::api::master::{OrphanAction, PuppetMaster};
use crate::controller::error::{chain, ReconcileError};
use crate::controller::services::MasterServices;
use crate::controller::Context;
use crate::orphans::{find_orphans, Owners};

/// Reports or cleans up what no live node owns (after `orphans.minAge`), and publishes
/// pending-CSR ages. Uses the same shared snapshot as the node reconciles. `paused`: the
/// ages are still observed, but nothing is reported or removed.
pub(super) async fn sweep_orphans(
    master: &PuppetMaster,
    ctx: &Context,
    key: &str,
    services: &MasterServices,
    live: &LiveNodes,
    paused: bool,
) -> Result<(), ReconcileError> {
    let snapshot = ctx
        .snapshots
        .get(
            key,
            services,
            ctx.settings.snapshot_max_age,
            ctx.settings.snapshot_max_age,
        )
        .await?;
    let now = Utc::now();
    let first_seen = ctx.orphans.observe_csrs(key, &snapshot, now);
    let ages: Vec<f64> = first_seen
        .values()
        .map(|t| (now - *t).num_milliseconds().max(0) as f64 / 1000.0)
        .collect();
    for age in &ages {
        ctx.metrics.observe_pending_csr_age(*age);
    }
    ctx.metrics
        .set_oldest_pending_csr_age(key, ages.iter().copied().fold(0.0, f64::max));
    if paused {
        // Removals wait for the unpause; the orphans found meanwhile are found again then.
        return Ok(());
    }

    let min_age = master.spec.orphans.min_age.into();
    let owners = |live: &LiveNodes| Owners {
        node_uids: live.uids.clone(),
        certnames: live.certnames.clone(),
    };
    let mut scan = find_orphans(&snapshot, &owners(live), &first_seen, now, min_age);
    if !scan.due.is_empty() && master.spec.orphans.action == OrphanAction::Cleanup {
        // `live` was read before the snapshot: a node created since may own an instance in
        // it. Read them again after it, before removing anything, so every instance, record
        // and certificate the snapshot shows has its owner in the view (minAge then guards
        // only what the design says it does, not this pass's own order).
        let fresh = live_nodes(
            ctx,
            master.namespace().as_deref().unwrap_or_default(),
            &master.name_any(),
            NodeView::Watched,
        )
        .await?;
        scan = find_orphans(&snapshot, &owners(&fresh), &first_seen, now, min_age);
    }
    let result = sweep(
        master,
        key,
        &ctx.settings.operator_id,
        services,
        &scan,
        &ctx.orphans,
        ctx.events.as_ref(),
    )
    .await;
    if let Ok(report) = &result {
        for orphan in &report.cleaned {
            ctx.metrics
                .count_orphans(key, orphan.kind.as_str(), "cleaned");
        }
        ctx.metrics.set_orphans_left(key, &report.left_by_kind());
        if !report.cleaned.is_empty() {
            ctx.snapshots.invalidate(key).await;
        }
    }
    result.map(|_| ()).inspect_err(|error| {
        tracing::warn!(master = key, error = %chain(error), "orphan sweep incomplete");
    })
}
