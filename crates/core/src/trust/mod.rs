//! Whether a waiting CSR may be signed: the rules of DESIGN.md "Identity and trust" as one
//! pure decision, taken by the controller in `Operator` mode and by `autosign` in `Policy`
//! mode from the same facts.
//!
//! A CSR is signed only when its certname belongs to the node's current, live incarnation
//! (the record says so, the node is not being deleted), the challenge and instance id
//! match, no other node claims the certname, the CSR passes [`crate::csr::verify`], and no
//! other key was ever signed for the incarnation. The last rule is kept by the signature
//! record ([`crate::record::SignatureRecord`]): it is claimed, create-once, for the
//! CSR's key *before* the CA signs, and [`after_claim`] refuses when the claim found
//! names another key. Pure: the callers read the record, the signature record and the
//! CSR, and do the signing.

mod refusal;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};

pub use refusal::Refusal;

use crate::csr::{verify, CsrClaims, Expected, Verdict};
use crate::identity::{challenge_sha256, constant_time_eq};
use crate::record::{Claim, NodeRecord, RecordState, SignatureRecord, Signer};

/// What the signer knows when a CSR waits for `certname`.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The certname of the waiting CSR.
    pub certname: &'a str,
    /// The node's record for that certname (`None`: there is none).
    pub record: Option<&'a NodeRecord>,
    /// The signature record of that certname, if any.
    pub signature: Option<&'a SignatureRecord>,
    /// What the controller knows of the PuppetNode itself; `None` for `autosign`, which
    /// sees only the records.
    pub node: Option<NodeFacts<'a>>,
    /// Another node claiming the certname (its `namespace/name`), as far as the signer
    /// can see.
    pub conflict: Option<&'a str>,
    /// Whether DNS alt names may be signed (the master's `signing.allowDnsAltNames`).
    pub allow_dns_alt_names: bool,
}

/// The controller's view of the PuppetNode the certname belongs to.
#[derive(Clone, Copy, Debug)]
pub struct NodeFacts<'a> {
    /// The node's UID.
    pub uid: &'a str,
    /// Its current incarnation (the plan's).
    pub incarnation: i64,
    /// The instance running for that incarnation.
    pub instance_id: &'a str,
    /// The incarnation's challenge, derived from the master's key.
    pub challenge: &'a str,
    /// The node has a deletionTimestamp.
    pub deleting: bool,
}

/// The decision on one CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every rule holds: claim the signature for the CSR's key, then sign.
    Sign,
    /// Do not sign, and say why.
    Refuse(Refusal),
}

/// Decides whether the CSR described by `claims` may be signed.
pub fn decide(facts: &Facts<'_>, claims: &CsrClaims) -> Decision {
    match check(facts, claims) {
        Ok(()) => Decision::Sign,
        Err(refusal) => Decision::Refuse(refusal),
    }
}

