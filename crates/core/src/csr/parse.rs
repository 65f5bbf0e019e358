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
use std::net::{Ipv4Addr, Ipv6Addr};

use x509_parser::asn1_rs::{Any, BitString, Class, FromDer, Oid, Tag};
use x509_parser::cri_attributes::ExtensionRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo, X509Name, X509Version};

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

/// The parts of a PKCS #10 request the claims come from.
struct Request<'a> {
    /// The DER of `certificationRequestInfo`, what the signature covers.
    info_raw: &'a [u8],
    subject: X509Name<'a>,
    spki: SubjectPublicKeyInfo<'a>,
    attributes: Vec<Attribute<'a>>,
    signature_algorithm: AlgorithmIdentifier<'a>,
    signature: BitString<'a>,
}

/// One CSR attribute: its type and the DER of each of its values.
struct Attribute<'a> {
    oid: String,
    values: Vec<&'a [u8]>,
}

impl<'a> Attribute<'a> {
    fn single_value(&self, name: &str) -> Result<&'a [u8], CsrError> {
        match self.values.as_slice() {
            [value] => Ok(value),
            values => Err(malformed(format!(
                "{name} has {} values instead of one",
                values.len()
            ))),
        }
    }
}

impl<'a> Request<'a> {
    /// ```text
    /// CertificationRequest ::= SEQUENCE {
    ///     certificationRequestInfo SEQUENCE {
    ///         version       INTEGER { v1(0) },
    ///         subject       Name,
    ///         subjectPKInfo SubjectPublicKeyInfo,
    ///         attributes    [0] IMPLICIT SET OF Attribute },
    ///     signatureAlgorithm AlgorithmIdentifier,
    ///     signature          BIT STRING }
    /// Attribute ::= SEQUENCE { type OBJECT IDENTIFIER, values SET OF ANY }
    /// ```
    fn from_der(der: &'a [u8]) -> Result<Self, CsrError> {
        let mut input = der;
        let request: Any = next(&mut input, "certification request")?;
        expect_empty(input, "the certification request")?;
        expect_universal(&request, Tag::Sequence, "certification request")?;

        let mut body = request.data;
        let info_start = body;
        let info: Any = next(&mut body, "certification request info")?;
        expect_universal(&info, Tag::Sequence, "certification request info")?;
        let info_raw = &info_start[..info_start.len() - body.len()];
        // The signature does not cover these two: read them strictly.
        let algorithm_start = body;
        let signature_algorithm: AlgorithmIdentifier =
            next_universal(&mut body, Tag::Sequence, "signature algorithm")?;
        check_signature_algorithm(&algorithm_start[..algorithm_start.len() - body.len()])?;
        let signature: BitString = next_universal(&mut body, Tag::BitString, "signature")?;
        // Verification reads only the octets; a signature is whole octets.
        if signature.unused_bits != 0 {
            return Err(malformed("the signature has unused bits".to_owned()));
        }
        expect_empty(body, "the signature")?;

        let mut fields = info.data;
        let version: X509Version = next_universal(&mut fields, Tag::Integer, "version")?;
        if version.0 != 0 {
            return Err(malformed(format!("version {} instead of 0", version.0)));
        }
        let subject: X509Name = next_universal(&mut fields, Tag::Sequence, "subject")?;
        let spki: SubjectPublicKeyInfo =
            next_universal(&mut fields, Tag::Sequence, "subject public key info")?;
        let attributes: Any = next(&mut fields, "attributes")?;
        if attributes.class() != Class::ContextSpecific
            || attributes.tag() != Tag(0)
            || !attributes.header.is_constructed()
        {
            return Err(malformed("the attributes are not tagged [0]".to_owned()));
        }
        expect_empty(fields, "the attributes")?;

        Ok(Self {
            info_raw,
            subject,
            spki,
            attributes: parse_attributes(attributes.data)?,
            signature_algorithm,
            signature,
        })
    }
}

