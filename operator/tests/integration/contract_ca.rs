//! Contract: one list of cases over `&dyn PuppetCa` plus the agent's submission, run
//! against `HttpCa` on the real puppetserver and against `FakeCa`, so the fake cannot
//! drift from puppetserver 7.9 as the real client sees it.
//!
//! Against the real CA every certname is unique and removed again (the cleanup guard of
//! `ca_hostile_contract.rs`); each case holds [`crate::e2e_support::CA_LISTING`] for
//! reading, and the one that breaks the listing holds
//! [`crate::e2e_support::PUPPETSERVER`] and `CA_LISTING` for writing, as the hostile
//! contract tests do. The real side needs `tests/services/up.sh`; skipped without it
//! unless `PC_REQUIRE_SERVICES=1`.

use std::sync::Mutex;
use std::time::Duration;

use chrono::TimeDelta;
use puppet_conductor::ca::{CaError, CertState, HttpCa, PuppetCa};
use puppet_conductor::certificate::{pem_fingerprint, pem_public_key_sha256};
use puppet_conductor::csr::parse_csr;
use puppet_conductor::fakes::ca::FakeCa;
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair, SanType};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::sync::{MutexGuard, RwLockReadGuard, RwLockWriteGuard};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca_hostile_contract::{forge_csr, submit_csr, CleanupGuard};
use crate::common::services::PuppetServer;
use crate::common::unique_certname;

const PP_INSTANCE_ID: &str = "1.3.6.1.4.1.34380.1.1.2";
const OID_PP_INSTANCE_ID: &[u64] = &[1, 3, 6, 1, 4, 1, 34380, 1, 1, 2];
const OID_PP_CLI_AUTH: &[u64] = &[1, 3, 6, 1, 4, 1, 34380, 1, 3, 39];

/// What a case needs from a backend besides `PuppetCa`.
#[async_trait::async_trait]
trait Backend: Send + Sync {
    /// The operator's client.
    fn ca(&self) -> &dyn PuppetCa;
    /// An agent submits `pem` for `certname`: accepted, or the status and body.
    async fn submit(&self, certname: &str, pem: &str) -> Result<(), (u16, String)>;
    /// An administrator revokes `certname` without cleaning it.
    async fn revoke_outside(&self, certname: &str);
    /// A certname no earlier run used, removed from the CA after the case.
    fn certname(&self, prefix: &str) -> String;
}

struct Real {
    // Dropped first: the certnames are removed while the locks are still held.
    cleanup: Mutex<CleanupGuard>,
    puppet: PuppetServer,
    ca: HttpCa,
    _puppetserver: Option<MutexGuard<'static, ()>>,
    _exclusive: Option<RwLockWriteGuard<'static, ()>>,
    _listing: Option<RwLockReadGuard<'static, ()>>,
}

impl Real {
    /// `None` (skip) without the puppetserver. `exclusive` for a case that breaks the
    /// listing: no other test may list meanwhile.
    async fn connect(exclusive: bool) -> Option<Self> {
        let puppet = PuppetServer::from_env()?;
        let (puppetserver, exclusive, listing) = if exclusive {
            let puppetserver = crate::e2e_support::PUPPETSERVER.lock().await;
            let listing = crate::e2e_support::CA_LISTING.write().await;
            (Some(puppetserver), Some(listing), None)
        } else {
            (
                None,
                None,
                Some(crate::e2e_support::CA_LISTING.read().await),
            )
        };
        Some(Self {
            cleanup: Mutex::new(CleanupGuard::new(&puppet)),
            ca: puppet.ca_client(Duration::from_secs(30)),
            puppet,
            _puppetserver: puppetserver,
            _exclusive: exclusive,
            _listing: listing,
        })
    }
}

