//! [`FakeEc2`]: one in-memory EC2 region behind [`Cloud`], for unit tests, the
//! lifecycle simulation and the benchmarks.
//!
//! It plays both sides of the wire: the EC2 API in `region.rs` (state, tags, ClientToken
//! idempotency, pagination, eventual consistency, the error codes EC2 answers), and here
//! the parts of [`Ec2Cloud`](puppet_conductor_cloud::Ec2Cloud) that shape what the operator sees
//! (local validation, exact master match, following NextToken, terminate batches and
//! their tolerance of unknown ids). `tests/integration/contract_ec2.rs` runs the same
//! cases against this fake and against `Ec2Cloud` on moto.
//!
//! Every request goes through the [`Gate`] first and is counted as `Ec2Cloud` counts
//! it. A [`Fate`] decides a whole SDK call, the SDK's own retries included: a `Fail` is
//! what the real client returns once its attempts are used up.
//!
//! Time is `tokio::time`, so a paused clock drives boot, shutdown, the visibility lag
//! and the retention of terminated instances; nothing is random.
//!
//! Knowingly different from AWS (see also the contract tests): one instance per
//! reservation; a new instance answers `pending` even with no boot time (as EC2 and
//! moto do); no security group is reported unless requested (AWS would report the
//! default VPC group, moto reports none); a public address only in the default subnet;
//! AMIs, instance types, subnets, groups, profiles and key pairs are not checked;
//! `stopping`/`stopped` never happen (the operator never stops instances).

mod region;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{Call, Fate, FaultKind, Faults, Gate, System};
use puppet_conductor_cloud::ec2::DEFAULT_PAGE_SIZE;
use puppet_conductor_cloud::{
    tags, CallCounts, Cloud, CloudError, Instance, LaunchRequest, DEFAULT_CALL_TIMEOUT,
};
use puppet_conductor_core::sync::lock;
use region::{Region, Settings};

/// How long EC2 keeps listing a terminated instance unless configured otherwise
/// (AWS: "about an hour"; moto: forever).
pub const DEFAULT_TERMINATED_RETENTION: Duration = Duration::from_secs(3600);
/// How long a client token stays bound after its instance is terminated (AWS: "at
/// least 24 hours"); the fake forgets the instance entirely after that.
pub const TOKEN_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The availability zone instances are placed in unless configured otherwise.
pub const DEFAULT_ZONE: &str = "us-east-1a";
/// The default VPC's subnet, used when a request names none.
pub const DEFAULT_SUBNET_ID: &str = "subnet-0000000000000000d";

// The real client's limits (private to `cloud::ec2`, repeated here on purpose: the
// contract tests catch a drift).
const PAGE_SIZE_RANGE: RangeInclusive<i32> = 5..=1000;
const TERMINATE_BATCH: usize = 200;
const MAX_USER_DATA_BYTES: usize = 16 * 1024;
const MAX_CLIENT_TOKEN_CHARS: usize = 64;

/// One instance as the fake holds it: the truth, not what a lagging describe shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeInstance {
    /// The instance in its current state.
    pub instance: Instance,
    /// The launch request as sent (user data, client token, profile, key pair ...).
    pub request: LaunchRequest,
    /// Whether DescribeInstances lists it (visibility lag aside): false once a
    /// terminated instance has outlived its retention.
    pub listed: bool,
}

/// An in-memory EC2 region implementing [`Cloud`]; see the module documentation.
pub struct FakeEc2 {
    gate: Arc<dyn Gate>,
    region: Mutex<Region>,
    settings: Settings,
    call_timeout: Duration,
    wait_on_timeout: bool,
}

impl Default for FakeEc2 {
    /// A fake behind an unscripted [`Faults`]: every call is answered.
    fn default() -> Self {
        Self::new(Arc::new(Faults::default()))
    }
}

impl FakeEc2 {
    /// An empty region behind `gate`: no boot, shutdown or visibility delay, terminated
    /// instances listed for [`DEFAULT_TERMINATED_RETENTION`], pages of
    /// [`DEFAULT_PAGE_SIZE`], timeouts reported as [`DEFAULT_CALL_TIMEOUT`] without
    /// waiting, launch times counted from now.
    pub fn new(gate: Arc<dyn Gate>) -> Self {
        Self {
            gate,
            region: Mutex::new(Region::default()),
            settings: Settings {
                boot: Duration::ZERO,
                shutdown: Duration::ZERO,
                lag: Duration::ZERO,
                retention: DEFAULT_TERMINATED_RETENTION,
                page_size: usize::try_from(DEFAULT_PAGE_SIZE).unwrap_or(1000),
                zone: DEFAULT_ZONE.to_owned(),
                epoch: Utc::now(),
                created: Instant::now(),
            },
            call_timeout: DEFAULT_CALL_TIMEOUT,
            wait_on_timeout: false,
        }
    }

    /// Instances stay `pending` this long after launch, then are `running`.
    #[must_use]
    pub fn with_boot_time(mut self, boot: Duration) -> Self {
        self.settings.boot = boot;
        self
    }

