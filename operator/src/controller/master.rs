//! The PuppetMaster reconciler: finalizer → validate → probe CA, cloud and bucket → hold
//! the referenced Secrets → count nodes → report unknown CSRs and sweep orphans → status.
//! Deletion: master_deletion.rs; the Secrets' in-use finalizer: secret_hold.rs.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::error::{chain, ReconcileError};
use super::finalizers::{add_finalizer, has_finalizer};
use super::master_deletion::finish_deletion;
use super::orphan_sweep::sweep;
use super::orphans::{find_orphans, Owners};
use super::secret_hold::hold;
use super::services::MasterServices;
use super::signing::parse_duration;
use super::{Context, FIELD_MANAGER, MASTER_FINALIZER};
use crate::api::master::{PuppetMaster, PuppetMasterStatus};
use crate::api::node::{Phase, PuppetNode};
use crate::ca::{CaError, CertState, CertificateInfo};
use crate::certificate::pem_fingerprint;
use crate::identity;
use crate::status::master::{flipped, invalid_spec_conditions, master_conditions, Probe, Probes};
use crate::sync::lock;

/// What this pass saw of the master's CA queue.
struct CaProbe {
    fingerprint: Probe<String>,
    /// CSRs waiting at the CA (`None` when the CA could not be listed).
    pending: Option<Vec<CertificateInfo>>,
}

/// The live PuppetNodes in the operator's scope, as owners of certnames.
#[derive(Clone, Debug, Default)]
pub struct LiveNodes {
    /// UIDs of every live node.
    pub uids: HashSet<String>,
    /// Current certnames of every live node.
    pub certnames: HashSet<String>,
    /// Phase counts of this master's nodes.
    pub phases: BTreeMap<String, i32>,
}

/// One reconcile pass of a master (the `Controller`'s reconcile function).
pub async fn reconcile(
    master: Arc<PuppetMaster>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let ns = master
        .namespace()
        .ok_or(ReconcileError::MissingMetadata("namespace"))?;
    if master.meta().deletion_timestamp.is_some() {
        return finish_deletion(&master, &ctx, &ns).await;
    }
    let master = if has_finalizer(master.as_ref(), MASTER_FINALIZER) {
        master
    } else {
        let api: Api<PuppetMaster> = Api::namespaced(ctx.client.clone(), &ns);
        Arc::new(add_finalizer(&api, &master, MASTER_FINALIZER).await?)
    };
    let key = format!("{ns}/{}", master.name_any());
    let now = Utc::now();
    let old = master.status.clone().unwrap_or_default();
    let generation = master.meta().generation;

    if let Err(problem) = validate(&master) {
        // Its nodes' cleanup still reads the Secrets, whatever the spec's other faults.
        let held = hold(&ctx, &ns, &master).await;
        let status = PuppetMasterStatus {
            observed_generation: generation,
            conditions: invalid_spec_conditions(&old.conditions, &problem, generation, now),
            ..old.clone()
        };
        publish_flips(&master, &ctx, &old, &status).await;
        write_status(&ctx, &master, &ns, &status).await?;
        held?;
        return Err(ReconcileError::InvalidSpec(problem));
    }

    let live = live_nodes(&ctx, &ns, &master.name_any()).await?;
    ctx.metrics.set_nodes_by_phase(&key, &live.phases);
    let mut sweep_failed = false;
    let (probes, pending) = match ctx.services.services(&master).await {
        Ok(services) => {
            let (ca, cloud, records) = tokio::join!(
                probe_ca(&services),
                services.cloud.probe(),
                services.records.probe()
            );
            let probes = Probes {
                ca: ca.fingerprint,
                cloud: match cloud {
                    Ok(()) => Probe::Ok(()),
                    Err(e) => Probe::failed("CloudUnreachable", &chain(&e)),
                },
                records: match records {
                    Ok(privacy) => Probe::Ok(privacy),
                    Err(e) => Probe::failed("RecordsUnreachable", &chain(&e)),
                },
            };
            if probes.ca.is_ok() && probes.cloud.is_ok() && probes.records.is_ok() {
                sweep_failed = sweep_orphans(&master, &ctx, &key, &services, &live)
                    .await
                    .is_err();
            }
            (probes, ca.pending)
        }
        Err(error) => (Probes::all_failed(reason_of(&error), &chain(&error)), None),
    };
    // After the services, which create the default challenge key Secret when it is absent.
    let held = hold(&ctx, &ns, &master).await;

    if let Some(pending) = &pending {
        warn_unknown_csrs(&master, &ctx, &key, pending, &live).await;
    }

    let status = PuppetMasterStatus {
        observed_generation: generation,
        conditions: master_conditions(&old.conditions, &probes, generation, now),
        ca_fingerprint: match &probes.ca {
            Probe::Ok(fp) => Some(fp.clone()),
            Probe::Failed { .. } => old.ca_fingerprint.clone(),
        },
        nodes: live.phases.clone(),
    };
    publish_flips(&master, &ctx, &old, &status).await;
    write_status(&ctx, &master, &ns, &status).await?;
    // Not holding a Secret is retried with backoff like any failure (e.g. RBAC without patch).
    held?;

    let healthy =
        probes.ca.is_ok() && probes.cloud.is_ok() && probes.records.is_ok() && !sweep_failed;
    if healthy {
        ctx.backoff.reset(&master_backoff_key(&key));
        Ok(Requeue::requeue(ctx.settings.master_resync))
    } else {
        // Unreachable services are retried with capped backoff, not at the resync pace.
        Ok(Requeue::requeue(
            ctx.backoff
                .next_delay(&master_backoff_key(&key))
                .min(ctx.settings.master_resync),
        ))
    }
}

