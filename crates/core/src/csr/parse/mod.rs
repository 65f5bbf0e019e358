//! What a Puppet agent's certificate signing request claims, read for
//! [`super::check`].
//!
//! The request is taken apart with x509-parser's and asn1-rs's DER parsers
//! (`X509Name`, `SubjectPublicKeyInfo`, `AlgorithmIdentifier`,
//! `ExtensionRequest`, `Any`) rather than with
//! `X509CertificationRequest::from_der`, because that parser
//! - rejects the whole request when `challengePassword` is an IA5String, which
//!   some tools write;
//! - reads only the first value of a multi-valued attribute.
//!
//! Here every attribute and requested extension the decision depends on must
//! occur once, with exactly one value, or the request is malformed: an
//! ambiguous request is never read one way here and another way by the CA.
//!
//! No I/O. Any input, however broken, gives a [`CsrError`], never a panic.

use std::fmt;

mod der;
mod fields;
mod request;

use der::{der_string, malformed};
use fields::{common_name, key_info, read_extension_request};
use request::Request;

/// PKCS #9 `challengePassword` attribute.
pub const OID_CHALLENGE_PASSWORD: &str = "1.2.840.113549.1.9.7";
/// PKCS #9 `extensionRequest` attribute, which carries the requested extensions.
pub const OID_EXTENSION_REQUEST: &str = "1.2.840.113549.1.9.14";
/// Puppet's `pp_instance_id` extension.
pub const OID_PP_INSTANCE_ID: &str = "1.3.6.1.4.1.34380.1.1.2";
/// Puppet's authorization extensions (`pp_authorization`, `pp_auth_role`,
/// `pp_cli_auth`, ...) are this arc and everything under it.
pub const OID_PP_AUTHORIZATION_ARC: &str = "1.3.6.1.4.1.34380.1.3";
/// Named curve P-256 (prime256v1).
pub const OID_CURVE_P256: &str = "1.2.840.10045.3.1.7";
/// Named curve P-384 (secp384r1).
pub const OID_CURVE_P384: &str = "1.3.132.0.34";

const OID_SUBJECT_ALT_NAME: &str = "2.5.29.17";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";

/// PEM labels a certificate request may carry (`NEW` is OpenSSL's legacy one).
const PEM_LABELS: [&str; 2] = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/// Why a CSR could not be read. Either way it must not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// The text is not one PEM block holding a certificate request.
    #[error("not a PEM certificate request: {0}")]
    Pem(String),
    /// The DER is not a well-formed PKCS #10 request, or is ambiguous.
    #[error("malformed certificate request: {0}")]
    Malformed(String),
}

impl CsrError {
    /// A short, stable label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Pem(_) => "pem",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// The kind of public key a CSR carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA (`rsaEncryption`).
    Rsa,
    /// Elliptic curve; `curve` is the named curve's OID in dotted form, empty
    /// when the parameters name none (see [`OID_CURVE_P256`], [`OID_CURVE_P384`]).
    Ec {
        /// The named curve.
        curve: String,
    },
    /// Ed25519.
    Ed25519,
    /// Anything else (DSA, GOST, RSA-PSS-only keys, ...).
    Other {
        /// The key algorithm's OID in dotted form.
        oid: String,
    },
}

/// A CSR's public key: its algorithm and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The algorithm.
    pub algorithm: KeyAlgorithm,
    /// Size in bits: the RSA modulus, the curve's field size; 0 when unknown.
    pub bits: usize,
}

impl fmt::Display for KeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.algorithm {
            KeyAlgorithm::Rsa => write!(f, "RSA {} bits", self.bits),
            KeyAlgorithm::Ec { curve } => match curve.as_str() {
                OID_CURVE_P256 => f.write_str("EC P-256"),
                OID_CURVE_P384 => f.write_str("EC P-384"),
                "" => write!(f, "EC without a named curve ({} bits)", self.bits),
                other => write!(f, "EC on curve {other} ({} bits)", self.bits),
            },
            KeyAlgorithm::Ed25519 => f.write_str("Ed25519"),
            KeyAlgorithm::Other { oid } => write!(f, "key algorithm {oid}"),
        }
    }
}

