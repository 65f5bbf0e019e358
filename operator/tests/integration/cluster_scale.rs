//! A hundred nodes at once, against a real API server (`PC_TEST_KUBECONFIG`), the `run`
//! binary, the real CA and a moto of the test's own: 100 PuppetNodes of one master applied
//! together (as a GitOps sync of a directory would) all reach AwaitingCSR, and moto, which
//! keeps every instance ever launched, shows exactly one launch per node, all of
//! incarnation 1 — no double launch, whatever the reconciles' concurrency and the caches'
//! lag. Deleting all 100 together then terminates exactly those 100 instances (none
//! launched meanwhile), removes every record, and leaves the master Ready. Skipped
//! without a kubeconfig.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ListParams};
use kube::ResourceExt;
use puppet_conductor::api::master::SigningMode;
use puppet_conductor::api::{PuppetMaster, PuppetNode};
use puppet_conductor::cloud::{tags, Instance};

use crate::cloud_support::SpawnedMoto;
use crate::cluster_support::*;
use crate::common::services::Services;
use crate::e2e_support::{PUPPETSERVER, REGION};
use crate::node_support::{unique, MotoServices, MOTO_LOAD};

const NODES: usize = 100;

/// What is wrong with the launches moto shows against the nodes that launched: anything
/// but exactly one instance per node, tagged incarnation 1 and the one its status names.
/// Returns the launch count and the problems found.
fn launch_problems(
    by_node: &BTreeMap<String, Vec<Instance>>,
    launched: &[LaunchedNode],
) -> (usize, Vec<String>) {
    let total = by_node.values().map(Vec::len).sum();
    let ours: BTreeSet<&str> = launched.iter().map(|l| l.uid.as_str()).collect();
    let mut problems: Vec<String> = by_node
        .iter()
        .filter(|(uid, _)| !ours.contains(uid.as_str()))
        .map(|(uid, i)| {
            format!(
                "{} instance(s) tagged with node UID {uid:?} of no node of the trial",
                i.len()
            )
        })
        .collect();
    for l in launched {
        let instances = by_node.get(&l.uid).map(Vec::as_slice).unwrap_or_default();
        let ids: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
        if ids != [l.instance_id.as_str()] {
            problems.push(format!(
                "{}: launches {ids:?}, status names {}",
                l.name, l.instance_id
            ));
        }
        for i in instances {
            if i.tag(tags::INCARNATION) != Some("1") {
                problems.push(format!(
                    "{}: {} tagged incarnation {:?}",
                    l.name,
                    i.id,
                    i.tag(tags::INCARNATION)
                ));
            }
        }
    }
    (total, problems)
}

/// Waits until none of the namespace's PuppetNodes is left (every finalizer released); on
/// timeout, says how many are left and in which phases.
async fn await_all_released(nodes: &Api<PuppetNode>, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = nodes
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_else(|e| panic!("listing PuppetNodes: {e}"));
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {NODES} PuppetNodes still there {within:?} after their deletion; phases: {:?}",
            left.len(),
            phase_counts(&left)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn cluster_100_nodes_applied_at_once_launch_once_each_and_all_clean_up() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    // Alone, as the 1,000-node pass: 100 launches and an operator's load on 2 cores.
    let alone = MOTO_LOAD.write().await;
    let Some(svc) = Services::from_env() else {
        return;
    };
    // No other test breaks the shared CA's listing meanwhile: the master must stay Ready.
    let puppetserver = PUPPETSERVER.lock().await;
    // Its own moto, so 100 instances that stay listed for ever do not slow every other
    // test's tag-filtered describes.
    let own_moto = SpawnedMoto::start(&[]).await;
    let bucket = unique("cluster-scale-records");
    let moto = MotoServices::new(&own_moto.endpoint, REGION, &bucket).await;
    let mut lo = Loopback::of(&svc, REGION, &bucket, SigningMode::Operator);
    lo.moto_endpoint = own_moto.endpoint.clone();
    let objects = example_objects(&lo);
    let endpoint = own_moto.endpoint.clone();

    with_cluster(&kubeconfig, "cluster-scale", move |c| async move {
        let master = apply_master_and_await_ready(&c, &objects).await;
        let master_key = tags::object_key(&c.ns, &master.name_any());
        let names: Vec<String> = (0..NODES).map(|i| format!("node-{i:03}")).collect();
        let started = Instant::now();
        let launched =
            apply_nodes_and_await_launch(&c, &objects.node, &names, Duration::from_secs(360)).await;
        println!(
            "BENCH cluster: {NODES} PuppetNodes applied at once, all AwaitingCSR after {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let not_first: Vec<String> = launched
            .iter()
            .filter(|l| l.incarnation != Some(1))
            .map(|l| format!("{}: {:?}", l.name, l.incarnation))
            .collect();
        assert!(
            not_first.is_empty(),
            "{} of {NODES} nodes' status names an incarnation other than 1: {not_first:?}",
            not_first.len()
        );
        let by_node = launches_by_node(moto.cloud.as_ref(), &master_key).await;
        let (launches, problems) = launch_problems(&by_node, &launched);
        assert!(
            launches == NODES && problems.is_empty(),
            "moto counts {launches} launches for {NODES} nodes of {master_key}; {problems:?}"
        );
        let ids: BTreeSet<String> = by_node.values().flatten().map(|i| i.id.clone()).collect();
        let certnames: BTreeSet<String> = launched.iter().map(|l| l.certname.clone()).collect();
        let before = prefix_objects(&endpoint, &master).await;
        assert_eq!(
            before.records,
            certnames,
            "records under the prefix ({} of them) vs the {NODES} nodes' certnames",
            before.records.len()
        );

        // kubectl delete puppetnodes --all
        let nodes = c.api::<PuppetNode>();
        nodes
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting the PuppetNodes of {}: {e}", c.ns));
        let deleting = Instant::now();
        await_all_released(&nodes, Duration::from_secs(360)).await;
        println!(
            "BENCH cluster: {NODES} PuppetNodes deleted at once, all released after {:.1} s",
            deleting.elapsed().as_secs_f64()
        );

        let after = launches_by_node(moto.cloud.as_ref(), &master_key).await;
        let (launches, problems) = launch_problems(&after, &launched);
        assert!(
            launches == NODES && problems.is_empty(),
            "after the deletion moto counts {launches} launches for {NODES} nodes; {problems:?}"
        );
        let ids_after: BTreeSet<String> = after.values().flatten().map(|i| i.id.clone()).collect();
        assert_eq!(
            ids_after, ids,
            "the same {NODES} instances before and after the deletion"
        );
        let live: Vec<String> = after
            .values()
            .flatten()
            .filter(|i| !i.state.is_terminating())
            .map(|i| format!("{} {}", i.id, i.state))
            .collect();
        assert!(
            live.is_empty(),
            "{} of {launches} instances neither terminated nor shutting down: {live:?}",
            live.len()
        );
        let left = prefix_objects(&endpoint, &master).await;
        assert!(
            left.has_no_node_objects(),
            "left under the prefix after deleting {NODES} nodes: {} records, {} check-ins, \
             {} signatures: {left:?}",
            left.records.len(),
            left.check_ins.len(),
            left.signatures.len()
        );
        let m = c
            .api::<PuppetMaster>()
            .get(&master.name_any())
            .await
            .unwrap();
        assert!(
            master_ready(&m),
            "the master is no longer Ready after {NODES} nodes came and went: {:?}",
            m.status.map(|s| s.conditions)
        );
    })
    .await;
    own_moto.stop().await;
    drop((puppetserver, alone));
}
