//! The masters as the watch sees them: a node's pass reads its master here instead of
//! with a GET of its own (one per node pass otherwise). A master the cache does not hold
//! (the watch has not delivered its creation yet, the stored object is malformed, or no
//! watch runs, as in reconciler tests) is read from the API: absent from the cache is
//! unknown, never "not found".

use std::sync::OnceLock;

use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};

use super::error::ReconcileError;
use crate::api::master::PuppetMaster;

/// A PuppetMaster as watched (a malformed object is an error, not a stalled watch).
pub type GuardedMaster = DeserializeGuard<PuppetMaster>;

/// The watch's store of masters, attached by the runner once its watch exists.
#[derive(Default)]
pub struct MasterCache(OnceLock<Store<GuardedMaster>>);

impl MasterCache {
    /// Serves masters from `store` from now on (a second store is ignored).
    pub fn attach(&self, store: Store<GuardedMaster>) {
        let _ = self.0.set(store);
    }

    /// The master `namespace/name`: the cached copy when there is one, else the API's
    /// (`Ok(None)`: the API has no such master).
    pub async fn get(
        &self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PuppetMaster>, ReconcileError> {
        let cached = self
            .0
            .get()
            .and_then(|store| store.get(&ObjectRef::new(name).within(namespace)));
        if let Some(Ok(master)) = cached.as_deref().map(|guarded| &guarded.0) {
            return Ok(Some(master.clone()));
        }
        let masters: Api<PuppetMaster> = Api::namespaced(client.clone(), namespace);
        masters.get_opt(name).await.map_err(ReconcileError::Kube)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::PostParams;
    use kube::runtime::{reflector, watcher};

    fn master(server: &str) -> PuppetMaster {
        let mut m: PuppetMaster = serde_json::from_value(serde_json::json!({
            "apiVersion": "puppet-conductor.dev/v1alpha1",
            "kind": "PuppetMaster",
            "metadata": {"name": "pm", "namespace": "ns"},
            "spec": {
                "server": server,
                "ca": {"url": "https://ca:8140", "clientSecretRef": {"name": "c"}},
                "cloud": {"region": "r"},
                "records": {"bucket": "b"}
            }
        }))
        .unwrap();
        m.metadata.resource_version = None;
        m
    }

    async fn api_with(server: &str) -> kube::Client {
        let client = kube_fake_client::ClientBuilder::new()
            .with_resource::<PuppetMaster>()
            .build()
            .await
            .unwrap();
        let api: Api<PuppetMaster> = Api::namespaced(client.clone(), "ns");
        api.create(&PostParams::default(), &master(server))
            .await
            .unwrap();
        client
    }

    #[tokio::test]
    async fn a_cached_master_is_served_from_the_cache_and_a_missing_one_from_the_api() {
        let client = api_with("from-the-api").await;
        let cache = MasterCache::default();
        // No store attached yet (reconciler tests): the API's copy.
        let m = cache.get(&client, "ns", "pm").await.unwrap().unwrap();
        assert_eq!(m.spec.server, "from-the-api");

        let (store, mut writer) = reflector::store::<GuardedMaster>();
        cache.attach(store);
        // Attached but empty (the watch has not delivered it yet): still the API's copy,
        // never "not found".
        let m = cache.get(&client, "ns", "pm").await.unwrap().unwrap();
        assert_eq!(m.spec.server, "from-the-api");
        // Once the watch delivered it, the cached copy is used and the API is not asked.
        writer.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(master(
            "from-the-watch",
        )))));
        let m = cache.get(&client, "ns", "pm").await.unwrap().unwrap();
        assert_eq!(m.spec.server, "from-the-watch");
        // A master neither holds is absent.
        assert!(cache.get(&client, "ns", "other").await.unwrap().is_none());
    }
}
