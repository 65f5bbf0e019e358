//! `puppet-conductor autosign` as puppetserver runs it: exit 0 means "sign", so everything
//! but one verified CSR must exit non-zero — help, version, bad arguments, and stdin that
//! is not exactly one PEM certificate request.
//!
//! Most cases need no services (the store is an unreachable endpoint: nothing here may
//! depend on reaching it); the last test signs through a record in moto's S3 and is skipped
//! without it, like the other moto tests.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use puppet_conductor::csr::input::{single_csr_pem, MAX_CSR_INPUT};
use puppet_conductor::identity::challenge_sha256;
use puppet_conductor::records::{NodeRecord, RecordOwner, RecordState, Records};
use rcgen::{Attribute, CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair};

use crate::common::services::Services;
use crate::node_support::*;

const REFUSAL: &str = "puppet-conductor autosign: not signing";
const UNREACHABLE: &str = "http://127.0.0.1:9";

const OID_CHALLENGE_PASSWORD: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];
const OID_PP_INSTANCE_ID: &[u64] = &[1, 3, 6, 1, 4, 1, 34380, 1, 1, 2];

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs the binary with `args`, `stdin` written to it, the records settings pointing at
/// `endpoint` and nothing else in the environment (puppetserver scrubs it too).
fn run(args: &[&str], stdin: &[u8], endpoint: &str, bucket: &str) -> Run {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_puppet-conductor"))
        .args(args)
        .env_clear()
        .env("PC_RECORDS_BUCKET", bucket)
        .env("PC_RECORDS_ENDPOINT", endpoint)
        .env("PC_RECORDS_FORCE_PATH_STYLE", "true")
        .env("PC_RECORDS_ACCESS_KEY_ID", "testing")
        .env("PC_RECORDS_SECRET_ACCESS_KEY", "testing")
        .env("PC_RECORDS_TIMEOUT", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // The process may exit without reading (argument errors, oversized input): a broken
    // pipe here is expected, not a failure.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

fn autosign_unreachable(args: &[&str], stdin: &[u8]) -> Run {
    let mut all = vec!["autosign"];
    all.extend_from_slice(args);
    run(&all, stdin, UNREACHABLE, "records")
}

/// DER tag-length-value (short contents only).
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else {
        out.extend([0x81, u8::try_from(len).unwrap()]);
    }
    out.extend_from_slice(content);
    out
}

/// A CSR (PEM) shaped like the agent's: CN = certname, the challenge as a PrintableString
/// challengePassword attribute, `pp_instance_id` as a requested UTF8String extension, a new
/// P-256 key.
pub(crate) fn csr(certname: &str, challenge: &str, instance_id: &str) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, certname);
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            OID_PP_INSTANCE_ID,
            tlv(0x0c, instance_id.as_bytes()),
        ));
    let attributes = vec![Attribute {
        oid: OID_CHALLENGE_PASSWORD,
        values: tlv(0x31, &tlv(0x13, challenge.as_bytes())),
    }];
    params
        .serialize_request_with_attributes(&key, attributes)
        .unwrap()
        .pem()
        .unwrap()
}

const CERTIFICATE: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBVTCB/QIBADAb\n-----END CERTIFICATE-----\n";

/// Inputs that are not exactly one CSR, each built around `good`.
fn bad_inputs(good: &str, other: &str) -> Vec<(&'static str, Vec<u8>)> {
    let mut oversized = good.as_bytes().to_vec();
    oversized.resize(MAX_CSR_INPUT + 1, b'\n');
    let mut not_utf8 = good.as_bytes().to_vec();
    not_utf8.extend_from_slice(b"\xff\n");
    vec![
        ("two CSR blocks", format!("{good}{other}").into_bytes()),
        ("the same CSR twice", format!("{good}{good}").into_bytes()),
        (
            "a CSR and a certificate",
            format!("{good}{CERTIFICATE}").into_bytes(),
        ),
        (
            "a certificate and a CSR",
            format!("{CERTIFICATE}{good}").into_bytes(),
        ),
        ("trailing garbage", format!("{good}garbage\n").into_bytes()),
        ("leading text", format!("certname=x\n{good}").into_bytes()),
        ("empty stdin", Vec::new()),
        ("whitespace only", b" \n\n".to_vec()),
        ("not UTF-8", not_utf8),
        ("over 64 KiB", oversized),
        (
            "a truncated CSR",
            good.lines()
                .take(3)
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .into_bytes(),
        ),
    ]
}