#[async_trait::async_trait]
impl Backend for Real {
    fn ca(&self) -> &dyn PuppetCa {
        &self.ca
    }
    async fn submit(&self, certname: &str, pem: &str) -> Result<(), (u16, String)> {
        match submit_csr(&self.puppet, certname, pem).await {
            (StatusCode::OK, _) => Ok(()),
            (status, body) => Err((status.as_u16(), body.trim().to_owned())),
        }
    }
    async fn revoke_outside(&self, certname: &str) {
        let status = admin_put(
            &self.puppet,
            &format!("certificate_status/{certname}"),
            r#"{"desired_state":"revoked"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "revoking {certname}");
    }
    fn certname(&self, prefix: &str) -> String {
        let certname = unique_certname(prefix);
        self.cleanup.lock().unwrap().add(&certname);
        certname
    }
}

struct Fake(FakeCa);

#[async_trait::async_trait]
impl Backend for Fake {
    fn ca(&self) -> &dyn PuppetCa {
        &self.0
    }
    async fn submit(&self, certname: &str, pem: &str) -> Result<(), (u16, String)> {
        self.0
            .submit_csr(certname, pem)
            .map_err(|r| (r.status, r.message))
    }
    async fn revoke_outside(&self, certname: &str) {
        assert!(self.0.revoke_outside(certname), "revoking {certname}");
    }
    fn certname(&self, prefix: &str) -> String {
        unique_certname(prefix)
    }
}

/// A PUT with the operator's client certificate (an administrator's call).
async fn admin_put(puppet: &PuppetServer, path: &str, json: &str) -> StatusCode {
    let mut identity = std::fs::read(&puppet.client_cert).unwrap();
    identity.push(b'\n');
    identity.extend(std::fs::read(&puppet.client_key).unwrap());
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&puppet.ca_pem()).unwrap())
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    client
        .put(format!("{}/puppet-ca/v1/{path}", puppet.ca_url))
        .header("content-type", "application/json")
        .body(json.to_owned())
        .send()
        .await
        .unwrap()
        .status()
}

