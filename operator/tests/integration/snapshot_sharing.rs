//! The shared per-master snapshot against moto and the real CA: reused while fresh, its
//! CA listing refreshed alone when only that is stale (the CA watch, a waiting node), the whole
//! observation taken again once the snapshot itself is old. Calls are counted by the
//! same metered decorators the operator runs with.

use std::sync::Arc;
use std::time::Duration;

use puppet_conductor::controller::services::MasterServices;
use puppet_conductor::controller::snapshot::SnapshotCache;
use puppet_conductor::identity::ChallengeKey;
use puppet_conductor::metrics::Metrics;

use crate::common::services::Services;
use crate::node_support::*;

fn calls(metrics: &Metrics, service: &str, operation: &str) -> u64 {
    let prefix = format!(
        r#"puppet_conductor_external_calls_total{{service="{service}",operation="{operation}",outcome="ok"}} "#
    );
    metrics
        .encode()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|n| n.parse().unwrap()))
        .unwrap_or(0)
}

/// moto and the real CA, counted by the operator's metered decorators.
fn metered_services(svc: &Services, moto: &MotoServices, metrics: &Arc<Metrics>) -> MasterServices {
    MasterServices {
        cloud: moto.cloud.clone(),
        records: moto.records.clone(),
        ca: Arc::new(svc.puppet.ca_client(Duration::from_secs(20))),
        ca_cert_pem: String::from_utf8(svc.puppet.ca_pem()).unwrap(),
        challenge_key: ChallengeKey::generate(),
    }
    .metered(metrics)
}

#[tokio::test]
async fn a_stale_ca_listing_is_refreshed_alone_and_a_stale_snapshot_entirely() {
    let _shared = MOTO_LOAD.read().await;
    let _listing = crate::e2e_support::CA_LISTING.read().await;
    let Some(svc) = Services::from_env() else {
        return;
    };
    let moto = MotoServices::new(&svc.moto_endpoint, "us-east-1", &unique("snap")).await;
    let metrics = Arc::new(Metrics::new());
    let services = metered_services(&svc, &moto, &metrics);
    let cache = SnapshotCache::default();
    let key = format!("{NS}/{}", unique("pm"));
    let (long, stale) = (Duration::from_secs(600), Duration::ZERO);
    let count = || {
        (
            calls(&metrics, "ec2", "describe_master_instances"),
            calls(&metrics, "s3", "list"),
            calls(&metrics, "puppet_ca", "list"),
        )
    };

    let first = cache.get(&key, &services, long, long).await.unwrap();
    let again = cache.get(&key, &services, long, long).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again), "fresh: shared as it is");
    assert_eq!(count(), (1, 1, 1));

    let polled = cache.get(&key, &services, long, stale).await.unwrap();
    assert_eq!(count(), (1, 1, 2), "only the CA was listed again");
    assert_eq!(polled.taken, first.taken);
    assert!(polled.ca_taken > first.ca_taken);
    assert!(polled.certificates.is_some());

    cache.get(&key, &services, stale, long).await.unwrap();
    assert_eq!(
        count(),
        (2, 2, 3),
        "an old snapshot is observed again entirely"
    );
}

/// Issue 11, failure 1: a RunInstances answer that arrives after a newer describe already
/// holds the instance must not add it a second time (the next pass would terminate "the
/// duplicate", the node's only instance).
#[tokio::test]
async fn a_launch_answer_arriving_after_a_newer_describe_keeps_the_instance_once() {
    use puppet_conductor::cloud::Cloud;
    let _shared = MOTO_LOAD.read().await;
    let Some(svc) = Services::from_env() else {
        return;
    };
    let moto = MotoServices::new(&svc.moto_endpoint, "us-east-1", &unique("late")).await;
    let services = moto.services.clone();
    let cache = SnapshotCache::default();
    let key = format!("{NS}/{}", unique("pm"));
    let stale = Duration::ZERO;
    cache.get(&key, &services, stale, stale).await.unwrap();
    // The launch is applied; before its answer is folded in, another node's pass
    // observes afresh and sees the instance.
    let request = crate::cloud_support::launch_request(&key, &format!("{NS}/late"), 1);
    let instance = moto.cloud.launch(&request).await.unwrap();
    let newer = cache.get(&key, &services, stale, stale).await.unwrap();
    assert_eq!(
        newer
            .instances
            .iter()
            .filter(|i| i.id == instance.id)
            .count(),
        1
    );
    cache.launched(&key, instance.clone()).await;
    let long = Duration::from_secs(600);
    let after = cache.get(&key, &services, long, long).await.unwrap();
    assert_eq!(
        after
            .instances
            .iter()
            .filter(|i| i.id == instance.id)
            .count(),
        1,
        "one instance, known by id"
    );
    moto.cloud
        .terminate(std::slice::from_ref(&instance.id))
        .await
        .unwrap();
}

