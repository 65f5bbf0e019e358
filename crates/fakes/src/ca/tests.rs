use std::sync::Weak;

use chrono::TimeZone;
use rcgen::{Attribute, CertificateParams, CustomExtension, SanType};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::csr::NOT_PEM;
use super::pki::common_name;
use super::*;
use puppet_conductor_core::certificate::{pem_fingerprint, pem_public_key_sha256};
use puppet_conductor_core::csr::parse_csr;

/// A real puppet agent's CSR (RSA 4096, CN fixture-requested, alt names, pp_instance_id).
const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/ca/certificate_request_requested.pem"
));
const OID_CHALLENGE_PASSWORD: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];
const OID_PP_INSTANCE_ID: &[u64] = &[1, 3, 6, 1, 4, 1, 34380, 1, 1, 2];
const OID_PP_CLI_AUTH: &[u64] = &[1, 3, 6, 1, 4, 1, 34380, 1, 3, 39];
const OID_PP_AUTH_ROLE: &[u64] = &[1, 3, 6, 1, 4, 1, 34380, 1, 3, 13];

fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    assert!(content.len() < 0x80);
    let mut out = vec![tag, u8::try_from(content.len()).unwrap()];
    out.extend_from_slice(content);
    out
}

fn utf8_extension(oid: &[u64], value: &str) -> CustomExtension {
    CustomExtension::from_oid_content(oid, tlv(0x0c, value.as_bytes()))
}

/// A CSR to build: CN, challenge, requested extensions and alt names; a new P-256 key.
struct Build {
    cn: String,
    extensions: Vec<CustomExtension>,
    sans: Vec<SanType>,
    attributes: Vec<Attribute>,
}

impl Build {
    /// What an agent of the operator's user data sends.
    fn agent(cn: &str) -> Self {
        Self {
            cn: cn.to_owned(),
            extensions: vec![utf8_extension(OID_PP_INSTANCE_ID, "i-0abc")],
            sans: Vec::new(),
            attributes: vec![Attribute {
                oid: OID_CHALLENGE_PASSWORD,
                values: tlv(0x31, &tlv(0x13, b"challenge")),
            }],
        }
    }

    fn extension(mut self, extension: CustomExtension) -> Self {
        self.extensions.push(extension);
        self
    }

    fn san(mut self, san: SanType) -> Self {
        self.sans.push(san);
        self
    }

    fn pem(self) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&self.cn);
        params.custom_extensions = self.extensions;
        params.subject_alt_names = self.sans;
        let key = KeyPair::generate().unwrap();
        params
            .serialize_request_with_attributes(&key, self.attributes)
            .unwrap()
            .pem()
            .unwrap()
    }
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

fn agent_csr(cn: &str) -> String {
    Build::agent(cn).pem()
}

/// A fake with its faults, times from [`epoch`].
fn fake() -> (Arc<Faults>, FakeCa) {
    let faults = Arc::new(Faults::default());
    let ca = FakeCa::new(faults.clone()).with_epoch(epoch());
    (faults, ca)
}

fn der_of(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

fn gate_ops(faults: &Faults) -> Vec<&'static str> {
    faults.log().into_iter().map(|(c, _)| c.operation).collect()
}

fn status_of(err: &CaError) -> (Option<u16>, &'static str, String) {
    let message = match err {
        CaError::Status { message, .. } => message.clone(),
        _ => String::new(),
    };
    (err.http_status(), err.category(), message)
}

/// An action on the CA, run before a request of the operation it is registered for.
type Action = Box<dyn FnMut(&FakeCa) + Send>;

