//! The orphan sweep's I/O: reports or cleans up what [`crate::orphans::find_orphans`]
//! found, as the master's `spec.orphans.action` says.
//!
//! `Ignore` emits one Warning `OrphanFound` per orphan (once, not every pass).
//! `Cleanup` terminates instances, revokes and cleans certificates (dropping waiting
//! CSRs) and deletes records, with a Normal `OrphanCleaned` each; something written by
//! another operator or master is reported instead, never removed. A failed action is a
//! Warning `OrphanCleanupFailed`; the others are still tried and the first error is
//! returned, so the caller backs off and the next pass retries.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;

use crate::api::master::{OrphanAction, PuppetMaster};
use crate::controller::error::{chain, ReconcileError};
use crate::controller::events::EventSink;
use crate::controller::services::MasterServices;
use crate::orphans::{Orphan, OrphanKind, OrphanScan, OrphanTracker};

/// Event reason: an orphan was found and left in place.
pub const REASON_FOUND: &str = "OrphanFound";
/// Event reason: an orphan was terminated, revoked or deleted.
pub const REASON_CLEANED: &str = "OrphanCleaned";
/// Event reason: cleaning up an orphan failed (retried next pass).
pub const REASON_CLEANUP_FAILED: &str = "OrphanCleanupFailed";

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Orphans terminated, revoked or deleted in this pass.
    pub cleaned: Vec<Orphan>,
    /// Orphans left in place (`Ignore`, or not this operator's to remove), whether or not
    /// their event was already emitted in an earlier pass: the current orphan count.
    pub reported: Vec<Orphan>,
}

impl SweepReport {
    /// Orphans left in place, counted for every kind (zeros included, so a gauge that
    /// empties drops to 0).
    pub fn left_by_kind(&self) -> Vec<(&'static str, i64)> {
        OrphanKind::ALL
            .iter()
            .map(|kind| {
                let n = self.reported.iter().filter(|o| o.kind == *kind).count();
                (kind.as_str(), i64::try_from(n).unwrap_or(i64::MAX))
            })
            .collect()
    }
}

/// What became of one orphan under `Cleanup`.
enum Outcome {
    /// Terminated, revoked or deleted.
    Cleaned,
    /// Left in place, and why.
    Left(String),
    /// Already gone when looked at (nothing to do, nothing to say).
    Gone,
}

