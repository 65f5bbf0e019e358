//! Counting the HTTP requests the EC2 client really sends.
//!
//! An SDK interceptor sees every attempt (SDK retries and every page of a
//! paginated call included), so the counts are what EC2's throttling sees,
//! and tests can assert how many DescribeInstances a resync costs.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ec2::error::BoxError;

/// How many requests one [`Ec2Cloud`](super::Ec2Cloud) has sent, per EC2 action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// `DescribeInstances` (each page, the probe included).
    pub describe: u64,
    /// `RunInstances`.
    pub run: u64,
    /// `TerminateInstances`.
    pub terminate: u64,
    /// Any other action.
    pub other: u64,
}

impl CallCounts {
    /// All requests together.
    pub fn total(&self) -> u64 {
        self.describe + self.run + self.terminate + self.other
    }
}

/// The shared atomic counters behind [`CallCounts`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    describe: AtomicU64,
    run: AtomicU64,
    terminate: AtomicU64,
    other: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CallCounts {
        CallCounts {
            describe: self.describe.load(Ordering::Relaxed),
            run: self.run.load(Ordering::Relaxed),
            terminate: self.terminate.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
        }
    }

    fn record(&self, action: Option<&str>) {
        let counter = match action {
            Some("DescribeInstances") => &self.describe,
            Some("RunInstances") => &self.run,
            Some("TerminateInstances") => &self.terminate,
            _ => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The interceptor that feeds [`Counters`].
#[derive(Debug)]
pub(crate) struct CountingInterceptor {
    pub(crate) counters: std::sync::Arc<Counters>,
}

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "PuppetConductorCallCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.request().body().bytes();
        self.counters.record(body.and_then(query_action));
        Ok(())
    }
}

/// The `Action` of an EC2 query-protocol body (`Action=RunInstances&Version=...`).
fn query_action(body: &[u8]) -> Option<&str> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_from_query_bodies() {
        assert_eq!(
            query_action(b"Action=DescribeInstances&Version=2016-11-15&MaxResults=1000"),
            Some("DescribeInstances")
        );
        assert_eq!(
            query_action(b"Version=2016-11-15&Action=RunInstances"),
            Some("RunInstances")
        );
        assert_eq!(query_action(b"Version=2016-11-15"), None);
        assert_eq!(query_action(b"Action=&x=1"), None);
        assert_eq!(query_action(&[0xff, 0xfe]), None);
    }

    #[test]
    fn counting() {
        let c = Counters::default();
        for action in [
            Some("DescribeInstances"),
            Some("DescribeInstances"),
            Some("RunInstances"),
            Some("TerminateInstances"),
            Some("DescribeRegions"),
            None,
        ] {
            c.record(action);
        }
        let s = c.snapshot();
        assert_eq!(
            s,
            CallCounts {
                describe: 2,
                run: 1,
                terminate: 1,
                other: 2
            }
        );
        assert_eq!(s.total(), 6);
    }
}
