//! Validate: the spec with its master's defaults, checked before anything is written, so
//! an unusable spec never reaches a finalizer, a record or a launch.

use super::desired::{user_data, NodeIdentity};
use crate::api::master::PuppetMaster;
use crate::api::node::PuppetNode;
use crate::controller::error::ReconcileError;
use crate::controller::services::MasterServices;
use crate::spec::{resolve_node, SpecError, ValidNode};

/// The node's settings, or why it cannot be acted on.
pub(super) fn validate(
    node: &PuppetNode,
    master: &PuppetMaster,
    services: &MasterServices,
    id: &NodeIdentity,
) -> Result<ValidNode, ReconcileError> {
    let settings = resolve_node(&node.spec, &master.spec)?;
    // Rendered for the longest certname an incarnation can have: if that fits EC2's
    // limit, every incarnation's user data does.
    user_data(node, master, services, id, &settings.environment, i64::MAX)
        .map_err(SpecError::from)?;
    Ok(settings)
}
