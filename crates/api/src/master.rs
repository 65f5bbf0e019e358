//! `PuppetMaster`: one Puppet infrastructure (CA, cloud account, records bucket).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretRef;

/// One Puppet infrastructure: the server agents connect to, its CA API, the cloud account
/// instances are launched in, and the S3 bucket holding node records.
// clippy reads the repeated `type_` keys of separate printcolumns as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "puppet-conductor.dev",
    version = "v1alpha1",
    kind = "PuppetMaster",
    namespaced,
    status = "PuppetMasterStatus",
    shortname = "pm",
    category = "puppet",
    cel,
    doc = "A Puppet infrastructure that PuppetNodes are launched for.",
    printcolumn(name = "Server", type_ = "string", json_path = ".spec.server"),
    printcolumn(
        name = "Provider",
        type_ = "string",
        json_path = ".spec.cloud.provider"
    ),
    printcolumn(name = "Signing", type_ = "string", json_path = ".spec.signing.mode"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PuppetMasterSpec {
    /// Host name or address of the Puppet server that agents connect to.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$")
    )]
    pub server: String,

    /// Port of the Puppet server that agents connect to.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The Puppet Server CA HTTP API the operator signs and revokes through.
    pub ca: CaSpec,

    /// The EC2-compatible cloud that instances are launched in.
    pub cloud: CloudSpec,

    /// The S3-compatible bucket that holds one classification record per certname.
    pub records: RecordsSpec,

    /// How certificate signing requests of managed nodes are approved.
    #[serde(default)]
    pub signing: SigningSpec,

    /// Instance settings applied to every node of this master unless the node overrides them.
    #[serde(default)]
    pub node_defaults: NodeDefaults,

    /// What to do with tagged instances, certificates and records that no PuppetNode owns.
    #[serde(default)]
    pub orphans: OrphanSpec,
}

fn default_port() -> i32 {
    8140
}

/// Where the Puppet CA API is and how the operator authenticates to it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaSpec {
    /// Base URL of the CA API, e.g. `https://puppet.example.com:8140` (HTTPS only).
    #[schemars(
        length(min = 9, max = 2048),
        regex(pattern = r"^https://[^\s/?#]+(/[^\s?#]*)?$")
    )]
    pub url: String,

    /// Secret holding the operator's client certificate (`tls.crt`, `tls.key`) and the CA
    /// certificate it trusts (`ca.crt`). The certificate must be allowed by the CA's auth.conf
    /// to use the certificate_status endpoints.
    pub client_secret_ref: SecretRef,
}

/// Kind of EC2-compatible cloud.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CloudProvider {
    /// Amazon EC2.
    #[default]
    Ec2,
    /// Eucalyptus or another EC2-compatible private cloud (requires `endpoint`).
    Eucalyptus,
}

/// The cloud account instances are launched in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provider != 'eucalyptus' || has(self.endpoint)").message("cloud.endpoint is required for provider eucalyptus"))]
pub struct CloudSpec {
    /// Kind of cloud: `ec2` or `eucalyptus`.
    #[serde(default)]
    pub provider: CloudProvider,

    /// Region name (private clouds may use any name, e.g. `eucalyptus`).
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: String,

    /// EC2 API endpoint URL; required for private clouds, optional for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub endpoint: Option<String>,

    /// Secret with `accessKeyId` and `secretAccessKey` (and optionally `sessionToken`); the
    /// default credential chain (IRSA, instance profile, environment) is used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

/// The bucket holding node records.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordsSpec {
    /// Bucket name.
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,

    /// Key prefix under which records are stored, e.g. `nodes/`.
    #[serde(default = "default_prefix")]
    #[schemars(length(max = 512), regex(pattern = r"^([A-Za-z0-9!_.*'()-]+/)*$"))]
    pub prefix: String,

    /// S3 API endpoint URL for S3-compatible stores (Walrus, MinIO, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub endpoint: Option<String>,

    /// Address buckets by path (`endpoint/bucket/key`) instead of by virtual host.
    #[serde(default)]
    pub force_path_style: bool,

    /// Region of the bucket; defaults to the cloud region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: Option<String>,

    /// Secret with `accessKeyId` and `secretAccessKey`; defaults to the cloud credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

fn default_prefix() -> String {
    "nodes/".to_string()
}

/// Who approves certificate signing requests.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SigningMode {
    /// The controller polls the CA and signs CSRs it has verified.
    #[default]
    Operator,
    /// The `puppet-conductor autosign` executable decides when the CSR is submitted; the
    /// controller still revokes.
    Policy,
}

