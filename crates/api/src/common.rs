//! Small types shared by both kinds.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A reference to a Secret in the object's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as the object that refers to it.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// A reference to the PuppetMaster that manages a node, in the node's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MasterRef {
    /// Name of the PuppetMaster, in the same namespace as the PuppetNode.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// Pattern of a Puppet environment name (Puppet allows lowercase letters, digits and `_`).
pub const ENVIRONMENT_PATTERN: &str = r"^[a-z0-9_]+$";

/// Pattern of a Puppet certname: lowercase (Puppet refuses uppercase certnames), no `/`,
/// starting with a letter or digit.
pub const CERTNAME_PATTERN: &str = r"^[a-z0-9][a-z0-9._-]*$";

/// Pattern of a Puppet class name, optionally top-scope qualified (`::ntp`, `profile::web`).
pub const CLASS_PATTERN: &str = r"^(::)?[a-z][a-z0-9_]*(::[a-z][a-z0-9_]*)*$";

/// Pattern of a Go-style duration as used for intervals (`30s`, `5m`, `1h`).
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";
