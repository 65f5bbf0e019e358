//! The invariants, checked from outside the operator: moto's EC2 and S3 and the CA read
//! directly (never through the fault proxies), against what the driver did (the
//! ledger). Polled during the run and once more at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use puppet_conductor::ca::{CertState, HttpCa, PuppetCa};
use puppet_conductor::cloud::tags;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::apiserver::MemoryApi;

pub const REGION: &str = "us-east-1";

/// One instance as moto shows it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub id: String,
    pub uid: String,
    pub certname: String,
    pub incarnation: String,
    pub state: String,
}

impl Seen {
    pub fn live(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
    }
}

/// Clients of moto and the CA that bypass the proxies.
pub struct Outside {
    pub ec2: aws_sdk_ec2::Client,
    pub s3: aws_sdk_s3::Client,
    pub ca: HttpCa,
    agents: reqwest::Client,
    ca_url: String,
    pub bucket: String,
    pub prefix: String,
    pub master_key: String,
    /// Every certname of the trial starts with it (the trial's UIDs do).
    pub uid_prefix: String,
}

/// sha256 hex of a public key (SubjectPublicKeyInfo DER).
pub fn key_hash(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// The node UID a generated certname (`<uid>-<incarnation>`) is for.
pub fn uid_of(certname: &str) -> &str {
    certname.rsplit_once('-').map_or(certname, |(uid, _)| uid)
}

pub struct OutsideConfig<'a> {
    pub moto: &'a str,
    pub ca_url: &'a str,
    pub client_cert: &'a [u8],
    pub client_key: &'a [u8],
    pub ca_pem: &'a [u8],
}

impl Outside {
    pub fn new(
        c: &OutsideConfig<'_>,
        bucket: &str,
        prefix: &str,
        master_key: &str,
        uid_prefix: &str,
    ) -> Result<Self, String> {
        let credentials = Credentials::new("testing", "testing", None, None, "crash-trials");
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(REGION))
                .endpoint_url(c.moto)
                .credentials_provider(credentials.clone())
                .build(),
        );
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(REGION))
                .endpoint_url(c.moto)
                .force_path_style(true)
                .credentials_provider(credentials)
                .build(),
        );
        let ca = HttpCa::from_pem(
            c.ca_url,
            c.client_cert,
            c.client_key,
            c.ca_pem,
            Duration::from_secs(20),
        )
        .map_err(|e| format!("CA client: {e:?}"))?;
        let agents = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(c.ca_pem).map_err(|e| e.to_string())?,
            )
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            ec2,
            s3,
            ca,
            agents,
            ca_url: c.ca_url.trim_end_matches('/').to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            master_key: master_key.to_string(),
            uid_prefix: uid_prefix.to_string(),
        })
    }

    /// Creates the records bucket (shared by all trials; each has its own prefix).
    pub async fn ensure_bucket(&self) -> Result<(), String> {
        match self.s3.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let code = e.as_service_error().and_then(|s| {
                    use aws_sdk_s3::error::ProvideErrorMetadata;
                    s.code().map(str::to_string)
                });
                match code.as_deref() {
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists") => Ok(()),
                    _ => Err(format!("creating bucket {}: {e:?}", self.bucket)),
                }
            }
        }
    }

    /// Every instance (any state) tagged for the trial's master.
    pub async fn instances(&self) -> Result<Vec<Seen>, String> {
        let filter = aws_sdk_ec2::types::Filter::builder()
            .name(format!("tag:{}", tags::MASTER))
            .values(&self.master_key)
            .build();
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(filter)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| format!("DescribeInstances: {e:?}"))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let tag = |key: &str| {
                    instance
                        .tags()
                        .iter()
                        .find(|t| t.key() == Some(key))
                        .and_then(|t| t.value())
                        .unwrap_or_default()
                        .to_string()
                };
                out.push(Seen {
                    id: instance.instance_id().unwrap_or_default().to_string(),
                    uid: tag(tags::NODE_UID),
                    certname: tag(tags::CERTNAME),
                    incarnation: tag(tags::INCARNATION),
                    state: instance
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }

    /// The user data EC2 keeps for the instance.
    pub async fn user_data(&self, instance_id: &str) -> Result<String, String> {
        let attr = self
            .ec2
            .describe_instance_attribute()
            .instance_id(instance_id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .map_err(|e| format!("DescribeInstanceAttribute: {e:?}"))?;
        let b64 = attr
            .user_data()
            .and_then(|u| u.value())
            .ok_or("no user data")?;
        let bytes = aws_smithy_types::base64::decode(b64).map_err(|e| e.to_string())?;
        String::from_utf8(bytes).map_err(|e| e.to_string())
    }

    /// Keys under the trial's prefix.
    pub async fn objects(&self) -> Result<Vec<String>, String> {
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| format!("ListObjectsV2: {e:?}"))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        Ok(keys)
    }

    /// The trial's certnames the CA lists in `state`.
    pub async fn ca_names(&self, state: CertState) -> Result<Vec<(String, String)>, String> {
        let listed = self
            .ca
            .list(Some(state))
            .await
            .map_err(|e| format!("CA listing ({state:?}): {e}"))?;
        Ok(listed
            .into_iter()
            .filter(|c| c.name.starts_with(&self.uid_prefix))
            .map(|c| (c.name, c.fingerprint.unwrap_or_default()))
            .collect())
    }

    /// The key hash of the certificate the CA serves for `certname`, if any.
    pub async fn certificate_key(&self, certname: &str) -> Result<Option<String>, String> {
        let Some(pem) = self
            .ca
            .certificate_pem(certname)
            .await
            .map_err(|e| format!("certificate of {certname}: {e}"))?
        else {
            return Ok(None);
        };
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| format!("certificate of {certname}: {e}"))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| format!("certificate of {certname}: {e}"))?;
        Ok(Some(key_hash(cert.tbs_certificate.subject_pki.raw)))
    }

    /// Submits a CSR as an agent does (no client certificate); the HTTP status.
    pub async fn submit_csr(&self, certname: &str, pem: &str) -> Result<u16, String> {
        let response = self
            .agents
            .put(format!(
                "{}/puppet-ca/v1/certificate_request/{certname}",
                self.ca_url
            ))
            .header("content-type", "text/plain")
            .body(pem.to_string())
            .send()
            .await
            .map_err(|e| format!("submitting the CSR of {certname}: {e}"))?;
        Ok(response.status().as_u16())
    }
}