/// What x509-parser leaves unchecked in an `AlgorithmIdentifier`: the OID's tag,
/// and the parameters' type (NULL or absent; a SEQUENCE for RSASSA-PSS).
fn check_signature_algorithm(der: &[u8]) -> Result<(), CsrError> {
    const WHAT: &str = "signature algorithm";
    let mut input = der;
    let sequence: Any = next(&mut input, WHAT)?;
    let mut body = sequence.data;
    let oid: Any = next(&mut body, WHAT)?;
    expect_universal(&oid, Tag::Oid, WHAT)?;
    if body.is_empty() {
        return Ok(());
    }
    let parameters: Any = next(&mut body, "signature algorithm parameters")?;
    expect_empty(body, "the signature algorithm parameters")?;
    let pss = oid
        .as_oid()
        .is_ok_and(|oid| oid.to_id_string() == OID_RSASSA_PSS);
    if pss {
        expect_universal(&parameters, Tag::Sequence, "RSASSA-PSS parameters")
    } else if parameters.data.is_empty() {
        expect_universal(&parameters, Tag::Null, "signature algorithm parameters")
    } else {
        Err(malformed(
            "signature algorithm parameters are not NULL".to_owned(),
        ))
    }
}

fn parse_attributes(mut input: &[u8]) -> Result<Vec<Attribute<'_>>, CsrError> {
    let mut attributes = Vec::new();
    while !input.is_empty() {
        let attribute: Any = next(&mut input, "attribute")?;
        expect_universal(&attribute, Tag::Sequence, "attribute")?;
        let mut body = attribute.data;
        let oid: Oid = next(&mut body, "attribute type")?;
        let oid = oid.to_id_string();
        let set: Any = next(&mut body, "attribute values")?;
        expect_universal(&set, Tag::Set, "attribute values")?;
        expect_empty(body, "the attribute values")?;
        let mut values = Vec::new();
        let mut rest = set.data;
        while !rest.is_empty() {
            let start = rest;
            let _: Any = next(&mut rest, "attribute value")?;
            values.push(&start[..start.len() - rest.len()]);
        }
        attributes.push(Attribute { oid, values });
    }
    Ok(attributes)
}

/// `extensionRequest` ::= SEQUENCE OF Extension.
fn read_extension_request(der: &[u8], claims: &mut CsrClaims) -> Result<(), CsrError> {
    let mut input = der;
    let request: ExtensionRequest = next(&mut input, "extensionRequest")?;
    expect_empty(input, "the extensionRequest")?;
    let mut seen = Vec::new();
    for extension in &request.extensions {
        let oid = extension.oid.to_id_string();
        if seen.contains(&oid) {
            return Err(malformed(format!("extension {oid} is requested twice")));
        }
        if oid == OID_PP_INSTANCE_ID {
            claims.pp_instance_id = Some(der_string(extension.value, "pp_instance_id")?);
        } else if oid == OID_SUBJECT_ALT_NAME {
            match extension.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(dns) => {
                                claims.dns_alt_names.push((*dns).to_owned())
                            }
                            other => claims.other_alt_names.push(alt_name(other)),
                        }
                    }
                }
                other => {
                    return Err(malformed(format!("unreadable subjectAltName: {other:?}")));
                }
            }
        } else if is_authorization_extension(&oid) {
            claims.authorization_extensions.push(oid.clone());
        }
        seen.push(oid);
    }
    Ok(())
}

/// Whether `oid` (dotted) is [`OID_PP_AUTHORIZATION_ARC`] or under it; by arcs,
/// so `...34380.1.30` is not under `...34380.1.3`.
fn is_authorization_extension(oid: &str) -> bool {
    oid.strip_prefix(OID_PP_AUTHORIZATION_ARC)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// A non-DNS subjectAltName entry as text.
fn alt_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::IPAddress(bytes) => match *bytes {
            [a, b, c, d] => format!("IP:{}", Ipv4Addr::new(*a, *b, *c, *d)),
            _ => match <[u8; 16]>::try_from(*bytes) {
                Ok(v6) => format!("IP:{}", Ipv6Addr::from(v6)),
                Err(_) => format!("IP:<{} bytes>", bytes.len()),
            },
        },
        GeneralName::URI(uri) => format!("URI:{uri}"),
        GeneralName::RFC822Name(email) => format!("email:{email}"),
        GeneralName::DirectoryName(dn) => format!("DirName:{dn}"),
        GeneralName::RegisteredID(oid) => format!("RID:{}", oid.to_id_string()),
        GeneralName::OtherName(oid, _) => format!("othername:{}", oid.to_id_string()),
        GeneralName::X400Address(_) => "X400Name".to_owned(),
        GeneralName::EDIPartyName(_) => "EdiPartyName".to_owned(),
        GeneralName::Invalid(tag, _) => format!("invalid:{}", tag.0),
    }
}

