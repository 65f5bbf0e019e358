//! The master's status (server-side apply), condition-flip events and warnings for
//! CSRs no node owns.

use std::collections::HashSet;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::LiveNodes;
use crate::api::master::{PuppetMaster, PuppetMasterStatus};
use crate::ca::CertificateInfo;
use crate::controller::error::ReconcileError;
use crate::controller::{Context, FIELD_MANAGER};
use crate::status::master::flipped;
use puppet_conductor_api::conditions as cond;
use puppet_conductor_core::pause::{transition, PausedBy, Transition};

/// A waiting CSR whose certname is no live node's is never signed; say so once on the
/// master (the node-level refusals are the node reconciler's).
pub(super) async fn warn_unknown_csrs(
    master: &PuppetMaster,
    ctx: &Context,
    master_key: &str,
    pending: &[CertificateInfo],
    live: &LiveNodes,
) {
    let unknown: HashSet<&str> = pending
        .iter()
        .map(|csr| csr.name.as_str())
        .filter(|name| !live.certnames.contains(*name))
        .collect();
    ctx.masters.retain_warnings(master_key, &unknown);
    for csr in pending {
        if !unknown.contains(csr.name.as_str()) {
            continue;
        }
        if !ctx.masters.first_warning(master_key, &csr.name) {
            continue;
        }
        ctx.events
            .publish(
                &master.object_ref(&()),
                true,
                "CSRUnknownCertname",
                "Refuse",
                format!(
                    "CSR {} is waiting at the CA but no PuppetNode has that certname (unknown or deleted node); it will not be signed",
                    csr.name
                ),
            )
            .await;
    }
}

/// Events for the probe conditions that flipped (`Paused` has its own, [`report_pause`]).
pub(super) async fn publish_flips(
    master: &PuppetMaster,
    ctx: &Context,
    old: &PuppetMasterStatus,
    new: &PuppetMasterStatus,
) {
    for c in flipped(&old.conditions, &new.conditions) {
        if c.type_ == cond::PAUSED {
            continue;
        }
        let warning = c.status != "True";
        ctx.events
            .publish(
                &master.object_ref(&()),
                warning,
                &format!("{}{}", c.type_, if warning { "False" } else { "True" }),
                "Probe",
                format!("{} is {}: {}", c.type_, c.status, c.message),
            )
            .await;
    }
}

/// One event when the master becomes paused and one when it resumes (against the status
/// before, so a pause that lasts publishes nothing more).
pub(super) async fn report_pause(
    master: &PuppetMaster,
    ctx: &Context,
    old: &PuppetMasterStatus,
    pause: Option<&PausedBy>,
) {
    let (reason, note) = match (transition(&old.conditions, pause), pause) {
        (Transition::Paused, Some(by)) => (
            cond::PAUSED,
            format!(
                "paused: {}; the orphan sweep and every node of this master stop acting until it is removed",
                by.carrier()
            ),
        ),
        (Transition::Resumed, _) => (
            "Resumed",
            "the paused annotation is gone: the orphan sweep and this master's nodes act again"
                .to_string(),
        ),
        _ => return,
    };
    tracing::info!(master = %master.name_any(), reason, "{note}");
    ctx.events
        .publish(&master.object_ref(&()), false, reason, "Pause", note)
        .await;
}

pub(super) async fn write_status(
    ctx: &Context,
    master: &PuppetMaster,
    namespace: &str,
    status: &PuppetMasterStatus,
) -> Result<(), ReconcileError> {
    let api: Api<PuppetMaster> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": "puppet-conductor.dev/v1alpha1",
        "kind": "PuppetMaster",
        // Only for this master, not a namesake made since.
        "metadata": {"uid": master.meta().uid},
        "status": status,
    });
    api.patch_status(
        &master.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(ReconcileError::Kube)?;
    Ok(())
}
