//! The paused annotation (`puppet-conductor.dev/paused: "true"`) at the reconciler level:
//! kube-fake-client for the API, the in-memory fakes of `crates/fakes` for EC2, S3 and the
//! CA behind a [`Faults`] gate whose log shows every call the passes made. A paused node
//! or master only observes and reports; unpausing resumes at once; deletion is never
//! paused. No service is needed: these tests always run.

use std::sync::Arc;

use chrono::Utc;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use puppet_conductor::api::master::{OrphanAction, OrphanSpec};
use puppet_conductor::api::node::Phase;
use puppet_conductor::api::{PuppetMaster, PAUSED_ANNOTATION};
use puppet_conductor::ca::{CertState, PuppetCa};
use puppet_conductor::cloud::{tags, Cloud, InstanceSettings, InstanceState, LaunchRequest};
use puppet_conductor::controller::services::{MasterServices, ServiceFactory};
use puppet_conductor::controller::{master, ReconcileError, NODE_FINALIZER};
use puppet_conductor::fakes::ca::FakeCa;
use puppet_conductor::fakes::ec2::FakeEc2;
use puppet_conductor::fakes::records::FakeRecords;
use puppet_conductor::fakes::{Faults, Gate};
use puppet_conductor::identity::ChallengeKey;

use crate::node_support::{master as master_object, node, Harness, NS};

/// The calls that change something: a launch, a termination, a signature, a CA clean or
/// CSR removal, a bucket write or deletion. A paused pass makes none of them.
const MUTATING: [&str; 7] = [
    "RunInstances",
    "TerminateInstances",
    "sign",
    "clean",
    "remove_request",
    "PutObject",
    "DeleteObject",
];

/// The fakes of one test, every call logged by `faults`.
struct Fakes {
    faults: Arc<Faults>,
    ec2: Arc<FakeEc2>,
    records: Arc<FakeRecords>,
    ca: Arc<FakeCa>,
    services: Arc<MasterServices>,
}

#[async_trait::async_trait]
impl ServiceFactory for Fakes {
    async fn services(&self, _: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
        Ok(self.services.clone())
    }
}

impl Fakes {
    async fn new() -> Arc<Self> {
        let faults = Arc::new(Faults::default());
        let gate: Arc<dyn Gate> = faults.clone();
        // A day back: what the fakes hold is older than any orphans.minAge, whatever the
        // wall clock did during the test.
        let past = Utc::now() - chrono::Duration::days(1);
        let ec2 = Arc::new(FakeEc2::new(gate.clone()).with_epoch(past));
        let records = Arc::new(FakeRecords::new(gate.clone(), "nodes/").with_epoch(past));
        let ca = Arc::new(FakeCa::new(gate).with_epoch(past));
        let ca_pem = ca.ca_certificate().await.unwrap();
        let services = Arc::new(MasterServices {
            cloud: ec2.clone(),
            records: records.clone(),
            ca: ca.clone(),
            ca_cert_pem: ca_pem,
            challenge_key: ChallengeKey::from_bytes(&[7u8; 32]).unwrap(),
        });
        Arc::new(Self {
            faults,
            ec2,
            records,
            ca,
            services,
        })
    }

    /// How many calls were made so far (a mark for [`Fakes::writes_since`]).
    fn mark(&self) -> usize {
        self.faults.log().len()
    }

    /// The mutating calls made since `mark`, as `operation target`.
    fn writes_since(&self, mark: usize) -> Vec<String> {
        self.faults
            .log()
            .into_iter()
            .skip(mark)
            .filter(|(call, _)| MUTATING.contains(&call.operation))
            .map(|(call, _)| format!("{} {}", call.operation, call.target))
            .collect()
    }

    fn live_instances(&self) -> Vec<puppet_conductor::cloud::Instance> {
        self.ec2
            .instances()
            .into_iter()
            .map(|i| i.instance)
            .filter(|i| matches!(i.state, InstanceState::Pending | InstanceState::Running))
            .collect()
    }
}

