//! Client-side token buckets in front of EC2's own.
//!
//! EC2 throttles each account and region with token buckets per API class
//! ("Request throttling for the Amazon EC2 API", EC2 API reference). The
//! defaults there are:
//!
//! | class                                   | bucket | refill/s |
//! |-----------------------------------------|-------:|---------:|
//! | non-mutating (Describe*)                |    100 |       20 |
//! | mutating (TerminateInstances, tags ...) |     50 |        5 |
//! | RunInstances (its own resource bucket)  |   1000 |        2 |
//!
//! [`RateLimits::ec2_defaults`] stays below all of them and keeps a small burst
//! for RunInstances (5, not 1000): the operator is rarely the account's only
//! client, and a burst of a thousand launches is what a planner bug looks like.
//! Staying under the buckets means the operator waits a little instead of
//! collecting `RequestLimitExceeded`, which would also throttle the other
//! clients of the account.
//!
//! Hand-written rather than `governor`: these buckets run on tokio's clock, so the
//! lifecycle simulation's paused time drives them and a seed replays exactly.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// One bucket: up to `capacity` calls at once, then `refill_per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketLimits {
    /// Tokens the bucket holds when full (the burst). At least 1 is used.
    pub capacity: u32,
    /// Tokens added per second. Must be finite and positive, otherwise the
    /// bucket is treated as unlimited (and a warning logged).
    pub refill_per_second: f64,
}

impl BucketLimits {
    /// A bucket of `capacity` refilled at `refill_per_second`.
    pub const fn new(capacity: u32, refill_per_second: f64) -> Self {
        Self {
            capacity,
            refill_per_second,
        }
    }
}

/// The client-side limits per EC2 API class; `None` means unlimited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimits {
    /// `RunInstances`.
    pub run_instances: Option<BucketLimits>,
    /// Other mutating calls (`TerminateInstances`).
    pub mutating: Option<BucketLimits>,
    /// Non-mutating calls (`DescribeInstances`, each page counts).
    pub describe: Option<BucketLimits>,
}

impl RateLimits {
    /// Below EC2's default account buckets (see the module documentation):
    /// RunInstances 5 burst / 2 per s, mutating 50 / 5 per s, describe 100 / 20 per s.
    pub const fn ec2_defaults() -> Self {
        Self {
            run_instances: Some(BucketLimits::new(5, 2.0)),
            mutating: Some(BucketLimits::new(50, 5.0)),
            describe: Some(BucketLimits::new(100, 20.0)),
        }
    }

    /// No client-side limits: for tests against moto, which does not throttle.
    pub const fn unlimited() -> Self {
        Self {
            run_instances: None,
            mutating: None,
            describe: None,
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::ec2_defaults()
    }
}

/// An async token bucket. Waiters are served in arrival order.
#[derive(Debug)]
pub struct TokenBucket {
    limits: Option<BucketLimits>,
    state: Mutex<BucketState>,
}

impl TokenBucket {
    /// A full bucket with `limits`, or one that never waits for `None`.
    pub fn new(limits: Option<BucketLimits>) -> Self {
        let limits = limits.and_then(sanitize);
        let tokens = limits.map_or(0.0, |l| f64::from(l.capacity));
        Self {
            limits,
            state: Mutex::new(BucketState {
                tokens,
                updated: Instant::now(),
            }),
        }
    }

    /// The limits in force (after sanitizing); `None` when unlimited.
    pub fn limits(&self) -> Option<BucketLimits> {
        self.limits
    }

    /// Take a token if one is available now, without waiting.
    pub async fn try_acquire(&self) -> bool {
        let Some(limits) = self.limits else {
            return true;
        };
        let mut state = self.state.lock().await;
        state.try_take(Instant::now(), limits).is_ok()
    }

