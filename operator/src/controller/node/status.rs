//! Status: the node's conditions and phase, derived by a pure function of the status
//! before, the plan, the observation and the pass's error; written by server-side apply.

use chrono::{DateTime, Utc};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::desired::Pass;
use super::report::record_milestones;
use crate::api::conditions as cond;
use crate::api::node::{CertificateStatus, Phase, PuppetNode, PuppetNodeStatus};
use crate::ca::{CertState, CertificateInfo};
use crate::certificate::standing::{Recorded, Standing};
use crate::cloud::{Instance, InstanceState};
use crate::controller::error::{chain, ReconcileError};
use crate::controller::FIELD_MANAGER;
use crate::plan::Plan;
use crate::status::conditions::{is_true, set_condition, time};
use puppet_conductor_core::pause::{holds_actions, paused_phase, set_paused_condition, PausedBy};

/// What status shows of the certificate.
pub(super) struct CertView<'a> {
    pub(super) standing: Standing,
    pub(super) recorded: Option<&'a Recorded>,
    /// The CA's entry (from the listing, or the per-certname read when it failed).
    pub(super) at_ca: Option<&'a CertificateInfo>,
    pub(super) conflict: Option<&'a str>,
}

/// What the pure status derivation reads.
pub(super) struct StatusInput<'a> {
    /// The status the node shows now.
    pub(super) before: Option<&'a PuppetNodeStatus>,
    /// The spec generation this pass saw.
    pub(super) generation: Option<i64>,
    /// The plan of this pass.
    pub(super) plan: &'a Plan,
    /// The current incarnation's certname.
    pub(super) certname: String,
    /// The instance this incarnation runs as (planned or launched now), if any.
    pub(super) instance_id: Option<String>,
    /// That instance as the snapshot sees it.
    pub(super) instance: Option<&'a Instance>,
    /// Whether the records listing holds the certname's record.
    pub(super) record_listed: bool,
    /// The agent's last check-in (ENC call) for the certname.
    pub(super) check_in: Option<DateTime<Utc>>,
    /// The error that stopped this pass, if one did.
    pub(super) error: Option<&'a ReconcileError>,
    /// What status shows of the certificate.
    pub(super) cert: &'a CertView<'a>,
    /// The paused annotation in force (the node's or its master's), if any.
    pub(super) pause: Option<&'a PausedBy>,
    /// The node is being deleted (a pause then holds nothing: cleanup goes on).
    pub(super) deleting: bool,
    /// The time conditions that change are stamped with.
    pub(super) now: DateTime<Utc>,
}

/// What the `Paused` condition says is stopped for a node, while deleting or not.
fn node_pause_effect(deleting: bool) -> &'static str {
    if deleting {
        "the node is being deleted, and its cleanup goes on regardless"
    } else {
        "nothing is launched, terminated, replaced, signed, written or removed for this node \
         until the annotation is removed (observation goes on; deletion still cleans up)"
    }
}

/// The status a pass implies, and the facts its milestones are measured by.
pub(super) struct Derived {
    /// The whole status to apply.
    pub(super) status: PuppetNodeStatus,
    /// Its phase.
    pub(super) phase: Phase,
    /// `CertificateSigned` is true.
    pub(super) signed: bool,
    /// `Classified` is true.
    pub(super) classified: bool,
}

