//! Carrying out a node plan: the I/O half of the node controller.

use std::collections::BTreeMap;

use kube::Resource;

use super::desired::{desired_record, launch_request, Pass};
use crate::ca::CertState;
use crate::certificate::pem_public_key_sha256;
use crate::cloud::Instance;
use crate::controller::error::ReconcileError;
use crate::plan::{Action, Plan, TerminateReason};
use crate::records::{NodeRecord, RecordState, WriteOutcome};
use crate::spec::ValidNode;
use crate::sync::lock;

/// Everything needed to act on one node: the pass, and what acting learns on the way.
pub struct Acting<'a> {
    /// The pass (node, master, services, snapshot, names, settings).
    pub pass: Pass<'a>,
    /// Records written during this pass (a second write must use the new ETag).
    pub written: std::sync::Mutex<BTreeMap<String, crate::records::ListedRecord>>,
    /// Another node claiming the certname (`namespace/name`), if any: its CSRs and
    /// certificates are never touched.
    pub conflict: Option<String>,
}

impl<'a> std::ops::Deref for Acting<'a> {
    type Target = Pass<'a>;

    fn deref(&self) -> &Pass<'a> {
        &self.pass
    }
}

/// What acting changed, for status and events.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Instance launched in this pass.
    pub launched: Option<Instance>,
    /// Whether the record was written (vs. already current).
    pub record_written: bool,
}

