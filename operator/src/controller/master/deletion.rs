//! Deleting a PuppetMaster: its finalizer holds it until no PuppetNode names it, because
//! each node's cleanup (terminate, revoke, delete the record) goes through the master's
//! CA, cloud and records. `kubectl delete -k` or a GitOps prune that removes a master
//! and its nodes together then still cleans every node up. The Secrets it references stay
//! held (secret_hold.rs) as long as it does, and are released just before it.

use std::time::Duration;

use chrono::Utc;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};

use super::status::{publish_flips, write_status};
use super::{live_nodes, NodeView};
use crate::api::conditions as cond;
use crate::api::master::{PuppetMaster, PuppetMasterStatus};
use crate::controller::error::ReconcileError;
use crate::controller::finalizers::{has_finalizer, remove_finalizer};
use crate::controller::secret_hold::{hold, release_for};
use crate::controller::{Context, MASTER_FINALIZER};
use crate::status::conditions::set_condition_status;

/// Reason of `Ready=False` while the master waits for its nodes to go.
pub const DELETING: &str = "Deleting";

/// How often a master being deleted looks again for its nodes (nothing watches them for it).
const RECHECK: Duration = Duration::from_secs(5);

/// How many nodes still name the master, from its phase counts.
pub fn referencing_nodes(phases: &std::collections::BTreeMap<String, i32>) -> i32 {
    phases.values().sum()
}

/// One pass over a master with a deletion timestamp: release it when no PuppetNode names
/// it any more, otherwise say what it waits for and look again shortly.
pub async fn finish_deletion(
    master: &PuppetMaster,
    ctx: &Context,
    namespace: &str,
) -> Result<Requeue, ReconcileError> {
    let masters: Api<PuppetMaster> = Api::namespaced(ctx.client.clone(), namespace);
    if !has_finalizer(master, MASTER_FINALIZER) {
        // Released already (or its finalizer was removed by hand): it holds nothing.
        release_for(ctx, namespace, master).await?;
        ctx.forget_master(&format!("{namespace}/{}", master.name_any()))
            .await;
        return Ok(Requeue::await_change());
    }
    let live = live_nodes(ctx, namespace, &master.name_any(), NodeView::Listed).await?;
    let waiting = referencing_nodes(&live.phases);
    if waiting == 0 {
        // The Secrets first: a crash before the master's own release leaves it here to
        // retry, while the reverse order could leave a Secret held by no one.
        release_for(ctx, namespace, master).await?;
        remove_finalizer(&masters, master, MASTER_FINALIZER).await?;
        ctx.forget_master(&format!("{namespace}/{}", master.name_any()))
            .await;
        ctx.events
            .publish(
                &master.object_ref(&()),
                false,
                "Released",
                "Delete",
                "no PuppetNode names this master any more; released".to_string(),
            )
            .await;
        return Ok(Requeue::await_change());
    }

    let old = master.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone();
    set_condition_status(
        &mut conditions,
        cond::READY,
        "False",
        DELETING,
        format!(
            "being deleted: waiting for {waiting} PuppetNode(s) naming this master to finish their cleanup"
        ),
        master.meta().generation,
        Utc::now(),
    );
    let status = PuppetMasterStatus {
        conditions,
        nodes: live.phases,
        ..old.clone()
    };
    publish_flips(master, ctx, &old, &status).await;
    let newly_waiting = old
        .conditions
        .iter()
        .find(|c| c.type_ == cond::READY)
        .is_none_or(|c| c.reason != DELETING);
    if newly_waiting {
        ctx.events
            .publish(
                &master.object_ref(&()),
                false,
                "WaitingForNodes",
                "Delete",
                format!("deletion waits for {waiting} PuppetNode(s) naming this master"),
            )
            .await;
    }
    // Still needed by the nodes' cleanup: a Secret not held yet (say, the operator was
    // upgraded during the deletion) is held now, unless it is already being deleted.
    let held = hold(ctx, namespace, master).await;
    write_status(ctx, master, namespace, &status).await?;
    held?;
    Ok(Requeue::requeue(RECHECK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_counts_as_a_referencing_node() {
        let phases = [("Ready", 2), ("Terminating", 1), ("Pending", 0)]
            .into_iter()
            .map(|(p, n)| (p.to_string(), n))
            .collect();
        assert_eq!(referencing_nodes(&phases), 3);
        assert_eq!(referencing_nodes(&Default::default()), 0);
    }
}
