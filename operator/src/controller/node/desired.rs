//! Build: what a node should have, derived from its spec, metadata and master (its
//! identity, its record, its launch request); no I/O.

use kube::ResourceExt;

use crate::api::master::PuppetMaster;
use crate::api::node::PuppetNode;
use crate::cloud::{tags, LaunchRequest};
use crate::controller::error::ReconcileError;
use crate::controller::services::MasterServices;
use crate::controller::snapshot::Snapshot;
use crate::controller::Context;
use crate::identity;
use crate::records::{NodeRecord, RecordOwner, RecordState};
use crate::spec::ValidNode;
use crate::userdata::{self, UserDataError, UserDataInput};
use puppet_conductor_core::pause::{holds_actions, PausedBy};

/// Names and keys of one node, derived from its metadata.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// `namespace/name` of the node.
    pub key: String,
    /// `namespace/name` of its master.
    pub master_key: String,
    /// The node's UID.
    pub uid: String,
}

impl NodeIdentity {
    /// Identity of a node read from the API.
    pub fn of(node: &PuppetNode) -> Result<Self, ReconcileError> {
        let ns = node
            .namespace()
            .ok_or(ReconcileError::MissingMetadata("namespace"))?;
        let uid = node.uid().ok_or(ReconcileError::MissingMetadata("uid"))?;
        Ok(Self {
            key: format!("{ns}/{}", node.name_any()),
            master_key: format!("{ns}/{}", node.spec.master_ref.name),
            uid,
        })
    }

    /// Certname of an incarnation.
    pub fn certname(&self, node: &PuppetNode, incarnation: i64) -> String {
        identity::certname(&self.uid, incarnation, node.spec.certname.as_deref())
    }
}

/// What one pass of a node works with: whose record and launch request are built.
#[derive(Clone, Copy)]
pub struct Pass<'a> {
    /// Shared context (the installation's name is `ctx.settings.operator_id`).
    pub ctx: &'a Context,
    /// The node.
    pub node: &'a PuppetNode,
    /// Its master.
    pub master: &'a PuppetMaster,
    /// The master's services (challenge key, CA certificate, clients).
    pub services: &'a MasterServices,
    /// The snapshot the plan is made from.
    pub snapshot: &'a Snapshot,
    /// The node's names.
    pub id: &'a NodeIdentity,
    /// The validated settings (`None` only while the node is being deleted: cleanup
    /// writes no record and launches nothing).
    pub settings: Option<&'a ValidNode>,
    /// The node is being deleted: this pass cleans up.
    pub deleting: bool,
    /// The paused annotation in force (the node's own, or its master's), if any; it holds
    /// the pass's actions unless the node is being deleted ([`Pass::held`]).
    pub pause: Option<&'a PausedBy>,
}

impl Pass<'_> {
    /// Whether this pass only observes: paused and not being deleted (cleanup is never
    /// held). Every write of the pass asks this first.
    pub fn held(&self) -> bool {
        holds_actions(self.pause, self.deleting)
    }
}

/// The record of an incarnation.
pub fn desired_record(
    pass: Pass<'_>,
    settings: &ValidNode,
    incarnation: i64,
    instance_id: Option<String>,
) -> NodeRecord {
    let Pass {
        ctx,
        node,
        services,
        id,
        ..
    } = pass;
    let challenge = services.challenge_key.challenge(&id.uid, incarnation);
    NodeRecord {
        certname: id.certname(node, incarnation),
        classes: node.spec.classes.clone(),
        environment: settings.environment.clone(),
        parameters: node.spec.parameters.clone(),
        challenge_sha256: identity::challenge_sha256(&challenge),
        instance_id,
        owner: RecordOwner {
            operator: ctx.settings.operator_id.clone(),
            master: id.master_key.clone(),
            node: id.key.clone(),
            node_uid: id.uid.clone(),
            incarnation,
        },
        state: RecordState::Live,
    }
}

/// The user data of an incarnation in `environment`.
pub fn user_data(
    node: &PuppetNode,
    master: &PuppetMaster,
    services: &MasterServices,
    id: &NodeIdentity,
    environment: &str,
    incarnation: i64,
) -> Result<String, UserDataError> {
    userdata::render(&UserDataInput {
        server: &master.spec.server,
        port: master.spec.port,
        certname: &id.certname(node, incarnation),
        environment,
        ca_cert_pem: &services.ca_cert_pem,
        challenge: &services.challenge_key.challenge(&id.uid, incarnation),
        extra: &node.spec.instance.cloud_config,
        wait_for_cert_seconds: std::time::Duration::from(master.spec.signing.wait_for_cert)
            .as_secs()
            .max(1),
    })
}

/// The RunInstances request of an incarnation, from the validated settings.
pub fn launch_request(
    pass: Pass<'_>,
    settings: &ValidNode,
    incarnation: i64,
) -> Result<LaunchRequest, ReconcileError> {
    let Pass {
        ctx,
        node,
        master,
        services,
        id,
        ..
    } = pass;
    let operator_id = &ctx.settings.operator_id;
    let certname = id.certname(node, incarnation);
    let user_data = user_data(
        node,
        master,
        services,
        id,
        &settings.environment,
        incarnation,
    )?;
    let mut tag_map = settings.tags.clone();
    tag_map
        .entry("Name".to_string())
        .or_insert_with(|| node.name_any());
    // The operator's own tags are what adoption and fencing rely on: they always win.
    tag_map.insert(tags::OPERATOR.to_string(), operator_id.clone());
    tag_map.insert(tags::MASTER.to_string(), id.master_key.clone());
    tag_map.insert(tags::NODE.to_string(), id.key.clone());
    tag_map.insert(tags::NODE_UID.to_string(), id.uid.clone());
    tag_map.insert(tags::CERTNAME.to_string(), certname);
    tag_map.insert(tags::INCARNATION.to_string(), incarnation.to_string());

    Ok(LaunchRequest {
        instance: settings.instance.clone(),
        tags: tag_map,
        user_data,
        client_token: identity::client_token(&id.uid, incarnation),
    })
}
