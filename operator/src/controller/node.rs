//! The PuppetNode reconciler: observe → plan → act → status.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::certname_owners::{normalize_ca_url, Claimant};
use super::error::{chain, ReconcileError};
use super::finalizers::{add_finalizer, has_finalizer};
use super::node_actions::{Acting, NodeIdentity, Outcome};
use super::services::MasterServices;
use super::signing::{confirm, parse_duration, police_waiting_csr, SigningOutcome};
use super::snapshot::{ca_has, Snapshot};
use super::{Context, FIELD_MANAGER, NODE_FINALIZER};
use crate::api::conditions as cond;
use crate::api::master::{PuppetMaster, SigningMode};
use crate::api::node::{CertificateStatus, Phase, PuppetNode, PuppetNodeStatus, ReplacePolicy};
use crate::ca::{CertState, CertificateInfo};
use crate::certificate::standing::{standing, Recorded, Standing};
use crate::cloud::InstanceState;
use crate::plan::{plan, Observed, Plan};
use crate::records::SignatureRecord;
use crate::status::conditions::{is_true, reason_of, set_condition, time};

/// One reconcile pass of a node (the `Controller`'s reconcile function).
pub async fn reconcile(
    node: Arc<PuppetNode>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let id = NodeIdentity::of(&node)?;
    let result = reconcile_inner(node.clone(), &ctx, &id).await;
    match &result {
        Ok(_) => ctx.backoff.reset(&id.key),
        Err(error) if matches!(error.root(), ReconcileError::CleanupInProgress(_)) => {
            ctx.backoff.reset(&id.key)
        }
        Err(error) => report_failure(&node, &ctx, error).await,
    }
    result
}

/// Error policy: permanent errors wait for a change, transient ones back off per object.
pub fn error_policy(node: Arc<PuppetNode>, error: &ReconcileError, ctx: Arc<Context>) -> Requeue {
    if error.is_permanent() {
        return Requeue::await_change();
    }
    if matches!(error.root(), ReconcileError::CleanupInProgress(_)) {
        return Requeue::requeue(ctx.settings.converging);
    }
    let key = format!(
        "{}/{}",
        node.namespace().unwrap_or_default(),
        node.name_any()
    );
    Requeue::requeue(ctx.backoff.next_delay_at_least(&key, error.retry_after()))
}

async fn reconcile_inner(
    node: Arc<PuppetNode>,
    ctx: &Context,
    id: &NodeIdentity,
) -> Result<Requeue, ReconcileError> {
    let ns = node
        .namespace()
        .ok_or(ReconcileError::MissingMetadata("namespace"))?;
    let nodes: Api<PuppetNode> = Api::namespaced(ctx.client.clone(), &ns);
    let masters: Api<PuppetMaster> = Api::namespaced(ctx.client.clone(), &ns);

    let deleting = node.meta().deletion_timestamp.is_some();
    let finalized = has_finalizer(node.as_ref(), NODE_FINALIZER);
    if deleting && !finalized {
        return Ok(Requeue::await_change());
    }

    let master = masters
        .get_opt(&node.spec.master_ref.name)
        .await
        .map_err(ReconcileError::Kube)?
        .ok_or_else(|| ReconcileError::MasterNotFound(id.master_key.clone()))?;
    let services = ctx.services.services(&master).await?;

    // Observe before adding the finalizer: a node whose cloud was never reachable (bad
    // credentials, wrong endpoint) holds nothing to clean up and must stay deletable.
    let snapshot = ctx
        .snapshots
        .get(
            &id.master_key,
            &services,
            ctx.settings.snapshot_max_age,
            ca_listing_age_limit(&master, ctx.settings.snapshot_max_age),
        )
        .await?;

    let node = if deleting || finalized {
        node
    } else {
        // Before this node can launch anything, the Secrets its cleanup needs are held:
        // a namespace deleted before the master's first pass would take them otherwise.
        // The master likewise: deleted before its first pass, it would vanish and leave
        // this node nothing to clean up with.
        super::secret_hold::hold(ctx, &ns, &master).await?;
        if master.meta().deletion_timestamp.is_none()
            && !has_finalizer(&master, super::MASTER_FINALIZER)
        {
            add_finalizer(&masters, &master, super::MASTER_FINALIZER).await?;
        }
        Arc::new(add_finalizer(&nodes, &node, NODE_FINALIZER).await?)
    };
    finalizer(&nodes, NODE_FINALIZER, node, |event| async {
        match event {
            FinalizerEvent::Apply(node) => {
                converge(&node, &master, &services, &snapshot, ctx, id, false).await
            }
            FinalizerEvent::Cleanup(node) => {
                converge(&node, &master, &services, &snapshot, ctx, id, true).await
            }
        }
    })
    .await
    .or_else(|e| match e {
        // A pass that started from a stale copy after an earlier pass released the node:
        // the object is gone, so the finalizer is too; nothing failed.
        kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(ref api))
            if api.code == 404 =>
        {
            Ok(Requeue::await_change())
        }
        e => Err(ReconcileError::Finalizer(Box::new(e))),
    })
}