/// The node's status as a pure function of its status before, the plan, the observation
/// and the pass's error.
pub(super) fn derive(input: &StatusInput<'_>) -> Derived {
    let StatusInput {
        before: before_status,
        generation,
        plan: the_plan,
        instance,
        error,
        cert: cert_view,
        now,
        ..
    } = *input;
    let certname = input.certname.clone();
    let instance_id = input.instance_id.clone();
    let mut status = before_status.cloned().unwrap_or_default();

    let (running, reason, message) = the_plan.instance_running.clone();
    let running = running && instance.is_some_and(|i| i.state == InstanceState::Running);
    set_condition(
        &mut status.conditions,
        cond::INSTANCE_RUNNING,
        running,
        reason,
        message,
        generation,
        now,
    );

    let record_ok = input.record_listed && error.is_none();
    match error {
        Some(e) => set_condition(
            &mut status.conditions,
            cond::RECORD_WRITTEN,
            false,
            e.root().category(),
            chain(e),
            generation,
            now,
        ),
        None => set_condition(
            &mut status.conditions,
            cond::RECORD_WRITTEN,
            record_ok,
            if record_ok { "Written" } else { "Pending" },
            if record_ok {
                format!("record {certname} is current")
            } else {
                "record not written yet".to_string()
            },
            generation,
            now,
        ),
    }

    // Certificate: what the CA lists against what was recorded at signing. An unknown
    // CA keeps what status said (unknown is not "gone") about the same incarnation only:
    // a new incarnation has nothing signed, whatever the last one had.
    let standing = cert_view.standing;
    let cert = cert_view.at_ca;
    let same_incarnation = before_status.and_then(|s| s.incarnation) == Some(the_plan.incarnation);
    let previously_signed = same_incarnation
        && is_true(
            before_status
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default(),
            cond::CERTIFICATE_SIGNED,
        );
    let signed = match standing {
        Standing::Signed => true,
        Standing::Unknown => previously_signed,
        _ => false,
    };
    if standing != Standing::Unknown || !same_incarnation {
        let recorded = cert_view.recorded;
        status.certificate = (cert.is_some() || recorded.is_some()).then(|| CertificateStatus {
            state: cert.map(|c| c.state.as_str().to_string()),
            fingerprint: cert.and_then(|c| c.fingerprint.clone()),
            not_after: cert.and_then(|c| c.not_after.map(time)),
            serial: recorded.and_then(|r| r.serial.clone()),
            signed_fingerprint: recorded.and_then(|r| r.fingerprint.clone()),
        });
        set_condition(
            &mut status.conditions,
            cond::CERTIFICATE_SIGNED,
            signed,
            standing.reason(),
            certificate_message(&certname, standing, cert.map(|c| c.state)),
            generation,
            now,
        );
    }
    match cert_view.conflict {
        Some(other) => set_condition(
            &mut status.conditions,
            cond::CERTNAME_CONFLICT,
            true,
            cond::CERTNAME_CONFLICT,
            format!("certname {certname} is claimed by {other}, an older node on the same CA"),
            generation,
            now,
        ),
        None => {
            if status
                .conditions
                .iter()
                .any(|c| c.type_ == cond::CERTNAME_CONFLICT)
            {
                set_condition(
                    &mut status.conditions,
                    cond::CERTNAME_CONFLICT,
                    false,
                    "NoConflict",
                    format!("no other node claims {certname}"),
                    generation,
                    now,
                );
            }
        }
    }
    let check_in = input.check_in;
    let launched_at = instance.and_then(|i| i.launch_time);
    let classified = signed && check_in.is_some_and(|t| launched_at.is_none_or(|l| t >= l));
    status.last_check_in = check_in.map(time);
    set_condition(
        &mut status.conditions,
        cond::CLASSIFIED,
        classified,
        if classified { "CheckedIn" } else { "NoCheckIn" },
        if classified {
            "the agent received its classification".to_string()
        } else {
            "the agent has not asked for its catalog yet".to_string()
        },
        generation,
        now,
    );

    let mut phase = the_plan.phase;
    if phase == Phase::AwaitingCsr && standing.is_lost() {
        // A lost certificate under replacePolicy Never (or waiting for a slot): never
        // signed again, so the node cannot become ready.
        phase = Phase::Failed;
    }
    if phase == Phase::AwaitingCsr && running && signed {
        phase = if classified {
            Phase::Ready
        } else {
            Phase::Signed
        };
    }
    if let Some(e) = error {
        if e.root().is_permanent() {
            phase = Phase::Failed;
        }
    }
    // Paused: the phase is what was observed (a node that would launch is Pending), and
    // Ready says the operator is not keeping the node as declared.
    let held = holds_actions(input.pause, input.deleting);
    if held {
        phase = paused_phase(phase, instance_id.is_some());
    }
    set_paused_condition(
        &mut status.conditions,
        input.pause,
        node_pause_effect(input.deleting),
        generation,
        now,
    );
    let ready = phase == Phase::Ready && !held;
    let (ready_reason, ready_message) = match (error, input.pause) {
        (Some(e), _) => (e.root().category(), chain(e)),
        (None, Some(by)) if held => (cond::PAUSED, format!("paused: {}", by.carrier())),
        (None, _) if ready => (
            "Ready",
            "instance running, certificate signed, agent classified".to_string(),
        ),
        (None, _) => (phase.as_str(), format!("node is {}", phase.as_str())),
    };
    set_condition(
        &mut status.conditions,
        cond::READY,
        ready,
        ready_reason,
        ready_message,
        generation,
        now,
    );

    status.phase = Some(phase);
    status.observed_generation = generation;
    // The instance id is the evidence that this incarnation launched: kept while the
    // incarnation lasts (a pass fencing it names none), or lost EC2 and S3 state would
    // relaunch it under its old certname (simulation seed 9451).
    let same_incarnation = status.incarnation == Some(the_plan.incarnation);
    status.instance_id = instance_id.or(status.instance_id.take().filter(|_| same_incarnation));
    status.incarnation = Some(the_plan.incarnation);
    status.certname = Some(certname);
    status.private_ip = instance.and_then(|i| i.private_ip.clone());
    status.public_ip = instance.and_then(|i| i.public_ip.clone());
    status.zone = instance.and_then(|i| i.zone.clone());
    Derived {
        status,
        phase,
        signed,
        classified,
    }
}

