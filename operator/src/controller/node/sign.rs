//! Operator-mode signing: a waiting CSR is signed only when it proves it comes from the
//! instance launched for the node's current incarnation (DESIGN.md, "Identity and trust").

use chrono::Utc;
use kube::Resource;

use super::act::Acting;
use super::desired::Pass;
use crate::api::master::SigningMode;
use crate::ca::{CaError, CertState};
use crate::certificate::pem_public_key_sha256;
use crate::controller::error::{chain, ReconcileError};
use crate::csr::parse_csr;
use crate::records::{SignatureRecord, Signer};
use crate::trust::{after_claim, claim_for, decide, Decision, Facts, NodeFacts, Refusal};

/// What happened to the node's CSR in this pass.
#[derive(Debug, PartialEq, Eq)]
pub enum SigningOutcome {
    /// Nothing to do (no CSR, or Policy mode with a CSR autosign left waiting).
    Idle,
    /// The CSR was verified and signed.
    Signed,
    /// The CSR was refused (a Warning event says why) and removed when it was ours.
    Refused(&'static str),
}

/// Verifies the current incarnation's waiting CSR and, in Operator mode, signs it; in both
/// modes a refused CSR is reported, logged and removed from the CA (rate-bounded), so the
/// real agent's next submission is not blocked.
pub async fn police_waiting_csr(
    acting: &Acting<'_>,
    incarnation: i64,
    instance_id: &str,
) -> Result<SigningOutcome, ReconcileError> {
    let Pass {
        node,
        master,
        services,
        id,
        snapshot,
        ..
    } = acting.pass;
    // Paused: neither signed nor removed; the CSR waits for the pause to end.
    if acting.pass.held() {
        return Ok(SigningOutcome::Idle);
    }
    let certname = id.certname(node, incarnation);
    // The listing may be a few seconds old: read the CSR as it is now.
    let Some(pem) = services.ca.csr_pem(&certname).await? else {
        return Ok(SigningOutcome::Idle);
    };
    let claims = match parse_csr(&pem) {
        Ok(claims) => claims,
        Err(e) => {
            let refusal = Refusal::Csr(crate::csr::Refusal::NotParsable(e.to_string()));
            return refuse(acting, &certname, &refusal, "unparsable CSR").await;
        }
    };
    let record = services.records.get(&certname).await?;
    let signature = if snapshot.records.signatures.contains(&certname) || record.is_some() {
        services.records.get_signature(&certname).await?
    } else {
        None
    };
    let challenge = services.challenge_key.challenge(&id.uid, incarnation);
    let facts = Facts {
        certname: &certname,
        record: record.as_ref(),
        signature: signature.as_ref(),
        node: Some(NodeFacts {
            uid: &id.uid,
            incarnation,
            instance_id,
            challenge: &challenge,
            deleting: node.meta().deletion_timestamp.is_some(),
        }),
        conflict: acting.conflict.as_deref(),
        allow_dns_alt_names: master.spec.signing.allow_dns_alt_names,
    };
    let describe = format!("{} key {}", claims.key, short(&claims.public_key_sha256));
    let record = match (decide(&facts, &claims), record) {
        (Decision::Refuse(refusal), _) => {
            return refuse(acting, &certname, &refusal, &describe).await
        }
        // autosign decided at submission in Policy mode and left this CSR waiting, though
        // the rules allow it now (the record was not complete yet: written late, or lost
        // and rewritten). puppetserver never runs autosign again for a waiting CSR, so it
        // is removed: the agent's next submission is decided afresh.
        (Decision::Sign, _) if master.spec.signing.mode != SigningMode::Operator => {
            return resubmit(acting, &certname, &describe).await
        }
        _ if master.spec.signing.mode != SigningMode::Operator => return Ok(SigningOutcome::Idle),
        (Decision::Sign, Some(record)) => record,
        (Decision::Sign, None) => return Ok(SigningOutcome::Idle),
    };
    // The incarnation's one signature is claimed for this key before the CA signs.
    let ours = claim_for(&record, &claims, Signer::Operator, Utc::now());
    let claim = services.records.claim_signature(&ours).await?;
    if let Err(refusal) = after_claim(&claim, &ours) {
        return refuse(acting, &certname, &refusal, &describe).await;
    }
    // The record says the CA was asked before it is: if the answer is lost and the
    // certificate cleaned, the agent's resent CSR is then not signed a second time.
    let asked = SignatureRecord {
        sign_requested: true,
        ..ours.clone()
    };
    services.records.put_signature(&asked).await?;
    if let Err(error) = services.ca.sign(&certname).await {
        // The next pass must see what the CA holds now, not the listing from before.
        acting.ctx.snapshots.invalidate(&id.master_key).await;
        if sign_not_applied(&error) {
            // The CA answered that it did not sign: the claim may be used again.
            if let Err(e) = services.records.put_signature(&ours).await {
                tracing::warn!(certname, error = %chain(&e), "could not clear the sign request");
                acting.ctx.unsigned_claims.remember(ours.clone());
            }
        }
        return Err(error.into());
    }
    match confirm(acting, &ours).await? {
        Some(confirmed) => {
            let note = format!(
                "signed {certname} ({describe}, serial {}): challenge and instance id {instance_id} verified",
                confirmed.serial.as_deref().unwrap_or("unknown")
            );
            tracing::info!(node = %id.key, certname, mode = "Operator", "{note}");
            acting
                .ctx
                .events
                .publish(
                    &node.object_ref(&()),
                    false,
                    "CertificateSigned",
                    "Sign",
                    note,
                )
                .await;
            Ok(SigningOutcome::Signed)
        }
        None => Ok(SigningOutcome::Refused("CertificateKeyMismatch")),
    }
}

/// Whether a failed sign call certainly left the CSR unsigned: the CA answered with an
/// error, or no connection or TLS session was ever made, so no request was written (a
/// timeout or a connection broken mid-request may have signed it). Found by the crash
/// trials: a reset while connecting spent the challenge and cost a replacement.
fn sign_not_applied(error: &CaError) -> bool {
    match error {
        CaError::Status { status, .. } => *status != 409,
        CaError::Connect { source, .. } => source.is_connect(),
        CaError::Tls { .. } => true,
        _ => false,
    }
}

/// Confirms that the CA signed the key `claim` names and records the certificate's serial
/// and fingerprint in the signature record. A certificate for another key (the CSR was
/// replaced between verification and signing) is revoked at once and `None` returned:
/// the incarnation's signature is spent. Both are writes: a held pass (paused) does not
/// call it.
pub async fn confirm(
    acting: &Acting<'_>,
    claim: &SignatureRecord,
) -> Result<Option<SignatureRecord>, ReconcileError> {
    let services = acting.services;
    let certname = &claim.certname;
    let info = services.ca.status(certname).await?;
    let pem = services.ca.certificate_pem(certname).await?;
    let key = pem.as_deref().and_then(pem_public_key_sha256);
    match (info, key) {
        (Some(info), Some(key))
            if info.state == CertState::Signed && key == claim.public_key_sha256 =>
        {
            let confirmed = SignatureRecord {
                serial: info.serial.map(|s| s.to_string()),
                fingerprint: info.fingerprint.clone(),
                ..claim.clone()
            };
            services.records.put_signature(&confirmed).await?;
            Ok(Some(confirmed))
        }
        (Some(info), Some(_)) if info.state == CertState::Signed => {
            services.ca.revoke_and_clean(certname).await?;
            let note = format!(
                "revoked {certname}: the CA signed a key other than the one verified and claimed for incarnation {}",
                claim.incarnation
            );
            tracing::warn!(node = %acting.id.key, certname, "{note}");
            acting
                .ctx
                .events
                .publish(
                    &acting.node.object_ref(&()),
                    true,
                    "CertificateKeyMismatch",
                    "Sign",
                    note,
                )
                .await;
            Ok(None)
        }
        // Not signed (yet): nothing to confirm.
        _ => Ok(None),
    }
}

/// Removes the waiting CSR of `certname` at the master's removal pace; whether it was.
async fn remove_paced(acting: &Acting<'_>, certname: &str) -> Result<bool, ReconcileError> {
    if !acting.ctx.csr_removals.allow(&acting.id.master_key).await
        || !acting.services.ca.remove_request(certname).await?
    {
        return Ok(false);
    }
    acting
        .ctx
        .snapshots
        .revoked(&acting.id.master_key, certname)
        .await;
    Ok(true)
}

/// Policy mode: removes a waiting CSR that autosign refused but the rules allow now
/// (rate-bounded like refusals), so the agent's next submission runs autosign again.
async fn resubmit(
    acting: &Acting<'_>,
    certname: &str,
    describe: &str,
) -> Result<SigningOutcome, ReconcileError> {
    if !remove_paced(acting, certname).await? {
        return Ok(SigningOutcome::Idle);
    }
    let note = format!(
        "the CSR of {certname} ({describe}) was left waiting by autosign and is allowed now: removed, so the agent's next submission is decided again"
    );
    tracing::info!(node = %acting.id.key, certname, mode = "Policy", "{note}");
    acting
        .ctx
        .events
        .publish(
            &acting.node.object_ref(&()),
            false,
            "CSRResubmissionRequested",
            "Sign",
            note,
        )
        .await;
    Ok(SigningOutcome::Idle)
}

/// Reports a refusal (Warning event and log line) and, unless the certname is another
/// node's, removes the refused CSR from the CA at the master's removal pace.
async fn refuse(
    acting: &Acting<'_>,
    certname: &str,
    refusal: &Refusal,
    describe: &str,
) -> Result<SigningOutcome, ReconcileError> {
    let mode = match acting.master.spec.signing.mode {
        SigningMode::Operator => "Operator",
        SigningMode::Policy => "Policy",
    };
    let removed = refusal.removes_csr() && remove_paced(acting, certname).await?;
    let note = format!(
        "not signing {certname} ({describe}): {}{}",
        refusal.message(),
        if removed {
            "; the CSR was removed so the real agent can submit its own"
        } else {
            ""
        }
    );
    tracing::warn!(node = %acting.id.key, certname, reason = refusal.reason(), mode, removed, "{note}");
    acting
        .ctx
        .events
        .publish(
            &acting.node.object_ref(&()),
            true,
            refusal.reason(),
            "Sign",
            note,
        )
        .await;
    Ok(SigningOutcome::Refused(refusal.reason()))
}

/// The first 12 hex digits of a key digest, enough to tell two keys apart in an event.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

#[cfg(test)]
mod sign_applied_tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_sign_that_never_connected_was_not_applied() {
        // A closed loopback port: refused while connecting, nothing was written.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let source = reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{port}/puppet-ca/v1/certificate_status/x"
            ))
            .send()
            .await
            .unwrap_err();
        let error = CaError::transport("sign", Duration::from_secs(1), source);
        assert!(matches!(error, CaError::Connect { .. }), "{error:?}");
        assert!(sign_not_applied(&error));
        let timeout = CaError::Timeout {
            operation: "sign",
            timeout: Duration::from_secs(1),
        };
        assert!(!sign_not_applied(&timeout), "a timeout may have signed");
    }
}
