//! The status derivation, pure: plan, observation and error in, status out.

use super::*;
use crate::api::node::PuppetNodeStatus;
use crate::plan::reasons;
use chrono::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

fn running_plan() -> Plan {
    Plan {
        incarnation: 1,
        instance_id: Some("i-1".into()),
        actions: vec![],
        phase: Phase::AwaitingCsr,
        instance_running: (true, reasons::RUNNING, "running".into()),
        release: false,
    }
}

fn instance() -> Instance {
    Instance {
        id: "i-1".into(),
        state: InstanceState::Running,
        tags: Default::default(),
        private_ip: None,
        public_ip: None,
        zone: None,
        launch_time: Some(at(0)),
        image_id: None,
        instance_type: None,
        subnet_id: None,
        security_group_ids: vec![],
        http_tokens: None,
    }
}

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, minute, 0).unwrap()
}

fn derive_with(
    before: Option<&PuppetNodeStatus>,
    standing: Standing,
    check_in: Option<DateTime<Utc>>,
    error: Option<&ReconcileError>,
) -> Derived {
    derive_paused(before, standing, check_in, error, None, false)
}

fn derive_paused(
    before: Option<&PuppetNodeStatus>,
    standing: Standing,
    check_in: Option<DateTime<Utc>>,
    error: Option<&ReconcileError>,
    pause: Option<&PausedBy>,
    deleting: bool,
) -> Derived {
    let plan = running_plan();
    let instance = instance();
    let cert = CertView {
        standing,
        recorded: None,
        at_ca: None,
        conflict: None,
    };
    derive(&StatusInput {
        before,
        generation: Some(3),
        plan: &plan,
        certname: "web-1".into(),
        instance_id: Some("i-1".into()),
        instance: Some(&instance),
        record_listed: true,
        check_in,
        error,
        cert: &cert,
        pause,
        deleting,
        now: at(5),
    })
}

fn condition<'a>(status: &'a PuppetNodeStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {:?}", status.conditions))
}

#[test]
fn a_signed_and_checked_in_running_node_is_ready() {
    let d = derive_with(None, Standing::Signed, Some(at(4)), None);
    assert_eq!(d.phase, Phase::Ready);
    assert!(d.signed && d.classified);
    assert_eq!(condition(&d.status, cond::READY).status, "True");
    assert_eq!(d.status.observed_generation, Some(3));
    assert_eq!(d.status.instance_id.as_deref(), Some("i-1"));
    assert_eq!(d.status.certname.as_deref(), Some("web-1"));
}

#[test]
fn signed_without_a_check_in_is_signed_not_ready() {
    let d = derive_with(None, Standing::Signed, None, None);
    assert_eq!(d.phase, Phase::Signed);
    assert_eq!(condition(&d.status, cond::CLASSIFIED).status, "False");
}

#[test]
fn an_error_is_the_reason_of_record_written_and_ready() {
    let error = ReconcileError::Secret {
        name: "aws".into(),
        problem: "no key".into(),
    };
    let d = derive_with(None, Standing::Requested, None, Some(&error));
    let record = condition(&d.status, cond::RECORD_WRITTEN);
    assert_eq!(
        (record.status.as_str(), record.reason.as_str()),
        ("False", "secret")
    );
    let ready = condition(&d.status, cond::READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "secret")
    );
    assert_eq!(ready.message, "secret aws: no key");
    assert_ne!(
        d.phase,
        Phase::Failed,
        "a transient error does not fail the node"
    );
}

#[test]
fn a_permanent_error_fails_the_node() {
    let error = ReconcileError::InvalidSpec("no image".into());
    let d = derive_with(None, Standing::NoRequest, None, Some(&error));
    assert_eq!(d.phase, Phase::Failed);
}

#[test]
fn an_unknown_ca_keeps_what_the_same_incarnation_showed() {
    let signed = derive_with(None, Standing::Signed, None, None).status;
    let d = derive_with(Some(&signed), Standing::Unknown, None, None);
    assert!(d.signed, "unknown is not gone");
    assert_eq!(
        condition(&d.status, cond::CERTIFICATE_SIGNED).status,
        "True"
    );
}

