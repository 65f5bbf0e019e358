//! The in-use finalizer on the Secrets a PuppetMaster references: held by the master
//! reconcile (once: no write when held), kept while a deleting master's nodes still need
//! them, released before the master itself, kept while another master needs a shared one,
//! and released by the hold sweep when a reference moved. kube-fake-client drops deleted
//! objects at once, so deleted states are built as the API server stores them (a
//! deletionTimestamp with the finalizers kept) in a fresh fake API, as in
//! `Harness::deleted_copy`.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::PartialObjectMetaExt;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::{reflector, watcher};
use kube::ResourceExt;
use kube_fake_client::{interceptor, ClientBuilder};
use puppet_conductor::api::{PuppetMaster, PuppetNode, SecretRef};
use puppet_conductor::controller::context::NodeSettings;
use puppet_conductor::controller::events::MemoryEvents;
use puppet_conductor::controller::services::{
    ClientSettings, KubeServiceFactory, MasterServices, ServiceFactory,
};
use puppet_conductor::controller::{
    master, Context, ReconcileError, MASTER_FINALIZER, SECRET_FINALIZER,
};
use puppet_conductor::runner::triggers::SecretMeta;
use puppet_conductor::runner::wiring::{sweep_holds, GuardedMaster, GuardedNode, HoldCaches};

use crate::node_support::{master, node, NS};

/// The master reconcile must hold its Secrets whatever its services do; here they fail.
struct NoServices;

#[async_trait::async_trait]
impl ServiceFactory for NoServices {
    async fn services(&self, _: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
        Err(ReconcileError::InvalidSpec("test: no services".into()))
    }
}

/// A fake API holding these objects; records the name of every metadata PATCH in order,
/// and can fail the next PATCH of one name (a crash at that write).
struct World {
    client: kube::Client,
    ctx: Arc<Context>,
    patched: Arc<Mutex<Vec<String>>>,
    fail_next_patch_of: Arc<Mutex<Option<String>>>,
    created: Arc<Mutex<Vec<String>>>,
}

async fn world_with(
    masters: Vec<PuppetMaster>,
    nodes: Vec<PuppetNode>,
    secrets: Vec<Secret>,
    factory: Option<Arc<dyn ServiceFactory>>,
) -> World {
    let patched = Arc::new(Mutex::new(Vec::new()));
    let fail_next_patch_of: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let created = Arc::new(Mutex::new(Vec::new()));
    let (p, f, c) = (patched.clone(), fail_next_patch_of.clone(), created.clone());
    let mut builder = ClientBuilder::new()
        .with_resource::<PuppetMaster>()
        .with_resource::<PuppetNode>()
        .with_interceptor_funcs(
            interceptor::Funcs::new()
                .patch(move |ctx| {
                    p.lock().unwrap().push(ctx.name.to_string());
                    let mut fail = f.lock().unwrap();
                    if fail.as_deref() == Some(ctx.name) {
                        *fail = None;
                        return Err(kube_fake_client::Error::Internal("test: crash".into()));
                    }
                    Ok(None)
                })
                .create(move |ctx| {
                    let name = ctx.object["metadata"]["name"].as_str().unwrap_or_default();
                    c.lock().unwrap().push(name.to_string());
                    Ok(None)
                }),
        );
    for m in masters {
        builder = builder.with_object(m);
    }
    for n in nodes {
        builder = builder.with_object(n);
    }
    for s in secrets {
        builder = builder.with_object(s);
    }
    let client = builder.build().await.unwrap();
    let factory = factory.unwrap_or_else(|| Arc::new(NoServices));
    let ctx = Arc::new(Context::new(
        client.clone(),
        factory,
        Arc::new(MemoryEvents::default()),
        NodeSettings::default(),
    ));
    World {
        client,
        ctx,
        patched,
        fail_next_patch_of,
        created,
    }
}

async fn world(masters: Vec<PuppetMaster>, nodes: Vec<PuppetNode>, secrets: Vec<Secret>) -> World {
    world_with(masters, nodes, secrets, None).await
}

fn secret(name: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some(NS.into());
    s.data = Some([("key".to_string(), ByteString(vec![1u8; 32]))].into());
    s
}

fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    puppet_conductor::status::conditions::time(chrono::Utc::now())
}

/// A master referencing `ca-client`, `cloud` (node_support's) and `records`.
fn master_with_records(name: &str) -> PuppetMaster {
    let mut m = master(
        name,
        "http://127.0.0.1:1",
        "us-east-1",
        "b",
        Default::default(),
    );
    m.spec.records.credentials_secret_ref = Some(SecretRef {
        name: "records".into(),
    });
    m
}

impl World {
    fn masters(&self) -> Api<PuppetMaster> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn reconcile(&self, name: &str) -> Result<Requeue, ReconcileError> {
        let m = self.masters().get(name).await.unwrap();
        master::reconcile(Arc::new(m), self.ctx.clone()).await
    }

    async fn held(&self, name: &str) -> bool {
        self.secrets()
            .get(name)
            .await
            .unwrap()
            .finalizers()
            .iter()
            .any(|f| f == SECRET_FINALIZER)
    }

    fn patches_of(&self, names: &[&str]) -> usize {
        self.patched
            .lock()
            .unwrap()
            .iter()
            .filter(|n| names.contains(&n.as_str()))
            .count()
    }

    /// The same objects with `deleted` marked for deletion (finalizers kept), in a fresh API.
    async fn with_deleted(&self, deleted: &[&str], gone_nodes: &[&str]) -> World {
        let mut masters = self
            .masters()
            .list(&Default::default())
            .await
            .unwrap()
            .items;
        for m in &mut masters {
            if deleted.contains(&m.name_any().as_str()) {
                m.metadata.deletion_timestamp = Some(now());
            }
        }
        let nodes: Api<PuppetNode> = Api::namespaced(self.client.clone(), NS);
        let nodes = nodes.list(&Default::default()).await.unwrap().items;
        let nodes = nodes
            .into_iter()
            .filter(|n| !gone_nodes.contains(&n.name_any().as_str()))
            .collect();
        let secrets = self
            .secrets()
            .list(&Default::default())
            .await
            .unwrap()
            .items;
        world(masters, nodes, secrets).await
    }
}

const SECRETS: [&str; 4] = ["ca-client", "cloud", "records", "pm-challenge-key"];

#[tokio::test]
async fn the_master_reconcile_holds_each_referenced_secret_once() {
    let mut secrets: Vec<Secret> = SECRETS.iter().map(|n| secret(n)).collect();
    // Someone else's finalizer stays beside ours.
    secrets[1].metadata.finalizers = Some(vec!["example.com/keep".into()]);
    secrets.push(secret("unrelated"));
    let w = world(vec![master_with_records("pm")], vec![], secrets).await;

    w.reconcile("pm").await.unwrap();
    for name in SECRETS {
        assert!(w.held(name).await, "{name} held");
    }
    assert_eq!(
        w.secrets().get("cloud").await.unwrap().finalizers(),
        ["example.com/keep".to_string(), SECRET_FINALIZER.to_string()]
    );
    assert!(!w.held("unrelated").await);
    assert_eq!(w.patches_of(&SECRETS), 4, "one PATCH per Secret");

    // A second pass finds them held and writes nothing (it must not wake itself).
    w.reconcile("pm").await.unwrap();
    assert_eq!(w.patches_of(&SECRETS), 4, "no write when already held");
    assert_eq!(w.patches_of(&["unrelated"]), 0);
}

#[tokio::test]
async fn a_secret_already_being_deleted_is_not_held_and_not_recreated() {
    // The API refuses new finalizers on an object being deleted; another finalizer keeps
    // this one Terminating, and it must still be read, never created anew.
    let mut key = secret("pm-challenge-key");
    key.metadata.deletion_timestamp = Some(now());
    key.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    let w = world(
        vec![master_with_records("pm")],
        vec![],
        vec![secret("ca-client"), key],
    )
    .await;
    w.reconcile("pm").await.unwrap();
    assert!(w.held("ca-client").await);
    assert!(!w.held("pm-challenge-key").await);
    assert_eq!(w.patches_of(&["pm-challenge-key"]), 0);
    assert!(w.created.lock().unwrap().is_empty());
}

