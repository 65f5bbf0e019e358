//! Tests of the planner: examples of each decision, and properties that repeated
//! planning converges (one running instance; a released deletion).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::instances::is_live;
use super::*;
use crate::instance::{tags, Instance, InstanceState};
use crate::record::RecordState;
use puppet_conductor_api::node::{DeletionPolicy, Phase, ReplacePolicy};

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
fn older_records_are_marked_asked_at_the_ca_then_removed_once_their_instances_are_gone() {
    // Whatever the listing says (empty, or unknown), the retired incarnation's certname
    // is read on its own before its record goes: the listing may predate a signature
    // `autosign` made (simulation seed 801588).
    for listing in [Some(BTreeSet::new()), None] {
        let o = Observed {
            instances: vec![
                inst("i-1", 1, InstanceState::Terminated),
                inst("i-2", 2, InstanceState::Running),
            ],
            older_record_incarnations: [1].into(),
            ca_present_incarnations: listing,
            ..Default::default()
        };
        assert_eq!(
            plan(&o).actions,
            vec![
                fencing(&[1]),
                Action::Revoke {
                    incarnations: vec![1]
                },
                Action::DeleteRecords {
                    incarnations: vec![1]
                },
                Action::WriteRecord
            ]
        );
    }
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
fn deletion_reads_an_older_incarnation_with_a_record_even_when_the_listing_omits_it() {
    // The listing may predate a signature `autosign` made for an incarnation whose record
    // is still there: its certname is read on its own before its record goes.
    let o = Observed {
        deleting: true,
        ca_present_incarnations: Some(BTreeSet::new()),
        status_incarnation: Some(3),
        older_record_incarnations: [1].into(),
        instances: vec![inst("i-3", 3, InstanceState::Terminated)],
        ..Default::default()
    };
    let p = plan(&o);
    assert!(p.release);
    assert!(
        p.actions.contains(&Action::Revoke {
            incarnations: vec![1, 3]
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
