//! Per-object exponential backoff with jitter, capped, reset on success.
//!
//! Hand-written rather than a backoff crate: the jitter is drawn from the object and
//! its failure count, not a random source, so a simulation seed replays exactly; the
//! rest is one doubling and a cap.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::sync::lock;

/// Failure counts per object key (`namespace/name`).
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// A backoff starting at `base`, doubling per consecutive failure, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&self, key: &str) -> Duration {
        let n = {
            let mut map = lock(&self.failures);
            let n = map.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = delay_for(self.base, self.cap, n);
        // Up to +25% jitter so a fleet failing together does not retry in lockstep; drawn
        // from the key and count, not a random source, so a simulation replays exactly.
        let jitter = delay.mul_f64(jitter_fraction(key, n) * 0.25);
        (delay + jitter).min(self.cap)
    }

    /// [`Backoff::next_delay`], but never sooner than `floor` (a service's `Retry-After`)
    /// unless that is beyond the cap: the cap bounds every wait.
    pub fn next_delay_at_least(&self, key: &str, floor: Option<Duration>) -> Duration {
        self.next_delay(key)
            .max(floor.unwrap_or_default())
            .min(self.cap)
    }

    /// Forgets the failures of an object after a successful pass.
    pub fn reset(&self, key: &str) {
        lock(&self.failures).remove(key);
    }
}

/// A fraction in [0, 1) that differs between objects and between attempts.
fn jitter_fraction(key: &str, failures: u32) -> f64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(key.as_bytes())
        .chain_update(failures.to_le_bytes())
        .finalize();
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(word) >> 11) as f64 / (1u64 << 53) as f64
}

/// `base * 2^(failures-1)`, capped.
pub fn delay_for(base: Duration, cap: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << exp).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_and_is_capped() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(300);
        assert_eq!(delay_for(base, cap, 1), Duration::from_secs(1));
        assert_eq!(delay_for(base, cap, 4), Duration::from_secs(8));
        assert_eq!(delay_for(base, cap, 30), cap);
    }

    #[test]
    fn reset_starts_over_and_jitter_stays_under_the_cap() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(10));
        for _ in 0..10 {
            assert!(b.next_delay("ns/a") <= Duration::from_secs(10));
        }
        b.reset("ns/a");
        let d = b.next_delay("ns/a");
        assert!(
            d >= Duration::from_secs(2) && d <= Duration::from_millis(2500),
            "{d:?}"
        );
    }

    #[test]
    fn a_floor_raises_the_delay_but_never_past_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let floor = Some(Duration::from_secs(20));
        assert_eq!(
            b.next_delay_at_least("ns/a", floor),
            Duration::from_secs(20)
        );
        assert_eq!(
            b.next_delay_at_least("ns/b", Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
        let unfloored = b.next_delay_at_least("ns/c", None);
        assert!(unfloored <= Duration::from_millis(1250), "{unfloored:?}");
    }

    #[test]
    fn jitter_is_reproducible_and_spreads_objects() {
        assert_eq!(jitter_fraction("ns/a", 3), jitter_fraction("ns/a", 3));
        let spread: std::collections::BTreeSet<u64> = (0..50)
            .map(|i| (jitter_fraction(&format!("ns/n{i}"), 1) * 1000.0) as u64)
            .collect();
        assert!(spread.len() > 40, "{spread:?}");
        assert!((0..1000).all(|i| (0.0..1.0).contains(&jitter_fraction("k", i))));
    }
}