fn tls_secret(name: &str) -> Secret {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let mut s = secret(name);
    s.data = Some(
        [
            ("tls.crt", cert.pem()),
            ("tls.key", signing_key.serialize_pem()),
            ("ca.crt", cert.pem()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
        .collect(),
    );
    s
}

fn credentials_secret(name: &str) -> Secret {
    let mut s = secret(name);
    s.data = Some(
        [("accessKeyId", "AKIDTEST"), ("secretAccessKey", "secret")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    );
    s
}

#[tokio::test]
async fn terminating_secrets_are_still_read_and_the_challenge_key_is_not_recreated() {
    // What nodes being cleaned up in a terminating namespace read: every Secret of the
    // master is Terminating, kept by our finalizer.
    let mut secrets = vec![
        tls_secret("ca-client"),
        credentials_secret("cloud"),
        credentials_secret("records"),
        secret("pm-challenge-key"),
    ];
    for s in &mut secrets {
        s.metadata.deletion_timestamp = Some(now());
        s.metadata.finalizers = Some(vec![SECRET_FINALIZER.into()]);
    }
    let w = world(vec![master_with_records("pm")], vec![], secrets).await;
    let factory = KubeServiceFactory::new(w.client.clone(), ClientSettings::default());
    let m = w.masters().get("pm").await.unwrap();
    let services = factory.services(&m).await.unwrap();
    assert_eq!(
        services.challenge_key.as_bytes(),
        &[1u8; 32][..],
        "the existing key"
    );
    assert!(
        w.created.lock().unwrap().is_empty(),
        "no Secret created in a terminating namespace"
    );
}

#[tokio::test]
async fn a_deleting_master_keeps_its_secrets_until_no_node_names_it_and_releases_them_first() {
    let secrets = SECRETS.iter().map(|n| secret(n)).collect();
    let live = world(
        vec![master_with_records("pm")],
        vec![node("n1", "pm", &["base"])],
        secrets,
    )
    .await;
    live.reconcile("pm").await.unwrap();

    // Namespace deletion: the master is marked deleted while its node cleans up.
    let w = live.with_deleted(&["pm"], &[]).await;
    assert_eq!(
        w.reconcile("pm").await.unwrap(),
        Requeue::requeue(std::time::Duration::from_secs(5))
    );
    for name in SECRETS {
        assert!(
            w.held(name).await,
            "{name} held while a node names the master"
        );
    }
    assert_eq!(w.patches_of(&SECRETS), 0, "held already: no write");

    // The node finished its cleanup. A crash at the master's own release leaves the
    // Secrets released and the master still there, to be released on the next pass.
    let w = w.with_deleted(&[], &["n1"]).await;
    *w.fail_next_patch_of.lock().unwrap() = Some("pm".into());
    assert!(w.reconcile("pm").await.is_err());
    for name in SECRETS {
        assert!(!w.held(name).await, "{name} released first");
    }
    let order = w.patched.lock().unwrap().clone();
    assert_eq!(order.last().map(String::as_str), Some("pm"), "{order:?}");
    assert_eq!(
        w.masters().get("pm").await.unwrap().finalizers(),
        [MASTER_FINALIZER.to_string()]
    );
    assert_eq!(w.reconcile("pm").await.unwrap(), Requeue::await_change());
    assert!(w.masters().get_opt("pm").await.unwrap().is_none());
}

#[tokio::test]
async fn a_secret_shared_by_two_masters_stays_held_until_both_are_gone() {
    // node_support's masters all reference `ca-client` and `cloud`.
    let m = |name| {
        master(
            name,
            "http://127.0.0.1:1",
            "us-east-1",
            "b",
            Default::default(),
        )
    };
    let secrets = ["ca-client", "cloud", "a-challenge-key", "b-challenge-key"]
        .iter()
        .map(|n| secret(n))
        .collect();
    let live = world(vec![m("a"), m("b")], vec![], secrets).await;
    live.reconcile("a").await.unwrap();
    live.reconcile("b").await.unwrap();

    let w = live.with_deleted(&["a"], &[]).await;
    assert_eq!(w.reconcile("a").await.unwrap(), Requeue::await_change());
    assert!(w.masters().get_opt("a").await.unwrap().is_none());
    assert!(!w.held("a-challenge-key").await, "a's own Secret released");
    assert!(w.held("ca-client").await, "b still needs it");
    assert!(w.held("cloud").await, "b still needs it");

    let w = w.with_deleted(&["b"], &[]).await;
    assert_eq!(w.reconcile("b").await.unwrap(), Requeue::await_change());
    for name in ["ca-client", "cloud", "b-challenge-key"] {
        assert!(!w.held(name).await, "{name} released with the last master");
    }
}

#[tokio::test]
async fn two_masters_released_together_do_not_leave_a_shared_secret_held() {
    // Both being deleted and no node names either: each release must not count the other
    // as a holder, or the shared Secrets would be held by no one once both are gone.
    let m = |name| {
        master(
            name,
            "http://127.0.0.1:1",
            "us-east-1",
            "b",
            Default::default(),
        )
    };
    let live = world(
        vec![m("a"), m("b")],
        vec![],
        vec![secret("ca-client"), secret("cloud")],
    )
    .await;
    live.reconcile("a").await.unwrap();
    live.reconcile("b").await.unwrap();
    let w = live.with_deleted(&["a", "b"], &[]).await;
    w.reconcile("a").await.unwrap();
    assert!(!w.held("ca-client").await);
    assert!(!w.held("cloud").await);
}

/// Caches as the runner's watches would hold them, from the API's current state.
async fn caches(w: &World) -> HoldCaches {
    let (secrets, mut secret_writer) = reflector::store::<SecretMeta>();
    for s in w.secrets().list(&Default::default()).await.unwrap().items {
        secret_writer
            .apply_watcher_event(&watcher::Event::Apply(s.metadata.into_response_partial()));
    }
    let (masters, mut master_writer) = reflector::store::<GuardedMaster>();
    let guarded: Api<GuardedMaster> = Api::namespaced(w.client.clone(), NS);
    for m in guarded.list(&Default::default()).await.unwrap().items {
        master_writer.apply_watcher_event(&watcher::Event::Apply(m));
    }
    let (nodes, _) = reflector::store::<GuardedNode>();
    HoldCaches {
        secrets,
        masters,
        nodes,
    }
}

#[tokio::test]
async fn a_changed_reference_releases_the_old_secret_once_no_master_needs_it() {
    let mut other = master(
        "other",
        "http://127.0.0.1:1",
        "us-east-1",
        "b",
        Default::default(),
    );
    other.spec.cloud.credentials_secret_ref = Some(SecretRef {
        name: "cloud-old".into(),
    });
    let mut pm = other.clone();
    pm.metadata.name = Some("pm".into());
    let secrets = ["ca-client", "cloud-old", "cloud-new"]
        .iter()
        .map(|n| secret(n))
        .collect();
    let w = world(vec![pm, other], vec![], secrets).await;
    w.reconcile("pm").await.unwrap();
    assert!(w.held("cloud-old").await);

    w.masters()
        .patch(
            "pm",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": {"cloud": {"credentialsSecretRef": {"name": "cloud-new"}}}
            })),
        )
        .await
        .unwrap();
    w.reconcile("pm").await.unwrap();
    assert!(w.held("cloud-new").await, "the new reference is held");

    // `other` still references the old one: the sweep keeps it.
    sweep_holds(&w.ctx, &caches(&w).await).await;
    assert!(w.held("cloud-old").await, "another master still needs it");

    w.masters()
        .delete("other", &DeleteParams::default())
        .await
        .unwrap();
    sweep_holds(&w.ctx, &caches(&w).await).await;
    assert!(
        !w.held("cloud-old").await,
        "released once no master needs it"
    );
    assert!(w.held("cloud-new").await);
    assert!(w.held("ca-client").await);
}

