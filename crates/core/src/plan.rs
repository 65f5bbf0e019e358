//! The PuppetNode planner: from what was observed to what should be done next.
//!
//! Pure: no client, no clock, no randomness. The reconciler observes (one shared
//! describe/listing per master), calls [`plan`], performs the actions in order and
//! writes the status the plan computed. Every action is idempotent, so a plan that is
//! interrupted half way is simply planned again from the new observation.

use std::collections::BTreeSet;

use crate::instance::{tags, Instance, InstanceState};
use crate::record::RecordState;
use puppet_conductor_api::node::{DeletionPolicy, Phase, ReplacePolicy};

/// What the reconciler knows about one node when it plans.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The node is being deleted (deletionTimestamp set).
    pub deleting: bool,
    /// `spec.replacePolicy`.
    pub replace_policy: ReplacePolicy,
    /// `spec.deletionPolicy`.
    pub deletion_policy: DeletionPolicy,
    /// Incarnation remembered in status (lost status gives `None`).
    pub status_incarnation: Option<i64>,
    /// Incarnation written in the node's S3 record, if any.
    pub record_incarnation: Option<i64>,
    /// Instance id the record says was launched for `record_incarnation`.
    pub record_instance_id: Option<String>,
    /// Instance id status says was launched for `status_incarnation` (status, when it
    /// survives, is evidence too: EC2 and S3 state may both be lost).
    pub status_instance_id: Option<String>,
    /// Every instance tagged with this node's UID, any state, any incarnation.
    pub instances: Vec<Instance>,
    /// The spec fixes the certname, so every incarnation shares it: an older incarnation
    /// is revoked only while being replaced, never after its successor exists.
    pub fixed_certname: bool,
    /// Incarnations whose certname still has a CSR or certificate at the CA (from the
    /// master's CA listing); `None` when the CA was not observed this pass.
    pub ca_present_incarnations: Option<BTreeSet<i64>>,
    /// Older incarnations whose record is still in the records listing (generated
    /// certnames only: a fixed certname has one record, rewritten per incarnation).
    pub older_record_incarnations: BTreeSet<i64>,
    /// The current incarnation's certificate vanished from the CA or was replaced there,
    /// and a replacement slot of the master was granted: fence it (`replacePolicy: Replace`).
    pub fence_current: bool,
    /// Another node claims the certname: write no record and launch nothing.
    pub certname_conflict: bool,
    /// The node's master is being deleted: nothing new is launched for it (its cleanup
    /// would only have to terminate it again).
    pub master_deleting: bool,
    /// The instance status or the record names has been missing from every describe for
    /// the visibility grace: it is gone, not merely not visible yet.
    pub vanish_confirmed: bool,
    /// A launch of this node failed without saying whether an instance was started, within
    /// the visibility grace: deletion must not release yet.
    pub launch_unsettled: bool,
}

/// One step toward the declared state, in the order the reconciler performs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Mark these incarnations' records (fencing or deleting) before their instances are
    /// terminated or their certificates revoked, so `autosign` and `enc` refuse them.
    MarkRecords {
        incarnations: Vec<i64>,
        state: RecordState,
    },
    /// Terminate these instances (fencing, duplicate clean-up or deletion).
    Terminate {
        instance_ids: Vec<String>,
        reason: TerminateReason,
    },
    /// Revoke and clean the certificates (and drop waiting CSRs) of these incarnations.
    Revoke { incarnations: Vec<i64> },
    /// Write the record of the current incarnation (only if its content changed).
    WriteRecord,
    /// Launch the current incarnation's instance.
    Launch,
    /// Delete the records (check-ins and signature records) of these fenced, older
    /// incarnations: their fencing is complete.
    DeleteRecords { incarnations: Vec<i64> },
    /// Delete the node's record and check-in.
    DeleteRecord,
}

/// Why instances are terminated (for events and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminateReason {
    /// The node is being deleted.
    Deletion,
    /// A dead or stopped instance is fenced before its successor launches.
    Fencing,
    /// A second live instance of one incarnation (a launch raced); the oldest is kept.
    Duplicate,
    /// A live instance of an older incarnation.
    Superseded,
}

