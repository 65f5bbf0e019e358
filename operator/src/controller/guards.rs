//! What the operator remembers between passes to bound or correct what it does: how fast
//! refused CSRs are removed from the CA, how many nodes whose certificate vanished are
//! replaced at once, launches and sign requests whose outcome is known only here.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::cloud::{BucketLimits, TokenBucket};
use crate::sync::lock;

/// Refused CSRs removed per master: a burst of 10, then one every 5 s. A flood of bad
/// CSRs is refused (and reported) as fast as it comes, but removed only at this pace.
pub const CSR_REMOVALS: BucketLimits = BucketLimits::new(10, 0.2);

/// Nodes of one master replaced at once because their certificate vanished from the CA.
pub const DEFAULT_MAX_REPLACEMENTS: usize = 3;

/// Token buckets for removing refused CSRs, one per master.
#[derive(Default)]
pub struct CsrRemovals {
    buckets: Mutex<HashMap<String, Arc<TokenBucket>>>,
}

impl CsrRemovals {
    /// Whether a refused CSR of `master_key` may be removed now.
    pub async fn allow(&self, master_key: &str) -> bool {
        let bucket = {
            let mut map = lock(&self.buckets);
            map.entry(master_key.to_string())
                .or_insert_with(|| Arc::new(TokenBucket::new(Some(CSR_REMOVALS))))
                .clone()
        };
        bucket.try_acquire().await
    }

    /// Forgets a master (deleted).
    pub fn forget(&self, master_key: &str) {
        lock(&self.buckets).remove(master_key);
    }
}

/// Instances that status or a record names but no describe shows, with when this process
/// first missed them. EC2's describe lags behind its launches (and a restarted operator
/// cannot tell "not visible yet" from "gone"), so an instance counts as vanished only
/// once it has been missing for the visibility grace.
#[derive(Default)]
pub struct Absences {
    first_missed: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl Absences {
    /// `instance_id` is missing from this pass's describe: whether it has been missing
    /// for at least `grace`.
    pub fn missing_for(&self, instance_id: &str, grace: std::time::Duration) -> bool {
        self.missing_since(instance_id, tokio::time::Instant::now(), grace)
    }

    /// `instance_id` has not been described since `since` (the operator launched it
    /// then): whether it has been missing for at least `grace`. The wait for a launch's
    /// visibility and the wait for a vanish's confirmation are one wait, not two.
    pub fn missing_since(
        &self,
        instance_id: &str,
        since: tokio::time::Instant,
        grace: std::time::Duration,
    ) -> bool {
        let now = tokio::time::Instant::now();
        let mut map = lock(&self.first_missed);
        // Forget what nobody asked about for long (the node went): the map stays bounded.
        map.retain(|_, at| now.duration_since(*at) < grace.saturating_mul(10).max(HOUR));
        let first = map.entry(instance_id.to_string()).or_insert(since);
        *first = (*first).min(since);
        now.duration_since(*first) >= grace
    }

    /// `instance_id` is visible again (or was never missing).
    pub fn seen(&self, instance_id: &str) {
        lock(&self.first_missed).remove(instance_id);
    }
}

/// Nodes whose last RunInstances failed without an answer saying nothing was launched
/// (a timeout, a lost answer): an instance may exist that no describe shows yet, so
/// their deletion waits for the visibility grace before it releases anything.
#[derive(Default)]
pub struct LaunchAttempts {
    failed: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl LaunchAttempts {
    /// A launch of node `key` failed.
    pub fn failed(&self, key: &str) {
        lock(&self.failed).insert(key.to_string(), tokio::time::Instant::now());
    }

    /// Whether a failed launch of `key` is younger than `grace`.
    pub fn unsettled(&self, key: &str, grace: std::time::Duration) -> bool {
        let mut map = lock(&self.failed);
        let now = tokio::time::Instant::now();
        map.retain(|_, at| now.duration_since(*at) < grace);
        map.contains_key(key)
    }

    /// A launch of `key` succeeded, or its node is gone.
    pub fn settled(&self, key: &str) {
        lock(&self.failed).remove(key);
    }
}

/// Signature records that still say "the CA was asked" although the CA answered that it
/// did not sign, because clearing them failed: this process knows the challenge is not
/// spent, and clears the record before the next pass reads it as spent (which would fence
/// and replace the incarnation for nothing). Lost with the process, as a crash loses it.
#[derive(Default)]
pub struct UnsignedClaims {
    claims: Mutex<HashMap<String, crate::records::SignatureRecord>>,
}

impl UnsignedClaims {
    /// The CA did not sign `claim` and its record could not be cleared.
    pub fn remember(&self, claim: crate::records::SignatureRecord) {
        lock(&self.claims).insert(claim.certname.clone(), claim);
    }