fn paused_annotation(value: Option<&str>) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {PAUSED_ANNOTATION: value}}})
}

fn paused<K: ResourceExt>(mut object: K) -> K {
    object
        .annotations_mut()
        .insert(PAUSED_ANNOTATION.to_string(), "true".to_string());
    object
}

async fn set_paused<K>(api: &Api<K>, name: &str, value: Option<&str>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&paused_annotation(value)),
    )
    .await
    .unwrap();
}

fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// `(status, reason, message)` of the node's condition `type_`.
async fn node_condition(h: &Harness, name: &str, type_: &str) -> (String, String, String) {
    let n = h.get(name).await;
    let c = condition(&n.status.unwrap_or_default().conditions, type_)
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} condition on {name}"));
    (c.status, c.reason, c.message)
}

fn masters(h: &Harness) -> Api<PuppetMaster> {
    Api::namespaced(h.ctx.client.clone(), NS)
}

fn test_master() -> PuppetMaster {
    master_object(
        "pm",
        "http://127.0.0.1:1",
        "us-east-1",
        "records",
        Default::default(),
    )
}

fn events_with_reason(h: &Harness, object: &str, reason: &str) -> usize {
    h.events
        .all()
        .iter()
        .filter(|e| e.object == format!("{NS}/{object}") && e.reason == reason)
        .count()
}

/// Reconciles `name` `n` times; every pass must succeed.
async fn passes(h: &Harness, name: &str, n: usize) {
    for _ in 0..n {
        h.reconcile(name).await.unwrap();
    }
}

/// A launched node: reconciled until its instance runs (the fakes boot at once).
async fn running_node(fakes: &Arc<Fakes>, name: &str) -> Harness {
    let h = Harness::new(
        fakes.clone(),
        (test_master(), vec![node(name, "pm", &["base"])]),
    )
    .await;
    passes(&h, name, 3).await;
    let status = h.get(name).await.status.unwrap();
    assert_eq!(status.phase, Some(Phase::AwaitingCsr), "{status:?}");
    assert_eq!(fakes.live_instances().len(), 1);
    h
}

#[tokio::test]
async fn a_paused_new_node_launches_nothing_gets_no_finalizer_and_says_paused() {
    let fakes = Fakes::new().await;
    let h = Harness::new(
        fakes.clone(),
        (test_master(), vec![paused(node("web-1", "pm", &["base"]))]),
    )
    .await;
    let mark = fakes.mark();
    passes(&h, "web-1", 3).await;

    assert_eq!(fakes.writes_since(mark), Vec::<String>::new());
    assert!(fakes.ec2.instances().is_empty(), "nothing launched");
    assert!(fakes.records.objects().is_empty(), "no record written");
    let n = h.get("web-1").await;
    assert!(
        n.finalizers().is_empty(),
        "no finalizer: {:?}",
        n.finalizers()
    );
    let (status, reason, message) = node_condition(&h, "web-1", "Paused").await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Paused"));
    assert!(message.contains("PuppetNode web-1"), "{message}");
    let (status, reason, _) = node_condition(&h, "web-1", "Ready").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Paused"));
    assert_eq!(
        n.status.unwrap().phase,
        Some(Phase::Pending),
        "nothing is being launched"
    );
    assert_eq!(
        events_with_reason(&h, "web-1", "Paused"),
        1,
        "one event on the transition, not one a pass"
    );
}

#[tokio::test]
async fn unpausing_a_paused_node_launches_it_at_once() {
    let fakes = Fakes::new().await;
    let h = Harness::new(
        fakes.clone(),
        (test_master(), vec![paused(node("web-1", "pm", &["base"]))]),
    )
    .await;
    passes(&h, "web-1", 2).await;
    assert!(fakes.ec2.instances().is_empty());

    set_paused(&h.nodes, "web-1", None).await;
    passes(&h, "web-1", 2).await;

    assert_eq!(
        fakes.live_instances().len(),
        1,
        "launched on the first pass"
    );
    assert_eq!(h.get("web-1").await.finalizers(), [NODE_FINALIZER]);
    let (status, reason, _) = node_condition(&h, "web-1", "Paused").await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Resumed"));
    assert_eq!(events_with_reason(&h, "web-1", "Resumed"), 1);
    // "false" pauses nothing either.
    set_paused(&h.nodes, "web-1", Some("false")).await;
    let mark = fakes.mark();
    passes(&h, "web-1", 1).await;
    assert!(fakes.faults.log().len() > mark, "the pass observed");
    assert_eq!(node_condition(&h, "web-1", "Paused").await.0, "False");
}

