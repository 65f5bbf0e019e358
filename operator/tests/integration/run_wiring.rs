//! `run`'s controller wiring, driven with hand-fed watch streams (kube-fake-client has no
//! watch) and the real reconcile functions against kube-fake-client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Error as ControllerError;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube_fake_client::ClientBuilder;
use puppet_conductor::api::{PuppetMaster, PuppetNode};
use puppet_conductor::controller::context::NodeSettings;
use puppet_conductor::controller::events::MemoryEvents;
use puppet_conductor::controller::services::{MasterServices, ServiceFactory};
use puppet_conductor::controller::{Context, ReconcileError};
use puppet_conductor::runner::wiring::{
    master_triggers, node_controller, node_error_policy, reconcile_node, GuardedMaster, GuardedNode,
};

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
    let (done_tx, reconciled) = mpsc::unbounded();
    let controller = node_controller(node_stream, reader, master_stream, 4).run(
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