/// What a CSR claims. Nothing here is trusted yet: [`super::check::verify`]
/// decides.
///
/// `Debug` redacts the challenge.
#[derive(Clone, PartialEq, Eq)]
pub struct CsrClaims {
    /// The subject's common name (Puppet's certname); `None` when there is none.
    pub subject_cn: Option<String>,
    /// The `challengePassword` attribute (UTF8String, PrintableString or IA5String).
    pub challenge: Option<String>,
    /// The requested `pp_instance_id` extension (a DER string in the extension value).
    pub pp_instance_id: Option<String>,
    /// Every `DNS` entry of the requested subjectAltName, in order, including
    /// the certname itself (Puppet agents list it whenever they ask for any).
    pub dns_alt_names: Vec<String>,
    /// Every other subjectAltName entry: `IP:<address>`, `URI:<uri>`,
    /// `email:<address>`, `DirName:<name>`, `RID:<oid>`, `othername:<oid>`,
    /// `X400Name`, `EdiPartyName` or `invalid:<tag>`.
    pub other_alt_names: Vec<String>,
    /// OIDs (dotted) of the requested extensions under
    /// [`OID_PP_AUTHORIZATION_ARC`].
    pub authorization_extensions: Vec<String>,
    /// The public key.
    pub key: KeyInfo,
    /// hex SHA-256 of the DER SubjectPublicKeyInfo: which key a signature went to.
    pub public_key_sha256: String,
    /// Whether the request's self-signature verifies with its own public key
    /// (false also for a signature algorithm x509-parser cannot verify).
    pub signature_valid: bool,
}

impl fmt::Debug for CsrClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrClaims")
            .field("subject_cn", &self.subject_cn)
            .field("challenge", &self.challenge.as_ref().map(|_| "<redacted>"))
            .field("pp_instance_id", &self.pp_instance_id)
            .field("dns_alt_names", &self.dns_alt_names)
            .field("other_alt_names", &self.other_alt_names)
            .field("authorization_extensions", &self.authorization_extensions)
            .field("key", &self.key)
            .field("public_key_sha256", &self.public_key_sha256)
            .field("signature_valid", &self.signature_valid)
            .finish()
    }
}

/// Read a PEM certificate request (the first PEM block; `CERTIFICATE REQUEST`).
pub fn parse_csr(pem: &str) -> Result<CsrClaims, CsrError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| {
        CsrError::Pem(match e {
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e.to_string(),
            x509_parser::nom::Err::Incomplete(_) => "incomplete input".to_owned(),
        })
    })?;
    if !PEM_LABELS.contains(&block.label.as_str()) {
        return Err(CsrError::Pem(format!(
            "the PEM block is labelled {:?}, not CERTIFICATE REQUEST",
            block.label
        )));
    }
    parse_csr_der(&block.contents)
}

/// Read a DER certificate request.
pub fn parse_csr_der(der: &[u8]) -> Result<CsrClaims, CsrError> {
    let request = Request::from_der(der)?;
    let subject_cn = common_name(&request.subject)?;
    let key = key_info(&request.spki)?;
    let signature_valid = x509_parser::verify::verify_signature(
        &request.spki,
        &request.signature_algorithm,
        &request.signature,
        request.info_raw,
    )
    .is_ok();

    let mut claims = CsrClaims {
        subject_cn,
        challenge: None,
        pp_instance_id: None,
        dns_alt_names: Vec::new(),
        other_alt_names: Vec::new(),
        authorization_extensions: Vec::new(),
        key,
        public_key_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(request.spki.raw)),
        signature_valid,
    };
    let mut seen = Vec::new();
    for attribute in &request.attributes {
        if seen.contains(&attribute.oid) {
            return Err(malformed(format!(
                "attribute {} occurs twice",
                attribute.oid
            )));
        }
        seen.push(attribute.oid.clone());
        match attribute.oid.as_str() {
            OID_CHALLENGE_PASSWORD => {
                let value = attribute.single_value("challengePassword")?;
                claims.challenge = Some(der_string(value, "challengePassword")?);
            }
            OID_EXTENSION_REQUEST => {
                let value = attribute.single_value("extensionRequest")?;
                read_extension_request(value, &mut claims)?;
            }
            // Other attributes are not copied into the certificate.
            _ => {}
        }
    }
    Ok(claims)
}