#[tokio::test]
async fn the_sweep_releases_nothing_a_master_missing_from_the_cache_needs() {
    // The caches may lag or miss another shard's masters: a release is confirmed against
    // the API first.
    let w = world(
        vec![master(
            "pm",
            "http://127.0.0.1:1",
            "us-east-1",
            "b",
            Default::default(),
        )],
        vec![],
        vec![secret("ca-client")],
    )
    .await;
    w.reconcile("pm").await.unwrap();
    assert!(w.held("ca-client").await);
    let mut c = caches(&w).await;
    c.masters = reflector::store::<GuardedMaster>().0;
    sweep_holds(&w.ctx, &c).await;
    assert!(w.held("ca-client").await);
}

#[tokio::test]
async fn services_read_no_secret_while_the_watch_shows_the_versions_they_were_built_from() {
    let gets = Arc::new(Mutex::new(Vec::<String>::new()));
    let g = gets.clone();
    let mut builder = ClientBuilder::new()
        .with_resource::<PuppetMaster>()
        .with_interceptor_funcs(interceptor::Funcs::new().get(move |ctx| {
            g.lock().unwrap().push(ctx.name.to_string());
            Ok(None)
        }))
        .with_object(master_with_records("pm"));
    for s in [
        tls_secret("ca-client"),
        credentials_secret("cloud"),
        credentials_secret("records"),
        secret("pm-challenge-key"),
    ] {
        builder = builder.with_object(s);
    }
    let client = builder.build().await.unwrap();
    let masters: Api<PuppetMaster> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let m = masters.get("pm").await.unwrap();
    let factory = KubeServiceFactory::new(client.clone(), ClientSettings::default());
    let secret_reads = || {
        gets.lock()
            .unwrap()
            .iter()
            .filter(|n| n.as_str() != "pm")
            .count()
    };

    // Without the watch's metadata every pass reads the four Secrets.
    let first = factory.services(&m).await.unwrap();
    assert_eq!(secret_reads(), 4);
    factory.services(&m).await.unwrap();
    assert_eq!(secret_reads(), 8);

    // With it, a pass whose Secrets did not change reads none and shares the services.
    let (store, mut writer) = reflector::store::<SecretMeta>();
    for s in secrets.list(&Default::default()).await.unwrap().items {
        writer.apply_watcher_event(&watcher::Event::Apply(s.metadata.into_response_partial()));
    }
    factory.attach_secret_versions(store);
    let again = factory.services(&m).await.unwrap();
    assert_eq!(secret_reads(), 8, "no Secret read");
    assert!(Arc::ptr_eq(&first, &again));

    // A rotated Secret (a new resourceVersion in the watch) is read, the services rebuilt.
    let mut cloud = secrets.get("cloud").await.unwrap();
    cloud.data = credentials_secret("cloud").data.map(|mut d| {
        d.insert("secretAccessKey".into(), ByteString(b"rotated".to_vec()));
        d
    });
    let cloud = secrets
        .replace("cloud", &Default::default(), &cloud)
        .await
        .unwrap();
    let reads = secret_reads();
    writer.apply_watcher_event(&watcher::Event::Apply(
        cloud.metadata.into_response_partial(),
    ));
    let rebuilt = factory.services(&m).await.unwrap();
    assert!(secret_reads() > reads, "the rotation is read");
    assert!(!Arc::ptr_eq(&first, &rebuilt));

    // A Secret the watch does not show (deleted, or not delivered yet) is read, never
    // assumed unchanged.
    let (empty, _) = reflector::store::<SecretMeta>();
    let other = KubeServiceFactory::new(client.clone(), ClientSettings::default());
    other.attach_secret_versions(empty);
    let reads = secret_reads();
    other.services(&m).await.unwrap();
    other.services(&m).await.unwrap();
    assert_eq!(secret_reads(), reads + 8);
}

