//! Support of the cluster tests (`cluster_*.rs`): a real Kubernetes API named by the
//! kubeconfig in `PC_TEST_KUBECONFIG`, the CRDs installed by server-side apply, one
//! temporary namespace per test with its own `puppet-conductor run` process scoped to it,
//! and the example manifests rewritten to point at moto and puppetserver on loopback.
//!
//! The operator binary runs on this machine, outside the cluster, so loopback services
//! are reachable from it; the instances it launches live in moto and are played by a real
//! puppet agent, as in the other end-to-end tests.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource, ResourceExt};
use puppet_conductor::api::common::SecretRef;
use puppet_conductor::api::master::SigningMode;
use puppet_conductor::api::node::Phase;
use puppet_conductor::api::{PuppetMaster, PuppetNode, PuppetNodePool};
use puppet_conductor::cloud::{tags, Cloud, Instance};
use puppet_conductor::records::{KeyLayout, ParsedKey};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::common::services::Services;
use crate::crd_schema_support::repo_root;

/// Field manager of everything the tests apply.
const MANAGER: &str = "puppet-conductor-tests";

/// The kubeconfig of the cluster under test, or `None` (cluster tests skipped).
pub fn kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("PC_TEST_KUBECONFIG") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            eprintln!("skipped: PC_TEST_KUBECONFIG names no kubeconfig (no cluster to test on)");
            None
        }
    }
}

/// A client for the cluster in `kubeconfig` (its current context).
pub async fn client(kubeconfig: &Path) -> Client {
    puppet_conductor::tls::install_crypto_provider();
    let kc = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
    Client::try_from(config).unwrap()
}

/// Polls `probe` every 500 ms until it yields a value; panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Installs (or upgrades) the CRDs of `crds/` by server-side apply, as the README tells
/// users to, and waits until the API server has established them.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = repo_root().join("crds");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {}: {e}", path.display()));
        names.push(name);
    }
    assert_eq!(names.len(), 3, "crds/ holds the three CRDs");
    for name in names {
        eventually(
            &format!("CRD {name} established"),
            Duration::from_secs(60),
            || async {
                let crd = api.get(&name).await.ok()?;
                let established = crd
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            },
        )
        .await;
    }
}

/// Server-side applies `object` into its namespace.
pub async fn apply<K>(client: &Client, ns: &str, object: &K) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(
        &object.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {} in {ns}: {e}", object.name_any()))
}

/// Where the local services listen, and how the test wants the master to sign.
pub struct Loopback {
    pub server: String,
    pub port: i32,
    pub ca_url: String,
    pub ca_pem: Vec<u8>,
    pub client_cert: Vec<u8>,
    pub client_key: Vec<u8>,
    pub moto_endpoint: String,
    pub region: String,
    pub bucket: String,
    pub mode: SigningMode,
}

impl Loopback {
    /// The services of `tests/services/up.sh`, a records bucket and a signing mode.
    pub fn of(svc: &Services, region: &str, bucket: &str, mode: SigningMode) -> Self {
        let read = |p: &Path| std::fs::read(p).unwrap();
        Self {
            server: svc.puppet.server.clone(),
            port: i32::from(svc.puppet.port),
            ca_url: svc.puppet.ca_url.clone(),
            ca_pem: svc.puppet.ca_pem(),
            client_cert: read(&svc.puppet.client_cert),
            client_key: read(&svc.puppet.client_key),
            moto_endpoint: svc.moto_endpoint.clone(),
            region: region.to_string(),
            bucket: bucket.to_string(),
            mode,
        }
    }
}

/// The minimal examples users start from, rewritten for the loopback services.
pub struct ExampleObjects {
    pub ca_client: Secret,
    pub cloud_credentials: Secret,
    pub master: PuppetMaster,
    pub node: PuppetNode,
}

