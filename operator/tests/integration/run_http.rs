//! `run` end to end against kube-fake-client: CRDs established → Lease → leader, with
//! /healthz, /readyz and /metrics checked over HTTP, and a hand-over on shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionCondition, CustomResourceDefinitionStatus,
};
use kube::{Api, CustomResourceExt};
use kube_fake_client::ClientBuilder;
use puppet_conductor::api::{PuppetMaster, PuppetNode};
use puppet_conductor::controller::context::NodeSettings;
use puppet_conductor::leader::LeaseSettings;
use puppet_conductor::runner::config::RunConfig;
use puppet_conductor::runner::run_with_client;
use tokio_util::sync::CancellationToken;

use crate::common::{free_loopback_addr, http_get};

fn established(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    crd.status = Some(CustomResourceDefinitionStatus {
        conditions: Some(vec![CustomResourceDefinitionCondition {
            type_: "Established".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    crd
}

async fn cluster() -> kube::Client {
    ClientBuilder::new()
        .with_resource::<CustomResourceDefinition>()
        .with_resource::<Lease>()
        .with_resource::<PuppetMaster>()
        .with_resource::<PuppetNode>()
        .with_object(established(PuppetMaster::crd()))
        .with_object(established(PuppetNode::crd()))
        .build()
        .await
        .unwrap()
}

fn config(identity: &str, addr: SocketAddr) -> RunConfig {
    RunConfig {
        settings: NodeSettings::default(),
        concurrency: 2,
        lease: Some(LeaseSettings {
            duration: Duration::from_secs(3),
            retry: Duration::from_millis(200),
            ..LeaseSettings::new("puppet-conductor", "ops", identity)
        }),
        http_addr: addr,
        call_timeout: Duration::from_secs(5),
        identity: identity.into(),
    }
}

/// Polls `path` until it answers `status` with `body`, or fails after `within`.
async fn wait_for(addr: SocketAddr, path: &str, status: u16, body: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = http_get(addr, path).await;
        if matches!(&last, Some((s, b)) if *s == status && b.trim() == body) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never answered {status} {body:?}; last answer {last:?}");
}

#[tokio::test]
async fn run_leads_and_serves_health_readiness_and_metrics() {
    let client = cluster().await;
    let addr = free_loopback_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_with_client(
        client.clone(),
        config("pod-a", addr),
        shutdown.clone(),
    ));
    wait_for(
        addr,
        "/readyz",
        200,
        "ready leader",
        Duration::from_secs(10),
    )
    .await;
    let (status, body) = http_get(addr, "/healthz").await.unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, metrics) = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.lines().any(|l| l == "puppet_conductor_leader 1"),
        "leader gauge missing:\n{metrics}"
    );
    let lease = Api::<Lease>::namespaced(client.clone(), "ops")
        .get("puppet-conductor")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("pod-a")
    );

    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run stops after SIGTERM's cancellation")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    let lease = Api::<Lease>::namespaced(client, "ops")
        .get("puppet-conductor")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "released at shutdown"
    );
    assert!(
        http_get(addr, "/healthz").await.is_none(),
        "HTTP server stopped"
    );
}

#[tokio::test]
async fn a_standby_is_ready_but_not_leader_and_takes_over_when_the_leader_stops() {
    let client = cluster().await;
    let (addr_a, addr_b) = (free_loopback_addr(), free_loopback_addr());
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = tokio::spawn(run_with_client(
        client.clone(),
        config("pod-a", addr_a),
        stop_a.clone(),
    ));
    wait_for(
        addr_a,
        "/readyz",
        200,
        "ready leader",
        Duration::from_secs(10),
    )
    .await;
    let b = tokio::spawn(run_with_client(
        client.clone(),
        config("pod-b", addr_b),
        stop_b.clone(),
    ));
    wait_for(
        addr_b,
        "/readyz",
        200,
        "ready standby",
        Duration::from_secs(10),
    )
    .await;
    let (_, metrics) = http_get(addr_b, "/metrics").await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "puppet_conductor_leader 0"),
        "a standby must not claim leadership:\n{metrics}"
    );

    stop_a.cancel();
    a.await.unwrap().unwrap();
    // The leader released the Lease, so the standby takes over at its next retry.
    wait_for(
        addr_b,
        "/readyz",
        200,
        "ready leader",
        Duration::from_secs(3),
    )
    .await;
    stop_b.cancel();
    b.await.unwrap().unwrap();
}
