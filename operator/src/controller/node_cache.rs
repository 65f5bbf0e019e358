//! The nodes as the watch sees them: a master's pass counts its nodes' phases and the
//! live certnames and UIDs its orphan sweep spares from here, not with a LIST of every
//! node per pass. The store stands for a LIST only when it can: attached, synced, of
//! every shard (no label selector: another shard's node still owns its instance), and
//! with no malformed object in it (whose UID would be unknown). Otherwise the API is
//! listed, as before.

use std::sync::{Arc, OnceLock};

use futures::FutureExt;
use kube::runtime::reflector::Store;

use super::context::Scope;
use crate::runner::wiring::GuardedNode;

/// The watch's store of nodes, attached by the runner once its watch exists.
#[derive(Default)]
pub struct NodeCache(OnceLock<Store<GuardedNode>>);

impl NodeCache {
    /// Serves nodes from `store` from now on (a second store is ignored).
    pub fn attach(&self, store: Store<GuardedNode>) {
        let _ = self.0.set(store);
    }

    /// Every node in `scope`, when the store can stand for a LIST of them (`None`: list
    /// the API instead).
    pub fn all(&self, scope: &Scope) -> Option<Vec<Arc<GuardedNode>>> {
        if scope.label_selector.is_some() {
            return None;
        }
        let store = self.0.get()?;
        // Synced: until the initial list is in, absent is unknown, not "no node".
        store.wait_until_ready().now_or_never()?.ok()?;
        let nodes = store.state();
        nodes.iter().all(|n| n.0.is_ok()).then_some(nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};

    fn node(name: &str) -> GuardedNode {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "puppet-conductor.dev/v1alpha1",
            "kind": "PuppetNode",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"masterRef": {"name": "pm"}, "classes": ["role::web"]}
        }))
        .unwrap()
    }

    #[test]
    fn the_store_stands_for_a_list_only_when_synced_unsharded_and_well_formed() {
        let cache = NodeCache::default();
        let all = Scope::default();
        assert!(cache.all(&all).is_none(), "no store");
        let (store, mut writer) = reflector::store::<GuardedNode>();
        cache.attach(store);
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(node("a")));
        assert!(cache.all(&all).is_none(), "initial list not done: unknown");
        writer.apply_watcher_event(&watcher::Event::InitDone);
        assert_eq!(cache.all(&all).map(|n| n.len()), Some(1));
        let sharded = Scope {
            label_selector: Some("shard=a".into()),
            ..Scope::default()
        };
        assert!(
            cache.all(&sharded).is_none(),
            "other shards' nodes are not in it"
        );
        // A spec that does not parse: the guard keeps the object's metadata, not its UID's meaning.
        let malformed: GuardedNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "puppet-conductor.dev/v1alpha1",
            "kind": "PuppetNode",
            "metadata": {"name": "bad", "namespace": "ns", "uid": "uid-bad"},
            "spec": {"masterRef": 7}
        }))
        .unwrap();
        assert!(malformed.0.is_err());
        writer.apply_watcher_event(&watcher::Event::Apply(malformed));
        assert!(
            cache.all(&all).is_none(),
            "a malformed node's UID is unknown"
        );
    }
}
