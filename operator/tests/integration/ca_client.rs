//! The CA client against the real puppetserver (sign, clean, idempotence,
//! TLS refusals) and against local sockets (refusals before any request,
//! unreachable and silent servers).
//!
//! Tests that need the puppetserver skip without `tests/services/up.sh`
//! unless `PC_REQUIRE_SERVICES=1`; the others always run.

use std::time::{Duration, Instant};

use crate::common::services::PuppetServer;
use chrono::Utc;
use puppet_conductor::ca::{CaError, CertState, HttpCa, PuppetCa, DEFAULT_TIMEOUT};
use sha2::{Digest, Sha256};

/// A self-signed certificate and key, as PEM.
fn self_signed(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A client with throwaway TLS material, for servers it never gets to talk TLS with.
fn throwaway_client(base_url: &str, timeout: Duration) -> HttpCa {
    let (cert, key) = self_signed("operator");
    let (ca, _) = self_signed("some ca");
    HttpCa::from_pem(
        base_url,
        cert.as_bytes(),
        key.as_bytes(),
        ca.as_bytes(),
        timeout,
    )
    .unwrap()
}

/// A 127.0.0.1 port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The CA's fingerprint of a PEM certificate: SHA-256 of the DER, `AA:BB:..`.
fn pem_fingerprint(pem: &[u8]) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).unwrap();
    let hex = hex::encode_upper(Sha256::digest(&pem.contents));
    hex.as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// Serials in the CA's CRL.
fn crl_serials(pem: &str) -> Vec<u64> {
    use x509_parser::prelude::FromDer;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    assert_eq!(pem.label, "X509 CRL");
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&pem.contents).unwrap();
    crl.iter_revoked_certificates()
        .filter_map(|r| r.user_certificate.to_u64_digits().first().copied())
        .collect()
}

fn agent_refused(output: &str) -> bool {
    let lower = output.to_lowercase();
    lower.contains("alert certificate") || lower.contains("revoked")
}

#[tokio::test]
async fn signed_agent_gets_its_certificate_and_loses_it_on_clean() {
    let _listing = crate::e2e_support::CA_LISTING.read().await;
    let Some(puppet) = PuppetServer::from_env() else {
        return;
    };
    let ca = puppet.ca_client(DEFAULT_TIMEOUT);
    let certname = crate::common::unique_certname("ca-client-sign");

    let run = puppet
        .run_agent(&certname, Some("c"), Some("i-1"), None)
        .await;
    assert_eq!(run.code, 1, "unsigned agent:\n{}", run.output);

    ca.sign(&certname).await.expect("sign");
    let info = ca.status(&certname).await.expect("status").expect("known");
    assert_eq!(info.state, CertState::Signed);
    let fingerprint = info.fingerprint.clone().expect("fingerprint");
    let not_after = info.not_after.expect("not_after");
    assert!(not_after > Utc::now(), "{info:?}");
    assert!(
        info.not_before.expect("not_before") < Utc::now(),
        "{info:?}"
    );
    assert!(info.serial.is_some(), "{info:?}");
    // Level-triggered: signing again is success, not a conflict.
    ca.sign(&certname).await.expect("sign again");
    let signed = ca.list(Some(CertState::Signed)).await.expect("list");
    assert!(signed
        .iter()
        .any(|i| i.name == certname && i.fingerprint.as_deref() == Some(fingerprint.as_str())));
    assert!(
        ca.csr_pem(&certname).await.expect("csr").is_none(),
        "CSR gone once signed"
    );

    // The agent fetches its certificate; the catalog may fail without an ENC.
    let run = puppet
        .run_agent(&certname, Some("c"), Some("i-1"), None)
        .await;
    let cert_file = puppet
        .agent_ssl_dir(&certname)
        .join("certs")
        .join(format!("{certname}.pem"));
    let cert_pem = std::fs::read(&cert_file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; agent output:\n{}",
            cert_file.display(),
            run.output
        )
    });
    assert_eq!(pem_fingerprint(&cert_pem), fingerprint);
    assert!(matches!(run.code, 0..=2), "{}", run.output);
    if run.code == 1 {
        assert!(!agent_refused(&run.output), "TLS refused:\n{}", run.output);
        assert!(run.output.contains("catalog"), "{}", run.output);
    }

    ca.revoke_and_clean(&certname)
        .await
        .expect("revoke_and_clean");
    assert!(ca.status(&certname).await.expect("status").is_none());
    let serial = info.serial.expect("serial");
    assert!(crl_serials(&ca.crl().await.expect("crl")).contains(&serial));

    // The revoked agent is refused; the CRL reload is live but allow a moment.
    let mut last = String::new();
    for _ in 0..3 {
        let run = puppet
            .run_agent(&certname, Some("c"), Some("i-1"), None)
            .await;
        if run.code != 0 && run.code != 2 && agent_refused(&run.output) {
            last.clear();
            break;
        }
        last = run.output;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(last.is_empty(), "agent still accepted after clean:\n{last}");

    // Idempotent.
    ca.revoke_and_clean(&certname).await.expect("clean twice");
}