/// What the driver did and what the polls saw.
#[derive(Default)]
pub struct Ledger {
    /// Node name → UID, for every node the driver created.
    pub uids: BTreeMap<String, String>,
    /// Node name → when the driver asked for its deletion.
    pub deleted: BTreeMap<String, Instant>,
    /// UIDs of nodes gone from the API (their finalizer released).
    pub released: BTreeSet<String>,
    /// Public keys the driver's agents submitted, by certname.
    pub submitted: BTreeMap<String, BTreeSet<String>>,
    /// When the last submission for a certname was accepted by the CA.
    pub submitted_at: BTreeMap<String, Instant>,
    /// Every instance seen, by id (latest state).
    pub instances: BTreeMap<String, Seen>,
    /// Fingerprints of the certificates seen signed, by certname.
    pub signed: BTreeMap<String, BTreeSet<String>>,
    /// (certname, fingerprint) whose key was checked.
    checked: BTreeSet<(String, String)>,
    pub violations: Vec<String>,
    reported: BTreeSet<String>,
    pub polls: usize,
    pub poll_errors: usize,
    /// Most live instances of one UID at once (1 when all is well).
    pub max_live_per_uid: usize,
}

impl Ledger {
    /// Records a violation once per `key`.
    pub fn violation(&mut self, key: String, text: String) {
        if self.reported.insert(key) {
            self.violations.push(text);
        }
    }

    /// The node (name) a UID belongs to.
    pub fn node_of(&self, uid: &str) -> Option<&str> {
        self.uids
            .iter()
            .find(|(_, u)| u.as_str() == uid)
            .map(|(n, _)| n.as_str())
    }
}