fn example<K: DeserializeOwned>(file: &str) -> K {
    let path = repo_root().join("manifests/examples").join(file);
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn bytes(data: &[u8]) -> ByteString {
    ByteString(data.to_vec())
}

/// `manifests/examples/` as applied by the cluster tests: the minimal PuppetMaster and
/// PuppetNode unchanged except where the services are (server, CA, moto for EC2 and S3,
/// the default VPC instead of a made-up subnet) and how signing runs; the two Secret
/// examples with the real CA client certificate and moto's credentials in place of
/// their placeholders.
pub fn example_objects(lo: &Loopback) -> ExampleObjects {
    let mut ca_client: Secret = example("secret-ca-client.yaml");
    ca_client.data = Some(
        [
            ("tls.crt".to_string(), bytes(&lo.client_cert)),
            ("tls.key".to_string(), bytes(&lo.client_key)),
            ("ca.crt".to_string(), bytes(&lo.ca_pem)),
        ]
        .into(),
    );
    let mut cloud_credentials: Secret = example("secret-cloud-credentials.yaml");
    cloud_credentials.data = Some(
        [
            ("accessKeyId".to_string(), bytes(b"testing")),
            ("secretAccessKey".to_string(), bytes(b"testing")),
        ]
        .into(),
    );
    let credentials = Some(SecretRef {
        name: cloud_credentials.name_any(),
    });

    let mut master: PuppetMaster = example("puppetmaster-minimal.yaml");
    let spec = &mut master.spec;
    spec.server = lo.server.clone();
    spec.port = lo.port;
    spec.ca.url = lo.ca_url.clone();
    spec.cloud.region = lo.region.clone();
    spec.cloud.endpoint = Some(lo.moto_endpoint.clone());
    spec.cloud.credentials_secret_ref = credentials.clone();
    spec.records.bucket = lo.bucket.clone();
    spec.records.endpoint = Some(lo.moto_endpoint.clone());
    spec.records.region = Some(lo.region.clone());
    spec.records.force_path_style = true;
    spec.records.credentials_secret_ref = credentials;
    // Signing as the example has it (the default pollInterval): the tests measure that.
    spec.signing.mode = lo.mode;
    spec.node_defaults.subnet_id = None;
    spec.node_defaults.security_group_ids = Vec::new();

    let node: PuppetNode = example("puppetnode-minimal.yaml");
    ExampleObjects {
        ca_client,
        cloud_credentials,
        master,
        node,
    }
}

/// One test's namespace with its own operator process watching only it.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub ns: String,
    /// The operator id the process runs with (tags of its instances and records).
    pub operator_id: String,
    /// The operator's /metrics, /healthz and /readyz address.
    pub http_addr: std::net::SocketAddr,
}

impl Cluster {
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Reasons of the events.k8s.io events about the object `name` in the namespace.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> = self.api();
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason)
            .collect()
    }
}

/// `puppet-conductor run` as a child process, its output in a log file.
pub struct OperatorProcess {
    child: tokio::process::Child,
    pub log: PathBuf,
}

impl OperatorProcess {
    /// `puppet-conductor run <args>` against the cluster of `kubeconfig`.
    pub fn start(kubeconfig: &Path, args: &[String], log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_puppet-conductor"))
            .arg("run")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,puppet_conductor=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// SIGTERM, as Kubernetes stops a pod: `Err` (with the log's tail) unless the process
    /// exits cleanly within 30 s.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!(
                "the operator exited with {status} on SIGTERM; log:\n{}",
                self.tail()
            )),
            _ => {
                let _ = self.child.kill().await;
                Err(format!(
                    "the operator ignored SIGTERM for 30 s; log:\n{}",
                    self.tail()
                ))
            }
        }
    }

    /// The last 80 lines of its log.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }
}

