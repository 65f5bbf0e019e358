//! Where the current incarnation's certificate stands: what the CA shows for the certname
//! against what the operator recorded when it was signed (pure).

use crate::certificate::{CertState, CertificateInfo};

/// What was recorded of the incarnation's one signature.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The CA's serial of the certificate, once confirmed.
    pub serial: Option<String>,
    /// Its SHA-256 fingerprint, once confirmed.
    pub fingerprint: Option<String>,
    /// The key the signature was claimed for (`None` when only status remembered it).
    pub public_key_sha256: Option<String>,
    /// The CA was asked to sign that key, answer unknown: a certificate may have existed.
    pub spent: bool,
}

impl From<&crate::record::SignatureRecord> for Recorded {
    fn from(s: &crate::record::SignatureRecord) -> Self {
        Self {
            serial: s.serial.clone(),
            fingerprint: s.fingerprint.clone(),
            public_key_sha256: Some(s.public_key_sha256.clone()),
            spent: s.sign_requested,
        }
    }
}

/// The certificate's standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The CA could not be observed.
    Unknown,
    /// Nothing at the CA, nothing signed yet.
    NoRequest,
    /// A CSR waits.
    Requested,
    /// The CA holds the certificate the operator recorded.
    Signed,
    /// The CA holds a signed certificate for a claim not confirmed yet: read it and
    /// compare its key with the claim.
    Unconfirmed,
    /// The CA holds a certificate for the certname that was never claimed for this node.
    NotOurs,
    /// The CA holds a certificate for this incarnation's derived certname (UID and
    /// incarnation) that no surviving evidence shows the operator signed: the records were
    /// lost before status confirmed it, or it was signed outside the operator. It is
    /// never used or revoked, and the incarnation is fenced and replaced like a lost one.
    Unproven,
    /// A certificate was signed and recorded, and the CA no longer has it (cleaned by
    /// hand, CA restored from an old backup), or shows a new CSR in its place.
    Vanished,
    /// The CA holds another certificate than the recorded one, or revoked it.
    Replaced,
}

impl Standing {
    /// The `CertificateSigned` condition's reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unknown => "CAUnknown",
            Self::NoRequest => "NoRequest",
            Self::Requested => "Requested",
            Self::Signed => "Signed",
            Self::Unconfirmed => "Unconfirmed",
            Self::NotOurs => "CertificateNotOurs",
            Self::Unproven => "CertificateUnproven",
            Self::Vanished => "CertificateVanished",
            Self::Replaced => "CertificateReplaced",
        }
    }

    /// A signed certificate was lost: the incarnation is fenced and replaced (bounded)
    /// under `replacePolicy: Replace`, only reported under `Never`.
    pub fn is_lost(self) -> bool {
        matches!(self, Self::Vanished | Self::Replaced | Self::Unproven)
    }

    /// For a certname derived from the node's UID and incarnation nobody else can hold a
    /// claim, so a certificate not ours is one whose evidence is gone: it stands in the
    /// way of this incarnation for good. A fixed certname's stays `NotOurs` (an admin's
    /// clean lets the node be signed; replacing would meet the same certificate again).
    pub fn for_derived_certname(self, derived: bool) -> Self {
        match self {
            Self::NotOurs if derived => Self::Unproven,
            other => other,
        }
    }
}