/// Runs actions on the CA just before a request of an operation is decided: an agent or
/// an administrator acting between two requests of one call.
#[derive(Default)]
struct Hook {
    ca: OnceLock<Weak<FakeCa>>,
    actions: Mutex<Vec<(&'static str, Action)>>,
}

impl Hook {
    fn on(&self, operation: &'static str, action: impl FnMut(&FakeCa) + Send + 'static) {
        self.actions
            .lock()
            .unwrap()
            .push((operation, Box::new(action)));
    }
}

#[async_trait::async_trait]
impl Gate for Hook {
    async fn admit(&self, call: &Call) -> Fate {
        if let Some(ca) = self.ca.get().and_then(Weak::upgrade) {
            for (operation, action) in self.actions.lock().unwrap().iter_mut() {
                if *operation == call.operation {
                    action(&ca);
                }
            }
        }
        Fate::Answer
    }
}

fn hooked() -> (Arc<Hook>, Arc<FakeCa>) {
    let hook = Arc::new(Hook::default());
    let ca = Arc::new(FakeCa::new(hook.clone()).with_epoch(epoch()));
    hook.ca.set(Arc::downgrade(&ca)).ok().unwrap();
    (hook, ca)
}

// ---------------------------------------------------------------- requests

#[tokio::test]
async fn a_submitted_csr_is_listed_as_requested() {
    let (_, ca) = fake();
    let pem = agent_csr("node-1");
    ca.submit_csr("node-1", &pem).unwrap();
    let fingerprint = colon_hex(&der_of(&pem));

    let listed = ca.list(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    let info = &listed[0];
    assert_eq!(
        (info.name.as_str(), info.state),
        ("node-1", CertState::Requested)
    );
    assert_eq!(info.fingerprint.as_deref(), Some(fingerprint.as_str()));
    assert!(info.dns_alt_names.is_empty() && info.subject_alt_names.is_empty());
    assert!(info.authorization_extensions.is_empty());
    assert_eq!(
        (info.not_before, info.not_after, info.serial),
        (None, None, None)
    );
    assert_eq!(ca.list(Some(CertState::Requested)).await.unwrap(), listed);
    assert!(ca.list(Some(CertState::Signed)).await.unwrap().is_empty());
    assert_eq!(ca.status("node-1").await.unwrap().as_ref(), Some(info));
    assert_eq!(ca.csr_pem("node-1").await.unwrap(), Some(pem.clone()));
    assert_eq!(ca.certificate_pem("node-1").await.unwrap(), None);

    let waiting = ca.requests();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].fingerprint, fingerprint);
    assert_eq!(
        waiting[0].public_key_sha256,
        parse_csr(&pem).unwrap().public_key_sha256
    );
}

#[tokio::test]
async fn an_unknown_certname_has_nothing_and_cannot_be_signed() {
    let (faults, ca) = fake();
    assert_eq!(ca.status("nobody").await.unwrap(), None);
    assert_eq!(ca.csr_pem("nobody").await.unwrap(), None);
    assert_eq!(ca.certificate_pem("nobody").await.unwrap(), None);
    let err = ca.sign("nobody").await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (
            Some(404),
            "not_found",
            "Invalid certificate subject.".to_owned()
        )
    );
    assert!(!err.is_retryable());
    ca.revoke_and_clean("nobody").await.unwrap();
    assert!(!ca.remove_request("nobody").await.unwrap());
    assert_eq!(
        gate_ops(&faults),
        ["status", "csr", "certificate", "sign", "status", "status"]
    );
}

#[test]
fn the_ca_keeps_one_csr_per_certname_and_checks_names() {
    let (_, ca) = fake();
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    let refused = ca.submit_csr("node-1", &agent_csr("node-1")).unwrap_err();
    assert_eq!(
        refused,
        CaRefusal {
            status: 400,
            message: "node-1 already has a requested certificate; ignoring certificate request"
                .into()
        }
    );
    // The CSR's own name is checked for duplicates first.
    let refused = ca.submit_csr("node-2", &agent_csr("node-1")).unwrap_err();
    assert_eq!(refused.status, 400);
    assert!(
        refused
            .message
            .starts_with("node-1 already has a requested"),
        "{refused}"
    );
    assert_eq!(
        ca.submit_csr("node-2", &agent_csr("node-3"))
            .unwrap_err()
            .message,
        r#"Instance name "node-3" does not match requested key "node-2""#
    );
    for (name, message) in [
        ("Upper", "Certificate names must be lower case."),
        ("node-", "Subject hostname format is invalid"),
        ("-node", "Subject hostname format is invalid"),
        ("a..b", "Subject hostname format is invalid"),
    ] {
        let refused = ca.submit_csr(name, &agent_csr(name)).unwrap_err();
        assert_eq!(
            (refused.status, refused.message.as_str()),
            (400, message),
            "{name}"
        );
    }
    let refused = ca.submit_csr("x", "hello").unwrap_err();
    assert_eq!((refused.status, refused.message.as_str()), (500, NOT_PEM));
    assert_eq!(ca.requests().len(), 1);
}

// ---------------------------------------------------------------- signing

