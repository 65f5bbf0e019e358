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

pub(super) async fn publish_flips(
    master: &PuppetMaster,
    ctx: &Context,
    old: &PuppetMasterStatus,
    new: &PuppetMasterStatus,
) {
    for c in flipped(&old.conditions, &new.conditions) {
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
