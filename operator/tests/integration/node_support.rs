//! Harness for reconciler-level tests: kube-fake-client for the API, moto for EC2/S3,
//! an in-memory CA that records what the certificate seam was asked to do.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action as Requeue;
use kube_fake_client::ClientBuilder;
use puppet_conductor::api::master::{
    CaSpec, CloudProvider, CloudSpec, NodeDefaults, PuppetMasterSpec, RecordsSpec,
};
use puppet_conductor::api::node::{PuppetNodeSpec, ReplacePolicy};
use puppet_conductor::api::{MasterRef, PuppetMaster, PuppetNode, SecretRef};
use puppet_conductor::ca::{CaError, CertState, CertificateInfo, PuppetCa};
use puppet_conductor::cloud::{CloudConfig, Ec2Cloud, RateLimits, StaticCredentials};
use puppet_conductor::controller::context::NodeSettings;
use puppet_conductor::controller::events::MemoryEvents;
use puppet_conductor::controller::services::{MasterServices, ServiceFactory};
use puppet_conductor::controller::{node, Context, ReconcileError};
use puppet_conductor::identity::ChallengeKey;
use puppet_conductor::records::{RecordsConfig, S3Records};

pub const NS: &str = "fleet";
pub const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

/// A CA that only remembers: what was revoked, and a listing tests can set.
#[derive(Default)]
pub struct RecordingCa {
    pub revoked: Mutex<Vec<String>>,
    pub listing: Mutex<Vec<CertificateInfo>>,
}

#[async_trait::async_trait]
impl PuppetCa for RecordingCa {
    async fn list(&self, _state: Option<CertState>) -> Result<Vec<CertificateInfo>, CaError> {
        Ok(self.listing.lock().unwrap().clone())
    }
    async fn status(&self, certname: &str) -> Result<Option<CertificateInfo>, CaError> {
        Ok(self
            .listing
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.name == certname)
            .cloned())
    }
    async fn csr_pem(&self, _certname: &str) -> Result<Option<String>, CaError> {
        Ok(None)
    }
    async fn sign(&self, _certname: &str) -> Result<(), CaError> {
        Ok(())
    }
    async fn revoke_and_clean(&self, certname: &str) -> Result<(), CaError> {
        self.revoked.lock().unwrap().push(certname.to_string());
        self.listing.lock().unwrap().retain(|c| c.name != certname);
        Ok(())
    }
    async fn certificate_pem(&self, _certname: &str) -> Result<Option<String>, CaError> {
        Ok(None)
    }
    async fn remove_request(&self, certname: &str) -> Result<bool, CaError> {
        let mut listing = self.listing.lock().unwrap();
        let before = listing.len();
        listing.retain(|c| !(c.name == certname && c.state == CertState::Requested));
        Ok(listing.len() != before)
    }
    async fn ca_certificate(&self) -> Result<String, CaError> {
        Ok(CA_PEM.to_string())
    }
    async fn crl(&self) -> Result<String, CaError> {
        Ok(String::new())
    }
}

/// Services pointing at moto, built once; counts are read from the concrete clients.
pub struct MotoServices {
    pub cloud: Arc<Ec2Cloud>,
    pub records: Arc<S3Records>,
    pub ca: Arc<RecordingCa>,
    pub services: Arc<MasterServices>,
}

#[async_trait::async_trait]
impl ServiceFactory for MotoServices {
    async fn services(
        &self,
        _master: &PuppetMaster,
    ) -> Result<Arc<MasterServices>, ReconcileError> {
        Ok(self.services.clone())
    }
}

pub fn moto_credentials() -> StaticCredentials {
    StaticCredentials {
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        session_token: None,
    }
}

/// A plain S3 client on moto (for what the operator never does itself).
pub fn s3_client(endpoint: &str, region: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub async fn create_bucket(endpoint: &str, region: &str, bucket: &str) {
    let s3 = s3_client(endpoint, region);
    let mut req = s3.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        req = req.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                .build(),
        );
    }
    req.send().await.unwrap();
}

impl MotoServices {
    pub async fn new(endpoint: &str, region: &str, bucket: &str) -> Self {
        create_bucket(endpoint, region, bucket).await;
        let mut cfg = CloudConfig::new(region);
        cfg.endpoint = Some(endpoint.to_string());
        cfg.credentials = Some(moto_credentials());
        cfg.rate_limits = RateLimits::unlimited();
        let cloud = Arc::new(Ec2Cloud::new(&cfg).await);
        let records = Arc::new(
            S3Records::new(&RecordsConfig {
                bucket: bucket.to_string(),
                prefix: "nodes/".into(),
                region: region.to_string(),
                endpoint: Some(endpoint.to_string()),
                force_path_style: true,
                credentials: Some(puppet_conductor::records::StaticCredentials {
                    access_key_id: "testing".into(),
                    secret_access_key: "testing".into(),
                    session_token: None,
                }),
                call_timeout: std::time::Duration::from_secs(20),
            })
            .await,
        );
        let ca = Arc::new(RecordingCa::default());
        let services = Arc::new(MasterServices {
            cloud: cloud.clone(),
            records: records.clone(),
            ca: ca.clone(),
            ca_cert_pem: CA_PEM.to_string(),
            challenge_key: ChallengeKey::from_bytes(&[7u8; 32]).unwrap(),
        });
        Self {
            cloud,
            records,
            ca,
            services,
        }
    }
}

