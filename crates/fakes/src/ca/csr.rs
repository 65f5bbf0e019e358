//! Reading CSRs as puppetserver reads them for [`super::FakeCa`], and its checks before
//! signing (what it refuses, with the answers it gives).

use std::collections::BTreeMap;
use std::net::IpAddr;

use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::{Any, BitString, Class, FromDer, Oid, Tag};
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo, X509Name};

use super::{Http, Policy};
use puppet_conductor_ca::{CertState, CertificateInfo};

const OID_EXTENSION_REQUEST: &str = "1.2.840.113549.1.9.14";
const OID_SUBJECT_ALT_NAME: &str = "2.5.29.17";
/// Puppet's registered (`pp_*`), private and authorization extension arcs.
pub(super) const PP_REGISTERED: &str = "1.3.6.1.4.1.34380.1.1";
pub(super) const PP_PRIVATE: &str = "1.3.6.1.4.1.34380.1.2";
pub(super) const PP_AUTHORIZATION: &str = "1.3.6.1.4.1.34380.1.3";
const PP_CLI_AUTH: &str = "1.3.6.1.4.1.34380.1.3.39";
/// Short names puppetserver reports authorization extensions by.
const AUTH_SHORT_NAMES: [(&str, &str); 3] = [
    ("1.3.6.1.4.1.34380.1.3.1", "pp_authorization"),
    ("1.3.6.1.4.1.34380.1.3.13", "pp_auth_role"),
    (PP_CLI_AUTH, "pp_cli_auth"),
];
/// What puppetserver answers a submission that is not PEM at all (measured).
pub(super) const NOT_PEM: &str =
    "Internal Server Error: java.lang.IndexOutOfBoundsException: Index 0 out of bounds for length 0";

/// One requested extension of a CSR.
#[derive(Clone, Debug)]
pub(super) struct Extension {
    pub(super) oid: String,
    pub(super) critical: bool,
    /// The content of the extension's OCTET STRING.
    pub(super) value: Vec<u8>,
}

/// What the fake reads from a CSR.
#[derive(Clone, Debug)]
pub(super) struct Csr {
    pub(super) pem: String,
    pub(super) der: Vec<u8>,
    pub(super) cn: Option<String>,
    pub(super) spki: Vec<u8>,
    /// The first extensionRequest attribute's extensions, in order (what puppetserver reads).
    pub(super) extensions: Vec<Extension>,
    /// The first extension OID that occurs twice: puppetserver cannot parse the CSR then.
    pub(super) repeated: Option<String>,
    pub(super) signature_valid: bool,
}

/// puppetserver's `validate-subject!`: the URL's name against the CSR's.
pub(super) fn validate_subject(certname: &str, cn: &str) -> Result<(), Http> {
    let invalid = || Err(Http::new(400, "Subject hostname format is invalid"));
    if certname != cn {
        return Err(Http::new(
            400,
            format!("Instance name \"{cn}\" does not match requested key \"{certname}\""),
        ));
    }
    if certname.chars().any(char::is_uppercase) {
        return Err(Http::new(400, "Certificate names must be lower case."));
    }
    if cn.contains('*') {
        return Err(Http::new(
            400,
            format!("Subject contains a wildcard, which is not allowed: {cn}"),
        ));
    }
    if cn.ends_with('-') {
        return invalid();
    }
    // Java's split drops trailing empty segments.
    let segments: Vec<&str> = cn.trim_end_matches('.').split('.').collect();
    let starts_well = segments
        .first()
        .and_then(|s| s.chars().next())
        .is_some_and(|c| c.is_alphanumeric() || c == '_');
    let segment_ok = |s: &&str| {
        s.chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
            && s.chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
    };
    if !starts_well || !segments.iter().all(segment_ok) {
        return invalid();
    }
    Ok(())
}

