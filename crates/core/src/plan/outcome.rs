//! What a plan says: the [`Action`]s in order, why instances are terminated, and the
//! status ([`Plan`], [`reasons`]) to report.

use crate::record::RecordState;
use puppet_conductor_api::node::Phase;

/// One step toward the declared state, in the order the reconciler performs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Mark these incarnations' records (fencing or deleting) before their instances are
    /// terminated or their certificates revoked, so `autosign` and `enc` refuse them.
    MarkRecords {
        incarnations: Vec<i64>,
        state: RecordState,
    },
    /// Terminate these instances (fencing, duplicate clean-up or deletion).
    Terminate {
        instance_ids: Vec<String>,
        reason: TerminateReason,
    },
    /// Revoke and clean the certificates (and drop waiting CSRs) of these incarnations.
    Revoke { incarnations: Vec<i64> },
    /// Write the record of the current incarnation (only if its content changed).
    WriteRecord,
    /// Launch the current incarnation's instance.
    Launch,
    /// Delete the records (check-ins and signature records) of these fenced, older
    /// incarnations: their fencing is complete.
    DeleteRecords { incarnations: Vec<i64> },
    /// Delete the node's record and check-in.
    DeleteRecord,
}

/// Why instances are terminated (for events and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminateReason {
    /// The node is being deleted.
    Deletion,
    /// A dead or stopped instance is fenced before its successor launches.
    Fencing,
    /// A second live instance of one incarnation (a launch raced); the oldest is kept.
    Duplicate,
    /// A live instance of an older incarnation.
    Superseded,
}

/// What the reconciler should do and report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Incarnation the node is at after this plan.
    pub incarnation: i64,
    /// The instance of that incarnation, when one is alive.
    pub instance_id: Option<String>,
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// Phase to report.
    pub phase: Phase,
    /// Whether the current instance is running, with a reason and message.
    pub instance_running: (bool, &'static str, String),
    /// Deletion: everything is cleaned up and the finalizer may be released.
    pub release: bool,
}

/// Reasons of the `InstanceRunning` condition.
pub mod reasons {
    /// The instance is running.
    pub const RUNNING: &str = "Running";
    /// The instance is being launched or boots.
    pub const LAUNCHING: &str = "Launching";
    /// The instance died or was stopped outside the operator and is being replaced.
    pub const REPLACING: &str = "Replacing";
    /// The instance died or was stopped and `replacePolicy: Never` keeps it so.
    pub const STOPPED: &str = "InstanceStopped";
    /// The node is being deleted.
    pub const DELETING: &str = "Deleting";
    /// The certificate of the running instance vanished from the CA or was replaced.
    pub const CERTIFICATE_LOST: &str = "CertificateLost";
    /// Another node claims the certname.
    pub const CERTNAME_CONFLICT: &str = "CertnameConflict";
    /// The master is being deleted: nothing is launched.
    pub const MASTER_DELETING: &str = "MasterDeleting";
}
