//! Pause: the annotation `puppet-conductor.dev/paused: "true"` stops the operator's
//! actions on an object while observation and status go on (pure decisions; the
//! controllers consult them before any write).
//!
//! - On a PuppetNode: no finalizer added, no record written, nothing launched, terminated,
//!   fenced or replaced, nothing signed, no CSR removed, no record deleted.
//! - On a PuppetMaster: its orphan sweep removes nothing, and every node of the master is
//!   paused as by its own annotation.
//!
//! Deletion is never paused: a node being deleted is cleaned up as usual, whoever carries
//! the annotation, because a user who deletes a paused object wants it gone, and a
//! finalizer that waits for an unpause would strand the instance, certificate and record.
//! A paused master still holds its own finalizer and its Secrets: those are no action on
//! the Puppet infrastructure but what keeps its nodes' cleanup possible.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use puppet_conductor_api::conditions as cond;
use puppet_conductor_api::node::Phase;
use puppet_conductor_api::PAUSED_ANNOTATION;

use crate::status::conditions::{is_true, set_condition};

/// Whether these annotations pause their object: the paused annotation says `"true"`
/// (any ASCII case, as a user may write `"True"`). Absent, empty or anything else is not
/// paused, so removing the annotation or setting it to `"false"` resumes at once.
pub fn paused(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(PAUSED_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Which object's annotation pauses a node's (or a master's) actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PausedBy {
    /// The PuppetNode's own annotation (its name).
    Node(String),
    /// The annotation of the PuppetMaster (its name): its own, or its node's master.
    Master(String),
}

impl PausedBy {
    /// Names the object that carries the annotation, for conditions and events.
    pub fn carrier(&self) -> String {
        let (kind, name) = match self {
            PausedBy::Node(name) => ("PuppetNode", name),
            PausedBy::Master(name) => ("PuppetMaster", name),
        };
        format!("{kind} {name} carries the annotation {PAUSED_ANNOTATION}: \"true\"")
    }
}

/// The pause of a node: its own annotation first (the one a user removes to resume it),
/// then its master's.
pub fn node_pause(
    node: &str,
    node_annotations: Option<&BTreeMap<String, String>>,
    master: &str,
    master_annotations: Option<&BTreeMap<String, String>>,
) -> Option<PausedBy> {
    if paused(node_annotations) {
        Some(PausedBy::Node(node.to_string()))
    } else if paused(master_annotations) {
        Some(PausedBy::Master(master.to_string()))
    } else {
        None
    }
}

/// The pause of a master's own actions (its orphan sweep).
pub fn master_pause(
    master: &str,
    annotations: Option<&BTreeMap<String, String>>,
) -> Option<PausedBy> {
    paused(annotations).then(|| PausedBy::Master(master.to_string()))
}

/// Whether a pass holds its actions: paused and not being deleted (cleanup is never held).
pub fn holds_actions(pause: Option<&PausedBy>, deleting: bool) -> bool {
    pause.is_some() && !deleting
}

/// How the pause changed since the status before (events are published on transitions
/// only, as for the other conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Not paused before, paused now.
    Paused,
    /// Paused before, not now.
    Resumed,
    /// As before.
    Unchanged,
}

/// The transition from the conditions before to `pause` now.
pub fn transition(before: &[Condition], pause: Option<&PausedBy>) -> Transition {
    match (is_true(before, cond::PAUSED), pause.is_some()) {
        (false, true) => Transition::Paused,
        (true, false) => Transition::Resumed,
        _ => Transition::Unchanged,
    }
}

/// Sets the `Paused` condition: True with reason `Paused` and a message naming the
/// annotated object and `what_stops`; once resumed, False with reason `Resumed` (only when
/// it was ever set, so objects never paused carry no such condition).
pub fn set_paused_condition(
    conditions: &mut Vec<Condition>,
    pause: Option<&PausedBy>,
    what_stops: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    match pause {
        Some(by) => set_condition(
            conditions,
            cond::PAUSED,
            true,
            cond::PAUSED,
            format!("{}: {what_stops}", by.carrier()),
            generation,
            now,
        ),
        None if conditions.iter().any(|c| c.type_ == cond::PAUSED) => set_condition(
            conditions,
            cond::PAUSED,
            false,
            cond::RESUMED,
            format!("no {PAUSED_ANNOTATION}: \"true\" annotation: actions go on"),
            generation,
            now,
        ),
        None => {}
    }
}

/// The phase a paused node reports: the one its observation implies, except that a node
/// whose plan would launch (no instance yet) is `Pending`, not `Launching`: nothing is
/// being launched while it is paused.
pub fn paused_phase(planned: Phase, has_instance: bool) -> Phase {
    match planned {
        Phase::Launching if !has_instance => Phase::Pending,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_a_true_paused_annotation_pauses() {
        for (value, expected) in [
            ("true", true),
            ("True", true),
            (" TRUE ", true),
            ("false", false),
            ("", false),
            ("yes", false),
            ("1", false),
        ] {
            let a = annotations(&[(PAUSED_ANNOTATION, value)]);
            assert_eq!(paused(Some(&a)), expected, "{value:?}");
        }
        assert!(!paused(None));
        assert!(!paused(Some(&annotations(&[]))));
        assert!(
            !paused(Some(&annotations(&[("example.com/paused", "true")]))),
            "another annotation of the same last segment"
        );
    }

    #[test]
    fn a_node_is_paused_by_its_own_annotation_first_then_by_its_master() {
        let on = annotations(&[(PAUSED_ANNOTATION, "true")]);
        let off = annotations(&[(PAUSED_ANNOTATION, "false")]);
        assert_eq!(
            node_pause("web-1", Some(&on), "pm", Some(&on)),
            Some(PausedBy::Node("web-1".into()))
        );
        assert_eq!(
            node_pause("web-1", Some(&off), "pm", Some(&on)),
            Some(PausedBy::Master("pm".into()))
        );
        assert_eq!(
            node_pause("web-1", None, "pm", Some(&on)),
            Some(PausedBy::Master("pm".into()))
        );
        assert_eq!(node_pause("web-1", Some(&off), "pm", None), None);
        assert_eq!(
            master_pause("pm", Some(&on)),
            Some(PausedBy::Master("pm".into()))
        );
        assert_eq!(master_pause("pm", Some(&off)), None);
    }

    #[test]
    fn deletion_is_never_held() {
        let by = PausedBy::Node("web-1".into());
        assert!(holds_actions(Some(&by), false));
        assert!(!holds_actions(Some(&by), true), "cleanup goes on");
        assert!(!holds_actions(None, false));
    }

    #[test]
    fn the_condition_names_the_carrier_and_turns_resumed_when_it_goes() {
        let t0 = DateTime::from_timestamp(1_000, 0).unwrap_or_default();
        let t1 = DateTime::from_timestamp(2_000, 0).unwrap_or_default();
        let mut c = Vec::new();
        set_paused_condition(&mut c, None, "stopped", Some(1), t0);
        assert!(c.is_empty(), "never paused: no condition");
        let by = PausedBy::Master("pm".into());
        set_paused_condition(&mut c, Some(&by), "nothing is launched", Some(1), t0);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].type_, cond::PAUSED);
        assert_eq!(c[0].status, "True");
        assert_eq!(c[0].reason, cond::PAUSED);
        assert!(c[0].message.contains("PuppetMaster pm"), "{}", c[0].message);
        assert!(c[0].message.contains(PAUSED_ANNOTATION));
        assert!(c[0].message.ends_with("nothing is launched"));
        set_paused_condition(&mut c, None, "stopped", Some(2), t1);
        assert_eq!(c[0].status, "False");
        assert_eq!(c[0].reason, cond::RESUMED);
        assert_eq!(
            c[0].last_transition_time,
            crate::status::conditions::time(t1)
        );
    }

    #[test]
    fn transitions_are_read_against_the_condition_before() {
        let by = PausedBy::Node("web-1".into());
        let mut c = Vec::new();
        assert_eq!(transition(&c, None), Transition::Unchanged);
        assert_eq!(transition(&c, Some(&by)), Transition::Paused);
        set_paused_condition(&mut c, Some(&by), "x", None, Utc::now());
        assert_eq!(transition(&c, Some(&by)), Transition::Unchanged);
        assert_eq!(transition(&c, None), Transition::Resumed);
        set_paused_condition(&mut c, None, "x", None, Utc::now());
        assert_eq!(transition(&c, None), Transition::Unchanged);
        assert_eq!(transition(&c, Some(&by)), Transition::Paused);
    }

    #[test]
    fn a_paused_node_that_would_launch_is_pending_other_phases_stay() {
        assert_eq!(paused_phase(Phase::Launching, false), Phase::Pending);
        assert_eq!(
            paused_phase(Phase::Launching, true),
            Phase::Launching,
            "an instance that boots is observed booting"
        );
        for phase in [
            Phase::Pending,
            Phase::AwaitingCsr,
            Phase::Signed,
            Phase::Ready,
            Phase::Replacing,
            Phase::Failed,
        ] {
            assert_eq!(paused_phase(phase, false), phase);
        }
    }
}