/// Each case as a test on the real CA (`contract_ca::real::<case>`) and on the fake
/// (`contract_ca::fake::<case>`); `exclusive` cases hold the real CA alone.
macro_rules! contract {
    (shared: [$($shared:ident),* $(,)?], exclusive: [$($exclusive:ident),* $(,)?] $(,)?) => {
        mod real {
            $(
                #[tokio::test]
                async fn $shared() {
                    if let Some(backend) = super::Real::connect(false).await {
                        super::$shared(&backend).await;
                    }
                }
            )*
            $(
                #[tokio::test]
                async fn $exclusive() {
                    if let Some(backend) = super::Real::connect(true).await {
                        super::$exclusive(&backend).await;
                    }
                }
            )*
        }
        mod fake {
            $(
                #[tokio::test]
                async fn $shared() {
                    super::$shared(&super::Fake(super::FakeCa::default())).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $exclusive() {
                    super::$exclusive(&super::Fake(super::FakeCa::default())).await;
                }
            )*
        }
    };
}

contract!(
    shared: [
        a_submitted_csr_is_listed_as_requested,
        an_unknown_certname_has_nothing_and_cannot_be_signed,
        signing_issues_a_certificate_for_the_csr_key,
        a_second_submission_is_refused_as_puppetserver_refuses_it,
        a_revoked_certificate_cannot_be_signed_or_replaced,
        remove_request_removes_only_a_waiting_csr,
        revoke_and_clean_revokes_and_frees_the_certname,
        signing_refuses_authorization_and_unknown_extensions,
        alt_names_are_reported_in_puppetservers_order,
        the_ca_certificate_and_crl_are_served,
    ],
    exclusive: [a_repeated_extension_breaks_the_listing],
);

// ---------------------------------------------------------------- helpers

/// A CSR for `cn` with a new P-256 key, `pp_instance_id` and the given extensions and
/// alt names.
fn csr_with(cn: &str, extensions: Vec<CustomExtension>, sans: Vec<SanType>) -> String {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.custom_extensions = vec![utf8_extension(OID_PP_INSTANCE_ID, "i-0contract")];
    params.custom_extensions.extend(extensions);
    params.subject_alt_names = sans;
    let key = KeyPair::generate().unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn utf8_extension(oid: &[u64], value: &str) -> CustomExtension {
    let mut content = vec![0x0c, u8::try_from(value.len()).unwrap()];
    content.extend_from_slice(value.as_bytes());
    CustomExtension::from_oid_content(oid, content)
}

fn agent_csr(certname: &str) -> String {
    forge_csr(
        certname,
        Some("contract-challenge"),
        Some("i-0contract"),
        false,
    )
    .0
}

fn der_of(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

/// The CA's fingerprint form: SHA-256, `AA:BB:..`.
fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn crl_serials(pem: &str) -> Vec<u64> {
    let der = der_of(pem);
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
    crl.iter_revoked_certificates()
        .filter_map(|r| r.user_certificate.to_u64_digits().first().copied())
        .collect()
}

/// HTTP status, category and message of a CA error.
fn status_of(err: &CaError) -> (Option<u16>, &'static str, String) {
    let message = match err {
        CaError::Status { message, .. } => message.clone(),
        _ => String::new(),
    };
    (err.http_status(), err.category(), message)
}

/// Submits the operator-shaped CSR for a new certname; the certname and the PEM.
async fn submitted(b: &dyn Backend, prefix: &str) -> (String, String) {
    let certname = b.certname(prefix);
    let pem = agent_csr(&certname);
    b.submit(&certname, &pem).await.unwrap();
    (certname, pem)
}

// ---------------------------------------------------------------- the cases

async fn a_submitted_csr_is_listed_as_requested(b: &dyn Backend) {
    let ca = b.ca();
    let (certname, pem) = submitted(b, "contract-requested").await;
    let info = ca.status(&certname).await.unwrap().expect("requested");
    assert_eq!(info.state, CertState::Requested);
    assert_eq!(info.fingerprint, Some(fingerprint(&der_of(&pem))));
    assert!(info.dns_alt_names.is_empty(), "{info:?}");
    assert!(info.authorization_extensions.is_empty(), "{info:?}");
    assert_eq!(
        (info.serial, info.not_before, info.not_after),
        (None, None, None)
    );
    for state in [None, Some(CertState::Requested)] {
        let listed = ca.list(state).await.unwrap();
        assert!(listed.contains(&info), "{state:?}");
    }
    let signed = ca.list(Some(CertState::Signed)).await.unwrap();
    assert!(signed.iter().all(|i| i.name != certname));
    let at_ca = ca.csr_pem(&certname).await.unwrap().expect("the CSR");
    assert_eq!(der_of(&at_ca), der_of(&pem));
    assert_eq!(ca.certificate_pem(&certname).await.unwrap(), None);
    ca.revoke_and_clean(&certname).await.unwrap();
    assert_eq!(ca.status(&certname).await.unwrap(), None);
}

async fn an_unknown_certname_has_nothing_and_cannot_be_signed(b: &dyn Backend) {
    let ca = b.ca();
    let certname = b.certname("contract-unknown");
    assert_eq!(ca.status(&certname).await.unwrap(), None);
    assert_eq!(ca.csr_pem(&certname).await.unwrap(), None);
    assert_eq!(ca.certificate_pem(&certname).await.unwrap(), None);
    let err = ca.sign(&certname).await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (
            Some(404),
            "not_found",
            "Invalid certificate subject.".to_owned()
        )
    );
    assert!(!err.is_retryable());
    ca.revoke_and_clean(&certname).await.unwrap();
    assert!(!ca.remove_request(&certname).await.unwrap());
}

async fn signing_issues_a_certificate_for_the_csr_key(b: &dyn Backend) {
    let ca = b.ca();
    let (certname, pem) = submitted(b, "contract-sign").await;
    ca.sign(&certname).await.unwrap();
    let info = ca.status(&certname).await.unwrap().expect("signed");
    assert_eq!(info.state, CertState::Signed);
    let serial = info.serial.expect("a serial");
    let cert_pem = ca
        .certificate_pem(&certname)
        .await
        .unwrap()
        .expect("served");
    assert_eq!(info.fingerprint, pem_fingerprint(&cert_pem));
    assert_eq!(
        pem_public_key_sha256(&cert_pem),
        Some(parse_csr(&pem).unwrap().public_key_sha256)
    );
    assert_eq!(info.dns_alt_names, [format!("DNS:{certname}")]);
    assert_eq!(info.subject_alt_names, [format!("DNS:{certname}")]);
    let (not_before, not_after) = (info.not_before.unwrap(), info.not_after.unwrap());
    // Backdated a day, valid five years (puppet's ca_ttl).
    assert_eq!(not_after - not_before, TimeDelta::days(5 * 365 + 1));
    assert_eq!(
        ca.csr_pem(&certname).await.unwrap(),
        None,
        "the CSR is gone"
    );
    let signed = ca.list(Some(CertState::Signed)).await.unwrap();
    assert!(signed.contains(&info));

    let der = der_of(&cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(cert.tbs_certificate.serial.to_u64_digits(), vec![serial]);
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        certname
    );
    let instance_id = cert
        .iter_extensions()
        .find(|e| e.oid.to_id_string() == PP_INSTANCE_ID)
        .expect("pp_instance_id in the certificate");
    assert_eq!(instance_id.value, b"\x0c\x0bi-0contract".as_slice());
    let ca_der = der_of(&ca.ca_certificate().await.unwrap());
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(cert.issuer(), ca_cert.subject());
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();

    // Level-triggered: signing again is success.
    ca.sign(&certname).await.unwrap();
    ca.revoke_and_clean(&certname).await.unwrap();
}

async fn a_second_submission_is_refused_as_puppetserver_refuses_it(b: &dyn Backend) {
    let ca = b.ca();
    let (certname, _) = submitted(b, "contract-twice").await;
    let refused = |state: &str| -> Result<(), (u16, String)> {
        Err((
            400,
            format!("{certname} already has a {state} certificate; ignoring certificate request"),
        ))
    };
    assert_eq!(
        b.submit(&certname, &agent_csr(&certname)).await,
        refused("requested")
    );
    ca.sign(&certname).await.unwrap();
    assert_eq!(
        b.submit(&certname, &agent_csr(&certname)).await,
        refused("signed")
    );

    let other = b.certname("contract-mismatch");
    assert_eq!(
        b.submit(&other, &agent_csr(&format!("{other}-x"))).await,
        Err((
            400,
            format!("Instance name \"{other}-x\" does not match requested key \"{other}\"")
        ))
    );
    assert_eq!(ca.status(&other).await.unwrap(), None);
    ca.revoke_and_clean(&certname).await.unwrap();
}

async fn a_revoked_certificate_cannot_be_signed_or_replaced(b: &dyn Backend) {
    let ca = b.ca();
    let (certname, _) = submitted(b, "contract-revoked").await;
    ca.sign(&certname).await.unwrap();
    b.revoke_outside(&certname).await;
    let info = ca.status(&certname).await.unwrap().expect("still there");
    assert_eq!(info.state, CertState::Revoked);
    assert!(
        ca.certificate_pem(&certname).await.unwrap().is_some(),
        "still served"
    );
    assert!(ca
        .list(Some(CertState::Revoked))
        .await
        .unwrap()
        .contains(&info));
    assert!(ca
        .list(Some(CertState::Signed))
        .await
        .unwrap()
        .iter()
        .all(|i| i.name != certname));
    assert!(crl_serials(&ca.crl().await.unwrap()).contains(&info.serial.unwrap()));

    let err = ca.sign(&certname).await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (
            Some(409),
            "conflict",
            format!("Cannot sign certificate for host {certname} without a certificate request")
        )
    );
    assert_eq!(
        b.submit(&certname, &agent_csr(&certname)).await,
        Err((
            400,
            format!("{certname} already has a revoked certificate; ignoring certificate request")
        ))
    );
    ca.revoke_and_clean(&certname).await.unwrap();
    assert_eq!(ca.status(&certname).await.unwrap(), None);
}

async fn remove_request_removes_only_a_waiting_csr(b: &dyn Backend) {
    let ca = b.ca();
    let (waiting, _) = submitted(b, "contract-remove").await;
    assert!(ca.remove_request(&waiting).await.unwrap());
    assert_eq!(ca.status(&waiting).await.unwrap(), None);
    assert!(!ca.remove_request(&waiting).await.unwrap());

    let (signed, _) = submitted(b, "contract-remove-signed").await;
    ca.sign(&signed).await.unwrap();
    assert!(!ca.remove_request(&signed).await.unwrap());
    assert_eq!(
        ca.status(&signed).await.unwrap().map(|i| i.state),
        Some(CertState::Signed)
    );
    ca.revoke_and_clean(&signed).await.unwrap();
}

async fn revoke_and_clean_revokes_and_frees_the_certname(b: &dyn Backend) {
    let ca = b.ca();
    let (certname, first) = submitted(b, "contract-clean").await;
    ca.sign(&certname).await.unwrap();
    let serial = ca.status(&certname).await.unwrap().unwrap().serial.unwrap();
    ca.revoke_and_clean(&certname).await.unwrap();
    assert_eq!(ca.status(&certname).await.unwrap(), None);
    assert_eq!(ca.certificate_pem(&certname).await.unwrap(), None);
    assert!(crl_serials(&ca.crl().await.unwrap()).contains(&serial));
    ca.revoke_and_clean(&certname).await.unwrap();

    // Free again: a CSR with a new key is taken and waits; cleaning removes it too.
    let second = agent_csr(&certname);
    b.submit(&certname, &second).await.unwrap();
    let again = ca
        .status(&certname)
        .await
        .unwrap()
        .expect("requested again");
    assert_eq!(again.state, CertState::Requested);
    assert_eq!(again.fingerprint, Some(fingerprint(&der_of(&second))));
    assert_ne!(der_of(&second), der_of(&first));
    ca.revoke_and_clean(&certname).await.unwrap();
    assert_eq!(ca.status(&certname).await.unwrap(), None);
}

async fn signing_refuses_authorization_and_unknown_extensions(b: &dyn Backend) {
    let ca = b.ca();
    let cli = b.certname("contract-cli-auth");
    let pem = csr_with(&cli, vec![utf8_extension(OID_PP_CLI_AUTH, "true")], vec![]);
    b.submit(&cli, &pem).await.unwrap();
    let info = ca.status(&cli).await.unwrap().expect("requested");
    assert_eq!(
        info.authorization_extensions
            .get("pp_cli_auth")
            .map(String::as_str),
        Some("true")
    );
    let err = ca.sign(&cli).await.unwrap_err();
    let (status, category, message) = status_of(&err);
    assert_eq!((status, category), (Some(409), "conflict"), "{message}");
    assert!(
        message.starts_with(&format!(
            "CSR '{cli}' contains an authorization extension, which is disallowed."
        )),
        "{message}"
    );

    let unknown = b.certname("contract-unknown-ext");
    let pem = csr_with(
        &unknown,
        vec![utf8_extension(&[1, 2, 3, 4, 5], "x")],
        vec![],
    );
    b.submit(&unknown, &pem).await.unwrap();
    let err = ca.sign(&unknown).await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (
            Some(409),
            "conflict",
            "Found extensions that are not permitted: 1.2.3.4.5".to_owned()
        )
    );
    for certname in [&cli, &unknown] {
        assert_eq!(
            ca.status(certname).await.unwrap().map(|i| i.state),
            Some(CertState::Requested)
        );
        assert!(ca.remove_request(certname).await.unwrap());
    }
}

