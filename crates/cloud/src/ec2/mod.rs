//! [`Ec2Cloud`]: [`Cloud`] over aws-sdk-ec2, for AWS and for EC2-compatible
//! private clouds (Eucalyptus) behind a custom endpoint.
//!
//! Every request goes through a client-side token bucket for its API class
//! ([`RateLimits`]) and is counted ([`Ec2Cloud::calls`]); every SDK call is
//! bounded by the configured timeout. The SDK's standard retry mode (a few
//! attempts with backoff for throttling, 5xx and connection errors) runs
//! inside that bound; anything longer is the reconciler's backoff.

mod calls;
mod convert;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, InstanceType};

pub use calls::CallCounts;
use calls::{Counters, CountingInterceptor};

pub use puppet_conductor_aws::StaticCredentials;

use super::rate_limit::{RateLimiter, RateLimits};
use super::{tags, Cloud, CloudError, Instance, LaunchRequest};

/// Time allowed for one EC2 request (one page of a listing) unless configured otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Instances (in moto: reservations) asked for per DescribeInstances page.
pub const DEFAULT_PAGE_SIZE: i32 = 1000;
/// EC2's bounds on DescribeInstances `MaxResults`.
const PAGE_SIZE_RANGE: std::ops::RangeInclusive<i32> = 5..=1000;
/// Instance ids per TerminateInstances request (EC2 accepts up to 1,000).
const TERMINATE_BATCH: usize = 200;
/// SDK attempts per request (the first plus retries), within the call timeout.
const MAX_ATTEMPTS: u32 = 3;
/// Upper bound of the TCP/TLS connect phase of one attempt.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach one EC2 region or private cloud.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudConfig {
    /// The region (`us-east-1`), or the private cloud's region name (`eucalyptus`).
    pub region: String,
    /// A custom endpoint URL (Eucalyptus, moto); AWS's own when `None`.
    pub endpoint: Option<String>,
    /// Explicit credentials; the SDK's default chain (environment, profile,
    /// web identity/IRSA, container, IMDS) when `None`.
    pub credentials: Option<StaticCredentials>,
    /// Time allowed for each request, retries included. Zero means [`DEFAULT_CALL_TIMEOUT`].
    pub call_timeout: Duration,
    /// Client-side rate limits.
    pub rate_limits: RateLimits,
}

impl CloudConfig {
    /// AWS's endpoint for `region`, default credentials, [`DEFAULT_CALL_TIMEOUT`]
    /// and [`RateLimits::ec2_defaults`].
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            endpoint: None,
            credentials: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            rate_limits: RateLimits::ec2_defaults(),
        }
    }
}

/// The EC2 client. Cheap to clone; clones share rate limits and call counts.
#[derive(Clone)]
pub struct Ec2Cloud {
    client: aws_sdk_ec2::Client,
    region: String,
    endpoint: Option<String>,
    call_timeout: Duration,
    page_size: i32,
    limiter: Arc<RateLimiter>,
    counters: Arc<Counters>,
}

