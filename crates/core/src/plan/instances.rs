//! Reading the observed instances: which states are live or gone, one entry per
//! instance id, and the oldest first.

use std::collections::BTreeSet;

use super::Observed;
use crate::instance::{Instance, InstanceState};

pub(super) fn is_live(state: InstanceState) -> bool {
    matches!(
        state,
        InstanceState::Pending
            | InstanceState::Running
            | InstanceState::Stopping
            | InstanceState::Stopped
            | InstanceState::Unknown
    )
}

pub(super) fn is_gone(state: InstanceState) -> bool {
    matches!(
        state,
        InstanceState::ShuttingDown | InstanceState::Terminated
    )
}

/// `observed` with each instance id once (the first sighting kept), or `None` when the
/// ids already are unique.
pub(super) fn dedupe_instances(observed: &Observed) -> Option<Observed> {
    let mut seen = BTreeSet::new();
    if observed
        .instances
        .iter()
        .all(|i| seen.insert(i.id.as_str()))
    {
        return None;
    }
    let mut seen = BTreeSet::new();
    let mut unique = observed.clone();
    unique.instances.retain(|i| seen.insert(i.id.clone()));
    Some(unique)
}

/// The oldest instance first (launch time, then id), so "keep the oldest" is stable.
pub(super) fn oldest_first(a: &&Instance, b: &&Instance) -> std::cmp::Ordering {
    a.launch_time
        .cmp(&b.launch_time)
        .then_with(|| a.id.cmp(&b.id))
}