/// The in-memory cloud, bucket and CA (the node passes need services to reach the holds).
async fn fake_services() -> Arc<MasterServices> {
    use puppet_conductor::fakes::{ca::FakeCa, ec2::FakeEc2, records::FakeRecords, Faults};
    let gate = Arc::new(Faults::default());
    let ca = Arc::new(FakeCa::new(gate.clone()));
    let ca_cert_pem = puppet_conductor::ca::PuppetCa::ca_certificate(ca.as_ref())
        .await
        .unwrap();
    Arc::new(MasterServices {
        cloud: Arc::new(FakeEc2::new(gate.clone())),
        records: Arc::new(FakeRecords::new(gate, "nodes/")),
        ca,
        ca_cert_pem,
        challenge_key: puppet_conductor::identity::ChallengeKey::from_bytes(&[7u8; 32]).unwrap(),
    })
}

struct FakeServices(Arc<MasterServices>);

#[async_trait::async_trait]
impl ServiceFactory for FakeServices {
    async fn services(&self, _: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
        Ok(self.0.clone())
    }
}

/// Node passes of one master started together (the creation burst of a fleet), with the
/// watches attached but behind: the first pass holds the Secrets and the master, the
/// others read and patch none of them. A finalizer removed behind the operator's back is
/// held again once the watch shows the removal.
#[tokio::test]
async fn a_burst_of_node_passes_holds_the_secrets_and_the_master_once() {
    let secrets: Vec<Secret> = SECRETS.iter().map(|n| secret(n)).collect();
    let nodes: Vec<PuppetNode> = (0..20)
        .map(|i| node(&format!("n{i}"), "pm", &["role::web"]))
        .collect();
    let gets = Arc::new(Mutex::new(Vec::<String>::new()));
    let patched = Arc::new(Mutex::new(Vec::<String>::new()));
    let (g, p) = (gets.clone(), patched.clone());
    let mut builder = ClientBuilder::new()
        .with_resource::<PuppetMaster>()
        .with_resource::<PuppetNode>()
        .with_interceptor_funcs(
            interceptor::Funcs::new()
                .get(move |ctx| {
                    g.lock().unwrap().push(ctx.name.to_string());
                    Ok(None)
                })
                .patch(move |ctx| {
                    p.lock().unwrap().push(ctx.name.to_string());
                    Ok(None)
                }),
        )
        .with_object(master_with_records("pm"));
    for n in nodes {
        builder = builder.with_object(n);
    }
    for s in secrets {
        builder = builder.with_object(s);
    }
    let client = builder.build().await.unwrap();
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(FakeServices(fake_services().await)),
        Arc::new(MemoryEvents::default()),
        NodeSettings::default(),
    ));
    // The watches as they are just after start: synced, the objects not delivered yet.
    let (store, mut writer) = reflector::store::<SecretMeta>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    ctx.secret_cache.attach(store);
    let count = |log: &Arc<Mutex<Vec<String>>>, names: &[&str]| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|n| names.contains(&n.as_str()))
            .count()
    };

    let nodes_api: Api<PuppetNode> = Api::namespaced(client.clone(), NS);
    let passes = nodes_api.list(&Default::default()).await.unwrap().items;
    let passes = passes.into_iter().map(|n| {
        let ctx = ctx.clone();
        async move { puppet_conductor::controller::node::reconcile(Arc::new(n), ctx).await }
    });
    let _ = futures::future::join_all(passes).await;
    assert_eq!(count(&gets, &SECRETS), 4, "each Secret read once");
    assert_eq!(count(&patched, &SECRETS), 4, "each Secret patched once");
    assert_eq!(count(&patched, &["pm"]), 1, "the master patched once");
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), NS);
    for name in SECRETS {
        let s = secrets_api.get(name).await.unwrap();
        assert!(
            s.finalizers().iter().any(|f| f == SECRET_FINALIZER),
            "{name} held"
        );
    }

    // Someone strips the finalizer of `cloud`, and the watch shows it: the next pass
    // holds it again.
    let stripped = secrets_api
        .patch(
            "cloud",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    writer.apply_watcher_event(&watcher::Event::Apply(
        stripped.metadata.into_response_partial(),
    ));
    let n0 = nodes_api.get("n0").await.unwrap();
    let mut n0 = n0;
    n0.metadata.finalizers = None;
    let _ = puppet_conductor::controller::node::reconcile(Arc::new(n0), ctx.clone()).await;
    let cloud = secrets_api.get("cloud").await.unwrap();
    assert!(
        cloud.finalizers().iter().any(|f| f == SECRET_FINALIZER),
        "held again once the watch showed it gone"
    );
}
