//! The external services of one PuppetMaster, built from its spec and Secrets.
//!
//! Built once per master generation and Secret versions, then shared by every node of
//! that master; the reconcilers only see the service traits.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::sync::Mutex;

use super::error::ReconcileError;
use crate::api::master::PuppetMaster;
use crate::api::SecretRef;
use crate::ca::{HttpCa, PuppetCa};
use crate::cloud::{Cloud, CloudConfig, Ec2Cloud, RateLimits, StaticCredentials};
use crate::identity::ChallengeKey;
use crate::metrics::{MeteredCa, MeteredCloud, MeteredRecords, Metrics};
use crate::records::{Records, RecordsConfig, S3Records};

/// Everything a node reconcile talks to for one master.
pub struct MasterServices {
    /// EC2 or Eucalyptus.
    pub cloud: Arc<dyn Cloud>,
    /// The records bucket.
    pub records: Arc<dyn Records>,
    /// The Puppet CA API.
    pub ca: Arc<dyn PuppetCa>,
    /// PEM of the Puppet CA certificate, handed to agents in user data.
    pub ca_cert_pem: String,
    /// Key of the per-incarnation challenges.
    pub challenge_key: ChallengeKey,
}

impl MasterServices {
    /// The cloud, records and CA wrapped in their metered decorators; the CA certificate
    /// and challenge key pass through unchanged.
    pub fn metered(self, metrics: &Arc<Metrics>) -> Self {
        Self {
            cloud: Arc::new(MeteredCloud::new(self.cloud, metrics.clone())),
            records: Arc::new(MeteredRecords::new(self.records, metrics.clone())),
            ca: Arc::new(MeteredCa::new(self.ca, metrics.clone())),
            ca_cert_pem: self.ca_cert_pem,
            challenge_key: self.challenge_key,
        }
    }
}

/// Builds (and caches) the services of a master.
#[async_trait::async_trait]
pub trait ServiceFactory: Send + Sync {
    /// Services for this master, as its spec and Secrets say now.
    async fn services(&self, master: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError>;

    /// Drops what is cached for a deleted master (`namespace/name`); nothing by default.
    async fn forget(&self, _master_key: &str) {}

    /// Lets the factory see Secret versions in the watch's metadata store, so a pass whose
    /// master's Secrets did not change reads none of them; nothing by default.
    fn attach_secret_versions(&self, _store: Store<PartialObjectMeta<Secret>>) {}
}

/// Timeouts and limits applied to every master's clients.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Timeout around each cloud, records or CA call.
    pub call_timeout: Duration,
    /// Client-side EC2 rate limits.
    pub rate_limits: RateLimits,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(20),
            rate_limits: RateLimits::ec2_defaults(),
        }
    }
}

/// The production factory: reads the master's Secrets through the Kubernetes API.
pub struct KubeServiceFactory {
    client: kube::Client,
    settings: ClientSettings,
    metrics: Option<Arc<Metrics>>,
    cache: Mutex<HashMap<String, (String, Arc<MasterServices>)>>,
    /// The watch's Secret metadata, once the runner has it.
    secret_versions: OnceLock<Store<PartialObjectMeta<Secret>>>,
}

impl KubeServiceFactory {
    /// A factory reading Secrets with `client`.
    pub fn new(client: kube::Client, settings: ClientSettings) -> Self {
        Self {
            client,
            settings,
            metrics: None,
            cache: Mutex::new(HashMap::new()),
            secret_versions: OnceLock::new(),
        }
    }

    /// Counts and times every call of the services it builds.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The version of `master`'s services as the watched Secret metadata says it is
    /// (`None`: no store, or a referenced Secret is not in it, so only a read can tell).
    fn watched_version(&self, master: &PuppetMaster, ns: &str) -> Option<String> {
        let store = self.secret_versions.get()?;
        let rv = |name: &str| {
            store
                .get(&ObjectRef::new(name).within(ns))
                .and_then(|m| m.resource_version())
        };
        let spec = &master.spec;
        let optional = |r: &Option<SecretRef>| match r {
            Some(r) => rv(&r.name),
            None => Some(String::new()),
        };
        let key_secret = spec.signing.challenge_key_secret_ref.as_ref().map_or_else(
            || default_challenge_secret_name(&master.name_any()),
            |r| r.name.clone(),
        );
        Some(services_version(
            master,
            &rv(&spec.ca.client_secret_ref.name)?,
            &optional(&spec.cloud.credentials_secret_ref)?,
            &optional(&spec.records.credentials_secret_ref)?,
            &rv(&key_secret)?,
        ))
    }
}

