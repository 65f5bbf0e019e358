//! Trust against a real API server (`PC_TEST_KUBECONFIG`), the `run` binary, the real CA
//! and moto, in both signing modes: a squatter's CSR is refused and removed and the real
//! agent signed after it; a replay after a hand clean is never signed, and the node whose
//! certificate vanished is fenced and replaced (the examples' `replacePolicy: Replace`);
//! deletion then cleans up the new incarnation. Skipped without a kubeconfig.

use std::time::Duration;

use kube::ResourceExt;
use puppet_conductor::api::master::SigningMode;
use puppet_conductor::api::PuppetNode;
use puppet_conductor::ca::{CertState, PuppetCa};
use reqwest::StatusCode;

use crate::ca_hostile_contract::{forge_csr, submit_csr};
use crate::cluster_support::*;
use crate::common::services::Services;
use crate::e2e_support::{autosign_mode, write_enc_env, PUPPETSERVER, REGION};
use crate::node_support::{unique, MotoServices, MOTO_LOAD};

async fn squatter_replay_and_lost_certificate(prefix: &'static str, mode: SigningMode) {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    let moto_load = MOTO_LOAD.read().await;
    let Some(svc) = Services::from_env() else {
        return;
    };
    let puppetserver = PUPPETSERVER.lock().await;
    autosign_mode(if mode == SigningMode::Policy {
        "policy"
    } else {
        "off"
    });
    let bucket = unique(&format!("{prefix}-records"));
    let _moto = MotoServices::new(&svc.moto_endpoint, REGION, &bucket).await;
    write_enc_env(&bucket, &svc.moto_endpoint, REGION);
    let objects = example_objects(&Loopback::of(&svc, REGION, &bucket, mode));

    with_cluster(&kubeconfig, prefix, move |c| async move {
        let ca = svc.puppet.ca_client(Duration::from_secs(20));
        let Launched {
            node,
            certname,
            instance_id,
            ..
        } = apply_examples_and_await_launch(&c, &objects).await;
        let nodes = c.api::<PuppetNode>();
        let (challenge, iid) = launched_csr_attributes(&svc.moto_endpoint, &instance_id).await;

        // A squatter guesses the challenge and gets there first.
        let (squat, _) = forge_csr(&certname, Some("guessed"), Some(&iid), false);
        assert_eq!(
            submit_csr(&svc.puppet, &certname, &squat).await.0,
            StatusCode::OK
        );
        eventually(
            "the squatter's CSR removed",
            Duration::from_secs(60),
            || async { ca.status(&certname).await.ok()?.is_none().then_some(()) },
        )
        .await;
        let reasons = c.event_reasons(&node.name_any()).await;
        assert!(
            reasons.iter().any(|r| r == "CSRWrongChallenge"),
            "{reasons:?}"
        );

        // The real agent's next run goes through.
        let _ = svc
            .puppet
            .run_agent(&certname, Some(&challenge), Some(&iid), None)
            .await;
        let serial = eventually("signed and recorded", Duration::from_secs(60), || async {
            let st = nodes.get(&node.name_any()).await.ok()?.status?;
            st.certificate?.serial
        })
        .await;
        assert_eq!(
            ca.status(&certname).await.unwrap().map(|s| s.state),
            Some(CertState::Signed)
        );

        // Cleaned by hand, then a replay with a new key: never signed; the node is fenced
        // and replaced by incarnation 2.
        ca.revoke_and_clean(&certname).await.unwrap();
        let (replay, _) = forge_csr(&certname, Some(&challenge), Some(&iid), false);
        assert_eq!(
            submit_csr(&svc.puppet, &certname, &replay).await.0,
            StatusCode::OK
        );
        let st = eventually(
            "replaced by incarnation 2",
            Duration::from_secs(120),
            || async {
                let st = nodes.get(&node.name_any()).await.ok()?.status?;
                (st.incarnation == Some(2) && st.instance_id.is_some()).then_some(st)
            },
        )
        .await;
        assert_ne!(st.certname.as_deref(), Some(certname.as_str()));
        eventually(
            "the replayed CSR removed",
            Duration::from_secs(60),
            || async { ca.status(&certname).await.ok()?.is_none().then_some(()) },
        )
        .await;
        let reasons = c.event_reasons(&node.name_any()).await;
        assert!(
            reasons.iter().any(|r| r == "CertificateVanished"),
            "{reasons:?} (serial {serial})"
        );

        delete_and_await_release(&nodes, &node.name_any(), Duration::from_secs(120)).await;
        assert!(ca.status(&certname).await.unwrap().is_none());
    })
    .await;
    autosign_mode("off");
    drop((puppetserver, moto_load));
}

#[tokio::test]
async fn cluster_operator_mode_refuses_squatters_and_replays_and_replaces_a_lost_certificate() {
    squatter_replay_and_lost_certificate("cluster-trust-op", SigningMode::Operator).await;
}

#[tokio::test]
async fn cluster_policy_mode_refuses_squatters_and_replays_and_replaces_a_lost_certificate() {
    squatter_replay_and_lost_certificate("cluster-trust-pol", SigningMode::Policy).await;
}
