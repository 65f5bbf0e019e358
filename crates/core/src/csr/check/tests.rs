//! CSRs are built with rcgen (EC and Ed25519 keys from ring): the challenge goes
//! in as a custom PKCS #10 attribute and `pp_instance_id` as a custom requested
//! extension, both DER-encoded by the small writer below. The RSA-1024 request
//! was made once with `openssl req` (ring cannot make RSA keys), and the real
//! agent CSR is the CA fixture.

use proptest::prelude::*;
use rcgen::{
    Attribute, CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair, SanType,
    SignatureAlgorithm,
};

use super::*;
use crate::identity::ChallengeKey;

const CERTNAME: &str = "node-1";
const CHALLENGE: &str = "0123456789abcdef0123456789abcdef";
const INSTANCE_ID: &str = "i-0123456789abcdef0";

const OID_CHALLENGE_PASSWORD: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];
const OID_PP_INSTANCE_ID: &[u64] = &[1, 3, 6, 1, 4, 1, 34380, 1, 1, 2];
const OID_PP_CLI_AUTH: &[u64] = &[1, 3, 6, 1, 4, 1, 34380, 1, 3, 39];
const OID_PP_ROLE: &[u64] = &[1, 3, 6, 1, 4, 1, 34380, 1, 1, 13];

/// A real puppet agent's CSR: CN fixture-requested, challenge c-123 (a
/// PrintableString), pp_instance_id i-0abc, alt names DNS:fixture-requested and
/// DNS:fixture-requested.example, RSA 4096.
const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/ca/certificate_request_requested.pem"
));

/// `openssl req -newkey rsa:1024 -sha256` for CN node-1 with CHALLENGE (as a
/// UTF8String) and pp_instance_id INSTANCE_ID: right in everything but the key.
const RSA_1024: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBuTCCASICAQAwETEPMA0GA1UEAwwGbm9kZS0xMIGfMA0GCSqGSIb3DQEBAQUA
A4GNADCBiQKBgQC24596Fa9OzkqNCsByvVtvgMMeqAAQu0Jejpfvoq45Qd/0FgnG
5g3fGGK5VsSDKXs5R51Emw/UoF3jHzE7MFoAcipd2OOE0prk5dZJ+ObRHsI6cd5E
1+Z3TyyMCmdL6g3eeDIdRbj07XLoCafXQ+GOWbCl/WUrofNjcQDp3iHSUQIDAQAB
oGgwLwYJKoZIhvcNAQkHMSIMIDAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJj
ZGVmMDUGCSqGSIb3DQEJDjEoMCYwJAYLKwYBBAGCjEwBAQIEFQwTaS0wMTIzNDU2
Nzg5YWJjZGVmMDANBgkqhkiG9w0BAQsFAAOBgQBdyi4bz1eNZMZ4Eag2DjioMbzb
Kr5Dc1hAW+bQnX+HNRWFgqIx2jpKfqMGdtHvNOJTJdwVZZwSDLjsggI0yKCYHDvU
+Vx/F8mBcFjKt+NlE98JA9Wu9BYXCZKKmWXtG+Xmzyqf59EbT7a1mbtP4SEnw1uR
BCgXLWpz750fgYi6dA==
-----END CERTIFICATE REQUEST-----
";

