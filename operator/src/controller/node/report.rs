//! Reports: events for adoption, certname conflicts, lost certificates and failures, and
//! the lifecycle milestones measured in metrics.

use chrono::Utc;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::act::Outcome;
use crate::api::conditions as cond;
use crate::api::node::{Phase, PuppetNode, PuppetNodeStatus, ReplacePolicy};
use crate::certificate::standing::Standing;
use crate::controller::error::{chain, ReconcileError};
use crate::controller::{Context, FIELD_MANAGER};
use crate::plan::Plan;
use crate::status::conditions::{is_true, set_condition};
use puppet_conductor_core::pause::{PausedBy, Transition};

/// An instance found by its tags, not launched now: a restarted operator or lost status.
pub(super) async fn report_adoption(
    ctx: &Context,
    node: &PuppetNode,
    the_plan: &Plan,
    outcome: &Outcome,
) {
    let known = node.status.as_ref().and_then(|s| s.instance_id.clone());
    if let (None, Some(found)) = (&outcome.launched, &the_plan.instance_id) {
        if known.as_ref() != Some(found) {
            ctx.events
                .publish(
                    &node.object_ref(&()),
                    false,
                    "Adopted",
                    "Adopt",
                    format!(
                        "adopted instance {found} (incarnation {}) found by its tags",
                        the_plan.incarnation
                    ),
                )
                .await;
        }
    }
}

pub(super) async fn report_conflict(ctx: &Context, node: &PuppetNode, certname: &str, other: &str) {
    let note = format!(
        "certname {certname} is claimed by {other} (an older node on the same CA): nothing is signed, revoked or removed for it here"
    );
    tracing::warn!(node = %node.name_any(), certname, other, "{note}");
    ctx.events
        .publish(
            &node.object_ref(&()),
            true,
            cond::CERTNAME_CONFLICT,
            "Sign",
            note,
        )
        .await;
}

/// One event when the node becomes paused (by its own annotation or its master's) and one
/// when it resumes; a pause that lasts is in the `Paused` condition, not in a new event
/// every pass.
pub(super) async fn report_pause(
    ctx: &Context,
    node: &PuppetNode,
    transition: Transition,
    pause: Option<&PausedBy>,
) {
    let (reason, note) = match (transition, pause) {
        (Transition::Paused, Some(by)) => (
            cond::PAUSED,
            format!(
                "paused: {}; nothing is launched, terminated, signed, written or removed for this node until it is removed",
                by.carrier()
            ),
        ),
        (Transition::Resumed, _) => (
            "Resumed",
            "the paused annotation is gone (from the node and its master): actions resumed"
                .to_string(),
        ),
        _ => return,
    };
    tracing::info!(node = %node.name_any(), reason, "{note}");
    ctx.events
        .publish(&node.object_ref(&()), false, reason, "Pause", note)
        .await;
}

pub(super) async fn report_lost_certificate(
    ctx: &Context,
    node: &PuppetNode,
    certname: &str,
    standing: Standing,
    the_plan: &Plan,
    held: bool,
) {
    let what = match standing {
        Standing::Vanished => "vanished from the CA",
        Standing::Unproven => {
            "cannot be proven the one the operator signed (its signature record is gone)"
        }
        _ => "was replaced or revoked at the CA",
    };
    let next = if held {
        "the node is paused: nothing is fenced or replaced until it resumes"
    } else if the_plan.phase == Phase::Replacing {
        "the incarnation is fenced and replaced; its certificate is never signed again"
    } else if node.spec.replace_policy == ReplacePolicy::Replace {
        "waiting for a replacement slot of the master"
    } else {
        "replacePolicy is Never: only reported; its certificate is never signed again"
    };
    let note = format!("the signed certificate of {certname} {what}; {next}");
    tracing::warn!(node = %node.name_any(), certname, reason = standing.reason(), "{note}");
    ctx.events
        .publish(&node.object_ref(&()), true, standing.reason(), "Sign", note)
        .await;
}

/// Launch→signed and launch→first-check-in, observed once when each condition turns True.
pub(super) fn record_milestones(
    ctx: &Context,
    before: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    signed: bool,
    classified: bool,
    launched_at: Option<chrono::DateTime<Utc>>,
    check_in: Option<chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
) {
    let Some(launched) = launched_at else { return };
    let seconds =
        |at: chrono::DateTime<Utc>| (at - launched).num_milliseconds().max(0) as f64 / 1000.0;
    if signed && !is_true(before, cond::CERTIFICATE_SIGNED) {
        ctx.metrics.observe_launch_to_signed(seconds(now));
    }
    if classified && !is_true(before, cond::CLASSIFIED) {
        ctx.metrics
            .observe_launch_to_first_check_in(seconds(check_in.unwrap_or(now)));
    }
}

/// Failures before a plan could be made (master missing, Secrets, cloud unreachable):
/// a `Ready=False` condition and a Warning event saying why.
pub(super) async fn report_failure(node: &PuppetNode, ctx: &Context, error: &ReconcileError) {
    let root = error.root();
    tracing::warn!(node = %node.name_any(), error = %chain(error), category = root.category(), "reconcile failed");
    ctx.events
        .publish(
            &node.object_ref(&()),
            true,
            "ReconcileFailed",
            "Reconcile",
            chain(error),
        )
        .await;
    if error.status_reported() {
        return;
    }
    let Some(ns) = node.namespace() else { return };
    let now = Utc::now();
    let mut status: PuppetNodeStatus = node.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        cond::READY,
        false,
        root.category(),
        chain(error),
        node.meta().generation,
        now,
    );
    if root.is_permanent() {
        status.phase = Some(Phase::Failed);
    } else if status.phase.is_none() {
        status.phase = Some(Phase::Pending);
    }
    if node.status.as_ref() == Some(&status) {
        return;
    }
    let api: Api<PuppetNode> = Api::namespaced(ctx.client.clone(), &ns);
    // Conditional on the UID, as every status write (`status::write_status`).
    let patch = json!({ "apiVersion": "puppet-conductor.dev/v1alpha1", "kind": "PuppetNode", "metadata": {"uid": node.meta().uid}, "status": status });
    if let Err(e) = api
        .patch_status(
            &node.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        tracing::warn!(error = %chain(&e), "could not write failure status");
    }
}
