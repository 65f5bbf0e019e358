//! The current incarnation's instance: keep it, wait for it to become visible, fence it
//! or replace it with the next incarnation (duplicates of it are terminated).

use std::ops::ControlFlow;

use super::incarnation::instance_incarnation;
use super::instances::{is_gone, is_live, oldest_first};
use super::{reasons, Action, Observed, Plan, TerminateReason};
use crate::instance::{Instance, InstanceState};
use puppet_conductor_api::node::{Phase, ReplacePolicy};

/// What was decided about the current incarnation's instance, before the fencing of
/// older incarnations and the launch.
pub(super) struct Current {
    /// Incarnation the node is at (one more than observed when a dead instance is
    /// replaced).
    pub(super) incarnation: i64,
    /// The kept instance of that incarnation, when one stays.
    pub(super) instance_id: Option<String>,
    /// Actions so far (the termination of duplicates of the kept instance).
    pub(super) actions: Vec<Action>,
    /// Phase to report.
    pub(super) phase: Phase,
    /// Whether the current instance is running, with a reason and message.
    pub(super) running: (bool, &'static str, String),
    /// What is left to fence and revoke.
    pub(super) to_fence: ToFence,
}

/// What the decision about the current instance leaves to fence, revoke and retire.
pub(super) struct ToFence {
    /// Instances of the current incarnation to fence before a successor launches.
    pub(super) instance_ids: Vec<String>,
    /// Incarnations whose certificates are revoked.
    pub(super) revoke: Vec<i64>,
    /// Older incarnations whose records go once their fencing is complete.
    pub(super) retire: Vec<i64>,
}

/// Decides about the instance of `incarnation` (the newest known); breaks with the whole
/// plan when an instance that was launched is not visible yet and nothing may be done.
pub(super) fn decide_current(
    observed: &Observed,
    mut incarnation: i64,
) -> ControlFlow<Plan, Current> {
    let mut actions = Vec::new();
    let mut fence_ids: Vec<String> = Vec::new();
    let mut revoke: Vec<i64> = Vec::new();
    // Older incarnations whose records go once their fencing is complete.
    let mut retire: Vec<i64> = Vec::new();

    let mut current: Vec<&Instance> = observed
        .instances
        .iter()
        .filter(|i| instance_incarnation(i) == incarnation)
        .collect();
    current.sort_by(oldest_first);
    let live: Vec<&Instance> = current
        .iter()
        .copied()
        .filter(|i| is_live(i.state))
        .collect();

    // The record names an instance for this incarnation that no describe shows any more:
    // it is gone for good (terminated instances vanish from EC2 after about an hour).
    let launched_by_record =
        observed.record_incarnation == Some(incarnation) && observed.record_instance_id.is_some();
    let launched_by_status =
        observed.status_incarnation == Some(incarnation) && observed.status_instance_id.is_some();
    let missing =
        live.is_empty() && current.is_empty() && (launched_by_record || launched_by_status);
    let vanished = missing && observed.vanish_confirmed;
    if missing && !vanished {
        // Not visible yet (or gone): neither relaunch nor replace until that is known; a
        // relaunch could start a second instance once the client token is forgotten.
        let id = observed
            .record_instance_id
            .clone()
            .or_else(|| observed.status_instance_id.clone())
            .unwrap_or_default();
        return ControlFlow::Break(Plan {
            incarnation,
            // Kept in status: it is the evidence that this incarnation was launched.
            instance_id: Some(id.clone()),
            actions: Vec::new(),
            phase: Phase::Launching,
            instance_running: (
                false,
                reasons::LAUNCHING,
                format!("instance {id} is not visible in EC2 yet"),
            ),
            release: false,
        });
    }

    let mut instance_id = None;
    let (phase, running);
    match live.first() {
        Some(keep) => {
            let duplicates: Vec<String> = live.iter().skip(1).map(|i| i.id.clone()).collect();
            if !duplicates.is_empty() {
                actions.push(Action::Terminate {
                    instance_ids: duplicates,
                    reason: TerminateReason::Duplicate,
                });
            }
            match keep.state {
                InstanceState::Running | InstanceState::Pending | InstanceState::Unknown
                    if observed.fence_current
                        && observed.replace_policy == ReplacePolicy::Replace =>
                {
                    fence_ids.push(keep.id.clone());
                    phase = Phase::Replacing;
                    running = (
                        false,
                        reasons::CERTIFICATE_LOST,
                        format!(
                            "the certificate of instance {} vanished from the CA or was replaced; \
                             fencing and replacing it",
                            keep.id
                        ),
                    );
                }
                InstanceState::Running => {
                    instance_id = Some(keep.id.clone());
                    phase = Phase::AwaitingCsr;
                    running = (
                        true,
                        reasons::RUNNING,
                        format!("instance {} is running", keep.id),
                    );
                }
                InstanceState::Pending | InstanceState::Unknown => {
                    instance_id = Some(keep.id.clone());
                    phase = Phase::Launching;
                    running = (
                        false,
                        reasons::LAUNCHING,
                        format!("instance {} is starting", keep.id),
                    );
                }
                _ => {
                    // Stopping or stopped outside the operator.
                    if observed.replace_policy == ReplacePolicy::Replace {
                        fence_ids.push(keep.id.clone());
                        phase = Phase::Replacing;
                        running = (
                            false,
                            reasons::REPLACING,
                            format!(
                                "instance {} was stopped outside the operator; replacing it",
                                keep.id
                            ),
                        );
                    } else {
                        instance_id = Some(keep.id.clone());
                        phase = Phase::Failed;
                        running = (
                            false,
                            reasons::STOPPED,
                            format!("instance {} is stopped and replacePolicy is Never", keep.id),
                        );
                    }
                }
            }
        }
        None if current.iter().any(|i| is_gone(i.state)) || vanished => {
            let id = current
                .first()
                .map(|i| i.id.clone())
                .or_else(|| observed.record_instance_id.clone())
                .or_else(|| observed.status_instance_id.clone());
            let id = id.unwrap_or_default();
            if observed.replace_policy == ReplacePolicy::Replace {
                // Fence (revoke) the dead incarnation, then launch the next one.
                revoke.push(incarnation);
                if !observed.fixed_certname {
                    retire.push(incarnation);
                }
                incarnation += 1;
                phase = Phase::Replacing;
                running = (
                    false,
                    reasons::REPLACING,
                    format!("instance {id} was terminated outside the operator; replacing it"),
                );
            } else {
                phase = Phase::Failed;
                running = (
                    false,
                    reasons::STOPPED,
                    format!("instance {id} is terminated and replacePolicy is Never"),
                );
            }
        }
        None => {
            phase = Phase::Launching;
            running = (
                false,
                reasons::LAUNCHING,
                "no instance launched yet".to_string(),
            );
        }
    }

    ControlFlow::Continue(Current {
        incarnation,
        instance_id,
        actions,
        phase,
        running,
        to_fence: ToFence {
            instance_ids: fence_ids,
            revoke,
            retire,
        },
    })
}
