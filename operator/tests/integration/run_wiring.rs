//! `run`'s controller wiring, driven with hand-fed watch streams (kube-fake-client has no
//! watch) and the real reconcile functions against kube-fake-client: what triggers a
//! reconcile (not the operator's own status or finalizer writes), the cross-object
//! triggers, and the bounded stop after SIGTERM.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::core::PartialObjectMetaExt;
use kube::runtime::controller::Error as ControllerError;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube_fake_client::ClientBuilder;
use puppet_conductor::api::{PuppetMaster, PuppetNode, SecretRef};
use puppet_conductor::controller::context::NodeSettings;
use puppet_conductor::controller::events::MemoryEvents;
use puppet_conductor::controller::services::{MasterServices, ServiceFactory};
use puppet_conductor::controller::{Context, ReconcileError, MASTER_FINALIZER, SECRET_FINALIZER};
use puppet_conductor::runner::triggers::{secret_triggers, SecretMeta};
use puppet_conductor::runner::wiring::{
    drain_within, master_controller, master_error_policy, master_triggers, node_controller,
    node_error_policy, reconcile_master, reconcile_node, GuardedMaster, GuardedNode,
};
use tokio_util::sync::CancellationToken;

use crate::node_support::{master, node, NS};

/// Every node stops at its services with a permanent error, so nothing re-queues by
/// itself: each reconcile seen is one the wiring triggered.
struct RefusingFactory;

#[async_trait::async_trait]
impl ServiceFactory for RefusingFactory {
    async fn services(&self, _: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
        Err(ReconcileError::InvalidSpec("test: no services".into()))
    }
}

fn guarded<K: serde::Serialize>(object: &K) -> serde_json::Value {
    serde_json::to_value(object).unwrap()
}

struct Fixture {
    node_tx: mpsc::UnboundedSender<watcher::Event<GuardedNode>>,
    master_tx: mpsc::UnboundedSender<watcher::Event<GuardedMaster>>,
    vanished_tx: mpsc::UnboundedSender<String>,
    reconciled: mpsc::UnboundedReceiver<String>,
    events: Arc<MemoryEvents>,
    masters: BTreeMap<String, PuppetMaster>,
    nodes: BTreeMap<String, PuppetNode>,
}

async fn fixture() -> Fixture {
    let client = ClientBuilder::new()
        .with_resource::<PuppetMaster>()
        .with_resource::<PuppetNode>()
        .build()
        .await
        .unwrap();
    let pp = PostParams::default();
    let master_api: Api<PuppetMaster> = Api::namespaced(client.clone(), NS);
    let node_api: Api<PuppetNode> = Api::namespaced(client.clone(), NS);
    let mut masters = BTreeMap::new();
    for name in ["m1", "m2"] {
        let m = master(
            name,
            "http://127.0.0.1:1",
            "us-east-1",
            "b",
            Default::default(),
        );
        masters.insert(name.to_string(), master_api.create(&pp, &m).await.unwrap());
    }
    let mut nodes = BTreeMap::new();
    for (name, m) in [("n1", "m1"), ("n2", "m2")] {
        let n = node(name, m, &["base"]);
        nodes.insert(name.to_string(), node_api.create(&pp, &n).await.unwrap());
    }

    let events = Arc::new(MemoryEvents::default());
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(RefusingFactory),
        events.clone(),
        NodeSettings::default(),
    ));
    let (node_tx, node_rx) = mpsc::unbounded();
    let (master_tx, master_rx) = mpsc::unbounded();
    let (reader, writer) = reflector::store();
    let node_stream = node_rx.map(Ok).reflect(writer).applied_objects();
    let master_stream = master_triggers(master_rx.map(Ok).applied_objects());
    let (vanished_tx, vanished_rx) = mpsc::unbounded();
    let (done_tx, reconciled) = mpsc::unbounded();
    let controller = node_controller(node_stream, reader, master_stream, vanished_rx, 4).run(
        reconcile_node,
        node_error_policy,
        ctx,
    );
    // The controller waits for the store's initial list, as after a real watcher's start.
    node_tx.unbounded_send(watcher::Event::Init).unwrap();
    node_tx.unbounded_send(watcher::Event::InitDone).unwrap();
    tokio::spawn(async move {
        controller
            .for_each(|result| {
                let name = match result {
                    Ok((obj, _)) => obj.name,
                    Err(ControllerError::ReconcilerFailed(_, obj)) => obj.name,
                    Err(other) => format!("controller error: {other}"),
                };
                let _ = done_tx.unbounded_send(name);
                async {}
            })
            .await;
    });
    Fixture {
        node_tx,
        master_tx,
        vanished_tx,
        reconciled,
        events,
        masters,
        nodes,
    }
}