fn check(facts: &Facts<'_>, claims: &CsrClaims) -> Result<(), Refusal> {
    let Some(record) = facts.record else {
        return Err(Refusal::NoRecord);
    };
    let owner = &record.owner;
    if let Some(node) = &facts.node {
        if owner.node_uid != node.uid {
            return Err(Refusal::CertnameConflict(owner.node.clone()));
        }
    }
    if let Some(other) = facts.conflict {
        return Err(Refusal::CertnameConflict(other.to_owned()));
    }
    if facts.node.is_some_and(|n| n.deleting) || record.state == RecordState::Deleting {
        return Err(Refusal::NodeDeleting);
    }
    if record.state == RecordState::Fencing {
        return Err(Refusal::IncarnationFencing(owner.incarnation));
    }
    if let Some(node) = &facts.node {
        if owner.incarnation != node.incarnation {
            return Err(Refusal::NotCurrentIncarnation {
                record: owner.incarnation,
                current: node.incarnation,
            });
        }
    }
    let Some(instance_id) = record.instance_id.as_deref() else {
        return Err(Refusal::NoInstance);
    };
    if let Some(node) = &facts.node {
        if node.instance_id != instance_id {
            return Err(Refusal::NoInstance);
        }
    }
    // The record keeps only the challenge's hash: a CSR whose challenge hashes to it holds
    // the challenge. The controller also knows the challenge itself and compares that.
    let claimed = claims.challenge.as_deref().unwrap_or_default();
    if claims.challenge.is_some()
        && !constant_time_eq(&challenge_sha256(claimed), &record.challenge_sha256)
    {
        return Err(Refusal::Csr(crate::csr::Refusal::WrongChallenge));
    }
    let expected = Expected {
        certname: facts.certname,
        challenge: facts.node.map_or(claimed, |n| n.challenge),
        instance_id,
        allow_dns_alt_names: facts.allow_dns_alt_names,
    };
    if let Verdict::Refuse(refusal) = verify(claims, &expected) {
        return Err(Refusal::Csr(refusal));
    }
    match facts.signature {
        None => Ok(()),
        Some(signature) => signature_allows(
            signature,
            &record.owner.node_uid,
            record.owner.incarnation,
            &claims.public_key_sha256,
            Some(instance_id),
        ),
    }
}

/// A signature record allows signing only the key it was claimed for, only for its own
/// node and incarnation, and only until the CA's certificate was confirmed.
fn signature_allows(
    signature: &SignatureRecord,
    node_uid: &str,
    incarnation: i64,
    public_key_sha256: &str,
    instance_id: Option<&str>,
) -> Result<(), Refusal> {
    if !signature.is_for(node_uid, incarnation) {
        return Err(Refusal::StaleSignature(signature.incarnation));
    }
    if signature.public_key_sha256 != public_key_sha256 {
        // A claim the operator never asked the CA about, made for an instance the
        // incarnation no longer runs as (every trace of its launch was lost and it was
        // launched again): nothing was signed for it and no replay of the current
        // instance's CSR can match it, so it gives way (simulation seed 218482). For the
        // instance it names, the first key claimed stays the only one.
        let superseded = signature.signer == Signer::Operator
            && !signature.sign_requested
            && !signature.is_confirmed()
            && signature.instance_id.is_some()
            && instance_id.is_some()
            && signature.instance_id.as_deref() != instance_id;
        if superseded {
            return Ok(());
        }
        return Err(Refusal::OtherKeySigned);
    }
    // Confirmed, or asked for with the answer unknown: the challenge is spent.
    if signature.is_confirmed() || signature.sign_requested {
        return Err(Refusal::AlreadySigned {
            serial: signature.serial.clone(),
        });
    }
    Ok(())
}

/// The signature record to claim for a CSR that [`decide`] allowed.
pub fn claim_for(
    record: &NodeRecord,
    claims: &CsrClaims,
    signer: Signer,
    now: DateTime<Utc>,
) -> SignatureRecord {
    SignatureRecord {
        certname: record.certname.clone(),
        node_uid: record.owner.node_uid.clone(),
        incarnation: record.owner.incarnation,
        public_key_sha256: claims.public_key_sha256.clone(),
        claimed_at: now,
        signer,
        serial: None,
        fingerprint: None,
        // puppetserver signs as soon as autosign says yes: the claim is the request.
        sign_requested: signer == Signer::Autosign,
        instance_id: record.instance_id.clone(),
    }
}

/// Whether signing may go on after claiming `ours`: a claim created now, or an existing
/// one for the same key that was never confirmed (a signer that stopped half way).
pub fn after_claim(claim: &Claim, ours: &SignatureRecord) -> Result<(), Refusal> {
    match claim {
        Claim::Created => Ok(()),
        Claim::Existing(existing) => signature_allows(
            existing,
            &ours.node_uid,
            ours.incarnation,
            &ours.public_key_sha256,
            ours.instance_id.as_deref(),
        ),
    }
}
