//! Deleting the namespace, against a real API server (`PC_TEST_KUBECONFIG`), the `run`
//! binary, the real CA and moto: the example master, its Secrets and three nodes (one
//! signed and classified by a real agent, two awaiting their CSR) are applied, then the
//! namespace itself is deleted, so the namespace controller deletes nodes, master and
//! Secrets all at once. The namespace must go within 180 s — which it only does when
//! every node's cleanup ran and the Secrets the master holds were not removed under it —
//! and nothing of the nodes may be left outside: no pending or running instance, no
//! certificate on the CA (the agent's next run fails), no record, check-in or signature
//! record under the master's prefix. Skipped without a kubeconfig.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::ResourceExt;
use puppet_conductor::api::master::SigningMode;
use puppet_conductor::api::node::Phase;
use puppet_conductor::api::{conditions, PuppetNode};
use puppet_conductor::ca::{CertState, PuppetCa};
use puppet_conductor::cloud::tags;

use crate::cluster_support::*;
use crate::common::services::Services;
use crate::e2e_support::{
    assert_applied_webserver, assert_run_refused, autosign_mode, write_enc_env, PUPPETSERVER,
    REGION,
};
use crate::node_support::{unique, MotoServices, MOTO_LOAD};

#[tokio::test]
async fn cluster_namespace_deletion_cleans_up_every_node_and_releases_the_secrets() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    let moto_load = MOTO_LOAD.read().await;
    let Some(svc) = Services::from_env() else {
        return;
    };
    let puppetserver = PUPPETSERVER.lock().await;
    autosign_mode("off");
    let bucket = unique("cluster-ns-records");
    let moto = MotoServices::new(&svc.moto_endpoint, REGION, &bucket).await;
    write_enc_env(&bucket, &svc.moto_endpoint, REGION);
    let objects = example_objects(&Loopback::of(&svc, REGION, &bucket, SigningMode::Operator));

    with_cluster(&kubeconfig, "cluster-ns", move |c| async move {
        let ca = svc.puppet.ca_client(Duration::from_secs(20));
        let master = apply_master_and_await_ready(&c, &objects).await;
        let names: Vec<String> = (1..=3).map(|i| format!("web-{i}")).collect();
        let launched =
            apply_nodes_and_await_launch(&c, &objects.node, &names, Duration::from_secs(120)).await;
        let nodes = c.api::<PuppetNode>();

        // web-1 is played by a real agent: signed by the operator's poll, then classified.
        let web1 = &launched[0];
        let (challenge, iid) = launched_csr_attributes(&svc.moto_endpoint, &web1.instance_id).await;
        let agent = || {
            svc.puppet
                .run_agent(&web1.certname, Some(&challenge), Some(&iid), None)
        };
        let first = agent().await;
        assert_eq!(first.code, 1, "no certificate yet:\n{}", first.output);
        eventually("web-1's CSR signed", Duration::from_secs(60), || async {
            let st = ca.status(&web1.certname).await.ok()??;
            (st.state == CertState::Signed).then_some(())
        })
        .await;
        assert_applied_webserver(&agent().await);
        eventually(
            "web-1 Classified and Ready",
            Duration::from_secs(60),
            || async {
                let st = nodes.get(&web1.name).await.ok()?.status?;
                let classified = st
                    .conditions
                    .iter()
                    .any(|k| k.type_ == conditions::CLASSIFIED && k.status == "True");
                (st.phase == Some(Phase::Ready) && classified).then_some(())
            },
        )
        .await;

        // Before: every node has its record, web-1 its check-in and signature record, so
        // the checks after the deletion can fail.
        let certnames: BTreeSet<String> = launched.iter().map(|l| l.certname.clone()).collect();
        let before = prefix_objects(&svc.moto_endpoint, &master).await;
        assert!(
            certnames.is_subset(&before.records),
            "records of {certnames:?} before the deletion; found {before:?}"
        );
        assert!(
            before.check_ins.contains(&web1.certname) && before.signatures.contains(&web1.certname),
            "web-1's check-in and signature record before the deletion; found {before:?}"
        );

        // kubectl delete namespace: nodes, master and Secrets are deleted together.
        delete_namespace_and_await_gone(&c, Duration::from_secs(180)).await;

        // No live instance: one launch per node, each terminated or shutting down.
        let master_key = tags::object_key(&c.ns, &master.name_any());
        let by_node = launches_by_node(moto.cloud.as_ref(), &master_key).await;
        let uids: BTreeSet<&str> = launched.iter().map(|l| l.uid.as_str()).collect();
        let tagged: BTreeSet<&str> = by_node.keys().map(String::as_str).collect();
        assert_eq!(
            tagged, uids,
            "node UIDs tagged on the instances of {master_key} vs the three nodes"
        );
        for l in &launched {
            let instances = &by_node[&l.uid];
            let ids: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
            assert_eq!(
                ids,
                vec![l.instance_id.as_str()],
                "{}: instances launched for it (status named {})",
                l.name,
                l.instance_id
            );
            let live: Vec<String> = instances
                .iter()
                .filter(|i| !i.state.is_terminating())
                .map(|i| format!("{} {}", i.id, i.state))
                .collect();
            assert!(
                live.is_empty(),
                "{}: instances still live: {live:?}",
                l.name
            );
        }

        // No record, check-in or signature record left under the master's prefix.
        let after = prefix_objects(&svc.moto_endpoint, &master).await;
        assert!(
            after.has_no_node_objects(),
            "left under the prefix {:?} of bucket {}: {} records, {} check-ins, {} \
             signatures: {after:?}",
            master.spec.records.prefix,
            master.spec.records.bucket,
            after.records.len(),
            after.check_ins.len(),
            after.signatures.len()
        );

        // No certificate or CSR left on the CA; the signed agent is refused.
        for l in &launched {
            let left = ca.status(&l.certname).await.unwrap();
            assert!(
                left.is_none(),
                "{} ({}): still on the CA: {left:?}",
                l.name,
                l.certname
            );
        }
        assert_run_refused(&agent().await);
    })
    .await;
    drop((puppetserver, moto_load));
}