impl Fixture {
    fn send_node(&self, value: serde_json::Value) {
        let obj: GuardedNode = serde_json::from_value(value).unwrap();
        self.node_tx
            .unbounded_send(watcher::Event::Apply(obj))
            .unwrap();
    }

    fn send_master(&self, m: &PuppetMaster) {
        let obj: GuardedMaster = serde_json::from_value(guarded(m)).unwrap();
        self.master_tx
            .unbounded_send(watcher::Event::Apply(obj))
            .unwrap();
    }

    /// Names reconciled within `window`, sorted.
    async fn reconciled_within(&mut self, window: Duration) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(name)) = tokio::time::timeout_at(deadline, self.reconciled.next()).await {
            seen.push(name);
        }
        seen.sort();
        seen
    }
}

fn malformed_node() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "puppet-conductor.dev/v1alpha1",
        "kind": "PuppetNode",
        "metadata": {"name": "broken", "namespace": NS, "uid": "00000000-0000-0000-0000-00000000000b"},
        "spec": {"masterRef": 42, "classes": "not a list"}
    })
}

#[tokio::test]
async fn a_malformed_node_gets_an_event_and_does_not_stop_the_others() {
    let mut f = fixture().await;
    f.send_node(malformed_node());
    f.send_node(guarded(&f.nodes["n1"]));
    f.send_node(guarded(&f.nodes["n2"]));
    let seen = f.reconciled_within(Duration::from_secs(3)).await;
    assert_eq!(seen, vec!["broken", "n1", "n2"]);
    let events = f.events.all();
    let invalid: Vec<_> = events
        .iter()
        .filter(|e| e.reason == "InvalidObject")
        .collect();
    assert_eq!(invalid.len(), 1, "{events:?}");
    assert_eq!(invalid[0].object, format!("{NS}/broken"));
    assert!(invalid[0].warning);
    assert!(
        invalid[0].note.contains("cannot be read as a PuppetNode"),
        "{}",
        invalid[0].note
    );
}