impl Csr {
    /// Reads a PEM CSR far enough to act as puppetserver does; a CSR it cannot read is a
    /// 500, as puppetserver answers what it cannot parse.
    pub(super) fn parse(pem: &str) -> Result<Self, Http> {
        let unreadable = |what: String| Http::new(500, format!("Internal Server Error: {what}"));
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|_| Http::new(500, NOT_PEM))?;
        if !matches!(
            block.label.as_str(),
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
        ) {
            return Err(unreadable(format!(
                "a PEM {} is not a certificate request",
                block.label
            )));
        }
        let mut csr = Self::from_der(&block.contents).map_err(unreadable)?;
        csr.pem = pem.to_owned();
        Ok(csr)
    }

    /// ```text
    /// CertificationRequest ::= SEQUENCE { certificationRequestInfo SEQUENCE {
    ///     version INTEGER, subject Name, subjectPKInfo SubjectPublicKeyInfo,
    ///     attributes [0] SET OF Attribute }, signatureAlgorithm, signature BIT STRING }
    /// ```
    fn from_der(der: &[u8]) -> Result<Self, String> {
        let e = der_error::<x509_parser::nom::Err<x509_parser::asn1_rs::Error>>;
        let x = der_error::<x509_parser::nom::Err<x509_parser::error::X509Error>>;
        let (rest, request) = Any::from_der(der).map_err(e("certification request"))?;
        if !rest.is_empty() || request.tag() != Tag::Sequence {
            return Err("not a certification request".to_owned());
        }
        let body = request.data;
        let (after_info, info) = Any::from_der(body).map_err(e("request info"))?;
        let info_raw = &body[..body.len() - after_info.len()];
        let (after_algorithm, algorithm) =
            AlgorithmIdentifier::from_der(after_info).map_err(x("signature algorithm"))?;
        let (_, signature) = BitString::from_der(after_algorithm).map_err(e("signature"))?;

        let (fields, _version) = Any::from_der(info.data).map_err(e("version"))?;
        let (fields, subject) = X509Name::from_der(fields).map_err(x("subject"))?;
        let (fields, spki) = SubjectPublicKeyInfo::from_der(fields).map_err(x("public key"))?;
        let attributes = match Any::from_der(fields) {
            Ok((_, attributes)) => attributes.data,
            Err(_) => &[],
        };
        let mut extensions = None;
        let mut input = attributes;
        while !input.is_empty() {
            let (rest, attribute) = Any::from_der(input).map_err(e("attribute"))?;
            input = rest;
            let (after_oid, oid) = Oid::from_der(attribute.data).map_err(e("attribute type"))?;
            // Only the first extension request counts (a second one breaks nothing).
            if oid.to_id_string() != OID_EXTENSION_REQUEST || extensions.is_some() {
                continue;
            }
            let (_, values) = Any::from_der(after_oid).map_err(e("attribute values"))?;
            let (_, first) = Any::from_der(values.data).map_err(e("extension request"))?;
            extensions = Some(read_extensions(first.data)?);
        }
        let extensions = extensions.unwrap_or_default();
        let mut seen: Vec<&str> = Vec::new();
        let mut repeated = None;
        for extension in &extensions {
            if seen.contains(&extension.oid.as_str()) {
                repeated = Some(extension.oid.clone());
                break;
            }
            seen.push(&extension.oid);
        }
        let cn = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Ok(Self {
            pem: String::new(),
            der: der.to_vec(),
            cn,
            spki: spki.raw.to_vec(),
            repeated,
            signature_valid: x509_parser::verify::verify_signature(
                &spki, &algorithm, &signature, info_raw,
            )
            .is_ok(),
            extensions,
        })
    }

    /// A 500 for what puppetserver cannot parse.
    fn parse_failure(&self) -> Result<(), Http> {
        match &self.repeated {
            Some(oid) => Err(Http::new(
                500,
                format!(
                    "Internal Server Error: java.lang.IllegalArgumentException: \
                     repeated extension found: {oid}"
                ),
            )),
            None => Ok(()),
        }
    }

    /// The status JSON of this CSR, waiting for `certname`.
    pub(super) fn status(&self, certname: &str) -> Result<CertificateInfo, Http> {
        self.parse_failure()?;
        let (dns, ips) = alt_names(&self.extensions);
        Ok(CertificateInfo {
            name: certname.to_owned(),
            state: CertState::Requested,
            fingerprint: Some(colon_hex(&self.der)),
            subject_alt_names: subject_alt_names(&dns, &ips),
            dns_alt_names: dns.iter().map(|d| format!("DNS:{d}")).collect(),
            authorization_extensions: authorization_extensions(&self.extensions),
            not_before: None,
            not_after: None,
            serial: None,
        })
    }

    /// puppetserver's `validate-csr`, in its order: names, alt names, authorization
    /// extensions, other extensions, signature. Each refusal is a 409 with its text.
    pub(super) fn check_signable(&self, certname: &str, policy: Policy) -> Result<(), Http> {
        self.parse_failure()?;
        let cn = self.cn.as_deref().unwrap_or_default();
        validate_subject(certname, cn).map_err(|h| Http::new(409, h.body))?;
        let (dns, ips) = alt_names(&self.extensions);
        let own = format!("DNS:{cn}");
        let extra: Vec<String> = subject_alt_names(&dns, &ips)
            .into_iter()
            .filter(|n| *n != own)
            .collect();
        if !policy.allow_subject_alt_names && !extra.is_empty() {
            return Err(Http::new(
                409,
                format!(
                    "CSR '{cn}' contains extra subject alternative names ({}), which are \
                     disallowed. To allow subject alternative names, set \
                     allow-subject-alt-names to true in your ca.conf file. Then restart the \
                     puppetserver and try signing this certificate again.",
                    extra.join(", ")
                ),
            ));
        }
        if !policy.allow_authorization_extensions
            && self
                .extensions
                .iter()
                .any(|x| under(&x.oid, PP_AUTHORIZATION))
        {
            return Err(Http::new(
                409,
                format!(
                    "CSR '{cn}' contains an authorization extension, which is disallowed. To \
                     allow authorization extensions, set allow-authorization-extensions to \
                     true in your ca.conf file. Then restart the puppetserver and try \
                     signing this certificate again."
                ),
            ));
        }
        let refused: Vec<&str> = self
            .extensions
            .iter()
            .map(|x| x.oid.as_str())
            .filter(|oid| !allowed_extension(oid))
            .collect();
        if !refused.is_empty() {
            return Err(Http::new(
                409,
                format!(
                    "Found extensions that are not permitted: {}",
                    refused.join(", ")
                ),
            ));
        }
        if !self.signature_valid {
            return Err(Http::new(
                409,
                "CSR contains a public key that does not correspond to the signing key",
            ));
        }
        Ok(())
    }
}