/// `kubectl delete` of `name`, then waits until the object is gone (its finalizers
/// released by the operator).
pub async fn delete_and_await_release<K>(api: &Api<K>, name: &str, within: Duration)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting {name}: {e}"));
    eventually(&format!("{name} released"), within, || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

/// Deletes every object of `api`'s kind in its namespace; true when all are gone
/// (finalizers released) within `within`.
async fn delete_all_and_wait<K>(api: &Api<K>, within: Duration) -> bool
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let _ = api
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    tokio::time::timeout(within, async {
        while !api
            .list(&ListParams::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(true)
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .is_ok()
}

/// Drops every finalizer of `api`'s objects (only after the operator had its chance).
async fn strip_finalizers<K>(api: &Api<K>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let strip = serde_json::json!({ "metadata": { "finalizers": null } });
    for obj in api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let _ = api
            .patch(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&strip),
            )
            .await;
    }
}

/// Runs `body` in a fresh namespace with an operator watching it; afterwards deletes the
/// namespace's PuppetNodes and PuppetMasters while the operator still runs (so it
/// releases their finalizers), stops the operator with SIGTERM and deletes the
/// namespace, whether `body` passed or panicked. A body may delete the namespace itself
/// ([`delete_namespace_and_await_gone`]): the operator still runs meanwhile, and the
/// cleanup then finds nothing left.
pub async fn with_cluster<F, Fut>(kubeconfig: &Path, prefix: &str, body: F)
where
    F: FnOnce(Cluster) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let client = client(kubeconfig).await;
    install_crds(&client).await;
    let ns = crate::node_support::unique(prefix);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(ns.clone());
    namespace.metadata.labels = Some(
        [(
            "app.kubernetes.io/created-by".to_string(),
            MANAGER.to_string(),
        )]
        .into(),
    );
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {ns}: {e}"));

    let http_addr = crate::common::free_loopback_addr();
    let cluster = Cluster {
        client: client.clone(),
        operator_id: ns.clone(),
        ns: ns.clone(),
        http_addr,
    };
    let log = std::env::temp_dir().join(format!("{ns}-operator.log"));
    let args: Vec<String> = [
        "--watch-namespace",
        &ns,
        "--operator-id",
        &cluster.operator_id,
        "--leader-election",
        "false",
        "--http-addr",
        &http_addr.to_string(),
        "--log-format",
        "json",
        "--master-resync",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let operator = OperatorProcess::start(kubeconfig, &args, log);
    let outcome = tokio::spawn(body(cluster.clone())).await;
    if outcome.is_err() {
        eprintln!(
            "operator log ({}):\n{}",
            operator.log.display(),
            operator.tail()
        );
    }

    // Cleanup: nodes first, then masters (a master waits for its nodes), while the
    // operator still runs and releases their finalizers; whatever it could not release
    // is let go so the namespace does not hang in Terminating.
    // Pools first: a pool would make its deleted nodes again.
    let pools: Api<PuppetNodePool> = cluster.api();
    let pools_gone = delete_all_and_wait(&pools, Duration::from_secs(60)).await;
    let nodes: Api<PuppetNode> = cluster.api();
    let masters: Api<PuppetMaster> = cluster.api();
    let nodes_gone = delete_all_and_wait(&nodes, Duration::from_secs(60)).await;
    let masters_gone = delete_all_and_wait(&masters, Duration::from_secs(30)).await;
    let stopped = operator.stop().await;
    if !pools_gone || !nodes_gone || !masters_gone {
        strip_finalizers(&pools).await;
        strip_finalizers(&nodes).await;
        strip_finalizers(&masters).await;
    }
    // The operator is gone: a Secret it still holds would keep the namespace Terminating.
    strip_finalizers(&cluster.api::<Secret>()).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    if let Err(problem) = stopped {
        panic!("{problem}");
    }
    assert!(
        pools_gone && nodes_gone && masters_gone,
        "PuppetNodePools, PuppetNodes or PuppetMasters in {ns} kept their finalizers after deletion"
    );
}

/// The example master and node as applied, and what the node launched.
pub struct Launched {
    pub master: PuppetMaster,
    pub node: PuppetNode,
    pub certname: String,
    pub instance_id: String,
}

/// Whether the master's `Ready` condition is `True`.
pub fn master_ready(master: &PuppetMaster) -> bool {
    master.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == puppet_conductor::api::conditions::READY && c.status == "True")
    })
}

/// `kubectl apply` of the example master and its two Secrets once the operator is ready;
/// waits for the master to be Ready.
pub async fn apply_master_and_await_ready(c: &Cluster, objects: &ExampleObjects) -> PuppetMaster {
    eventually(
        "the operator's /readyz",
        Duration::from_secs(60),
        || async {
            let (status, _) = crate::common::http_get(c.http_addr, "/readyz").await?;
            (status == 200).then_some(())
        },
    )
    .await;
    apply::<Secret>(&c.client, &c.ns, &objects.ca_client).await;
    apply::<Secret>(&c.client, &c.ns, &objects.cloud_credentials).await;
    let master = apply(&c.client, &c.ns, &objects.master).await;
    let masters = c.api::<PuppetMaster>();
    eventually("PuppetMaster Ready", Duration::from_secs(60), || async {
        let m = masters.get(&master.name_any()).await.ok()?;
        master_ready(&m).then_some(())
    })
    .await;
    master
}

