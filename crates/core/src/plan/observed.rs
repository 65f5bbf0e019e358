//! [`Observed`]: what the reconciler knows about one node when it plans.

use std::collections::BTreeSet;

use crate::instance::Instance;
use puppet_conductor_api::node::{DeletionPolicy, ReplacePolicy};

/// What the reconciler knows about one node when it plans.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The node is being deleted (deletionTimestamp set).
    pub deleting: bool,
    /// `spec.replacePolicy`.
    pub replace_policy: ReplacePolicy,
    /// `spec.deletionPolicy`.
    pub deletion_policy: DeletionPolicy,
    /// Incarnation remembered in status (lost status gives `None`).
    pub status_incarnation: Option<i64>,
    /// Incarnation written in the node's S3 record, if any.
    pub record_incarnation: Option<i64>,
    /// Instance id the record says was launched for `record_incarnation`.
    pub record_instance_id: Option<String>,
    /// Instance id status says was launched for `status_incarnation` (status, when it
    /// survives, is evidence too: EC2 and S3 state may both be lost).
    pub status_instance_id: Option<String>,
    /// Every instance tagged with this node's UID, any state, any incarnation.
    pub instances: Vec<Instance>,
    /// The spec fixes the certname, so every incarnation shares it: an older incarnation
    /// is revoked only while being replaced, never after its successor exists.
    pub fixed_certname: bool,
    /// Incarnations whose certname still has a CSR or certificate at the CA (from the
    /// master's CA listing); `None` when the CA was not observed this pass.
    pub ca_present_incarnations: Option<BTreeSet<i64>>,
    /// Older incarnations whose record is still in the records listing (generated
    /// certnames only: a fixed certname has one record, rewritten per incarnation).
    pub older_record_incarnations: BTreeSet<i64>,
    /// The current incarnation's certificate vanished from the CA or was replaced there,
    /// and a replacement slot of the master was granted: fence it (`replacePolicy: Replace`).
    pub fence_current: bool,
    /// Another node claims the certname: write no record and launch nothing.
    pub certname_conflict: bool,
    /// The node's master is being deleted: nothing new is launched for it (its cleanup
    /// would only have to terminate it again).
    pub master_deleting: bool,
    /// The instance status or the record names has been missing from every describe for
    /// the visibility grace: it is gone, not merely not visible yet.
    pub vanish_confirmed: bool,
    /// A launch of this node failed without saying whether an instance was started, within
    /// the visibility grace: deletion must not release yet.
    pub launch_unsettled: bool,
}