#[tokio::test]
async fn a_paused_running_node_is_not_fenced_or_replaced_when_its_instance_is_terminated_outside() {
    let fakes = Fakes::new().await;
    let h = running_node(&fakes, "web-1").await;
    let id = fakes.live_instances()[0].id.clone();
    set_paused(&h.nodes, "web-1", Some("true")).await;
    passes(&h, "web-1", 1).await;

    assert!(fakes.ec2.terminate_outside(&id));
    let mark = fakes.mark();
    passes(&h, "web-1", 3).await;

    assert_eq!(fakes.writes_since(mark), Vec::<String>::new());
    assert_eq!(fakes.ec2.instances().len(), 1, "no replacement launched");
    let uid = h.get("web-1").await.uid().unwrap();
    let first = puppet_conductor::identity::certname(&uid, 1, None);
    let record = fakes.records.record(&first).expect("the record stays");
    assert_eq!(
        record.state,
        puppet_conductor::records::RecordState::Live,
        "not marked fencing"
    );
    let (status, _, message) = node_condition(&h, "web-1", "Paused").await;
    assert_eq!(status, "True", "{message}");
    // (The incarnation status shows is not asserted: kube-fake-client merges a status
    // apply into the stored status instead of dropping the fields the apply omits.)

    // Resumed: the dead incarnation is fenced (its record retired) and a next one launched.
    set_paused(&h.nodes, "web-1", None).await;
    passes(&h, "web-1", 3).await;
    let live = fakes.live_instances();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_ne!(
        live[0].tags.get(tags::INCARNATION).map(String::as_str),
        Some("1")
    );
    assert!(
        fakes.records.record(&first).is_none(),
        "incarnation 1 retired"
    );
}

#[tokio::test]
async fn a_paused_nodes_waiting_csr_is_neither_signed_nor_removed_until_it_resumes() {
    let fakes = Fakes::new().await;
    let h = running_node(&fakes, "web-1").await;
    let instance = fakes.ec2.instances().remove(0);
    let certname = instance.instance.tags[tags::CERTNAME].clone();
    let (challenge, pp_instance_id) = {
        let rendered = instance.request.user_data.replace(
            puppet_conductor::userdata::INSTANCE_ID_EXPR,
            &instance.instance.id,
        );
        puppet_conductor::userdata::rendered_csr_attributes(&rendered).unwrap()
    };
    set_paused(&h.nodes, "web-1", Some("true")).await;
    passes(&h, "web-1", 1).await;
    fakes
        .ca
        .submit_csr(
            &certname,
            &crate::autosign_binary::csr(&certname, &challenge, &pp_instance_id),
        )
        .unwrap();

    let mark = fakes.mark();
    passes(&h, "web-1", 3).await;
    assert_eq!(fakes.writes_since(mark), Vec::<String>::new());
    assert!(
        fakes.ca.requests().iter().any(|c| c.certname == certname),
        "the CSR still waits"
    );
    assert!(fakes.ca.signed().is_empty(), "nothing signed");

    set_paused(&h.nodes, "web-1", None).await;
    passes(&h, "web-1", 2).await;
    assert!(
        fakes
            .ca
            .signed()
            .iter()
            .any(|c| c.certname == certname && c.state == CertState::Signed),
        "signed once resumed"
    );
}