/// `kubectl apply -f manifests/examples/` (the minimal pair and its Secrets) once the
/// operator is ready; waits for the master to be Ready and the node to await its CSR.
pub async fn apply_examples_and_await_launch(c: &Cluster, objects: &ExampleObjects) -> Launched {
    let master = apply_master_and_await_ready(c, objects).await;
    let node = apply(&c.client, &c.ns, &objects.node).await;
    let nodes = c.api::<PuppetNode>();
    let (certname, instance_id) =
        eventually("the node launched", Duration::from_secs(90), || async {
            let st = nodes.get(&node.name_any()).await.ok()?.status?;
            (st.phase == Some(Phase::AwaitingCsr)).then_some((st.certname?, st.instance_id?))
        })
        .await;
    Launched {
        master,
        node,
        certname,
        instance_id,
    }
}

/// One of several nodes as it launched (AwaitingCSR with an instance id).
#[derive(Clone, Debug)]
pub struct LaunchedNode {
    pub name: String,
    pub uid: String,
    pub certname: String,
    pub instance_id: String,
    /// The incarnation its status names.
    pub incarnation: Option<i64>,
}

pub fn launched_node(n: &PuppetNode) -> Option<LaunchedNode> {
    let st = n.status.as_ref()?;
    if st.phase != Some(Phase::AwaitingCsr) {
        return None;
    }
    Some(LaunchedNode {
        name: n.name_any(),
        uid: n.metadata.uid.clone()?,
        certname: st.certname.clone()?,
        instance_id: st.instance_id.clone()?,
        incarnation: st.incarnation,
    })
}

/// How many of `nodes` are in each phase (`None`: no status yet).
pub fn phase_counts<'a>(
    nodes: impl IntoIterator<Item = &'a PuppetNode>,
) -> BTreeMap<Option<Phase>, usize> {
    let mut counts = BTreeMap::new();
    for n in nodes {
        *counts
            .entry(n.status.as_ref().and_then(|s| s.phase))
            .or_insert(0) += 1;
    }
    counts
}

