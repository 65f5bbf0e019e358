use super::*;
use crate::api::node::PuppetNodeSpec;
use crate::api::MasterRef;
use crate::controller::events::MemoryEvents;
use crate::controller::services::{MasterServices, ServiceFactory};

struct NoServices;

#[async_trait::async_trait]
impl ServiceFactory for NoServices {
    async fn services(&self, m: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
        Err(ReconcileError::MasterNotFound(m.name_any()))
    }
}

async fn context() -> Arc<Context> {
    let client = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap();
    Arc::new(Context::new(
        client,
        Arc::new(NoServices),
        Arc::new(MemoryEvents::default()),
        Default::default(),
    ))
}

fn node() -> Arc<PuppetNode> {
    let mut n = PuppetNode::new(
        "n1",
        PuppetNodeSpec {
            master_ref: MasterRef { name: "pm".into() },
            classes: vec![],
            environment: None,
            parameters: Default::default(),
            instance: Default::default(),
            certname: None,
            replace_policy: Default::default(),
            deletion_policy: Default::default(),
        },
    );
    n.metadata.namespace = Some("ns".into());
    Arc::new(n)
}

#[test]
fn a_node_waiting_in_operator_mode_reads_a_ca_listing_no_older_than_the_poll_interval() {
    use crate::api::master::{PuppetMasterSpec, SigningMode};
    use crate::api::node::PuppetNodeStatus;
    let spec: PuppetMasterSpec = serde_json::from_value(serde_json::json!({
        "server": "puppet", "ca": {"url": "https://ca", "clientSecretRef": {"name": "c"}},
        "cloud": {"region": "r"}, "records": {"bucket": "b"},
        "signing": {"mode": "Operator", "pollInterval": "2s"}
    }))
    .unwrap();
    let mut master = PuppetMaster::new("pm", spec);
    let ten = Duration::from_secs(10);
    let mut waiting = (*node()).clone();
    waiting.status = Some(PuppetNodeStatus {
        phase: Some(Phase::AwaitingCsr),
        ..Default::default()
    });
    assert_eq!(
        ca_listing_age_limit(&master, &waiting, ten),
        Duration::from_secs(2)
    );
    let mut ready = waiting.clone();
    ready.status.as_mut().unwrap().phase = Some(Phase::Ready);
    assert_eq!(
        ca_listing_age_limit(&master, &ready, ten),
        ten,
        "a Ready node's resync takes the listing with the snapshot"
    );
    master.spec.signing.poll_interval = "1m".parse().unwrap();
    assert_eq!(
        ca_listing_age_limit(&master, &waiting, ten),
        ten,
        "never longer than the limit"
    );
    master.spec.signing.mode = SigningMode::Policy;
    master.spec.signing.poll_interval = "2s".parse().unwrap();
    assert_eq!(
        ca_listing_age_limit(&master, &waiting, ten),
        ten,
        "Policy mode does not sign: its passes take the listing with the snapshot"
    );
}

#[tokio::test]
async fn permanent_errors_wait_for_a_change_of_the_object() {
    let ctx = context().await;
    let action = error_policy(node(), &ReconcileError::InvalidSpec("no image".into()), ctx);
    assert_eq!(action, Requeue::await_change());
}

#[tokio::test]
async fn transient_errors_back_off_exponentially_up_to_the_cap() {
    let ctx = context().await;
    let unavailable = || {
        ReconcileError::Ca(crate::ca::CaError::status(
            "list",
            503,
            "Service Unavailable",
            None,
        ))
    };
    let first = error_policy(node(), &unavailable(), ctx.clone());
    let second = error_policy(node(), &unavailable(), ctx.clone());
    assert_ne!(first, Requeue::await_change());
    // 1 s then 2 s, each with up to +25% jitter.
    let d1 = ctx.backoff.next_delay("probe/other");
    assert!(d1 <= Duration::from_millis(1250));
    assert_ne!(first, second, "the delay grows");
    for _ in 0..20 {
        let _ = error_policy(node(), &unavailable(), ctx.clone());
    }
    assert_eq!(
        error_policy(node(), &unavailable(), ctx.clone()),
        Requeue::requeue(Duration::from_secs(300))
    );
    ctx.backoff.reset("ns/n1");
    assert_ne!(
        error_policy(node(), &unavailable(), ctx),
        Requeue::requeue(Duration::from_secs(300))
    );
}

#[tokio::test]
async fn a_refusal_is_not_asked_again_sooner_than_the_converging_interval() {
    let ctx = context().await;
    // Its master is created by the same apply: the master's creation wakes the node.
    let missing = ReconcileError::MasterNotFound("ns/pm".into());
    // The backoff's first steps (about 1 s, 2 s, 4 s) are raised to the floor.
    for _ in 0..3 {
        assert_eq!(
            error_policy(node(), &missing, ctx.clone()),
            Requeue::requeue(ctx.settings.converging)
        );
    }
    // A refusal that lasts still backs off, up to the cap.
    for _ in 0..20 {
        let _ = error_policy(node(), &missing, ctx.clone());
    }
    assert_eq!(
        error_policy(node(), &missing, ctx),
        Requeue::requeue(Duration::from_secs(300))
    );
}

#[tokio::test]
async fn a_ca_asking_to_retry_later_is_not_asked_sooner() {
    let ctx = context().await;
    let busy = ReconcileError::Ca(crate::ca::CaError::status(
        "list",
        503,
        "busy",
        Some(Duration::from_secs(30)),
    ));
    // The first backoff step is about 1 s; the CA asked for 30.
    assert_eq!(
        error_policy(node(), &busy, ctx),
        Requeue::requeue(Duration::from_secs(30))
    );
}

#[tokio::test]
async fn waiting_for_instances_to_shut_down_is_a_short_requeue_not_a_backoff() {
    let ctx = context().await;
    let waiting = ReconcileError::CleanupInProgress("shutting down".into());
    for _ in 0..5 {
        assert_eq!(
            error_policy(node(), &waiting, ctx.clone()),
            Requeue::requeue(ctx.settings.converging)
        );
    }
}