impl fmt::Debug for Ec2Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ec2Cloud")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("call_timeout", &self.call_timeout)
            .field("page_size", &self.page_size)
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl Ec2Cloud {
    /// Build the client. Nothing is sent and no credentials are resolved yet
    /// (the default chain resolves them on the first call); use
    /// [`Cloud::probe`] to check reachability and credentials.
    pub async fn new(config: &CloudConfig) -> Self {
        let call_timeout = if config.call_timeout.is_zero() {
            tracing::warn!("EC2 call timeout of zero; using the default");
            DEFAULT_CALL_TIMEOUT
        } else {
            config.call_timeout
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(call_timeout.min(MAX_CONNECT_TIMEOUT))
                    .operation_timeout(call_timeout)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(c) = &config.credentials {
            loader = loader.credentials_provider(c.provider("puppet-conductor"));
        }
        let shared = loader.load().await;
        let counters = Arc::new(Counters::default());
        let ec2_config = aws_sdk_ec2::config::Builder::from(&shared)
            .interceptor(CountingInterceptor {
                counters: counters.clone(),
            })
            .build();
        Self {
            client: aws_sdk_ec2::Client::from_conf(ec2_config),
            region: config.region.clone(),
            endpoint: config.endpoint.clone(),
            call_timeout,
            page_size: DEFAULT_PAGE_SIZE,
            limiter: Arc::new(RateLimiter::new(&config.rate_limits)),
            counters,
        }
    }

    /// Ask for `page_size` items per DescribeInstances page (clamped to EC2's
    /// 5..=1000); [`DEFAULT_PAGE_SIZE`] otherwise. Mostly for tests of pagination.
    #[must_use]
    pub fn with_page_size(mut self, page_size: i32) -> Self {
        self.page_size = page_size.clamp(*PAGE_SIZE_RANGE.start(), *PAGE_SIZE_RANGE.end());
        self
    }

    /// Requests sent so far (every attempt and every page), per action.
    pub fn calls(&self) -> CallCounts {
        self.counters.snapshot()
    }

    /// The configured region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The time allowed for each request.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Await one SDK request within the call timeout and classify its error.
    async fn bounded<T, E>(
        &self,
        operation: &'static str,
        request: impl Future<Output = Result<T, SdkError<E, aws_sdk_ec2::config::http::HttpResponse>>>,
    ) -> Result<T, CloudError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match tokio::time::timeout(self.call_timeout, request).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(e)) => Err(CloudError::from_sdk(operation, self.call_timeout, e)),
            Err(_) => Err(CloudError::Timeout {
                operation,
                timeout: self.call_timeout,
            }),
        }
    }

    /// One TerminateInstances request.
    async fn terminate_batch(&self, ids: &[&str]) -> Result<(), CloudError> {
        self.limiter.mutating.acquire().await;
        let request = self
            .client
            .terminate_instances()
            .set_instance_ids(Some(ids.iter().map(|id| (*id).to_owned()).collect()))
            .send();
        let output = self.bounded("TerminateInstances", request).await?;
        for change in output.terminating_instances() {
            tracing::info!(
                instance_id = change.instance_id().unwrap_or_default(),
                state = %convert::state_from_sdk(change.current_state()),
                "terminating instance"
            );
        }
        Ok(())
    }

    /// Terminate `ids` (one batch), dropping those EC2 says do not exist and
    /// repeating for the rest.
    async fn terminate_tolerating_unknown(&self, ids: &[&str]) -> Result<(), CloudError> {
        let mut remaining: Vec<&str> = ids.to_vec();
        while !remaining.is_empty() {
            let error = match self.terminate_batch(&remaining).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_instance_not_found() => e,
                Err(e) => return Err(e),
            };
            let missing = ids_named_in(error.message().unwrap_or_default(), &remaining);
            tracing::debug!(?missing, %error, "some instances to terminate do not exist");
            if missing.is_empty() {
                // The message names none of them: find the culprits one by one.
                for id in remaining {
                    match self.terminate_batch(&[id]).await {
                        Ok(()) => {}
                        Err(e) if e.is_instance_not_found() => {
                            tracing::debug!(
                                instance_id = id,
                                "instance to terminate does not exist"
                            );
                        }
                        Err(e) => return Err(e),
                    }
                }
                return Ok(());
            }
            remaining.retain(|id| !missing.contains(id));
        }
        Ok(())
    }
}

/// The ids of `candidates` that `message` names as whole words
/// (`The instance IDs 'i-1, i-2' do not exist`).
fn ids_named_in<'a>(message: &str, candidates: &[&'a str]) -> HashSet<&'a str> {
    let words: HashSet<&str> = message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| !w.is_empty())
        .collect();
    candidates
        .iter()
        .copied()
        .filter(|id| words.contains(id))
        .collect()
}