/// Server-side applies a copy of `template` under each of `names`, 16 at a time (as a
/// GitOps sync of a directory would), then waits until every one of them awaits its CSR
/// with an instance id; the result follows the order of `names`. On timeout, says how
/// many got there and in which phases the others are.
pub async fn apply_nodes_and_await_launch(
    c: &Cluster,
    template: &PuppetNode,
    names: &[String],
    within: Duration,
) -> Vec<LaunchedNode> {
    // Owned futures: a stream of closures over `&String` is not `Send` for every lifetime.
    let applies: Vec<_> = names
        .iter()
        .map(|name| {
            let mut node = template.clone();
            node.metadata.name = Some(name.clone());
            let (client, ns) = (c.client.clone(), c.ns.clone());
            async move { apply(&client, &ns, &node).await }
        })
        .collect();
    let applied: Vec<PuppetNode> = futures::stream::iter(applies)
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(applied.len(), names.len(), "PuppetNodes applied");

    let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let api = c.api::<PuppetNode>();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let listed = api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let ours: Vec<&PuppetNode> = listed
            .iter()
            .filter(|n| wanted.contains(n.name_any().as_str()))
            .collect();
        let mut launched: BTreeMap<String, LaunchedNode> = ours
            .iter()
            .filter_map(|n| launched_node(n))
            .map(|l| (l.name.clone(), l))
            .collect();
        if launched.len() == names.len() {
            return names
                .iter()
                .filter_map(|name| launched.remove(name))
                .collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} PuppetNodes AwaitingCSR with an instance id after {within:?}; \
             phases of the {} listed: {:?}",
            launched.len(),
            names.len(),
            ours.len(),
            phase_counts(ours.iter().copied())
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `kubectl delete namespace` of the test's namespace itself (not its objects), then
/// waits until it is gone: the namespace controller deleted every object in it and the
/// operator released every finalizer (the nodes cleaned up, then their master, then the
/// Secrets it held). On timeout, says what is left and what holds it.
pub async fn delete_namespace_and_await_gone(c: &Cluster, within: Duration) {
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    namespaces
        .delete(&c.ns, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting namespace {}: {e}", c.ns));
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if matches!(namespaces.get_opt(&c.ns).await, Ok(None)) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "namespace {} still there {within:?} after its deletion; {}",
                c.ns,
                leftovers(c).await
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What keeps a Terminating namespace: its conditions, and the objects left with their
/// finalizers.
async fn leftovers(c: &Cluster) -> String {
    fn described<K: Resource>(items: &[K], detail: impl Fn(&K) -> String) -> Vec<String> {
        items
            .iter()
            .map(|o| {
                format!(
                    "{} (finalizers {:?}{})",
                    o.meta().name.as_deref().unwrap_or_default(),
                    o.meta().finalizers.as_deref().unwrap_or_default(),
                    detail(o)
                )
            })
            .collect()
    }
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    let conditions: Vec<String> = namespaces
        .get_opt(&c.ns)
        .await
        .ok()
        .flatten()
        .and_then(|n| n.status?.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|k| {
            format!(
                "{}={}: {}",
                k.type_,
                k.status,
                k.message.unwrap_or_default()
            )
        })
        .collect();
    let nodes = c.api::<PuppetNode>().list(&ListParams::default()).await;
    let masters = c.api::<PuppetMaster>().list(&ListParams::default()).await;
    let secrets = c.api::<Secret>().list(&ListParams::default()).await;
    let nodes = nodes.map(|l| {
        described(&l.items, |n| {
            format!(", phase {:?}", n.status.as_ref().and_then(|s| s.phase))
        })
    });
    let masters = masters.map(|l| described(&l.items, |_| String::new()));
    let secrets = secrets.map(|l| described(&l.items, |_| String::new()));
    format!(
        "namespace conditions: {conditions:?}; PuppetNodes left: {nodes:?}; \
         PuppetMasters left: {masters:?}; Secrets left: {secrets:?}"
    )
}

/// Every instance tagged with the master `master_key` (`namespace/name`), in any state,
/// terminated ones included (moto keeps them), grouped by their node-UID tag (`""` for an
/// instance without one).
pub async fn launches_by_node(
    cloud: &dyn Cloud,
    master_key: &str,
) -> BTreeMap<String, Vec<Instance>> {
    let instances = cloud
        .describe_master_instances(master_key)
        .await
        .unwrap_or_else(|e| panic!("describing the instances of {master_key}: {e}"));
    let mut by_node: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
    for i in instances {
        let uid = i.tag(tags::NODE_UID).unwrap_or_default().to_string();
        by_node.entry(uid).or_default().push(i);
    }
    by_node
}

/// The node objects under a master's records prefix, by kind: certnames with a record, a
/// check-in or a signature record, and any other key there.
#[derive(Debug, Default)]
pub struct PrefixObjects {
    pub records: BTreeSet<String>,
    pub check_ins: BTreeSet<String>,
    pub signatures: BTreeSet<String>,
    pub other: Vec<String>,
}

impl PrefixObjects {
    /// No record, check-in or signature record of any node.
    pub fn has_no_node_objects(&self) -> bool {
        self.records.is_empty() && self.check_ins.is_empty() && self.signatures.is_empty()
    }
}

/// Lists the master's records bucket (all pages) under its prefix, as the operator lays
/// keys out (`records/`, `checkins/`, `signatures/`).
pub async fn prefix_objects(moto_endpoint: &str, master: &PuppetMaster) -> PrefixObjects {
    let spec = &master.spec.records;
    let layout = KeyLayout::new(&spec.prefix);
    let region = spec.region.as_deref().unwrap_or(crate::e2e_support::REGION);
    let s3 = crate::node_support::s3_client(moto_endpoint, region);
    let mut pages = s3
        .list_objects_v2()
        .bucket(&spec.bucket)
        .prefix(layout.prefix())
        .into_paginator()
        .send();
    let mut found = PrefixObjects::default();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("listing bucket {}: {e}", spec.bucket));
        for key in page.contents().iter().filter_map(|o| o.key()) {
            let kind = match layout.parse(key) {
                Some(ParsedKey::Record(c)) => Some((&mut found.records, c)),
                Some(ParsedKey::CheckIn(c)) => Some((&mut found.check_ins, c)),
                Some(ParsedKey::Signature(c)) => Some((&mut found.signatures, c)),
                None => None,
            };
            match kind {
                Some((set, certname)) => {
                    set.insert(certname);
                }
                None => found.other.push(key.to_string()),
            }
        }
    }
    found
}

/// The challenge and instance id the launched instance's cloud-init hands its agent: the
/// user data as EC2 stores it, rendered by the real cloud-init.
pub async fn launched_csr_attributes(moto_endpoint: &str, instance_id: &str) -> (String, String) {
    let user_data =
        crate::node_lifecycle::user_data_of(moto_endpoint, crate::e2e_support::REGION, instance_id)
            .await;
    let rendered = crate::userdata_cloud_init::assert_cloud_init_valid(&user_data, instance_id)
        .expect("cloud-init renders the user data");
    puppet_conductor::userdata::rendered_csr_attributes(&rendered).unwrap()
}
