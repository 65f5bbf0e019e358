//! One crash trial: the in-memory API served to the real binary, the fault proxies in
//! front of moto and the CA, a batch of nodes created and deleted while faults switch and
//! the operator is SIGKILLed at seeded random points and restarted; then, faults off and
//! the last operator left running, every node and the master deleted, and the invariants
//! checked from outside.
//!
//! The seed draws every choice of the driver (actions, faults, kill points); the timing of
//! two real processes does not replay exactly, so a seed reproduces a schedule, not a trace.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use puppet_conductor::api::master::{
    CaSpec, CloudProvider, CloudSpec, NodeDefaults, PuppetMasterSpec, RecordsSpec, SigningMode,
    SigningSpec,
};
use puppet_conductor::api::SecretRef;
use puppet_conductor::controller::SECRET_FINALIZER;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::agents;
use crate::apiserver::{ApiServer, MemoryApi};
use crate::invariants::{self, key_hash, Ledger, Outside, OutsideConfig, REGION};
use crate::operator::Operator;
use crate::proxy::{Counts, Fault, Proxy};
use crate::services::Services;

const MASTER: &str = "pm";
const CA_SECRET: &str = "ca-client";
const CLOUD_SECRET: &str = "cloud";
/// Shared by all trials; each trial writes under its own prefix.
const BUCKET: &str = "pc-crash-trials";
/// The operator's timeout per external call: short, so blackholes cost little time.
const CALL_TIMEOUT: &str = "3s";
/// How long the deletions may take once faults stopped.
const RELEASE_WITHIN: Duration = Duration::from_secs(120);

/// The shape of a trial.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub kills: usize,
}

/// What a trial did and found.
pub struct Report {
    pub seed: u64,
    pub kills: usize,
    pub nodes: usize,
    pub launches: usize,
    /// Nodes that got an instance.
    pub nodes_launched: usize,
    /// Launches of an incarnation after the first (a fenced one replaced).
    pub replacements: usize,
    pub incarnations: usize,
    pub csrs: usize,
    pub signed: usize,
    pub violations: Vec<String>,
    pub secs: f64,
    pub moto: Counts,
    pub ca: Counts,
    pub polls: usize,
    pub poll_errors: usize,
    pub late_csrs: usize,
    pub log: PathBuf,
    pub trace: PathBuf,
    pub log_tail: String,
}

fn base64(bytes: &[u8]) -> String {
    aws_smithy_types::base64::encode(bytes)
}

fn secret(name: &str, data: &[(&str, &[u8])]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(base64(v))))
        .collect();
    json!({"metadata": {"name": name}, "type": "Opaque", "data": data})
}

fn socket_of(url: &str) -> Result<SocketAddr, String> {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A name no other run uses (UIDs, namespace, prefix, operator id derive from it).
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:08x}",
        (nanos as u64 ^ (u64::from(std::process::id()) << 40)) as u32
    )
}

fn master_object(svc: &Services, moto: &Proxy, ca: &Proxy, prefix: &str) -> Value {
    let spec = PuppetMasterSpec {
        server: svc.puppet.server.clone(),
        port: i32::from(svc.puppet.port),
        ca: CaSpec {
            url: format!("https://{}", ca.addr),
            client_secret_ref: SecretRef {
                name: CA_SECRET.into(),
            },
        },
        cloud: CloudSpec {
            provider: CloudProvider::Ec2,
            region: REGION.into(),
            endpoint: Some(format!("http://{}", moto.addr)),
            credentials_secret_ref: Some(SecretRef {
                name: CLOUD_SECRET.into(),
            }),
        },
        records: RecordsSpec {
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            endpoint: Some(format!("http://{}", moto.addr)),
            force_path_style: true,
            region: Some(REGION.into()),
            credentials_secret_ref: None,
        },
        signing: SigningSpec {
            mode: SigningMode::Operator,
            poll_interval: std::time::Duration::from_secs(1).into(),
            ..Default::default()
        },
        node_defaults: NodeDefaults {
            image_id: Some("ami-0123456789abcdef0".into()),
            instance_type: Some("t3.small".into()),
            ..Default::default()
        },
        orphans: Default::default(),
    };
    json!({"metadata": {"name": MASTER}, "spec": spec})
}