    /// The claim remembered for `certname`, if any.
    pub fn get(&self, certname: &str) -> Option<crate::records::SignatureRecord> {
        lock(&self.claims).get(certname).cloned()
    }

    /// Its record was cleared, or the certname's records are gone.
    pub fn forget(&self, certname: &str) {
        lock(&self.claims).remove(certname);
    }
}

const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

/// Which nodes of each master hold one of its replacement slots.
#[derive(Default)]
pub struct ReplacementSlots {
    held: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl ReplacementSlots {
    /// Takes (or keeps) a slot of `master_key` for `node_key`; `false` when `limit` other
    /// nodes hold them all.
    pub fn acquire(&self, master_key: &str, node_key: &str, limit: usize) -> bool {
        let mut held = lock(&self.held);
        let nodes = held.entry(master_key.to_string()).or_default();
        if nodes.contains(node_key) {
            return true;
        }
        if nodes.len() >= limit {
            return false;
        }
        nodes.insert(node_key.to_string());
        true
    }

    /// Gives the node's slot back (its replacement completed, or it is deleted).
    pub fn release(&self, master_key: &str, node_key: &str) {
        let mut held = lock(&self.held);
        if let Some(nodes) = held.get_mut(master_key) {
            nodes.remove(node_key);
            if nodes.is_empty() {
                held.remove(master_key);
            }
        }
    }

    /// Slots of `master_key` in use.
    pub fn in_use(&self, master_key: &str) -> usize {
        lock(&self.held).get(master_key).map_or(0, BTreeSet::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failed_launch_stays_unsettled_for_the_grace() {
        let attempts = LaunchAttempts::default();
        let grace = std::time::Duration::from_secs(300);
        assert!(!attempts.unsettled("ns/a", grace));
        attempts.failed("ns/a");
        assert!(attempts.unsettled("ns/a", grace));
        tokio::time::advance(grace).await;
        assert!(!attempts.unsettled("ns/a", grace));
        attempts.failed("ns/a");
        attempts.settled("ns/a");
        assert!(!attempts.unsettled("ns/a", grace));
    }

    #[tokio::test(start_paused = true)]
    async fn an_instance_counts_as_vanished_only_after_the_grace() {
        let absences = Absences::default();
        let grace = std::time::Duration::from_secs(300);
        assert!(
            !absences.missing_for("i-1", grace),
            "first miss starts the clock"
        );
        tokio::time::advance(std::time::Duration::from_secs(299)).await;
        assert!(!absences.missing_for("i-1", grace));
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert!(absences.missing_for("i-1", grace));
        absences.seen("i-1");
        assert!(
            !absences.missing_for("i-1", grace),
            "seen again: the clock restarts"
        );
        assert!(absences.missing_for("i-2", std::time::Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_launch_no_describe_showed_is_missing_since_the_launch() {
        let absences = Absences::default();
        let grace = std::time::Duration::from_secs(300);
        let launched = tokio::time::Instant::now();
        tokio::time::advance(std::time::Duration::from_secs(200)).await;
        assert!(!absences.missing_since("i-1", launched, grace));
        tokio::time::advance(std::time::Duration::from_secs(100)).await;
        assert!(
            absences.missing_for("i-1", grace),
            "the clock started at the launch, not at the first miss 200 s later"
        );
        assert!(!absences.missing_for("i-3", grace));
        assert!(
            absences.missing_since("i-3", launched, grace),
            "an earlier start replaces a later one"
        );
    }

    #[test]
    fn replacement_slots_are_bounded_per_master_and_kept_by_their_holder() {
        let slots = ReplacementSlots::default();
        assert!(slots.acquire("ns/pm", "ns/a", 2));
        assert!(slots.acquire("ns/pm", "ns/b", 2));
        assert!(!slots.acquire("ns/pm", "ns/c", 2), "a third waits");
        assert!(slots.acquire("ns/pm", "ns/a", 2), "a holder keeps its slot");
        assert!(slots.acquire("ns/other", "ns/c", 2), "per master");
        slots.release("ns/pm", "ns/a");
        assert!(slots.acquire("ns/pm", "ns/c", 2));
        assert_eq!(slots.in_use("ns/pm"), 2);
    }

    #[tokio::test]
    async fn csr_removals_are_rate_bounded_per_master() {
        let removals = CsrRemovals::default();
        let mut allowed = 0;
        for _ in 0..50 {
            if removals.allow("ns/pm").await {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 10, "the burst, then nothing until a refill");
        assert!(
            removals.allow("ns/other").await,
            "other masters are not starved"
        );
    }
}