/// The standing from what was recorded and what the CA lists (`None`: CA not observed;
/// `Some(None)`: nothing for the certname).
pub fn standing(recorded: Option<&Recorded>, ca: Option<Option<&CertificateInfo>>) -> Standing {
    let Some(at_ca) = ca else {
        return Standing::Unknown;
    };
    let state = at_ca.map(|c| c.state);
    let Some(recorded) = recorded else {
        return match state {
            None => Standing::NoRequest,
            Some(CertState::Requested) => Standing::Requested,
            Some(CertState::Signed | CertState::Revoked) => Standing::NotOurs,
        };
    };
    match (&recorded.fingerprint, state) {
        // Asked for and not on the CA now: signed and cleaned since, or never signed;
        // either way the challenge is spent and never used again.
        (None, None | Some(CertState::Requested)) if recorded.spent => Standing::Vanished,
        (None, None) => Standing::NoRequest,
        (None, Some(CertState::Requested)) => Standing::Requested,
        (None, Some(CertState::Signed)) => Standing::Unconfirmed,
        (None, Some(CertState::Revoked)) => Standing::Replaced,
        (Some(_), None | Some(CertState::Requested)) => Standing::Vanished,
        (Some(_), Some(CertState::Revoked)) => Standing::Replaced,
        (Some(fp), Some(CertState::Signed)) => {
            if at_ca.and_then(|c| c.fingerprint.as_ref()) == Some(fp) {
                Standing::Signed
            } else {
                Standing::Replaced
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ca(state: CertState, fingerprint: &str) -> CertificateInfo {
        CertificateInfo {
            name: "c-1".into(),
            state,
            fingerprint: Some(fingerprint.into()),
            dns_alt_names: Vec::new(),
            subject_alt_names: Vec::new(),
            authorization_extensions: Default::default(),
            not_before: None,
            not_after: None,
            serial: None,
        }
    }

    #[test]
    fn a_signature_asked_for_but_not_on_the_ca_is_lost() {
        let asked = Recorded {
            public_key_sha256: Some("k".into()),
            spent: true,
            ..Default::default()
        };
        assert_eq!(standing(Some(&asked), Some(None)), Standing::Vanished);
        let waiting = at_ca(CertState::Requested, "CSR");
        assert_eq!(
            standing(Some(&asked), Some(Some(&waiting))),
            Standing::Vanished
        );
        let signed = at_ca(CertState::Signed, "AA");
        assert_eq!(
            standing(Some(&asked), Some(Some(&signed))),
            Standing::Unconfirmed
        );
        assert_eq!(standing(Some(&asked), None), Standing::Unknown);
    }

    #[test]
    fn standing_compares_the_ca_with_the_recorded_signature() {
        let confirmed = Recorded {
            serial: Some("7".into()),
            fingerprint: Some("AA".into()),
            public_key_sha256: None,
            spent: false,
        };
        let claimed = Recorded {
            public_key_sha256: Some("k".into()),
            ..Default::default()
        };
        let signed_aa = at_ca(CertState::Signed, "AA");
        let signed_bb = at_ca(CertState::Signed, "BB");
        let requested = at_ca(CertState::Requested, "CC");
        let revoked = at_ca(CertState::Revoked, "AA");
        let cases = [
            (None, None, Standing::Unknown),
            (None, Some(None), Standing::NoRequest),
            (None, Some(Some(&requested)), Standing::Requested),
            (None, Some(Some(&signed_aa)), Standing::NotOurs),
            (
                Some(&claimed),
                Some(Some(&signed_aa)),
                Standing::Unconfirmed,
            ),
            (Some(&claimed), Some(Some(&requested)), Standing::Requested),
            (Some(&confirmed), Some(Some(&signed_aa)), Standing::Signed),
            (Some(&confirmed), Some(Some(&signed_bb)), Standing::Replaced),
            (Some(&confirmed), Some(Some(&revoked)), Standing::Replaced),
            (Some(&confirmed), Some(None), Standing::Vanished),
            (Some(&confirmed), Some(Some(&requested)), Standing::Vanished),
            (Some(&confirmed), None, Standing::Unknown),
        ];
        for (recorded, ca, expected) in cases {
            assert_eq!(standing(recorded, ca), expected, "{recorded:?} {ca:?}");
        }
        assert!(Standing::Vanished.is_lost() && Standing::Replaced.is_lost());
        assert!(!Standing::NotOurs.is_lost(), "not ours is never fenced for");
    }

    #[test]
    fn a_certificate_not_ours_under_a_derived_certname_is_unproven_and_lost() {
        let unproven = Standing::NotOurs.for_derived_certname(true);
        assert_eq!(unproven, Standing::Unproven);
        assert!(unproven.is_lost());
        assert_eq!(
            Standing::NotOurs.for_derived_certname(false),
            Standing::NotOurs,
            "a fixed certname's foreign certificate is only reported"
        );
        for other in [Standing::Signed, Standing::Requested, Standing::Unknown] {
            assert_eq!(other.for_derived_certname(true), other);
        }
    }
}
