//! The signature record: which key an incarnation's one signature went to.
//!
//! Stored beside the node record as `<prefix>signatures/<certname>.json` and created
//! with `If-None-Match: *`, so of two signers racing (the controller and `autosign`, or
//! two submissions) exactly one claims the incarnation. It is written *before* the CA is
//! asked to sign, so a crash between the two cannot lose it, and completed with the
//! certificate's serial and fingerprint once the CA signed. It is removed only with the
//! incarnation's record (fencing complete, or the node deleted).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who claimed the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signer {
    /// The controller, in `signing.mode: Operator`.
    Operator,
    /// The `autosign` executable, in `signing.mode: Policy`.
    Autosign,
}

/// One incarnation's signature: claimed for one public key, then completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureRecord {
    /// The certname.
    pub certname: String,
    /// The PuppetNode's UID.
    pub node_uid: String,
    /// The incarnation the signature belongs to.
    pub incarnation: i64,
    /// hex SHA-256 of the DER SubjectPublicKeyInfo of the one key that may be signed.
    pub public_key_sha256: String,
    /// When the claim was made.
    pub claimed_at: DateTime<Utc>,
    /// Who made it.
    pub signer: Signer,
    /// Serial of the certificate the CA issued, once confirmed (decimal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// SHA-256 fingerprint (`AA:BB:..`) of that certificate, once confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The CA was asked to sign this key (autosign: allowed it to), so a certificate may
    /// exist even before serial and fingerprint are recorded: never sign it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sign_requested: bool,
    /// The instance the claimed CSR was verified against (its `pp_instance_id`); absent
    /// in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

impl SignatureRecord {
    /// Whether the signature belongs to this node's incarnation.
    pub fn is_for(&self, node_uid: &str, incarnation: i64) -> bool {
        self.node_uid == node_uid && self.incarnation == incarnation
    }

    /// Whether the CA's certificate was confirmed and recorded.
    pub fn is_confirmed(&self) -> bool {
        self.fingerprint.is_some()
    }
}

/// What claiming a signature found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The claim was created now: this key is the incarnation's one signature.
    Created,
    /// A claim already existed (maybe for another key).
    Existing(SignatureRecord),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_omits_unconfirmed_fields() {
        let claim = SignatureRecord {
            certname: "uid-1".into(),
            node_uid: "uid".into(),
            incarnation: 1,
            public_key_sha256: "ab".repeat(32),
            claimed_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            signer: Signer::Autosign,
            serial: None,
            fingerprint: None,
            sign_requested: false,
            instance_id: None,
        };
        let text = serde_json::to_string(&claim).unwrap();
        assert!(
            !text.contains("serial") && !text.contains("fingerprint"),
            "{text}"
        );
        assert!(text.contains("\"publicKeySha256\"") && text.contains("\"Autosign\""));
        let back: SignatureRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, claim);
        assert!(claim.is_for("uid", 1) && !claim.is_for("uid", 2) && !claim.is_for("x", 1));
        assert!(!claim.is_confirmed());
    }
}