/// Error policy: an invalid spec waits for a change; anything else backs off.
pub fn error_policy(
    master: Arc<PuppetMaster>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Requeue {
    tracing::warn!(master = %master.name_any(), error = %chain(error), "master reconcile failed");
    if error.is_permanent() {
        return Requeue::await_change();
    }
    let key = format!(
        "{}/{}",
        master.namespace().unwrap_or_default(),
        master.name_any()
    );
    Requeue::requeue(
        ctx.backoff
            .next_delay_at_least(&master_backoff_key(&key), error.retry_after()),
    )
}

/// Masters and nodes share the backoff table; keep their keys apart.
fn master_backoff_key(key: &str) -> String {
    format!("master:{key}")
}

/// Reports or cleans up what no live node owns (after `orphans.minAge`), and publishes
/// pending-CSR ages. Uses the same shared snapshot as the node reconciles.
async fn sweep_orphans(
    master: &PuppetMaster,
    ctx: &Context,
    key: &str,
    services: &MasterServices,
    live: &LiveNodes,
) -> Result<(), ReconcileError> {
    let snapshot = ctx
        .snapshots
        .get(
            key,
            services,
            ctx.settings.snapshot_max_age,
            ctx.settings.snapshot_max_age,
        )
        .await?;
    let now = Utc::now();
    let first_seen = ctx.orphans.observe_csrs(key, &snapshot, now);
    let ages: Vec<f64> = first_seen
        .values()
        .map(|t| (now - *t).num_milliseconds().max(0) as f64 / 1000.0)
        .collect();
    for age in &ages {
        ctx.metrics.observe_pending_csr_age(*age);
    }
    ctx.metrics
        .set_oldest_pending_csr_age(key, ages.iter().copied().fold(0.0, f64::max));

    // Validated before: an unparsable minAge never gets here.
    let min_age = parse_duration(&master.spec.orphans.min_age)
        .ok_or_else(|| ReconcileError::InvalidSpec("orphans.minAge".to_string()))?;
    let owners = Owners {
        node_uids: live.uids.clone(),
        certnames: live.certnames.clone(),
    };
    let scan = find_orphans(&snapshot, &owners, &first_seen, now, min_age);
    let result = sweep(
        master,
        key,
        &ctx.settings.operator_id,
        services,
        &scan,
        &ctx.orphans,
        ctx.events.as_ref(),
    )
    .await;
    if let Ok(report) = &result {
        for orphan in &report.cleaned {
            ctx.metrics
                .count_orphans(key, orphan.kind.as_str(), "cleaned");
        }
        ctx.metrics.set_orphans_left(key, &report.left_by_kind());
        if !report.cleaned.is_empty() {
            ctx.snapshots.invalidate(key).await;
        }
    }
    result.map(|_| ()).inspect_err(|error| {
        tracing::warn!(master = key, error = %chain(error), "orphan sweep incomplete");
    })
}

/// What the schema cannot check.
fn validate(master: &PuppetMaster) -> Result<(), String> {
    let spec = &master.spec;
    if parse_duration(&spec.signing.poll_interval).is_none() {
        return Err(format!(
            "signing.pollInterval {:?} is not a duration",
            spec.signing.poll_interval
        ));
    }
    if parse_duration(&spec.orphans.min_age).is_none() {
        return Err(format!(
            "orphans.minAge {:?} is not a duration",
            spec.orphans.min_age
        ));
    }
    Ok(())
}

fn reason_of(error: &ReconcileError) -> &'static str {
    match error {
        ReconcileError::Secret { .. } => "SecretInvalid",
        ReconcileError::Kube(_) => "KubernetesUnavailable",
        _ => "ServicesUnavailable",
    }
}

