//! The instance's user data: a `#cloud-config` that installs the Puppet agent,
//! points it at the server, trusts the Puppet CA and makes its CSR carry this
//! incarnation's challenge and the instance's own id.
//!
//! The output is a cloud-init jinja template (first line `## template: jinja`):
//! the instance id is only known on the instance, so `pp_instance_id` is
//! `{{ v1.instance_id }}`, which cloud-init fills in from its instance data
//! before reading the YAML. Everything else is escaped (`userdata/jinja.rs`),
//! so nothing in the user's extra cloud-config can change what the operator's
//! part renders to. (An instance whose cloud-init lacks jinja leaves the
//! expression unrendered; its CSR then fails verification and is never signed.)
//!
//! The YAML is written by a small emitter (`userdata/yaml.rs`) whose output
//! PyYAML, cloud-init's YAML 1.1 parser, reads exactly as written. Rendering is
//! deterministic: the operator's `puppet` key first, then the user's keys in
//! order. No I/O here; `tests/integration/userdata_cloud_init.rs` checks the
//! output with the real `cloud-init devel render` and `cloud-init schema`.

mod jinja;
mod yaml;

use puppet_conductor_api::master::{MAX_WAIT_FOR_CERT, MIN_WAIT_FOR_CERT};
use std::collections::BTreeMap;

use yaml::Node;

/// EC2's limit on raw (before base64) user data, in bytes.
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;

/// OID of the PKCS#9 `challengePassword` CSR attribute.
pub const OID_CHALLENGE_PASSWORD: &str = "1.2.840.113549.1.9.7";

/// Top-level cloud-config keys the user's extra cloud-config may not set.
pub const RESERVED_KEYS: [&str; 1] = ["puppet"];

/// First line of the user data: cloud-init renders the rest with jinja.
pub const JINJA_HEADER: &str = "## template: jinja";

/// First line of the rendered user data.
pub const CLOUD_CONFIG_HEADER: &str = "#cloud-config";

/// The jinja expression for the instance id (cloud-init's instance data `v1.instance_id`).
pub const INSTANCE_ID_EXPR: &str = "{{ v1.instance_id }}";

/// What cloud-init renders an undefined jinja variable as.
const MISSING_JINJA_VAR: &str = "CI_MISSING_JINJA_VAR/";

/// Where [`INSTANCE_ID_EXPR`] goes: a `\u{1}` is never written raw by the YAML
/// emitter (it escapes every control character), so this cannot come from
/// any input.
const INSTANCE_ID_SLOT: &str = "\u{1}instance_id\u{1}";

/// Everything the user data depends on.
#[derive(Debug, Clone, Copy)]
pub struct UserDataInput<'a> {
    /// Puppet server host agents connect to.
    pub server: &'a str,
    /// Its port.
    pub port: i32,
    /// The node's certname (see [`crate::identity::certname`]).
    pub certname: &'a str,
    /// Puppet environment.
    pub environment: &'a str,
    /// The Puppet CA certificate (PEM) the agent trusts.
    pub ca_cert_pem: &'a str,
    /// This incarnation's challenge (see [`crate::identity::ChallengeKey::challenge`]).
    pub challenge: &'a str,
    /// The user's extra cloud-config, merged at the top level.
    pub extra: &'a BTreeMap<String, serde_json::Value>,
    /// The agent's `waitforcert`: how often (seconds) a booting agent asks whether its
    /// certificate is signed (the master's `signing.waitForCert`).
    pub wait_for_cert_seconds: u64,
}

/// Why user data could not be rendered or read back.
#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    /// The user's extra cloud-config sets a key the operator generates.
    #[error(
        "the extra cloud-config may not set the top-level key `{key}`: the operator generates it"
    )]
    ReservedKey {
        /// The key.
        key: String,
    },

    /// The user data is over EC2's limit.
    #[error(
        "user data is {size} bytes, over EC2's limit of {limit} bytes; shrink the extra cloud-config"
    )]
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit, [`MAX_USER_DATA_BYTES`].
        limit: usize,
    },

    /// An input the operator derived or took from a PuppetMaster is unusable.
    #[error("invalid {field} for the user data: {reason}")]
    InvalidInput {
        /// Which input.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// Rendered cloud-config that is not YAML.
    #[error("rendered cloud-config is not valid YAML")]
    Parse(#[source] serde_yaml::Error),

    /// Rendered cloud-config without the CSR attributes.
    #[error("rendered cloud-config has no string at {path}")]
    Missing {
        /// Where it was looked for.
        path: &'static str,
    },

    /// The jinja template was not rendered with the instance's data.
    #[error(
        "pp_instance_id is {value:?}: render the user data with cloud-init and the instance's instance data first"
    )]
    NotRendered {
        /// What `pp_instance_id` holds.
        value: String,
    },
}

impl UserDataError {
    /// Short label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::ReservedKey { .. } => "reserved_key",
            Self::TooLarge { .. } => "too_large",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Parse(_) | Self::Missing { .. } | Self::NotRendered { .. } => "invalid_rendered",
        }
    }
}

