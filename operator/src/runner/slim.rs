//! What the watch stores keep of a watched node or master: everything the passes read,
//! without the two parts they never read and that are each about as large as the rest
//! of the object: managedFields, and kubectl's last-applied copy of the object (written
//! by every client-side `kubectl apply`).

use kube::Resource;
use kube::ResourceExt;

/// The annotation in which client-side `kubectl apply` keeps the applied object.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops managedFields and the last-applied annotation. What wakes a reconcile does not
/// change: the last-applied copy changes only with what it copies (spec, labels, other
/// annotations), which still wake it.
pub fn slim_cached<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
    object.annotations_mut().remove(LAST_APPLIED);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PuppetNode;

    #[test]
    fn a_cached_node_keeps_all_but_managed_fields_and_the_last_applied_copy() {
        let mut node: PuppetNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "puppet-conductor.dev/v1alpha1",
            "kind": "PuppetNode",
            "metadata": {
                "name": "web-1", "namespace": "ns", "uid": "u1", "generation": 2,
                "labels": {"role": "web"},
                "annotations": {LAST_APPLIED: "{\"spec\":{}}", "team": "a"},
                "finalizers": ["puppet-conductor.dev/cleanup"],
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {"masterRef": {"name": "pm"}, "classes": ["role::web"]}
        }))
        .unwrap();
        let before = node.clone();
        slim_cached(&mut node);
        assert!(node.managed_fields().is_empty());
        assert_eq!(
            node.annotations().keys().collect::<Vec<_>>(),
            vec!["team"],
            "only kubectl's copy goes"
        );
        assert_eq!(node.labels(), before.labels());
        assert_eq!(node.finalizers(), before.finalizers());
        assert_eq!(node.spec, before.spec);
        assert_eq!(node.meta().generation, Some(2));
    }
}
