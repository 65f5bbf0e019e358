//! The PuppetNodePool reconciler against kube-fake-client: creation, scale, a roll within
//! its bounds, in-place rewrites, pause, invalid specs and a namesake node. The pool makes
//! no cloud or CA call, so no service is needed; the nodes' own passes are not run (their
//! status is set the way the node controller would set it).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use kube_fake_client::ClientBuilder;
use puppet_conductor::api::pool::{
    PoolStrategy, RollingUpdate, StrategyType, POOL_LABEL, TEMPLATE_HASH_LABEL,
};
use puppet_conductor::api::{PuppetMaster, PuppetNode, PuppetNodePool};
use puppet_conductor::controller::context::NodeSettings;
use puppet_conductor::controller::events::MemoryEvents;
use puppet_conductor::controller::services::{MasterServices, ServiceFactory};
use puppet_conductor::controller::{pool, Context, ReconcileError};
use serde_json::json;

use crate::node_support::{master, node, NS};

struct NoServices;

#[async_trait::async_trait]
impl ServiceFactory for NoServices {
    async fn services(&self, _: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
        Err(ReconcileError::MasterNotFound(
            "the pool needs no services".into(),
        ))
    }
}

fn web_pool(replicas: i32) -> PuppetNodePool {
    let mut p = crate::cluster_pool::pool_of(&node("unused", "pm", &["profile::web"]), replicas);
    p.metadata.namespace = Some(NS.into());
    p
}

struct PoolHarness {
    ctx: Arc<Context>,
    events: Arc<MemoryEvents>,
    pools: Api<PuppetNodePool>,
    nodes: Api<PuppetNode>,
}

impl PoolHarness {
    async fn new(pool: PuppetNodePool, others: Vec<PuppetNode>) -> Self {
        let mut builder = ClientBuilder::new()
            .with_resource::<PuppetMaster>()
            .with_resource::<PuppetNode>()
            .with_resource::<PuppetNodePool>()
            .with_object(master(
                "pm",
                "http://127.0.0.1:1",
                "us-east-1",
                "b",
                puppet_conductor::api::master::CloudProvider::Ec2,
            ))
            .with_object(pool);
        for n in others {
            builder = builder.with_object(n);
        }
        let client = builder.build().await.unwrap();
        let events = Arc::new(MemoryEvents::default());
        let ctx = Arc::new(Context::new(
            client.clone(),
            Arc::new(NoServices),
            events.clone(),
            NodeSettings::default(),
        ));
        Self {
            ctx,
            events,
            pools: Api::namespaced(client.clone(), NS),
            nodes: Api::namespaced(client, NS),
        }
    }

    async fn reconcile(&self) -> Result<kube::runtime::controller::Action, ReconcileError> {
        let p = self.pools.get("web").await.unwrap();
        pool::reconcile(Arc::new(p), self.ctx.clone()).await
    }

    async fn pool(&self) -> PuppetNodePool {
        self.pools.get("web").await.unwrap()
    }