#[tokio::test(start_paused = true)]
async fn signing_issues_a_real_certificate_for_the_csr_key() {
    let (faults, ca) = fake();
    tokio::time::advance(Duration::from_secs(3600)).await;
    let pem = agent_csr("node-1");
    ca.submit_csr("node-1", &pem).unwrap();
    ca.sign("node-1").await.unwrap();
    assert_eq!(gate_ops(&faults), ["sign"]);

    let info = ca.status("node-1").await.unwrap().unwrap();
    let cert_pem = ca.certificate_pem("node-1").await.unwrap().unwrap();
    assert_eq!(info.state, CertState::Signed);
    assert_eq!(info.serial, Some(2), "the CA certificate is serial 1");
    assert_eq!(info.fingerprint, pem_fingerprint(&cert_pem));
    let signed_at = epoch() + TimeDelta::hours(1);
    assert_eq!(info.not_before, Some(signed_at - TimeDelta::days(1)));
    assert_eq!(info.not_after, Some(signed_at + TimeDelta::days(5 * 365)));
    assert_eq!(info.dns_alt_names, ["DNS:node-1"]);
    assert_eq!(info.subject_alt_names, ["DNS:node-1"]);
    assert_eq!(
        ca.csr_pem("node-1").await.unwrap(),
        None,
        "the CSR is gone once signed"
    );
    assert_eq!(
        ca.list(Some(CertState::Signed)).await.unwrap(),
        std::slice::from_ref(&info)
    );
    assert!(ca
        .list(Some(CertState::Requested))
        .await
        .unwrap()
        .is_empty());

    // The certificate: the CSR's key, the certname, the serial, dates, the extension.
    let key_sha = parse_csr(&pem).unwrap().public_key_sha256;
    assert_eq!(pem_public_key_sha256(&cert_pem), Some(key_sha.clone()));
    let der = der_of(&cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "node-1"
    );
    assert_eq!(cert.tbs_certificate.serial.to_u64_digits(), vec![2]);
    assert_eq!(
        cert.validity().not_before.timestamp(),
        info.not_before.unwrap().timestamp()
    );
    assert_eq!(
        cert.validity().not_after.timestamp(),
        info.not_after.unwrap().timestamp()
    );
    let instance_id = cert
        .iter_extensions()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.4.1.34380.1.1.2")
        .expect("pp_instance_id copied");
    assert_eq!(instance_id.value, tlv(0x0c, b"i-0abc").as_slice());
    assert!(!cert.is_ca());
    // Issued by the CA, and its signature verifies with the CA's key.
    let ca_der = der_of(&ca.ca_certificate().await.unwrap());
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(cert.issuer(), ca_cert.subject());
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();

    assert_eq!(
        ca.signed(),
        [SignedCert {
            certname: "node-1".into(),
            serial: 2,
            public_key_sha256: key_sha,
            fingerprint: info.fingerprint.clone().unwrap(),
            pem: cert_pem,
            state: CertState::Signed,
            on_ca: true,
        }]
    );
}

#[tokio::test]
async fn a_real_agents_rsa_csr_is_signed_with_its_key_and_alt_names() {
    let (_, ca) = fake();
    ca.submit_csr("fixture-requested", FIXTURE).unwrap();
    let requested = ca.status("fixture-requested").await.unwrap().unwrap();
    assert_eq!(
        requested.dns_alt_names,
        ["DNS:fixture-requested", "DNS:fixture-requested.example"]
    );
    ca.sign("fixture-requested").await.unwrap();
    let cert = ca
        .certificate_pem("fixture-requested")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        pem_public_key_sha256(&cert),
        Some(parse_csr(FIXTURE).unwrap().public_key_sha256)
    );
    let signed = ca.status("fixture-requested").await.unwrap().unwrap();
    // The certname was already among the alt names: not added twice.
    assert_eq!(signed.dns_alt_names, requested.dns_alt_names);
}

#[tokio::test]
async fn a_real_agents_csr_has_the_status_the_real_server_reported() {
    // The same CSR's status as puppetserver 7.9 answered it (the client's fixture).
    let real: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/ca/certificate_status_requested.json"
    )))
    .unwrap();
    let (_, ca) = fake();
    ca.submit_csr("fixture-requested", FIXTURE).unwrap();
    let info = ca.status("fixture-requested").await.unwrap().unwrap();
    let strings = |key: &str| -> Vec<String> { serde_json::from_value(real[key].clone()).unwrap() };
    assert_eq!(info.name, real["name"]);
    assert_eq!(info.state.as_str(), real["state"]);
    assert_eq!(info.fingerprint.as_deref(), real["fingerprint"].as_str());
    assert_eq!(info.dns_alt_names, strings("dns_alt_names"));
    assert_eq!(info.subject_alt_names, strings("subject_alt_names"));
    assert!(info.authorization_extensions.is_empty());
}

