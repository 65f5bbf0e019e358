//! The validated spec: a node's settings resolved against its master's defaults before
//! anything is written (pure). What the schema cannot check (a setting only the master's
//! defaults supply, the rendered user data's size) fails here, so an unusable spec never
//! reaches a record, a finalizer or a launch.

use std::collections::BTreeMap;

use puppet_conductor_api::master::PuppetMasterSpec;
use puppet_conductor_api::node::{HttpTokens, PuppetNodeSpec};

use crate::instance::InstanceSettings;
use crate::userdata::UserDataError;

/// The Puppet environment of a node that names none, on a master that names none.
pub const DEFAULT_ENVIRONMENT: &str = "production";

/// A node's settings with its master's defaults applied: what its record and its launch
/// requests are built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidNode {
    /// The Puppet environment: the node's, the master's default, then `production`.
    pub environment: String,
    /// Where and how its instances run (the node's settings win; security groups are
    /// the node's when it names any).
    pub instance: InstanceSettings,
    /// The user's tags: the master's defaults under the node's, without any in the
    /// operator's own prefix (adoption and fencing rely on those).
    pub tags: BTreeMap<String, String>,
}

/// Why a spec cannot be acted on.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the node nor its master names an image.
    #[error("no image: set spec.instance.imageId or the master's nodeDefaults.imageId")]
    NoImage,
    /// Neither the node nor its master names an instance type.
    #[error(
        "no instance type: set spec.instance.instanceType or the master's nodeDefaults.instanceType"
    )]
    NoInstanceType,
    /// The user data cannot be rendered (a reserved key, too large).
    #[error("spec.instance.cloudConfig: {0}")]
    UserData(#[from] UserDataError),
}

/// Tag keys in this prefix are the operator's own.
const OPERATOR_TAG_PREFIX: &str = "puppet-conductor.dev/";

/// Resolves a node's settings over its master's defaults.
pub fn resolve_node(
    node: &PuppetNodeSpec,
    master: &PuppetMasterSpec,
) -> Result<ValidNode, SpecError> {
    let d = &master.node_defaults;
    let i = &node.instance;
    let image_id = i
        .image_id
        .clone()
        .or_else(|| d.image_id.clone())
        .ok_or(SpecError::NoImage)?;
    let instance_type = i
        .instance_type
        .clone()
        .or_else(|| d.instance_type.clone())
        .ok_or(SpecError::NoInstanceType)?;
    let mut tags = d.tags.clone();
    tags.extend(i.tags.clone());
    tags.retain(|k, _| !k.starts_with(OPERATOR_TAG_PREFIX));
    Ok(ValidNode {
        environment: node
            .environment
            .clone()
            .or_else(|| d.environment.clone())
            .unwrap_or_else(|| DEFAULT_ENVIRONMENT.to_string()),
        instance: InstanceSettings {
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
            imdsv2_required: i.metadata_http_tokens == HttpTokens::Required,
        },
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use puppet_conductor_api::master::NodeDefaults;

    fn master(defaults: NodeDefaults) -> PuppetMasterSpec {
        let mut m: PuppetMasterSpec = serde_json::from_value(serde_json::json!({
            "server": "puppet.example.com",
            "ca": {
                "url": "https://puppet.example.com:8140",
                "clientSecretRef": {"name": "ca-client"}
            },
            "cloud": {"region": "us-east-1"},
            "records": {"bucket": "b"}
        }))
        .unwrap();
        m.node_defaults = defaults;
        m
    }

    fn node(json: serde_json::Value) -> PuppetNodeSpec {
        let mut spec = serde_json::json!({"masterRef": {"name": "m"}});
        if let (Some(base), Some(extra)) = (spec.as_object_mut(), json.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn a_node_without_an_image_or_type_anywhere_is_refused() {
        let none = master(NodeDefaults::default());
        assert!(matches!(
            resolve_node(&node(serde_json::json!({})), &none),
            Err(SpecError::NoImage)
        ));
        let image_only = node(serde_json::json!({"instance": {"imageId": "ami-12345678"}}));
        assert!(matches!(
            resolve_node(&image_only, &none),
            Err(SpecError::NoInstanceType)
        ));
    }

    #[test]
    fn node_settings_win_over_the_masters_and_operator_tags_are_dropped() {
        let defaults = NodeDefaults {
            environment: Some("staging".into()),
            image_id: Some("ami-aaaaaaaa".into()),
            instance_type: Some("t3.small".into()),
            security_group_ids: vec!["sg-11111111".into()],
            tags: [
                ("team".to_string(), "ops".to_string()),
                ("cost".to_string(), "a".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let spec = node(serde_json::json!({
            "environment": "web",
            "instance": {
                "imageId": "ami-bbbbbbbb",
                "securityGroupIds": ["sg-22222222"],
                "tags": {"cost": "b", "puppet-conductor.dev/node-uid": "forged"},
                "metadataHttpTokens": "Optional"
            }
        }));
        let s = resolve_node(&spec, &master(defaults.clone())).unwrap();
        assert_eq!(s.environment, "web");
        assert_eq!(s.instance.image_id, "ami-bbbbbbbb");
        assert_eq!(s.instance.instance_type, "t3.small");
        assert_eq!(
            s.instance.security_group_ids,
            vec!["sg-22222222".to_string()]
        );
        assert_eq!(
            s.tags,
            [
                ("team".to_string(), "ops".to_string()),
                ("cost".to_string(), "b".to_string())
            ]
            .into()
        );
        assert!(!s.instance.imdsv2_required);
        let plain = resolve_node(&node(serde_json::json!({})), &master(defaults)).unwrap();
        assert_eq!(plain.environment, "staging");
        assert_eq!(
            plain.instance.security_group_ids,
            vec!["sg-11111111".to_string()]
        );
        assert!(
            plain.instance.imdsv2_required,
            "IMDSv2 is required by default"
        );
        let bare = NodeDefaults {
            image_id: Some("ami-aaaaaaaa".into()),
            instance_type: Some("t3.small".into()),
            ..Default::default()
        };
        let s = resolve_node(&node(serde_json::json!({})), &master(bare)).unwrap();
        assert_eq!(s.environment, DEFAULT_ENVIRONMENT);
    }
}
