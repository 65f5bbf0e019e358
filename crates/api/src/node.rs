//! `PuppetNode`: one managed instance, its certificate and its classification record.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::MasterRef;

/// A Puppet node the operator launches, classifies, signs and, on deletion, terminates
/// and revokes.
// clippy reads the repeated `type_` keys of separate printcolumns as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "puppet-conductor.dev",
    version = "v1alpha1",
    kind = "PuppetNode",
    namespaced,
    status = "PuppetNodeStatus",
    shortname = "pn",
    category = "puppet",
    cel,
    doc = "A Puppet node backed by one cloud instance.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Instance", type_ = "string", json_path = ".status.instanceId"),
    printcolumn(name = "IP", type_ = "string", json_path = ".status.privateIp"),
    printcolumn(name = "Certname", type_ = "string", json_path = ".status.certname"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.certname) == has(oldSelf.certname)").message("certname cannot be added or removed after creation"))]
pub struct PuppetNodeSpec {
    /// The PuppetMaster (same namespace) this node belongs to. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("masterRef is immutable"))]
    pub master_ref: MasterRef,

    /// Puppet classes the node is classified with, e.g. `profile::web`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(
            length(max = 256),
            regex(pattern = r"^(::)?[a-z][a-z0-9_]*(::[a-z][a-z0-9_]*)*$")
        )
    )]
    pub classes: Vec<String>,

    /// Puppet environment; defaults to the master's `nodeDefaults.environment`, then `production`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9_]+$"))]
    pub environment: Option<String>,

    /// Top-scope parameters handed to Puppet through the ENC (any JSON values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 256, "additionalProperties" = {"x-kubernetes-preserve-unknown-fields": true}))]
    pub parameters: BTreeMap<String, serde_json::Value>,

    /// Per-node instance settings; unset fields fall back to the master's `nodeDefaults`.
    #[serde(default)]
    pub instance: InstanceSpec,

    /// Puppet certname. Derived from the object's UID and incarnation when unset (then a
    /// replacement instance gets a fresh certname); when set, every incarnation reuses it.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9][a-z0-9._-]*$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("certname is immutable"))]
    pub certname: Option<String>,

    /// `Replace`: an instance that died or was terminated outside the operator is fenced
    /// (terminated, certificate revoked) and replaced. `Never`: the node waits.
    #[serde(default)]
    pub replace_policy: ReplacePolicy,

    /// `Delete`: deleting the node terminates the instance, revokes the certificate and
    /// deletes the record. `Orphan`: they are left in place.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Instance settings of one node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// Machine image (`ami-…` on EC2, `emi-…` on Eucalyptus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[ae]mi-[0-9a-f]{8,17}$"))]
    pub image_id: Option<String>,

    /// Instance type, e.g. `t3.small`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[a-z0-9-]+\.[a-z0-9-]+$")
    )]
    pub instance_type: Option<String>,

    /// Subnet to launch in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^subnet-[0-9a-f]{8,17}$"))]
    pub subnet_id: Option<String>,

    /// Security groups; replaces the master's list when non-empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = r"^sg-[0-9a-f]{8,17}$")))]
    pub security_group_ids: Vec<String>,

    /// Name or ARN of the IAM instance profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub iam_instance_profile: Option<String>,

    /// EC2 key pair name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub key_name: Option<String>,

    /// Extra tags, merged over the master's (the operator's own tags win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 40))]
    pub tags: BTreeMap<String, String>,

    /// Instance metadata service: `Required` (IMDSv2 only, the default) or `Optional`.
    #[serde(default)]
    pub metadata_http_tokens: HttpTokens,

    /// Extra cloud-config merged into the generated user data (its `puppet` key is the
    /// operator's and cannot be overridden).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"x-kubernetes-preserve-unknown-fields": true}))]
    pub cloud_config: BTreeMap<String, serde_json::Value>,
}

/// IMDS token requirement.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HttpTokens {
    /// IMDSv2 only.
    #[default]
    Required,
    /// IMDSv1 and IMDSv2.
    Optional,
}

/// What happens when the instance dies outside the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReplacePolicy {
    /// Fence the dead instance and launch a new incarnation.
    #[default]
    Replace,
    /// Report `InstanceRunning=False` and wait.
    Never,
}

/// What deleting the PuppetNode does to the instance, certificate and record.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Terminate, revoke and delete.
    #[default]
    Delete,
    /// Leave them in place.
    Orphan,
}

/// Lifecycle phase of a node.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    Hash,
    PartialOrd,
    Ord,
)]
pub enum Phase {
    /// Accepted, nothing launched yet.
    #[default]
    Pending,
    /// The instance is being launched or is starting.
    Launching,
    /// The instance runs; its agent has not asked for a certificate yet.
    #[serde(rename = "AwaitingCSR")]
    AwaitingCsr,
    /// The certificate is signed; the agent has not fetched a catalog yet.
    Signed,
    /// The agent has been classified and received its catalog.
    Ready,
    /// A dead instance is being fenced before its successor launches.
    Replacing,
    /// The node is being deleted.
    Terminating,
    /// The node cannot make progress without a change (see conditions).
    Failed,
}

impl Phase {
    /// Every phase, in lifecycle order (status counts list them all, zeros included).
    pub const ALL: [Phase; 8] = [
        Phase::Pending,
        Phase::Launching,
        Phase::AwaitingCsr,
        Phase::Signed,
        Phase::Ready,
        Phase::Replacing,
        Phase::Terminating,
        Phase::Failed,
    ];
}

impl Phase {
    /// Name as written in status and shown by `kubectl get pn`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Launching => "Launching",
            Phase::AwaitingCsr => "AwaitingCSR",
            Phase::Signed => "Signed",
            Phase::Ready => "Ready",
            Phase::Replacing => "Replacing",
            Phase::Terminating => "Terminating",
            Phase::Failed => "Failed",
        }
    }
}

/// State of the node's certificate at the CA.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// `requested`, `signed` or `revoked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,

    /// SHA-256 fingerprint of what the CA holds now (the certificate, or the CSR while
    /// requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,

    /// Expiry of the signed certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,

    /// Serial of the one certificate the operator had signed for this incarnation, as
    /// recorded when it was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,

    /// SHA-256 fingerprint of that certificate, as recorded when it was signed; when it
    /// differs from `fingerprint` the CA's certificate is not the one signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_fingerprint: Option<String>,
}

/// Observed state of a PuppetNode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PuppetNodeStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Certname of the current incarnation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certname: Option<String>,

    /// Cloud instance id of the current incarnation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,

    /// Private IP address of the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,

    /// Public IP address of the instance, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,

    /// Availability zone of the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,

    /// Incarnation counter: starts at 1 and grows with every replacement. Rebuilt from
    /// instance tags when status is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<i64>,

    /// The node's certificate at the CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,

    /// Last time the ENC classified this node (the agent asked for its catalog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_in: Option<Time>,

    /// `InstanceRunning`, `RecordWritten`, `CertificateSigned`, `Classified`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
