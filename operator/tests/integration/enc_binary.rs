//! `puppet-conductor enc` as puppetserver runs it: a record in moto's S3 → ENC YAML and a
//! check-in; no record → exit 1 (or the fallback); a broken store → exit 2; a certname the
//! operator never issues → exit 1, whatever the store.

use std::process::Command;
use std::time::Instant;

use puppet_conductor::records::{NodeRecord, RecordOwner, RecordState, Records};

use crate::common::services::Services;
use crate::node_support::*;

/// Runs `enc [extra] -- <certname>`, as the documented `external_nodes = ... enc --` does.
fn enc(endpoint: &str, bucket: &str, certname: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_puppet-conductor"))
        .arg("enc")
        .args(extra)
        .arg("--")
        .arg(certname)
        .env_clear()
        .env("PC_RECORDS_BUCKET", bucket)
        .env("PC_RECORDS_ENDPOINT", endpoint)
        .env("PC_RECORDS_FORCE_PATH_STYLE", "true")
        .env("PC_RECORDS_ACCESS_KEY_ID", "testing")
        .env("PC_RECORDS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn enc_prints_the_record_and_checks_in() {
    let _shared = MOTO_LOAD.read().await;
    let Some(endpoint) = Services::moto_endpoint_from_env() else {
        return;
    };
    let bucket = unique("enc");
    let moto = MotoServices::new(&endpoint, "us-east-1", &bucket).await;
    let record = NodeRecord {
        certname: "enc-node-1".into(),
        classes: vec!["role::webserver".into()],
        environment: "production".into(),
        parameters: [("port".to_string(), serde_json::json!(8080))].into(),
        challenge_sha256: "ab".repeat(32),
        instance_id: Some("i-0abc".into()),
        owner: RecordOwner {
            operator: "test".into(),
            master: "ns/pm".into(),
            node: "ns/enc-node-1".into(),
            node_uid: "uid-1".into(),
            incarnation: 1,
        },
        state: RecordState::Live,
    };
    moto.records.put_if_changed(&record, None).await.unwrap();

    // puppetserver runs the ENC twice per agent run: time a series of calls, not one.
    let mut took = Vec::new();
    let mut first = None;
    for _ in 0..10 {
        let started = Instant::now();
        let call = enc(&endpoint, &bucket, "enc-node-1", &[]);
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        first.get_or_insert(call);
    }
    let (code, stdout, stderr) = first.unwrap();
    assert_eq!(code, 0, "{stderr}");
    took.sort_by(f64::total_cmp);
    println!(
        "BENCH ENC call (process start, S3 GET, check-in PUT) against moto, 10 calls: median {:.0} ms, max {:.0} ms",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    let v: serde_yaml::Value = serde_yaml::from_str(&stdout).unwrap();
    assert_eq!(v["classes"][0], serde_yaml::Value::from("role::webserver"));
    assert_eq!(v["environment"], serde_yaml::Value::from("production"));
    assert_eq!(v["parameters"]["port"], serde_yaml::Value::from(8080));
    assert!(
        !stdout.contains(&record.challenge_sha256),
        "nothing secret in ENC output"
    );
    let listing = moto.records.list().await.unwrap();
    assert!(
        listing.check_ins.contains_key("enc-node-1"),
        "check-in recorded"
    );

    let (code, stdout, _) = enc(&endpoint, &bucket, "unknown-node", &[]);
    assert_eq!(
        (code, stdout.as_str()),
        (1, ""),
        "unknown node: exit 1, nothing printed"
    );
    let (code, stdout, _) = enc(
        &endpoint,
        &bucket,
        "unknown-node",
        &["--fallback-to-node-definitions"],
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("classes: []"), "{stdout}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let (code, stdout, stderr) = enc(&closed, &bucket, "enc-node-1", &["--records-timeout", "2"]);
    assert_eq!(
        (code, stdout.as_str()),
        (2, ""),
        "store down: exit 2, nothing printed: {stderr}"
    );
}

#[test]
fn enc_answers_unknown_for_a_certname_the_operator_never_issues() {
    // The store is unreachable: a certname that reached it would be a store failure (2).
    for certname in [
        "bad/certname",
        "..",
        "Upper.example.com",
        "a b",
        "--help",
        "",
    ] {
        let (code, stdout, stderr) = enc(
            "http://127.0.0.1:9",
            "records",
            certname,
            &["--records-timeout", "1"],
        );
        assert_eq!(
            (code, stdout.as_str()),
            (1, ""),
            "{certname:?}: unknown node, nothing printed: {stderr}"
        );
        assert!(
            stderr.contains("unknown node: not a certname the operator issues"),
            "{certname:?}: {stderr}"
        );
    }
    // Like any unknown node, it gets the fallback when asked for.
    let (code, stdout, stderr) = enc(
        "http://127.0.0.1:9",
        "records",
        "bad/certname",
        &["--fallback-to-node-definitions"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("classes: []"), "{stdout}");
}