/// What the reconciler should do and report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Incarnation the node is at after this plan.
    pub incarnation: i64,
    /// The instance of that incarnation, when one is alive.
    pub instance_id: Option<String>,
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// Phase to report.
    pub phase: Phase,
    /// Whether the current instance is running, with a reason and message.
    pub instance_running: (bool, &'static str, String),
    /// Deletion: everything is cleaned up and the finalizer may be released.
    pub release: bool,
}

/// Reasons of the `InstanceRunning` condition.
pub mod reasons {
    /// The instance is running.
    pub const RUNNING: &str = "Running";
    /// The instance is being launched or boots.
    pub const LAUNCHING: &str = "Launching";
    /// The instance died or was stopped outside the operator and is being replaced.
    pub const REPLACING: &str = "Replacing";
    /// The instance died or was stopped and `replacePolicy: Never` keeps it so.
    pub const STOPPED: &str = "InstanceStopped";
    /// The node is being deleted.
    pub const DELETING: &str = "Deleting";
    /// The certificate of the running instance vanished from the CA or was replaced.
    pub const CERTIFICATE_LOST: &str = "CertificateLost";
    /// Another node claims the certname.
    pub const CERTNAME_CONFLICT: &str = "CertnameConflict";
    /// The master is being deleted: nothing is launched.
    pub const MASTER_DELETING: &str = "MasterDeleting";
}

fn is_live(state: InstanceState) -> bool {
    matches!(
        state,
        InstanceState::Pending
            | InstanceState::Running
            | InstanceState::Stopping
            | InstanceState::Stopped
            | InstanceState::Unknown
    )
}

fn is_gone(state: InstanceState) -> bool {
    matches!(
        state,
        InstanceState::ShuttingDown | InstanceState::Terminated
    )
}