pub fn unique(prefix: &str) -> String {
    crate::common::unique_certname(prefix)
}

pub fn master(
    name: &str,
    endpoint: &str,
    region: &str,
    bucket: &str,
    provider: CloudProvider,
) -> PuppetMaster {
    let mut m = PuppetMaster::new(
        name,
        PuppetMasterSpec {
            server: "puppet.example.com".into(),
            port: 8140,
            ca: CaSpec {
                url: "https://127.0.0.1:8140".into(),
                client_secret_ref: SecretRef {
                    name: "ca-client".into(),
                },
            },
            cloud: CloudSpec {
                provider,
                region: region.into(),
                endpoint: Some(endpoint.into()),
                credentials_secret_ref: Some(SecretRef {
                    name: "cloud".into(),
                }),
            },
            records: RecordsSpec {
                bucket: bucket.into(),
                prefix: "nodes/".into(),
                endpoint: Some(endpoint.into()),
                force_path_style: true,
                region: None,
                credentials_secret_ref: None,
            },
            signing: Default::default(),
            node_defaults: NodeDefaults {
                image_id: Some("ami-0123456789abcdef0".into()),
                instance_type: Some("t3.small".into()),
                subnet_id: Some("subnet-0123456789abcdef0".into()),
                security_group_ids: vec!["sg-0123456789abcdef0".into()],
                tags: [("team".to_string(), "infra".to_string())].into(),
                ..Default::default()
            },
            orphans: Default::default(),
        },
    );
    m.metadata.namespace = Some(NS.into());
    m
}

pub fn node(name: &str, master: &str, classes: &[&str]) -> PuppetNode {
    let mut n = PuppetNode::new(
        name,
        PuppetNodeSpec {
            master_ref: MasterRef {
                name: master.into(),
            },
            classes: classes.iter().map(|s| s.to_string()).collect(),
            environment: None,
            parameters: BTreeMap::new(),
            instance: Default::default(),
            certname: None,
            replace_policy: ReplacePolicy::Replace,
            deletion_policy: Default::default(),
        },
    );
    n.metadata.namespace = Some(NS.into());
    n
}

/// A fake API with the master and its nodes, and a context using `factory`.
pub struct Harness {
    pub ctx: Arc<Context>,
    pub events: Arc<MemoryEvents>,
    pub nodes: Api<PuppetNode>,
}

impl Harness {
    pub async fn new(
        factory: Arc<dyn ServiceFactory>,
        objects: (PuppetMaster, Vec<PuppetNode>),
    ) -> Self {
        let mut builder = ClientBuilder::new()
            .with_resource::<PuppetMaster>()
            .with_resource::<PuppetNode>()
            .with_object(objects.0);
        for n in objects.1 {
            builder = builder.with_object(n);
        }
        let client = builder.build().await.unwrap();
        let events = Arc::new(MemoryEvents::default());
        // Observe afresh on every pass (moto changes state at once); the scale test
        // sets a resync-length snapshot age itself.
        let settings = NodeSettings {
            operator_id: "test".into(),
            snapshot_max_age: std::time::Duration::ZERO,
            // moto's describe is never behind: a missing instance is gone at once.
            instance_visibility_grace: std::time::Duration::ZERO,
            ..Default::default()
        };
        let ctx = Arc::new(Context::new(
            client.clone(),
            factory,
            events.clone(),
            settings,
        ));
        let nodes = Api::namespaced(client.clone(), NS);
        Self { ctx, events, nodes }
    }

    pub async fn get(&self, name: &str) -> PuppetNode {
        self.nodes.get(name).await.unwrap()
    }

    /// One reconcile of the node as it is now in the API.
    pub async fn reconcile(&self, name: &str) -> Result<Requeue, ReconcileError> {
        let n = Arc::new(self.get(name).await);
        node::reconcile(n, self.ctx.clone()).await
    }

    /// Reconciles until the node stops changing (at most `n` passes); the fake API has no watch.
    pub async fn converge(&self, name: &str, n: usize) {
        for _ in 0..n {
            self.reconcile(name).await.unwrap();
        }
    }

    /// `kubectl delete` of a node that carries finalizers. kube-fake-client's DELETE
    /// removes objects at once, ignoring finalizers, so the deleted state is built the way
    /// the API server stores it (deletionTimestamp set, finalizers kept) in a fresh fake
    /// API holding the same master and node; it is removed there once the finalizers are.
    pub async fn deleted_copy(&self, name: &str) -> Harness {
        let mut n = self.get(name).await;
        n.metadata.deletion_timestamp = Some(puppet_conductor::status::conditions::time(
            chrono::Utc::now(),
        ));
        let masters: Api<PuppetMaster> = Api::namespaced(self.ctx.client.clone(), NS);
        let m = masters.get(&n.spec.master_ref.name).await.unwrap();
        let h = Harness::new(self.ctx.services.clone(), (m, vec![n])).await;
        h
    }

    pub async fn delete(&self, name: &str) {
        self.nodes
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    pub async fn exists(&self, name: &str) -> bool {
        self.nodes.get_opt(name).await.unwrap().is_some()
    }
}

/// moto serves one request at a time: the 1,000-node test takes it alone, the others share.
pub static MOTO_LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