#[test]
fn an_unknown_ca_shows_nothing_signed_for_a_new_incarnation() {
    let mut old = derive_with(None, Standing::Signed, None, None).status;
    old.incarnation = Some(0);
    let d = derive_with(Some(&old), Standing::Unknown, None, None);
    assert!(!d.signed);
}

#[test]
fn deriving_twice_from_its_own_output_changes_nothing() {
    let first = derive_with(None, Standing::Signed, Some(at(4)), None).status;
    let again = derive_with(Some(&first), Standing::Signed, Some(at(4)), None).status;
    assert_eq!(first, again, "a pass with nothing new writes nothing");
}

#[test]
fn a_paused_ready_node_keeps_its_phase_and_says_paused_and_not_ready() {
    let by = PausedBy::Master("pm".into());
    let d = derive_paused(None, Standing::Signed, Some(at(4)), None, Some(&by), false);
    assert_eq!(d.phase, Phase::Ready, "the phase is what was observed");
    let paused = condition(&d.status, cond::PAUSED);
    assert_eq!(
        (paused.status.as_str(), paused.reason.as_str()),
        ("True", cond::PAUSED)
    );
    assert!(
        paused.message.contains("PuppetMaster pm"),
        "{}",
        paused.message
    );
    let ready = condition(&d.status, cond::READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", cond::PAUSED)
    );
    assert!(
        ready.message.contains("PuppetMaster pm"),
        "{}",
        ready.message
    );
}

#[test]
fn unpausing_turns_paused_false_and_ready_true_again() {
    let by = PausedBy::Node("web-1".into());
    let paused = derive_paused(None, Standing::Signed, Some(at(4)), None, Some(&by), false).status;
    let d = derive_with(Some(&paused), Standing::Signed, Some(at(4)), None);
    let c = condition(&d.status, cond::PAUSED);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", cond::RESUMED)
    );
    assert_eq!(condition(&d.status, cond::READY).status, "True");
}

#[test]
fn a_never_paused_node_has_no_paused_condition() {
    let d = derive_with(None, Standing::Signed, Some(at(4)), None);
    assert!(d.status.conditions.iter().all(|c| c.type_ != cond::PAUSED));
}

#[test]
fn a_paused_node_being_deleted_is_not_held_and_says_cleanup_goes_on() {
    let by = PausedBy::Node("web-1".into());
    let d = derive_paused(None, Standing::Signed, Some(at(4)), None, Some(&by), true);
    let paused = condition(&d.status, cond::PAUSED);
    assert_eq!(paused.status, "True");
    assert!(
        paused.message.contains("cleanup goes on"),
        "{}",
        paused.message
    );
    assert_ne!(condition(&d.status, cond::READY).reason, cond::PAUSED);
}

#[test]
fn a_paused_node_whose_plan_would_launch_is_pending() {
    let by = PausedBy::Node("web-1".into());
    let plan = Plan {
        incarnation: 1,
        instance_id: None,
        actions: vec![
            crate::plan::Action::WriteRecord,
            crate::plan::Action::Launch,
        ],
        phase: Phase::Launching,
        instance_running: (false, reasons::LAUNCHING, "no instance launched yet".into()),
        release: false,
    };
    let cert = CertView {
        standing: Standing::NoRequest,
        recorded: None,
        at_ca: None,
        conflict: None,
    };
    let d = derive(&StatusInput {
        before: None,
        generation: Some(1),
        plan: &plan,
        certname: "web-1".into(),
        instance_id: None,
        instance: None,
        record_listed: false,
        check_in: None,
        error: None,
        cert: &cert,
        pause: Some(&by),
        deleting: false,
        now: at(5),
    });
    assert_eq!(d.phase, Phase::Pending);
    assert_eq!(d.status.phase, Some(Phase::Pending));
}