/// The user data for one incarnation: `## template: jinja`, `#cloud-config`,
/// then the YAML, at most [`MAX_USER_DATA_BYTES`].
///
/// The `puppet` module installs the agent (`install: true`), writes
/// `puppet.conf`'s `[agent]` section (server, `masterport` — the name Puppet
/// 5–7 all know; `serverport` is only its Puppet 7 alias —, certname,
/// environment, `http_keepalive_timeout = 0` against the TLS 1.3 keep-alive
/// stall, `waitforcert` from the master), the CA certificate, and `csr_attributes.yaml`
/// with the challenge as `challengePassword` and `pp_instance_id` from
/// cloud-init's instance data; then it enables and starts the agent service
/// (`start_service: true`), which submits the CSR and waits for it to be
/// signed. `exec` stays off: a one-shot `puppet agent --test` would block boot
/// and fail the module on its non-zero exit codes while the CSR waits.
pub fn render(input: &UserDataInput<'_>) -> Result<String, UserDataError> {
    validate(input)?;
    if let Some(key) = input
        .extra
        .keys()
        .find(|key| RESERVED_KEYS.contains(&key.as_str()))
    {
        return Err(UserDataError::ReservedKey { key: key.clone() });
    }
    let mut entries = vec![("puppet".to_owned(), puppet(input))];
    entries.extend(
        input
            .extra
            .iter()
            .map(|(key, value)| (key.clone(), Node::from(value))),
    );
    let body =
        jinja::escape(&yaml::document(&entries)).replacen(INSTANCE_ID_SLOT, INSTANCE_ID_EXPR, 1);
    let user_data = format!("{JINJA_HEADER}\n{CLOUD_CONFIG_HEADER}\n{body}");
    if user_data.len() > MAX_USER_DATA_BYTES {
        return Err(UserDataError::TooLarge {
            size: user_data.len(),
            limit: MAX_USER_DATA_BYTES,
        });
    }
    Ok(user_data)
}

/// The operator's `puppet` key.
fn puppet(input: &UserDataInput<'_>) -> Node {
    let map = |entries: Vec<(&str, Node)>| {
        Node::Map(
            entries
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .collect(),
        )
    };
    let agent = map(vec![
        ("server", Node::str(input.server)),
        ("masterport", Node::int(i64::from(input.port))),
        ("certname", Node::str(input.certname)),
        ("environment", Node::str(input.environment)),
        ("http_keepalive_timeout", Node::int(0)),
        (
            "waitforcert",
            Node::int(i64::try_from(input.wait_for_cert_seconds).unwrap_or(i64::MAX)),
        ),
    ]);
    map(vec![
        ("install", Node::Bool(true)),
        ("exec", Node::Bool(false)),
        ("start_service", Node::Bool(true)),
        (
            "conf",
            map(vec![
                ("agent", agent),
                (
                    "ca_cert",
                    Node::String(input.ca_cert_pem.replace("\r\n", "\n")),
                ),
            ]),
        ),
        (
            "csr_attributes",
            map(vec![
                (
                    "custom_attributes",
                    map(vec![(OID_CHALLENGE_PASSWORD, Node::str(input.challenge))]),
                ),
                (
                    "extension_requests",
                    map(vec![(
                        "pp_instance_id",
                        Node::Raw(format!("\"{INSTANCE_ID_SLOT}\"")),
                    )]),
                ),
            ]),
        ),
    ])
}

/// Refuse inputs that would make a broken or ambiguous `puppet.conf` or CSR.
fn validate(input: &UserDataInput<'_>) -> Result<(), UserDataError> {
    let invalid = |field, reason: &str| {
        Err(UserDataError::InvalidInput {
            field,
            reason: reason.to_owned(),
        })
    };
    let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !printable(input.server) {
        return invalid("server", "must be non-empty printable ASCII without spaces");
    }
    if !(1..=65535).contains(&input.port) {
        return invalid("port", "must be between 1 and 65535");
    }
    // 0 would make the agent exit instead of waiting for the operator to sign.
    let bounds = MIN_WAIT_FOR_CERT.as_secs()..=MAX_WAIT_FOR_CERT.as_secs();
    if !bounds.contains(&input.wait_for_cert_seconds) {
        return invalid("waitforcert", "must be between 1 s and 24 h");
    }
    if let Err(e) = crate::certname::validate_certname(input.certname) {
        return Err(UserDataError::InvalidInput {
            field: "certname",
            reason: e.to_string(),
        });
    }
    if input.environment.is_empty()
        || !input
            .environment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return invalid(
            "environment",
            "must be non-empty lower-case letters, digits and '_'",
        );
    }
    if !printable(input.challenge) {
        return invalid(
            "challenge",
            "must be non-empty printable ASCII without spaces",
        );
    }
    if !input.ca_cert_pem.contains("-----BEGIN CERTIFICATE-----") {
        return invalid("CA certificate", "not a PEM certificate");
    }
    Ok(())
}

/// The challenge and `pp_instance_id` a rendered cloud-config (the output of
/// `cloud-init devel render`, i.e. after jinja) puts into the agent's
/// `csr_attributes.yaml`: what a real instance's agent would send in its CSR.
///
/// Returns `(challenge, pp_instance_id)`.
pub fn rendered_csr_attributes(
    rendered_cloud_config_yaml: &str,
) -> Result<(String, String), UserDataError> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(rendered_cloud_config_yaml).map_err(UserDataError::Parse)?;
    let csr = &doc["puppet"]["csr_attributes"];
    let challenge = csr["custom_attributes"][OID_CHALLENGE_PASSWORD]
        .as_str()
        .ok_or(UserDataError::Missing {
            path: "puppet.csr_attributes.custom_attributes.\"1.2.840.113549.1.9.7\"",
        })?;
    let instance_id =
        csr["extension_requests"]["pp_instance_id"]
            .as_str()
            .ok_or(UserDataError::Missing {
                path: "puppet.csr_attributes.extension_requests.pp_instance_id",
            })?;
    if instance_id.is_empty()
        || instance_id.contains("{{")
        || instance_id.starts_with(MISSING_JINJA_VAR)
    {
        return Err(UserDataError::NotRendered {
            value: instance_id.to_owned(),
        });
    }
    Ok((challenge.to_owned(), instance_id.to_owned()))
}

#[cfg(test)]
mod tests;
