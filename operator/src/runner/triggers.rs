//! What wakes a reconcile: hashes of the parts of an object its reconcile acts on, for
//! `predicate_filter` on the watch streams, so the operator's own status writes (and
//! resourceVersion or managedFields churn) wake nothing; and the Secret changes that wake
//! the masters referencing them.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use futures::{future, Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::watcher;
use kube::Resource;

use crate::api::master::PuppetMaster;
use crate::api::node::PuppetNode;
use puppet_conductor_core::pause::paused;

pub(crate) fn hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The metadata a reconcile acts on: generation (the spec), whether deletion started,
/// finalizers, labels and annotations. Not resourceVersion, managedFields or status.
pub(crate) fn metadata_trigger(meta: &ObjectMeta) -> u64 {
    hash(&(
        meta.generation,
        meta.deletion_timestamp.is_some(),
        &meta.finalizers,
        &meta.labels,
        &meta.annotations,
    ))
}

/// What should wake a node reconcile; equal for two versions that differ only in status.
pub fn node_trigger(node: &PuppetNode) -> Option<u64> {
    Some(metadata_trigger(node.meta()))
}

/// What should wake a master reconcile; equal for two versions that differ only in status.
pub fn master_trigger(master: &PuppetMaster) -> Option<u64> {
    Some(metadata_trigger(master.meta()))
}

/// What should wake a master's nodes: its spec (a new generation, which deletion bumps
/// too) and whether its paused annotation pauses them. Not its status, nor its other
/// metadata: the master's own writes (status, finalizer) must not reconcile every node.
pub fn master_nodes_trigger<K: Resource>(master: &K) -> Option<u64> {
    let meta = master.meta();
    Some(hash(&(meta.generation, paused(meta.annotations.as_ref()))))
}

/// `trigger` for a watched object that may be malformed: a malformed version hashes its
/// metadata apart from the valid ones, so turning malformed wakes its reconcile once (which
/// reports it) and its status writes still do not.
pub fn guarded_trigger<K: Resource>(
    object: &DeserializeGuard<K>,
    trigger: impl Fn(&K) -> Option<u64>,
) -> Option<u64> {
    match &object.0 {
        Ok(valid) => trigger(valid),
        Err(invalid) => Some(hash(&("malformed", metadata_trigger(&invalid.metadata)))),
    }
}

/// A Secret as the metadata watch sees it.
pub type SecretMeta = PartialObjectMeta<Secret>;

/// What the Secret filter remembers of one Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSeen {
    resource_version: Option<String>,
    finalizers: u64,
}

impl SecretSeen {
    /// From a Secret's metadata.
    pub fn of(meta: &ObjectMeta) -> Self {
        Self {
            resource_version: meta.resource_version.clone(),
            finalizers: hash(&meta.finalizers),
        }
    }
}

/// Whether a Secret version should wake the masters referencing it: its first sighting, or
/// a new resourceVersion with the same finalizers. A version whose finalizers changed is a
/// finalizer write (the masters' own in-use hold, or its release), which cannot also change
/// the data in one JSON patch; a re-listed version with the same resourceVersion is no change.
pub fn secret_changed(before: Option<&SecretSeen>, now: &SecretSeen) -> bool {
    match before {
        None => true,
        Some(before) => {
            before.resource_version != now.resource_version && before.finalizers == now.finalizers
        }
    }
}

fn secret_key(meta: &ObjectMeta) -> (Option<String>, Option<String>) {
    (meta.namespace.clone(), meta.name.clone())
}

/// Remembers each Secret's last version (a small entry per Secret in scope, evicted when the
/// Secret is deleted or missing from a re-list).
#[derive(Debug, Default)]
pub struct SecretChanges {
    seen: HashMap<(Option<String>, Option<String>), SecretSeen>,
    relisted: Option<HashSet<(Option<String>, Option<String>)>>,
}

impl SecretChanges {
    /// The Secret to pass on for `event`, if any.
    pub fn observe(&mut self, event: watcher::Event<SecretMeta>) -> Option<SecretMeta> {
        match event {
            watcher::Event::Init => {
                self.relisted = Some(HashSet::new());
                None
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.relisted.take() {
                    self.seen.retain(|key, _| listed.contains(key));
                }
                None
            }
            watcher::Event::InitApply(secret) | watcher::Event::Apply(secret) => {
                let key = secret_key(secret.meta());
                if let Some(listed) = &mut self.relisted {
                    listed.insert(key.clone());
                }
                let now = SecretSeen::of(secret.meta());
                let changed = secret_changed(self.seen.get(&key), &now);
                self.seen.insert(key, now);
                changed.then_some(secret)
            }
            // Gone: its masters now fail to read it, which their status should say.
            watcher::Event::Delete(secret) => {
                self.seen.remove(&secret_key(secret.meta()));
                Some(secret)
            }
        }
    }
}

