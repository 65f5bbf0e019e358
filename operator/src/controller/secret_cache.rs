//! The Secrets as the metadata watch sees them: a pass that holds its master's Secrets
//! reads here whether each already carries the in-use finalizer, instead of a GET per
//! Secret per pass. Absent from the cache (not delivered yet, or no watch runs, as in
//! reconciler tests) is unknown: the Secret is read from the API.

use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

/// The watch's store of Secret metadata, attached by the runner once its watch exists.
#[derive(Default)]
pub struct SecretCache(OnceLock<Store<PartialObjectMeta<Secret>>>);

impl SecretCache {
    /// Serves Secret metadata from `store` from now on (a second store is ignored).
    pub fn attach(&self, store: Store<PartialObjectMeta<Secret>>) {
        let _ = self.0.set(store);
    }

    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<std::sync::Arc<PartialObjectMeta<Secret>>> {
        self.0
            .get()
            .and_then(|store| store.get(&ObjectRef::new(name).within(namespace)))
    }

    /// Whether the watch saw `namespace/name` carry `finalizer` (`false` also when it has
    /// not seen the Secret: only a read can tell).
    pub fn holds(&self, namespace: &str, name: &str, finalizer: &str) -> bool {
        self.get(namespace, name).is_some_and(|meta| {
            meta.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == finalizer))
        })
    }

    /// Whether a watch's store is attached (without one nothing cached can move on, so a
    /// note made against it would never expire).
    pub fn is_watched(&self) -> bool {
        self.0.get().is_some()
    }

    /// The resourceVersion the watch saw of `namespace/name` (`None`: not seen).
    pub fn version(&self, namespace: &str, name: &str) -> Option<String> {
        self.get(namespace, name)
            .and_then(|meta| meta.metadata.resource_version.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::{reflector, watcher};

    fn meta(name: &str, finalizers: &[&str]) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    #[test]
    fn only_a_watched_secret_with_the_finalizer_counts_as_held() {
        let cache = SecretCache::default();
        assert!(!cache.holds("ns", "held", "f"), "no store: unknown");
        let (store, mut writer) = reflector::store();
        cache.attach(store);
        writer.apply_watcher_event(&watcher::Event::Apply(meta("held", &["other", "f"])));
        writer.apply_watcher_event(&watcher::Event::Apply(meta("bare", &["other"])));
        assert!(cache.holds("ns", "held", "f"));
        assert!(!cache.holds("ns", "bare", "f"));
        assert!(!cache.holds("ns", "unseen", "f"), "not delivered: unknown");
        assert!(!cache.holds("elsewhere", "held", "f"));
    }
}