/// Fetches the CA certificate (reachability, fingerprint) and lists waiting CSRs (which
/// also proves auth.conf lets the operator's client certificate manage certificates).
async fn probe_ca(services: &MasterServices) -> CaProbe {
    let certificate = match services.ca.ca_certificate().await {
        Ok(pem) => pem,
        Err(e) => {
            return CaProbe {
                fingerprint: Probe::Failed {
                    reason: "CAUnreachable",
                    message: chain(&e),
                },
                pending: None,
            }
        }
    };
    let Some(fingerprint) = pem_fingerprint(&certificate) else {
        return CaProbe {
            fingerprint: Probe::Failed {
                reason: "CACertificateInvalid",
                message: "the CA served no PEM certificate".to_string(),
            },
            pending: None,
        };
    };
    match services.ca.list(Some(CertState::Requested)).await {
        Ok(pending) => CaProbe {
            fingerprint: Probe::Ok(fingerprint),
            pending: Some(pending),
        },
        Err(e) => CaProbe {
            fingerprint: Probe::Failed {
                reason: listing_failure_reason(&e),
                message: listing_failure_message(&e),
            },
            pending: None,
        },
    }
}

/// The `CAReachable` reason when the CA answered its certificate but not the listing.
fn listing_failure_reason(error: &CaError) -> &'static str {
    match error {
        CaError::Status {
            status: 401 | 403, ..
        } => "CAClientNotAllowed",
        CaError::Status { status, .. } if *status >= 500 => "CAListingFailed",
        _ => "CAListingUnavailable",
    }
}

/// What to tell the user about a failed listing: only a refusal points at auth.conf; a
/// server error is usually one malformed CSR that puppetserver cannot list.
fn listing_failure_message(error: &CaError) -> String {
    match error {
        CaError::Status { status: 401 | 403, .. } => format!(
            "the CA answered but refused to list CSRs (check auth.conf allows the client certificate): {}",
            chain(error)
        ),
        CaError::Status { status, .. } if *status >= 500 => format!(
            "the CA's certificate_statuses listing fails with a server error, usually because of one malformed CSR it cannot list; nodes waiting for a CSR are read one by one meanwhile (find the CSR in the puppetserver log and delete it): {}",
            chain(error)
        ),
        _ => format!("listing the CA's CSRs failed: {}", chain(error)),
    }
}

/// Owners of certnames across the operator's scope, and this master's phase counts.
pub async fn live_nodes(
    ctx: &Context,
    namespace: &str,
    master: &str,
) -> Result<LiveNodes, ReconcileError> {
    // No label selector here: a node of another shard still owns its instance, record
    // and certificate, and the orphan sweep must never take it for an orphan.
    let api: Api<PuppetNode> = ctx.settings.scope.api(ctx.client.clone());
    let nodes = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(ReconcileError::Kube)?;
    // Every phase is listed, zeros included: a count that drops to zero must overwrite
    // the old value under server-side apply, not linger.
    let mut live = LiveNodes {
        phases: Phase::ALL.iter().map(|p| (phase_name(*p), 0)).collect(),
        ..LiveNodes::default()
    };
    for node in &nodes.items {
        let Some(uid) = node.uid() else { continue };
        let status = node.status.clone().unwrap_or_default();
        let incarnation = status.incarnation.unwrap_or(1);
        live.certnames.insert(identity::certname(
            &uid,
            incarnation,
            node.spec.certname.as_deref(),
        ));
        if let Some(certname) = status.certname {
            live.certnames.insert(certname);
        }
        live.uids.insert(uid);
        if node.namespace().as_deref() == Some(namespace) && node.spec.master_ref.name == master {
            let phase = status.phase.unwrap_or(Phase::Pending);
            *live.phases.entry(phase_name(phase)).or_default() += 1;
        }
    }
    Ok(live)
}

fn phase_name(phase: Phase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{phase:?}"))
}

/// A waiting CSR whose certname is no live node's is never signed; say so once on the
/// master (the node-level refusals are the node reconciler's).
async fn warn_unknown_csrs(
    master: &PuppetMaster,
    ctx: &Context,
    master_key: &str,
    pending: &[CertificateInfo],
    live: &LiveNodes,
) {
    for csr in pending {
        if live.certnames.contains(&csr.name) {
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

/// What the master reconciler remembers between passes (only to avoid repeating events).
#[derive(Default)]
pub struct MasterMemory {
    warned: std::sync::Mutex<HashSet<(String, String)>>,
}

impl MasterMemory {
    /// True the first time `(master, certname)` is seen.
    pub fn first_warning(&self, master_key: &str, certname: &str) -> bool {
        lock(&self.warned).insert((master_key.to_string(), certname.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> CaError {
        CaError::Status {
            operation: "list",
            status: code,
            message: "boom".into(),
            retry_after: None,
        }
    }

    #[test]
    fn a_failing_listing_names_its_real_cause() {
        assert_eq!(listing_failure_reason(&status(403)), "CAClientNotAllowed");
        assert!(listing_failure_message(&status(403)).contains("auth.conf"));
        assert_eq!(listing_failure_reason(&status(500)), "CAListingFailed");
        let server_error = listing_failure_message(&status(500));
        assert!(server_error.contains("malformed CSR"), "{server_error}");
        assert!(!server_error.contains("auth.conf"), "{server_error}");
    }
}