/// Writes the status the plan and snapshot imply (server-side apply, one field manager),
/// only when it differs from what the node shows; an event when the phase changes.
pub(super) async fn write_status(
    pass: &Pass<'_>,
    the_plan: &Plan,
    launched_id: Option<String>,
    error: Option<&ReconcileError>,
    cert_view: &CertView<'_>,
) -> Result<Phase, ReconcileError> {
    let Pass {
        ctx,
        node,
        id,
        snapshot,
        ..
    } = *pass;
    let now = Utc::now();
    let certname = id.certname(node, the_plan.incarnation);
    let instance_id = the_plan.instance_id.clone().or(launched_id);
    let instance = instance_id.as_ref().and_then(|iid| snapshot.instance(iid));
    let check_in = snapshot.records.check_ins.get(&certname).copied();
    let derived = derive(&StatusInput {
        before: node.status.as_ref(),
        generation: node.meta().generation,
        plan: the_plan,
        record_listed: snapshot.records.records.contains_key(&certname),
        check_in,
        certname,
        instance_id,
        instance,
        error,
        cert: cert_view,
        pause: pass.pause,
        deleting: pass.deleting,
        now,
    });
    let before = node
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    record_milestones(
        ctx,
        before,
        derived.signed,
        derived.classified,
        instance.and_then(|i| i.launch_time),
        check_in,
        now,
    );
    let (status, phase) = (derived.status, derived.phase);
    if node.status.as_ref() != Some(&status) {
        let ns = node
            .namespace()
            .ok_or(ReconcileError::MissingMetadata("namespace"))?;
        let api: Api<PuppetNode> = Api::namespaced(ctx.client.clone(), &ns);
        // The UID makes the write conditional: a pass that started before this node was
        // deleted and a namesake created (a pool reuses names) must not write the old
        // node's status onto the new one (simulation seed 2552 of the first pool run).
        let patch = json!({
            "apiVersion": "puppet-conductor.dev/v1alpha1",
            "kind": "PuppetNode",
            "metadata": {"uid": node.meta().uid},
            "status": status,
        });
        api.patch_status(
            &node.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(ReconcileError::Kube)?;
        if node.status.as_ref().and_then(|s| s.phase) != Some(phase) {
            ctx.events
                .publish(
                    &node.object_ref(&()),
                    phase == Phase::Failed,
                    phase.as_str(),
                    "Reconcile",
                    format!("phase is now {}", phase.as_str()),
                )
                .await;
        }
    }
    Ok(phase)
}

/// The `CertificateSigned` message for a standing.
pub(super) fn certificate_message(
    certname: &str,
    standing: Standing,
    at_ca: Option<CertState>,
) -> String {
    match standing {
        Standing::Signed => format!("certificate {certname} is signed and is the one recorded"),
        Standing::NoRequest => format!("no CSR for {certname} yet"),
        Standing::Requested => format!("a CSR for {certname} waits"),
        Standing::Unconfirmed => format!("certificate {certname} is signed, not confirmed yet"),
        Standing::NotOurs => format!(
            "the CA holds a certificate for {certname} that was never signed for this node \
             (`puppetserver ca clean --certname {certname}` lets this node be signed)"
        ),
        Standing::Unproven => format!(
            "the CA holds a certificate for {certname} that no surviving record shows the \
             operator signed; it is never used, and the incarnation is replaced"
        ),
        Standing::Vanished => format!(
            "the signed certificate of {certname} vanished from the CA (now: {})",
            at_ca.map_or("nothing", CertState::as_str)
        ),
        Standing::Replaced => format!(
            "the CA holds another or a revoked certificate for {certname} than the one signed"
        ),
        Standing::Unknown => format!("the CA could not be read for {certname}"),
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