#[tokio::test]
async fn alt_names_are_reported_as_puppetserver_orders_them() {
    let (_, ca) = fake();
    let pem = Build::agent("node-1")
        .san(dns("zz.example"))
        .san(SanType::IpAddress("10.1.2.3".parse().unwrap()))
        .san(dns("aa.example"))
        .pem();
    ca.submit_csr("node-1", &pem).unwrap();
    let requested = ca.status("node-1").await.unwrap().unwrap();
    assert_eq!(
        requested.dns_alt_names,
        ["DNS:zz.example", "DNS:aa.example"]
    );
    assert_eq!(
        requested.subject_alt_names,
        ["IP:10.1.2.3", "DNS:zz.example", "DNS:aa.example"]
    );
    ca.sign("node-1").await.unwrap();
    let signed = ca.status("node-1").await.unwrap().unwrap();
    assert_eq!(
        signed.dns_alt_names,
        ["DNS:zz.example", "DNS:aa.example", "DNS:node-1"]
    );
    assert_eq!(
        signed.subject_alt_names,
        [
            "IP:10.1.2.3",
            "DNS:zz.example",
            "DNS:aa.example",
            "DNS:node-1"
        ]
    );
}

#[tokio::test]
async fn signing_twice_is_success_read_back_after_the_409() {
    let (faults, ca) = fake();
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    ca.sign("node-1").await.unwrap();
    ca.sign("node-1").await.unwrap();
    assert_eq!(gate_ops(&faults), ["sign", "sign", "status"]);
    assert_eq!(ca.signed().len(), 1);
}

#[tokio::test]
async fn a_revoked_certificate_cannot_be_signed_or_replaced() {
    let (_, ca) = fake();
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    ca.sign("node-1").await.unwrap();
    assert!(ca.revoke_outside("node-1"));
    assert!(ca.revoke_outside("node-1"), "revoking twice is fine");
    assert!(!ca.revoke_outside("nobody"));
    let info = ca.status("node-1").await.unwrap().unwrap();
    assert_eq!(info.state, CertState::Revoked);
    assert!(
        ca.certificate_pem("node-1").await.unwrap().is_some(),
        "still served"
    );
    assert_eq!(ca.list(Some(CertState::Revoked)).await.unwrap(), [info]);
    assert!(ca.list(Some(CertState::Signed)).await.unwrap().is_empty());

    let err = ca.sign("node-1").await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (
            Some(409),
            "conflict",
            "Cannot sign certificate for host node-1 without a certificate request".to_owned()
        )
    );
    assert_eq!(
        ca.submit_csr("node-1", &agent_csr("node-1"))
            .unwrap_err()
            .message,
        "node-1 already has a revoked certificate; ignoring certificate request"
    );
    let signed = ca.signed();
    assert_eq!(
        (signed[0].state, signed[0].on_ca),
        (CertState::Revoked, true)
    );
}