    /// Wait until a token is available and take it.
    ///
    /// Cancel-safe: dropping the future before it completes takes no token.
    /// The lock is held while waiting, so later callers queue behind earlier
    /// ones (tokio's mutex is fair) instead of racing for each refill.
    pub async fn acquire(&self) {
        let Some(limits) = self.limits else {
            return;
        };
        let mut state = self.state.lock().await;
        loop {
            match state.try_take(Instant::now(), limits) {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

/// The bucket's arithmetic, apart from any clock.
#[derive(Debug, Clone, Copy)]
struct BucketState {
    tokens: f64,
    updated: Instant,
}

impl BucketState {
    /// Add what accrued since the last update, up to the capacity.
    fn refill(&mut self, now: Instant, limits: BucketLimits) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * limits.refill_per_second).min(f64::from(limits.capacity));
        self.updated = now;
    }

    /// Take one token at `now`, or say how long until one will be there.
    fn try_take(&mut self, now: Instant, limits: BucketLimits) -> Result<(), Duration> {
        self.refill(now, limits);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let seconds = (1.0 - self.tokens) / limits.refill_per_second;
        // Never zero (that would spin), never absurd (sanitize keeps the rate positive).
        let wait = Duration::try_from_secs_f64(seconds)
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(1));
        Err(wait)
    }
}

fn sanitize(limits: BucketLimits) -> Option<BucketLimits> {
    if !(limits.refill_per_second.is_finite() && limits.refill_per_second > 0.0) {
        tracing::warn!(
            refill_per_second = limits.refill_per_second,
            "EC2 rate limit with a refill rate that is not positive; treating it as unlimited"
        );
        return None;
    }
    Some(BucketLimits {
        capacity: limits.capacity.max(1),
        refill_per_second: limits.refill_per_second,
    })
}

/// The three buckets of one EC2 client.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    pub(crate) run_instances: TokenBucket,
    pub(crate) mutating: TokenBucket,
    pub(crate) describe: TokenBucket,
}

impl RateLimiter {
    pub(crate) fn new(limits: &RateLimits) -> Self {
        Self {
            run_instances: TokenBucket::new(limits.run_instances),
            mutating: TokenBucket::new(limits.mutating),
            describe: TokenBucket::new(limits.describe),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn full(limits: BucketLimits, now: Instant) -> BucketState {
        BucketState {
            tokens: f64::from(limits.capacity),
            updated: now,
        }
    }

    #[test]
    fn burst_then_refill_rate() {
        // RunInstances defaults: 5 at once, then one every 500 ms.
        let limits = BucketLimits::new(5, 2.0);
        let t0 = Instant::now();
        let mut state = full(limits, t0);
        for i in 0..5 {
            assert_eq!(state.try_take(t0, limits), Ok(()), "burst token {i}");
        }
        assert_eq!(state.try_take(t0, limits), Err(500 * MS));
        assert_eq!(state.try_take(t0 + 250 * MS, limits), Err(250 * MS));
        assert_eq!(state.try_take(t0 + 500 * MS, limits), Ok(()));
        assert_eq!(state.try_take(t0 + 500 * MS, limits), Err(500 * MS));
        assert_eq!(state.try_take(t0 + 1000 * MS, limits), Ok(()));
    }

    #[test]
    fn refill_stops_at_capacity() {
        let limits = BucketLimits::new(3, 5.0);
        let t0 = Instant::now();
        let mut state = full(limits, t0);
        for _ in 0..3 {
            assert!(state.try_take(t0, limits).is_ok());
        }
        // An hour idle refills three tokens, not 18,000.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(state.try_take(later, limits).is_ok());
        }
        assert_eq!(state.try_take(later, limits), Err(200 * MS));
    }

    #[test]
    fn sustained_rate_matches_refill() {
        // Mutating defaults: after the burst of 50, exactly 5 per second.
        let limits = BucketLimits::new(50, 5.0);
        let t0 = Instant::now();
        let mut state = full(limits, t0);
        let mut now = t0;
        let mut taken = 0;
        while now < t0 + Duration::from_secs(10) {
            match state.try_take(now, limits) {
                Ok(()) => taken += 1,
                Err(wait) => now += wait,
            }
        }
        // 50 from the burst, then one every 200 ms (the last may fall on either
        // side of the 10 s mark in floating point).
        assert!((99..=100).contains(&taken), "{taken}");
    }

    #[test]
    fn clock_going_backwards_adds_nothing() {
        let limits = BucketLimits::new(1, 1.0);
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut state = full(limits, t0);
        assert!(state.try_take(t0, limits).is_ok());
        assert_eq!(
            state.try_take(t0 - Duration::from_secs(5), limits),
            Err(Duration::from_secs(1))
        );
    }

    #[test]
    fn invalid_limits_are_sanitized() {
        assert_eq!(
            TokenBucket::new(Some(BucketLimits::new(0, 2.0))).limits(),
            Some(BucketLimits::new(1, 2.0))
        );
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                TokenBucket::new(Some(BucketLimits::new(5, rate))).limits(),
                None
            );
        }
    }

    #[test]
    fn presets() {
        let d = RateLimits::default();
        assert_eq!(d, RateLimits::ec2_defaults());
        assert_eq!(d.run_instances, Some(BucketLimits::new(5, 2.0)));
        assert_eq!(d.mutating, Some(BucketLimits::new(50, 5.0)));
        assert_eq!(d.describe, Some(BucketLimits::new(100, 20.0)));
        let u = RateLimits::unlimited();
        assert!(u.run_instances.is_none() && u.mutating.is_none() && u.describe.is_none());
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let bucket = TokenBucket::new(None);
        let start = std::time::Instant::now();
        for _ in 0..10_000 {
            bucket.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    // Real time, kept short: tokio's paused clock needs the `test-util`
    // feature, which the crate does not enable. The arithmetic itself is
    // tested above with explicit instants.
    #[tokio::test]
    async fn acquire_waits_for_refill_in_order() {
        let bucket = std::sync::Arc::new(TokenBucket::new(Some(BucketLimits::new(2, 50.0))));
        let start = std::time::Instant::now();
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..6 {
            let bucket = bucket.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                bucket.acquire().await;
                order.lock().unwrap().push(i);
            }));
            // Make arrival order deterministic.
            tokio::task::yield_now().await;
            tokio::time::sleep(MS).await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = start.elapsed();
        // 2 from the burst, 4 more at 20 ms each.
        assert!(elapsed >= 75 * MS, "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn cancelled_acquire_takes_no_token() {
        let bucket = TokenBucket::new(Some(BucketLimits::new(1, 10.0)));
        bucket.acquire().await;
        // Empty now: a waiter that gives up early must not consume the next token.
        let gave_up = tokio::time::timeout(10 * MS, bucket.acquire()).await;
        assert!(gave_up.is_err());
        let start = std::time::Instant::now();
        bucket.acquire().await;
        assert!(start.elapsed() < 150 * MS);
    }
}
