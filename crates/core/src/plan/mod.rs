//! The PuppetNode planner: from what was observed to what should be done next.
//!
//! Pure: no client, no clock, no randomness. The reconciler observes (one shared
//! describe/listing per master), calls [`plan`], performs the actions in order and
//! writes the status the plan computed. Every action is idempotent, so a plan that is
//! interrupted half way is simply planned again from the new observation.

mod current;
mod deletion;
mod fencing;
mod incarnation;
mod instances;
mod observed;
mod outcome;
mod running;

pub use incarnation::instance_incarnation;
pub use observed::Observed;
pub use outcome::{reasons, Action, Plan, TerminateReason};

use deletion::plan_deletion;
use instances::dedupe_instances;
use running::plan_running;

/// Decide the next steps for one node.
pub fn plan(observed: &Observed) -> Plan {
    // An instance known by id is one instance, however many answers mentioned it.
    let unique = dedupe_instances(observed);
    let observed = unique.as_ref().unwrap_or(observed);
    if observed.deleting {
        return plan_deletion(observed);
    }
    plan_running(observed)
}

#[cfg(test)]
mod tests;
