//! EC2 (and EC2-compatible private clouds such as Eucalyptus): the narrow
//! interface the reconcilers use, and its aws-sdk-ec2 implementation.
//!
//! The trait lets the planner and reconcilers be tested without a cloud; the
//! real one is [`Ec2Cloud`]. Observation is one paginated, tag-filtered
//! DescribeInstances per master ([`Cloud::describe_master_instances`]), not a
//! call per node. Every method is one bounded operation the reconciler may
//! repeat; [`CloudError::is_retryable`] tells it how to back off.
//!
//! Launch idempotency: real EC2 deduplicates RunInstances by `ClientToken`,
//! but moto does not, so callers must look instances up by their tags
//! ([`tags::NODE_UID`], [`tags::INCARNATION`]) before launching and never rely
//! on the token alone.

pub mod ec2;
pub mod error;
pub mod rate_limit;

pub use ec2::{CallCounts, CloudConfig, Ec2Cloud, StaticCredentials, DEFAULT_CALL_TIMEOUT};
pub use error::CloudError;
pub use rate_limit::{BucketLimits, RateLimits, TokenBucket};

pub use puppet_conductor_core::instance::{
    tags, Instance, InstanceSettings, InstanceState, LaunchRequest,
};

/// What the operator needs from EC2.
#[async_trait::async_trait]
pub trait Cloud: Send + Sync {
    /// Every instance (any state) carrying `tags::MASTER == master_key`, all pages.
    async fn describe_master_instances(
        &self,
        master_key: &str,
    ) -> Result<Vec<Instance>, CloudError>;

    /// Launches exactly one instance (MinCount=MaxCount=1) with the tags on the instance and its volumes.
    async fn launch(&self, request: &LaunchRequest) -> Result<Instance, CloudError>;

    /// Terminates; already terminated / unknown ids are success.
    async fn terminate(&self, instance_ids: &[String]) -> Result<(), CloudError>;

    /// Cheap reachability/credentials probe (e.g. DescribeInstances MaxResults=5 with a filter, or DescribeRegions).
    async fn probe(&self) -> Result<(), CloudError>;
}
