//! Where the records live ([`RecordsConfig`]) and building an [`S3Records`] for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::Client;
use puppet_conductor_core::record::KeyLayout;

use super::calls::Counters;
use super::S3Records;
#[cfg(doc)]
use crate::Records;

/// Default timeout around each S3 call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Region used when none is configured (S3-compatible stores rarely care).
const FALLBACK_REGION: &str = "us-east-1";

/// Explicit credentials: the same type the cloud client takes.
pub use puppet_conductor_aws::StaticCredentials;

/// Where the records live and how to reach them.
#[derive(Clone, Debug)]
pub struct RecordsConfig {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix (normalised: `"puppet"` means `puppet/`).
    pub prefix: String,
    /// Region to sign for (`us-east-1` when empty).
    pub region: String,
    /// Custom endpoint URL (Eucalyptus, moto); AWS's when `None`.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible stores.
    pub force_path_style: bool,
    /// Static credentials; the default credential chain (environment, web
    /// identity, instance profile, ...) when `None`.
    pub credentials: Option<StaticCredentials>,
    /// Timeout around each S3 call (one page, one PUT, ...).
    pub call_timeout: Duration,
}

impl S3Records {
    /// A client for `config`. Builds no connection; nothing is checked until
    /// the first call ([`Records::probe`] is the cheap one).
    pub async fn new(config: &RecordsConfig) -> Self {
        let region = if config.region.is_empty() {
            FALLBACK_REGION.to_owned()
        } else {
            config.region.clone()
        };
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region));
        if let Some(c) = &config.credentials {
            loader = loader.credentials_provider(c.provider("puppet-conductor-records"));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let shared = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            // Plain PUTs with Content-Length: S3-compatible stores (Eucalyptus,
            // older Ceph/MinIO) do not all understand the flexible-checksum trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self {
            client: Client::from_conf(s3),
            bucket: config.bucket.clone(),
            layout: KeyLayout::new(&config.prefix),
            timeout: config.call_timeout,
            counters: Counters::default(),
            known: Mutex::new(HashMap::new()),
        }
    }
}
