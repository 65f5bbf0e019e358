//! Prometheus metrics of the operator (OpenMetrics text under the
//! `puppet_conductor_` prefix) and the decorators that count every external call.
//!
//! Recording is `&self`, lock-free except for the per-master phase bookkeeping,
//! so reconcilers share one `Arc<Metrics>`.

mod buckets;
mod error;
pub mod instrumented;
mod labels;
mod registration;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::orphans::OrphanKind;
use crate::sync::lock;
pub use error::MetricsError;
pub use instrumented::{MeteredCa, MeteredCloud, MeteredRecords};
use labels::{
    CallLabels, KindLabels, MasterLabels, OperationLabels, OrphanKindLabels, OrphanLabels,
    PhaseLabels, ReconcileErrorLabels,
};

/// Prefix of every metric name.
pub const PREFIX: &str = "puppet_conductor";

/// The operator's metrics registry and the handles that record into it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram>,
    calls: Family<CallLabels, Counter>,
    call_duration: Family<OperationLabels, Histogram>,
    nodes: Family<PhaseLabels, Gauge>,
    // Phases set per master, so a phase that empties drops to 0 instead of
    // keeping its last count.
    phases_seen: Mutex<BTreeMap<String, BTreeSet<String>>>,
    oldest_pending_csr_age: Family<MasterLabels, Gauge<f64, AtomicU64>>,
    pending_csr_age: Histogram,
    launch_to_signed: Histogram,
    launch_to_first_check_in: Histogram,
    orphans: Family<OrphanLabels, Counter>,
    orphans_left: Family<OrphanKindLabels, Gauge>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Everything registered, as OpenMetrics text (ends with `# EOF`).
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(MetricsError::Encode)?;
        Ok(out)
    }

    /// One reconcile pass of `kind` took `duration`; `error_category` is the
    /// error's category when it failed.
    pub fn count_reconcile(&self, kind: &str, duration: Duration, error_category: Option<&str>) {
        let labels = KindLabels {
            kind: kind.to_string(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        if let Some(category) = error_category {
            self.reconcile_errors
                .get_or_create(&ReconcileErrorLabels {
                    kind: labels.kind,
                    category: category.to_string(),
                })
                .inc();
        }
    }

    /// One call of `service`'s `operation` ended with `outcome` (`"ok"` or the
    /// error's category) after `duration`.
    pub fn count_call(&self, service: &str, operation: &str, outcome: &str, duration: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                service: service.to_string(),
                operation: operation.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.call_duration
            .get_or_create(&OperationLabels {
                service: service.to_string(),
                operation: operation.to_string(),
            })
            .observe(duration.as_secs_f64());
    }

    /// The node counts of `master` by phase; phases counted before and absent
    /// now are set to 0.
    pub fn set_nodes_by_phase(&self, master: &str, counts: &BTreeMap<String, i32>) {
        let mut seen = lock(&self.phases_seen);
        let phases = seen.entry(master.to_string()).or_default();
        for phase in phases.iter().filter(|p| !counts.contains_key(*p)) {
            self.nodes
                .get_or_create(&PhaseLabels {
                    master: master.to_string(),
                    phase: phase.clone(),
                })
                .set(0);
        }
        for (phase, count) in counts {
            self.nodes
                .get_or_create(&PhaseLabels {
                    master: master.to_string(),
                    phase: phase.clone(),
                })
                .set(i64::from(*count));
            phases.insert(phase.clone());
        }
    }

    /// Age of the oldest CSR waiting at `master`'s CA (0 when none waits).
    pub fn set_oldest_pending_csr_age(&self, master: &str, seconds: f64) {
        self.oldest_pending_csr_age
            .get_or_create(&MasterLabels {
                master: master.to_string(),
            })
            .set(seconds);
    }

    /// The age of one waiting CSR, observed in a pass.
    pub fn observe_pending_csr_age(&self, seconds: f64) {
        self.pending_csr_age.observe(seconds);
    }

    /// An instance's certificate was signed `seconds` after it was launched.
    pub fn observe_launch_to_signed(&self, seconds: f64) {
        self.launch_to_signed.observe(seconds);
    }

    /// An instance was first classified by the ENC `seconds` after it was launched.
    pub fn observe_launch_to_first_check_in(&self, seconds: f64) {
        self.launch_to_first_check_in.observe(seconds);
    }

    /// An orphan of `kind` (instance, certificate, record) was found under
    /// `master` and `action` was taken (or `ignore`).
    pub fn count_orphans(&self, master: &str, kind: &str, action: &str) {
        self.orphans
            .get_or_create(&OrphanLabels {
                master: master.to_string(),
                kind: kind.to_string(),
                action: action.to_string(),
            })
            .inc();
    }

    /// Orphans of `master` found and left in place in the last sweep (policy `Ignore`, or
    /// not this installation's to remove), as `(kind, count)`; kinds absent count 0.
    pub fn set_orphans_left(&self, master: &str, counts: &[(&str, i64)]) {
        for (kind, count) in counts {
            self.orphans_left
                .get_or_create(&OrphanKindLabels {
                    master: master.to_string(),
                    kind: (*kind).to_string(),
                })
                .set(*count);
        }
    }

    /// Drops every series labelled with `master` (it was deleted): a gone master's last
    /// counts must not stay on /metrics, nor its labels in memory.
    pub fn forget_master(&self, master: &str) {
        let phases = lock(&self.phases_seen).remove(master).unwrap_or_default();
        for phase in phases {
            self.nodes.remove(&PhaseLabels {
                master: master.to_string(),
                phase,
            });
        }
        self.oldest_pending_csr_age.remove(&MasterLabels {
            master: master.to_string(),
        });
        for kind in OrphanKind::ALL {
            self.orphans_left.remove(&OrphanKindLabels {
                master: master.to_string(),
                kind: kind.as_str().to_string(),
            });
        }
    }

    /// Whether this replica leads (1) or stands by (0).
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}
