//! PuppetNodePools in the simulation: the pool object a trial creates and edits, the API
//! server's garbage collector (a node whose owning pool is gone is deleted), and what the
//! pool's invariants read: its nodes, their Ready count and their live instances.

use std::collections::BTreeSet;

use puppet_conductor::api::pool::TEMPLATE_HASH_LABEL;
use puppet_conductor::cloud::{tags, Instance, InstanceState};
use puppet_conductor::pool::launch_hash;
use serde_json::{json, Value};

use crate::api::MemoryApi;
use crate::world::{MASTER, NS};

/// The one pool a pool trial has.
pub const POOL: &str = "web";
/// Images a template change picks from (a new image needs new instances: a roll).
pub const IMAGES: [&str; 3] = [
    "ami-0123456789abcdef0",
    "ami-0fedcba9876543210",
    "ami-00000000000000001",
];

/// A pool of `replicas` nodes of `image` and `classes`, within `surge` and `unavailable`.
pub fn pool_object(
    replicas: i64,
    surge: i64,
    unavailable: i64,
    image: &str,
    classes: &[&str],
) -> Value {
    json!({
        "metadata": {"name": POOL},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "masterRef": {"name": MASTER},
                    "classes": classes,
                    "instance": {"imageId": image},
                },
            },
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
        }
    })
}

/// What a pool's invariants compare against, read from the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub uid: String,
    pub replicas: usize,
    pub surge: usize,
    pub unavailable: usize,
    pub hash: String,
    pub paused: bool,
    pub deleting: bool,
}

/// The pool as the API has it now.
pub fn pool_spec(api: &MemoryApi) -> Option<PoolSpec> {
    let p = api.get("puppetnodepools", NS, POOL)?;
    let spec: puppet_conductor::api::pool::PuppetNodePoolSpec =
        serde_json::from_value(p["spec"].clone()).ok()?;
    let bounds = puppet_conductor::pool::bounds(&spec).ok()?;
    Some(PoolSpec {
        uid: p["metadata"]["uid"].as_str()?.to_string(),
        replicas: bounds.replicas,
        surge: bounds.max_surge,
        unavailable: bounds.max_unavailable,
        hash: launch_hash(&spec.template.spec),
        paused: p["metadata"]["annotations"][puppet_conductor::api::PAUSED_ANNOTATION] == "true",
        deleting: !p["metadata"]["deletionTimestamp"].is_null(),
    })
}

/// The UID of the pool that controls `node`, if any.
pub fn controller_uid(node: &Value) -> Option<String> {
    node["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true && o["kind"] == "PuppetNodePool")
        .and_then(|o| o["uid"].as_str())
        .map(String::from)
}

/// The nodes the pool of `uid` controls (deleting ones too).
pub fn pool_nodes(api: &MemoryApi, uid: &str) -> Vec<Value> {
    api.list("puppetnodes", NS)
        .into_iter()
        .filter(|n| controller_uid(n).as_deref() == Some(uid))
        .collect()
}

/// The garbage collector: nodes whose controlling pool no longer exists are deleted
/// (background propagation). Returns their names.
pub fn collect_garbage(api: &MemoryApi) -> Vec<String> {
    let pools: BTreeSet<String> = api
        .list("puppetnodepools", NS)
        .iter()
        .filter_map(|p| p["metadata"]["uid"].as_str().map(String::from))
        .collect();
    let mut deleted = Vec::new();
    for n in api.list("puppetnodes", NS) {
        let Some(owner) = controller_uid(&n) else {
            continue;
        };
        if pools.contains(&owner) || !n["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let name = n["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if api.delete("puppetnodes", NS, &name) {
            deleted.push(name);
        }
    }
    deleted
}

/// Ready nodes of `nodes` that are not being deleted.
pub fn ready_count(nodes: &[Value]) -> usize {
    nodes
        .iter()
        .filter(|n| n["metadata"]["deletionTimestamp"].is_null() && n["status"]["phase"] == "Ready")
        .count()
}

/// Whether every node of `nodes` is made from `hash` (its label says so).
pub fn all_updated(nodes: &[Value], hash: &str) -> bool {
    nodes
        .iter()
        .all(|n| n["metadata"]["labels"][TEMPLATE_HASH_LABEL] == hash)
}

/// Pending or running instances of the nodes `uids`.
pub fn live_instances(instances: &[Instance], uids: &BTreeSet<String>) -> usize {
    instances
        .iter()
        .filter(|i| matches!(i.state, InstanceState::Pending | InstanceState::Running))
        .filter(|i| i.tags.get(tags::NODE_UID).is_some_and(|u| uids.contains(u)))
        .count()
}

/// The names and UIDs of `nodes`.
pub fn uids(nodes: &[Value]) -> BTreeSet<String> {
    nodes
        .iter()
        .filter_map(|n| n["metadata"]["uid"].as_str().map(String::from))
        .collect()
}
