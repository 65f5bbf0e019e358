//! Decisions of a PuppetNodePool, apart from I/O: its bounds, the template's hashes, which
//! of its nodes are up to date, how many to create and which to delete, its status.
//!
//! A pool's pass lists the nodes it owns, turns each into a [`Member`], and acts on the
//! [`PoolPlan`] that [`plan_pool`] returns; the same members give its status.

mod bounds;
mod hash;
mod members;
mod names;
mod plan;
mod selector;
pub mod status;

pub use bounds::{bounds, Bounds};
pub use hash::launch_hash;
pub use members::{in_sync, Member};
pub use names::node_names;
pub use plan::{plan_pool, PoolPlan};
pub use selector::{matches, selector_string};
pub use status::{pool_status, PoolCounts, PoolView};

/// What is wrong with a pool's spec that its schema could not refuse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// `maxSurge` or `maxUnavailable` is neither a count nor a percentage.
    #[error("strategy.rollingUpdate.{field}: {value:?} is neither a count nor a percentage like \"25%\"")]
    BadBound {
        /// The field.
        field: &'static str,
        /// What it holds.
        value: String,
    },
    /// The template's labels do not match the selector: its nodes would not be its own.
    #[error("selector does not match template.metadata.labels")]
    TemplateOutsideSelector,
}

#[cfg(test)]
mod tests;
