//! Observe: what the planner needs, from the shared snapshot, status, the record and
//! (only when the listing could not say) the CA.

use std::collections::BTreeSet;

use kube::ResourceExt;

use super::desired::NodeIdentity;
use crate::api::conditions as cond;
use crate::api::master::PuppetMaster;
use crate::api::node::{Phase, PuppetNode};
use crate::ca::CertificateInfo;
use crate::certificate::standing::{Recorded, Standing};
use crate::controller::certname_owners::{normalize_ca_url, Claimant};
use crate::controller::error::ReconcileError;
use crate::controller::services::MasterServices;
use crate::controller::snapshot::{ca_has, Snapshot};
use crate::controller::Context;
use crate::plan::{plan, Observed};
use crate::records::SignatureRecord;
use crate::status::conditions::reason_of;

/// What the planner needs, from the snapshot, status and (only on the launch path) the record.
pub(super) async fn observe(
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
        // A record is written before its launch: after a crash in between it may be the
        // only evidence of the newest incarnation, and the deletion must remove it too
        // (simulation seed 904652 left such a record behind).
        if node.spec.certname.is_none() {
            observed.record_incarnation = newest_listed_incarnation(snapshot, &id.uid);
        }
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

/// The newest incarnation of the node `uid` (derived certnames) whose record or signature
/// record the snapshot's listing shows.
fn newest_listed_incarnation(snapshot: &Snapshot, uid: &str) -> Option<i64> {
    snapshot
        .records
        .records
        .keys()
        .chain(snapshot.records.signatures.iter())
        .filter_map(|certname| {
            let (_, n) = certname.rsplit_once('-')?;
            let n: i64 = n.parse().ok().filter(|n| *n > 0)?;
            (crate::identity::certname(uid, n, None) == *certname).then_some(n)
        })
        .max()
}

/// Whether every instance status or the record names, and no describe shows, has been
/// missing for the visibility grace (remembered per process: a restart waits it again).
pub(super) fn vanish_confirmed(ctx: &Context, observed: &Observed, snapshot: &Snapshot) -> bool {
    let named: BTreeSet<&String> = [&observed.status_instance_id, &observed.record_instance_id]
        .into_iter()
        .flatten()
        .collect();
    let grace = ctx.settings.instance_visibility_grace;
    named.into_iter().fold(true, |all, id| {
        let unconfirmed = match (snapshot.instance(id), snapshot.awaited_since(id)) {
            // Only the operator's own launch says it exists: its absence counts from the
            // launch, so a launch EC2 lost (state loss) is confirmed gone one grace after
            // it, not two (seed 249797260 waited ten minutes).
            (Some(_), Some(launched)) => !ctx.absences.missing_since(id, launched, grace),
            (Some(_), None) => {
                ctx.absences.seen(id);
                false
            }
            (None, _) => !ctx.absences.missing_for(id, grace),
        };
        all && !unconfirmed
    })
}

/// The older node claiming `certname` on this master's CA, if any.
pub(super) async fn certname_conflict(
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

/// What was recorded of the incarnation's signature: from status when it names this
/// incarnation's signed certificate (no read), otherwise from the signature record when
/// the listing shows one or the CA holds a certificate (one read). Status alone, with no
/// signature record listed and nothing at the CA, counts only while its `CertificateSigned`
/// condition says this incarnation was signed (or lost a signed certificate since): the
/// bucket emptied and the certificate cleaned leave status the only witness (soak seed
/// 1310876), while a new incarnation's first status may still carry the last one's
/// certificate fields. Also returns the signature record when it was read. `may_write`
/// false (a paused pass): an unsigned claim the CA refused is read as cleared but not
/// written back, and kept in memory for the first pass after the pause.
#[allow(clippy::too_many_arguments)]
pub(super) async fn recorded_signature(
    ctx: &Context,
    node: &PuppetNode,
    services: &MasterServices,
    snapshot: &Snapshot,
    id: &NodeIdentity,
    incarnation: i64,
    ca_holds_certificate: bool,
    may_write: bool,
) -> Result<(Option<Recorded>, Option<SignatureRecord>), ReconcileError> {
    let certname = id.certname(node, incarnation);
    let status = node
        .status
        .as_ref()
        .filter(|s| s.incarnation == Some(incarnation));
    let from_status = status
        .and_then(|s| s.certificate.as_ref())
        .filter(|c| c.signed_fingerprint.is_some())
        .map(|c| Recorded {
            serial: c.serial.clone(),
            fingerprint: c.signed_fingerprint.clone(),
            public_key_sha256: None,
            spent: false,
        });
    let vouched = status.is_some_and(|s| {
        let reason = reason_of(&s.conditions, cond::CERTIFICATE_SIGNED);
        [Standing::Signed, Standing::Vanished, Standing::Replaced]
            .iter()
            .any(|st| reason == Some(st.reason()))
    });
    // The listing may predate a claim (autosign's, or one written since): when the CA
    // holds a certificate, only status or a read of the signature record tells "not ours".
    let listed = snapshot.records.signatures.contains(&certname);
    let witnessed = vouched && from_status.is_some();
    if !(listed || ca_holds_certificate || witnessed) {
        return Ok((None, None));
    }
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
            if !may_write {
                // Paused: what the CA said is what this pass reports; the clearing write
                // waits for the first pass that may write.
                return Ok((Some(Recorded::from(&unsigned)), Some(unsigned)));
            }
            services.records.put_signature(&unsigned).await?;
            signature = Some(unsigned);
        }
        ctx.unsigned_claims.forget(&certname);
    }
    Ok((signature.as_ref().map(Recorded::from), signature))
}

/// The CA's entry for `certname`: from the master's listing, or, when the listing failed
/// and the node waits for its CSR, from one bounded per-certname read. `None`: unknown.
pub(super) async fn certificate_at_ca(
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
