//! Which incarnation a node is at: the highest one its instance tags, status and record
//! carry.

use super::Observed;
use crate::instance::{tags, Instance};

/// Incarnation from an instance's tags (instances without a valid tag count as 0).
pub fn instance_incarnation(instance: &Instance) -> i64 {
    instance
        .tags
        .get(tags::INCARNATION)
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(0)
}

/// The newest incarnation any evidence carries (instance tags, status, record), at least 1.
pub(super) fn known_incarnation(observed: &Observed) -> i64 {
    let tagged_max = observed
        .instances
        .iter()
        .map(instance_incarnation)
        .max()
        .unwrap_or(0);
    tagged_max
        .max(observed.status_incarnation.unwrap_or(0))
        .max(observed.record_incarnation.unwrap_or(0))
        .max(1)
}
