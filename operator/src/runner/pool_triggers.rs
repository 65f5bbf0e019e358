//! What wakes a pool: changes of its spec or metadata (not its status writes), and changes
//! of its nodes that its decisions read: existence, deletion, labels, spec generation,
//! phase, and the `Ready` and `Paused` conditions. A node's other status writes (a
//! check-in time, an address) wake no pool.

use std::collections::HashMap;

use futures::{future, Stream, StreamExt};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::triggers::{hash, metadata_trigger};
use crate::api::conditions::READY;
use crate::api::node::PuppetNode;
use crate::api::pool::PuppetNodePool;

/// A PuppetNodePool as watched: a malformed object arrives as an error instead of
/// stalling the watcher.
pub type GuardedPool = DeserializeGuard<PuppetNodePool>;

/// What should wake a pool reconcile; equal for two versions that differ only in status.
pub fn pool_trigger(pool: &PuppetNodePool) -> Option<u64> {
    Some(metadata_trigger(pool.meta()))
}

/// A hash of the parts of a node its pool's pass reads.
pub fn pool_view_of(node: &PuppetNode) -> u64 {
    let meta = node.meta();
    let status = node.status.as_ref();
    let condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
            .map(|c| (c.status.clone(), c.last_transition_time.0.as_second()))
    };
    hash(&(
        meta.generation,
        meta.deletion_timestamp.is_some(),
        &meta.labels,
        &meta.annotations,
        meta.owner_references.as_ref().map(|o| {
            o.iter()
                .map(|r| (r.uid.clone(), r.controller))
                .collect::<Vec<_>>()
        }),
        status.and_then(|s| s.phase),
        condition(READY),
        condition("Paused"),
    ))
}

/// Whether a PuppetNodePool controls `node`.
pub fn pool_owned(node: &PuppetNode) -> bool {
    node.owner_references()
        .iter()
        .any(|o| o.kind == "PuppetNodePool" && o.controller == Some(true))
}

/// The node changes that reach pools: each pool-owned node when what its pool reads
/// changed, and when it is deleted (the event a roll waits for to surge again). Malformed
/// nodes and nodes no pool owns are dropped.
pub fn pool_node_triggers(
    events: impl Stream<Item = Result<watcher::Event<DeserializeGuard<PuppetNode>>, watcher::Error>>
        + Send
        + 'static,
) -> impl Stream<Item = Result<PuppetNode, watcher::Error>> + Send + 'static {
    let mut seen: HashMap<ObjectRef<PuppetNode>, u64> = HashMap::new();
    events.filter_map(move |event| {
        let out = match event {
            Err(error) => Some(Err(error)),
            Ok(watcher::Event::Apply(guarded) | watcher::Event::InitApply(guarded)) => {
                match guarded.0 {
                    Ok(node) if pool_owned(&node) => {
                        let view = pool_view_of(&node);
                        let key = ObjectRef::from_obj(&node);
                        (seen.insert(key, view) != Some(view)).then_some(Ok(node))
                    }
                    _ => None,
                }
            }
            Ok(watcher::Event::Delete(guarded)) => match guarded.0 {
                Ok(node) if pool_owned(&node) => {
                    seen.remove(&ObjectRef::from_obj(&node));
                    Some(Ok(node))
                }
                _ => None,
            },
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
        };
        future::ready(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn node(name: &str, owned: bool, phase: &str, check_in: &str) -> DeserializeGuard<PuppetNode> {
        let owners = if owned {
            serde_json::json!([{"apiVersion": "puppet-conductor.dev/v1alpha1", "kind": "PuppetNodePool",
                "name": "web", "uid": "pool-uid", "controller": true}])
        } else {
            serde_json::json!([])
        };
        DeserializeGuard(Ok(serde_json::from_value(serde_json::json!({
            "apiVersion": "puppet-conductor.dev/v1alpha1",
            "kind": "PuppetNode",
            "metadata": {"name": name, "namespace": "ns", "ownerReferences": owners, "generation": 1},
            "spec": {"masterRef": {"name": "pm"}},
            "status": {"phase": phase, "lastCheckIn": check_in},
        }))
        .unwrap()))
    }

    #[tokio::test]
    async fn only_what_a_pool_reads_wakes_it_and_a_deletion_always_does() {
        let events = vec![
            Ok(watcher::Event::Apply(node(
                "web-0",
                true,
                "Launching",
                "2026-01-01T00:00:00Z",
            ))),
            // A check-in time alone: no wake.
            Ok(watcher::Event::Apply(node(
                "web-0",
                true,
                "Launching",
                "2026-01-01T00:30:00Z",
            ))),
            Ok(watcher::Event::Apply(node(
                "web-0",
                true,
                "Ready",
                "2026-01-01T00:30:00Z",
            ))),
            // Not a pool's.
            Ok(watcher::Event::Apply(node(
                "solo",
                false,
                "Ready",
                "2026-01-01T00:30:00Z",
            ))),
            Ok(watcher::Event::Delete(node(
                "web-0",
                true,
                "Ready",
                "2026-01-01T00:30:00Z",
            ))),
        ];
        let woke: Vec<String> = pool_node_triggers(stream::iter(events))
            .map(|n| {
                let n = n.unwrap();
                format!(
                    "{}:{:?}",
                    n.metadata.name.unwrap(),
                    n.status.unwrap().phase.unwrap()
                )
            })
            .collect()
            .await;
        assert_eq!(woke, ["web-0:Launching", "web-0:Ready", "web-0:Ready"]);
    }
}