// ---- a minimal DER writer, for attribute and extension values ----

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else if len <= 0xff {
        out.extend([0x81, u8::try_from(len).unwrap()]);
    } else {
        out.extend([0x82, u8::try_from(len >> 8).unwrap(), (len & 0xff) as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn utf8(text: &str) -> Vec<u8> {
    tlv(0x0c, text.as_bytes())
}

fn printable(text: &str) -> Vec<u8> {
    tlv(0x13, text.as_bytes())
}

fn ia5(text: &str) -> Vec<u8> {
    tlv(0x16, text.as_bytes())
}

fn set(values: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x31, &values.concat())
}

// ---- building CSRs ----

/// One CSR to build; [`Csr::agent`] is what the operator's cloud-config makes
/// a Puppet agent submit.
struct Csr {
    cn: Option<String>,
    /// DER values of the challengePassword attribute (empty: no attribute).
    challenge_values: Vec<Vec<u8>>,
    /// How many times the challengePassword attribute occurs.
    challenge_copies: usize,
    extensions: Vec<CustomExtension>,
    sans: Vec<SanType>,
    algorithm: &'static SignatureAlgorithm,
}

impl Csr {
    fn agent() -> Self {
        Self {
            cn: Some(CERTNAME.to_owned()),
            challenge_values: vec![printable(CHALLENGE)],
            challenge_copies: 1,
            extensions: vec![instance_id_extension(INSTANCE_ID)],
            sans: Vec::new(),
            algorithm: &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }

    fn challenge(mut self, value: Vec<u8>) -> Self {
        self.challenge_values = vec![value];
        self
    }

    fn dns(mut self, name: &str) -> Self {
        self.sans.push(SanType::DnsName(name.try_into().unwrap()));
        self
    }

    fn der(&self) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = &self.cn {
            params
                .distinguished_name
                .push(DnType::CommonName, cn.as_str());
        }
        params.custom_extensions = self.extensions.clone();
        params.subject_alt_names = self.sans.clone();
        let mut attributes = Vec::new();
        if !self.challenge_values.is_empty() {
            for _ in 0..self.challenge_copies {
                attributes.push(Attribute {
                    oid: OID_CHALLENGE_PASSWORD,
                    values: set(&self.challenge_values),
                });
            }
        }
        let key = KeyPair::generate_for(self.algorithm).unwrap();
        let csr = params
            .serialize_request_with_attributes(&key, attributes)
            .unwrap();
        csr.der().to_vec()
    }

    fn claims(&self) -> CsrClaims {
        parse_csr_der(&self.der()).unwrap()
    }

    fn verdict(&self, expected: &Expected<'_>) -> Verdict {
        verify(&self.claims(), expected)
    }
}

fn instance_id_extension(id: &str) -> CustomExtension {
    CustomExtension::from_oid_content(OID_PP_INSTANCE_ID, utf8(id))
}

fn expected() -> Expected<'static> {
    Expected {
        certname: CERTNAME,
        challenge: CHALLENGE,
        instance_id: INSTANCE_ID,
        allow_dns_alt_names: false,
    }
}

fn allowing_alt_names() -> Expected<'static> {
    Expected {
        allow_dns_alt_names: true,
        ..expected()
    }
}

fn fixture_expected() -> Expected<'static> {
    Expected {
        certname: "fixture-requested",
        challenge: "c-123",
        instance_id: "i-0abc",
        allow_dns_alt_names: true,
    }
}

fn fixture_der() -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(FIXTURE.as_bytes()).unwrap();
    pem.contents
}

/// The refusal, after checking what every refusal must satisfy.
fn refusal(verdict: Verdict) -> Refusal {
    let Verdict::Refuse(refusal) = verdict else {
        panic!("expected a refusal, got {verdict:?}")
    };
    let (reason, message) = (refusal.reason(), refusal.message());
    assert!(
        reason.starts_with("CSR") && reason.chars().all(|c| c.is_ascii_alphanumeric()),
        "{reason}"
    );
    assert!(!message.contains(CHALLENGE), "{message}");
    assert!(!message.contains("c-123"), "{message}");
    refusal
}

// ---- the real agent CSR ----

#[test]
fn fixture_parses_with_its_challenge_and_instance_id() {
    let claims = parse_csr(FIXTURE).unwrap();
    assert_eq!(claims.subject_cn.as_deref(), Some("fixture-requested"));
    assert_eq!(claims.challenge.as_deref(), Some("c-123"));
    assert_eq!(claims.pp_instance_id.as_deref(), Some("i-0abc"));
    assert_eq!(
        claims.dns_alt_names,
        ["fixture-requested", "fixture-requested.example"]
    );
    assert!(claims.other_alt_names.is_empty());
    assert!(claims.authorization_extensions.is_empty());
    assert_eq!(
        claims.key,
        KeyInfo {
            algorithm: KeyAlgorithm::Rsa,
            bits: 4096
        }
    );
    assert!(claims.signature_valid);
    assert!(!format!("{claims:?}").contains("c-123"));
}

