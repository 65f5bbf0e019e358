//! A pool's status, derived from its members as a Deployment's is from its Pods.

use chrono::{DateTime, Utc};
use puppet_conductor_api::pool::PuppetNodePoolStatus;

use super::{Bounds, Member};
use crate::status::conditions::set_condition;

/// Condition: at least `replicas - maxUnavailable` nodes are available.
pub const AVAILABLE: &str = "Available";
/// Condition: the pool is moving towards its template and count (True), or done.
pub const PROGRESSING: &str = "Progressing";
/// Condition: the pool is paused (its annotation or its master's).
pub const PAUSED: &str = "Paused";
/// Condition: the last create or delete of a node failed.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// A pool's node counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Nodes not being deleted.
    pub replicas: usize,
    /// Of those, Ready.
    pub ready: usize,
    /// Of those, made from the current template.
    pub updated: usize,
    /// Of those, Ready for `minReadySeconds`.
    pub available: usize,
}

impl PoolCounts {
    /// The counts of `members`.
    pub fn of(members: &[Member]) -> PoolCounts {
        let live = || members.iter().filter(|m| !m.deleting);
        PoolCounts {
            replicas: live().count(),
            ready: live().filter(|m| m.ready).count(),
            updated: live().filter(|m| m.updated).count(),
            available: live().filter(|m| m.available).count(),
        }
    }
}

/// What a pool's status says besides its members.
#[derive(Clone, Debug)]
pub struct PoolView<'a> {
    /// The spec's generation this pass acted on.
    pub generation: Option<i64>,
    /// The template's launch hash.
    pub hash: &'a str,
    /// The selector as `/scale` reports it.
    pub selector: &'a str,
    /// Why the pool is paused, if it is.
    pub paused: Option<&'a str>,
    /// The last failure creating or deleting nodes, if this pass had one.
    pub failure: Option<&'a str>,
    /// What is wrong with the spec, when the pool cannot act on it.
    pub invalid: Option<&'a str>,
    /// The pass's bounds.
    pub bounds: Bounds,
}

/// The status of a pool with these members, keeping the transition times of `before`.
pub fn pool_status(
    before: Option<&PuppetNodePoolStatus>,
    members: &[Member],
    view: &PoolView<'_>,
    now: DateTime<Utc>,
) -> PuppetNodePoolStatus {
    let counts = PoolCounts::of(members);
    let to_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let replicas = view.bounds.replicas;
    let mut conditions = before.map(|s| s.conditions.clone()).unwrap_or_default();
    let generation = view.generation;
    let min_available = replicas.saturating_sub(view.bounds.max_unavailable);
    set_condition(
        &mut conditions,
        AVAILABLE,
        counts.available >= min_available,
        if counts.available >= min_available {
            "MinimumNodesAvailable"
        } else {
            "MinimumNodesUnavailable"
        },
        format!(
            "{} of {replicas} nodes available (at least {min_available} wanted)",
            counts.available
        ),
        generation,
        now,
    );
    let done = counts.updated == replicas
        && counts.available == replicas
        && counts.replicas == replicas
        && members.iter().all(|m| !m.deleting);
    let (progressing, reason, message) = match (view.invalid, view.paused, done) {
        (Some(why), _, _) => (false, "InvalidSpec", format!("invalid spec: {why}")),
        (None, Some(why), _) => (false, "Paused", format!("paused: {why}")),
        (None, None, true) => (
            true,
            "NewNodesAvailable",
            format!("{replicas} nodes of the current template are available"),
        ),
        (None, None, false) => (
            true,
            "NodesUpdating",
            format!(
                "{} of {replicas} nodes updated, {} available, {} being deleted",
                counts.updated,
                counts.available,
                members.iter().filter(|m| m.deleting).count()
            ),
        ),
    };
    set_condition(
        &mut conditions,
        PROGRESSING,
        progressing,
        reason,
        message,
        generation,
        now,
    );
    set_condition(
        &mut conditions,
        PAUSED,
        view.paused.is_some(),
        if view.paused.is_some() {
            "Paused"
        } else {
            "NotPaused"
        },
        view.paused.unwrap_or("the pool acts on its nodes"),
        generation,
        now,
    );
    set_condition(
        &mut conditions,
        REPLICA_FAILURE,
        view.failure.is_some(),
        if view.failure.is_some() {
            "NodeWriteFailed"
        } else {
            "NoFailure"
        },
        view.failure
            .unwrap_or("no failure creating or deleting nodes"),
        generation,
        now,
    );
    PuppetNodePoolStatus {
        replicas: to_i32(counts.replicas),
        ready_replicas: to_i32(counts.ready),
        updated_replicas: to_i32(counts.updated),
        available_replicas: to_i32(counts.available),
        unavailable_replicas: to_i32(replicas.saturating_sub(counts.available)),
        observed_generation: generation,
        template_hash: Some(view.hash.to_string()),
        selector: Some(view.selector.to_string()),
        conditions,
    }
}
