//! Whether the operator may sign a waiting CSR (DESIGN.md, "Identity and trust").
//!
//! [`verify`] is pure: the caller reads the CSR from the CA ([`parse_csr`]) and
//! knows, from the live PuppetNode, its current incarnation and the instance
//! launched for it, what to [`Expected`]. A CSR is signed only when
//! - its key is RSA of at least 2048 bits, EC P-256/P-384 or Ed25519, and its
//!   self-signature verifies;
//! - its subject CN is the certname;
//! - its `challengePassword` is the incarnation's challenge (compared in
//!   constant time);
//! - it requests `pp_instance_id` equal to the instance launched for it;
//! - it requests no authorization extension (`1.3.6.1.4.1.34380.1.3.*`), ever;
//! - its subjectAltName is absent or only `DNS:<certname>` (Puppet agents that
//!   ask for alt names always list that one too), unless DNS alt names are
//!   allowed, which admits DNS and IP names; other kinds are always refused.
//!
//! Everything else is a [`Refusal`] with an event reason and a message that
//! never contains a challenge. A CSR that cannot be parsed is refused too.

use std::fmt;

use crate::identity::constant_time_eq;

pub use super::parse::{
    parse_csr, parse_csr_der, CsrClaims, CsrError, KeyAlgorithm, KeyInfo, OID_CURVE_P256,
    OID_CURVE_P384, OID_PP_AUTHORIZATION_ARC,
};

/// Smallest RSA modulus signed, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Longest piece of CSR-supplied text quoted in a message, in characters.
const MAX_QUOTED_CHARS: usize = 80;
/// Longest parse error kept in a message, in characters.
const MAX_ERROR_CHARS: usize = 240;
/// Most list entries quoted in a message.
const MAX_QUOTED_ENTRIES: usize = 5;

/// What the operator expects of the CSR for one certname: the live PuppetNode's
/// certname, its current incarnation's challenge and the instance launched for it.
///
/// `Debug` redacts the challenge.
#[derive(Clone, Copy)]
pub struct Expected<'a> {
    /// The certname (the CSR's subject CN).
    pub certname: &'a str,
    /// The incarnation's one-time challenge (`ChallengeKey::challenge`).
    pub challenge: &'a str,
    /// The id of the instance launched for this incarnation.
    pub instance_id: &'a str,
    /// Whether DNS (and IP) alt names beyond `DNS:<certname>` may be signed.
    pub allow_dns_alt_names: bool,
}

impl fmt::Debug for Expected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expected")
            .field("certname", &self.certname)
            .field("challenge", &"<redacted>")
            .field("instance_id", &self.instance_id)
            .field("allow_dns_alt_names", &self.allow_dns_alt_names)
            .finish()
    }
}

/// The decision on one CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every check passed: sign it.
    Sign,
    /// Leave it unsigned, and say why.
    Refuse(Refusal),
}

/// Why a CSR is not signed. Only the first failing check is reported, in the
/// order: key, signature, certname, challenge, instance id, authorization
/// extensions, alt names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The PEM or DER could not be read (the parse error).
    NotParsable(String),
    /// The subject CN is not the certname.
    CertnameMismatch {
        /// The CSR's subject CN, if it has one.
        requested: Option<String>,
        /// The certname.
        expected: String,
    },
    /// No `challengePassword` attribute.
    MissingChallenge,
    /// The `challengePassword` is not the current incarnation's challenge.
    WrongChallenge,
    /// No `pp_instance_id` extension requested.
    MissingInstanceId,
    /// `pp_instance_id` names another instance.
    WrongInstanceId {
        /// What the CSR asks for.
        requested: String,
        /// The instance launched for the node.
        expected: String,
    },
    /// Subject alternative names other than `DNS:<certname>`: DNS and IP names
    /// while they are not allowed, any other kind always.
    DnsAltNamesNotAllowed(Vec<String>),
    /// Puppet authorization extensions requested (their OIDs); never signed.
    AuthorizationExtensions(Vec<String>),
    /// The key is too weak or of an unsupported kind (what is wrong with it).
    WeakKey(String),
    /// The self-signature does not verify (tampered, or an unsupported
    /// signature algorithm).
    BadSignature,
    /// No live PuppetNode has this certname (decided by the caller; [`verify`]
    /// never returns it).
    UnknownCertname,
}

impl Refusal {
    /// The event reason (PascalCase, stable).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotParsable(_) => "CSRNotParsable",
            Self::CertnameMismatch { .. } => "CSRCertnameMismatch",
            Self::MissingChallenge => "CSRMissingChallenge",
            Self::WrongChallenge => "CSRWrongChallenge",
            Self::MissingInstanceId => "CSRMissingInstanceId",
            Self::WrongInstanceId { .. } => "CSRWrongInstanceId",
            Self::DnsAltNamesNotAllowed(_) => "CSRDnsAltNamesNotAllowed",
            Self::AuthorizationExtensions(_) => "CSRAuthorizationExtensions",
            Self::WeakKey(_) => "CSRWeakKey",
            Self::BadSignature => "CSRBadSignature",
            Self::UnknownCertname => "CSRUnknownCertname",
        }
    }

    /// Human text for the event. Never contains a challenge; text taken from
    /// the CSR is quoted, escaped and shortened.
    pub fn message(&self) -> String {
        match self {
            Self::NotParsable(error) => {
                format!(
                    "the CSR cannot be parsed: {}",
                    shorten(&error.escape_debug().to_string(), MAX_ERROR_CHARS)
                )
            }
            Self::CertnameMismatch {
                requested: Some(cn),
                expected,
            } => format!(
                "its subject CN {} is not the certname {}",
                quote(cn),
                quote(expected)
            ),
            Self::CertnameMismatch {
                requested: None,
                expected,
            } => format!("it has no subject CN; expected the certname {}", quote(expected)),
            Self::MissingChallenge => "it carries no challengePassword attribute".to_owned(),
            Self::WrongChallenge => {
                "its challengePassword is not the challenge of the node's current incarnation"
                    .to_owned()
            }
            Self::MissingInstanceId => "it does not request the pp_instance_id extension".to_owned(),
            Self::WrongInstanceId {
                requested,
                expected,
            } => format!(
                "it requests pp_instance_id {}, but the instance launched for the node is {}",
                quote(requested),
                quote(expected)
            ),
            Self::DnsAltNamesNotAllowed(names) => format!(
                "it requests subject alternative names that are not allowed: {}",
                quote_list(names)
            ),
            Self::AuthorizationExtensions(oids) => format!(
                "it requests Puppet authorization extensions, which are never signed: {}",
                quote_list(oids)
            ),
            Self::WeakKey(what) => format!("its key is not accepted: {what}"),
            Self::BadSignature => {
                "its self-signature does not verify (tampered, or an unsupported signature algorithm)"
                    .to_owned()
            }
            Self::UnknownCertname => "no live PuppetNode has this certname".to_owned(),
        }
    }
}