async fn alt_names_are_reported_in_puppetservers_order(b: &dyn Backend) {
    let ca = b.ca();
    let certname = b.certname("contract-alt");
    let sans = vec![
        SanType::DnsName("zz.example".try_into().unwrap()),
        SanType::IpAddress("10.1.2.3".parse().unwrap()),
        SanType::DnsName("aa.example".try_into().unwrap()),
    ];
    b.submit(&certname, &csr_with(&certname, vec![], sans))
        .await
        .unwrap();
    let requested = ca.status(&certname).await.unwrap().unwrap();
    assert_eq!(
        requested.dns_alt_names,
        ["DNS:zz.example", "DNS:aa.example"]
    );
    assert_eq!(
        requested.subject_alt_names,
        ["IP:10.1.2.3", "DNS:zz.example", "DNS:aa.example"]
    );
    ca.sign(&certname).await.unwrap();
    let signed = ca.status(&certname).await.unwrap().unwrap();
    let own = format!("DNS:{certname}");
    assert_eq!(
        signed.dns_alt_names,
        ["DNS:zz.example", "DNS:aa.example", own.as_str()]
    );
    assert_eq!(
        signed.subject_alt_names,
        [
            "IP:10.1.2.3",
            "DNS:zz.example",
            "DNS:aa.example",
            own.as_str()
        ]
    );
    ca.revoke_and_clean(&certname).await.unwrap();
}