#[tokio::test]
async fn signing_refuses_what_puppetserver_refuses() {
    let cases: Vec<(Build, &str)> = vec![
        (
            Build::agent("node-1").extension(utf8_extension(OID_PP_CLI_AUTH, "true")),
            "CSR 'node-1' contains an authorization extension, which is disallowed.",
        ),
        (
            Build::agent("node-1").extension(utf8_extension(&[1, 2, 3, 4, 5], "x")),
            "Found extensions that are not permitted: 1.2.3.4.5",
        ),
    ];
    for (build, message) in cases {
        let (_, ca) = fake();
        ca.submit_csr("node-1", &build.pem()).unwrap();
        let err = ca.sign("node-1").await.unwrap_err();
        let (status, category, text) = status_of(&err);
        assert_eq!((status, category), (Some(409), "conflict"), "{text}");
        assert!(text.starts_with(message), "{text}");
        assert_eq!(
            ca.status("node-1").await.unwrap().unwrap().state,
            CertState::Requested
        );
    }

    // Reported by short name while waiting.
    let (_, ca) = fake();
    let pem = Build::agent("node-1")
        .extension(utf8_extension(OID_PP_CLI_AUTH, "true"))
        .pem();
    ca.submit_csr("node-1", &pem).unwrap();
    let info = ca.status("node-1").await.unwrap().unwrap();
    assert_eq!(
        info.authorization_extensions,
        BTreeMap::from([("pp_cli_auth".to_owned(), "true".to_owned())])
    );

    // Allowing authorization extensions still never allows pp_cli_auth ...
    let ca = FakeCa::default().with_authorization_extensions_allowed(true);
    ca.submit_csr("node-1", &pem).unwrap();
    let err = ca.sign("node-1").await.unwrap_err();
    assert!(
        status_of(&err).2.ends_with("1.3.6.1.4.1.34380.1.3.39"),
        "{err}"
    );
    // ... but other authorization extensions, copied into the certificate.
    let pem = Build::agent("node-2")
        .extension(utf8_extension(OID_PP_AUTH_ROLE, "ops"))
        .pem();
    ca.submit_csr("node-2", &pem).unwrap();
    ca.sign("node-2").await.unwrap();
    let signed = ca.status("node-2").await.unwrap().unwrap();
    assert_eq!(signed.authorization_extensions["pp_auth_role"], "ops");

    // Alt names other than the certname, when ca.conf disallows them.
    let ca = FakeCa::default().with_subject_alt_names_allowed(false);
    ca.submit_csr("own", &Build::agent("own").san(dns("own")).pem())
        .unwrap();
    ca.sign("own").await.unwrap();
    ca.submit_csr(
        "extra",
        &Build::agent("extra").san(dns("www.example")).pem(),
    )
    .unwrap();
    let err = ca.sign("extra").await.unwrap_err();
    assert!(
        status_of(&err)
            .2
            .starts_with("CSR 'extra' contains extra subject alternative names (DNS:www.example)"),
        "{err}"
    );
}

// ---------------------------------------------------------------- removal

#[tokio::test]
async fn revoke_and_clean_revokes_into_the_crl_and_frees_the_certname() {
    let (faults, ca) = fake();
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    ca.sign("node-1").await.unwrap();
    let serial = ca.signed()[0].serial;
    ca.revoke_and_clean("node-1").await.unwrap();
    assert_eq!(gate_ops(&faults)[1..], ["status", "clean", "status"]);
    assert_eq!(ca.status("node-1").await.unwrap(), None);
    assert_eq!(ca.certificate_pem("node-1").await.unwrap(), None);
    let signed = ca.signed();
    assert_eq!(
        (signed[0].state, signed[0].on_ca),
        (CertState::Revoked, false)
    );

    let crl_pem = ca.crl().await.unwrap();
    let crl_der = der_of(&crl_pem);
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl_der).unwrap();
    let revoked: Vec<Vec<u64>> = crl
        .iter_revoked_certificates()
        .map(|r| r.user_certificate.to_u64_digits())
        .collect();
    assert_eq!(revoked, [vec![serial]]);
    assert_eq!(crl.crl_number().map(|n| n.to_u64_digits()), Some(vec![1]));
    let ca_der = der_of(&ca.ca_certificate().await.unwrap());
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(crl.issuer(), ca_cert.subject());

    // Free again: a new key waits; idempotent.
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    assert_eq!(
        ca.status("node-1").await.unwrap().unwrap().state,
        CertState::Requested
    );
    ca.revoke_and_clean("node-1").await.unwrap();
    ca.revoke_and_clean("node-1").await.unwrap();
    assert!(ca.requests().is_empty());
}

#[tokio::test]
async fn revoke_and_clean_deletes_a_waiting_csr() {
    let (faults, ca) = fake();
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    ca.revoke_and_clean("node-1").await.unwrap();
    assert_eq!(gate_ops(&faults), ["status", "remove_request", "status"]);
    assert!(ca.requests().is_empty());
    assert!(ca.signed().is_empty());
}

