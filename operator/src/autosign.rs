//! `puppet-conductor autosign <certname>` (CSR PEM on stdin): puppetserver's policy-based
//! autosign executable for masters in `signing.mode: Policy`.
//!
//! Decides from the S3 records alone (the controller may be far away): the record must be
//! the incarnation's live one (not fencing, not deleting), the CSR's challenge must hash to
//! its `challengeSha256`, its `pp_instance_id` must be the instance it names, every other
//! check of [`crate::csr::check::verify`] must pass, and no other key may have been
//! signed for the incarnation (the signature record). Fails closed: any error or timeout
//! is a refusal (exit 1), and puppetserver leaves the CSR waiting (the controller then
//! removes a refused one).

use chrono::Utc;

use crate::csr::check::parse_csr;
use crate::records::{Records, RecordsError, Signer};
use crate::trust::{after_claim, claim_for, decide as decide_trust, Facts, Refusal};

/// Why the autosign executable could not decide.
#[derive(thiserror::Error, Debug)]
pub enum AutosignError {
    /// The records store failed.
    #[error("reading the node record")]
    Records(#[from] RecordsError),
}

/// The decision on one CSR.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Sign (exit 0).
    Sign,
    /// Leave unsigned (exit 1), with the reason printed for puppetserver's log.
    Refuse(String),
}

/// Decides whether puppetserver may sign `csr_pem` for `certname`, from the record and the
/// signature record, by the same rules as the controller ([`crate::trust::decide`]). A
/// CSR it allows is claimed first (the signature record, create-once): of two racing
/// submissions only one key is ever signed for an incarnation.
pub async fn decide(
    records: &dyn Records,
    certname: &str,
    csr_pem: &str,
    allow_dns_alt_names: bool,
) -> Result<Decision, AutosignError> {
    let refuse = |r: Refusal| Ok(Decision::Refuse(r.to_string()));
    let claims = match parse_csr(csr_pem) {
        Ok(c) => c,
        Err(e) => {
            return refuse(Refusal::Csr(crate::csr::Refusal::NotParsable(
                e.to_string(),
            )))
        }
    };
    let Some(record) = records.get(certname).await? else {
        return refuse(Refusal::NoRecord);
    };
    let signature = records.get_signature(certname).await?;
    let facts = Facts {
        certname,
        record: Some(&record),
        signature: signature.as_ref(),
        node: None,
        conflict: None,
        allow_dns_alt_names,
    };
    if let crate::trust::Decision::Refuse(r) = decide_trust(&facts, &claims) {
        return refuse(r);
    }
    let ours = claim_for(&record, &claims, Signer::Autosign, Utc::now());
    let claim = records.claim_signature(&ours).await?;
    if let Err(r) = after_claim(&claim, &ours) {
        return refuse(r);
    }
    Ok(Decision::Sign)
}
