//! The PuppetMaster reconciler against the real CA and moto: conditions, fingerprint,
//! node counts, a public bucket, a CA outage, and CSRs no live node owns.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use puppet_conductor::api::master::SigningMode;
use puppet_conductor::api::PuppetMaster;
use puppet_conductor::ca::CertState;
use puppet_conductor::certificate::pem_fingerprint;
use puppet_conductor::controller::master;

use crate::e2e_support::{E2e, REGION};
use crate::node_support::*;

async fn reconcile_master(e: &E2e) -> Requeue {
    let api: Api<PuppetMaster> = Api::namespaced(e.h.ctx.client.clone(), NS);
    let m = api.get(&e.master_name).await.unwrap();
    master::reconcile(Arc::new(m), e.h.ctx.clone())
        .await
        .unwrap()
}

async fn status(e: &E2e) -> puppet_conductor::api::master::PuppetMasterStatus {
    let api: Api<PuppetMaster> = Api::namespaced(e.h.ctx.client.clone(), NS);
    api.get(&e.master_name).await.unwrap().status.unwrap()
}

fn condition(s: &puppet_conductor::api::master::PuppetMasterStatus, t: &str) -> (String, String) {
    let c = s
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} condition: {:?}", s.conditions));
    (c.status.clone(), c.reason.clone())
}

fn warnings(e: &E2e, reason: &str) -> Vec<String> {
    e.h.events
        .all()
        .into_iter()
        .filter(|ev| ev.warning && ev.reason == reason)
        .map(|ev| ev.note)
        .collect()
}

#[tokio::test]
async fn master_reports_reachable_services_ca_fingerprint_and_node_phases() {
    let nodes = vec![node("counted-1", "x", &["profile::base"])];
    let Some(e) = E2e::start("pmok", SigningMode::Operator, nodes, |ca| ca).await else {
        return;
    };
    reconcile_master(&e).await;
    let s = status(&e).await;
    for t in [
        "CAReachable",
        "CloudReachable",
        "RecordsReachable",
        "RecordsPrivate",
        "Ready",
    ] {
        assert_eq!(condition(&s, t).0, "True", "{t}: {:?}", s.conditions);
    }
    let expected = pem_fingerprint(&String::from_utf8(e.svc.puppet.ca_pem()).unwrap()).unwrap();
    assert_eq!(s.ca_fingerprint.as_deref(), Some(expected.as_str()));
    assert_eq!(s.nodes.get("Pending"), Some(&1), "{:?}", s.nodes);
    assert_eq!(s.nodes.values().sum::<i32>(), 1, "{:?}", s.nodes);
    assert_eq!(s.nodes.len(), 8, "every phase is listed: {:?}", s.nodes);
    let api: Api<PuppetMaster> = Api::namespaced(e.h.ctx.client.clone(), NS);
    let generation = api.get(&e.master_name).await.unwrap().metadata.generation;
    assert_eq!(s.observed_generation, generation);

    e.launch("counted-1").await;
    reconcile_master(&e).await;
    let s = status(&e).await;
    assert_eq!(s.nodes.values().sum::<i32>(), 1, "{:?}", s.nodes);
    assert_eq!(
        s.nodes.get("Pending"),
        Some(&0),
        "the launched node left Pending: {:?}",
        s.nodes
    );
}