#[tokio::test]
async fn a_describe_that_finds_an_instance_gone_reconciles_that_node_at_once() {
    let mut f = fixture().await;
    f.send_node(guarded(&f.nodes["n1"]));
    f.send_node(guarded(&f.nodes["n2"]));
    assert_eq!(
        f.reconciled_within(Duration::from_secs(2)).await,
        vec!["n1", "n2"]
    );
    // The snapshot's wake names nodes by their instances' `namespace/name` tag; a key
    // that names no node (deleted since) reconciles nothing, a malformed one is dropped.
    for key in [format!("{NS}/n2"), format!("{NS}/nobody"), "garbage".into()] {
        f.vanished_tx.unbounded_send(key).unwrap();
    }
    let seen = f.reconciled_within(Duration::from_secs(2)).await;
    let reconciled: Vec<_> = seen
        .iter()
        .filter(|s| !s.starts_with("controller error"))
        .collect();
    assert_eq!(reconciled, ["n2"], "{seen:?}");
    assert!(
        seen.iter()
            .filter(|s| s.starts_with("controller error"))
            .all(|s| s.contains("nobody") && s.contains("not found in local store")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_master_spec_change_reconciles_only_that_masters_nodes() {
    let mut f = fixture().await;
    f.send_node(guarded(&f.nodes["n1"]));
    f.send_node(guarded(&f.nodes["n2"]));
    assert_eq!(
        f.reconciled_within(Duration::from_secs(2)).await,
        vec!["n1", "n2"]
    );

    // First sight of m1 (the watcher's initial list) triggers its nodes once.
    let mut m1 = f.masters["m1"].clone();
    m1.metadata.generation = Some(1);
    f.send_master(&m1);
    assert_eq!(
        f.reconciled_within(Duration::from_secs(2)).await,
        vec!["n1"]
    );

    // A status-only change (same generation) does not re-trigger 1,000 nodes.
    m1.metadata.resource_version = Some("999".into());
    m1.status = Some(Default::default());
    f.send_master(&m1);
    assert_eq!(
        f.reconciled_within(Duration::from_secs(2)).await,
        Vec::<String>::new()
    );

    // A spec change (new generation) does.
    m1.metadata.generation = Some(2);
    m1.spec.server = "puppet2.example.com".into();
    f.send_master(&m1);
    assert_eq!(
        f.reconciled_within(Duration::from_secs(2)).await,
        vec!["n1"]
    );
}

#[tokio::test]
async fn a_node_status_write_does_not_reconcile_it_again_but_a_spec_change_does() {
    let mut f = fixture().await;
    let mut n1 = f.nodes["n1"].clone();
    f.send_node(guarded(&n1));
    assert_eq!(
        f.reconciled_within(Duration::from_secs(2)).await,
        vec!["n1"]
    );

    // The operator's own status write: new resourceVersion and status, nothing else.
    n1.metadata.resource_version = Some("1001".into());
    n1.status = Some(Default::default());
    f.send_node(guarded(&n1));
    assert_eq!(
        f.reconciled_within(Duration::from_secs(2)).await,
        Vec::<String>::new()
    );

    n1.metadata.generation = Some(n1.metadata.generation.unwrap_or(1) + 1);
    n1.spec.classes.push("web".into());
    f.send_node(guarded(&n1));
    assert_eq!(
        f.reconciled_within(Duration::from_secs(2)).await,
        vec!["n1"]
    );

    // A finalizer change, then deletion (the finalizer still holds the node), wake it too.
    n1.metadata.resource_version = Some("1003".into());
    n1.metadata.finalizers = Some(vec!["puppet-conductor.dev/cleanup".into()]);
    f.send_node(guarded(&n1));
    assert_eq!(
        f.reconciled_within(Duration::from_secs(2)).await,
        vec!["n1"]
    );
    n1.metadata.resource_version = Some("1004".into());
    n1.metadata.deletion_timestamp = Some(puppet_conductor::status::conditions::time(
        chrono::Utc::now(),
    ));
    f.send_node(guarded(&n1));
    let seen = f.reconciled_within(Duration::from_secs(2)).await;
    assert!(seen.contains(&"n1".to_string()), "{seen:?}");
}

/// Masters with a spec `validate` refuses: each reconcile ends in a permanent error and
/// waits for a change, so every reconcile seen is one a trigger started.
fn refused_master(name: &str, cloud_secret: &str) -> PuppetMaster {
    let mut m = master(
        name,
        "http://127.0.0.1:1",
        "us-east-1",
        "b",
        Default::default(),
    );
    m.spec.signing.poll_interval = std::time::Duration::ZERO.into();
    // Held already, so that no pass writes its own finalizer from a stale copy.
    m.metadata.finalizers = Some(vec![MASTER_FINALIZER.to_string()]);
    m.spec.cloud.credentials_secret_ref = Some(SecretRef {
        name: cloud_secret.into(),
    });
    m
}

/// Names reconciled within `window`, sorted.
async fn within(done: &mut mpsc::UnboundedReceiver<String>, window: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + window;
    let mut seen = Vec::new();
    while let Ok(Some(name)) = tokio::time::timeout_at(deadline, done.next()).await {
        seen.push(name);
    }
    seen.sort();
    seen
}

fn secret_meta(name: &str, rv: &str, held: bool) -> SecretMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        resource_version: Some(rv.into()),
        finalizers: held.then(|| vec![SECRET_FINALIZER.to_string()]),
        ..Default::default()
    }
    .into_response_partial()
}

#[tokio::test]
async fn a_secret_change_reconciles_the_masters_referencing_it_but_not_their_own_hold() {
    let client = ClientBuilder::new()
        .with_resource::<PuppetMaster>()
        .with_resource::<PuppetNode>()
        .build()
        .await
        .unwrap();
    let api: Api<PuppetMaster> = Api::namespaced(client.clone(), NS);
    let mut masters = BTreeMap::new();
    for (name, cloud) in [("m1", "cloud-1"), ("m2", "cloud-2")] {
        let m = api
            .create(&PostParams::default(), &refused_master(name, cloud))
            .await
            .unwrap();
        masters.insert(name, m);
    }
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(RefusingFactory),
        Arc::new(MemoryEvents::default()),
        NodeSettings::default(),
    ));
    let (master_tx, master_rx) = mpsc::unbounded::<watcher::Event<GuardedMaster>>();
    let (secret_tx, secret_rx) = mpsc::unbounded::<watcher::Event<SecretMeta>>();
    let (reader, writer) = reflector::store();
    let master_stream = master_rx.map(Ok).reflect(writer).applied_objects();
    let secret_stream = secret_triggers(secret_rx.map(Ok));
    let (done_tx, mut done) = mpsc::unbounded();
    let controller = master_controller(master_stream, reader, secret_stream, 4).run(
        reconcile_master,
        master_error_policy,
        ctx,
    );
    tokio::spawn(async move {
        controller
            .for_each(|result| {
                let name = match result {
                    Ok((obj, _)) => obj.name,
                    Err(ControllerError::ReconcilerFailed(_, obj)) => obj.name,
                    Err(other) => format!("controller error: {other}"),
                };
                let _ = done_tx.unbounded_send(name);
                async {}
            })
            .await;
    });
    let send_master = |m: &PuppetMaster| {
        let obj: GuardedMaster = serde_json::from_value(guarded(m)).unwrap();
        master_tx
            .unbounded_send(watcher::Event::Apply(obj))
            .unwrap();
    };

    master_tx.unbounded_send(watcher::Event::Init).unwrap();
    master_tx.unbounded_send(watcher::Event::InitDone).unwrap();
    send_master(&masters["m1"]);
    send_master(&masters["m2"]);
    assert_eq!(
        within(&mut done, Duration::from_secs(2)).await,
        vec!["m1", "m2"]
    );

    // First sight of m1's cloud Secret, then the master's own hold on it: one reconcile.
    secret_tx
        .unbounded_send(watcher::Event::Apply(secret_meta("cloud-1", "1", false)))
        .unwrap();
    secret_tx
        .unbounded_send(watcher::Event::Apply(secret_meta("cloud-1", "2", true)))
        .unwrap();
    assert_eq!(within(&mut done, Duration::from_secs(2)).await, vec!["m1"]);

    // Rotated: new data, same finalizers.
    secret_tx
        .unbounded_send(watcher::Event::Apply(secret_meta("cloud-1", "3", true)))
        .unwrap();
    assert_eq!(within(&mut done, Duration::from_secs(2)).await, vec!["m1"]);

    // The CA client Secret both reference.
    secret_tx
        .unbounded_send(watcher::Event::Apply(secret_meta("ca-client", "4", true)))
        .unwrap();
    assert_eq!(
        within(&mut done, Duration::from_secs(2)).await,
        vec!["m1", "m2"]
    );

    // A Secret of the same name in another namespace is another Secret.
    let mut elsewhere = secret_meta("cloud-2", "5", false);
    elsewhere.metadata.namespace = Some("elsewhere".into());
    secret_tx
        .unbounded_send(watcher::Event::Apply(elsewhere))
        .unwrap();
    assert_eq!(
        within(&mut done, Duration::from_secs(2)).await,
        Vec::<String>::new()
    );

    // The master's own status write wakes nothing; a spec change does.
    let mut m1 = masters["m1"].clone();
    m1.metadata.resource_version = Some("999".into());
    m1.status = Some(Default::default());
    send_master(&m1);
    assert_eq!(
        within(&mut done, Duration::from_secs(2)).await,
        Vec::<String>::new()
    );
    m1.metadata.generation = Some(m1.metadata.generation.unwrap_or(1) + 1);
    send_master(&m1);
    assert_eq!(within(&mut done, Duration::from_secs(2)).await, vec!["m1"]);
}