#[tokio::test]
async fn a_paused_node_that_is_deleted_is_cleaned_up_and_released() {
    let fakes = Fakes::new().await;
    let h = running_node(&fakes, "web-1").await;
    set_paused(&h.nodes, "web-1", Some("true")).await;
    passes(&h, "web-1", 1).await;
    let certname = h.get("web-1").await.status.unwrap().certname.unwrap();

    let d = h.deleted_copy("web-1").await;
    for _ in 0..6 {
        if !d.exists("web-1").await {
            break;
        }
        match d.reconcile("web-1").await {
            Ok(_) => {}
            Err(e) if matches!(e.root(), ReconcileError::CleanupInProgress(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(!d.exists("web-1").await, "the finalizer was released");
    assert!(fakes.live_instances().is_empty(), "its instance terminated");
    assert!(
        fakes.records.record(&certname).is_none(),
        "its record deleted"
    );
    assert_eq!(
        fakes
            .faults
            .count(puppet_conductor::fakes::System::Ec2, "TerminateInstances"),
        1
    );
}

/// A Cleanup master, paused, with a leftover instance of a node long gone (tagged as the
/// operator tags its launches) and a node of its own that is not annotated.
async fn paused_cleanup_master(fakes: &Arc<Fakes>) -> (Harness, String) {
    let mut m = paused(test_master());
    m.spec.orphans = OrphanSpec {
        action: OrphanAction::Cleanup,
        min_age: std::time::Duration::from_secs(60).into(),
    };
    let h = Harness::new(fakes.clone(), (m, vec![node("web-1", "pm", &["base"])])).await;
    let uid = "00000000-0000-4000-9000-000000000001";
    let certname = puppet_conductor::identity::certname(uid, 1, None);
    let leftover = fakes
        .ec2
        .launch(&LaunchRequest {
            instance: InstanceSettings::new("ami-0123456789abcdef0", "t3.small"),
            tags: [
                (tags::OPERATOR, "test"),
                (tags::MASTER, &format!("{NS}/pm")),
                (tags::NODE_UID, uid),
                (tags::CERTNAME, &certname),
                (tags::INCARNATION, "1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            user_data: String::new(),
            client_token: certname.clone(),
        })
        .await
        .unwrap();
    (h, leftover.id)
}

#[tokio::test]
async fn a_paused_masters_nodes_launch_nothing_and_its_sweep_removes_nothing() {
    let fakes = Fakes::new().await;
    let (h, leftover) = paused_cleanup_master(&fakes).await;
    let mark = fakes.mark();
    for _ in 0..2 {
        let m = masters(&h).get("pm").await.unwrap();
        master::reconcile(Arc::new(m), h.ctx.clone()).await.unwrap();
        h.reconcile("web-1").await.unwrap();
    }

    assert_eq!(fakes.writes_since(mark), Vec::<String>::new());
    let live = fakes.live_instances();
    assert_eq!(live.len(), 1, "only the leftover: {live:?}");
    assert_eq!(live[0].id, leftover, "the sweep left it running");
    assert!(h.get("web-1").await.finalizers().is_empty());
    let (status, reason, message) = node_condition(&h, "web-1", "Paused").await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Paused"));
    assert!(message.contains("PuppetMaster pm"), "{message}");
    let m = masters(&h).get("pm").await.unwrap();
    let c = condition(&m.status.unwrap().conditions, "Paused")
        .cloned()
        .unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Paused"));
    assert!(c.message.contains("PuppetMaster pm"), "{}", c.message);
    assert_eq!(events_with_reason(&h, "pm", "Paused"), 1);

    // Resumed: the sweep terminates the leftover, the node launches.
    set_paused(&masters(&h), "pm", None).await;
    let m = masters(&h).get("pm").await.unwrap();
    master::reconcile(Arc::new(m), h.ctx.clone()).await.unwrap();
    passes(&h, "web-1", 2).await;
    let live = fakes.live_instances();
    assert!(live.iter().all(|i| i.id != leftover), "swept once resumed");
    assert_eq!(live.len(), 1, "web-1's instance: {live:?}");
    assert_eq!(events_with_reason(&h, "pm", "Resumed"), 1);
    assert_eq!(node_condition(&h, "web-1", "Paused").await.1, "Resumed");
}
