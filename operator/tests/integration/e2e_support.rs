//! Shared setup of the end-to-end tests: the real puppetserver and moto, a master and its
//! nodes in kube-fake-client, and the reconciler's services pointing at them.

use std::sync::{Arc, RwLock};

use puppet_conductor::api::master::{CloudProvider, SigningMode};
use puppet_conductor::api::PuppetNode;
use puppet_conductor::ca::{CaError, CertState, CertificateInfo, HttpCa, PuppetCa};
use puppet_conductor::controller::services::{MasterServices, ServiceFactory};
use puppet_conductor::controller::ReconcileError;
use puppet_conductor::identity::ChallengeKey;
use tokio::sync::{MutexGuard, RwLockReadGuard};

use crate::common::services::{AgentRun, Services};
use crate::node_support::*;

pub(crate) const REGION: &str = "us-east-1";

pub(crate) struct Fixed(pub(crate) Arc<MasterServices>);

#[async_trait::async_trait]
impl ServiceFactory for Fixed {
    async fn services(
        &self,
        _m: &puppet_conductor::api::PuppetMaster,
    ) -> Result<Arc<MasterServices>, ReconcileError> {
        Ok(self.0.clone())
    }
}

/// Tests that list the shared CA take this for reading; a test that makes the listing fail
/// (a CSR with a repeated extension) takes it for writing, so no listing sees its 500.
pub(crate) static CA_LISTING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// enc.env and autosign.mode belong to the one puppetserver: one end-to-end test at a time.
pub(crate) static PUPPETSERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) fn autosign_mode(mode: &str) {
    let path = std::env::var("PC_AUTOSIGN_MODE_FILE")
        .unwrap_or_else(|_| "/tmp/puppet-conductor/autosign.mode".into());
    std::fs::write(path, mode).unwrap();
}

/// The ENC (and autosign) puppetserver runs: this binary, reading `bucket`.
pub(crate) fn write_enc_env(bucket: &str, moto: &str, region: &str) {
    let enc_env = format!(
        "PUPPET_CONDUCTOR_BIN={}\nPC_RECORDS_BUCKET={bucket}\nPC_RECORDS_ENDPOINT={moto}\nPC_RECORDS_REGION={region}\n\
         PC_RECORDS_FORCE_PATH_STYLE=true\nPC_RECORDS_ACCESS_KEY_ID=testing\nPC_RECORDS_SECRET_ACCESS_KEY=testing\n",
        env!("CARGO_BIN_EXE_puppet-conductor"),
    );
    let path =
        std::env::var("PC_ENC_ENV").unwrap_or_else(|_| "/tmp/puppet-conductor/enc.env".into());
    std::fs::write(path, enc_env).unwrap();
}

/// One end-to-end scenario's world; holds the locks that keep scenarios apart.
pub(crate) struct E2e {
    _moto_load: RwLockReadGuard<'static, ()>,
    _puppetserver: MutexGuard<'static, ()>,
    pub svc: Services,
    pub moto: MotoServices,
    /// The real CA client (the reconciler's may be wrapped).
    pub ca: Arc<dyn PuppetCa>,
    pub key: ChallengeKey,
    pub master_name: String,
    /// The records bucket of the master.
    pub bucket: String,
    pub h: Harness,
}

/// A launched node as the agent playing it needs it.
pub(crate) struct Launched {
    pub uid: String,
    pub certname: String,
    pub instance_id: String,
}

