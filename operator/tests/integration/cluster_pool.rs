//! A PuppetNodePool on a real API server (`PC_TEST_KUBECONFIG`), with the `run` binary,
//! the real CA and agent, and moto: `kubectl scale` through the `/scale` subresource, a
//! rolling replacement after an instance-type change (one surge node, no old node deleted
//! before the new one is Ready, the old ones cleaned up: instance terminated, certificate
//! revoked), a classes change written in place, and `kubectl delete --cascade=foreground`
//! waiting for every node's cleanup. Skipped without a kubeconfig.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::ResourceExt;
use puppet_conductor::api::master::SigningMode;
use puppet_conductor::api::node::Phase;
use puppet_conductor::api::pool::{
    PoolSelector, PoolStrategy, PuppetNodePoolSpec, PuppetNodeTemplate, RollingUpdate,
    ScaleDownOrder, StrategyType, TemplateMetadata, TEMPLATE_HASH_LABEL,
};
use puppet_conductor::api::{PuppetNode, PuppetNodePool};
use puppet_conductor::ca::{CertState, PuppetCa};
use puppet_conductor::cloud::tags;
use serde_json::json;

use crate::cluster_support::*;
use crate::common::services::Services;
use crate::e2e_support::{
    assert_applied_webserver, autosign_mode, write_enc_env, PUPPETSERVER, REGION,
};
use crate::node_support::{unique, MotoServices, MOTO_LOAD};

