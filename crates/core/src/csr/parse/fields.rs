//! The fields the claims come from: requested extensions, alt names, the common name
//! and the public key.

use std::net::{Ipv4Addr, Ipv6Addr};

use x509_parser::cri_attributes::ExtensionRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use super::der::{expect_empty, malformed, next};
use super::*;

/// `extensionRequest` ::= SEQUENCE OF Extension.
pub(super) fn read_extension_request(der: &[u8], claims: &mut CsrClaims) -> Result<(), CsrError> {
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
pub(super) fn is_authorization_extension(oid: &str) -> bool {
    oid.strip_prefix(OID_PP_AUTHORIZATION_ARC)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// A non-DNS subjectAltName entry as text.
pub(super) fn alt_name(name: &GeneralName<'_>) -> String {
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
pub(super) fn common_name(subject: &X509Name<'_>) -> Result<Option<String>, CsrError> {
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

pub(super) fn key_info(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyInfo, CsrError> {
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
pub(super) fn bit_length(be: &[u8]) -> usize {
    let zeros = be.iter().take_while(|b| **b == 0).count();
    let significant = &be[zeros..];
    match significant.first() {
        Some(first) => significant.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}