/// What the cached services of a master were built from: the master's UID and generation
/// and its Secrets' resourceVersions (empty for one it does not reference).
fn services_version(
    master: &PuppetMaster,
    tls: &str,
    cloud: &str,
    records: &str,
    key: &str,
) -> String {
    format!(
        "{}/{}/{tls}/{cloud}/{records}/{key}",
        master.uid().unwrap_or_default(),
        master.meta().generation.unwrap_or_default(),
    )
}

fn secret_key(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
}

fn required(secret: &Secret, key: &str) -> Result<Vec<u8>, ReconcileError> {
    secret_key(secret, key).ok_or_else(|| ReconcileError::Secret {
        name: secret.name_any(),
        problem: format!("key `{key}` is missing"),
    })
}

fn utf8(name: &str, key: &str, bytes: Vec<u8>) -> Result<String, ReconcileError> {
    String::from_utf8(bytes).map_err(|_| ReconcileError::Secret {
        name: name.to_string(),
        problem: format!("key `{key}` is not UTF-8"),
    })
}

async fn get_secret(api: &Api<Secret>, name: &str) -> Result<Secret, ReconcileError> {
    match api.get_opt(name).await.map_err(ReconcileError::Kube)? {
        Some(s) => Ok(s),
        None => Err(ReconcileError::Secret {
            name: name.to_string(),
            problem: "not found".to_string(),
        }),
    }
}

async fn credentials(
    api: &Api<Secret>,
    name: &str,
) -> Result<(StaticCredentials, String), ReconcileError> {
    let s = get_secret(api, name).await?;
    let creds = StaticCredentials {
        access_key_id: utf8(name, "accessKeyId", required(&s, "accessKeyId")?)?,
        secret_access_key: utf8(name, "secretAccessKey", required(&s, "secretAccessKey")?)?,
        session_token: secret_key(&s, "sessionToken")
            .map(|b| utf8(name, "sessionToken", b))
            .transpose()?,
    };
    Ok((creds, s.resource_version().unwrap_or_default()))
}

/// Name of the Secret holding the master's challenge key when the spec names none.
pub fn default_challenge_secret_name(master: &str) -> String {
    format!("{master}-challenge-key")
}

/// Reads the challenge key, creating a random one (owned by the master) when absent.
async fn challenge_key(
    api: &Api<Secret>,
    master: &PuppetMaster,
) -> Result<(ChallengeKey, String), ReconcileError> {
    let named = master
        .spec
        .signing
        .challenge_key_secret_ref
        .as_ref()
        .map(|r| r.name.clone());
    let name = named
        .clone()
        .unwrap_or_else(|| default_challenge_secret_name(&master.name_any()));
    if let Some(s) = api.get_opt(&name).await.map_err(ReconcileError::Kube)? {
        let key = required(&s, "key")?;
        let key = ChallengeKey::from_bytes(&key).map_err(|e| ReconcileError::Secret {
            name: name.clone(),
            problem: e.to_string(),
        })?;
        return Ok((key, s.resource_version().unwrap_or_default()));
    }
    if named.is_some() {
        return Err(ReconcileError::Secret {
            name,
            problem: "not found".to_string(),
        });
    }
    let key = ChallengeKey::generate();
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.clone());
    secret.metadata.namespace = master.namespace();
    secret.metadata.owner_references = master
        .controller_owner_ref(&())
        .map(|o: OwnerReference| vec![o]);
    secret.data = Some([("key".to_string(), ByteString(key.as_bytes().to_vec()))].into());
    match api
        .create(
            &PostParams {
                field_manager: Some(super::FIELD_MANAGER.into()),
                ..Default::default()
            },
            &secret,
        )
        .await
    {
        Ok(s) => Ok((key, s.resource_version().unwrap_or_default())),
        // Another replica or pass created it first: use theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let s = get_secret(api, &name).await?;
            let key = ChallengeKey::from_bytes(&required(&s, "key")?).map_err(|e| {
                ReconcileError::Secret {
                    name: name.clone(),
                    problem: e.to_string(),
                }
            })?;
            Ok((key, s.resource_version().unwrap_or_default()))
        }
        Err(e) => Err(ReconcileError::Kube(e)),
    }
}

