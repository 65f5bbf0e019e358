//! Adding and removing the operator's finalizers with guarded JSON patches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::ReconcileError;
use super::FIELD_MANAGER;
use crate::sync::lock;

fn json_patch(ops: serde_json::Value) -> Result<json_patch::Patch, ReconcileError> {
    serde_json::from_value(ops)
        .map_err(|e| ReconcileError::InvalidSpec(format!("finalizer patch: {e}")))
}

async fn apply<K>(api: &Api<K>, name: &str, patch: json_patch::Patch) -> Result<K, ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &Patch::Json::<()>(patch),
    )
    .await
    .map_err(ReconcileError::Kube)
}

/// Whether `obj` carries `finalizer`.
pub fn has_finalizer<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.finalizers().iter().any(|f| f == finalizer)
}

/// Adds `finalizer`, guarded by the resourceVersion so a concurrent change is not lost.
/// (kube's helper would add it too, but its `test: null` on an absent list is not portable
/// across API implementations.)
pub async fn add_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<K, ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let rv = obj
        .resource_version()
        .ok_or(ReconcileError::MissingMetadata("resourceVersion"))?;
    let add = if obj.meta().finalizers.is_some() {
        json!({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer})
    } else {
        json!({"op": "add", "path": "/metadata/finalizers", "value": [finalizer]})
    };
    let patch = json_patch(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        add,
    ]))?;
    apply(api, &obj.name_any(), patch).await
}

/// Removes `finalizer` if present; the patch tests that the entry it removes is still
/// that finalizer, so a list changed meanwhile fails instead of losing another entry.
pub async fn remove_finalizer<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
) -> Result<(), ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(index) = obj.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let patch = json_patch(json!([
        {"op": "test", "path": path, "value": finalizer},
        {"op": "remove", "path": path},
    ]))?;
    apply(api, &obj.name_any(), patch).await.map(|_| ())
}

/// Finalizers this process added, or read from the API, that its watch caches do not show
/// yet. A burst of node passes would otherwise read (and race to patch) the master and its
/// Secrets once per node until the watch delivers the first patch. An entry counts only
/// while the cached copy is the one it was noted against: once the cache moves on, the
/// cache tells (so a finalizer removed since, by this process or anyone, is not assumed).
#[derive(Default)]
pub struct AddedFinalizers {
    /// By object key: the cached resourceVersion when noted (`None`: not cached then).
    noted: Mutex<HashMap<String, Option<String>>>,
    /// One first hold at a time per master, so concurrent passes wait for it, not race.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl AddedFinalizers {
    /// Notes that `key` carries the finalizer; `cached` is the cache's resourceVersion now.
    pub fn note(&self, key: &str, cached: Option<&str>) {
        lock(&self.noted).insert(key.to_string(), cached.map(str::to_string));
    }

    /// Whether `key` was noted against the cached resourceVersion `cached`.
    pub fn noted(&self, key: &str, cached: Option<&str>) -> bool {
        lock(&self.noted)
            .get(key)
            .is_some_and(|at| at.as_deref() == cached)
    }

    /// Forgets `key` (its finalizer was removed).
    pub fn forget(&self, key: &str) {
        lock(&self.noted).remove(key);
    }

    /// Waits for any other pass adding the first holds of `master_key`, then holds the
    /// turn until the guard drops.
    pub async fn flight(&self, master_key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = lock(&self.flights)
            .entry(master_key.to_string())
            .or_default()
            .clone();
        turn.lock_owned().await
    }

    /// Drops what is kept for a deleted master (its Secrets' notes stay until the cache
    /// moves on: another master may share them).
    pub fn forget_master(&self, master_key: &str) {
        lock(&self.flights).remove(master_key);
        self.forget(&master_finalizer_key(master_key));
    }
}

/// The key a master's finalizer is noted under.
pub fn master_finalizer_key(master_key: &str) -> String {
    format!("puppetmasters/{master_key}")
}

/// The key a Secret's in-use finalizer is noted under.
pub fn secret_finalizer_key(namespace: &str, name: &str) -> String {
    format!("secrets/{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_counts_only_until_the_cached_copy_moves_on() {
        let added = AddedFinalizers::default();
        assert!(!added.noted("k", None));
        added.note("k", None);
        assert!(added.noted("k", None), "not cached yet, noted then");
        assert!(
            !added.noted("k", Some("7")),
            "the cache caught up: it tells"
        );
        added.note("k", Some("7"));
        assert!(added.noted("k", Some("7")));
        assert!(!added.noted("k", Some("8")));
        added.forget("k");
        assert!(!added.noted("k", Some("7")));
    }

    #[tokio::test]
    async fn passes_of_one_master_take_the_first_hold_in_turn() {
        let added = Arc::new(AddedFinalizers::default());
        let first = added.flight("ns/m").await;
        let waiting = {
            let added = added.clone();
            tokio::spawn(async move {
                added.flight("ns/m").await;
            })
        };
        let other = added.flight("ns/other").await;
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the same master waits");
        drop(other);
        drop(first);
        waiting.await.unwrap();
    }
}
