//! Build: what a node should have, derived from its spec, metadata and master (its
//! identity, its record, its launch request); no I/O.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::master::PuppetMaster;
use crate::api::node::{HttpTokens, PuppetNode};
use crate::cloud::{tags, LaunchRequest};
use crate::controller::error::ReconcileError;
use crate::controller::services::MasterServices;
use crate::identity;
use crate::records::{NodeRecord, RecordOwner, RecordState};
use crate::userdata::{self, UserDataInput};

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

/// The Puppet environment of a node: its own, the master's default, then `production`.
pub fn environment(node: &PuppetNode, master: &PuppetMaster) -> String {
    node.spec
        .environment
        .clone()
        .or_else(|| master.spec.node_defaults.environment.clone())
        .unwrap_or_else(|| "production".to_string())
}

/// Whose record and launch request are built: the installation's name (`--identity`),
/// the node, its master, the master's services (challenge key, CA certificate) and the
/// node's names.
#[derive(Clone, Copy)]
pub struct Of<'a>(
    pub &'a str,
    pub &'a PuppetNode,
    pub &'a PuppetMaster,
    pub &'a MasterServices,
    pub &'a NodeIdentity,
);

/// The record of an incarnation.
pub fn desired_record(of: Of<'_>, incarnation: i64, instance_id: Option<String>) -> NodeRecord {
    let Of(operator_id, node, master, services, id) = of;
    let challenge = services.challenge_key.challenge(&id.uid, incarnation);
    NodeRecord {
        certname: id.certname(node, incarnation),
        classes: node.spec.classes.clone(),
        environment: environment(node, master),
        parameters: node.spec.parameters.clone(),
        challenge_sha256: identity::challenge_sha256(&challenge),
        instance_id,
        owner: RecordOwner {
            operator: operator_id.to_string(),
            master: id.master_key.clone(),
            node: id.key.clone(),
            node_uid: id.uid.clone(),
            incarnation,
        },
        state: RecordState::Live,
    }
}

/// The RunInstances request of an incarnation: node settings over master defaults.
pub fn launch_request(of: Of<'_>, incarnation: i64) -> Result<LaunchRequest, ReconcileError> {
    let Of(operator_id, node, master, services, id) = of;
    let d = &master.spec.node_defaults;
    let i = &node.spec.instance;
    let image_id = i
        .image_id
        .clone()
        .or_else(|| d.image_id.clone())
        .ok_or_else(|| {
            ReconcileError::InvalidSpec(
                "no image: set spec.instance.imageId or the master's nodeDefaults.imageId".into(),
            )
        })?;
    let instance_type = i.instance_type.clone().or_else(|| d.instance_type.clone()).ok_or_else(|| {
        ReconcileError::InvalidSpec(
            "no instance type: set spec.instance.instanceType or the master's nodeDefaults.instanceType".into(),
        )
    })?;
    let certname = id.certname(node, incarnation);
    let challenge = services.challenge_key.challenge(&id.uid, incarnation);
    let user_data = userdata::render(&UserDataInput {
        server: &master.spec.server,
        port: master.spec.port,
        certname: &certname,
        environment: &environment(node, master),
        ca_cert_pem: &services.ca_cert_pem,
        challenge: &challenge,
        extra: &i.cloud_config,
    })?;

    let mut tag_map: BTreeMap<String, String> = d.tags.clone();
    tag_map.extend(i.tags.clone());
    // The operator's own tags are what adoption and fencing rely on: they always win.
    tag_map.retain(|k, _| !k.starts_with("puppet-conductor.dev/"));
    tag_map
        .entry("Name".to_string())
        .or_insert_with(|| node.name_any());
    tag_map.insert(tags::OPERATOR.to_string(), operator_id.to_string());
    tag_map.insert(tags::MASTER.to_string(), id.master_key.clone());
    tag_map.insert(tags::NODE.to_string(), id.key.clone());
    tag_map.insert(tags::NODE_UID.to_string(), id.uid.clone());
    tag_map.insert(tags::CERTNAME.to_string(), certname);
    tag_map.insert(tags::INCARNATION.to_string(), incarnation.to_string());

    Ok(LaunchRequest {
        image_id,
        instance_type,
        subnet_id: i.subnet_id.clone().or_else(|| d.subnet_id.clone()),
        security_group_ids: if i.security_group_ids.is_empty() {
            d.security_group_ids.clone()
        } else {
            i.security_group_ids.clone()
        },
        iam_instance_profile: i
            .iam_instance_profile
            .clone()
            .or_else(|| d.iam_instance_profile.clone()),
        key_name: i.key_name.clone().or_else(|| d.key_name.clone()),
        tags: tag_map,
        user_data,
        client_token: identity::client_token(&id.uid, incarnation),
        imdsv2_required: i.metadata_http_tokens == HttpTokens::Required,
    })
}
