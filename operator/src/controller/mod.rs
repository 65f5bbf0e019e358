//! Controllers: one file per kind, the pure planner, and what they share.
//!
//! Pipeline per node: observe (one shared snapshot per master) → decide ([`plan::plan`],
//! pure) → act (idempotent calls through the service traits) → status (server-side apply).

pub mod backoff;
pub mod certname_owners;
pub mod context;
pub mod error;
pub mod events;
pub mod finalizers;
pub mod guards;
pub mod master;
pub mod master_cache;
pub mod node;
pub mod node_cache;
pub mod pool;
pub mod secret_cache;
pub mod secret_hold;
pub mod services;
pub mod signing_watch;
pub mod snapshot;

pub use context::Context;
pub use error::ReconcileError;

pub use puppet_conductor_api::{FIELD_MANAGER, MASTER_FINALIZER, NODE_FINALIZER, SECRET_FINALIZER};
