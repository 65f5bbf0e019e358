//! Planning for a node being deleted: records marked, instances terminated, then the
//! certificates revoked and the record deleted before the finalizer is released.

use super::incarnation::known_incarnation;
use super::instances::{is_live, oldest_first};
use super::{reasons, Action, Observed, Plan, TerminateReason};
use crate::instance::Instance;
use crate::record::RecordState;
use puppet_conductor_api::node::{DeletionPolicy, Phase};

/// The plan of a node being deleted.
pub(super) fn plan_deletion(observed: &Observed) -> Plan {
    let incarnation = known_incarnation(observed);
    let deleting = (
        false,
        reasons::DELETING,
        "the node is being deleted".to_string(),
    );
    if observed.deletion_policy == DeletionPolicy::Orphan {
        return Plan {
            incarnation,
            instance_id: None,
            actions: Vec::new(),
            phase: Phase::Terminating,
            instance_running: deleting,
            release: true,
        };
    }

    let mut live: Vec<&Instance> = observed
        .instances
        .iter()
        .filter(|i| is_live(i.state))
        .collect();
    live.sort_by(oldest_first);
    // The records say "deleting" before anything is terminated or revoked, so `autosign`
    // and `enc` refuse the node from the first step of its deletion.
    let mark = Action::MarkRecords {
        incarnations: (1..=incarnation).collect(),
        state: RecordState::Deleting,
    };
    if !live.is_empty() {
        // Revoke and delete only once every instance is shutting down: a running agent must
        // not outlive its certificate's owner object with a valid certificate.
        return Plan {
            incarnation,
            instance_id: None,
            actions: vec![
                mark,
                Action::Terminate {
                    instance_ids: live.iter().map(|i| i.id.clone()).collect(),
                    reason: TerminateReason::Deletion,
                },
            ],
            phase: Phase::Terminating,
            instance_running: deleting,
            release: false,
        };
    }

    if observed.launch_unsettled {
        return Plan {
            incarnation,
            instance_id: None,
            actions: vec![mark],
            phase: Phase::Terminating,
            instance_running: (
                false,
                reasons::DELETING,
                "waiting to learn whether the last, failed launch started an instance".to_string(),
            ),
            release: false,
        };
    }
    let mut incarnations = vec![incarnation];
    if !observed.fixed_certname {
        match &observed.ca_present_incarnations {
            Some(present) => incarnations.extend(present.iter().copied()),
            // The CA listing failed: an older incarnation's CSR or certificate may be
            // there, so each is read on its own (unknown is never read as empty).
            None => incarnations.extend(1..incarnation),
        }
        // An older incarnation whose record is still there may have been signed since the
        // listing was taken (autosign signs outside this process): read it on its own.
        incarnations.extend(observed.older_record_incarnations.iter().copied());
    }
    incarnations.sort_unstable();
    incarnations.dedup();
    Plan {
        incarnation,
        instance_id: None,
        actions: vec![mark, Action::Revoke { incarnations }, Action::DeleteRecord],
        phase: Phase::Terminating,
        instance_running: deleting,
        release: true,
    }
}