#[test]
fn autosign_help_version_and_bad_arguments_never_sign() {
    let good = csr("node-1", "0123456789abcdef0123456789abcdef", "i-0abc");
    let cases: &[&[&str]] = &[
        &["--help"],
        &["-h"],
        &["--version"],
        &["-V"],
        &["node-1", "--help"],
        &["--bogus", "node-1"],
        &[],
        &["a", "b"],
        &["--", "a", "b"],
        &["--records-timeout", "soon", "node-1"],
    ];
    for args in cases {
        let out = autosign_unreachable(args, good.as_bytes());
        assert_eq!(out.code, 1, "autosign {args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with(REFUSAL),
            "autosign {args:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "autosign {args:?}: {}", out.stdout);
    }
    // The subcommand asked for after a top-level flag is still the autosign subcommand.
    let out = run(
        &["--help", "autosign"],
        good.as_bytes(),
        UNREACHABLE,
        "records",
    );
    assert_ne!(out.code, 0, "--help autosign: {}", out.stdout);
    // Whatever follows `--` is the certname, never an option.
    let out = autosign_unreachable(&["--", "--help"], good.as_bytes());
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!("{REFUSAL} --help")),
        "{}",
        out.stderr
    );
}

#[test]
fn the_top_level_and_other_subcommands_keep_clap_behaviour() {
    let out = run(&["--help"], b"", UNREACHABLE, "records");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("autosign"), "{}", out.stdout);
    let out = run(&["--version"], b"", UNREACHABLE, "records");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("puppet-conductor "),
        "{}",
        out.stdout
    );
    let out = run(&["enc", "--help"], b"", UNREACHABLE, "records");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(&["crds", "--bogus"], b"", UNREACHABLE, "records");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!out.stderr.contains(REFUSAL), "{}", out.stderr);
}

#[test]
fn autosign_refuses_stdin_that_is_not_exactly_one_csr() {
    let good = csr("node-1", "0123456789abcdef0123456789abcdef", "i-0abc");
    let other = csr("node-1", "fedcba9876543210fedcba9876543210", "i-0def");
    for (what, input) in bad_inputs(&good, &other) {
        let reason = single_csr_pem(&input).unwrap_err().to_string();
        let out = autosign_unreachable(&["--", "node-1"], &input);
        assert_eq!(out.code, 1, "{what}: {}", out.stderr);
        // Refused for the input itself, before the (unreachable) store is asked.
        assert!(
            out.stderr
                .starts_with(&format!("{REFUSAL} node-1: {reason}")),
            "{what}: {}",
            out.stderr
        );
    }
}

#[test]
fn autosign_with_a_csr_but_no_store_does_not_sign() {
    let good = csr("node-1", "0123456789abcdef0123456789abcdef", "i-0abc");
    assert!(single_csr_pem(good.as_bytes()).is_ok());
    let out = autosign_unreachable(&["--records-timeout", "1", "--", "node-1"], good.as_bytes());
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!("{REFUSAL} node-1: ")),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("PEM block") && !out.stderr.contains("the input"),
        "the CSR itself was accepted; the store failed: {}",
        out.stderr
    );
    // Fails closed within its own deadline (3 × the records timeout), not puppetserver's.
    assert!(out.took < Duration::from_secs(10), "{:?}", out.took);
}

#[tokio::test]
async fn autosign_signs_the_lone_csr_and_nothing_wrapped_around_it() {
    let _shared = MOTO_LOAD.read().await;
    let Some(endpoint) = Services::moto_endpoint_from_env() else {
        return;
    };
    let bucket = unique("autosign");
    let moto = MotoServices::new(&endpoint, "us-east-1", &bucket).await;
    let certname = unique("autosign-node");
    let challenge = "0123456789abcdef0123456789abcdef";
    let record = NodeRecord {
        certname: certname.clone(),
        classes: vec![],
        environment: "production".into(),
        parameters: Default::default(),
        challenge_sha256: challenge_sha256(challenge),
        instance_id: Some("i-0abc".into()),
        owner: RecordOwner {
            operator: "test".into(),
            master: "ns/pm".into(),
            node: format!("ns/{certname}"),
            node_uid: "uid-autosign".into(),
            incarnation: 1,
        },
        state: RecordState::Live,
    };
    moto.records.put_if_changed(&record, None).await.unwrap();
    let good = csr(&certname, challenge, "i-0abc");
    let other = csr(&certname, challenge, "i-0abc");

    // Every variant wraps a CSR that would be signed: only the framing refuses it.
    for (what, input) in bad_inputs(&good, &other) {
        let out = run(&["autosign", "--", &certname], &input, &endpoint, &bucket);
        assert_eq!(out.code, 1, "{what}: {}", out.stderr);
        assert!(out.stderr.starts_with(REFUSAL), "{what}: {}", out.stderr);
    }
    let out = run(&["autosign", "--help"], good.as_bytes(), &endpoint, &bucket);
    assert_eq!(out.code, 1, "{}", out.stderr);

    // The control, last (a refusal must not have used up the incarnation's signature):
    // the same CSR alone, as the wrapper passes it, is signed.
    let out = run(
        &["autosign", "--", &certname],
        good.as_bytes(),
        &endpoint,
        &bucket,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}
