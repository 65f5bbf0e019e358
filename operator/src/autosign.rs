//! `puppet-conductor autosign <certname>` (CSR PEM on stdin): puppetserver's policy-based
//! autosign executable for masters in `signing.mode: Policy`.
//!
//! Decides from the S3 record alone (the controller may be far away): the CSR's challenge
//! must hash to the record's `challengeSha256`, its `pp_instance_id` must be the instance
//! the record names, and every other check of [`crate::ca::csr_check::verify`] must pass.
//! Fails closed: any error or timeout is a refusal (exit 1), and puppetserver leaves the
//! CSR waiting.

use crate::ca::csr_check::{parse_csr, verify, Expected, Refusal, Verdict};
use crate::identity::{challenge_sha256, constant_time_eq};
use crate::records::{Records, RecordsError};

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

/// Decides whether puppetserver may sign `csr_pem` for `certname`.
pub async fn decide(
    records: &dyn Records,
    certname: &str,
    csr_pem: &str,
    allow_dns_alt_names: bool,
) -> Result<Decision, AutosignError> {
    let Some(record) = records.get(certname).await? else {
        return Ok(Decision::Refuse(format!(
            "{}: no record for {certname}",
            Refusal::UnknownCertname.reason()
        )));
    };
    let Some(instance_id) = record.instance_id.as_deref() else {
        return Ok(Decision::Refuse(format!(
            "no instance recorded yet for {certname}"
        )));
    };
    let claims = match parse_csr(csr_pem) {
        Ok(c) => c,
        Err(e) => return Ok(Decision::Refuse(format!("unreadable CSR: {e}"))),
    };
    // The record keeps only a hash: a CSR whose challenge hashes to it holds the challenge.
    let Some(claimed) = claims.challenge.clone() else {
        return Ok(Decision::Refuse(Refusal::MissingChallenge.message()));
    };
    if !constant_time_eq(&challenge_sha256(&claimed), &record.challenge_sha256) {
        return Ok(Decision::Refuse(Refusal::WrongChallenge.message()));
    }
    let expected = Expected {
        certname,
        challenge: &claimed,
        instance_id,
        allow_dns_alt_names,
    };
    Ok(match verify(&claims, &expected) {
        Verdict::Sign => Decision::Sign,
        Verdict::Refuse(r) => Decision::Refuse(format!("{}: {}", r.reason(), r.message())),
    })
}