#[test]
fn fixture_is_signed_when_its_alt_names_are_allowed() {
    let claims = parse_csr(FIXTURE).unwrap();
    assert_eq!(verify(&claims, &fixture_expected()), Verdict::Sign);
}

#[test]
fn fixture_alt_name_beyond_the_certname_is_refused_when_not_allowed() {
    let claims = parse_csr(FIXTURE).unwrap();
    let expected = Expected {
        allow_dns_alt_names: false,
        ..fixture_expected()
    };
    assert_eq!(
        refusal(verify(&claims, &expected)),
        Refusal::DnsAltNamesNotAllowed(vec!["DNS:fixture-requested.example".to_owned()])
    );
}

#[test]
fn fixture_agrees_with_x509_parsers_own_csr_parser() {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::prelude::FromDer;
    let der = fixture_der();
    let (_, csr) = X509CertificationRequest::from_der(&der).unwrap();
    csr.verify_signature().unwrap();
    let cn = csr
        .certification_request_info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());
    assert_eq!(cn, parse_csr_der(&der).unwrap().subject_cn.as_deref());
}

// ---- signing ----

#[test]
fn right_everything_is_signed() {
    assert_eq!(Csr::agent().verdict(&expected()), Verdict::Sign);
}

#[test]
fn p384_and_ed25519_keys_are_signed() {
    for algorithm in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let csr = Csr {
            algorithm,
            ..Csr::agent()
        };
        let claims = csr.claims();
        assert!(claims.signature_valid, "{claims:?}");
        assert_eq!(verify(&claims, &expected()), Verdict::Sign, "{claims:?}");
    }
}

#[test]
fn challenge_is_read_from_utf8_printable_and_ia5_strings() {
    for value in [utf8(CHALLENGE), printable(CHALLENGE), ia5(CHALLENGE)] {
        let csr = Csr::agent().challenge(value);
        assert_eq!(csr.claims().challenge.as_deref(), Some(CHALLENGE));
        assert_eq!(csr.verdict(&expected()), Verdict::Sign);
    }
}

#[test]
fn only_dns_certname_does_not_count_as_an_alt_name() {
    let csr = Csr::agent().dns(CERTNAME);
    assert_eq!(csr.claims().dns_alt_names, [CERTNAME]);
    assert_eq!(csr.verdict(&expected()), Verdict::Sign);
}

#[test]
fn unrelated_requested_extensions_are_ignored() {
    let mut csr = Csr::agent();
    csr.extensions
        .push(CustomExtension::from_oid_content(OID_PP_ROLE, utf8("web")));
    assert_eq!(csr.verdict(&expected()), Verdict::Sign);
}

// ---- the challenge ----

#[test]
fn wrong_challenge_is_refused() {
    let csr = Csr::agent().challenge(printable("0123456789abcdef0123456789abcdee"));
    assert_eq!(refusal(csr.verdict(&expected())), Refusal::WrongChallenge);
}

#[test]
fn challenge_of_a_previous_incarnation_is_refused() {
    let key = ChallengeKey::from_bytes(&[7; 32]).unwrap();
    let uid = "2b1c9d2e-7f0a-4c61-9a57-0d5e5f3b8c11";
    let (previous, current) = (key.challenge(uid, 1), key.challenge(uid, 2));
    assert_ne!(previous, current);
    let csr = Csr::agent().challenge(printable(&previous));
    let expected = Expected {
        challenge: &current,
        ..expected()
    };
    let refused = refusal(csr.verdict(&expected));
    assert_eq!(refused, Refusal::WrongChallenge);
    assert!(!refused.message().contains(&current) && !refused.message().contains(&previous));
}

#[test]
fn missing_challenge_is_refused() {
    let csr = Csr {
        challenge_values: Vec::new(),
        ..Csr::agent()
    };
    assert_eq!(refusal(csr.verdict(&expected())), Refusal::MissingChallenge);
}

#[test]
fn empty_expected_challenge_never_matches() {
    let csr = Csr::agent().challenge(printable(""));
    let expected = Expected {
        challenge: "",
        ..expected()
    };
    // An empty PrintableString is still a challenge attribute, just never a right one.
    assert_eq!(refusal(csr.verdict(&expected)), Refusal::WrongChallenge);
}