/// UIDs of the nodes the driver deleted that are gone from the API now.
pub fn released_now(api: &MemoryApi, ns: &str, ledger: &Ledger) -> BTreeSet<String> {
    let present: BTreeSet<String> = api
        .list("puppetnodes", ns)
        .iter()
        .filter_map(|n| n["metadata"]["uid"].as_str().map(str::to_string))
        .collect();
    ledger
        .deleted
        .keys()
        .filter_map(|name| ledger.uids.get(name))
        .filter(|uid| !present.contains(*uid))
        .cloned()
        .collect()
}

/// Where a key under the prefix belongs: the certname of a record, check-in or signature.
fn certname_of_key(prefix: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?;
    let (_, file) = rest.split_once('/')?;
    Some(file.trim_end_matches(".json").to_string())
}

/// One poll: the API first (what is released), then the outside systems, so that
/// everything seen outside happened after the release it is held against.
pub async fn poll(outside: &Outside, api: &MemoryApi, ns: &str, ledger: &std::sync::Mutex<Ledger>) {
    let released = {
        let mut l = ledger.lock().unwrap();
        let now = released_now(api, ns, &l);
        l.released.extend(now.iter().cloned());
        let nodes = api.list("puppetnodes", ns);
        if api.list("puppetmasters", ns).is_empty() && !nodes.is_empty() {
            let names: Vec<&str> = nodes
                .iter()
                .filter_map(|n| n["metadata"]["name"].as_str())
                .collect();
            l.violation(
                "master-released".into(),
                format!("the master was released while nodes still named it: {names:?}"),
            );
        }
        l.released.clone()
    };
    let instances = outside.instances().await;
    let signed = outside.ca_names(CertState::Signed).await;
    let objects = outside.objects().await;

    let mut to_check = Vec::new();
    {
        let mut l = ledger.lock().unwrap();
        l.polls += 1;
        match instances {
            Ok(instances) => {
                let mut live: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
                for i in instances.iter().filter(|i| i.live()) {
                    live.entry(i.uid.as_str()).or_default().push(i);
                }
                let mut found = Vec::new();
                for (uid, list) in &live {
                    l.max_live_per_uid = l.max_live_per_uid.max(list.len());
                    let node = l.node_of(uid).unwrap_or("?").to_string();
                    if list.len() > 1 {
                        let ids: Vec<String> = list
                            .iter()
                            .map(|i| {
                                format!("{} (incarnation {}, {})", i.id, i.incarnation, i.state)
                            })
                            .collect();
                        found.push((
                            format!("two-live {uid} {}", ids.join(",")),
                            format!(
                                "node {node} (uid {uid}) had {} live instances at once: {}",
                                list.len(),
                                ids.join(", ")
                            ),
                        ));
                    }
                    if released.contains(*uid) {
                        let ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
                        found.push((
                            format!("released-live {uid}"),
                            format!(
                                "node {node} (uid {uid}) was released while its instance(s) {} still ran",
                                ids.join(", ")
                            ),
                        ));
                    }
                }
                for (key, text) in found {
                    l.violation(key, text);
                }
                for i in instances {
                    l.instances.insert(i.id.clone(), i);
                }
            }
            Err(_) => l.poll_errors += 1,
        }
        match signed {
            Ok(signed) => {
                let mut found = Vec::new();
                for (certname, fingerprint) in signed {
                    let uid = uid_of(&certname).to_string();
                    if released.contains(&uid) {
                        let node = l.node_of(&uid).unwrap_or("?").to_string();
                        found.push((
                            format!("released-signed {certname}"),
                            format!(
                                "node {node} was released while the CA still held a signed certificate for {certname}"
                            ),
                        ));
                    }
                    let prints = l.signed.entry(certname.clone()).or_default();
                    prints.insert(fingerprint.clone());
                    if prints.len() > 1 {
                        let all: Vec<String> = prints.iter().cloned().collect();
                        found.push((
                            format!("signed-twice {certname}"),
                            format!(
                                "the CA signed {certname} more than once (fingerprints {})",
                                all.join(", ")
                            ),
                        ));
                    }
                    if !l.checked.contains(&(certname.clone(), fingerprint.clone())) {
                        to_check.push((certname, fingerprint));
                    }
                }
                for (key, text) in found {
                    l.violation(key, text);
                }
            }
            Err(_) => l.poll_errors += 1,
        }
        match objects {
            Ok(keys) => {
                let mut found = Vec::new();
                for key in keys {
                    let Some(certname) = certname_of_key(&outside.prefix, &key) else {
                        continue;
                    };
                    let uid = uid_of(&certname).to_string();
                    if released.contains(&uid) {
                        let node = l.node_of(&uid).unwrap_or("?").to_string();
                        found.push((
                            format!("released-object {key}"),
                            format!(
                                "node {node} was released while s3://{}/{key} remained",
                                outside.bucket
                            ),
                        ));
                    }
                }
                for (key, text) in found {
                    l.violation(key, text);
                }
            }
            Err(_) => l.poll_errors += 1,
        }
    }
    // Whose key each newly signed certificate carries.
    for (certname, fingerprint) in to_check {
        match outside.certificate_key(&certname).await {
            Ok(Some(key)) => {
                let mut l = ledger.lock().unwrap();
                l.checked.insert((certname.clone(), fingerprint));
                let ours = l
                    .submitted
                    .get(&certname)
                    .is_some_and(|keys| keys.contains(&key));
                if !ours {
                    l.violation(
                        format!("foreign-key {certname} {key}"),
                        format!(
                            "the CA signed {certname} for key {key}, which no agent of the trial submitted"
                        ),
                    );
                }
            }
            // Gone again (revoked and cleaned) before it could be read.
            Ok(None) => {}
            Err(_) => ledger.lock().unwrap().poll_errors += 1,
        }
    }
}

