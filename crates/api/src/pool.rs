//! `PuppetNodePool`: a role and a count of PuppetNodes, as a Deployment is of Pods.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::node::PuppetNodeSpec;

/// Label every node of a pool carries: the hash of the template fields that need a new
/// instance when they change (so a roll tells updated nodes from old ones).
pub const TEMPLATE_HASH_LABEL: &str = "puppet-conductor.dev/pool-template-hash";
/// Label every node of a pool carries: the pool's name.
pub const POOL_LABEL: &str = "puppet-conductor.dev/pool";

/// A number of PuppetNodes made from one template, scaled with `kubectl scale` or an
/// autoscaler and replaced node by node when the template changes.
// clippy reads the repeated `type_` keys of separate printcolumns as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "puppet-conductor.dev",
    version = "v1alpha1",
    kind = "PuppetNodePool",
    namespaced,
    status = "PuppetNodePoolStatus",
    shortname = "pnp",
    category = "puppet",
    cel,
    doc = "A pool of PuppetNodes made from one template.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Current", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Up-to-date",
        type_ = "integer",
        json_path = ".status.updatedReplicas"
    ),
    printcolumn(
        name = "Available",
        type_ = "integer",
        json_path = ".status.availableReplicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.template.spec.certname)").message("a pool's nodes get derived certnames: template.spec.certname must not be set"))]
#[x_kube(validation = Rule::new("!has(self.selector.matchLabels) || self.selector.matchLabels.all(k, has(self.template.metadata.labels) && k in self.template.metadata.labels && self.template.metadata.labels[k] == self.selector.matchLabels[k])").message("selector.matchLabels must match template.metadata.labels"))]
#[x_kube(validation = Rule::new("has(self.selector.matchLabels) || has(self.selector.matchExpressions)").message("selector must not be empty: it would select every node"))]
#[x_kube(validation = Rule::new("self.selector == oldSelf.selector").message("selector is immutable"))]
pub struct PuppetNodePoolSpec {
    /// How many nodes the pool keeps (default 1). `kubectl scale` and a
    /// HorizontalPodAutoscaler set it through the `/scale` subresource.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: i32,

    /// Which nodes belong to the pool: its `matchLabels` must be a subset of
    /// `template.metadata.labels`. Immutable. The pool owns only nodes it created (an
    /// ownerReference); the selector is what `/scale` reports to autoscalers.
    pub selector: PoolSelector,

    /// What every node of the pool is made from.
    pub template: PuppetNodeTemplate,

    /// How nodes are replaced when the template changes in a way that needs a new
    /// instance (image, type, subnet, security groups, profile, key, tags, user data).
    #[serde(default)]
    pub strategy: PoolStrategy,

    /// Seconds a node must have been Ready before it counts as available (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = 86400))]
    pub min_ready_seconds: i32,

    /// Which nodes go first when the pool has more than it needs: nodes that are not
    /// Ready always go before Ready ones; among equals, `NewestFirst` (the default) or
    /// `OldestFirst`.
    #[serde(default)]
    pub scale_down_order: ScaleDownOrder,
}

/// Order in which surplus nodes are deleted, after the nodes that are not Ready.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ScaleDownOrder {
    /// The most recently created first (the oldest, longest-proven nodes stay).
    #[default]
    NewestFirst,
    /// The least recently created first.
    OldestFirst,
}

fn one() -> i32 {
    1
}

/// A label selector as a Deployment's, bounded so that the API server can cost the rules
/// that read it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PoolSelector {
    /// Labels a node must carry, with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    pub match_labels: BTreeMap<String, String>,

    /// Requirements a node's labels must meet, all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One requirement of a selector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.operator in ['In', 'NotIn'] ? size(self.values) > 0 : size(self.values) == 0").message("In and NotIn need values; Exists and DoesNotExist take none"))]
pub struct SelectorRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,

    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,

    /// The values of `In` and `NotIn`.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(max = 63)))]
    pub values: Vec<String>,
}

/// How a requirement compares a label.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorOperator {
    /// The label has one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// The template of a pool's nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PuppetNodeTemplate {
    /// Labels and annotations every node gets.
    #[serde(default)]
    pub metadata: TemplateMetadata,

    /// The spec every node gets (`certname` must be unset: each node derives its own).
    pub spec: PuppetNodeSpec,
}

/// Labels and annotations of a pool's nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels every node gets; must include the selector's `matchLabels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    pub labels: BTreeMap<String, String>,

    /// Annotations every node gets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub annotations: BTreeMap<String, String>,
}

/// How a pool replaces its nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'RollingUpdate' || !has(self.rollingUpdate)").message("rollingUpdate is only allowed with type RollingUpdate"))]
pub struct PoolStrategy {
    /// `RollingUpdate` (the default): nodes whose template changed are replaced within
    /// `maxSurge` and `maxUnavailable`. `OnDelete`: a node is replaced only when someone
    /// deletes it.
    #[serde(default, rename = "type")]
    pub type_: StrategyType,

    /// Bounds of a rolling replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

/// Kind of replacement.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StrategyType {
    /// Replace changed nodes within maxSurge and maxUnavailable.
    #[default]
    RollingUpdate,
    /// Replace a node only when it is deleted.
    OnDelete,
}

/// Bounds of a rolling replacement, each a count or a percentage of `replicas`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxSurge) || string(self.maxSurge).matches('^([0-9]+|(100|[1-9]?[0-9])%)$')").message("maxSurge must be a count of at least 0 or a percentage from 0% to 100%"))]
#[x_kube(validation = Rule::new("!has(self.maxUnavailable) || string(self.maxUnavailable).matches('^([0-9]+|(100|[1-9]?[0-9])%)$')").message("maxUnavailable must be a count of at least 0 or a percentage from 0% to 100%"))]
pub struct RollingUpdate {
    /// Nodes that may exist above `replicas` during a roll (default 1; a percentage
    /// rounds up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,

    /// Nodes that may be unavailable below `replicas` during a roll (default 0, so a new
    /// node is Ready before an old one goes; a percentage rounds down). When both are 0,
    /// one node may be unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// What the pool last observed of its nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PuppetNodePoolStatus {
    /// Nodes the pool owns that are not being deleted.
    #[serde(default)]
    pub replicas: i32,

    /// Nodes whose phase is Ready.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Nodes made from the current template.
    #[serde(default)]
    pub updated_replicas: i32,

    /// Ready nodes that have been Ready for `minReadySeconds`.
    #[serde(default)]
    pub available_replicas: i32,

    /// Nodes that are not available (`replicas` wanted minus available, at least 0).
    #[serde(default)]
    pub unavailable_replicas: i32,

    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Hash of the current template's instance fields (the nodes' template-hash label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,

    /// The selector as a string, for the `/scale` subresource (autoscalers read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// `Available`, `Progressing`, `Paused` and `ReplicaFailure`, as a Deployment's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