/// Decide whether the CSR described by `claims` may be signed for `expected`.
pub fn verify(claims: &CsrClaims, expected: &Expected<'_>) -> Verdict {
    match check(claims, expected) {
        Ok(()) => Verdict::Sign,
        Err(refusal) => Verdict::Refuse(refusal),
    }
}

fn check(claims: &CsrClaims, expected: &Expected<'_>) -> Result<(), Refusal> {
    // Ring refuses RSA keys under 2048 bits, so the key goes before the signature
    // to give the more useful reason.
    if let Some(weakness) = key_weakness(&claims.key) {
        return Err(Refusal::WeakKey(weakness));
    }
    if !claims.signature_valid {
        return Err(Refusal::BadSignature);
    }

    if expected.certname.is_empty() || claims.subject_cn.as_deref() != Some(expected.certname) {
        return Err(Refusal::CertnameMismatch {
            requested: claims.subject_cn.clone(),
            expected: expected.certname.to_owned(),
        });
    }

    let Some(challenge) = claims.challenge.as_deref() else {
        return Err(Refusal::MissingChallenge);
    };
    // An empty expected challenge would match an empty attribute: never sign on it.
    if expected.challenge.is_empty() || !constant_time_eq(challenge, expected.challenge) {
        return Err(Refusal::WrongChallenge);
    }

    let Some(instance_id) = claims.pp_instance_id.as_deref() else {
        return Err(Refusal::MissingInstanceId);
    };
    if expected.instance_id.is_empty() || instance_id != expected.instance_id {
        return Err(Refusal::WrongInstanceId {
            requested: instance_id.to_owned(),
            expected: expected.instance_id.to_owned(),
        });
    }

    if !claims.authorization_extensions.is_empty() {
        return Err(Refusal::AuthorizationExtensions(
            claims.authorization_extensions.clone(),
        ));
    }

    let refused_alt_names = refused_alt_names(claims, expected);
    if !refused_alt_names.is_empty() {
        return Err(Refusal::DnsAltNamesNotAllowed(refused_alt_names));
    }
    Ok(())
}

/// The subjectAltName entries that block signing, as `KIND:value`.
fn refused_alt_names(claims: &CsrClaims, expected: &Expected<'_>) -> Vec<String> {
    let mut refused: Vec<String> = Vec::new();
    if !expected.allow_dns_alt_names {
        refused.extend(
            claims
                .dns_alt_names
                .iter()
                .filter(|name| name.as_str() != expected.certname)
                .map(|name| format!("DNS:{name}")),
        );
    }
    refused.extend(
        claims
            .other_alt_names
            .iter()
            .filter(|name| !(expected.allow_dns_alt_names && name.starts_with("IP:")))
            .cloned(),
    );
    refused
}

/// What is wrong with the key, if anything.
fn key_weakness(key: &KeyInfo) -> Option<String> {
    match &key.algorithm {
        KeyAlgorithm::Rsa if key.bits >= MIN_RSA_BITS => None,
        KeyAlgorithm::Rsa => Some(format!(
            "RSA key of {} bits; at least {MIN_RSA_BITS} are required",
            key.bits
        )),
        KeyAlgorithm::Ec { curve } if curve == OID_CURVE_P256 || curve == OID_CURVE_P384 => None,
        KeyAlgorithm::Ed25519 => None,
        KeyAlgorithm::Ec { .. } | KeyAlgorithm::Other { .. } => Some(format!(
            "{key} is not supported; use RSA (2048 bits or more), EC P-256/P-384 or Ed25519"
        )),
    }
}

/// `text` escaped, quoted and cut to [`MAX_QUOTED_CHARS`].
fn quote(text: &str) -> String {
    format!(
        "\"{}\"",
        shorten(&text.escape_debug().to_string(), MAX_QUOTED_CHARS)
    )
}

fn quote_list(items: &[String]) -> String {
    let mut quoted: Vec<String> = items
        .iter()
        .take(MAX_QUOTED_ENTRIES)
        .map(|i| quote(i))
        .collect();
    if items.len() > MAX_QUOTED_ENTRIES {
        quoted.push(format!("and {} more", items.len() - MAX_QUOTED_ENTRIES));
    }
    quoted.join(", ")
}

/// `text` cut to `max` characters, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    let mut chars = text.chars();
    let mut short: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests;
