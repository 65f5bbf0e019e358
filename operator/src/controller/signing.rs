//! Operator-mode signing: a waiting CSR is signed only when it proves it comes from the
//! instance launched for the node's current incarnation (DESIGN.md, "Identity and trust").

use std::time::Duration;

use kube::Resource;

use super::error::ReconcileError;
use super::node_actions::Acting;
use crate::api::master::SigningMode;
use crate::ca::csr_check::{parse_csr, verify, Expected, Verdict};
use crate::ca::CertState;

/// What happened to the node's CSR in this pass.
#[derive(Debug, PartialEq, Eq)]
pub enum SigningOutcome {
    /// Nothing to do (no CSR, already signed, Policy mode, no running instance).
    Idle,
    /// The CSR was verified and signed.
    Signed,
    /// The CSR was refused (a Warning event says why); it stays unsigned.
    Refused(&'static str),
}

/// Parses a Go-style duration (`10s`, `1m30s`, `500ms`) as used in the CRD.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return None;
        };
        total = total.checked_add(unit.checked_mul(u32::try_from(value).ok()?)?)?;
        rest = &rest[len..];
    }
    Some(total)
}

/// Verifies and signs the current incarnation's waiting CSR (Operator mode only).
pub async fn sign_if_verified(
    acting: &Acting<'_>,
    incarnation: i64,
    instance_id: Option<&str>,
) -> Result<SigningOutcome, ReconcileError> {
    let Acting {
        ctx,
        node,
        master,
        services,
        id,
        snapshot,
        ..
    } = *acting;
    if master.spec.signing.mode != SigningMode::Operator {
        return Ok(SigningOutcome::Idle);
    }
    let Some(instance_id) = instance_id else {
        return Ok(SigningOutcome::Idle);
    };
    let certname = id.certname(node, incarnation);
    let waiting = snapshot
        .certificates
        .as_ref()
        .and_then(|c| c.get(&certname))
        .is_some_and(|c| c.state == CertState::Requested);
    if !waiting {
        return Ok(SigningOutcome::Idle);
    }
    // The listing may be a few seconds old: read the CSR as it is now.
    let Some(pem) = services.ca.csr_pem(&certname).await? else {
        return Ok(SigningOutcome::Idle);
    };
    let challenge = services.challenge_key.challenge(&id.uid, incarnation);
    let expected = Expected {
        certname: &certname,
        challenge: &challenge,
        instance_id,
        allow_dns_alt_names: master.spec.signing.allow_dns_alt_names,
    };
    let verdict = match parse_csr(&pem) {
        Ok(claims) => verify(&claims, &expected),
        Err(e) => Verdict::Refuse(crate::ca::csr_check::Refusal::NotParsable(e.to_string())),
    };
    let obj = node.object_ref(&());
    match verdict {
        Verdict::Sign => {
            services.ca.sign(&certname).await?;
            ctx.events
                .publish(
                    &obj,
                    false,
                    "CertificateSigned",
                    "Sign",
                    format!("signed {certname}: challenge and instance id {instance_id} verified"),
                )
                .await;
            Ok(SigningOutcome::Signed)
        }
        Verdict::Refuse(refusal) => {
            ctx.events
                .publish(
                    &obj,
                    true,
                    refusal.reason(),
                    "Sign",
                    format!("not signing {certname}: {}", refusal.message()),
                )
                .await;
            Ok(SigningOutcome::Refused(refusal.reason()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5d"), None);
    }
}