    /// Terminated instances stay `shutting-down` this long, then are `terminated`.
    #[must_use]
    pub fn with_shutdown_time(mut self, shutdown: Duration) -> Self {
        self.settings.shutdown = shutdown;
        self
    }

    /// DescribeInstances and TerminateInstances see the region as it was this long ago
    /// (EC2's eventual consistency): a new instance is missing (terminating it answers
    /// `InvalidInstanceID.NotFound`, which the client takes as success), a terminated
    /// one still shows its old state. RunInstances itself is never behind.
    #[must_use]
    pub fn with_visibility_lag(mut self, lag: Duration) -> Self {
        self.settings.lag = lag;
        self
    }

    /// Terminated instances are listed this long after reaching `terminated`.
    #[must_use]
    pub fn with_terminated_retention(mut self, retention: Duration) -> Self {
        self.settings.retention = retention;
        self
    }

    /// Instances per DescribeInstances page, clamped to EC2's 5..=1000 as
    /// [`Ec2Cloud::with_page_size`](puppet_conductor_cloud::Ec2Cloud::with_page_size) does.
    #[must_use]
    pub fn with_page_size(mut self, page_size: i32) -> Self {
        let clamped = page_size.clamp(*PAGE_SIZE_RANGE.start(), *PAGE_SIZE_RANGE.end());
        self.settings.page_size = usize::try_from(clamped).unwrap_or(1000);
        self
    }

    /// The limit timeouts report (the real client's configured call timeout).
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Whether a timed-out or lost call makes its caller wait the call timeout (tokio
    /// time) first, as the real one does; off by default to keep running-clock tests fast.
    #[must_use]
    pub fn with_timeout_wait(mut self, wait: bool) -> Self {
        self.wait_on_timeout = wait;
        self
    }

    /// The availability zone of every instance.
    #[must_use]
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.settings.zone = zone.into();
        self
    }

    /// Launch times are `epoch` plus the tokio time elapsed since construction
    /// (wall clock at construction by default; fix it for reproducible runs).
    #[must_use]
    pub fn with_epoch(mut self, epoch: DateTime<Utc>) -> Self {
        self.settings.epoch = epoch;
        self
    }

    /// Every instance the fake still holds, in launch order, in its current state.
    pub fn instances(&self) -> Vec<FakeInstance> {
        self.apply(|region, now, s| region.all(now, s))
    }

    /// One instance by id, in its current state.
    pub fn instance(&self, id: &str) -> Option<FakeInstance> {
        self.apply(|region, now, s| region.one(id, now, s))
    }

    /// The user data instance `id` was launched with (what the instance would read).
    pub fn user_data(&self, id: &str) -> Option<String> {
        self.instance(id).map(|i| i.request.user_data)
    }

    /// Someone else (a person, an autoscaler, a spot reclaim) terminates `id`, bypassing
    /// the gate. Returns whether it was `pending` or `running`.
    pub fn terminate_outside(&self, id: &str) -> bool {
        self.apply(|region, now, _| region.terminate_outside(id, now))
    }

    /// The region loses everything (instances and client tokens), as after a disaster
    /// or against a freshly reset emulator. Counters and the id sequence continue.
    pub fn lose_state(&self) {
        self.locked(Region::lose_state);
    }

    /// Requests received so far per action, whatever their fate (the probe under
    /// `describe`), as [`Ec2Cloud::calls`](puppet_conductor_cloud::Ec2Cloud::calls) counts them,
    /// except that one fate stands for all of an SDK call's attempts.
    pub fn calls(&self) -> CallCounts {
        self.locked(|region| region.calls)
    }

    /// DescribeInstances pages answered to [`Cloud::describe_master_instances`].
    pub fn pages_served(&self) -> u64 {
        self.locked(|region| region.pages_served)
    }

    fn locked<T>(&self, f: impl FnOnce(&mut Region) -> T) -> T {
        // Every change under the lock is complete before anything can panic.
        f(&mut lock(&self.region))
    }

    /// Run `f` on the region now, after forgetting what has expired.
    fn apply<T>(&self, f: impl FnOnce(&mut Region, Instant, &Settings) -> T) -> T {
        let now = Instant::now();
        self.locked(|region| {
            region.prune(now, &self.settings);
            f(region, now, &self.settings)
        })
    }

    /// Count the request, ask the gate, and act on its fate: `request` is applied for
    /// `Answer` and for `Lost` (whose answer is then replaced by a timeout).
    async fn gated<T>(
        &self,
        operation: &'static str,
        target: String,
        request: impl FnOnce(&mut Region, Instant, &Settings) -> Result<T, CloudError>,
    ) -> Result<T, CloudError> {
        self.locked(|region| {
            let counter = match operation {
                "DescribeInstances" => &mut region.calls.describe,
                "RunInstances" => &mut region.calls.run,
                "TerminateInstances" => &mut region.calls.terminate,
                _ => &mut region.calls.other,
            };
            *counter += 1;
        });
        let call = Call::new(System::Ec2, operation, target);
        match self.gate.admit(&call).await {
            Fate::Answer => self.apply(request),
            Fate::Lost => {
                // Applied; only the answer is lost on the way back.
                let _lost = self.apply(request);
                Err(self.timeout(operation).await)
            }
            Fate::Late => {
                let answer = self.apply(request);
                if self.gate.deliver(&call).await {
                    answer
                } else {
                    Err(self.timeout(operation).await)
                }
            }
            Fate::Fail(kind) => Err(self.fault(operation, kind).await),
        }
    }