/// Services that never answer (a describe hanging past SIGTERM); counts the calls that
/// started and those dropped unfinished.
struct HangingFactory {
    started: mpsc::UnboundedSender<String>,
    dropped: Arc<AtomicUsize>,
}

struct CountDrop(Arc<AtomicUsize>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl ServiceFactory for HangingFactory {
    async fn services(&self, m: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
        let _in_flight = CountDrop(self.dropped.clone());
        let _ = self
            .started
            .unbounded_send(m.metadata.name.clone().unwrap_or_default());
        std::future::pending::<()>().await;
        Err(ReconcileError::InvalidSpec("unreachable".into()))
    }
}

#[tokio::test]
async fn after_shutdown_no_reconcile_starts_and_one_in_flight_is_dropped_within_the_grace() {
    let client = ClientBuilder::new()
        .with_resource::<PuppetMaster>()
        .with_resource::<PuppetNode>()
        .build()
        .await
        .unwrap();
    let pp = PostParams::default();
    let master_api: Api<PuppetMaster> = Api::namespaced(client.clone(), NS);
    let node_api: Api<PuppetNode> = Api::namespaced(client.clone(), NS);
    for name in ["m1", "m2"] {
        let m = master(
            name,
            "http://127.0.0.1:1",
            "us-east-1",
            "b",
            Default::default(),
        );
        master_api.create(&pp, &m).await.unwrap();
    }
    let n1 = node_api
        .create(&pp, &node("n1", "m1", &["base"]))
        .await
        .unwrap();
    let n2 = node_api
        .create(&pp, &node("n2", "m2", &["base"]))
        .await
        .unwrap();

    let (started_tx, mut started) = mpsc::unbounded();
    let dropped = Arc::new(AtomicUsize::new(0));
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(HangingFactory {
            started: started_tx,
            dropped: dropped.clone(),
        }),
        Arc::new(MemoryEvents::default()),
        NodeSettings::default(),
    ));
    let (node_tx, node_rx) = mpsc::unbounded();
    let (_master_tx, master_rx) = mpsc::unbounded::<watcher::Event<GuardedMaster>>();
    let (reader, writer) = reflector::store();
    let shutdown = CancellationToken::new();
    let controller = node_controller(
        node_rx.map(Ok).reflect(writer).applied_objects(),
        reader,
        master_triggers(master_rx.map(Ok).applied_objects()),
        futures::stream::pending(),
        4,
    )
    .graceful_shutdown_on(shutdown.clone().cancelled_owned())
    .run(reconcile_node, node_error_policy, ctx)
    .for_each(|_| async {});
    let grace = Duration::from_millis(500);
    let token = shutdown.clone();
    let run = tokio::spawn(async move {
        let ended_by_itself = drain_within(controller, &token, grace).await;
        (ended_by_itself, tokio::time::Instant::now())
    });

    let send = |n: &PuppetNode| {
        let obj: GuardedNode = serde_json::from_value(guarded(n)).unwrap();
        node_tx.unbounded_send(watcher::Event::Apply(obj)).unwrap();
    };
    node_tx.unbounded_send(watcher::Event::Init).unwrap();
    node_tx.unbounded_send(watcher::Event::InitDone).unwrap();
    send(&n1);
    let first = tokio::time::timeout(Duration::from_secs(5), started.next())
        .await
        .unwrap();
    assert_eq!(first.as_deref(), Some("m1"), "n1's reconcile is in flight");

    let cancelled_at = tokio::time::Instant::now();
    shutdown.cancel();
    send(&n2);
    let (ended_by_itself, ended_at) = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the run ends within the grace")
        .unwrap();
    assert!(!ended_by_itself, "the hanging reconcile was still running");
    let took = ended_at - cancelled_at;
    assert!(
        took >= grace && took < grace + Duration::from_secs(1),
        "stopped {took:?} after the shutdown"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the call in flight was dropped"
    );
    assert!(
        started.try_recv().is_err(),
        "no reconcile started after the shutdown"
    );
}

