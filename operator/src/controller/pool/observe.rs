//! The nodes a pool owns, read from the API.

use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

use crate::api::node::PuppetNode;
use crate::api::pool::{PuppetNodePool, POOL_LABEL};
use crate::controller::error::ReconcileError;
use crate::controller::Context;
use crate::pool::Member;

/// What a pass saw of its pool's nodes.
pub(super) struct Observed {
    /// The nodes the pool owns, as members.
    pub members: Vec<Member>,
    /// The nodes themselves, by the same index.
    pub nodes: Vec<PuppetNode>,
}

/// Whether `node` is owned (as its controller) by the pool of UID `uid`.
pub(super) fn owned_by(node: &PuppetNode, uid: &str) -> bool {
    node.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// The pool's nodes: those labelled with its name and owned by it, from a quorum list.
pub(super) async fn observe(
    ctx: &Context,
    pool: &PuppetNodePool,
    ns: &str,
    hash: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Observed, ReconcileError> {
    let uid = pool
        .meta()
        .uid
        .clone()
        .ok_or(ReconcileError::MissingMetadata("uid"))?;
    let api: Api<PuppetNode> = Api::namespaced(ctx.client.clone(), ns);
    let listed = api
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={}", pool.name_any())))
        .await
        .map_err(ReconcileError::Kube)?;
    let min_ready = i64::from(pool.spec.min_ready_seconds);
    let nodes: Vec<PuppetNode> = listed
        .items
        .into_iter()
        .filter(|n| owned_by(n, &uid))
        .collect();
    let members = nodes
        .iter()
        .map(|n| Member::of(n, &pool.spec.template, hash, min_ready, now))
        .collect();
    Ok(Observed { members, nodes })
}