    /// The pool's nodes by name.
    async fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .nodes
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|n| n.labels().get(POOL_LABEL).is_some())
            .map(|n| n.name_any())
            .collect();
        names.sort();
        names
    }

    /// The node controller's view of `name` becoming Ready.
    async fn make_ready(&self, name: &str) {
        let status = json!({"status": {"phase": "Ready", "conditions": [{
            "type": "Ready", "status": "True", "reason": "Ready", "message": "ready",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        self.nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    async fn edit(&self, patch: serde_json::Value) {
        self.pools
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    fn reasons(&self) -> Vec<String> {
        self.events.all().into_iter().map(|e| e.reason).collect()
    }
}

#[tokio::test]
async fn a_pool_creates_its_replicas_owned_labelled_and_from_its_template() {
    let h = PoolHarness::new(web_pool(3), vec![]).await;
    h.reconcile().await.unwrap();
    assert_eq!(h.names().await, ["web-0", "web-1", "web-2"]);
    let pool = h.pool().await;
    let n = h.nodes.get("web-1").await.unwrap();
    let owner = &n.owner_references()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.uid.as_str(),
            owner.controller,
            owner.block_owner_deletion
        ),
        (
            "PuppetNodePool",
            pool.uid().unwrap().as_str(),
            Some(true),
            Some(true)
        )
    );
    assert_eq!(n.labels().get("app").map(String::as_str), Some("web"));
    assert_eq!(n.labels().get(POOL_LABEL).map(String::as_str), Some("web"));
    let status = pool.status.unwrap();
    assert_eq!(
        n.labels().get(TEMPLATE_HASH_LABEL),
        status.template_hash.as_ref()
    );
    assert_eq!(n.spec, pool.spec.template.spec);
    // Status counts what the pass observed before creating (none), then what exists.
    assert_eq!(status.selector.as_deref(), Some("app=web"));
    h.reconcile().await.unwrap();
    assert_eq!(h.names().await.len(), 3, "a second pass creates nothing");
    let status = h.pool().await.status.unwrap();
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas
        ),
        (3, 3, 0)
    );
    assert_eq!(h.reasons().iter().filter(|r| *r == "Created").count(), 3);
}

#[tokio::test]
async fn scale_down_deletes_nodes_that_are_not_ready_first_then_the_newest() {
    let h = PoolHarness::new(web_pool(4), vec![]).await;
    h.reconcile().await.unwrap();
    for name in ["web-0", "web-2", "web-3"] {
        h.make_ready(name).await;
    }
    h.edit(json!({"spec": {"replicas": 2}})).await;
    h.reconcile().await.unwrap();
    assert_eq!(
        h.names().await,
        ["web-0", "web-2"],
        "web-1 (not Ready), then web-3 (newest)"
    );
    h.reconcile().await.unwrap();
    let status = h.pool().await.status.unwrap();
    assert_eq!(
        (
            status.replicas,
            status.ready_replicas,
            status.available_replicas
        ),
        (2, 2, 2)
    );
}

#[tokio::test]
async fn an_instance_change_rolls_one_node_at_a_time_and_an_old_one_goes_only_after_a_new_one_is_ready(
) {
    let h = PoolHarness::new(web_pool(2), vec![]).await;
    h.reconcile().await.unwrap();
    h.make_ready("web-0").await;
    h.make_ready("web-1").await;
    let old_hash = h.pool().await.status.unwrap().template_hash.unwrap();
    h.edit(
        json!({"spec": {"template": {"spec": {"instance": {"imageId": "ami-0fedcba987654321"}}}}}),
    )
    .await;
    h.reconcile().await.unwrap();
    assert_eq!(
        h.names().await,
        ["web-0", "web-1", "web-2"],
        "one surge node"
    );
    let new = h.nodes.get("web-2").await.unwrap();
    assert_ne!(new.labels().get(TEMPLATE_HASH_LABEL), Some(&old_hash));
    assert_eq!(
        new.spec.instance.image_id.as_deref(),
        Some("ami-0fedcba987654321")
    );
    h.reconcile().await.unwrap();
    assert_eq!(
        h.names().await.len(),
        3,
        "nothing goes while the new node is not Ready"
    );
    h.make_ready("web-2").await;
    h.reconcile().await.unwrap();
    // kube-fake-client deletes at once (the node has no finalizer here).
    assert_eq!(h.names().await, ["web-0", "web-2"]);
    h.reconcile().await.unwrap();
    assert_eq!(
        h.names().await,
        ["web-0", "web-1", "web-2"],
        "the next surge node takes the free name"
    );
    h.make_ready("web-1").await;
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    assert_eq!(h.names().await, ["web-1", "web-2"]);
    let status = h.pool().await.status.unwrap();
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.available_replicas
        ),
        (2, 2, 2)
    );
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(progressing.reason, "NewNodesAvailable");
}

#[tokio::test]
async fn a_classification_change_rewrites_the_nodes_in_place_without_new_ones() {
    let mut p = web_pool(2);
    p.spec.template.spec.parameters = [
        ("role".to_string(), json!("web")),
        ("old".to_string(), json!(1)),
    ]
    .into();
    let h = PoolHarness::new(p, vec![]).await;
    h.reconcile().await.unwrap();
    let hash = h
        .nodes
        .get("web-0")
        .await
        .unwrap()
        .labels()
        .get(TEMPLATE_HASH_LABEL)
        .cloned();
    h.edit(json!({"spec": {"template": {
        "metadata": {"labels": {"app": "web", "tier": "front"}},
        "spec": {"classes": ["profile::web", "profile::tls"], "environment": "staging",
                 "parameters": {"role": "web", "old": null}}}}}))
        .await;
    h.reconcile().await.unwrap();
    assert_eq!(h.names().await, ["web-0", "web-1"], "no new node");
    for name in ["web-0", "web-1"] {
        let n = h.nodes.get(name).await.unwrap();
        assert_eq!(n.spec.classes, ["profile::web", "profile::tls"]);
        assert_eq!(n.spec.environment.as_deref(), Some("staging"));
        assert_eq!(
            n.spec.parameters.keys().collect::<Vec<_>>(),
            ["role"],
            "a removed parameter is removed"
        );
        assert_eq!(n.labels().get("tier").map(String::as_str), Some("front"));
        assert_eq!(
            n.labels().get(TEMPLATE_HASH_LABEL).cloned(),
            hash,
            "same instance hash"
        );
    }
    assert_eq!(h.reasons().iter().filter(|r| *r == "Updated").count(), 2);
    h.reconcile().await.unwrap();
    assert_eq!(
        h.reasons().iter().filter(|r| *r == "Updated").count(),
        2,
        "in line: no rewrite"
    );
}

