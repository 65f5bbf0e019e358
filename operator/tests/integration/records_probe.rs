//! The records probe: private and public buckets in moto, a missing bucket,
//! and an endpoint nothing listens on (that one needs no moto and always runs).

use std::time::{Duration, Instant};

use aws_sdk_s3::types::{BucketCannedAcl, ObjectCannedAcl, PublicAccessBlockConfiguration};
use puppet_conductor::records::{Privacy, Records, RecordsError, S3Records};

use crate::records_support::{config, record, TestBucket};

const UID: &str = "5f1d3a8e-0c7b-4d2e-8a6f-000000000001";

async fn bucket_with_a_record() -> Option<(TestBucket, S3Records)> {
    let b = TestBucket::create("p").await?;
    let store = b.records().await;
    store
        .put_if_changed(&record("web-1", UID), None)
        .await
        .unwrap();
    Some((b, store))
}

fn assert_public(privacy: &Privacy, needle: &str) {
    match privacy {
        Privacy::Public { reason } => assert!(reason.contains(needle), "{reason}"),
        other => panic!("expected Public ({needle}), got {other:?}"),
    }
}

#[tokio::test]
async fn records_probe_private_bucket_is_private() {
    let Some((_b, store)) = bucket_with_a_record().await else {
        return;
    };
    let before = store.calls();
    assert_eq!(store.probe().await.unwrap(), Privacy::Private);
    // HeadBucket, PAB, policy status, bucket ACL, list 1, object ACL.
    assert_eq!(store.calls() - before, 6);

    // An empty bucket has no object to sample and is private too.
    let Some(empty) = TestBucket::create("p").await else {
        return;
    };
    assert_eq!(
        empty.records().await.probe().await.unwrap(),
        Privacy::Private
    );
}

#[tokio::test]
async fn records_probe_public_read_acl_is_public() {
    let Some((b, store)) = bucket_with_a_record().await else {
        return;
    };
    b.raw
        .put_bucket_acl()
        .bucket(&b.bucket)
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    assert_public(&store.probe().await.unwrap(), "READ to AllUsers");
}

#[tokio::test]
async fn records_probe_public_policy_is_public() {
    let Some((b, store)) = bucket_with_a_record().await else {
        return;
    };
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": format!("arn:aws:s3:::{}/*", b.bucket),
        }]
    });
    b.raw
        .put_bucket_policy()
        .bucket(&b.bucket)
        .policy(policy.to_string())
        .send()
        .await
        .unwrap();
    assert_public(&store.probe().await.unwrap(), "policy");
}

#[tokio::test]
async fn records_probe_public_object_acl_is_public() {
    let Some((b, store)) = bucket_with_a_record().await else {
        return;
    };
    b.raw
        .put_object_acl()
        .bucket(&b.bucket)
        .key("p/records/web-1.json")
        .acl(ObjectCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    assert_public(&store.probe().await.unwrap(), "object p/records/web-1.json");
}

#[tokio::test]
async fn records_probe_public_access_block_overrides_acls() {
    let Some((b, store)) = bucket_with_a_record().await else {
        return;
    };
    b.raw
        .put_bucket_acl()
        .bucket(&b.bucket)
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    b.raw
        .put_public_access_block()
        .bucket(&b.bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let before = store.calls();
    assert_eq!(store.probe().await.unwrap(), Privacy::Private);
    // HeadBucket and GetPublicAccessBlock suffice.
    assert_eq!(store.calls() - before, 2);
}

#[tokio::test]
async fn records_missing_bucket_is_not_retryable() {
    let Some(endpoint) = crate::common::services::Services::moto_endpoint_from_env() else {
        return;
    };
    let store = S3Records::new(&config(&endpoint, "pc-records-no-such-bucket", "p")).await;
    for err in [
        store.probe().await.unwrap_err(),
        store.list().await.unwrap_err(),
    ] {
        assert!(matches!(err, RecordsError::NoSuchBucket { .. }), "{err:?}");
        assert!(!err.is_retryable());
        assert_eq!(err.category(), "no_such_bucket");
    }
}

/// A 127.0.0.1 port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn records_unreachable_endpoint_is_retryable() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let mut cfg = config(&endpoint, "pc-records", "p");
    cfg.call_timeout = Duration::from_secs(15);
    let store = S3Records::new(&cfg).await;
    let started = Instant::now();
    let errors = [
        store.probe().await.unwrap_err(),
        store.list().await.unwrap_err(),
        store
            .put_if_changed(&record("web-1", UID), None)
            .await
            .unwrap_err(),
        store.delete("web-1").await.unwrap_err(),
    ];
    for err in &errors {
        assert!(err.is_retryable(), "{err:?}");
        assert!(
            matches!(err.category(), "connect" | "timeout"),
            "{}: {err:?}",
            err.category()
        );
    }
    eprintln!(
        "unreachable endpoint: {} ({:?} for 4 calls)",
        errors[0],
        started.elapsed()
    );
}

#[tokio::test]
async fn records_call_timeout_applies() {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let mut cfg = config(&format!("http://127.0.0.1:{port}"), "pc-records", "p");
    cfg.call_timeout = Duration::from_millis(500);
    let store = S3Records::new(&cfg).await;
    let started = Instant::now();
    let err = store.list().await.unwrap_err();
    assert!(matches!(err, RecordsError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
}
