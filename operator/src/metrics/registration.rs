//! Building the registry: every metric's name, help text, unit and buckets.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::buckets;
use super::labels::{
    CallLabels, KindLabels, MasterLabels, OrphanKindLabels, OrphanLabels, PhaseLabels,
    ReconcileErrorLabels,
};
use super::{Metrics, PREFIX};

fn call_histogram() -> Histogram {
    Histogram::new(buckets::CALL_SECONDS)
}

fn lifecycle_histogram() -> Histogram {
    Histogram::new(buckets::LIFECYCLE_SECONDS)
}

impl Metrics {
    /// A registry with every metric registered (families start empty).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let reconciles = Family::<KindLabels, Counter>::default();
        registry.register("reconciles", "Reconcile passes by kind", reconciles.clone());
        let reconcile_errors = Family::<ReconcileErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile passes that failed, by kind and error category",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Family::new_with_constructor(call_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of reconcile passes by kind",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "external_calls",
            "Calls to EC2, S3 and the Puppet CA by operation and outcome (ok or error category)",
            calls.clone(),
        );
        let call_duration = Family::new_with_constructor(call_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "external_call_duration",
            "Duration of calls to EC2, S3 and the Puppet CA",
            Unit::Seconds,
            call_duration.clone(),
        );
        let nodes = Family::<PhaseLabels, Gauge>::default();
        registry.register("nodes", "PuppetNodes by master and phase", nodes.clone());
        let oldest_pending_csr_age = Family::<MasterLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "pending_csr_oldest_age",
            "Age of the oldest CSR waiting at a master's CA",
            Unit::Seconds,
            oldest_pending_csr_age.clone(),
        );
        let pending_csr_age = lifecycle_histogram();
        registry.register_with_unit(
            "pending_csr_age",
            "Ages of waiting CSRs when observed",
            Unit::Seconds,
            pending_csr_age.clone(),
        );
        let launch_to_signed = lifecycle_histogram();
        registry.register_with_unit(
            "launch_to_signed",
            "Time from instance launch to its certificate being signed",
            Unit::Seconds,
            launch_to_signed.clone(),
        );
        let launch_to_first_check_in = lifecycle_histogram();
        registry.register_with_unit(
            "launch_to_first_check_in",
            "Time from instance launch to its first classification by the ENC",
            Unit::Seconds,
            launch_to_first_check_in.clone(),
        );
        let orphans = Family::<OrphanLabels, Counter>::default();
        registry.register(
            "orphans",
            "Orphaned instances, certificates and records found, by action taken",
            orphans.clone(),
        );
        let orphans_left = Family::<OrphanKindLabels, Gauge>::default();
        registry.register(
            "orphans_left",
            "Orphans found in the last sweep and left in place (policy Ignore, or not this installation's to remove)",
            orphans_left.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            calls,
            call_duration,
            nodes,
            phases_seen: Mutex::new(BTreeMap::new()),
            oldest_pending_csr_age,
            pending_csr_age,
            launch_to_signed,
            launch_to_first_check_in,
            orphans,
            orphans_left,
            leader,
        }
    }
}
