//! Custom resource types (group `puppet-conductor.dev`, version `v1alpha1`), their condition
//! reasons, and the names the operator's writes carry (field manager, finalizers).
//!
//! Only types live here: the CRD YAML in `crds/` is generated from them, so every field
//! carries a doc comment (it becomes the description `kubectl explain` shows) and every
//! invariant the API server can check is expressed in the schema.

pub mod common;
pub mod conditions;
pub mod master;
pub mod node;
pub mod pool;

pub use common::{MasterRef, SecretRef};
pub use master::{PuppetMaster, PuppetMasterSpec, PuppetMasterStatus};
pub use node::{PuppetNode, PuppetNodeSpec, PuppetNodeStatus};
pub use pool::{PuppetNodePool, PuppetNodePoolSpec, PuppetNodePoolStatus};

/// API group of every kind.
pub const GROUP: &str = "puppet-conductor.dev";
/// API version of every kind.
pub const VERSION: &str = "v1alpha1";

/// Finalizer guarding cleanup of instance, certificate and record.
pub const NODE_FINALIZER: &str = "puppet-conductor.dev/cleanup";
/// Finalizer holding a PuppetMaster while PuppetNodes still name it: their cleanup needs
/// its CA, cloud and records.
pub const MASTER_FINALIZER: &str = "puppet-conductor.dev/nodes";
/// Finalizer holding a Secret while a PuppetMaster that needs it references it.
pub const SECRET_FINALIZER: &str = "puppet-conductor.dev/in-use";
/// Annotation that pauses a node, a pool or a master: `"true"` stops every action on it
/// (observation and status go on; deletion still cleans up).
pub const PAUSED_ANNOTATION: &str = "puppet-conductor.dev/paused";
/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "puppet-conductor";

/// Every CRD this operator serves, in the order they are printed.
pub fn crds(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        PuppetMaster::crd(),
        PuppetNode::crd(),
        PuppetNodePool::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream, exactly as checked in under `crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