#[tokio::test]
async fn clean_of_unknown_certname_is_ok_and_sign_is_not_found() {
    let Some(puppet) = PuppetServer::from_env() else {
        return;
    };
    let ca = puppet.ca_client(DEFAULT_TIMEOUT);
    let certname = crate::common::unique_certname("ca-client-unknown");
    ca.revoke_and_clean(&certname)
        .await
        .expect("unknown is already clean");
    assert!(ca.status(&certname).await.expect("status").is_none());
    assert!(ca.csr_pem(&certname).await.expect("csr").is_none());
    let err = ca.sign(&certname).await.expect_err("nothing to sign");
    assert_eq!(err.http_status(), Some(404), "{err:?}");
    assert_eq!(err.category(), "not_found");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn dns_alt_names_show_in_the_status() {
    let Some(puppet) = PuppetServer::from_env() else {
        return;
    };
    let ca = puppet.ca_client(DEFAULT_TIMEOUT);
    let certname = crate::common::unique_certname("ca-client-alt");
    let run = puppet
        .run_agent(&certname, None, None, Some("alt-a.example,alt-b.example"))
        .await;
    assert_eq!(run.code, 1, "{}", run.output);
    let info = ca.status(&certname).await.expect("status").expect("known");
    assert_eq!(info.state, CertState::Requested);
    for name in ["DNS:alt-a.example", "DNS:alt-b.example"] {
        assert!(info.dns_alt_names.iter().any(|n| n == name), "{info:?}");
    }
    ca.revoke_and_clean(&certname).await.expect("clean");
    assert!(ca.status(&certname).await.expect("status").is_none());
}

#[tokio::test]
async fn ca_certificate_and_crl_are_served() {
    let Some(puppet) = PuppetServer::from_env() else {
        return;
    };
    let ca = puppet.ca_client(DEFAULT_TIMEOUT);
    let ca_pem = ca.ca_certificate().await.expect("ca certificate");
    assert_eq!(
        pem_fingerprint(ca_pem.as_bytes()),
        pem_fingerprint(&puppet.ca_pem())
    );
    let crl = ca.crl().await.expect("crl");
    crl_serials(&crl);
}

#[tokio::test]
async fn unknown_client_certificate_is_a_permanent_tls_error() {
    let Some(puppet) = PuppetServer::from_env() else {
        return;
    };
    // Same name as the real operator certificate, but not issued by the CA.
    let (cert, key) = self_signed("puppet-conductor-operator");
    let ca = HttpCa::from_pem(
        &puppet.ca_url,
        cert.as_bytes(),
        key.as_bytes(),
        &puppet.ca_pem(),
        DEFAULT_TIMEOUT,
    )
    .unwrap();
    let err = ca
        .list(None)
        .await
        .expect_err("untrusted client certificate");
    assert!(matches!(err, CaError::Tls { .. }), "{err:?}");
    assert_eq!(err.category(), "tls");
    assert!(!err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn untrusted_server_certificate_is_a_permanent_tls_error() {
    let Some(puppet) = PuppetServer::from_env() else {
        return;
    };
    // Only the configured CA is trusted, and this one did not sign the server.
    let ca = throwaway_client(&puppet.ca_url, DEFAULT_TIMEOUT);
    let err = ca.ca_certificate().await.expect_err("untrusted server");
    assert!(matches!(err, CaError::Tls { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn invalid_certnames_are_refused_before_any_request() {
    // Nothing listens there: any request would fail with `connect` instead.
    let ca = throwaway_client(
        &format!("https://127.0.0.1:{}", closed_port()),
        DEFAULT_TIMEOUT,
    );
    for certname in [
        "../x",
        "a/b",
        "Upper",
        "",
        "..",
        "a?state=signed",
        "x%2f..%2fclean",
    ] {
        let results = [
            ca.status(certname).await.map(|_| ()),
            ca.csr_pem(certname).await.map(|_| ()),
            ca.sign(certname).await,
            ca.revoke_and_clean(certname).await,
        ];
        for result in results {
            let err = result.expect_err(certname);
            assert!(
                matches!(err, CaError::InvalidCertname { .. }),
                "{certname}: {err:?}"
            );
            assert!(!err.is_retryable());
        }
    }
}

#[tokio::test]
async fn unreachable_ca_is_retryable_within_the_timeout() {
    let timeout = Duration::from_secs(2);
    let ca = throwaway_client(&format!("https://127.0.0.1:{}", closed_port()), timeout);
    let started = Instant::now();
    let err = ca.list(None).await.expect_err("closed port");
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    assert_eq!(err.category(), "connect", "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn silent_ca_times_out_and_is_retryable() {
    // Accepts connections but never answers the TLS handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(800);
    let ca = throwaway_client(&format!("https://127.0.0.1:{port}"), timeout);
    let started = Instant::now();
    let err = ca.crl().await.expect_err("silent server");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_millis(500),
        "{elapsed:?}"
    );
    assert!(matches!(err, CaError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    hold.abort();
}