/// Pool `web` of `replicas` nodes of `template`'s spec, labelled `app=web`, maxSurge 1 and
/// maxUnavailable 0 (the reconciler tests' pool too).
pub(crate) fn pool_of(template: &PuppetNode, replicas: i32) -> PuppetNodePool {
    let labels = [("app".to_string(), "web".to_string())];
    PuppetNodePool::new(
        "web",
        PuppetNodePoolSpec {
            replicas,
            selector: PoolSelector {
                match_labels: labels.clone().into(),
                match_expressions: Vec::new(),
            },
            template: PuppetNodeTemplate {
                metadata: TemplateMetadata {
                    labels: labels.into(),
                    annotations: Default::default(),
                },
                spec: template.spec.clone(),
            },
            strategy: PoolStrategy {
                type_: StrategyType::RollingUpdate,
                rolling_update: Some(RollingUpdate {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            },
            min_ready_seconds: 0,
            scale_down_order: ScaleDownOrder::NewestFirst,
        },
    )
}

/// The pool's nodes that are not being deleted, by name.
async fn live_nodes(c: &Cluster) -> Vec<PuppetNode> {
    let mut nodes: Vec<PuppetNode> = c
        .api::<PuppetNode>()
        .list(&ListParams::default().labels("puppet-conductor.dev/pool=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .collect();
    nodes.sort_by_key(|n| n.name_any());
    nodes
}

fn ready(n: &PuppetNode) -> bool {
    n.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)
}

#[tokio::test]
async fn cluster_pool_scales_rolls_and_cascades() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    let moto_load = MOTO_LOAD.read().await;
    let Some(svc) = Services::from_env() else {
        return;
    };
    let puppetserver = PUPPETSERVER.lock().await;
    autosign_mode("off");
    let bucket = unique("cluster-pool-records");
    let moto = MotoServices::new(&svc.moto_endpoint, REGION, &bucket).await;
    write_enc_env(&bucket, &svc.moto_endpoint, REGION);
    let objects = example_objects(&Loopback::of(&svc, REGION, &bucket, SigningMode::Operator));

    with_cluster(&kubeconfig, "cluster-pool", move |c| async move {
        let ca = svc.puppet.ca_client(Duration::from_secs(20));
        let master = apply_master_and_await_ready(&c, &objects).await;
        let pools = c.api::<PuppetNodePool>();
        let nodes = c.api::<PuppetNode>();
        apply(&c.client, &c.ns, &pool_of(&objects.node, 1)).await;

        // A real agent plays the node `name`: its CSR signed by the operator, its catalog
        // applied, the node Ready. Returns its certname.
        let play = |name: String| {
            let (c, svc, ca) = (c.clone(), svc.clone(), ca.clone());
            async move {
                let api = c.api::<PuppetNode>();
                let launched = eventually(
                    &format!("{name} AwaitingCSR"),
                    Duration::from_secs(120),
                    || async { launched_node(&api.get(&name).await.ok()?) },
                )
                .await;
                let (challenge, iid) =
                    launched_csr_attributes(&svc.moto_endpoint, &launched.instance_id).await;
                let run = || {
                    svc.puppet
                        .run_agent(&launched.certname, Some(&challenge), Some(&iid), None)
                };
                let first = run().await;
                assert_eq!(
                    first.code, 1,
                    "{name}: no certificate yet:\n{}",
                    first.output
                );
                eventually(
                    &format!("{name}'s CSR signed"),
                    Duration::from_secs(60),
                    || async {
                        let st = ca.status(&launched.certname).await.ok()??;
                        (st.state == CertState::Signed).then_some(())
                    },
                )
                .await;
                assert_applied_webserver(&run().await);
                eventually(
                    &format!("{name} Ready"),
                    Duration::from_secs(60),
                    || async { ready(&api.get(&name).await.ok()?).then_some(()) },
                )
                .await;
                launched
            }
        };

        // kubectl scale pnp/web --replicas=2: through the /scale subresource.
        let web0 = play("web-0".to_string()).await;
        pools
            .patch_scale(
                "web",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"replicas": 2}})),
            )
            .await
            .unwrap();
        let web1 = play("web-1".to_string()).await;
        let scale = eventually(
            "/scale reports 2 replicas and the selector",
            Duration::from_secs(60),
            || async {
                let s = pools.get_scale("web").await.ok()?;
                let st = s.status?;
                (st.replicas == 2).then_some(st)
            },
        )
        .await;
        assert_eq!(scale.selector.as_deref(), Some("app=web"));
        let pool = eventually("pool status 2/2 ready", Duration::from_secs(60), || async {
            let p = pools.get("web").await.ok()?;
            let st = p.status.as_ref()?;
            (st.ready_replicas == 2 && st.available_replicas == 2 && st.updated_replicas == 2)
                .then_some(p)
        })
        .await;
        let old_hash = pool.status.unwrap().template_hash.unwrap();

        // A classes change: written into both nodes in place, no new node.
        let mut edited = pool_of(&objects.node, 2);
        edited
            .spec
            .template
            .spec
            .classes
            .push("role::monitored".into());
        apply(&c.client, &c.ns, &edited).await;
        eventually(
            "classes rewritten on both nodes",
            Duration::from_secs(60),
            || async {
                let live = live_nodes(&c).await;
                (live.len() == 2
                    && live
                        .iter()
                        .all(|n| n.spec.classes.contains(&"role::monitored".to_string())))
                .then_some(())
            },
        )
        .await;
        assert_eq!(
            live_nodes(&c)
                .await
                .iter()
                .map(|n| n.name_any())
                .collect::<Vec<_>>(),
            ["web-0", "web-1"],
            "no node replaced for a classes change"
        );

        // An instance-type change: a roll. One surge node, and no old node goes while it
        // is not Ready.
        edited.spec.template.spec.instance.instance_type = Some("t3.medium".into());
        apply(&c.client, &c.ns, &edited).await;
        eventually("a surge node web-2", Duration::from_secs(60), || async {
            nodes.get_opt("web-2").await.ok()?.map(|_| ())
        })
        .await;
        for _ in 0..10 {
            let live = live_nodes(&c).await;
            assert_eq!(
                live.len(),
                3,
                "an old node went before the new one was Ready: {:?}",
                live.iter().map(|n| n.name_any()).collect::<Vec<_>>()
            );
            let all = nodes.list(&ListParams::default()).await.unwrap().items;
            assert!(
                all.len() <= 3,
                "more than replicas + maxSurge nodes: {}",
                all.len()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let web2 = play("web-2".to_string()).await;
        // web-1 (the newest old node) goes; its name is free again for the next surge node.
        eventually(
            "an old node deleted and released",
            Duration::from_secs(120),
            || async {
                let names: BTreeSet<String> = nodes
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .iter()
                    .map(|n| n.name_any())
                    .collect();
                (!names.contains("web-1")
                    || nodes
                        .get_opt("web-1")
                        .await
                        .ok()??
                        .labels()
                        .get(TEMPLATE_HASH_LABEL)
                        != Some(&old_hash))
                .then_some(())
            },
        )
        .await;
        let web1_again = play("web-1".to_string()).await;
        eventually(
            "the roll done: 2 updated, available nodes",
            Duration::from_secs(180),
            || async {
                let p = pools.get("web").await.ok()?;
                let st = p.status.as_ref()?;
                let live = live_nodes(&c).await;
                (st.updated_replicas == 2
                    && st.available_replicas == 2
                    && st.replicas == 2
                    && live.len() == 2
                    && live
                        .iter()
                        .all(|n| n.labels().get(TEMPLATE_HASH_LABEL) != Some(&old_hash)))
                .then_some(())
            },
        )
        .await;
        // The old nodes are cleaned up: their certificates revoked, their instances
        // terminated.
        let master_key = tags::object_key(&c.ns, &master.name_any());
        let instances: Vec<_> = launches_by_node(moto.cloud.as_ref(), &master_key)
            .await
            .into_values()
            .flatten()
            .collect();
        for old in [&web0, &web1] {
            eventually(
                &format!("{}'s certificate cleaned", old.name),
                Duration::from_secs(60),
                || async {
                    let st = ca.status(&old.certname).await.ok()?;
                    st.is_none_or(|s| s.state == CertState::Revoked)
                        .then_some(())
                },
            )
            .await;
            let instance = instances.iter().find(|i| i.id == old.instance_id);
            assert!(
                instance.is_none_or(|i| i.state.is_terminating()),
                "{} still runs",
                old.instance_id
            );
        }

        // kubectl delete pnp web --cascade=foreground: the pool goes only once every node
        // is cleaned up.
        pools
            .delete(
                "web",
                &DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Foreground),
                    ..DeleteParams::default()
                },
            )
            .await
            .unwrap();
        eventually("the pool gone", Duration::from_secs(180), || async {
            pools.get_opt("web").await.ok()?.is_none().then_some(())
        })
        .await;
        assert!(
            nodes
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty(),
            "nodes left after the pool"
        );
        let by_node = launches_by_node(moto.cloud.as_ref(), &master_key).await;
        for (uid, instances) in &by_node {
            assert!(
                instances.iter().all(|i| i.state.is_terminating()),
                "node {uid}: {instances:?}"
            );
        }
        for l in [&web2, &web1_again] {
            let st = ca.status(&l.certname).await.unwrap();
            assert!(
                st.is_none_or(|s| s.state == CertState::Revoked),
                "{} still signed",
                l.certname
            );
        }
        drop(moto);
    })
    .await;
    drop(puppetserver);
    drop(moto_load);
}