/// The Secrets whose changes should wake their masters (see [`secret_changed`]), from a
/// metadata watch's events.
pub fn secret_triggers(
    events: impl Stream<Item = Result<watcher::Event<SecretMeta>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<SecretMeta, watcher::Error>> + Send + 'static {
    let mut changes = SecretChanges::default();
    events.filter_map(move |event| {
        future::ready(match event {
            Ok(event) => changes.observe(event).map(Ok),
            Err(error) => Some(Err(error)),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::master::PuppetMasterStatus;
    use crate::api::node::{Phase, PuppetNodeStatus};

    fn node() -> PuppetNode {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "puppet-conductor.dev/v1alpha1",
            "kind": "PuppetNode",
            "metadata": {
                "name": "n", "namespace": "ns", "uid": "u", "generation": 1,
                "resourceVersion": "10",
                "finalizers": ["puppet-conductor.dev/cleanup"],
            },
            "spec": {"masterRef": {"name": "pm"}, "classes": ["base"]}
        }))
        .unwrap()
    }

    fn master() -> PuppetMaster {
        let mut m: PuppetMaster = serde_json::from_value(serde_json::json!({
            "apiVersion": "puppet-conductor.dev/v1alpha1",
            "kind": "PuppetMaster",
            "metadata": {"name": "pm", "namespace": "ns", "generation": 3, "resourceVersion": "7"},
            "spec": {
                "server": "puppet", "ca": {"url": "https://ca:8140", "clientSecretRef": {"name": "ca"}},
                "cloud": {"provider": "ec2", "region": "us-east-1"},
                "records": {"bucket": "b"}
            }
        }))
        .unwrap();
        m.status = None;
        m
    }

    #[test]
    fn a_node_status_write_does_not_change_its_trigger() {
        let before = node();
        let mut after = before.clone();
        after.status = Some(PuppetNodeStatus {
            phase: Some(Phase::Ready),
            ..Default::default()
        });
        after.metadata.resource_version = Some("11".into());
        after.metadata.managed_fields = Some(vec![Default::default()]);
        assert_eq!(node_trigger(&before), node_trigger(&after));
    }

    #[test]
    fn spec_deletion_finalizer_label_and_annotation_changes_change_the_node_trigger() {
        let before = node();
        let changes: [fn(&mut PuppetNode); 5] = [
            |n| n.metadata.generation = Some(2),
            |n| {
                n.metadata.deletion_timestamp =
                    Some(crate::status::conditions::time(chrono::Utc::now()))
            },
            |n| n.metadata.finalizers = None,
            |n| n.metadata.labels = Some([("shard".into(), "a".into())].into()),
            |n| n.metadata.annotations = Some([("note".into(), "x".into())].into()),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut after = before.clone();
            change(&mut after);
            assert_ne!(node_trigger(&before), node_trigger(&after), "change {i}");
        }
    }

    #[test]
    fn a_master_status_write_does_not_change_its_trigger_but_a_spec_change_does() {
        let before = master();
        let mut status_only = before.clone();
        status_only.status = Some(PuppetMasterStatus {
            observed_generation: Some(3),
            ..Default::default()
        });
        status_only.metadata.resource_version = Some("8".into());
        assert_eq!(master_trigger(&before), master_trigger(&status_only));
        let mut spec = before.clone();
        spec.metadata.generation = Some(4);
        assert_ne!(master_trigger(&before), master_trigger(&spec));
    }

    fn annotated(mut master: PuppetMaster, value: Option<&str>) -> PuppetMaster {
        master.metadata.annotations =
            value.map(|v| [(crate::api::PAUSED_ANNOTATION.to_string(), v.to_string())].into());
        master
    }

    #[test]
    fn pausing_or_resuming_a_node_changes_its_trigger() {
        let before = node();
        let mut paused = before.clone();
        paused.metadata.annotations = Some(
            [(
                crate::api::PAUSED_ANNOTATION.to_string(),
                "true".to_string(),
            )]
            .into(),
        );
        assert_ne!(node_trigger(&before), node_trigger(&paused));
        let mut resumed = paused.clone();
        resumed.metadata.annotations = None;
        assert_ne!(node_trigger(&paused), node_trigger(&resumed));
    }

    #[test]
    fn pausing_or_resuming_a_master_wakes_it_and_its_nodes() {
        let before = master();
        let paused = annotated(before.clone(), Some("true"));
        assert_ne!(master_trigger(&before), master_trigger(&paused));
        assert_ne!(master_nodes_trigger(&before), master_nodes_trigger(&paused));
        let resumed = annotated(paused.clone(), Some("false"));
        assert_ne!(
            master_nodes_trigger(&paused),
            master_nodes_trigger(&resumed)
        );
        assert_eq!(
            master_nodes_trigger(&before),
            master_nodes_trigger(&resumed),
            "not paused either way"
        );
    }

    #[test]
    fn the_masters_own_writes_and_other_annotations_do_not_wake_its_nodes() {
        let before = master();
        let mut written = before.clone();
        written.status = Some(PuppetMasterStatus {
            observed_generation: Some(3),
            ..Default::default()
        });
        written.metadata.resource_version = Some("8".into());
        written.metadata.finalizers = Some(vec!["puppet-conductor.dev/nodes".into()]);
        assert_eq!(
            master_nodes_trigger(&before),
            master_nodes_trigger(&written)
        );
        let mut noted = before.clone();
        noted.metadata.annotations = Some([("note".to_string(), "x".to_string())].into());
        assert_eq!(master_nodes_trigger(&before), master_nodes_trigger(&noted));
        let mut spec = before.clone();
        spec.metadata.generation = Some(4);
        assert_ne!(master_nodes_trigger(&before), master_nodes_trigger(&spec));
    }

    #[test]
    fn a_malformed_object_triggers_apart_from_its_valid_versions_and_not_on_status() {
        let valid: DeserializeGuard<PuppetNode> = DeserializeGuard(Ok(node()));
        let mut json = serde_json::to_value(node()).unwrap();
        json["spec"]["classes"] = serde_json::json!("not a list");
        let invalid: DeserializeGuard<PuppetNode> = serde_json::from_value(json.clone()).unwrap();
        assert!(invalid.0.is_err());
        let t = |g: &DeserializeGuard<PuppetNode>| guarded_trigger(g, node_trigger);
        assert!(
            t(&invalid).is_some(),
            "hashed, so it triggers once, not on every event"
        );
        assert_ne!(t(&valid), t(&invalid));
        json["status"] = serde_json::json!({"phase": "Failed"});
        json["metadata"]["resourceVersion"] = serde_json::json!("12");
        let invalid_later: DeserializeGuard<PuppetNode> = serde_json::from_value(json).unwrap();
        assert_eq!(t(&invalid), t(&invalid_later));
    }

    fn secret(rv: &str, finalizers: &[&str]) -> SecretMeta {
        use kube::core::PartialObjectMetaExt;
        ObjectMeta {
            name: Some("ca".into()),
            namespace: Some("ns".into()),
            resource_version: Some(rv.into()),
            finalizers: (!finalizers.is_empty())
                .then(|| finalizers.iter().map(|f| f.to_string()).collect()),
            ..Default::default()
        }
        .into_response_partial()
    }

    #[test]
    fn a_secret_wakes_its_masters_on_first_sight_and_data_changes_not_on_finalizer_writes() {
        let mut changes = SecretChanges::default();
        let mut passes = |e| changes.observe(e).is_some();
        assert!(!passes(watcher::Event::Init));
        assert!(
            passes(watcher::Event::InitApply(secret("1", &[]))),
            "first sight"
        );
        assert!(!passes(watcher::Event::InitDone));
        assert!(
            !passes(watcher::Event::Apply(secret(
                "2",
                &["puppet-conductor.dev/in-use"]
            ))),
            "the hold itself"
        );
        assert!(
            passes(watcher::Event::Apply(secret(
                "3",
                &["puppet-conductor.dev/in-use"]
            ))),
            "rotated"
        );
        // A re-list of the same version is no change.
        assert!(!passes(watcher::Event::Init));
        assert!(!passes(watcher::Event::InitApply(secret(
            "3",
            &["puppet-conductor.dev/in-use"]
        ))));
        assert!(!passes(watcher::Event::InitDone));
        assert!(passes(watcher::Event::Delete(secret("4", &[]))));
    }

    #[test]
    fn a_relist_evicts_secrets_that_are_gone() {
        let mut changes = SecretChanges::default();
        changes.observe(watcher::Event::Apply(secret("1", &[])));
        assert_eq!(changes.seen.len(), 1);
        changes.observe(watcher::Event::Init);
        changes.observe(watcher::Event::InitDone);
        assert!(changes.seen.is_empty(), "missing from the re-list");
    }
}