/// What the end of a trial finds: every check that does not need the API.
pub async fn final_outside(outside: &Outside, ledger: &std::sync::Mutex<Ledger>) -> Finals {
    let mut finals = Finals::default();
    match outside.instances().await {
        Ok(instances) => {
            for i in &instances {
                if i.live() {
                    finals.problems.push(format!(
                        "instance {} (certname {}, incarnation {}) is still {} after every node was deleted",
                        i.id, i.certname, i.incarnation, i.state
                    ));
                }
                *finals
                    .launches
                    .entry((i.uid.clone(), i.incarnation.clone()))
                    .or_default() += 1;
            }
            let mut l = ledger.lock().unwrap();
            for i in instances {
                l.instances.insert(i.id.clone(), i);
            }
        }
        Err(e) => finals.problems.push(format!("final describe failed: {e}")),
    }
    match outside.ca_names(CertState::Signed).await {
        Ok(signed) => {
            for (certname, _) in signed {
                finals.problems.push(format!(
                    "the CA still holds a signed certificate for {certname} after every node was deleted"
                ));
            }
        }
        Err(e) => finals
            .problems
            .push(format!("final CA listing failed: {e}")),
    }
    match outside.ca_names(CertState::Requested).await {
        Ok(requested) => {
            let l = ledger.lock().unwrap();
            for (certname, _) in requested {
                let uid = uid_of(&certname);
                let node = l.node_of(uid).unwrap_or("?").to_string();
                let submitted = l.submitted_at.get(&certname);
                let deleted = l.deleted.get(&node);
                match (submitted, deleted) {
                    (Some(s), Some(d)) if s < d => finals.problems.push(format!(
                        "a CSR for {certname} (node {node}), submitted before the node's deletion, still waits at the CA"
                    )),
                    _ => finals.late_csrs.push(certname),
                }
            }
        }
        Err(e) => finals
            .problems
            .push(format!("final CA listing failed: {e}")),
    }
    match outside.objects().await {
        Ok(keys) => {
            for key in keys {
                finals.problems.push(format!(
                    "s3://{}/{key} remains after every node was deleted",
                    outside.bucket
                ));
            }
        }
        Err(e) => finals
            .problems
            .push(format!("final S3 listing failed: {e}")),
    }
    finals
}

/// The end state outside the API.
#[derive(Default)]
pub struct Finals {
    pub problems: Vec<String>,
    /// Instances by (node UID, incarnation).
    pub launches: BTreeMap<(String, String), usize>,
    /// CSRs still waiting that the agents sent after their node's deletion began (the
    /// operator had already dropped what waited).
    pub late_csrs: Vec<String>,
}