#[test]
fn ambiguous_challenges_are_not_parsable() {
    let twice = Csr {
        challenge_copies: 2,
        ..Csr::agent()
    };
    let two_values = Csr {
        challenge_values: vec![printable(CHALLENGE), printable("other")],
        ..Csr::agent()
    };
    for csr in [twice, two_values] {
        assert!(matches!(
            parse_csr_der(&csr.der()),
            Err(CsrError::Malformed(_))
        ));
    }
}

#[test]
fn challenge_of_another_string_type_is_not_parsable() {
    // BMPString.
    let csr = Csr::agent().challenge(tlv(0x1e, &[0, b'a']));
    assert!(matches!(
        parse_csr_der(&csr.der()),
        Err(CsrError::Malformed(_))
    ));
}

// ---- the instance id ----

#[test]
fn wrong_instance_id_is_refused() {
    let csr = Csr {
        extensions: vec![instance_id_extension("i-0fedcba9876543210")],
        ..Csr::agent()
    };
    let refused = refusal(csr.verdict(&expected()));
    assert_eq!(
        refused,
        Refusal::WrongInstanceId {
            requested: "i-0fedcba9876543210".to_owned(),
            expected: INSTANCE_ID.to_owned(),
        }
    );
    assert!(refused.message().contains("i-0fedcba9876543210"));
}

#[test]
fn missing_instance_id_is_refused() {
    let csr = Csr {
        extensions: Vec::new(),
        ..Csr::agent()
    };
    assert_eq!(
        refusal(csr.verdict(&expected())),
        Refusal::MissingInstanceId
    );
}

#[test]
fn instance_id_requested_twice_is_not_parsable() {
    let csr = Csr {
        extensions: vec![
            instance_id_extension(INSTANCE_ID),
            instance_id_extension("i-0fedcba9876543210"),
        ],
        ..Csr::agent()
    };
    assert!(matches!(
        parse_csr_der(&csr.der()),
        Err(CsrError::Malformed(_))
    ));
}

#[test]
fn instance_id_without_its_utf8string_wrapper_is_not_parsable() {
    let csr = Csr {
        extensions: vec![CustomExtension::from_oid_content(
            OID_PP_INSTANCE_ID,
            INSTANCE_ID.as_bytes().to_vec(),
        )],
        ..Csr::agent()
    };
    assert!(matches!(
        parse_csr_der(&csr.der()),
        Err(CsrError::Malformed(_))
    ));
}

// ---- the certname ----

#[test]
fn cn_other_than_the_certname_is_refused() {
    let csr = Csr {
        cn: Some("node-2".to_owned()),
        ..Csr::agent()
    };
    assert_eq!(
        refusal(csr.verdict(&expected())),
        Refusal::CertnameMismatch {
            requested: Some("node-2".to_owned()),
            expected: CERTNAME.to_owned(),
        }
    );
}

#[test]
fn missing_cn_is_refused() {
    let csr = Csr {
        cn: None,
        ..Csr::agent()
    };
    assert_eq!(
        refusal(csr.verdict(&expected())),
        Refusal::CertnameMismatch {
            requested: None,
            expected: CERTNAME.to_owned(),
        }
    );
}

// ---- alt names and authorization ----

#[test]
fn dns_alt_names_are_refused_unless_allowed() {
    let csr = Csr::agent()
        .dns(CERTNAME)
        .dns("puppet")
        .dns("puppet.example");
    let claims = csr.claims();
    assert_eq!(
        refusal(verify(&claims, &expected())),
        Refusal::DnsAltNamesNotAllowed(vec![
            "DNS:puppet".to_owned(),
            "DNS:puppet.example".to_owned()
        ])
    );
    assert_eq!(verify(&claims, &allowing_alt_names()), Verdict::Sign);
}