#[async_trait::async_trait]
impl ServiceFactory for KubeServiceFactory {
    async fn forget(&self, master_key: &str) {
        self.cache.lock().await.remove(master_key);
    }

    fn attach_secret_versions(&self, store: Store<PartialObjectMeta<Secret>>) {
        let _ = self.secret_versions.set(store);
    }

    async fn services(&self, master: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
        let ns = master
            .namespace()
            .ok_or(ReconcileError::MissingMetadata("namespace"))?;
        let cache_key = format!("{ns}/{}", master.name_any());
        // The watch shows the same Secret versions the services were built from: nothing
        // to read. (A version the watch has not caught up with yet is read next pass.)
        if let Some(version) = self.watched_version(master, &ns) {
            if let Some((v, services)) = self.cache.lock().await.get(&cache_key) {
                if *v == version {
                    return Ok(services.clone());
                }
            }
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let spec = &master.spec;

        let tls_name = &spec.ca.client_secret_ref.name;
        let tls = get_secret(&secrets, tls_name).await?;
        let (cloud_creds, cloud_rv) = match &spec.cloud.credentials_secret_ref {
            Some(r) => {
                let (c, rv) = credentials(&secrets, &r.name).await?;
                (Some(c), rv)
            }
            None => (None, String::new()),
        };
        let (records_creds, records_rv) = match &spec.records.credentials_secret_ref {
            Some(r) => {
                let (c, rv) = credentials(&secrets, &r.name).await?;
                (Some(c), rv)
            }
            None => (cloud_creds.clone(), String::new()),
        };
        let (key, key_rv) = challenge_key(&secrets, master).await?;

        // Rebuild clients only when the master or one of its Secrets changed.
        let version = services_version(
            master,
            &tls.resource_version().unwrap_or_default(),
            &cloud_rv,
            &records_rv,
            &key_rv,
        );
        let mut cache = self.cache.lock().await;
        if let Some((v, services)) = cache.get(&cache_key) {
            if *v == version {
                return Ok(services.clone());
            }
        }

        let cert = required(&tls, "tls.crt")?;
        let key_pem = required(&tls, "tls.key")?;
        let ca_pem = required(&tls, "ca.crt")?;
        let ca_cert_pem = utf8(tls_name, "ca.crt", ca_pem.clone())?;
        let ca = HttpCa::from_pem(
            &spec.ca.url,
            &cert,
            &key_pem,
            &ca_pem,
            self.settings.call_timeout,
        )?;
        let cloud = Ec2Cloud::new(&CloudConfig {
            region: spec.cloud.region.clone(),
            endpoint: spec.cloud.endpoint.clone(),
            credentials: cloud_creds,
            call_timeout: self.settings.call_timeout,
            rate_limits: self.settings.rate_limits,
        })
        .await;
        let records = S3Records::new(&RecordsConfig {
            bucket: spec.records.bucket.clone(),
            prefix: spec.records.prefix.clone(),
            region: spec
                .records
                .region
                .clone()
                .unwrap_or_else(|| spec.cloud.region.clone()),
            endpoint: spec.records.endpoint.clone(),
            force_path_style: spec.records.force_path_style,
            credentials: records_creds,
            call_timeout: self.settings.call_timeout,
        })
        .await;
        let mut services = MasterServices {
            cloud: Arc::new(cloud),
            records: Arc::new(records),
            ca: Arc::new(ca),
            ca_cert_pem,
            challenge_key: key,
        };
        if let Some(metrics) = &self.metrics {
            services = services.metered(metrics);
        }
        let services = Arc::new(services);
        cache.insert(cache_key, (version, services.clone()));
        Ok(services)
    }
}
