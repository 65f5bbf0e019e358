//! Planning for a node that is not being deleted: one instance of the newest
//! incarnation, its record written and, when none is kept, the launch.

use std::ops::ControlFlow;

use super::current::{decide_current, Current};
use super::fencing::plan_fencing;
use super::incarnation::{instance_incarnation, known_incarnation};
use super::instances::is_live;
use super::{reasons, Action, Observed, Plan};
use crate::instance::Instance;
use puppet_conductor_api::node::Phase;

/// The plan of a node that is not being deleted.
pub(super) fn plan_running(observed: &Observed) -> Plan {
    // The incarnation survives status loss: instance tags, status and record all carry it.
    let incarnation = known_incarnation(observed);

    // Live instances of older incarnations were superseded: fence them.
    let superseded_instances: Vec<&Instance> = observed
        .instances
        .iter()
        .filter(|i| instance_incarnation(i) < incarnation && is_live(i.state))
        .collect();

    let Current {
        incarnation,
        instance_id,
        mut actions,
        phase,
        running,
        to_fence,
    } = match decide_current(observed, incarnation) {
        ControlFlow::Continue(current) => current,
        ControlFlow::Break(wait) => return wait,
    };
    let fencing_pending = plan_fencing(
        observed,
        incarnation,
        &superseded_instances,
        to_fence,
        &mut actions,
    );

    let mut phase = phase;
    let mut running = running;
    if observed.certname_conflict && instance_id.is_none() && phase != Phase::Failed {
        // Nothing of ours exists yet under the certname: claim nothing until it is free.
        phase = Phase::Pending;
        running = (
            false,
            reasons::CERTNAME_CONFLICT,
            "another node claims the certname; nothing is launched".to_string(),
        );
    }
    if observed.master_deleting && instance_id.is_none() && phase != Phase::Failed {
        phase = Phase::Pending;
        running = (
            false,
            reasons::MASTER_DELETING,
            "the PuppetMaster is being deleted; nothing is launched".to_string(),
        );
    }
    let launch_needed = instance_id.is_none()
        && phase != Phase::Failed
        && !fencing_pending
        && !observed.certname_conflict
        && !observed.master_deleting;
    if phase != Phase::Failed && !fencing_pending && !observed.certname_conflict {
        actions.push(Action::WriteRecord);
    }
    if launch_needed {
        actions.push(Action::Launch);
    }

    Plan {
        incarnation,
        instance_id,
        actions,
        phase,
        instance_running: running,
        release: false,
    }
}