#[test]
fn ip_alt_names_are_refused_unless_allowed() {
    let mut csr = Csr::agent().dns(CERTNAME);
    csr.sans
        .push(SanType::IpAddress("10.0.0.7".parse().unwrap()));
    csr.sans
        .push(SanType::IpAddress("fd00::7".parse().unwrap()));
    let claims = csr.claims();
    assert_eq!(claims.other_alt_names, ["IP:10.0.0.7", "IP:fd00::7"]);
    assert_eq!(
        refusal(verify(&claims, &expected())),
        Refusal::DnsAltNamesNotAllowed(claims.other_alt_names.clone())
    );
    assert_eq!(verify(&claims, &allowing_alt_names()), Verdict::Sign);
}

#[test]
fn other_alt_name_kinds_are_refused_even_when_alt_names_are_allowed() {
    let mut csr = Csr::agent().dns(CERTNAME);
    csr.sans.push(SanType::URI(
        "spiffe://cluster/ns/default".try_into().unwrap(),
    ));
    csr.sans
        .push(SanType::Rfc822Name("root@example.com".try_into().unwrap()));
    let expected_refusal = Refusal::DnsAltNamesNotAllowed(vec![
        "URI:spiffe://cluster/ns/default".to_owned(),
        "email:root@example.com".to_owned(),
    ]);
    let claims = csr.claims();
    assert_eq!(refusal(verify(&claims, &expected())), expected_refusal);
    assert_eq!(
        refusal(verify(&claims, &allowing_alt_names())),
        expected_refusal
    );
}

#[test]
fn pp_cli_auth_is_refused_even_with_alt_names_allowed() {
    let mut csr = Csr::agent();
    csr.extensions.push(CustomExtension::from_oid_content(
        OID_PP_CLI_AUTH,
        utf8("true"),
    ));
    let refused = refusal(csr.verdict(&allowing_alt_names()));
    assert_eq!(
        refused,
        Refusal::AuthorizationExtensions(vec!["1.3.6.1.4.1.34380.1.3.39".to_owned()])
    );
    assert_eq!(refused.reason(), "CSRAuthorizationExtensions");
}

#[test]
fn authorization_arc_is_matched_by_arcs_not_by_text() {
    let mut csr = Csr::agent();
    csr.extensions.push(CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 34380, 1, 30],
        utf8("x"),
    ));
    csr.extensions.push(CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 34380, 1, 3],
        utf8("x"),
    ));
    assert_eq!(
        csr.claims().authorization_extensions,
        ["1.3.6.1.4.1.34380.1.3"]
    );
}

// ---- keys and signatures ----

#[test]
fn rsa_1024_is_a_weak_key() {
    let claims = parse_csr(RSA_1024).unwrap();
    assert_eq!(claims.challenge.as_deref(), Some(CHALLENGE));
    assert_eq!(claims.pp_instance_id.as_deref(), Some(INSTANCE_ID));
    assert_eq!(claims.key.bits, 1024);
    let refused = refusal(verify(&claims, &expected()));
    assert!(matches!(refused, Refusal::WeakKey(_)), "{refused:?}");
    assert!(refused.message().contains("1024"), "{}", refused.message());
}

#[test]
fn unsupported_key_kinds_are_weak_keys() {
    let mut claims = Csr::agent().claims();
    for algorithm in [
        KeyAlgorithm::Ec {
            curve: "1.3.132.0.10".to_owned(),
        },
        KeyAlgorithm::Other {
            oid: "1.2.840.10040.4.1".to_owned(),
        },
    ] {
        claims.key = KeyInfo {
            algorithm,
            bits: 256,
        };
        assert!(matches!(
            refusal(verify(&claims, &expected())),
            Refusal::WeakKey(_)
        ));
    }
}

#[test]
fn tampered_csr_is_refused() {
    let der = Csr::agent().der();
    // Change the challenge the key signed.
    let at = der
        .windows(CHALLENGE.len())
        .position(|w| w == CHALLENGE.as_bytes())
        .unwrap();
    let mut tampered = der.clone();
    tampered[at] = b'f';
    let claims = parse_csr_der(&tampered).unwrap();
    assert!(!claims.signature_valid);
    assert_eq!(refusal(verify(&claims, &expected())), Refusal::BadSignature);

    // Change the signature itself.
    let mut tampered = der.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(
        refusal(verify(&parse_csr_der(&tampered).unwrap(), &expected())),
        Refusal::BadSignature
    );

    // Cut it short.
    assert!(parse_csr_der(&der[..der.len() - 1]).is_err());
    // Append to it.
    let mut longer = der;
    longer.push(0);
    assert!(parse_csr_der(&longer).is_err());
}

