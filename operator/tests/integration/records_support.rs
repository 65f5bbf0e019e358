//! Helpers of the S3 node-record tests: a fresh moto bucket per test, a raw SDK
//! client to arrange what the operator would not do itself, and sample records.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Credentials, Region};
use puppet_conductor::records::{
    sha256_hex, NodeRecord, RecordOwner, RecordsConfig, S3Records, StaticCredentials,
};
use serde_json::json;

use crate::common::services::Services;
use crate::common::unique_certname;

/// moto accepts any keys unless told to enforce auth.
pub fn test_credentials() -> StaticCredentials {
    StaticCredentials {
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        session_token: None,
    }
}

/// Configuration for `bucket` under `prefix` at `endpoint`.
pub fn config(endpoint: &str, bucket: &str, prefix: &str) -> RecordsConfig {
    RecordsConfig {
        bucket: bucket.into(),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint.into()),
        force_path_style: true,
        credentials: Some(test_credentials()),
        call_timeout: Duration::from_secs(20),
    }
}

/// A bucket made for one test.
pub struct TestBucket {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    /// The SDK, for arranging state behind the store's back.
    pub raw: aws_sdk_s3::Client,
}

impl TestBucket {
    /// A new, empty bucket on moto; `None` (skip) without moto.
    pub async fn create(prefix: &str) -> Option<Self> {
        let endpoint = Services::moto_endpoint_from_env()?;
        let bucket = unique_certname("pc-records");
        let raw = raw_client(&endpoint).await;
        raw.create_bucket().bucket(&bucket).send().await.unwrap();
        Some(Self {
            endpoint,
            bucket,
            prefix: prefix.into(),
            raw,
        })
    }

    /// A fresh store (empty cache and counters) on this bucket, as after an operator restart.
    pub async fn records(&self) -> S3Records {
        S3Records::new(&config(&self.endpoint, &self.bucket, &self.prefix)).await
    }

    /// Every key in the bucket.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .raw
            .list_objects_v2()
            .bucket(&self.bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            keys.extend(
                page.unwrap()
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys
    }

    /// The stored bytes of `key`.
    pub async fn body(&self, key: &str) -> Vec<u8> {
        let out = self
            .raw
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        out.body.collect().await.unwrap().into_bytes().to_vec()
    }
}

/// A plain SDK client for moto.
pub async fn raw_client(endpoint: &str) -> aws_sdk_s3::Client {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(endpoint)
        .load()
        .await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A record for `certname` owned by the node with `node_uid`.
pub fn record(certname: &str, node_uid: &str) -> NodeRecord {
    NodeRecord {
        certname: certname.into(),
        classes: vec!["role::web".into(), "profile::base".into()],
        environment: "production".into(),
        parameters: BTreeMap::from([
            ("tier".into(), json!("frontend")),
            ("ports".into(), json!([80, 443])),
        ]),
        challenge_sha256: sha256_hex(format!("challenge of {certname}").as_bytes()),
        instance_id: Some("i-0123456789abcdef0".into()),
        owner: RecordOwner {
            operator: "puppet-conductor".into(),
            master: "puppet/main".into(),
            node: format!("puppet/{certname}"),
            node_uid: node_uid.into(),
            incarnation: 1,
        },
        state: Default::default(),
    }
}