impl<'a> Acting<'a> {
    /// The validated settings a record or launch is built from.
    fn settings(&self) -> Result<&'a ValidNode, ReconcileError> {
        self.pass.settings.ok_or_else(|| {
            ReconcileError::InvalidSpec("a record or launch without validated settings".into())
        })
    }

    async fn write_record(
        &self,
        plan: &Plan,
        instance_id: Option<String>,
    ) -> Result<bool, ReconcileError> {
        let record = desired_record(self.pass, self.settings()?, plan.incarnation, instance_id);
        self.put_record(&record).await
    }

    /// Whether the listing (or this pass) saw a record object for `certname`.
    fn record_listed(&self, certname: &str) -> bool {
        self.snapshot.records.records.contains_key(certname)
            || lock(&self.written).contains_key(certname)
    }

    /// Our record of `certname`, read now; `None` when absent or another node's.
    async fn own_record(&self, certname: &str) -> Result<Option<NodeRecord>, ReconcileError> {
        if !self.record_listed(certname) {
            return Ok(None);
        }
        Ok(self
            .services
            .records
            .get(certname)
            .await?
            .filter(|r| r.owner.node_uid == self.id.uid))
    }

    /// Marks the records of `incarnations` (written before their instances are terminated).
    async fn mark_records(
        &self,
        incarnations: &[i64],
        state: RecordState,
    ) -> Result<(), ReconcileError> {
        let mut seen = std::collections::BTreeSet::new();
        for inc in incarnations {
            let certname = self.id.certname(self.node, *inc);
            if !seen.insert(certname.clone()) {
                continue;
            }
            let Some(mut record) = self.own_record(&certname).await? else {
                continue;
            };
            if record.state == state {
                continue;
            }
            record.state = state;
            self.put_record(&record).await?;
            tracing::info!(node = %self.id.key, certname, state = state.as_str(), "record marked");
        }
        Ok(())
    }

    /// Deletes our records (with check-ins and signature records) of `certnames`: those
    /// the listing shows, and `current` in any case (absent is success).
    async fn delete_records(
        &self,
        certnames: impl IntoIterator<Item = String>,
        current: Option<&str>,
    ) -> Result<(), ReconcileError> {
        for certname in certnames {
            let listed = self.record_listed(&certname)
                || self.snapshot.records.signatures.contains(&certname)
                || current == Some(certname.as_str());
            if !listed {
                continue;
            }
            if let Some(record) = self.services.records.get(&certname).await? {
                if record.owner.node_uid != self.id.uid {
                    tracing::warn!(node = %self.id.key, certname, owner = %record.owner, "not deleting another node's record");
                    continue;
                }
            }
            self.services.records.delete(&certname).await?;
            self.ctx.unsigned_claims.forget(&certname);
            self.ctx
                .snapshots
                .record(&self.id.master_key, &certname, None)
                .await;
        }
        Ok(())
    }

    /// Revokes and cleans the certificate of one incarnation only if the operator had it
    /// signed for this node (the signature record's fingerprint or key); drops a waiting
    /// CSR unless another node claims the certname. Never touches anyone else's.
    async fn revoke_own(&self, inc: i64) -> Result<(), ReconcileError> {
        let obj = self.node.object_ref(&());
        let certname = self.id.certname(self.node, inc);
        let info = self.services.ca.status(&certname).await?;
        let signature = if self.snapshot.records.signatures.contains(&certname)
            || self.record_listed(&certname)
        {
            self.services
                .records
                .get_signature(&certname)
                .await?
                .filter(|s| s.is_for(&self.id.uid, inc))
        } else {
            None
        };
        match info {
            None => {}
            Some(info) if info.state == CertState::Requested && self.conflict.is_none() => {
                self.services.ca.remove_request(&certname).await?;
            }
            Some(info) if info.state == CertState::Requested => {}
            Some(info) => {
                let ours = match &signature {
                    Some(s) => match (&s.fingerprint, &info.fingerprint) {
                        (Some(recorded), Some(now)) => recorded == now,
                        // Claimed but not confirmed yet: ours if the CA signed the claimed key.
                        (None, _) => self
                            .services
                            .ca
                            .certificate_pem(&certname)
                            .await?
                            .and_then(|pem| pem_public_key_sha256(&pem))
                            .is_some_and(|k| k == s.public_key_sha256),
                        (Some(_), None) => false,
                    },
                    None => false,
                };
                if ours {
                    self.services.ca.revoke_and_clean(&certname).await?;
                    self.ctx
                        .events
                        .publish(
                            &obj,
                            false,
                            "CertificateRevoked",
                            "Revoke",
                            format!(
                                "revoked and cleaned certificate {certname} (incarnation {inc})"
                            ),
                        )
                        .await;
                } else {
                    let note = format!(
                        "not revoking {certname} (incarnation {inc}): the CA's certificate (fingerprint {}) is not one the operator had signed for this node",
                        info.fingerprint.as_deref().unwrap_or("unknown")
                    );
                    tracing::warn!(node = %self.id.key, certname, "{note}");
                    self.ctx
                        .events
                        .publish(&obj, true, "CertificateNotOurs", "Revoke", note)
                        .await;
                }
            }
        }
        self.ctx
            .snapshots
            .revoked(&self.id.master_key, &certname)
            .await;
        // A fixed certname keeps its record across incarnations: the fenced incarnation's
        // signature record goes here, so its successor can be signed.
        if self.node.spec.certname.is_some() && signature.is_some() {
            self.services.records.delete_signature(&certname).await?;
        }
        Ok(())
    }

    /// Writes `record` if its content changed (conditional on the listed version).
    async fn put_record(&self, record: &NodeRecord) -> Result<bool, ReconcileError> {
        let listed = lock(&self.written)
            .get(&record.certname)
            .cloned()
            .or_else(|| self.snapshot.records.records.get(&record.certname).cloned());
        match self
            .services
            .records
            .put_if_changed(record, listed.as_ref())
            .await?
        {
            WriteOutcome::Written(l) => {
                lock(&self.written).insert(record.certname.clone(), l.clone());
                self.ctx
                    .snapshots
                    .record(&self.id.master_key, &record.certname, Some(l))
                    .await;
                Ok(true)
            }
            WriteOutcome::Unchanged => Ok(false),
        }
    }

    /// Performs the plan's actions in order; stops at the first failure. A held pass
    /// (paused, not deleting) performs none: its plan is only reported.
    pub async fn run(&self, plan: &Plan) -> Result<Outcome, ReconcileError> {
        let mut outcome = Outcome::default();
        if self.pass.held() {
            return Ok(outcome);
        }
        let obj = self.node.object_ref(&());
        for action in &plan.actions {
            match action {
                Action::Terminate {
                    instance_ids,
                    reason,
                } => {
                    // The snapshot is not told: only a describe showing the instances
                    // shutting down confirms it. EC2 answers NotFound (taken as done) for
                    // an instance its describe does not show yet, so a termination that
                    // was answered may not have happened; the next pass asks again.
                    self.services.cloud.terminate(instance_ids).await?;
                    let (reason_str, warning) = match reason {
                        TerminateReason::Deletion => ("Terminating", false),
                        TerminateReason::Fencing => ("Fencing", true),
                        TerminateReason::Duplicate => ("DuplicateTerminated", true),
                        TerminateReason::Superseded => ("SupersededTerminated", false),
                    };
                    self.ctx
                        .events
                        .publish(
                            &obj,
                            warning,
                            reason_str,
                            "Terminate",
                            format!("terminating {}", instance_ids.join(", ")),
                        )
                        .await;
                }
                Action::MarkRecords {
                    incarnations,
                    state,
                } => self.mark_records(incarnations, *state).await?,
                Action::Revoke { incarnations } => {
                    for inc in incarnations {
                        self.revoke_own(*inc).await?;
                    }
                }
                Action::DeleteRecords { incarnations } => {
                    let certnames = incarnations
                        .iter()
                        .map(|inc| self.id.certname(self.node, *inc));
                    self.delete_records(certnames.collect::<Vec<_>>(), None)
                        .await?;
                }
                Action::WriteRecord => {
                    outcome.record_written |=
                        self.write_record(plan, plan.instance_id.clone()).await?;
                }
                Action::Launch => {
                    let request = launch_request(self.pass, self.settings()?, plan.incarnation)?;
                    let instance = match self.services.cloud.launch(&request).await {
                        Ok(instance) => {
                            self.ctx.launch_attempts.settled(&self.id.key);
                            instance
                        }
                        Err(error) => {
                            self.ctx.launch_attempts.failed(&self.id.key);
                            return Err(error.into());
                        }
                    };
                    self.ctx
                        .snapshots
                        .launched(&self.id.master_key, instance.clone())
                        .await;
                    // The `Launched` event follows the status write that names the
                    // instance (node.rs): a crash in between then reports it once, as
                    // adopted, instead of launched and adopted.
                    // The record names the instance, so a lost status cannot cause a relaunch.
                    outcome.record_written |=
                        self.write_record(plan, Some(instance.id.clone())).await?;
                    outcome.launched = Some(instance);
                }
                Action::DeleteRecord => {
                    let mut certnames: Vec<String> = (1..=plan.incarnation)
                        .map(|inc| self.id.certname(self.node, inc))
                        .collect();
                    certnames.dedup();
                    let current = self.id.certname(self.node, plan.incarnation);
                    self.delete_records(certnames, Some(&current)).await?;
                }
            }
        }
        Ok(outcome)
    }
}