/// `Extensions ::= SEQUENCE OF Extension { extnID, critical BOOLEAN DEFAULT FALSE,
/// extnValue OCTET STRING }`, the SEQUENCE's content.
fn read_extensions(mut input: &[u8]) -> Result<Vec<Extension>, String> {
    let e = der_error::<x509_parser::nom::Err<x509_parser::asn1_rs::Error>>("extension");
    let mut extensions = Vec::new();
    while !input.is_empty() {
        let (rest, extension) = Any::from_der(input).map_err(&e)?;
        input = rest;
        let (body, oid) = Oid::from_der(extension.data).map_err(&e)?;
        let (body, first) = Any::from_der(body).map_err(&e)?;
        let (critical, value) = if first.tag() == Tag::Boolean {
            let (_, value) = Any::from_der(body).map_err(&e)?;
            (first.data.first().is_some_and(|b| *b != 0), value)
        } else {
            (false, first)
        };
        extensions.push(Extension {
            oid: oid.to_id_string(),
            critical,
            value: value.data.to_vec(),
        });
    }
    Ok(extensions)
}

/// DNS names and IP addresses of the (first) subjectAltName extension, in order.
pub(super) fn alt_names(extensions: &[Extension]) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let Some(san) = extensions.iter().find(|x| x.oid == OID_SUBJECT_ALT_NAME) else {
        return (dns, ips);
    };
    let Ok((_, names)) = Any::from_der(&san.value) else {
        return (dns, ips);
    };
    let mut input = names.data;
    while let Ok((rest, name)) = Any::from_der(input) {
        input = rest;
        if name.class() != Class::ContextSpecific {
            continue;
        }
        match (name.tag().0, name.data.len()) {
            (2, _) => dns.push(String::from_utf8_lossy(name.data).into_owned()),
            (7, 4) | (7, 16) => {
                let ip = <[u8; 4]>::try_from(name.data)
                    .map(IpAddr::from)
                    .or_else(|_| <[u8; 16]>::try_from(name.data).map(IpAddr::from));
                ips.extend(ip.ok());
            }
            _ => {}
        }
    }
    (dns, ips)
}

/// puppetserver's `subject_alt_names`: IP addresses first, then DNS names.
pub(super) fn subject_alt_names(dns: &[String], ips: &[IpAddr]) -> Vec<String> {
    ips.iter()
        .map(|ip| format!("IP:{ip}"))
        .chain(dns.iter().map(|d| format!("DNS:{d}")))
        .collect()
}

/// Extensions under the authorization arc, by short name when puppet has one.
pub(super) fn authorization_extensions(extensions: &[Extension]) -> BTreeMap<String, String> {
    extensions
        .iter()
        .filter(|x| under(&x.oid, PP_AUTHORIZATION))
        .map(|x| {
            let name = AUTH_SHORT_NAMES
                .iter()
                .find(|(oid, _)| *oid == x.oid)
                .map_or_else(|| x.oid.clone(), |(_, name)| (*name).to_owned());
            (name, der_text(&x.value))
        })
        .collect()
}

/// A DER string's text; anything else as hex.
fn der_text(value: &[u8]) -> String {
    match Any::from_der(value) {
        Ok((_, any))
            if matches!(
                any.tag(),
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String
            ) =>
        {
            String::from_utf8_lossy(any.data).into_owned()
        }
        _ => hex::encode(value),
    }
}

/// puppetserver's `allowed-extension?`.
fn allowed_extension(oid: &str) -> bool {
    oid == OID_SUBJECT_ALT_NAME
        || (under(oid, PP_AUTHORIZATION) && oid != PP_CLI_AUTH)
        || under(oid, PP_REGISTERED)
        || under(oid, PP_PRIVATE)
}

/// Whether `oid` lies under `arc` (by arcs: `...1.30` is not under `...1.3`).
pub(super) fn under(oid: &str, arc: &str) -> bool {
    oid.strip_prefix(arc)
        .is_some_and(|rest| rest.starts_with('.'))
}

pub(super) fn oid_arcs(oid: &str) -> Option<Vec<u64>> {
    oid.split('.').map(|arc| arc.parse().ok()).collect()
}

/// SHA-256 of `der` as the CA prints fingerprints: `AA:BB:..`.
pub(super) fn colon_hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Errors of the DER readers as text, naming what was being read.
fn der_error<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
    move |err| format!("{what}: {err:?}")
}