/// Reports or cleans up the due orphans of `master` (key `namespace/name`). Failures of
/// single actions do not stop the others; the first one is returned at the end.
pub async fn sweep(
    master: &PuppetMaster,
    master_key: &str,
    operator_id: &str,
    services: &MasterServices,
    scan: &OrphanScan,
    tracker: &OrphanTracker,
    events: &dyn EventSink,
) -> Result<SweepReport, ReconcileError> {
    tracker.forget_resolved(master_key, &scan.due);
    let object = master.object_ref(&());
    let action = master.spec.orphans.action;
    let mut report = SweepReport::default();
    let mut first_error = None;
    for orphan in &scan.due {
        let outcome = match action {
            OrphanAction::Ignore => Ok(Outcome::Left("spec.orphans.action is Ignore".into())),
            OrphanAction::Cleanup => clean(orphan, master_key, operator_id, services).await,
        };
        match outcome {
            Ok(Outcome::Cleaned) => {
                tracing::info!(master = master_key, kind = %orphan.kind, name = %orphan.name, "orphan cleaned");
                let note = format!("{} {}", done(orphan.kind), describe(orphan));
                publish(events, &object, false, REASON_CLEANED, orphan.kind, note).await;
                report.cleaned.push(orphan.clone());
            }
            Ok(Outcome::Left(why)) => {
                if tracker.first_report(master_key, orphan) {
                    tracing::warn!(master = master_key, kind = %orphan.kind, name = %orphan.name, why, "orphan found");
                    let note = format!("orphaned {}; left in place: {why}", describe(orphan));
                    publish(events, &object, true, REASON_FOUND, orphan.kind, note).await;
                }
                report.reported.push(orphan.clone());
            }
            Ok(Outcome::Gone) => {}
            Err(error) => {
                tracing::warn!(master = master_key, kind = %orphan.kind, name = %orphan.name, %error, "orphan cleanup failed");
                let note = format!(
                    "could not clean up orphaned {}: {}",
                    describe(orphan),
                    chain(&error)
                );
                publish(
                    events,
                    &object,
                    true,
                    REASON_CLEANUP_FAILED,
                    orphan.kind,
                    note,
                )
                .await;
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(report),
    }
}

/// Removes one orphan, unless it belongs to another operator or master.
async fn clean(
    orphan: &Orphan,
    master_key: &str,
    operator_id: &str,
    services: &MasterServices,
) -> Result<Outcome, ReconcileError> {
    match orphan.kind {
        OrphanKind::Instance => {
            if orphan.operator.as_deref() != Some(operator_id) {
                return Ok(Outcome::Left(format!(
                    "launched by operator {:?}, not this one",
                    orphan.operator.as_deref().unwrap_or("")
                )));
            }
            services
                .cloud
                .terminate(std::slice::from_ref(&orphan.name))
                .await?;
        }
        OrphanKind::Certificate | OrphanKind::CertificateRequest => {
            services.ca.revoke_and_clean(&orphan.name).await?;
        }
        OrphanKind::Record => {
            // The listing carries no owner: read it, and delete only our own.
            let Some(record) = services.records.get(&orphan.name).await? else {
                return Ok(Outcome::Gone);
            };
            if record.owner.operator != operator_id || record.owner.master != master_key {
                return Ok(Outcome::Left(format!("written by {}", record.owner)));
            }
            services.records.delete(&orphan.name).await?;
        }
    }
    Ok(Outcome::Cleaned)
}

async fn publish(
    events: &dyn EventSink,
    object: &ObjectReference,
    warning: bool,
    reason: &str,
    kind: OrphanKind,
    note: String,
) {
    let action = match kind {
        OrphanKind::Instance => "Terminate",
        OrphanKind::Certificate | OrphanKind::CertificateRequest => "Revoke",
        OrphanKind::Record => "DeleteRecord",
    };
    events.publish(object, warning, reason, action, note).await;
}

/// Past tense of the cleanup of a kind.
fn done(kind: OrphanKind) -> &'static str {
    match kind {
        OrphanKind::Instance => "terminated",
        OrphanKind::Certificate => "revoked and cleaned",
        OrphanKind::CertificateRequest => "dropped",
        OrphanKind::Record => "deleted",
    }
}

/// `instance i-0abc (certname x-1, no PuppetNode for 2h5m0s)`.
fn describe(orphan: &Orphan) -> String {
    let what = match orphan.kind {
        OrphanKind::Instance => "instance",
        OrphanKind::Certificate => "certificate",
        OrphanKind::CertificateRequest => "waiting CSR",
        OrphanKind::Record => "record",
    };
    let certname = match (&orphan.certname, orphan.kind) {
        (Some(c), OrphanKind::Instance) => format!("certname {c}, "),
        _ => String::new(),
    };
    format!(
        "{what} {} ({certname}no PuppetNode, age {})",
        orphan.name,
        human(orphan.age)
    )
}

/// `1h2m3s`, to the second.
fn human(age: Duration) -> String {
    let s = age.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orphan(kind: OrphanKind) -> Orphan {
        Orphan {
            kind,
            name: "i-1".into(),
            certname: Some("x-1".into()),
            age: Duration::from_secs(7505),
            operator: None,
        }
    }

    #[test]
    fn notes_are_readable() {
        assert_eq!(
            describe(&orphan(OrphanKind::Instance)),
            "instance i-1 (certname x-1, no PuppetNode, age 2h5m5s)"
        );
        assert_eq!(
            describe(&orphan(OrphanKind::CertificateRequest)),
            "waiting CSR i-1 (no PuppetNode, age 2h5m5s)"
        );
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(65)), "1m5s");
        assert_eq!(human(Duration::from_secs(3600)), "1h0m0s");
    }
}
