//! Adding and removing the operator's finalizers with guarded JSON patches.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::ReconcileError;
use super::FIELD_MANAGER;

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