impl E2e {
    /// `None` (skipped) without the services. The master uses the default VPC; the ENC and
    /// autosign read its bucket; autosign is off. `wrap_ca` may stand between the
    /// reconciler and the real CA.
    pub async fn start(
        prefix: &str,
        mode: SigningMode,
        nodes: Vec<PuppetNode>,
        wrap_ca: impl FnOnce(Arc<dyn PuppetCa>) -> Arc<dyn PuppetCa>,
    ) -> Option<Self> {
        let moto_load = MOTO_LOAD.read().await;
        let svc = Services::from_env()?;
        let puppetserver = PUPPETSERVER.lock().await;
        autosign_mode("off");
        let bucket = unique(&format!("{prefix}-records"));
        let moto = MotoServices::new(&svc.moto_endpoint, REGION, &bucket).await;
        write_enc_env(&bucket, &svc.moto_endpoint, REGION);
        let ca: Arc<dyn PuppetCa> =
            Arc::new(svc.puppet.ca_client(std::time::Duration::from_secs(20)));
        let key = ChallengeKey::generate();
        let services = Arc::new(MasterServices {
            cloud: moto.cloud.clone(),
            records: moto.records.clone(),
            ca: wrap_ca(ca.clone()),
            ca_cert_pem: String::from_utf8(svc.puppet.ca_pem()).unwrap(),
            challenge_key: ChallengeKey::from_bytes(key.as_bytes()).unwrap(),
        });
        let master_name = unique(&format!("pm-{prefix}"));
        let mut m = master(
            &master_name,
            &svc.moto_endpoint,
            REGION,
            &bucket,
            CloudProvider::Ec2,
        );
        m.spec.server = svc.puppet.server.clone();
        m.spec.signing.mode = mode;
        m.spec.node_defaults.subnet_id = None;
        m.spec.node_defaults.security_group_ids = Vec::new();
        let nodes = nodes
            .into_iter()
            .map(|mut n| {
                n.spec.master_ref.name = master_name.clone();
                n
            })
            .collect();
        let h = Harness::new(Arc::new(Fixed(services)), (m, nodes)).await;
        Some(Self {
            _moto_load: moto_load,
            _puppetserver: puppetserver,
            svc,
            moto,
            ca,
            key,
            master_name,
            bucket,
            h,
        })
    }

    /// [`Self::start`] with a [`FlakyCa`] between the reconciler and the real CA, returned
    /// beside the world so the test can take the CA down and up.
    pub async fn start_with_flaky_ca(
        prefix: &str,
        mode: SigningMode,
        nodes: Vec<PuppetNode>,
    ) -> Option<(Self, Arc<FlakyCa>)> {
        let flaky: std::sync::OnceLock<Arc<FlakyCa>> = std::sync::OnceLock::new();
        let e = Self::start(prefix, mode, nodes, |real| {
            let ca = FlakyCa::around(real);
            let _ = flaky.set(ca.clone());
            ca
        })
        .await?;
        let ca = flaky.get()?.clone();
        Some((e, ca))
    }

    /// The challenge and `pp_instance_id` the launched instance's user data hands its
    /// agent; `None` when cloud-init cannot render it on this machine (the test stops).
    pub async fn agent_attributes(&self, launched: &Launched) -> Option<(String, String)> {
        let user_data = crate::node_lifecycle::user_data_of(
            &self.svc.moto_endpoint,
            REGION,
            &launched.instance_id,
        )
        .await;
        let rendered =
            crate::userdata_cloud_init::assert_cloud_init_valid(&user_data, &launched.instance_id)?;
        Some(puppet_conductor::userdata::rendered_csr_attributes(&rendered).unwrap())
    }

    /// Reconciles `name` until its instance runs (finalizer + launch, then observe).
    pub async fn launch(&self, name: &str) -> Launched {
        self.h.converge(name, 2).await;
        let n = self.h.get(name).await;
        let st = n.status.unwrap();
        Launched {
            uid: n.metadata.uid.unwrap(),
            certname: st.certname.unwrap(),
            instance_id: st.instance_id.unwrap(),
        }
    }
}

/// The real CA, or (while `down`) one on a closed port.
pub(crate) struct FlakyCa {
    up: Arc<dyn PuppetCa>,
    down: Arc<dyn PuppetCa>,
    is_down: RwLock<bool>,
}

impl FlakyCa {
    /// Wraps the real CA; `set_down(true)` switches to a CA on a closed port.
    pub(crate) fn around(real: Arc<dyn PuppetCa>) -> Arc<Self> {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let svc = Services::from_env().unwrap();
        let dead: Arc<dyn PuppetCa> = Arc::new(
            HttpCa::from_pem(
                &format!("https://127.0.0.1:{closed}"),
                &std::fs::read(&svc.puppet.client_cert).unwrap(),
                &std::fs::read(&svc.puppet.client_key).unwrap(),
                &svc.puppet.ca_pem(),
                std::time::Duration::from_secs(2),
            )
            .unwrap(),
        );
        Arc::new(Self {
            up: real,
            down: dead,
            is_down: RwLock::new(false),
        })
    }

