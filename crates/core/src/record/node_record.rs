//! The node record and its canonical bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One node's classification and the identity of the incarnation it belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The node's certname (also the object key).
    pub certname: String,
    /// Puppet classes the ENC returns.
    pub classes: Vec<String>,
    /// Puppet environment the ENC returns.
    pub environment: String,
    /// Top-scope parameters the ENC returns.
    pub parameters: BTreeMap<String, Value>,
    /// hex SHA-256 of the incarnation's challenge (never the challenge itself)
    pub challenge_sha256: String,
    /// instance launched for this incarnation, once known
    pub instance_id: Option<String>,
    /// Who wrote the record.
    pub owner: RecordOwner,
    /// Where the incarnation is in its life: `autosign` and `enc` serve only a live one.
    /// Written before the operator terminates its instance (records of older versions,
    /// without the field, read as live).
    #[serde(default)]
    pub state: RecordState,
}

/// The lifecycle of the incarnation a record describes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordState {
    /// The incarnation is the node's current one: its CSR may be signed, its agent classified.
    #[default]
    Live,
    /// The incarnation is being fenced (terminated and revoked before its successor).
    Fencing,
    /// The node is being deleted.
    Deleting,
}

impl RecordState {
    /// The name as written in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "Live",
            Self::Fencing => "Fencing",
            Self::Deleting => "Deleting",
        }
    }
}

/// The operator object a record belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordOwner {
    /// The operator instance that wrote it.
    pub operator: String,
    /// The PuppetMaster, `namespace/name`.
    pub master: String,
    /// The PuppetNode, `namespace/name`.
    pub node: String,
    /// The PuppetNode's UID.
    pub node_uid: String,
    /// The node's incarnation.
    pub incarnation: i64,
}

impl std::fmt::Display for RecordOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {} (uid {}, incarnation {}) of master {} by operator {}",
            self.node, self.node_uid, self.incarnation, self.master, self.operator
        )
    }
}

/// A record that could not be serialised.
#[derive(Debug, thiserror::Error)]
#[error("record {certname} could not be encoded")]
pub struct EncodeError {
    /// The record's certname.
    pub certname: String,
    /// The serialisation error.
    #[source]
    pub source: serde_json::Error,
}

impl NodeRecord {
    /// Canonical bytes written to S3 (stable: same record → same bytes).
    ///
    /// Pretty-printed JSON with every object's keys sorted (also inside
    /// `parameters`, whatever order they were built in) and a final newline.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let encode = |source| EncodeError {
            certname: self.certname.clone(),
            source,
        };
        let value = serde_json::to_value(self).map_err(encode)?;
        let mut bytes = serde_json::to_vec_pretty(&canonical(value)).map_err(encode)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// hex SHA-256 of [`NodeRecord::to_bytes`]: the content hash compared to
    /// decide whether to write.
    pub fn content_hash(&self) -> Result<String, EncodeError> {
        Ok(sha256_hex(&self.to_bytes()?))
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `value` with every object's keys in sorted order, independent of whether
/// serde_json's `preserve_order` feature is enabled somewhere in the build.
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn sample() -> NodeRecord {
        NodeRecord {
            certname: "pc-0f3c9a-1".into(),
            classes: vec!["role::web".into(), "profile::base".into()],
            environment: "production".into(),
            parameters: BTreeMap::from([
                ("tier".into(), json!("frontend")),
                ("ports".into(), json!([80, 443])),
                (
                    "nested".into(),
                    json!({"z": 1, "a": {"y": true, "b": null}}),
                ),
            ]),
            challenge_sha256: sha256_hex(b"challenge"),
            instance_id: Some("i-0123456789abcdef0".into()),
            owner: RecordOwner {
                operator: "puppet-conductor".into(),
                master: "puppet/main".into(),
                node: "puppet/web-1".into(),
                node_uid: "6f0e5c1a-8d1b-4b6e-9f7a-2d7c1e0b9a11".into(),
                incarnation: 1,
            },
            state: RecordState::Live,
        }
    }

    #[test]
    fn bytes_are_stable_and_sorted() {
        let a = sample().to_bytes().unwrap();
        assert_eq!(a, sample().to_bytes().unwrap());
        let text = String::from_utf8(a).unwrap();
        assert!(text.ends_with("}\n"));
        // Keys sorted at every level, camelCase field names.
        let positions: Vec<usize> = [
            "\"certname\"",
            "\"challengeSha256\"",
            "\"classes\"",
            "\"environment\"",
            "\"instanceId\"",
            "\"owner\"",
            "\"parameters\"",
            "\"state\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.find("\"b\"").unwrap() < text.find("\"y\"").unwrap());
        assert!(text.contains("\"nodeUid\""));
        assert!(
            !text.contains("challenge\""),
            "the challenge itself never appears"
        );
    }

    #[test]
    fn bytes_do_not_depend_on_parameter_insertion_order() {
        let mut a = sample();
        let mut b = sample();
        let mut nested_a = serde_json::Map::new();
        nested_a.insert("x".into(), json!(1));
        nested_a.insert("a".into(), json!(2));
        let mut nested_b = serde_json::Map::new();
        nested_b.insert("a".into(), json!(2));
        nested_b.insert("x".into(), json!(1));
        a.parameters.insert("m".into(), Value::Object(nested_a));
        b.parameters.insert("m".into(), Value::Object(nested_b));
        assert_eq!(a.to_bytes().unwrap(), b.to_bytes().unwrap());
    }

    #[test]
    fn a_record_without_a_state_reads_as_live() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value.as_object_mut().unwrap().remove("state");
        let back: NodeRecord = serde_json::from_value(value).unwrap();
        assert_eq!(back.state, RecordState::Live);
    }

    #[test]
    fn bytes_round_trip() {
        let bytes = sample().to_bytes().unwrap();
        let back: NodeRecord = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn content_hash_changes_iff_content_changes() {
        let base = sample().content_hash().unwrap();
        assert_eq!(base.len(), 64);
        assert_eq!(base, sample().content_hash().unwrap());
        assert_eq!(base, sha256_hex(&sample().to_bytes().unwrap()));

        type Change = fn(&mut NodeRecord);
        let changes: Vec<(&str, Change)> = vec![
            ("classes", |r| r.classes.push("extra".into())),
            ("class order", |r| r.classes.reverse()),
            ("environment", |r| r.environment = "staging".into()),
            ("parameter", |r| {
                r.parameters.insert("tier".into(), json!("backend"));
            }),
            ("challenge", |r| r.challenge_sha256 = sha256_hex(b"other")),
            ("instance", |r| r.instance_id = None),
            ("incarnation", |r| r.owner.incarnation = 2),
            ("owner uid", |r| r.owner.node_uid = "other".into()),
            ("state", |r| r.state = RecordState::Fencing),
        ];
        for (what, change) in changes {
            let mut r = sample();
            change(&mut r);
            assert_ne!(r.content_hash().unwrap(), base, "{what}");
        }
    }
}
