//! Deleting a PuppetMaster: its finalizer holds it while PuppetNodes still name it (their
//! cleanup needs its services), then releases it. kube-fake-client drops deleted objects
//! at once, so the deleted state (deletionTimestamp set, finalizers kept) is built the way
//! the API server stores it, in a fresh fake API, as for nodes in `Harness::deleted_copy`.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::ResourceExt;
use puppet_conductor::api::PuppetMaster;
use puppet_conductor::controller::master;
use puppet_conductor::controller::services::{MasterServices, ServiceFactory};
use puppet_conductor::controller::{ReconcileError, MASTER_FINALIZER};

use crate::node_support::*;

/// Deletion must not need the master's services; a normal pass just reports them down.
struct NoServices;

#[async_trait::async_trait]
impl ServiceFactory for NoServices {
    async fn services(&self, _: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
        Err(ReconcileError::InvalidSpec("test: no services".into()))
    }
}

async fn reconcile(h: &Harness, name: &str) -> Requeue {
    let masters: Api<PuppetMaster> = Api::namespaced(h.ctx.client.clone(), NS);
    let m = masters.get(name).await.unwrap();
    master::reconcile(Arc::new(m), h.ctx.clone()).await.unwrap()
}

fn count(h: &Harness, reason: &str) -> usize {
    h.events.all().iter().filter(|e| e.reason == reason).count()
}

#[tokio::test]
async fn a_deleted_master_waits_for_the_nodes_naming_it_then_is_released() {
    let m = master(
        "pm-del",
        "http://127.0.0.1:1",
        "us-east-1",
        "b",
        Default::default(),
    );
    let nodes = vec![
        node("still-here", "pm-del", &["base"]),
        node("of-another-master", "pm-other", &["base"]),
    ];
    let h = Harness::new(Arc::new(NoServices), (m, nodes)).await;
    reconcile(&h, "pm-del").await;
    let masters: Api<PuppetMaster> = Api::namespaced(h.ctx.client.clone(), NS);
    let mut m = masters.get("pm-del").await.unwrap();
    assert_eq!(
        m.finalizers(),
        [MASTER_FINALIZER.to_string()],
        "added on the first pass"
    );

    // kubectl delete of the master while one of its nodes still exists.
    m.metadata.deletion_timestamp = Some(puppet_conductor::status::conditions::time(
        chrono::Utc::now(),
    ));
    let nodes = vec![h.get("still-here").await, h.get("of-another-master").await];
    let d = Harness::new(Arc::new(NoServices), (m, nodes)).await;
    let masters: Api<PuppetMaster> = Api::namespaced(d.ctx.client.clone(), NS);
    for _ in 0..2 {
        assert_eq!(
            reconcile(&d, "pm-del").await,
            Requeue::requeue(std::time::Duration::from_secs(5)),
            "looks again shortly"
        );
    }
    let held = masters.get("pm-del").await.unwrap();
    assert_eq!(held.finalizers(), [MASTER_FINALIZER.to_string()], "held");
    let ready = held
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Deleting")
    );
    assert!(
        ready.message.contains("waiting for 1 PuppetNode"),
        "{}",
        ready.message
    );
    assert_eq!(
        count(&d, "WaitingForNodes"),
        1,
        "said once, not on every pass"
    );
    assert_eq!(count(&d, "Released"), 0);

    // The node's own cleanup finished (its finalizer released): the master goes too.
    d.delete("still-here").await;
    assert_eq!(reconcile(&d, "pm-del").await, Requeue::await_change());
    assert!(
        masters.get_opt("pm-del").await.unwrap().is_none(),
        "finalizer removed, the master is gone"
    );
    assert_eq!(count(&d, "Released"), 1);
}
