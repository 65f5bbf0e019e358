//! Foundation smoke test against the real puppetserver: a real `puppet agent`
//! submits a CSR carrying a challenge and `pp_instance_id`; the operator's CA
//! client sees it waiting, reads both attributes from the CSR, finds nothing
//! signed it, and removes it.
//!
//! Needs `tests/services/up.sh`; skipped without it unless `PC_REQUIRE_SERVICES=1`.

use std::time::Duration;

use crate::common::services::PuppetServer;
use puppet_conductor::ca::{CertState, PuppetCa, DEFAULT_TIMEOUT};
use sha2::{Digest, Sha256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::der_parser::der::parse_der_utf8string;
use x509_parser::prelude::FromDer;

const OID_CHALLENGE_PASSWORD: &str = "1.2.840.113549.1.9.7";
const OID_PP_INSTANCE_ID: &str = "1.3.6.1.4.1.34380.1.1.2";

/// What the tests read from a CSR.
#[derive(Debug, Default)]
struct CsrAttributes {
    subject_cn: Option<String>,
    challenge: Option<String>,
    instance_id: Option<String>,
    sha256: String,
}

fn csr_attributes(pem: &str) -> CsrAttributes {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("CSR PEM");
    assert_eq!(pem.label, "CERTIFICATE REQUEST");
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents).expect("CSR DER");
    let mut found = CsrAttributes {
        subject_cn: csr
            .certification_request_info
            .subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        sha256: fingerprint(&pem.contents),
        ..CsrAttributes::default()
    };
    for attribute in csr.certification_request_info.iter_attributes() {
        match attribute.parsed_attribute() {
            ParsedCriAttribute::ChallengePassword(p) => {
                assert_eq!(attribute.oid.to_id_string(), OID_CHALLENGE_PASSWORD);
                found.challenge = Some(p.0.clone());
            }
            ParsedCriAttribute::ExtensionRequest(request) => {
                for ext in &request.extensions {
                    if ext.oid.to_id_string() == OID_PP_INSTANCE_ID {
                        // Puppet encodes extension request values as a DER UTF8String.
                        let (_, value) = parse_der_utf8string(ext.value).expect("UTF8String");
                        found.instance_id = Some(value.as_str().expect("string").to_owned());
                    }
                }
            }
            ParsedCriAttribute::UnsupportedAttribute => {}
        }
    }
    found
}

/// The CA's fingerprint format: upper-case hex pairs joined by ':'.
fn fingerprint(der: &[u8]) -> String {
    let hex = hex::encode_upper(Sha256::digest(der));
    hex.as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test]
async fn agent_csr_is_listed_with_its_attributes_and_left_unsigned() {
    let _listing = crate::e2e_support::CA_LISTING.read().await;
    let Some(puppet) = PuppetServer::from_env() else {
        return;
    };
    let ca = puppet.ca_client(DEFAULT_TIMEOUT);
    let certname = crate::common::unique_certname("ca-smoke");
    // Shaped like the operator's challenges: hex of a digest, unique per certname.
    let challenge = hex::encode(Sha256::digest(certname.as_bytes()))[..32].to_owned();
    let instance_id = "i-0123456789abcdef0";

    let run = puppet
        .run_agent(&certname, Some(&challenge), Some(instance_id), None)
        .await;
    assert_eq!(run.code, 1, "an unsigned agent exits 1:\n{}", run.output);

    // Listed as waiting, through the one-call listing the reconciler polls.
    let requested = ca.list(Some(CertState::Requested)).await.expect("list");
    let info = requested
        .iter()
        .find(|i| i.name == certname)
        .unwrap_or_else(|| panic!("{certname} not among requested CSRs: {requested:?}"));
    assert_eq!(info.state, CertState::Requested);
    assert!(info.dns_alt_names.is_empty(), "{info:?}");
    assert!(
        info.not_after.is_none() && info.serial.is_none(),
        "{info:?}"
    );

    // The CSR itself carries what the agent was given.
    let pem = ca
        .csr_pem(&certname)
        .await
        .expect("csr")
        .expect("CSR present");
    let csr = csr_attributes(&pem);
    assert_eq!(csr.subject_cn.as_deref(), Some(certname.as_str()));
    assert_eq!(csr.challenge.as_deref(), Some(challenge.as_str()));
    assert_eq!(csr.instance_id.as_deref(), Some(instance_id));
    // The status fingerprint is the CSR's SHA-256.
    assert_eq!(info.fingerprint.as_deref(), Some(csr.sha256.as_str()));

    // Nothing signs it by itself (autosign is off or declines).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = ca
        .status(&certname)
        .await
        .expect("status")
        .expect("still known");
    assert_eq!(status.state, CertState::Requested);
    let signed = ca.list(Some(CertState::Signed)).await.expect("list signed");
    assert!(signed.iter().all(|i| i.name != certname));

    // Cleanup really removes the waiting CSR.
    ca.revoke_and_clean(&certname)
        .await
        .expect("revoke_and_clean");
    assert!(ca.status(&certname).await.expect("status").is_none());
    assert!(ca.csr_pem(&certname).await.expect("csr").is_none());
    let all = ca.list(None).await.expect("list all");
    assert!(all.iter().all(|i| i.name != certname));
}

/// The parsing above, on a CSR captured from a real agent (no services needed).
#[test]
fn captured_agent_csr_carries_challenge_and_instance_id() {
    let pem = include_str!("../../../tests/fixtures/ca/certificate_request_requested.pem");
    let csr = csr_attributes(pem);
    assert_eq!(csr.subject_cn.as_deref(), Some("fixture-requested"));
    assert_eq!(csr.challenge.as_deref(), Some("c-123"));
    assert_eq!(csr.instance_id.as_deref(), Some("i-0abc"));
    // certificate_status_requested.json reports this fingerprint for it.
    assert_eq!(
        csr.sha256,
        "1B:ED:B3:74:10:F5:51:0C:B7:25:44:7E:8C:FE:A3:87:E3:3F:2C:B2:07:3A:24:49:48:80:5F:47:89:8B:BC:30"
    );
}
