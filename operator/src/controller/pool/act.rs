//! A pool's writes: new nodes from the template, deletions, and in-place rewrites of what
//! needs no new instance. Each is idempotent: a node name taken by the pool's own node
//! counts as created, a deletion is conditional on the node's UID, a rewrite is a merge
//! patch of the template's values.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};

use super::observe::{owned_by, Observed};
use crate::api::node::PuppetNode;
use crate::api::pool::{PuppetNodePool, POOL_LABEL, TEMPLATE_HASH_LABEL};
use crate::controller::error::ReconcileError;
use crate::controller::{Context, FIELD_MANAGER};
use crate::pool::{node_names, PoolPlan};

/// Names tried per new node before the pass gives up (others' nodes hold the ordinals).
const NAME_ATTEMPTS: usize = 16;

/// Carries out `plan`; stops at the first failure.
pub(super) async fn act(
    ctx: &Context,
    pool: &PuppetNodePool,
    ns: &str,
    hash: &str,
    observed: &Observed,
    plan: &PoolPlan,
) -> Result<(), ReconcileError> {
    let api: Api<PuppetNode> = Api::namespaced(ctx.client.clone(), ns);
    for name in &plan.update {
        if let Some(node) = observed.nodes.iter().find(|n| &n.name_any() == name) {
            rewrite(&api, pool, node).await?;
            event(
                ctx,
                pool,
                false,
                "Updated",
                format!("rewrote {name} from the template (no new instance)"),
            )
            .await;
        }
    }
    for name in &plan.delete {
        let Some(member) = observed.members.iter().find(|m| &m.name == name) else {
            continue;
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(member.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            // Gone already, or a namesake replaced it: nothing of ours to delete.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(ReconcileError::Kube(e)),
        }
        let why = if member.updated {
            "scale down"
        } else {
            "replaced by the current template"
        };
        event(
            ctx,
            pool,
            false,
            "Deleted",
            format!("deleted {name} ({why})"),
        )
        .await;
    }
    let mut taken: BTreeSet<String> = observed.members.iter().map(|m| m.name.clone()).collect();
    for _ in 0..plan.create {
        let name = create_one(&api, pool, hash, &mut taken).await?;
        event(ctx, pool, false, "Created", format!("created {name}")).await;
    }
    Ok(())
}

/// Creates one node under the lowest free name; a name another object holds is skipped.
async fn create_one(
    api: &Api<PuppetNode>,
    pool: &PuppetNodePool,
    hash: &str,
    taken: &mut BTreeSet<String>,
) -> Result<String, ReconcileError> {
    let uid = pool.meta().uid.clone().unwrap_or_default();
    for _ in 0..NAME_ATTEMPTS {
        let Some(name) = node_names(&pool.name_any(), taken, 1).pop() else {
            break;
        };
        taken.insert(name.clone());
        match api
            .create(&PostParams::default(), &new_node(pool, &name, hash))
            .await
        {
            Ok(_) => return Ok(name),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Ours (an earlier create whose answer was lost): created. Anyone else's:
                // try the next ordinal.
                match api.get_opt(&name).await.map_err(ReconcileError::Kube)? {
                    Some(existing) if owned_by(&existing, &uid) => return Ok(name),
                    _ => continue,
                }
            }
            Err(e) => return Err(ReconcileError::Kube(e)),
        }
    }
    Err(ReconcileError::InvalidSpec(format!(
        "no free node name {}-N after {NAME_ATTEMPTS} attempts",
        pool.name_any()
    )))
}

/// A new node of `pool` named `name`: the template's labels (with the pool's and the
/// launch hash's), annotations and spec, owned by the pool so that deleting the pool
/// deletes it.
fn new_node(pool: &PuppetNodePool, name: &str, hash: &str) -> PuppetNode {
    let template = &pool.spec.template;
    let mut labels = template.metadata.labels.clone();
    labels.insert(POOL_LABEL.to_string(), pool.name_any());
    labels.insert(TEMPLATE_HASH_LABEL.to_string(), hash.to_string());
    let mut node = PuppetNode::new(name, template.spec.clone());
    node.metadata = ObjectMeta {
        name: Some(name.to_string()),
        namespace: pool.namespace(),
        labels: Some(labels),
        annotations: (!template.metadata.annotations.is_empty())
            .then(|| template.metadata.annotations.clone()),
        // blockOwnerDeletion: a foreground deletion of the pool waits for every node's
        // cleanup (kube's controller_owner_ref leaves it unset).
        owner_references: pool.controller_owner_ref(&()).map(|mut o| {
            o.block_owner_deletion = Some(true);
            vec![o]
        }),
        ..ObjectMeta::default()
    };
    node
}

/// Writes the template's classification, policies, labels and annotations onto `node`
/// (a merge patch: parameters the template no longer has are removed, labels and
/// annotations are set, never removed; its instance settings stay, they need a new
/// instance).
async fn rewrite(
    api: &Api<PuppetNode>,
    pool: &PuppetNodePool,
    node: &PuppetNode,
) -> Result<(), ReconcileError> {
    let want = &pool.spec.template;
    let mut parameters: serde_json::Map<String, Value> = want
        .spec
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for gone in node
        .spec
        .parameters
        .keys()
        .filter(|k| !want.spec.parameters.contains_key(*k))
    {
        parameters.insert(gone.clone(), Value::Null);
    }
    let patch = json!({
        "metadata": {
            // This node, not a namesake made since the pass listed it.
            "uid": node.meta().uid,
            "labels": string_map(&want.metadata.labels),
            "annotations": string_map(&want.metadata.annotations),
        },
        "spec": {
            "classes": want.spec.classes,
            "environment": want.spec.environment,
            "parameters": parameters,
            "replacePolicy": want.spec.replace_policy,
            "deletionPolicy": want.spec.deletion_policy,
        }
    });
    api.patch(
        &node.name_any(),
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        },
        &Patch::Merge(&patch),
    )
    .await
    .map_err(ReconcileError::Kube)?;
    Ok(())
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

async fn event(ctx: &Context, pool: &PuppetNodePool, warning: bool, reason: &str, note: String) {
    ctx.events
        .publish(&pool.object_ref(&()), warning, reason, "Scale", note)
        .await;
}