#[async_trait::async_trait]
impl Cloud for Ec2Cloud {
    async fn describe_master_instances(
        &self,
        master_key: &str,
    ) -> Result<Vec<Instance>, CloudError> {
        const OP: &str = "DescribeInstances";
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", tags::MASTER))
                    .values(master_key)
                    .build(),
            )
            .max_results(self.page_size)
            .into_paginator()
            .send();
        let mut seen = HashSet::new();
        let mut instances = Vec::new();
        let mut page_count = 0_u32;
        loop {
            self.limiter.describe.acquire().await;
            let page = match tokio::time::timeout(self.call_timeout, pages.next()).await {
                Err(_) => {
                    return Err(CloudError::Timeout {
                        operation: OP,
                        timeout: self.call_timeout,
                    })
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(CloudError::from_sdk(OP, self.call_timeout, e)),
                Ok(Some(Ok(page))) => page,
            };
            page_count += 1;
            for sdk in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(instance) = convert::instance_from_sdk(sdk) else {
                    tracing::warn!("DescribeInstances returned an instance without an id");
                    continue;
                };
                // The filter value is a pattern (`*`, `?`): keep exact matches only.
                if instance.tag(tags::MASTER) != Some(master_key) {
                    continue;
                }
                if seen.insert(instance.id.clone()) {
                    instances.push(instance);
                }
            }
            // Stop without another token when the paginator is done anyway.
            if page.next_token().is_none_or(str::is_empty) {
                break;
            }
        }
        tracing::debug!(
            master = master_key,
            instances = instances.len(),
            pages = page_count,
            "described master instances"
        );
        Ok(instances)
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Instance, CloudError> {
        const OP: &str = "RunInstances";
        convert::validate_launch(request)?;
        let user_data = (!request.user_data.is_empty())
            .then(|| aws_smithy_types::base64::encode(request.user_data.as_bytes()));
        let tag_specifications = convert::tag_specifications(&request.tags);
        let security_group_ids = (!request.instance.security_group_ids.is_empty())
            .then(|| request.instance.security_group_ids.clone());
        let call = self
            .client
            .run_instances()
            .image_id(&request.instance.image_id)
            .instance_type(InstanceType::from(request.instance.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .set_subnet_id(request.instance.subnet_id.clone())
            .set_security_group_ids(security_group_ids)
            .set_iam_instance_profile(
                request
                    .instance
                    .iam_instance_profile
                    .as_deref()
                    .map(convert::instance_profile),
            )
            .set_key_name(request.instance.key_name.clone())
            .set_user_data(user_data)
            .client_token(&request.client_token)
            .set_tag_specifications((!tag_specifications.is_empty()).then_some(tag_specifications))
            .set_metadata_options(
                request
                    .instance
                    .imdsv2_required
                    .then(convert::imdsv2_required),
            );

        self.limiter.run_instances.acquire().await;
        let output = self.bounded(OP, call.send()).await?;
        let mut instance = output
            .instances()
            .first()
            .and_then(convert::instance_from_sdk)
            .ok_or_else(|| CloudError::InvalidResponse {
                operation: OP,
                what: "no instance in the reservation".to_owned(),
                http_status: None,
                source: None,
            })?;
        // The tags are applied atomically with the launch; not every cloud echoes them.
        for (key, value) in &request.tags {
            instance
                .tags
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
        tracing::info!(
            instance_id = %instance.id,
            node = request.tags.get(tags::NODE).map(String::as_str).unwrap_or_default(),
            incarnation = request.tags.get(tags::INCARNATION).map(String::as_str).unwrap_or_default(),
            "launched instance"
        );
        Ok(instance)
    }

    async fn terminate(&self, instance_ids: &[String]) -> Result<(), CloudError> {
        let mut seen = HashSet::new();
        let ids: Vec<&str> = instance_ids
            .iter()
            .map(String::as_str)
            .filter(|id| !id.is_empty() && seen.insert(*id))
            .collect();
        for batch in ids.chunks(TERMINATE_BATCH) {
            self.terminate_tolerating_unknown(batch).await?;
        }
        Ok(())
    }

    async fn probe(&self) -> Result<(), CloudError> {
        self.limiter.describe.acquire().await;
        // No filter: the smallest page of DescribeInstances needs exactly the
        // permission the operator needs anyway, and costs nothing anywhere
        // (moto's tag filters scan every tagged resource per instance).
        let request = self
            .client
            .describe_instances()
            .max_results(*PAGE_SIZE_RANGE.start())
            .send();
        self.bounded("DescribeInstances", request).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_named_in_not_found_messages() {
        let candidates = ["i-12345678", "i-12345678abcdef012", "i-0aaaaaaaaaaaaaaaa"];
        let named = ids_named_in(
            "The instance IDs 'i-12345678abcdef012, i-0aaaaaaaaaaaaaaaa' do not exist",
            &candidates,
        );
        assert_eq!(
            named,
            HashSet::from(["i-12345678abcdef012", "i-0aaaaaaaaaaaaaaaa"])
        );
        let one = ids_named_in("The instance ID 'i-12345678' does not exist", &candidates);
        assert_eq!(one, HashSet::from(["i-12345678"]));
        assert!(ids_named_in("Invalid id: \"bogus\"", &candidates).is_empty());
    }

    #[test]
    fn credentials_are_not_printed() {
        let c = StaticCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: Some("FwoGZXIvYXdz".into()),
        };
        let printed = format!("{c:?}");
        assert!(printed.contains("AKIDEXAMPLE"));
        assert!(!printed.contains("wJalrXUtnFEMI"));
        assert!(!printed.contains("FwoGZXIvYXdz"));
    }

    #[test]
    fn config_defaults() {
        let c = CloudConfig::new("eu-west-1");
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.call_timeout, DEFAULT_CALL_TIMEOUT);
        assert_eq!(c.rate_limits, RateLimits::ec2_defaults());
        assert!(c.endpoint.is_none() && c.credentials.is_none());
    }

    #[tokio::test]
    async fn page_size_is_clamped_and_zero_timeout_replaced() {
        let mut config = CloudConfig::new("us-east-1");
        config.endpoint = Some("http://127.0.0.1:1".into());
        config.call_timeout = Duration::ZERO;
        config.credentials = Some(StaticCredentials {
            access_key_id: "a".into(),
            secret_access_key: "s".into(),
            session_token: None,
        });
        let cloud = Ec2Cloud::new(&config).await;
        assert_eq!(cloud.call_timeout(), DEFAULT_CALL_TIMEOUT);
        assert_eq!(cloud.clone().with_page_size(1).page_size, 5);
        assert_eq!(cloud.clone().with_page_size(50_000).page_size, 1000);
        assert_eq!(cloud.calls(), CallCounts::default());
    }
}