async fn a_repeated_extension_breaks_the_listing(b: &dyn Backend) {
    let ca = b.ca();
    let (good, _) = submitted(b, "contract-good").await;
    let bad = b.certname("contract-dupext");
    let (bad_pem, _) = forge_csr(&bad, Some("c"), Some("i-0bbb"), true);
    b.submit(&bad, &bad_pem).await.unwrap();

    let broken = (
        Some(500),
        "server_error",
        format!(
            "Internal Server Error: java.lang.IllegalArgumentException: \
             repeated extension found: {PP_INSTANCE_ID}"
        ),
    );
    for state in [None, Some(CertState::Requested)] {
        let err = ca.list(state).await.unwrap_err();
        assert_eq!(status_of(&err), broken, "{state:?}");
        assert!(err.is_retryable());
    }
    for state in [CertState::Signed, CertState::Revoked] {
        let listed = ca.list(Some(state)).await.unwrap();
        assert!(listed.iter().all(|i| i.name != bad), "{state:?}");
    }
    assert_eq!(status_of(&ca.status(&bad).await.unwrap_err()), broken);
    assert_eq!(status_of(&ca.sign(&bad).await.unwrap_err()), broken);
    assert_eq!(
        ca.status(&good).await.unwrap().map(|i| i.state),
        Some(CertState::Requested)
    );
    let served = ca.csr_pem(&bad).await.unwrap().expect("the CSR is served");
    assert_eq!(der_of(&served), der_of(&bad_pem));

    // Removing it (through the CSR, as its status cannot be read) heals the listing.
    assert!(ca.remove_request(&bad).await.unwrap());
    let listed = ca.list(Some(CertState::Requested)).await.unwrap();
    assert!(listed.iter().any(|i| i.name == good));
    assert!(listed.iter().all(|i| i.name != bad));
    assert!(ca.remove_request(&good).await.unwrap());
}

async fn the_ca_certificate_and_crl_are_served(b: &dyn Backend) {
    let ca = b.ca();
    let pem = ca.ca_certificate().await.unwrap();
    let der = der_of(&pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert!(cert.is_ca());
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert!(
        cn.as_str().unwrap().starts_with("Puppet CA: "),
        "{:?}",
        cn.as_str()
    );
    cert.verify_signature(None).unwrap();
    let crl = ca.crl().await.unwrap();
    let crl_der = der_of(&crl);
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl_der).unwrap();
    assert_eq!(crl.issuer(), cert.subject());
}