/// How old the CA listing of the master's shared snapshot may be for this pass. In
/// `Operator` mode it is what signing polls, so it is never older than
/// `signing.pollInterval`: one listing per master per interval, while instances and
/// records are still observed once per snapshot age.
fn ca_listing_age_limit(master: &PuppetMaster, max_age: Duration) -> Duration {
    match master.spec.signing.mode {
        SigningMode::Operator => parse_duration(&master.spec.signing.poll_interval)
            .map_or(max_age, |poll| poll.min(max_age)),
        SigningMode::Policy => max_age,
    }
}

/// What the planner needs, from the snapshot, status and (only on the launch path) the record.
async fn observe(
    node: &PuppetNode,
    services: &MasterServices,
    snapshot: &Snapshot,
    id: &NodeIdentity,
    deleting: bool,
) -> Result<Observed, ReconcileError> {
    let status = node.status.clone().unwrap_or_default();
    let instances = snapshot.node_instances(&id.uid);
    let ca_present_incarnations = snapshot.certificates.as_ref().map(|certs| {
        let max = instances
            .iter()
            .map(crate::plan::instance_incarnation)
            .chain(status.incarnation)
            .max()
            .unwrap_or(1);
        (1..=max)
            .filter(|inc| ca_has(certs, &id.certname(node, *inc)))
            .collect::<BTreeSet<i64>>()
    });
    let mut observed = Observed {
        deleting,
        replace_policy: node.spec.replace_policy,
        deletion_policy: node.spec.deletion_policy,
        status_incarnation: status.incarnation,
        record_incarnation: None,
        record_instance_id: None,
        status_instance_id: status.instance_id.clone(),
        instances,
        fixed_certname: node.spec.certname.is_some(),
        ca_present_incarnations,
        older_record_incarnations: BTreeSet::new(),
        fence_current: false,
        certname_conflict: false,
        master_deleting: false,
        vanish_confirmed: false,
        launch_unsettled: false,
    };
    if node.spec.certname.is_none() {
        let max = observed
            .instances
            .iter()
            .map(crate::plan::instance_incarnation)
            .chain(status.incarnation)
            .max()
            .unwrap_or(1);
        observed.older_record_incarnations = (1..max)
            .filter(|inc| {
                let certname = id.certname(node, *inc);
                snapshot.records.records.contains_key(&certname)
                    || snapshot.records.signatures.contains(&certname)
            })
            .collect();
    }
    if deleting {
        return Ok(observed);
    }
    // Status may be lost: when the plan would launch, the record (written before every
    // launch, naming the instance after it) decides between "never launched" and "gone".
    let first = plan(&observed);
    if first.actions.contains(&crate::plan::Action::Launch) {
        let certname = id.certname(node, first.incarnation);
        if snapshot.records.records.contains_key(&certname) {
            match services.records.get(&certname).await {
                Ok(Some(record)) if record.owner.node_uid == id.uid => {
                    observed.record_incarnation = Some(record.owner.incarnation);
                    observed.record_instance_id = record.instance_id;
                }
                // Another node's record under this certname: not evidence about this node.
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(observed)
}

async fn converge(
    node: &PuppetNode,
    master: &PuppetMaster,
    services: &MasterServices,
    snapshot: &Snapshot,
    ctx: &Context,
    id: &NodeIdentity,
    deleting: bool,
) -> Result<Requeue, ReconcileError> {
    let mut observed = observe(node, services, snapshot, id, deleting).await?;
    observed.master_deleting = master.meta().deletion_timestamp.is_some();
    observed.vanish_confirmed = vanish_confirmed(ctx, &observed, snapshot);
    observed.launch_unsettled = deleting
        && ctx
            .launch_attempts
            .unsettled(&id.key, ctx.settings.instance_visibility_grace);
    let first = plan(&observed);
    let certname = id.certname(node, first.incarnation);
    let conflict = certname_conflict(ctx, node, master, id, &certname).await?;
    let at_ca = certificate_at_ca(services, snapshot, &certname, first.phase).await?;
    let ca_holds_certificate = at_ca
        .as_ref()
        .and_then(Option::as_ref)
        .is_some_and(|c| c.state != CertState::Requested);
    let (mut recorded, claim) = recorded_signature(
        ctx,
        node,
        services,
        snapshot,
        id,
        first.incarnation,
        ca_holds_certificate,
    )
    .await?;
    let mut standing = standing(recorded.as_ref(), at_ca.as_ref().map(Option::as_ref))
        .for_derived_certname(node.spec.certname.is_none());
    // A lost verdict fences and replaces: it is confirmed by the CA as it is now, not by a
    // listing that may predate a signature made since (autosign signs outside this
    // process; simulation seed 2886 read such a certificate as vanished).
    let at_ca = if standing.is_lost() && snapshot.certificates.is_some() {
        let now = services.ca.status(&certname).await?;
        standing = crate::certificate::standing::standing(recorded.as_ref(), Some(now.as_ref()))
            .for_derived_certname(node.spec.certname.is_none());
        Some(now)
    } else {
        at_ca
    };
    observed.certname_conflict = conflict.is_some();
    observed.fence_current = !deleting
        && standing.is_lost()
        && node.spec.replace_policy == ReplacePolicy::Replace
        && ctx.replacements.acquire(
            &id.master_key,
            &id.key,
            ctx.settings.max_replacements_per_master,
        );
    let the_plan = plan(&observed);
    if deleting || !standing.is_lost() {
        ctx.replacements.release(&id.master_key, &id.key);
    }
    if the_plan.incarnation != first.incarnation {
        // A new incarnation: nothing is recorded or at the CA for it yet.
        recorded = None;
        standing = Standing::NoRequest;
    }
    let acting = Acting {
        ctx,
        node,
        master,
        services,
        id,
        snapshot,
        written: Default::default(),
        conflict: conflict.clone(),
    };
    // Events on transitions only: a conflict or a lost certificate that lasts is in the
    // conditions, not in a new event every pass.
    let before = node.status.as_ref();
    let before_conditions = before.map(|s| s.conditions.as_slice()).unwrap_or_default();
    if let Some(other) = &conflict {
        if !is_true(before_conditions, cond::CERTNAME_CONFLICT) {
            report_conflict(ctx, node, &certname, other).await;
        }
    }
    let at_ca = at_ca
        .flatten()
        .filter(|_| the_plan.incarnation == first.incarnation);
    let view = |standing, recorded| CertView {
        standing,
        recorded,
        at_ca: at_ca.as_ref(),
        conflict: conflict.as_deref(),
    };
    let outcome = match acting.run(&the_plan).await {
        Ok(o) => o,
        Err(error) => {
            let cert = view(standing, recorded.as_ref());
            let written = write_status(
                ctx,
                node,
                id,
                snapshot,
                &the_plan,
                None,
                Some(&error),
                &cert,
            )
            .await;
            return Err(ReconcileError::reported(error, written));
        }
    };
    if deleting && !the_plan.release {
        let cert = view(standing, recorded.as_ref());
        write_status(ctx, node, id, snapshot, &the_plan, None, None, &cert).await?;
        return Err(ReconcileError::CleanupInProgress(
            "waiting for instances to shut down".into(),
        ));
    }
    if the_plan.release {
        ctx.launch_attempts.settled(&id.key);
        ctx.events
            .publish(
                &node.object_ref(&()),
                false,
                "Released",
                "Cleanup",
                "cleanup confirmed; finalizer released".into(),
            )
            .await;
        return Ok(Requeue::await_change());
    }
    report_adoption(ctx, node, &the_plan, &outcome).await;
    let launched_id = outcome.launched.as_ref().map(|i| i.id.clone());
    let mut signed = false;
    // Any CSR waiting for the current certname is policed, whatever was signed before:
    // after a clean, a new CSR is a replay to refuse and remove.
    let csr_waiting = at_ca
        .as_ref()
        .is_some_and(|c| c.state == CertState::Requested);
    if let (Phase::AwaitingCsr, true, Some(instance_id)) =
        (the_plan.phase, csr_waiting, the_plan.instance_id.as_deref())
    {
        match police_waiting_csr(&acting, the_plan.incarnation, instance_id).await {
            Ok(SigningOutcome::Signed) => signed = true,
            Ok(_) => {}
            Err(error) => {
                let cert = view(standing, recorded.as_ref());
                let written = write_status(
                    ctx,
                    node,
                    id,
                    snapshot,
                    &the_plan,
                    launched_id,
                    Some(&error),
                    &cert,
                )
                .await;
                return Err(ReconcileError::reported(error, written));
            }
        }
    }
    if let (Standing::Unconfirmed, Some(claim)) = (standing, &claim) {
        // Signed by autosign, or by a pass that stopped before recording it: confirm the CA
        // signed the claimed key and record the certificate's serial and fingerprint.
        match confirm(&acting, claim).await? {
            Some(confirmed) => {
                recorded = Some(Recorded::from(&confirmed));
                standing = Standing::Signed;
            }
            None => standing = Standing::Replaced,
        }
    }
    let newly_lost = reason_of(before_conditions, cond::CERTIFICATE_SIGNED)
        != Some(standing.reason())
        || before.and_then(|s| s.phase) != Some(the_plan.phase);
    if standing.is_lost() && newly_lost {
        report_lost_certificate(ctx, node, &certname, standing, &the_plan).await;
    }
    let cert = view(standing, recorded.as_ref());
    let phase = write_status(ctx, node, id, snapshot, &the_plan, launched_id, None, &cert).await?;
    if let Some(instance) = &outcome.launched {
        ctx.events
            .publish(
                &node.object_ref(&()),
                false,
                "Launched",
                "Launch",
                format!(
                    "launched {} for incarnation {} (certname {})",
                    instance.id,
                    the_plan.incarnation,
                    id.certname(node, the_plan.incarnation)
                ),
            )
            .await;
    }
    if signed {
        // The next pass must see the CA's new state, not this pass's listing.
        ctx.snapshots.invalidate(&id.master_key).await;
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    Ok(match phase {
        // Nothing here changes until the other node goes: look again at the resync.
        _ if conflict.is_some() => Requeue::requeue(ctx.settings.resync),
        Phase::Ready | Phase::Failed => Requeue::requeue(ctx.settings.resync),
        // Waiting for a CSR: poll at the master's signing interval.
        Phase::AwaitingCsr => Requeue::requeue(
            parse_duration(&master.spec.signing.poll_interval).unwrap_or(ctx.settings.converging),
        ),
        _ => Requeue::requeue(ctx.settings.converging),
    })
}

/// Whether every instance status or the record names, and no describe shows, has been
/// missing for the visibility grace (remembered per process: a restart waits it again).
fn vanish_confirmed(ctx: &Context, observed: &Observed, snapshot: &Snapshot) -> bool {
    let named: BTreeSet<&String> = [&observed.status_instance_id, &observed.record_instance_id]
        .into_iter()
        .flatten()
        .collect();
    let grace = ctx.settings.instance_visibility_grace;
    named.into_iter().fold(true, |all, id| {
        let unconfirmed = if snapshot.instances.iter().any(|i| &i.id == id) {
            ctx.absences.seen(id);
            false
        } else {
            !ctx.absences.missing_for(id, grace)
        };
        all && !unconfirmed
    })
}

/// An instance found by its tags, not launched now: a restarted operator or lost status.
async fn report_adoption(ctx: &Context, node: &PuppetNode, the_plan: &Plan, outcome: &Outcome) {
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

/// The older node claiming `certname` on this master's CA, if any.
async fn certname_conflict(
    ctx: &Context,
    node: &PuppetNode,
    master: &PuppetMaster,
    id: &NodeIdentity,
    certname: &str,
) -> Result<Option<String>, ReconcileError> {
    let me = Claimant {
        key: id.key.clone(),
        uid: id.uid.clone(),
        created: node.creation_timestamp(),
        ca: Some(normalize_ca_url(&master.spec.ca.url)),
        fixed_certname: node.spec.certname.clone(),
    };
    ctx.certname_owners
        .conflict(
            &ctx.client,
            &ctx.settings.scope,
            ctx.settings.snapshot_max_age,
            me,
            certname,
        )
        .await
        .map_err(ReconcileError::Kube)
}

/// What was recorded of the incarnation's signature. Nothing unless the listing shows a
/// signature record for the certname (status alone may be stale: a merge can keep an older
/// incarnation's fields); then from status while it is current (no read), otherwise from
/// the record itself (one read). Also returns the signature record when it was read.
async fn recorded_signature(
    ctx: &Context,
    node: &PuppetNode,
    services: &MasterServices,
    snapshot: &Snapshot,
    id: &NodeIdentity,
    incarnation: i64,
    ca_holds_certificate: bool,
) -> Result<(Option<Recorded>, Option<SignatureRecord>), ReconcileError> {
    let certname = id.certname(node, incarnation);
    // The listing may predate a claim (autosign's, or one written since): when the CA
    // holds a certificate, only status or a read of the signature record tells "not ours".
    if !snapshot.records.signatures.contains(&certname) && !ca_holds_certificate {
        return Ok((None, None));
    }
    let status = node.status.as_ref();
    let from_status = status
        .filter(|s| s.incarnation == Some(incarnation))
        .and_then(|s| s.certificate.as_ref())
        .filter(|c| c.signed_fingerprint.is_some())
        .map(|c| Recorded {
            serial: c.serial.clone(),
            fingerprint: c.signed_fingerprint.clone(),
            public_key_sha256: None,
            spent: false,
        });
    if from_status.is_some() {
        return Ok((from_status, None));
    }
    let mut signature = services
        .records
        .get_signature(&certname)
        .await?
        .filter(|s| s.is_for(&id.uid, incarnation));
    if let Some(unsigned) = ctx.unsigned_claims.get(&certname) {
        let stored = signature.as_ref();
        if stored.is_some_and(|s| {
            s.sign_requested
                && s.fingerprint.is_none()
                && s.public_key_sha256 == unsigned.public_key_sha256
        }) {
            // The CA said it did not sign: the record is cleared before it is read as spent.
            services.records.put_signature(&unsigned).await?;
            signature = Some(unsigned);
        }
        ctx.unsigned_claims.forget(&certname);
    }
    Ok((signature.as_ref().map(Recorded::from), signature))
}

/// The CA's entry for `certname`: from the master's listing, or, when the listing failed
/// and the node waits for its CSR, from one bounded per-certname read. `None`: unknown.
async fn certificate_at_ca(
    services: &MasterServices,
    snapshot: &Snapshot,
    certname: &str,
    phase: Phase,
) -> Result<Option<Option<CertificateInfo>>, ReconcileError> {
    if let Some(listing) = &snapshot.certificates {
        return Ok(Some(listing.get(certname).cloned()));
    }
    if phase != Phase::AwaitingCsr || !snapshot.take_degraded_read() {
        return Ok(None);
    }
    match services.ca.status(certname).await {
        Ok(info) => Ok(Some(info)),
        Err(error) => {
            tracing::warn!(certname, %error, "per-certname CA read failed");
            Ok(None)
        }
    }
}

async fn report_conflict(ctx: &Context, node: &PuppetNode, certname: &str, other: &str) {
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

async fn report_lost_certificate(
    ctx: &Context,
    node: &PuppetNode,
    certname: &str,
    standing: Standing,
    the_plan: &Plan,
) {
    let what = match standing {
        Standing::Vanished => "vanished from the CA",
        Standing::Unproven => {
            "cannot be proven the one the operator signed (its signature record is gone)"
        }
        _ => "was replaced or revoked at the CA",
    };
    let next = if the_plan.phase == Phase::Replacing {
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

/// What status shows of the certificate.
struct CertView<'a> {
    standing: Standing,
    recorded: Option<&'a Recorded>,
    /// The CA's entry (from the listing, or the per-certname read when it failed).
    at_ca: Option<&'a CertificateInfo>,
    conflict: Option<&'a str>,
}

/// Writes the status the plan and snapshot imply (server-side apply, one field manager).
#[allow(clippy::too_many_arguments)]
async fn write_status(
    ctx: &Context,
    node: &PuppetNode,
    id: &NodeIdentity,
    snapshot: &Snapshot,
    the_plan: &Plan,
    launched_id: Option<String>,
    error: Option<&ReconcileError>,
    cert_view: &CertView<'_>,
) -> Result<Phase, ReconcileError> {
    let now = Utc::now();
    let generation = node.meta().generation;
    let mut status = node.status.clone().unwrap_or_default();
    let certname = id.certname(node, the_plan.incarnation);
    let instance_id = the_plan.instance_id.clone().or(launched_id);
    let instance = instance_id
        .as_ref()
        .and_then(|iid| snapshot.instances.iter().find(|i| &i.id == iid));

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

    let record_ok = snapshot.records.records.contains_key(&certname) && error.is_none();
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
    let same_incarnation =
        node.status.as_ref().and_then(|s| s.incarnation) == Some(the_plan.incarnation);
    let previously_signed = same_incarnation
        && is_true(
            node.status
                .as_ref()
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
    let check_in = snapshot.records.check_ins.get(&certname).copied();
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

    let before = node
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    record_milestones(ctx, before, signed, classified, launched_at, check_in, now);

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
    let ready = phase == Phase::Ready;
    let (ready_reason, ready_message) = match error {
        Some(e) => (e.root().category(), chain(e)),
        None if ready => (
            "Ready",
            "instance running, certificate signed, agent classified".to_string(),
        ),
        None => (phase.as_str(), format!("node is {}", phase.as_str())),
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

    if node.status.as_ref() != Some(&status) {
        let ns = node
            .namespace()
            .ok_or(ReconcileError::MissingMetadata("namespace"))?;
        let api: Api<PuppetNode> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({
            "apiVersion": "puppet-conductor.dev/v1alpha1",
            "kind": "PuppetNode",
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
fn certificate_message(certname: &str, standing: Standing, at_ca: Option<CertState>) -> String {
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

/// Failures before a plan could be made (master missing, Secrets, cloud unreachable):
/// a `Ready=False` condition and a Warning event saying why.
/// Launch→signed and launch→first-check-in, observed once when each condition turns True.
fn record_milestones(
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

async fn report_failure(node: &PuppetNode, ctx: &Context, error: &ReconcileError) {
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
    let patch = json!({ "apiVersion": "puppet-conductor.dev/v1alpha1", "kind": "PuppetNode", "status": status });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::node::PuppetNodeSpec;
    use crate::api::MasterRef;
    use crate::controller::events::MemoryEvents;
    use crate::controller::services::{MasterServices, ServiceFactory};

    struct NoServices;

    #[async_trait::async_trait]
    impl ServiceFactory for NoServices {
        async fn services(&self, m: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
            Err(ReconcileError::MasterNotFound(m.name_any()))
        }
    }

    async fn context() -> Arc<Context> {
        let client = kube_fake_client::ClientBuilder::new()
            .build()
            .await
            .unwrap();
        Arc::new(Context::new(
            client,
            Arc::new(NoServices),
            Arc::new(MemoryEvents::default()),
            Default::default(),
        ))
    }

    fn node() -> Arc<PuppetNode> {
        let mut n = PuppetNode::new(
            "n1",
            PuppetNodeSpec {
                master_ref: MasterRef { name: "pm".into() },
                classes: vec![],
                environment: None,
                parameters: Default::default(),
                instance: Default::default(),
                certname: None,
                replace_policy: Default::default(),
                deletion_policy: Default::default(),
            },
        );
        n.metadata.namespace = Some("ns".into());
        Arc::new(n)
    }

    #[test]
    fn in_operator_mode_the_ca_listing_is_never_older_than_the_poll_interval() {
        use crate::api::master::{PuppetMasterSpec, SigningMode};
        let spec: PuppetMasterSpec = serde_json::from_value(serde_json::json!({
            "server": "puppet", "ca": {"url": "https://ca", "clientSecretRef": {"name": "c"}},
            "cloud": {"region": "r"}, "records": {"bucket": "b"},
            "signing": {"mode": "Operator", "pollInterval": "2s"}
        }))
        .unwrap();
        let mut master = PuppetMaster::new("pm", spec);
        let ten = Duration::from_secs(10);
        assert_eq!(ca_listing_age_limit(&master, ten), Duration::from_secs(2));
        master.spec.signing.poll_interval = "1m".into();
        assert_eq!(
            ca_listing_age_limit(&master, ten),
            ten,
            "never longer than the limit"
        );
        master.spec.signing.mode = SigningMode::Policy;
        master.spec.signing.poll_interval = "2s".into();
        assert_eq!(
            ca_listing_age_limit(&master, ten),
            ten,
            "Policy mode does not poll"
        );
    }

    #[tokio::test]
    async fn permanent_errors_wait_for_a_change_of_the_object() {
        let ctx = context().await;
        let action = error_policy(node(), &ReconcileError::InvalidSpec("no image".into()), ctx);
        assert_eq!(action, Requeue::await_change());
    }

    #[tokio::test]
    async fn transient_errors_back_off_exponentially_up_to_the_cap() {
        let ctx = context().await;
        let unavailable = || ReconcileError::MasterNotFound("ns/pm".into());
        let first = error_policy(node(), &unavailable(), ctx.clone());
        let second = error_policy(node(), &unavailable(), ctx.clone());
        assert_ne!(first, Requeue::await_change());
        // 1 s then 2 s, each with up to +25% jitter.
        let d1 = ctx.backoff.next_delay("probe/other");
        assert!(d1 <= Duration::from_millis(1250));
        assert_ne!(first, second, "the delay grows");
        for _ in 0..20 {
            let _ = error_policy(node(), &unavailable(), ctx.clone());
        }
        assert_eq!(
            error_policy(node(), &unavailable(), ctx.clone()),
            Requeue::requeue(Duration::from_secs(300))
        );
        ctx.backoff.reset("ns/n1");
        assert_ne!(
            error_policy(node(), &unavailable(), ctx),
            Requeue::requeue(Duration::from_secs(300))
        );
    }

    #[tokio::test]
    async fn a_ca_asking_to_retry_later_is_not_asked_sooner() {
        let ctx = context().await;
        let busy = ReconcileError::Ca(crate::ca::CaError::status(
            "list",
            503,
            "busy",
            Some(Duration::from_secs(30)),
        ));
        // The first backoff step is about 1 s; the CA asked for 30.
        assert_eq!(
            error_policy(node(), &busy, ctx),
            Requeue::requeue(Duration::from_secs(30))
        );
    }

    #[tokio::test]
    async fn waiting_for_instances_to_shut_down_is_a_short_requeue_not_a_backoff() {
        let ctx = context().await;
        let waiting = ReconcileError::CleanupInProgress("shutting down".into());
        for _ in 0..5 {
            assert_eq!(
                error_policy(node(), &waiting, ctx.clone()),
                Requeue::requeue(ctx.settings.converging)
            );
        }
    }
}