#[test]
fn garbage_is_not_parsable() {
    let certificate = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
    let not_der = "-----BEGIN CERTIFICATE REQUEST-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE REQUEST-----\n";
    for text in ["", "garbage", certificate, not_der] {
        let error = parse_csr(text).unwrap_err();
        let refused = refusal(Verdict::Refuse(Refusal::NotParsable(error.to_string())));
        assert_eq!(refused.reason(), "CSRNotParsable");
    }
    assert_eq!(parse_csr("garbage").unwrap_err().category(), "pem");
    assert_eq!(parse_csr(not_der).unwrap_err().category(), "malformed");
}

/// Every single-bit change anywhere in a signed CSR, inside or outside what the
/// signature covers, is refused: the request no longer parses, or no longer
/// verifies.
#[test]
fn flipping_any_bit_of_a_signed_csr_never_signs() {
    let agent = Csr::agent().der();
    for (der, expected) in [(fixture_der(), fixture_expected()), (agent, expected())] {
        assert_eq!(
            verify(&parse_csr_der(&der).unwrap(), &expected),
            Verdict::Sign
        );
        for at in 0..der.len() {
            for bit in 0..8 {
                let mut tampered = der.clone();
                tampered[at] ^= 1 << bit;
                if let Ok(claims) = parse_csr_der(&tampered) {
                    assert_ne!(
                        verify(&claims, &expected),
                        Verdict::Sign,
                        "byte {at}, bit {bit}"
                    );
                }
            }
        }
    }
}

// ---- messages ----

#[test]
fn messages_quote_csr_text_safely() {
    let refused = Refusal::CertnameMismatch {
        requested: Some(format!("evil\n{}", "x".repeat(500))),
        expected: CERTNAME.to_owned(),
    };
    let message = refused.message();
    assert!(!message.contains('\n'), "{message}");
    assert!(message.chars().count() < 200, "{message}");
    let many = Refusal::DnsAltNamesNotAllowed((0..20).map(|i| format!("DNS:n{i}")).collect());
    assert!(
        many.message().ends_with("and 15 more"),
        "{}",
        many.message()
    );
}

#[test]
fn expected_debug_redacts_the_challenge() {
    assert!(!format!("{:?}", expected()).contains(CHALLENGE));
    assert!(!format!("{:?}", Csr::agent().claims()).contains(CHALLENGE));
}

// ---- properties ----

proptest! {
    #[test]
    fn never_signs_with_another_challenge(requested in "\\PC{0,40}", expected_challenge in "[0-9a-f]{32}") {
        prop_assume!(requested != expected_challenge);
        let mut claims = Csr::agent().claims();
        claims.challenge = Some(requested);
        let expected = Expected { challenge: &expected_challenge, ..expected() };
        prop_assert_ne!(verify(&claims, &expected), Verdict::Sign);
        claims.challenge = Some(expected_challenge.clone());
        prop_assert_eq!(verify(&claims, &expected), Verdict::Sign);
    }

    #[test]
    fn never_signs_with_a_challenge_one_character_off(
        expected_challenge in "[0-9a-f]{32}",
        at in 0usize..32,
        replacement in "[0-9a-f]",
    ) {
        let mut requested = expected_challenge.clone();
        requested.replace_range(at..=at, &replacement);
        prop_assume!(requested != expected_challenge);
        let mut claims = Csr::agent().claims();
        claims.challenge = Some(requested);
        let expected = Expected { challenge: &expected_challenge, ..expected() };
        prop_assert_eq!(verify(&claims, &expected), Verdict::Refuse(Refusal::WrongChallenge));
    }

    #[test]
    fn parsing_never_panics(text in "\\PC{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_csr(&text);
        let _ = parse_csr_der(&bytes);
        let wrapped = format!("-----BEGIN CERTIFICATE REQUEST-----\n{text}\n-----END CERTIFICATE REQUEST-----\n");
        let _ = parse_csr(&wrapped);
    }
}