/// The driver's side of the world.
struct Driver {
    rng: StdRng,
    api: MemoryApi,
    ns: String,
    ledger: Arc<Mutex<Ledger>>,
    outside: Arc<Outside>,
    moto: Proxy,
    ca: Proxy,
    /// Nodes created and not deleted.
    live: Vec<String>,
    created: usize,
    /// Instances whose agent sent its CSR.
    played: BTreeSet<String>,
    max_nodes: usize,
    /// What the driver did, with times (written to `trace.log` beside the operator's log).
    trace: Trace,
}

/// The driver's moves, appended to a file as they happen (UTC wall clock, as the
/// operator's log, so the two read side by side).
pub struct Trace(std::fs::File);

impl Trace {
    fn create(path: &Path) -> Result<Self, String> {
        std::fs::File::create(path)
            .map(Self)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn note(&mut self, what: &str) {
        use std::io::Write;
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
        let _ = writeln!(self.0, "{now} {what}");
    }
}

impl Driver {
    fn create_node(&mut self) {
        let name = format!("n-{:03}", self.created);
        self.created += 1;
        let node = json!({"metadata": {"name": name},
                          "spec": {"masterRef": {"name": MASTER}, "classes": ["role::webserver"]}});
        match self.api.create("puppetnodes", &self.ns, node) {
            Ok(obj) => {
                let uid = obj["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.trace.note(&format!("create {name} uid {uid}"));
                self.ledger.lock().unwrap().uids.insert(name.clone(), uid);
                self.live.push(name);
            }
            Err(e) => self
                .ledger
                .lock()
                .unwrap()
                .violations
                .push(format!("creating {name}: {e}")),
        }
    }

    fn delete_node(&mut self) {
        if self.live.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.live.len());
        let name = self.live.swap_remove(i);
        self.delete(&name);
    }

    fn delete(&mut self, name: &str) {
        self.trace.note(&format!("delete {name}"));
        self.ledger
            .lock()
            .unwrap()
            .deleted
            .insert(name.to_string(), Instant::now());
        self.api.delete("puppetnodes", &self.ns, name);
    }

    /// A create or a delete, to kill right after.
    fn act(&mut self) {
        if self.live.len() < self.max_nodes && (self.live.is_empty() || self.rng.random_bool(0.5)) {
            self.create_node();
        } else {
            self.delete_node();
        }
    }

    fn toggle_fault(&mut self) {
        let moto = self.rng.random_bool(0.5);
        let fault = match self.rng.random_range(0..100) {
            0..35 => Fault::Healthy,
            35..55 => Fault::Latency(Duration::from_millis(self.rng.random_range(200..1500))),
            55..70 => Fault::Reset,
            70..85 => Fault::Blackhole,
            _ if moto => Fault::Unavailable,
            _ => Fault::Reset,
        };
        self.trace.note(&format!(
            "fault {} {fault:?}",
            if moto { "moto" } else { "ca" }
        ));
        if moto {
            self.moto.set(fault);
        } else {
            self.ca.set(fault);
        }
    }

    /// The agent of one running instance whose node still lives sends its CSR, built from
    /// the user data EC2 holds for it.
    async fn play_agent(&mut self) {
        let candidates: Vec<(String, String, String)> = {
            let l = self.ledger.lock().unwrap();
            l.instances
                .values()
                .filter(|i| i.state == "running" && !self.played.contains(&i.id))
                .filter(|i| {
                    l.node_of(&i.uid)
                        .is_some_and(|n| self.live.iter().any(|live| live == n))
                })
                .map(|i| (i.id.clone(), i.certname.clone(), i.uid.clone()))
                .collect()
        };
        if candidates.is_empty() {
            return;
        }
        let (id, certname, _uid) = candidates[self.rng.random_range(0..candidates.len())].clone();
        let Ok(user_data) = self.outside.user_data(&id).await else {
            return;
        };
        let (challenge, instance_id) = agents::csr_attributes(&user_data, &id);
        let (pem, spki) = agents::csr(&certname, &challenge, &instance_id);
        self.played.insert(id.clone());
        let answer = self.outside.submit_csr(&certname, &pem).await;
        self.trace.note(&format!(
            "agent of {id} sent the CSR of {certname} (key {}): {answer:?}",
            key_hash(&spki)
        ));
        if let Ok(200) = answer {
            let mut l = self.ledger.lock().unwrap();
            l.submitted
                .entry(certname.clone())
                .or_default()
                .insert(key_hash(&spki));
            l.submitted_at.insert(certname, Instant::now());
        }
    }

