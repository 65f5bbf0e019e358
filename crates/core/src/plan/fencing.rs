//! Fencing: records marked first, then the instances to fence and the superseded ones
//! terminated; once none is left, older incarnations revoked and their records retired.

use super::current::ToFence;
use super::incarnation::instance_incarnation;
use super::{Action, Observed, TerminateReason};
use crate::instance::Instance;
use crate::record::RecordState;

/// Appends the fencing steps to `actions` (`incarnation` is the node's after the
/// decision about its current instance; `superseded_instances` are the live instances
/// of older ones). Returns whether fencing is pending: instances are being terminated,
/// so nothing is revoked, written or launched yet.
pub(super) fn plan_fencing(
    observed: &Observed,
    incarnation: i64,
    superseded_instances: &[&Instance],
    to_fence: ToFence,
    actions: &mut Vec<Action>,
) -> bool {
    let ToFence {
        instance_ids: fence_ids,
        mut revoke,
        mut retire,
    } = to_fence;
    let superseded: Vec<String> = superseded_instances.iter().map(|i| i.id.clone()).collect();

    let mut fence_and_superseded = fence_ids.clone();
    fence_and_superseded.extend(superseded.iter().cloned());
    // The records say "fencing" before anything is terminated or revoked.
    let mut marks: Vec<i64> = superseded_instances
        .iter()
        .map(|i| instance_incarnation(i))
        .collect();
    if !fence_ids.is_empty() {
        marks.push(incarnation);
    }
    if !fence_and_superseded.is_empty() {
        marks.sort_unstable();
        marks.dedup();
        actions.push(Action::MarkRecords {
            incarnations: marks,
            state: RecordState::Fencing,
        });
    }
    if !fence_ids.is_empty() {
        actions.push(Action::Terminate {
            instance_ids: fence_ids,
            reason: TerminateReason::Fencing,
        });
    }
    if !superseded.is_empty() {
        actions.push(Action::Terminate {
            instance_ids: superseded,
            reason: TerminateReason::Superseded,
        });
    }

    // A stopped instance that is being fenced: revoke only once it is really shutting down,
    // so the successor never launches next to a still-running predecessor.
    let fencing_pending = !fence_and_superseded.is_empty();
    if !fencing_pending {
        if !observed.fixed_certname {
            if let Some(present) = &observed.ca_present_incarnations {
                revoke.extend(present.iter().copied().filter(|inc| *inc < incarnation));
            }
            retire.extend(
                observed
                    .older_record_incarnations
                    .iter()
                    .copied()
                    .filter(|inc| *inc < incarnation),
            );
            // A record is retired only after its certname was asked at the CA on its own:
            // the listing may be unknown, or older than a signature `autosign` made
            // (simulation seed 801588 deleted a signed incarnation's record unrevoked).
            revoke.extend(retire.iter().copied());
        }
        revoke.sort_unstable();
        revoke.dedup();
        retire.sort_unstable();
        retire.dedup();
        let mut marks: Vec<i64> = revoke.iter().chain(&retire).copied().collect();
        marks.sort_unstable();
        marks.dedup();
        if !marks.is_empty() {
            actions.push(Action::MarkRecords {
                incarnations: marks,
                state: RecordState::Fencing,
            });
        }
        if !revoke.is_empty() {
            actions.push(Action::Revoke {
                incarnations: revoke,
            });
        }
        if !retire.is_empty() {
            actions.push(Action::DeleteRecords {
                incarnations: retire,
            });
        }
    }

    fencing_pending
}