#[tokio::test]
async fn a_certname_that_keeps_coming_back_is_not_cleaned() {
    let (hook, ca) = hooked();
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    // An agent re-submits before every look (refused while its CSR is still there).
    hook.on("status", |ca| {
        let _ = ca.submit_csr("node-1", &agent_csr("node-1"));
    });
    let err = ca.revoke_and_clean("node-1").await.unwrap_err();
    assert!(
        matches!(&err, CaError::NotCleaned { certname, state: CertState::Requested } if certname == "node-1"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(ca.call_count("status"), 4);
}

#[tokio::test]
async fn remove_request_removes_only_a_waiting_csr() {
    let (faults, ca) = fake();
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    assert!(ca.remove_request("node-1").await.unwrap());
    assert_eq!(gate_ops(&faults), ["status", "remove_request"]);
    assert!(ca.requests().is_empty());
    assert!(!ca.remove_request("node-1").await.unwrap());

    ca.submit_csr("node-2", &agent_csr("node-2")).unwrap();
    ca.sign("node-2").await.unwrap();
    assert!(!ca.remove_request("node-2").await.unwrap());
    assert_eq!(
        ca.status("node-2").await.unwrap().unwrap().state,
        CertState::Signed
    );
}

#[tokio::test]
async fn a_csr_signed_between_look_and_delete_loses_its_certificate_unrevoked() {
    // The race the real client has: DELETE certificate_status removes a certificate
    // without revoking it. The ground truth shows it.
    let (hook, ca) = hooked();
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    hook.on("remove_request", |ca| {
        let _ = ca.sign_outside("node-1");
    });
    assert!(ca.remove_request("node-1").await.unwrap());
    let signed = ca.signed();
    assert_eq!(signed.len(), 1);
    assert_eq!(
        (signed[0].state, signed[0].on_ca),
        (CertState::Signed, false)
    );
    assert_eq!(ca.status("node-1").await.unwrap(), None);
}

#[tokio::test]
async fn an_administrators_clean_revokes_and_deletes_certificate_and_csr() {
    let (_, ca) = fake();
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    assert!(ca.clean_outside("node-1"), "a waiting CSR is deleted too");
    assert!(ca.requests().is_empty());
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    ca.sign_outside("node-1").unwrap();
    // Signed outside: the operator's sign is then level-triggered success.
    ca.sign("node-1").await.unwrap();
    assert!(ca.clean_outside("node-1"));
    assert!(!ca.clean_outside("node-1"));
    let signed = ca.signed();
    assert_eq!(
        (signed[0].state, signed[0].on_ca),
        (CertState::Revoked, false)
    );
    assert_eq!(ca.status("node-1").await.unwrap(), None);
}

// ---------------------------------------------------------------- hostile CSRs

#[tokio::test]
async fn a_repeated_extension_breaks_the_listing_and_its_status_until_deleted() {
    let (_, ca) = fake();
    ca.submit_csr("good", &agent_csr("good")).unwrap();
    ca.submit_csr("other", &agent_csr("other")).unwrap();
    ca.sign("other").await.unwrap();
    let bad = Build::agent("bad")
        .extension(utf8_extension(OID_PP_INSTANCE_ID, "i-0bbb"))
        .pem();
    ca.submit_csr("bad", &bad).unwrap();

    let expected = "Internal Server Error: java.lang.IllegalArgumentException: \
                    repeated extension found: 1.3.6.1.4.1.34380.1.1.2";
    for state in [None, Some(CertState::Requested)] {
        let err = ca.list(state).await.unwrap_err();
        assert_eq!(
            status_of(&err),
            (Some(500), "server_error", expected.to_owned()),
            "{state:?}"
        );
        assert!(err.is_retryable());
    }
    assert_eq!(ca.list(Some(CertState::Signed)).await.unwrap().len(), 1);
    assert!(ca.list(Some(CertState::Revoked)).await.unwrap().is_empty());
    assert_eq!(status_of(&ca.status("bad").await.unwrap_err()).0, Some(500));
    assert_eq!(status_of(&ca.sign("bad").await.unwrap_err()).0, Some(500));
    assert!(ca.status("good").await.unwrap().is_some());
    assert_eq!(ca.csr_pem("bad").await.unwrap(), Some(bad));
    // The real client's revoke_and_clean reads the status first, and fails too.
    assert_eq!(
        status_of(&ca.revoke_and_clean("bad").await.unwrap_err()).0,
        Some(500)
    );
    // remove_request falls back to the CSR, deletes it, and the listing heals.
    assert!(ca.remove_request("bad").await.unwrap());
    assert_eq!(ca.list(None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn repeated_attributes_and_a_second_extension_request_break_nothing() {
    let (_, ca) = fake();
    let extension_request = |id: &str| {
        // extensionRequest: SET { SEQUENCE { SEQUENCE { OID pp_instance_id, OCTET STRING } } }.
        let oid = [0x2b, 6, 1, 4, 1, 0x82, 0x8c, 0x4c, 1, 1, 2];
        let mut content = tlv(0x06, &oid);
        content.extend(tlv(0x04, &tlv(0x0c, id.as_bytes())));
        Attribute {
            oid: &[1, 2, 840, 113549, 1, 9, 14],
            values: tlv(0x31, &tlv(0x30, &tlv(0x30, &content))),
        }
    };
    let mut two_requests = Build::agent("two-requests");
    two_requests.extensions.clear();
    two_requests.attributes.push(extension_request("i-first"));
    two_requests.attributes.push(extension_request("i-second"));
    let mut two_challenges = Build::agent("two-challenges");
    let challenge = two_challenges.attributes[0].values.clone();
    two_challenges.attributes.push(Attribute {
        oid: OID_CHALLENGE_PASSWORD,
        values: challenge,
    });
    for build in [two_requests, two_challenges] {
        let name = build.cn.clone();
        ca.submit_csr(&name, &build.pem()).unwrap();
        assert_eq!(
            ca.status(&name).await.unwrap().unwrap().state,
            CertState::Requested
        );
    }
    assert_eq!(ca.list(None).await.unwrap().len(), 2);
    // Only the first extension request counts.
    ca.sign("two-requests").await.unwrap();
    let cert = ca.certificate_pem("two-requests").await.unwrap().unwrap();
    let der = der_of(&cert);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let ids: Vec<&[u8]> = cert
        .iter_extensions()
        .filter(|e| e.oid.to_id_string() == "1.3.6.1.4.1.34380.1.1.2")
        .map(|e| e.value)
        .collect();
    assert_eq!(ids, [tlv(0x0c, b"i-first").as_slice()]);
}

// ---------------------------------------------------------------- fates

#[tokio::test]
async fn every_fault_is_the_error_the_real_client_returns() {
    let cases = [
        (FaultKind::Unavailable, 503, "server_error", true, None),
        (
            FaultKind::Throttled,
            429,
            "throttled",
            true,
            Some(THROTTLE_RETRY_AFTER),
        ),
        (FaultKind::Denied, 403, "forbidden", false, None),
    ];
    for (kind, status, category, retryable, retry_after) in cases {
        let (faults, ca) = fake();
        faults.next(System::Ca, Some("list"), Fate::Fail(kind));
        let err = ca.list(None).await.unwrap_err();
        assert!(
            matches!(&err, CaError::Status { operation: "list", status: s, .. } if *s == status),
            "{kind:?}: {err:?}"
        );
        assert_eq!(err.category(), category, "{kind:?}");
        assert_eq!(err.is_retryable(), retryable, "{kind:?}");
        assert_eq!(err.retry_after(), retry_after, "{kind:?}");
    }
    let (faults, ca) = fake();
    faults.next(System::Ca, None, Fate::Fail(FaultKind::Timeout));
    let err = ca.status("node-1").await.unwrap_err();
    assert!(
        matches!(err, CaError::Timeout { operation: "status", timeout } if timeout == DEFAULT_TIMEOUT),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failed_request_applies_nothing_and_names_the_trait_call() {
    let (faults, ca) = fake();
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    faults.next(System::Ca, Some("sign"), Fate::Fail(FaultKind::Unavailable));
    assert_eq!(
        ca.sign("node-1").await.unwrap_err().http_status(),
        Some(503)
    );
    assert!(ca.signed().is_empty());
    ca.sign("node-1").await.unwrap();

    faults.next(
        System::Ca,
        Some("clean"),
        Fate::Fail(FaultKind::Unavailable),
    );
    let err = ca.revoke_and_clean("node-1").await.unwrap_err();
    assert!(
        matches!(
            err,
            CaError::Status {
                operation: "revoke_and_clean",
                status: 503,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(ca.signed()[0].state, CertState::Signed, "not revoked");

    // A fault on the read-back after a 409: the 409 is not reached.
    faults.next(System::Ca, Some("status"), Fate::Fail(FaultKind::Timeout));
    let err = ca.sign("node-1").await.unwrap_err();
    assert!(
        matches!(
            err,
            CaError::Timeout {
                operation: "sign",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_lost_request_is_applied_and_the_call_times_out() {
    let (faults, ca) = fake();
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    faults.next(System::Ca, Some("sign"), Fate::Lost);
    let err = ca.sign("node-1").await.unwrap_err();
    assert!(
        matches!(
            err,
            CaError::Timeout {
                operation: "sign",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(ca.signed().len(), 1, "signed nonetheless");
    ca.sign("node-1").await.unwrap();

    faults.next(System::Ca, Some("clean"), Fate::Lost);
    let err = ca.revoke_and_clean("node-1").await.unwrap_err();
    assert!(
        matches!(
            err,
            CaError::Timeout {
                operation: "revoke_and_clean",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(ca.signed()[0].state, CertState::Revoked);
    ca.revoke_and_clean("node-1").await.unwrap();

    ca.submit_csr("node-2", &agent_csr("node-2")).unwrap();
    faults.next(System::Ca, Some("remove_request"), Fate::Lost);
    assert_eq!(
        ca.remove_request("node-2").await.unwrap_err().category(),
        "timeout"
    );
    assert!(ca.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn timeouts_can_take_the_call_timeout() {
    let faults = Arc::new(Faults::default());
    let ca = FakeCa::new(faults.clone())
        .with_call_timeout(Duration::from_secs(3))
        .with_timeout_wait(true);
    faults.next(System::Ca, None, Fate::Lost);
    let started = Instant::now();
    let err = ca.crl().await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert!(matches!(err, CaError::Timeout { timeout, .. } if timeout == Duration::from_secs(3)));
}

#[tokio::test]
async fn invalid_certnames_send_nothing() {
    let (faults, ca) = fake();
    for name in ["../clean", "a/b", "", "Upper", "x?state=signed"] {
        assert_eq!(
            ca.status(name).await.unwrap_err().category(),
            "invalid_certname"
        );
        assert!(ca.sign(name).await.is_err());
        assert!(ca.csr_pem(name).await.is_err());
        assert!(ca.revoke_and_clean(name).await.is_err());
        assert!(ca.remove_request(name).await.is_err());
        assert!(ca.certificate_pem(name).await.is_err());
    }
    assert!(faults.log().is_empty());
}

// ---------------------------------------------------------------- the CA itself, ground truth

#[tokio::test]
async fn the_ca_certificate_and_an_empty_crl_are_served() {
    let (_, ca) = fake();
    let pem = ca.ca_certificate().await.unwrap();
    assert_eq!(pem, ca.ca_certificate().await.unwrap(), "one CA per fake");
    let der = der_of(&pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert!(cert.is_ca());
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        CA_NAME
    );
    assert_eq!(cert.tbs_certificate.serial.to_u64_digits(), vec![1]);
    cert.verify_signature(None).unwrap();
    let crl = ca.crl().await.unwrap();
    assert!(crl.starts_with("-----BEGIN X509 CRL-----"), "{crl}");
    let crl_der = der_of(&crl);
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl_der).unwrap();
    assert_eq!(crl.iter_revoked_certificates().count(), 0);
    assert_eq!(
        ca.calls(),
        BTreeMap::from([("ca_certificate", 2), ("crl", 1)])
    );
}

#[tokio::test]
async fn a_given_ca_key_gives_the_same_certificates_every_time() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let pem = agent_csr("node-1");
    let mut certs = Vec::new();
    for _ in 0..2 {
        let ca = FakeCa::default()
            .with_epoch(epoch())
            .with_ca_key(KeyPair::from_pem(&key.serialize_pem()).unwrap());
        ca.submit_csr("node-1", &pem).unwrap();
        ca.sign("node-1").await.unwrap();
        certs.push((
            ca.ca_certificate().await.unwrap(),
            ca.signed()[0].pem.clone(),
        ));
    }
    assert_eq!(certs[0], certs[1]);
}

#[tokio::test]
async fn lose_state_forgets_the_inventory_but_not_the_crl() {
    let (_, ca) = fake();
    for name in ["node-1", "node-2", "node-3"] {
        ca.submit_csr(name, &agent_csr(name)).unwrap();
    }
    ca.sign("node-1").await.unwrap();
    ca.sign("node-2").await.unwrap();
    ca.revoke_and_clean("node-2").await.unwrap();
    ca.lose_state();
    assert!(ca.list(None).await.unwrap().is_empty());
    assert!(ca.requests().is_empty());
    let signed = ca.signed();
    assert_eq!(signed.len(), 2);
    assert!(signed.iter().all(|s| !s.on_ca));
    assert_eq!(
        signed.iter().map(|s| s.state).collect::<Vec<_>>(),
        [CertState::Signed, CertState::Revoked]
    );
    // Serials keep counting.
    ca.submit_csr("node-1", &agent_csr("node-1")).unwrap();
    ca.sign("node-1").await.unwrap();
    assert_eq!(ca.signed()[2].serial, 4);
    let crl_der = der_of(&ca.crl().await.unwrap());
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl_der).unwrap();
    assert_eq!(crl.iter_revoked_certificates().count(), 1);
}