    /// Seeded moves for `window`: nodes created and deleted, faults switched, agents.
    async fn run_for(&mut self, window: Duration) {
        let end = Instant::now() + window;
        while Instant::now() < end {
            match self.rng.random_range(0..100) {
                0..10 if self.live.len() < self.max_nodes => self.create_node(),
                10..20 => self.delete_node(),
                20..40 => self.toggle_fault(),
                40..75 => self.play_agent().await,
                _ => {}
            }
            let pause = Duration::from_millis(self.rng.random_range(100..400));
            tokio::time::sleep(pause.min(end.saturating_duration_since(Instant::now()))).await;
        }
    }
}

/// A node's state in a few words, for a violation.
fn describe(obj: &Value) -> String {
    let st = &obj["status"];
    let conditions: Vec<String> = st["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["status"] != "True")
                .map(|c| {
                    format!(
                        "{}={} {}: {}",
                        c["type"].as_str().unwrap_or_default(),
                        c["status"].as_str().unwrap_or_default(),
                        c["reason"].as_str().unwrap_or_default(),
                        c["message"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "phase {}, finalizers {}, {}",
        st["phase"].as_str().unwrap_or("-"),
        obj["metadata"]["finalizers"],
        conditions.join("; ")
    )
}

pub async fn run(svc: &Services, cfg: &Config) -> Result<Report, String> {
    let started = std::time::Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let id = run_id();
    let ns = format!("crash-{id}");
    let uid_prefix = format!(
        "{id}-c4a5-4{:03x}-8{:03x}-",
        cfg.seed % 4096,
        (cfg.seed / 4096) % 4096
    );
    let dir = std::env::temp_dir().join(format!("pc-{ns}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let server = ApiServer::start(&uid_prefix, &crds).await?;
    let kubeconfig = dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig, &ns)
        .map_err(|e| e.to_string())?;
    let moto = Proxy::http(socket_of(&svc.moto_endpoint)?)
        .await
        .map_err(|e| e.to_string())?;
    let ca = Proxy::tcp(socket_of(&svc.puppet.ca_url)?)
        .await
        .map_err(|e| e.to_string())?;

    let (cert, key, ca_pem) = (
        read(&svc.puppet.client_cert)?,
        read(&svc.puppet.client_key)?,
        read(&svc.puppet.ca_cert)?,
    );
    let prefix = format!("{ns}/");
    let outside = Arc::new(Outside::new(
        &OutsideConfig {
            moto: &svc.moto_endpoint,
            ca_url: &svc.puppet.ca_url,
            client_cert: &cert,
            client_key: &key,
            ca_pem: &ca_pem,
        },
        BUCKET,
        &prefix,
        &format!("{ns}/{MASTER}"),
        &uid_prefix,
    )?);
    outside.ensure_bucket().await?;

    let api = server.api.clone();
    api.create(
        "secrets",
        &ns,
        secret(
            CA_SECRET,
            &[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", &ca_pem)],
        ),
    )?;
    api.create(
        "secrets",
        &ns,
        secret(
            CLOUD_SECRET,
            &[("accessKeyId", b"testing"), ("secretAccessKey", b"testing")],
        ),
    )?;
    api.create(
        "puppetmasters",
        &ns,
        master_object(svc, &moto, &ca, &prefix),
    )?;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let polling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = {
        let (outside, api, ns, ledger, polling) = (
            outside.clone(),
            api.clone(),
            ns.clone(),
            ledger.clone(),
            polling.clone(),
        );
        tokio::spawn(async move {
            while polling.load(std::sync::atomic::Ordering::Relaxed) {
                invariants::poll(&outside, &api, &ns, &ledger).await;
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        })
    };

    let args: Vec<String> = [
        "--watch-namespace",
        &ns,
        "--operator-id",
        &ns,
        "--leader-election",
        "false",
        "--master-resync",
        "5s",
        "--resync",
        "20s",
        "--call-timeout",
        CALL_TIMEOUT,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut op = Operator::new(&kubeconfig, &dir.join("operator.log"), args);
    op.start()?;

    let mut d = Driver {
        rng: StdRng::seed_from_u64(rng.random()),
        api: api.clone(),
        ns: ns.clone(),
        ledger: ledger.clone(),
        outside: outside.clone(),
        moto: moto.clone(),
        ca: ca.clone(),
        live: Vec::new(),
        created: 0,
        played: BTreeSet::new(),
        max_nodes: 20,
        trace: Trace::create(&dir.join("trace.log"))?,
    };
    for _ in 0..rng.random_range(12..=20) {
        d.create_node();
    }

    for kill in 0..cfg.kills {
        let window = if rng.random_bool(0.25) {
            d.act();
            Duration::from_millis(rng.random_range(0..150))
        } else {
            Duration::from_millis(rng.random_range(200..4000))
        };
        d.run_for(window).await;
        if let Some(status) = op.exited() {
            ledger.lock().unwrap().violations.push(format!(
                "the operator exited by itself ({status}) before kill {kill}; log:\n{}",
                op.tail(40)
            ));
        }
        op.kill().await;
        d.trace.note(&format!("kill {}", kill + 1));
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        op.start()?;
        d.trace.note(&format!("start {}", op.starts));
    }

    // Faults stop; the last operator is left running. Agents may still send CSRs for a
    // while, then every node and the master are deleted.
    moto.set(Fault::Healthy);
    ca.set(Fault::Healthy);
    d.trace.note("faults off");
    d.run_quiet(Duration::from_secs(5)).await;
    for name in std::mem::take(&mut d.live) {
        d.delete(&name);
    }
    api.delete("puppetmasters", &ns, MASTER);
    let deadline = Instant::now() + RELEASE_WITHIN;
    while Instant::now() < deadline
        && !(api.list("puppetnodes", &ns).is_empty() && api.list("puppetmasters", &ns).is_empty())
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut violations = Vec::new();
    for node in api.list("puppetnodes", &ns) {
        violations.push(format!(
            "node {} was not released within {RELEASE_WITHIN:?} of its deletion: {}",
            node["metadata"]["name"].as_str().unwrap_or_default(),
            describe(&node)
        ));
    }
    for master in api.list("puppetmasters", &ns) {
        violations.push(format!(
            "the master was not released within {RELEASE_WITHIN:?}: {}",
            describe(&master)
        ));
    }
    // Once the master is gone, its Secrets' in-use holds go too.
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        let held: Vec<String> = api
            .list("secrets", &ns)
            .iter()
            .filter(|s| {
                s["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f == SECRET_FINALIZER))
            })
            .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        if held.is_empty() || Instant::now() >= deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if !held.is_empty() && violations.is_empty() {
        violations.push(format!(
            "Secrets {held:?} were still held 30 s after the master was released"
        ));
    }

    polling.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = poller.await;
    invariants::poll(&outside, &api, &ns, &ledger).await;
    let finals = invariants::final_outside(&outside, &ledger).await;
    violations.extend(finals.problems);
    let unserved = server.unserved();
    if !unserved.is_empty() {
        violations.push(format!(
            "the operator made requests the trial's API does not serve: {unserved:?}"
        ));
    }
    if let Err(e) = op.terminate().await {
        violations.push(format!("stopping the operator: {e}"));
    }

    let l = ledger.lock().unwrap();
    let mut all = l.violations.clone();
    all.extend(violations);
    Ok(Report {
        seed: cfg.seed,
        kills: cfg.kills,
        nodes: d.created,
        launches: finals.launches.values().sum(),
        nodes_launched: finals
            .launches
            .keys()
            .map(|(uid, _)| uid)
            .collect::<BTreeSet<_>>()
            .len(),
        replacements: finals.launches.keys().filter(|(_, inc)| inc != "1").count(),
        incarnations: finals.launches.len(),
        csrs: l.submitted.values().map(BTreeSet::len).sum(),
        signed: l.signed.len(),
        violations: all,
        secs: started.elapsed().as_secs_f64(),
        moto: moto.counts(),
        ca: ca.counts(),
        polls: l.polls,
        poll_errors: l.poll_errors,
        late_csrs: finals.late_csrs.len(),
        log: op.log().to_path_buf(),
        trace: dir.join("trace.log"),
        log_tail: op.tail(60),
    })
}

impl Driver {
    /// Only agents, faults off.
    async fn run_quiet(&mut self, window: Duration) {
        let end = Instant::now() + window;
        while Instant::now() < end {
            self.play_agent().await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