/// `observed` with each instance id once (the first sighting kept), or `None` when the
/// ids already are unique.
fn dedupe_instances(observed: &Observed) -> Option<Observed> {
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

/// Incarnation from an instance's tags (instances without a valid tag count as 0).
pub fn instance_incarnation(instance: &Instance) -> i64 {
    instance
        .tags
        .get(tags::INCARNATION)
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(0)
}

/// The oldest instance first (launch time, then id), so "keep the oldest" is stable.
fn oldest_first(a: &&Instance, b: &&Instance) -> std::cmp::Ordering {
    a.launch_time
        .cmp(&b.launch_time)
        .then_with(|| a.id.cmp(&b.id))
}

/// Decide the next steps for one node.
pub fn plan(observed: &Observed) -> Plan {
    // An instance known by id is one instance, however many answers mentioned it.
    let unique = dedupe_instances(observed);
    let observed = unique.as_ref().unwrap_or(observed);
    if observed.deleting {
        return plan_deletion(observed);
    }

    // The incarnation survives status loss: instance tags, status and record all carry it.
    let tagged_max = observed
        .instances
        .iter()
        .map(instance_incarnation)
        .max()
        .unwrap_or(0);
    let mut incarnation = tagged_max
        .max(observed.status_incarnation.unwrap_or(0))
        .max(observed.record_incarnation.unwrap_or(0))
        .max(1);

    let mut actions = Vec::new();
    let mut fence_ids: Vec<String> = Vec::new();
    let mut revoke: Vec<i64> = Vec::new();
    // Older incarnations whose records go once their fencing is complete.
    let mut retire: Vec<i64> = Vec::new();

    // Live instances of older incarnations were superseded: fence them.
    let superseded_instances: Vec<&Instance> = observed
        .instances
        .iter()
        .filter(|i| instance_incarnation(i) < incarnation && is_live(i.state))
        .collect();
    let superseded: Vec<String> = superseded_instances.iter().map(|i| i.id.clone()).collect();

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
        return Plan {
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
        };
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

fn plan_deletion(observed: &Observed) -> Plan {
    let incarnation = observed
        .instances
        .iter()
        .map(instance_incarnation)
        .max()
        .unwrap_or(0)
        .max(observed.status_incarnation.unwrap_or(0))
        .max(observed.record_incarnation.unwrap_or(0))
        .max(1);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn inst(id: &str, incarnation: i64, state: InstanceState) -> Instance {
        let mut tags = BTreeMap::new();
        tags.insert(tags::INCARNATION.to_string(), incarnation.to_string());
        Instance {
            id: id.to_string(),
            state,
            tags,
            private_ip: None,
            public_ip: None,
            zone: None,
            launch_time: None,
            image_id: None,
            instance_type: None,
            subnet_id: None,
            security_group_ids: Vec::new(),
            http_tokens: None,
        }
    }

    fn fencing(incarnations: &[i64]) -> Action {
        Action::MarkRecords {
            incarnations: incarnations.to_vec(),
            state: RecordState::Fencing,
        }
    }

    #[test]
    fn a_running_instance_whose_certificate_was_lost_is_fenced_under_replace_only() {
        let mut o = Observed {
            instances: vec![inst("i-1", 1, InstanceState::Running)],
            fence_current: true,
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(p.phase, Phase::Replacing);
        assert_eq!(p.instance_running.1, reasons::CERTIFICATE_LOST);
        assert_eq!(
            p.actions,
            vec![
                fencing(&[1]),
                Action::Terminate {
                    instance_ids: vec!["i-1".into()],
                    reason: TerminateReason::Fencing
                }
            ]
        );
        o.replace_policy = ReplacePolicy::Never;
        let p = plan(&o);
        assert_eq!(p.actions, vec![Action::WriteRecord], "Never only reports");
        assert_eq!(p.phase, Phase::AwaitingCsr);
    }

    #[test]
    fn nothing_is_launched_for_a_master_being_deleted() {
        let o = Observed {
            master_deleting: true,
            ..Default::default()
        };
        let p = plan(&o);
        assert!(!p.actions.contains(&Action::Launch), "{:?}", p.actions);
        assert_eq!(p.phase, Phase::Pending);
        assert_eq!(p.instance_running.1, reasons::MASTER_DELETING);
        // An instance launched before the deletion began is kept until the node goes.
        let o = Observed {
            master_deleting: true,
            instances: vec![inst("i-1", 1, InstanceState::Running)],
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(p.instance_id.as_deref(), Some("i-1"));
        assert!(!p.actions.contains(&Action::Launch));
    }

    #[test]
    fn superseded_instances_are_marked_fencing_before_they_are_terminated() {
        let o = Observed {
            instances: vec![
                inst("i-1", 1, InstanceState::Running),
                inst("i-2", 2, InstanceState::Running),
            ],
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(
            &p.actions[..2],
            &[
                fencing(&[1]),
                Action::Terminate {
                    instance_ids: vec!["i-1".into()],
                    reason: TerminateReason::Superseded
                }
            ]
        );
    }

    #[test]
    fn older_records_are_marked_then_removed_once_their_instances_are_gone() {
        let o = Observed {
            instances: vec![
                inst("i-1", 1, InstanceState::Terminated),
                inst("i-2", 2, InstanceState::Running),
            ],
            older_record_incarnations: [1].into(),
            ca_present_incarnations: Some(BTreeSet::new()),
            ..Default::default()
        };
        assert_eq!(
            plan(&o).actions,
            vec![
                fencing(&[1]),
                Action::DeleteRecords {
                    incarnations: vec![1]
                },
                Action::WriteRecord
            ]
        );
    }

    #[test]
    fn an_instance_seen_twice_by_id_is_one_instance_not_a_duplicate() {
        let o = Observed {
            instances: vec![
                inst("i-1", 1, InstanceState::Pending),
                inst("i-1", 1, InstanceState::Running),
            ],
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(p.actions, vec![Action::WriteRecord], "nothing terminated");
        assert_eq!(p.instance_id.as_deref(), Some("i-1"));
    }

    #[test]
    fn a_conflicting_certname_writes_and_launches_nothing() {
        let o = Observed {
            certname_conflict: true,
            ..Default::default()
        };
        let p = plan(&o);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.phase, Phase::Pending);
        assert_eq!(p.instance_running.1, reasons::CERTNAME_CONFLICT);
    }

    #[test]
    fn new_node_writes_record_then_launches_incarnation_one() {
        let p = plan(&Observed::default());
        assert_eq!(p.incarnation, 1);
        assert_eq!(p.actions, vec![Action::WriteRecord, Action::Launch]);
        assert_eq!(p.phase, Phase::Launching);
    }

    #[test]
    fn running_instance_is_adopted_without_launch_even_with_empty_status() {
        let o = Observed {
            instances: vec![inst("i-1", 1, InstanceState::Running)],
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(p.instance_id.as_deref(), Some("i-1"));
        assert_eq!(p.actions, vec![Action::WriteRecord]);
        assert_eq!(p.phase, Phase::AwaitingCsr);
    }

    #[test]
    fn terminated_instance_is_revoked_and_replaced_by_next_incarnation() {
        let o = Observed {
            instances: vec![inst("i-1", 1, InstanceState::Terminated)],
            status_incarnation: Some(1),
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(p.incarnation, 2);
        assert_eq!(
            p.actions,
            vec![
                fencing(&[1]),
                Action::Revoke {
                    incarnations: vec![1]
                },
                Action::DeleteRecords {
                    incarnations: vec![1]
                },
                Action::WriteRecord,
                Action::Launch
            ]
        );
        assert_eq!(p.phase, Phase::Replacing);
    }

    #[test]
    fn stopped_instance_is_fenced_before_anything_launches() {
        let o = Observed {
            instances: vec![inst("i-1", 1, InstanceState::Stopped)],
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(p.incarnation, 1);
        assert_eq!(
            p.actions,
            vec![
                fencing(&[1]),
                Action::Terminate {
                    instance_ids: vec!["i-1".into()],
                    reason: TerminateReason::Fencing
                }
            ]
        );
    }

    #[test]
    fn never_policy_waits_on_a_dead_instance() {
        let o = Observed {
            replace_policy: ReplacePolicy::Never,
            instances: vec![inst("i-1", 1, InstanceState::Terminated)],
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(p.incarnation, 1);
        assert!(p.actions.is_empty());
        assert_eq!(p.phase, Phase::Failed);
        assert!(!p.instance_running.0);
    }

    #[test]
    fn older_incarnations_still_at_the_ca_are_revoked_unless_the_certname_is_shared() {
        let mut o = Observed {
            instances: vec![
                inst("i-1", 1, InstanceState::Terminated),
                inst("i-2", 2, InstanceState::Running),
            ],
            ca_present_incarnations: Some([1, 2].into()),
            ..Default::default()
        };
        assert_eq!(
            plan(&o).actions,
            vec![
                fencing(&[1]),
                Action::Revoke {
                    incarnations: vec![1]
                },
                Action::WriteRecord
            ]
        );
        o.fixed_certname = true;
        assert_eq!(plan(&o).actions, vec![Action::WriteRecord]);
    }

    #[test]
    fn vanished_instance_named_by_the_record_is_replaced() {
        let o = Observed {
            record_incarnation: Some(3),
            record_instance_id: Some("i-gone".into()),
            vanish_confirmed: true,
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(p.incarnation, 4);
        assert_eq!(
            p.actions,
            vec![
                fencing(&[3]),
                Action::Revoke {
                    incarnations: vec![3]
                },
                Action::DeleteRecords {
                    incarnations: vec![3]
                },
                Action::WriteRecord,
                Action::Launch
            ]
        );
    }

    #[test]
    fn an_instance_not_visible_yet_is_neither_relaunched_nor_replaced() {
        // A describe taken right after RunInstances (or by a restarted operator) may not
        // show the instance status and the record name.
        let o = Observed {
            status_incarnation: Some(1),
            status_instance_id: Some("i-new".into()),
            record_incarnation: Some(1),
            record_instance_id: Some("i-new".into()),
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(p.incarnation, 1);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.phase, Phase::Launching);
        assert_eq!(
            p.instance_id.as_deref(),
            Some("i-new"),
            "status keeps the evidence"
        );
    }

    #[test]
    fn an_instance_named_by_status_alone_that_no_describe_shows_is_replaced() {
        // EC2 and S3 state both lost: status is the only evidence of incarnation 1.
        let mut o = Observed {
            status_incarnation: Some(1),
            status_instance_id: Some("i-lost".into()),
            vanish_confirmed: true,
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(
            p.incarnation, 2,
            "never incarnation 1 (and its certname) again"
        );
        assert_eq!(p.phase, Phase::Replacing);
        assert!(p.actions.contains(&Action::Launch));
        o.replace_policy = ReplacePolicy::Never;
        let p = plan(&o);
        assert_eq!(p.phase, Phase::Failed);
        assert!(!p.actions.contains(&Action::Launch));
    }

    #[test]
    fn record_without_instance_id_means_launch_never_happened() {
        let o = Observed {
            record_incarnation: Some(1),
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(p.incarnation, 1);
        assert_eq!(p.actions, vec![Action::WriteRecord, Action::Launch]);
    }

    #[test]
    fn duplicate_live_instances_keep_the_first() {
        let o = Observed {
            instances: vec![
                inst("i-b", 1, InstanceState::Running),
                inst("i-a", 1, InstanceState::Running),
            ],
            ..Default::default()
        };
        let p = plan(&o);
        assert_eq!(p.instance_id.as_deref(), Some("i-a"));
        assert_eq!(
            p.actions[0],
            Action::Terminate {
                instance_ids: vec!["i-b".into()],
                reason: TerminateReason::Duplicate
            }
        );
    }

    #[test]
    fn deletion_terminates_first_then_revokes_and_deletes() {
        let live = Observed {
            deleting: true,
            instances: vec![
                inst("i-1", 2, InstanceState::Running),
                inst("i-0", 1, InstanceState::Terminated),
            ],
            ..Default::default()
        };
        let p = plan(&live);
        assert!(!p.release);
        let deleting = Action::MarkRecords {
            incarnations: vec![1, 2],
            state: RecordState::Deleting,
        };
        assert_eq!(
            p.actions,
            vec![
                deleting.clone(),
                Action::Terminate {
                    instance_ids: vec!["i-1".into()],
                    reason: TerminateReason::Deletion
                }
            ]
        );
        let down = Observed {
            deleting: true,
            ca_present_incarnations: Some([1].into()),
            instances: vec![
                inst("i-1", 2, InstanceState::ShuttingDown),
                inst("i-0", 1, InstanceState::Terminated),
            ],
            ..Default::default()
        };
        let p = plan(&down);
        assert!(p.release);
        assert_eq!(
            p.actions,
            vec![
                deleting,
                Action::Revoke {
                    incarnations: vec![1, 2]
                },
                Action::DeleteRecord
            ]
        );
    }

    #[test]
    fn deletion_with_the_ca_listing_unknown_revokes_every_incarnation() {
        // Simulation seed 677: incarnation 1's CSR, sent before the deletion, was left
        // waiting when the listing had failed and only the current incarnation was read.
        let o = Observed {
            deleting: true,
            ca_present_incarnations: None,
            status_incarnation: Some(3),
            instances: vec![inst("i-3", 3, InstanceState::Terminated)],
            ..Default::default()
        };
        let p = plan(&o);
        assert!(p.release);
        assert!(
            p.actions.contains(&Action::Revoke {
                incarnations: vec![1, 2, 3]
            }),
            "{:?}",
            p.actions
        );
    }

    #[test]
    fn deletion_waits_while_a_failed_launch_may_have_started_an_instance() {
        let o = Observed {
            deleting: true,
            launch_unsettled: true,
            ..Default::default()
        };
        let p = plan(&o);
        assert!(!p.release);
        assert!(!p
            .actions
            .iter()
            .any(|a| matches!(a, Action::Revoke { .. } | Action::DeleteRecord)));
    }

    #[test]
    fn orphan_deletion_releases_without_touching_anything() {
        let o = Observed {
            deleting: true,
            deletion_policy: DeletionPolicy::Orphan,
            instances: vec![inst("i-1", 1, InstanceState::Running)],
            ..Default::default()
        };
        let p = plan(&o);
        assert!(p.release);
        assert!(p.actions.is_empty());
    }

    /// A tiny model of the cloud: applies a plan's actions the way the reconciler does.
    fn apply(world: &mut Observed, p: &Plan, next_id: &mut u32) {
        for a in &p.actions {
            match a {
                Action::Terminate { instance_ids, .. } => {
                    for i in world
                        .instances
                        .iter_mut()
                        .filter(|i| instance_ids.contains(&i.id))
                    {
                        i.state = InstanceState::Terminated;
                    }
                }
                Action::Launch => {
                    *next_id += 1;
                    world.instances.push(inst(
                        &format!("i-{next_id}"),
                        p.incarnation,
                        InstanceState::Running,
                    ));
                    world.record_instance_id = Some(format!("i-{next_id}"));
                }
                Action::WriteRecord => {
                    world.record_incarnation = Some(p.incarnation);
                    world.record_instance_id = None;
                }
                Action::Revoke { .. }
                | Action::DeleteRecord
                | Action::MarkRecords { .. }
                | Action::DeleteRecords { .. } => {}
            }
        }
        world.status_incarnation = Some(p.incarnation);
        world.status_instance_id = p.instance_id.clone();
    }

    fn state_strategy() -> impl Strategy<Value = InstanceState> {
        prop_oneof![
            Just(InstanceState::Pending),
            Just(InstanceState::Running),
            Just(InstanceState::Stopped),
            Just(InstanceState::ShuttingDown),
            Just(InstanceState::Terminated),
        ]
    }

    proptest! {
        /// From any mix of instances, repeated planning converges to exactly one live
        /// instance of the newest incarnation and then plans nothing but the (no-op when
        /// unchanged) record write: idempotent.
        #[test]
        fn planning_converges_to_one_running_instance(
            states in proptest::collection::vec((1i64..4, state_strategy()), 0..6),
            lose_status in any::<bool>(),
        ) {
            // Every describe here is current: a missing instance is gone.
            let mut world = Observed { vanish_confirmed: true, ..Default::default() };
            for (n, (inc, st)) in states.iter().enumerate() {
                let st = if *st == InstanceState::Pending { InstanceState::Running } else { *st };
                world.instances.push(inst(&format!("i-x{n}"), *inc, st));
            }
            let mut next_id = 0;
            for _ in 0..6 {
                let p = plan(&world);
                apply(&mut world, &p, &mut next_id);
                if lose_status {
                    world.status_incarnation = None;
                    world.status_instance_id = None;
                }
            }
            let p = plan(&world);
            prop_assert_eq!(&p.actions, &vec![Action::WriteRecord]);
            let live: Vec<_> = world.instances.iter().filter(|i| is_live(i.state)).collect();
            prop_assert_eq!(live.len(), 1);
            prop_assert_eq!(instance_incarnation(live[0]), p.incarnation);
            prop_assert_eq!(p.phase, Phase::AwaitingCsr);
            // Every launch was of a fresh incarnation: never two launches of one incarnation.
            let mut launched: Vec<i64> = world.instances.iter().filter(|i| i.id.starts_with("i-") && !i.id.starts_with("i-x")).map(instance_incarnation).collect();
            let before = launched.len();
            launched.dedup();
            prop_assert_eq!(before, launched.len());
        }

        /// Deletion always ends released, with every instance terminated first.
        #[test]
        fn deletion_converges(
            states in proptest::collection::vec((1i64..4, state_strategy()), 0..6),
        ) {
            let mut world = Observed { deleting: true, ..Default::default() };
            for (n, (inc, st)) in states.iter().enumerate() {
                world.instances.push(inst(&format!("i-x{n}"), *inc, *st));
            }
            let mut next_id = 0;
            let mut released = false;
            for _ in 0..3 {
                let p = plan(&world);
                if p.release {
                    prop_assert!(world.instances.iter().all(|i| !is_live(i.state)));
                    released = true;
                    break;
                }
                apply(&mut world, &p, &mut next_id);
            }
            prop_assert!(released);
        }
    }
}