/// Issue 11, failure 6: an instance terminated outside the operator is noticed by the
/// master's next describe, which names the node (to be reconciled at once) instead of
/// leaving it to the node's own resync.
#[tokio::test]
async fn a_describe_that_finds_an_instance_terminated_outside_names_its_node() {
    use puppet_conductor::cloud::Cloud;
    let _shared = MOTO_LOAD.read().await;
    let Some(svc) = Services::from_env() else {
        return;
    };
    let moto = MotoServices::new(&svc.moto_endpoint, "us-east-1", &unique("gone")).await;
    let services = moto.services.clone();
    let cache = SnapshotCache::default();
    let mut woken = cache.subscribe_wakes();
    let key = format!("{NS}/{}", unique("pm"));
    let (node_a, node_b) = (format!("{NS}/gone-a"), format!("{NS}/gone-b"));
    let a = moto
        .cloud
        .launch(&crate::cloud_support::launch_request(&key, &node_a, 1))
        .await
        .unwrap();
    let b = moto
        .cloud
        .launch(&crate::cloud_support::launch_request(&key, &node_b, 1))
        .await
        .unwrap();
    let stale = Duration::ZERO;
    let first = cache.get(&key, &services, stale, stale).await.unwrap();
    assert_eq!(first.instances.len(), 2);
    assert!(
        woken.try_recv().is_err(),
        "a first describe has nothing to compare"
    );
    cache.get(&key, &services, stale, stale).await.unwrap();
    assert!(woken.try_recv().is_err(), "nothing changed, nobody woken");

    // Terminated by someone else (the console, an ASG, spot reclaim).
    moto.cloud
        .terminate(std::slice::from_ref(&a.id))
        .await
        .unwrap();
    cache.get(&key, &services, stale, stale).await.unwrap();
    assert_eq!(
        woken.try_recv().ok(),
        Some(node_a),
        "the node whose instance went"
    );
    assert!(woken.try_recv().is_err(), "and only that one");
    cache.get(&key, &services, stale, stale).await.unwrap();
    assert!(
        woken.try_recv().is_err(),
        "woken once, not at every describe"
    );
    moto.cloud
        .terminate(std::slice::from_ref(&b.id))
        .await
        .unwrap();
}

/// Issue 13, item 2: the shared CA watch lists the master's CA while a node waits on it
/// and wakes only the node whose entry changed, once; it reads nothing before a node pass
/// observed the master, nor once every live certname is signed.
#[tokio::test]
async fn the_ca_watch_wakes_only_the_node_whose_csr_arrived_and_lists_nothing_once_all_are_signed()
{
    use puppet_conductor::cloud::{tags, Cloud};
    let _shared = MOTO_LOAD.read().await;
    let _listing = crate::e2e_support::CA_LISTING.read().await;
    let Some(svc) = Services::from_env() else {
        return;
    };
    let moto = MotoServices::new(&svc.moto_endpoint, "us-east-1", &unique("watch")).await;
    let metrics = Arc::new(Metrics::new());
    let services = metered_services(&svc, &moto, &metrics);
    let cache = SnapshotCache::default();
    let mut woken = cache.subscribe_wakes();
    let key = format!("{NS}/{}", unique("pm"));
    let nodes = [
        format!("{NS}/{}", unique("wa")),
        format!("{NS}/{}", unique("wb")),
    ];
    let mut launched = Vec::new();
    for node in &nodes {
        let request = crate::cloud_support::launch_request(&key, node, 1);
        launched.push(moto.cloud.launch(&request).await.unwrap());
    }
    let certnames: Vec<String> = launched
        .iter()
        .map(|i| i.tags[tags::CERTNAME].clone())
        .collect();
    let listings = || calls(&metrics, "puppet_ca", "list");
    // Every look lists (the interval has passed), so each assertion sees a new listing.
    let every_look = Duration::ZERO;

    assert!(!cache.watch_ca(&key, &services, every_look).await);
    assert_eq!(listings(), 0, "no node pass observed the master yet");
    let long = Duration::from_secs(600);
    cache.get(&key, &services, long, long).await.unwrap();
    assert_eq!(listings(), 1);
    assert!(
        cache.watch_ca(&key, &services, every_look).await,
        "two nodes wait"
    );
    assert_eq!(listings(), 2);
    assert!(woken.try_recv().is_err(), "no CSR yet, nobody woken");

    let (pem, _) = crate::ca_hostile_contract::forge_csr(&certnames[0], None, None, false);
    crate::ca_hostile_contract::submit_csr(&svc.puppet, &certnames[0], &pem).await;
    assert!(cache.watch_ca(&key, &services, every_look).await);
    assert_eq!(
        woken.try_recv().ok().as_ref(),
        Some(&nodes[0]),
        "its CSR arrived"
    );
    assert!(woken.try_recv().is_err(), "and only that node");
    assert!(cache.watch_ca(&key, &services, every_look).await);
    assert!(
        woken.try_recv().is_err(),
        "woken once, not at every listing"
    );

    // Within the interval the watch reads nothing.
    assert!(cache.watch_ca(&key, &services, long).await);
    assert_eq!(listings(), 4);

    let (pem, _) = crate::ca_hostile_contract::forge_csr(&certnames[1], None, None, false);
    crate::ca_hostile_contract::submit_csr(&svc.puppet, &certnames[1], &pem).await;
    for certname in &certnames {
        services.ca.sign(certname).await.unwrap();
    }
    assert!(cache.watch_ca(&key, &services, every_look).await);
    let mut signed: Vec<String> = std::iter::from_fn(|| woken.try_recv().ok()).collect();
    signed.sort();
    let mut expected = nodes.to_vec();
    expected.sort();
    assert_eq!(signed, expected, "both entries changed: signed");
    let before = listings();
    assert!(
        !cache.watch_ca(&key, &services, every_look).await,
        "every live certname is signed: nothing waits"
    );
    assert_eq!(listings(), before, "and nothing is listed");

    for certname in &certnames {
        services.ca.revoke_and_clean(certname).await.unwrap();
    }
    let ids: Vec<String> = launched.iter().map(|i| i.id.clone()).collect();
    moto.cloud.terminate(&ids).await.unwrap();
}
