//! `puppet-conductor enc <certname>`: the external node classifier puppetserver runs.
//!
//! Prints the node's classification from its S3 record as Puppet ENC YAML and records a
//! check-in beside the record, which the controller turns into `Classified` and
//! `lastCheckIn`. Exit codes: 0 classified, 1 unknown node, including a certname the
//! operator could not have issued (the 2010 script's behaviour: Puppet then refuses the
//! catalog), 2 the records store failed (also refuses, safely).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ca::validate_certname;
use crate::records::{NodeRecord, RecordState, Records, RecordsError};

/// Why the ENC could not answer.
#[derive(thiserror::Error, Debug)]
pub enum EncError {
    /// The records store failed.
    #[error("reading the node record")]
    Records(#[from] RecordsError),
    /// The classification could not be rendered as YAML.
    #[error("rendering the classification")]
    Yaml(#[from] serde_yaml::Error),
}

/// What the ENC prints for a node (Puppet's ENC output format).
#[derive(Serialize, Debug, PartialEq)]
struct Classification<'a> {
    classes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'a str>,
    parameters: &'a BTreeMap<String, serde_json::Value>,
}

/// The ENC YAML of a record.
pub fn render(record: &NodeRecord) -> Result<String, EncError> {
    Ok(serde_yaml::to_string(&Classification {
        classes: &record.classes,
        environment: Some(record.environment.as_str()),
        parameters: &record.parameters,
    })?)
}

/// The ENC YAML for a node the operator does not know, when falling back to Puppet's own
/// node definitions is wanted instead of refusing the catalog.
pub fn render_fallback() -> Result<String, EncError> {
    Ok(serde_yaml::to_string(&Classification {
        classes: &[],
        environment: None,
        parameters: &BTreeMap::new(),
    })?)
}

/// The ENC's answer for one certname.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Print this YAML, exit 0.
    Classified(String),
    /// No record: exit 1 (or print the fallback, exit 0, when asked to).
    Unknown,
}

/// Classifies `certname` and records the check-in. A failed check-in does not withhold the
/// classification (the agent must still get its catalog); it is reported on stderr.
///
/// A certname the operator could never have issued (see [`validate_certname`]) is an
/// unknown node, not a store failure: the operator has no record for it by construction,
/// and the store is not asked.
pub async fn classify(
    records: &dyn Records,
    certname: &str,
    now: DateTime<Utc>,
) -> Result<Answer, EncError> {
    if validate_certname(certname).is_err() {
        return Ok(Answer::Unknown);
    }
    let Some(record) = records.get(certname).await? else {
        return Ok(Answer::Unknown);
    };
    // Only the current, live incarnation is classified: a record marked fencing or
    // deleting belongs to an instance being terminated.
    if record.state != RecordState::Live {
        eprintln!(
            "puppet-conductor enc: {certname} is {} (its instance is being terminated)",
            record.state.as_str()
        );
        return Ok(Answer::Unknown);
    }
    let yaml = render(&record)?;
    if let Err(error) = records.record_check_in(certname, now).await {
        eprintln!("puppet-conductor enc: check-in of {certname} not recorded: {error}");
    }
    Ok(Answer::Classified(yaml))
}

/// Default timeout of each records call made by the ENC: it runs on every catalog request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{RecordOwner, RecordState};

    fn record() -> NodeRecord {
        NodeRecord {
            certname: "web-1".into(),
            classes: vec!["role::webserver".into(), "profile::base".into()],
            environment: "production".into(),
            parameters: [
                ("port".to_string(), serde_json::json!(8080)),
                ("tier".to_string(), serde_json::json!("web")),
            ]
            .into(),
            challenge_sha256: "00".repeat(32),
            instance_id: Some("i-0123".into()),
            owner: RecordOwner {
                operator: "default".into(),
                master: "ns/pm".into(),
                node: "ns/web-1".into(),
                node_uid: "uid".into(),
                incarnation: 1,
            },
            state: RecordState::Live,
        }
    }

    #[test]
    fn enc_yaml_has_classes_environment_and_parameters_and_nothing_secret() {
        let yaml = render(&record()).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(v["classes"][0], serde_yaml::Value::from("role::webserver"));
        assert_eq!(v["environment"], serde_yaml::Value::from("production"));
        assert_eq!(v["parameters"]["port"], serde_yaml::Value::from(8080));
        assert!(
            !yaml.contains("challenge") && !yaml.contains("owner") && !yaml.contains("i-0123"),
            "{yaml}"
        );
    }

    #[tokio::test]
    async fn an_invalid_certname_is_an_unknown_node_and_the_store_is_not_asked() {
        // A store that fails every call: any call it gets turns the answer into an error.
        let store = crate::records::S3Records::new(&crate::records::RecordsConfig {
            bucket: "records".into(),
            prefix: "nodes/".into(),
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            force_path_style: true,
            credentials: Some(crate::records::StaticCredentials {
                access_key_id: "testing".into(),
                secret_access_key: "testing".into(),
                session_token: None,
            }),
            call_timeout: Duration::from_secs(2),
        })
        .await;
        for certname in [
            "bad/certname",
            "",
            "..",
            "Upper.example.com",
            "-flag",
            "a?b",
        ] {
            let answer = classify(&store, certname, Utc::now()).await;
            assert!(
                matches!(answer, Ok(Answer::Unknown)),
                "{certname:?}: {answer:?}"
            );
        }
        assert_eq!(store.calls(), 0, "no call for an invalid certname");
        // A valid certname does reach the (failing) store: exit 2, not 1.
        let answer = classify(&store, "web-1", Utc::now()).await;
        assert!(matches!(answer, Err(EncError::Records(_))), "{answer:?}");
        assert!(store.calls() > 0);
    }

    #[test]
    fn fallback_classifies_nothing_and_keeps_the_agent_environment() {
        let v: serde_yaml::Value = serde_yaml::from_str(&render_fallback().unwrap()).unwrap();
        assert_eq!(v["classes"], serde_yaml::Value::Sequence(vec![]));
        assert!(v.get("environment").is_none());
    }
}