    fn current(&self) -> Arc<dyn PuppetCa> {
        if *self.is_down.read().unwrap() {
            self.down.clone()
        } else {
            self.up.clone()
        }
    }
    pub(crate) fn set_down(&self, down: bool) {
        *self.is_down.write().unwrap() = down;
    }
}

#[async_trait::async_trait]
impl PuppetCa for FlakyCa {
    async fn list(&self, state: Option<CertState>) -> Result<Vec<CertificateInfo>, CaError> {
        self.current().list(state).await
    }
    async fn status(&self, certname: &str) -> Result<Option<CertificateInfo>, CaError> {
        self.current().status(certname).await
    }
    async fn csr_pem(&self, certname: &str) -> Result<Option<String>, CaError> {
        self.current().csr_pem(certname).await
    }
    async fn sign(&self, certname: &str) -> Result<(), CaError> {
        self.current().sign(certname).await
    }
    async fn revoke_and_clean(&self, certname: &str) -> Result<(), CaError> {
        self.current().revoke_and_clean(certname).await
    }
    async fn certificate_pem(&self, certname: &str) -> Result<Option<String>, CaError> {
        self.current().certificate_pem(certname).await
    }
    async fn remove_request(&self, certname: &str) -> Result<bool, CaError> {
        self.current().remove_request(certname).await
    }
    async fn ca_certificate(&self) -> Result<String, CaError> {
        self.current().ca_certificate().await
    }
    async fn crl(&self) -> Result<String, CaError> {
        self.current().crl().await
    }
}

/// The agent run that got `role::webserver` (the examples' class) applied it and the
/// profiles it includes, as the test puppet code reports them.
pub(crate) fn assert_applied_webserver(run: &AgentRun) {
    assert_eq!(run.code, 2, "catalog applied with changes:\n{}", run.output);
    for class in ["role::webserver", "profile::base", "profile::web"] {
        assert!(
            run.output
                .contains(&format!("puppet-conductor: applied {class}")),
            "{class} in:\n{}",
            run.output
        );
    }
}

/// What a released node leaves behind: its certificate revoked and cleaned, its record
/// gone and every instance of its master (`namespace/name`) terminated.
pub(crate) async fn assert_cleaned_up(
    ca: &dyn PuppetCa,
    moto: &MotoServices,
    certname: &str,
    master_key: &str,
) {
    use puppet_conductor::cloud::{Cloud, InstanceState};
    use puppet_conductor::records::Records;
    assert!(
        ca.status(certname).await.unwrap().is_none(),
        "certificate revoked and cleaned"
    );
    assert!(
        moto.records.get(certname).await.unwrap().is_none(),
        "record gone"
    );
    let instances = moto
        .cloud
        .describe_master_instances(master_key)
        .await
        .unwrap();
    assert!(
        !instances.is_empty(),
        "the launch is tagged with the master"
    );
    assert!(instances.iter().all(|i| matches!(
        i.state,
        InstanceState::Terminated | InstanceState::ShuttingDown
    )));
}

/// A revoked agent's next run fails (neither 0 nor 2: no catalog).
pub(crate) fn assert_run_refused(after: &AgentRun) {
    assert!(
        after.code != 0 && after.code != 2,
        "the revoked agent's next run fails:\n{}",
        after.output
    );
}

/// Durations (ms) of the calls for `certname` that the test puppetserver's ENC or
/// autosign wrapper logged in `log` (`enc.log`, `autosign.log` under the state dir).
pub(crate) fn wrapper_call_ms(state_dir: &std::path::Path, log: &str, certname: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(state_dir.join(log)).unwrap_or_default();
    let needle = format!("certname={certname} ");
    text.lines()
        .filter(|line| line.contains(&needle))
        .filter_map(|line| line.rsplit_once(" ms=").and_then(|(_, ms)| ms.parse().ok()))
        .collect()
}