    /// The error the real client returns when a call fails with `kind`.
    async fn fault(&self, operation: &'static str, kind: FaultKind) -> CloudError {
        let (code, message, status) = match kind {
            FaultKind::Timeout => return self.timeout(operation).await,
            FaultKind::Unavailable => (
                "Unavailable",
                "The service is unavailable. Please try again shortly.",
                503,
            ),
            FaultKind::Throttled => ("RequestLimitExceeded", "Request limit exceeded.", 503),
            FaultKind::Denied => (
                "AuthFailure",
                "AWS was not able to validate the provided access credentials",
                401,
            ),
        };
        self.locked(|region| region.api_error(operation, code, message, status))
    }

    async fn timeout(&self, operation: &'static str) -> CloudError {
        if self.wait_on_timeout {
            tokio::time::sleep(self.call_timeout).await;
        }
        CloudError::Timeout {
            operation,
            timeout: self.call_timeout,
        }
    }

    async fn terminate_batch(&self, ids: &[&str]) -> Result<(), CloudError> {
        self.gated("TerminateInstances", ids.join(","), |region, now, s| {
            region.terminate(now, s, ids)
        })
        .await
    }

    /// What `Ec2Cloud` does: drop the ids a not-found error names and repeat, or try
    /// them one by one when it names none.
    async fn terminate_tolerating_unknown(&self, ids: &[&str]) -> Result<(), CloudError> {
        let mut remaining: Vec<&str> = ids.to_vec();
        while !remaining.is_empty() {
            let error = match self.terminate_batch(&remaining).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_instance_not_found() => e,
                Err(e) => return Err(e),
            };
            let missing = ids_named_in(error.message().unwrap_or_default(), &remaining);
            if missing.is_empty() {
                for id in remaining {
                    match self.terminate_batch(&[id]).await {
                        Ok(()) => {}
                        Err(e) if e.is_instance_not_found() => {}
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

#[async_trait::async_trait]
impl Cloud for FakeEc2 {
    async fn describe_master_instances(
        &self,
        master_key: &str,
    ) -> Result<Vec<Instance>, CloudError> {
        let mut seen = HashSet::new();
        let mut instances = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .gated(
                    "DescribeInstances",
                    master_key.to_owned(),
                    |region, now, s| Ok(region.describe_page(now, s, master_key, after)),
                )
                .await?;
            self.locked(|region| region.pages_served += 1);
            // The filter value is a pattern: keep exact matches, as the real client does.
            for instance in page.instances {
                if instance.tag(tags::MASTER) == Some(master_key)
                    && seen.insert(instance.id.clone())
                {
                    instances.push(instance);
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(instances),
            }
        }
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Instance, CloudError> {
        validate_launch(request)?;
        let target = request
            .tags
            .get(tags::CERTNAME)
            .unwrap_or(&request.client_token)
            .clone();
        self.gated("RunInstances", target, |region, now, s| {
            region.run_instances(now, s, request)
        })
        .await
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
        // Ec2Cloud probes with an unfiltered DescribeInstances of one small page.
        self.gated("DescribeInstances", "probe".to_owned(), |_, _, _| Ok(()))
            .await
    }
}

/// What `Ec2Cloud` refuses before sending anything.
fn validate_launch(request: &LaunchRequest) -> Result<(), CloudError> {
    let invalid = |what: String| CloudError::InvalidRequest {
        operation: "RunInstances",
        what,
        source: None,
    };
    if request.instance.image_id.trim().is_empty() {
        return Err(invalid("image id is empty".to_owned()));
    }
    if request.instance.instance_type.trim().is_empty() {
        return Err(invalid("instance type is empty".to_owned()));
    }
    if request.user_data.len() > MAX_USER_DATA_BYTES {
        return Err(invalid(format!(
            "user data is {} bytes, EC2 allows {MAX_USER_DATA_BYTES}",
            request.user_data.len()
        )));
    }
    let token = &request.client_token;
    if token.is_empty() || token.len() > MAX_CLIENT_TOKEN_CHARS || !token.is_ascii() {
        return Err(invalid(format!(
            "client token must be 1 to {MAX_CLIENT_TOKEN_CHARS} ASCII characters (got {} bytes)",
            token.len()
        )));
    }
    tags::validate(&request.tags).map_err(invalid)
}

/// The ids of `candidates` that `message` names as whole words (as `Ec2Cloud` reads them).
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