#[tokio::test]
async fn a_shutdown_with_nothing_in_flight_stops_at_once() {
    let shutdown = CancellationToken::new();
    let (node_tx, node_rx) = mpsc::unbounded::<watcher::Event<GuardedNode>>();
    let (_master_tx, master_rx) = mpsc::unbounded::<watcher::Event<GuardedMaster>>();
    let (reader, writer) = reflector::store();
    let client = ClientBuilder::new().build().await.unwrap();
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(RefusingFactory),
        Arc::new(MemoryEvents::default()),
        NodeSettings::default(),
    ));
    let controller = node_controller(
        node_rx.map(Ok).reflect(writer).applied_objects(),
        reader,
        master_triggers(master_rx.map(Ok).applied_objects()),
        futures::stream::pending(),
        4,
    )
    .graceful_shutdown_on(shutdown.clone().cancelled_owned())
    .run(reconcile_node, node_error_policy, ctx)
    .for_each(|_| async {});
    let token = shutdown.clone();
    let run =
        tokio::spawn(
            async move { drain_within(controller, &token, Duration::from_secs(30)).await },
        );
    // Its store gets ready (kube's controller does not end by itself before that: the
    // grace bounds that case too), then SIGTERM.
    node_tx.unbounded_send(watcher::Event::Init).unwrap();
    node_tx.unbounded_send(watcher::Event::InitDone).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .expect("stops without waiting for the grace")
        .unwrap();
    assert!(ended, "ended by itself");
}