/// The subject's one common name; several are ambiguous.
fn common_name(subject: &X509Name<'_>) -> Result<Option<String>, CsrError> {
    let mut names = subject.iter_common_name();
    let Some(first) = names.next() else {
        return Ok(None);
    };
    if names.next().is_some() {
        return Err(malformed("the subject has several common names".to_owned()));
    }
    first
        .as_str()
        .map(|cn| Some(cn.to_owned()))
        .map_err(|e| malformed(format!("the subject common name is not a string: {e}")))
}

fn key_info(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyInfo, CsrError> {
    let oid = spki.algorithm.algorithm.to_id_string();
    let key = match oid.as_str() {
        OID_RSA_ENCRYPTION => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => KeyInfo {
                algorithm: KeyAlgorithm::Rsa,
                bits: bit_length(rsa.modulus),
            },
            _ => return Err(malformed("unreadable RSA public key".to_owned())),
        },
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            let bits = match curve.as_str() {
                OID_CURVE_P256 => 256,
                OID_CURVE_P384 => 384,
                _ => spki.parsed().map(|k| k.key_size()).unwrap_or(0),
            };
            KeyInfo {
                algorithm: KeyAlgorithm::Ec { curve },
                bits,
            }
        }
        OID_ED25519 => KeyInfo {
            algorithm: KeyAlgorithm::Ed25519,
            bits: 256,
        },
        _ => KeyInfo {
            bits: spki.parsed().map(|k| k.key_size()).unwrap_or(0),
            algorithm: KeyAlgorithm::Other { oid },
        },
    };
    Ok(key)
}

/// Bits of a big-endian unsigned integer, leading zeros excluded
/// (x509-parser's `key_size` assumes exactly one leading zero byte).
fn bit_length(be: &[u8]) -> usize {
    let zeros = be.iter().take_while(|b| **b == 0).count();
    let significant = &be[zeros..];
    match significant.first() {
        Some(first) => significant.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// One DER UTF8String, PrintableString or IA5String, filling all of `der`.
fn der_string(der: &[u8], what: &str) -> Result<String, CsrError> {
    let mut input = der;
    let any: Any = next(&mut input, what)?;
    expect_empty(input, what)?;
    let text = match any.tag() {
        Tag::Utf8String => any.as_utf8string().map(|s| s.string()),
        Tag::PrintableString => any.as_printablestring().map(|s| s.string()),
        Tag::Ia5String => any.as_ia5string().map(|s| s.string()),
        tag => {
            return Err(malformed(format!(
                "{what} is a {tag:?}, not a UTF8String, PrintableString or IA5String"
            )))
        }
    };
    text.map_err(|e| malformed(format!("{what}: {e}")))
}

/// Parse one `T` off the front of `input`.
fn next<'a, T, E>(input: &mut &'a [u8], what: &str) -> Result<T, CsrError>
where
    T: FromDer<'a, E>,
    E: fmt::Debug,
{
    let (rest, value) = T::from_der(input).map_err(|e| malformed(format!("{what}: {e}")))?;
    *input = rest;
    Ok(value)
}

/// [`next`], after checking that the element is a universal `tag` (x509-parser's
/// parsers check the tag number but not always the class).
fn next_universal<'a, T, E>(input: &mut &'a [u8], tag: Tag, what: &str) -> Result<T, CsrError>
where
    T: FromDer<'a, E>,
    E: fmt::Debug,
{
    let mut peek = *input;
    let any: Any = next(&mut peek, what)?;
    expect_universal(&any, tag, what)?;
    next(input, what)
}

/// Check that `any` is a universal `tag`, constructed exactly when a SEQUENCE or SET.
fn expect_universal(any: &Any<'_>, tag: Tag, what: &str) -> Result<(), CsrError> {
    let constructed = matches!(tag, Tag::Sequence | Tag::Set);
    if any.class() == Class::Universal
        && any.tag() == tag
        && any.header.is_constructed() == constructed
    {
        Ok(())
    } else {
        Err(malformed(format!("{what} is not a {tag:?}")))
    }
}

fn expect_empty(rest: &[u8], after: &str) -> Result<(), CsrError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(malformed(format!(
            "{} unexpected bytes after {after}",
            rest.len()
        )))
    }
}

fn malformed(what: String) -> CsrError {
    CsrError::Malformed(what)
}