#[tokio::test]
async fn a_paused_pool_creates_and_deletes_nothing_and_says_so() {
    let mut p = web_pool(2);
    p.metadata.annotations = Some(
        [(
            puppet_conductor::api::PAUSED_ANNOTATION.to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    let h = PoolHarness::new(p, vec![]).await;
    h.reconcile().await.unwrap();
    assert!(h.names().await.is_empty());
    let status = h.pool().await.status.unwrap();
    let paused = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Paused")
        .unwrap();
    assert_eq!(paused.status, "True");
    assert!(h.reasons().contains(&"PausedTrue".to_string()));
    h.edit(json!({"metadata": {"annotations": {puppet_conductor::api::PAUSED_ANNOTATION: null}}}))
        .await;
    h.reconcile().await.unwrap();
    assert_eq!(h.names().await.len(), 2, "resumed");
}

#[tokio::test]
async fn a_paused_master_pauses_its_pools() {
    let h = PoolHarness::new(web_pool(1), vec![]).await;
    let masters: Api<PuppetMaster> = Api::namespaced(h.ctx.client.clone(), NS);
    masters
        .patch(
            "pm",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {puppet_conductor::api::PAUSED_ANNOTATION: "true"}}})),
        )
        .await
        .unwrap();
    h.reconcile().await.unwrap();
    assert!(h.names().await.is_empty());
    let status = h.pool().await.status.unwrap();
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(progressing.reason, "Paused");
    assert!(progressing.message.contains("PuppetMaster pm"));
}

#[tokio::test]
async fn a_name_held_by_another_node_is_skipped() {
    let h = PoolHarness::new(web_pool(2), vec![node("web-0", "pm", &[])]).await;
    h.reconcile().await.unwrap();
    let mut names: Vec<String> = h
        .nodes
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    names.sort();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    assert!(
        h.nodes
            .get("web-0")
            .await
            .unwrap()
            .owner_references()
            .is_empty(),
        "the namesake is left alone"
    );
    assert_eq!(h.names().await, ["web-1", "web-2"]);
}

#[tokio::test]
async fn a_bound_that_is_no_count_or_percentage_is_reported_and_nothing_is_created() {
    let mut p = web_pool(2);
    p.spec.strategy.rolling_update = Some(RollingUpdate {
        max_surge: Some(IntOrString::String("lots".into())),
        max_unavailable: None,
    });
    let h = PoolHarness::new(p, vec![]).await;
    let error = h.reconcile().await.unwrap_err();
    assert!(error.is_permanent());
    assert!(h.names().await.is_empty());
    let status = h.pool().await.status.unwrap();
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(
        progressing.message.contains("maxSurge"),
        "{}",
        progressing.message
    );
    let invalid = |h: &PoolHarness| h.reasons().iter().filter(|r| *r == "InvalidSpec").count();
    assert_eq!(invalid(&h), 1);
    let _ = h.reconcile().await.unwrap_err();
    assert_eq!(invalid(&h), 1, "said once per spec");
}

#[tokio::test]
async fn on_delete_keeps_old_nodes_after_an_instance_change() {
    let mut p = web_pool(2);
    p.spec.strategy = PoolStrategy {
        type_: StrategyType::OnDelete,
        rolling_update: None,
    };
    let h = PoolHarness::new(p, vec![]).await;
    h.reconcile().await.unwrap();
    h.edit(
        json!({"spec": {"template": {"spec": {"instance": {"imageId": "ami-0fedcba987654321"}}}}}),
    )
    .await;
    h.reconcile().await.unwrap();
    assert_eq!(h.names().await, ["web-0", "web-1"]);
    h.nodes.delete("web-0", &Default::default()).await.unwrap();
    h.reconcile().await.unwrap();
    let replacement = h.nodes.get("web-0").await.unwrap();
    assert_eq!(
        replacement.spec.instance.image_id.as_deref(),
        Some("ami-0fedcba987654321")
    );
    let status = h.pool().await.status.unwrap();
    assert_eq!(status.updated_replicas, 0, "counted from what the pass saw");
    h.reconcile().await.unwrap();
    assert_eq!(h.pool().await.status.unwrap().updated_replicas, 1);
}