/// Certificate signing settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SigningSpec {
    /// `Operator` (the controller signs verified CSRs) or `Policy` (the autosign executable
    /// decides at submission).
    #[serde(default)]
    pub mode: SigningMode,

    /// How often the master's CA is listed while one of its nodes waits on it (default
    /// `1s`, at least `1s`): one listing per master per interval, shared by all its nodes;
    /// a node is reconciled when the listing shows its CSR arrive or change, so a CSR is
    /// signed (`Operator` mode) or its signature recorded (`Policy` mode) within about
    /// one interval. Nothing is listed while no node waits.
    #[serde(default = "default_poll_interval")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("signing.pollInterval must be at least 1s"))]
    pub poll_interval: Duration,

    /// How often a booting agent asks whether its certificate is signed (its
    /// `waitforcert`, written into the user data; whole seconds, at least `1s`). Each
    /// waiting agent makes one certificate GET per interval, so 1,000 booting agents make
    /// 1,000 / interval GETs per second; an agent fetches its certificate on average half
    /// an interval after it was signed. See docs/benchmarks.md for the measured cost.
    #[serde(default = "default_wait_for_cert")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('24h')").message("signing.waitForCert must be between 1s and 24h"))]
    pub wait_for_cert: Duration,

    /// Sign CSRs that ask for DNS alt names. Off by default: an agent certificate with alt
    /// names can impersonate other hosts.
    #[serde(default)]
    pub allow_dns_alt_names: bool,

    /// Secret whose `key` entry is the HMAC key for per-incarnation challenges; the operator
    /// creates `<master>-challenge-key` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge_key_secret_ref: Option<SecretRef>,
}

impl Default for SigningSpec {
    fn default() -> Self {
        Self {
            mode: SigningMode::default(),
            poll_interval: default_poll_interval(),
            wait_for_cert: default_wait_for_cert(),
            allow_dns_alt_names: false,
            challenge_key_secret_ref: None,
        }
    }
}

/// The CA watch's interval unless the master says otherwise (see `poll_interval`).
pub const DEFAULT_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The shortest `signing.pollInterval` (the schema's CEL rule says the same).
pub const MIN_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The shortest `signing.waitForCert` (the schema's CEL rule says the same): 0 would
/// make the agent exit instead of waiting for its certificate.
pub const MIN_WAIT_FOR_CERT: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest `signing.waitForCert` (the schema's CEL rule says the same).
pub const MAX_WAIT_FOR_CERT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The agents' `waitforcert` unless the master says otherwise (see `wait_for_cert`).
pub const DEFAULT_WAIT_FOR_CERT: std::time::Duration = std::time::Duration::from_secs(10);

fn default_wait_for_cert() -> Duration {
    DEFAULT_WAIT_FOR_CERT.into()
}

fn default_poll_interval() -> Duration {
    DEFAULT_POLL_INTERVAL.into()
}

/// Instance settings shared by the nodes of a master.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeDefaults {
    /// Puppet environment of nodes that do not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9_]+$"))]
    pub environment: Option<String>,

    /// Machine image (`ami-…` on EC2, `emi-…` on Eucalyptus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[ae]mi-[0-9a-f]{8,17}$"))]
    pub image_id: Option<String>,

    /// Instance type, e.g. `t3.small` or `m1.small`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[a-z0-9-]+\.[a-z0-9-]+$")
    )]
    pub instance_type: Option<String>,

    /// Subnet to launch in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^subnet-[0-9a-f]{8,17}$"))]
    pub subnet_id: Option<String>,

    /// Security groups of launched instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = r"^sg-[0-9a-f]{8,17}$")))]
    pub security_group_ids: Vec<String>,

    /// Name or ARN of the IAM instance profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub iam_instance_profile: Option<String>,

    /// EC2 key pair name for SSH access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub key_name: Option<String>,

    /// Extra tags on every instance (the operator's own `puppet-conductor.dev/*` tags win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 40))]
    pub tags: BTreeMap<String, String>,
}

/// What the orphan sweep does with things no PuppetNode owns.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OrphanAction {
    /// Only report orphans in events and metrics.
    #[default]
    Ignore,
    /// Terminate orphaned instances, revoke orphaned certificates, delete orphaned records.
    /// Instances and records are only touched when their tags or owner name this operator
    /// installation; a certificate counts as orphaned when its certname has the generated
    /// `<uid>-<incarnation>` form and no PuppetNode owns it, so use `Cleanup` only when the
    /// CA serves this installation alone.
    Cleanup,
}

/// Orphan handling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrphanSpec {
    /// `Ignore` (report only) or `Cleanup` (terminate, revoke, delete).
    #[serde(default)]
    pub action: OrphanAction,

    /// Minimum age before something without an owner counts as orphaned (e.g. `1h`), so a
    /// node that is being created is never mistaken for an orphan.
    #[serde(default = "default_min_age")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub min_age: Duration,
}

impl Default for OrphanSpec {
    fn default() -> Self {
        Self {
            action: OrphanAction::default(),
            min_age: default_min_age(),
        }
    }
}

fn default_min_age() -> Duration {
    std::time::Duration::from_secs(3600).into()
}

/// Observed state of a PuppetMaster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PuppetMasterStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `CAReachable`, `CloudReachable`, `RecordsReachable`, `RecordsPrivate` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// SHA-256 fingerprint of the CA certificate the operator trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,

    /// Number of this master's nodes in each phase.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, i32>,
}
