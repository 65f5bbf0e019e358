//! The PKCS #10 structure taken apart strictly: request info, signature algorithm,
//! signature and attributes.

use x509_parser::asn1_rs::{Any, BitString, Class, Oid, Tag};
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo, X509Name, X509Version};

use super::der::{expect_empty, expect_universal, malformed, next, next_universal};
use super::*;

/// The parts of a PKCS #10 request the claims come from.
pub(super) struct Request<'a> {
    /// The DER of `certificationRequestInfo`, what the signature covers.
    pub(super) info_raw: &'a [u8],
    pub(super) subject: X509Name<'a>,
    pub(super) spki: SubjectPublicKeyInfo<'a>,
    pub(super) attributes: Vec<Attribute<'a>>,
    pub(super) signature_algorithm: AlgorithmIdentifier<'a>,
    pub(super) signature: BitString<'a>,
}

/// One CSR attribute: its type and the DER of each of its values.
pub(super) struct Attribute<'a> {
    pub(super) oid: String,
    pub(super) values: Vec<&'a [u8]>,
}

impl<'a> Attribute<'a> {
    pub(super) fn single_value(&self, name: &str) -> Result<&'a [u8], CsrError> {
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
    pub(super) fn from_der(der: &'a [u8]) -> Result<Self, CsrError> {
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
pub(super) fn check_signature_algorithm(der: &[u8]) -> Result<(), CsrError> {
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

pub(super) fn parse_attributes(mut input: &[u8]) -> Result<Vec<Attribute<'_>>, CsrError> {
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
