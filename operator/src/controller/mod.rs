//! Controllers: one file per kind, the pure planner, and what they share.
//!
//! Pipeline per node: observe (one shared snapshot per master) → decide ([`plan::plan`],
//! pure) → act (idempotent calls through the service traits) → status (server-side apply).

pub mod backoff;
pub mod certificate;
pub mod certname_owners;
pub mod context;
pub mod error;
pub mod events;
pub mod finalizers;
pub mod guards;
pub mod master;
pub mod master_deletion;
pub mod master_status;
pub mod node;
pub mod node_actions;
pub mod node_status;
pub mod orphan_sweep;
pub mod orphans;
pub mod plan;
pub mod secret_hold;
pub mod services;
pub mod signing;
pub mod snapshot;

pub use context::Context;
pub use error::ReconcileError;

/// Finalizer guarding cleanup of instance, certificate and record.
pub const NODE_FINALIZER: &str = "puppet-conductor.dev/cleanup";
/// Finalizer holding a PuppetMaster while PuppetNodes still name it: their cleanup needs
/// its CA, cloud and records.
pub const MASTER_FINALIZER: &str = "puppet-conductor.dev/nodes";
/// Finalizer holding a Secret while a PuppetMaster that needs it references it.
pub const SECRET_FINALIZER: &str = "puppet-conductor.dev/in-use";
/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "puppet-conductor";