#[tokio::test]
async fn records_private_turns_false_for_a_bucket_made_public() {
    let Some(e) = E2e::start("pmpublic", SigningMode::Operator, vec![], |ca| ca).await else {
        return;
    };
    reconcile_master(&e).await;
    assert_eq!(condition(&status(&e).await, "RecordsPrivate").0, "True");

    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": format!("arn:aws:s3:::{}/*", e.bucket),
        }]
    });
    s3_client(&e.svc.moto_endpoint, REGION)
        .put_bucket_policy()
        .bucket(&e.bucket)
        .policy(policy.to_string())
        .send()
        .await
        .unwrap();
    reconcile_master(&e).await;
    let s = status(&e).await;
    assert_eq!(
        condition(&s, "RecordsPrivate"),
        ("False".to_string(), "PubliclyReadable".to_string())
    );
    assert_eq!(condition(&s, "RecordsReachable").0, "True");
    assert_eq!(condition(&s, "Ready").0, "False");
    assert_eq!(
        warnings(&e, "RecordsPrivateFalse").len(),
        1,
        "{:?}",
        e.h.events.all()
    );
}

#[tokio::test]
async fn an_unreachable_ca_is_reported_and_retried_before_the_resync() {
    let Some((e, ca)) = E2e::start_with_flaky_ca("pmcadown", SigningMode::Operator, vec![]).await
    else {
        return;
    };
    let healthy = reconcile_master(&e).await;
    assert_eq!(healthy, Requeue::requeue(e.h.ctx.settings.master_resync));
    let fingerprint = status(&e).await.ca_fingerprint;

    ca.set_down(true);
    let retry = reconcile_master(&e).await;
    assert_ne!(
        retry, healthy,
        "an outage is retried sooner than the resync"
    );
    let s = status(&e).await;
    assert_eq!(
        condition(&s, "CAReachable"),
        ("False".into(), "CAUnreachable".into())
    );
    assert_eq!(condition(&s, "CloudReachable").0, "True");
    assert_eq!(condition(&s, "Ready").0, "False");
    assert_eq!(
        s.ca_fingerprint, fingerprint,
        "the last known fingerprint is kept"
    );
    assert_eq!(warnings(&e, "CAReachableFalse").len(), 1);

    ca.set_down(false);
    reconcile_master(&e).await;
    assert_eq!(condition(&status(&e).await, "Ready").0, "True");
}

#[tokio::test]
async fn csrs_of_unknown_and_deleted_nodes_warn_on_the_master_and_stay_unsigned() {
    let nodes = vec![node("doomed-1", "x", &["profile::base"])];
    let Some(e) = E2e::start("pmunknown", SigningMode::Operator, nodes, |ca| ca).await else {
        return;
    };
    let (svc, ca, key) = (&e.svc, &e.ca, &e.key);

    // A certname no PuppetNode has.
    let stranger = unique("stranger");
    let run = svc
        .puppet
        .run_agent(&stranger, Some("guess"), None, None)
        .await;
    assert_eq!(run.code, 1, "{}", run.output);

    // The certname of a node that was deleted, with its real challenge and instance id.
    let launched = e.launch("doomed-1").await;
    let gone = e.h.deleted_copy("doomed-1").await;
    for _ in 0..6 {
        if !gone.exists("doomed-1").await {
            break;
        }
        let _ = gone.reconcile("doomed-1").await;
    }
    assert!(!gone.exists("doomed-1").await, "the node finished deleting");
    e.h.delete("doomed-1").await;
    let run = svc
        .puppet
        .run_agent(
            &launched.certname,
            Some(&key.challenge(&launched.uid, 1)),
            Some(&launched.instance_id),
            None,
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.output);

    for _ in 0..2 {
        reconcile_master(&e).await;
    }
    let notes = warnings(&e, "CSRUnknownCertname");
    for certname in [&stranger, &launched.certname] {
        assert_eq!(
            notes
                .iter()
                .filter(|n| n.contains(certname.as_str()))
                .count(),
            1,
            "one Warning for {certname}, not one per pass: {notes:?}"
        );
        assert_eq!(
            ca.status(certname).await.unwrap().unwrap().state,
            CertState::Requested,
            "{certname} is never signed"
        );
        ca.revoke_and_clean(certname).await.unwrap();
        let _ = std::fs::remove_dir_all(svc.puppet.agent_ssl_dir(certname));
    }
}

/// A master's pass counts its nodes from the node watch's store once that store is synced
/// (no LIST of every node per pass), and lists the API until then: an unsynced store is
/// unknown, never "no nodes". The store here deliberately holds one of the two nodes, so
/// the count shows which one was read.
#[tokio::test]
async fn a_master_counts_its_nodes_from_the_synced_node_store_and_lists_before() {
    use kube::runtime::{reflector, watcher};
    use puppet_conductor::api::PuppetNode;
    use puppet_conductor::runner::wiring::GuardedNode;

    let nodes = vec![
        node("stored-1", "x", &["profile::base"]),
        node("unstored-2", "x", &["profile::base"]),
    ];
    let Some(e) = E2e::start("pmstore", SigningMode::Operator, nodes, |ca| ca).await else {
        return;
    };
    let (store, mut writer) = reflector::store::<GuardedNode>();
    e.h.ctx.node_cache.attach(store);
    writer.apply_watcher_event(&watcher::Event::Init);
    let api: Api<PuppetNode> = Api::namespaced(e.h.ctx.client.clone(), NS);
    let stored = api.get("stored-1").await.unwrap();
    writer.apply_watcher_event(&watcher::Event::InitApply(
        serde_json::from_value(serde_json::to_value(&stored).unwrap()).unwrap(),
    ));

    reconcile_master(&e).await;
    let total =
        |s: &puppet_conductor::api::master::PuppetMasterStatus| s.nodes.values().sum::<i32>();
    assert_eq!(total(&status(&e).await), 2, "not synced: the API's list");

    writer.apply_watcher_event(&watcher::Event::InitDone);
    reconcile_master(&e).await;
    assert_eq!(total(&status(&e).await), 1, "synced: the store's nodes");
}
