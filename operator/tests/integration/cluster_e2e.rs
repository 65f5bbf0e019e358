//! Cluster tests: the operator binary (`puppet-conductor run`) against a real Kubernetes
//! API, with moto and puppetserver on loopback. They run when `PC_TEST_KUBECONFIG` names a
//! kubeconfig (1.25+ cluster, rights to manage CRDs and namespaces) and the services of
//! `tests/services/up.sh` are up; otherwise they skip. Each test gets its own namespace and
//! its own operator process watching only it.
//!
//! The scenario is the certificate issue's end to end, driven only through the API: apply
//! the example manifests → the operator launches → a real puppet agent plays the instance
//! with the CSR attributes of its user data → signed (by the operator's poll, or by
//! `puppet-conductor autosign` at submission) → the agent applies the declared classes →
//! `Classified` → `kubectl delete` → instance terminated, certificate revoked (the agent's
//! next run fails), record gone, finalizer released.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::ResourceExt;
use puppet_conductor::api::master::SigningMode;
use puppet_conductor::api::node::Phase;
use puppet_conductor::api::{conditions, PuppetMaster, PuppetNode};
use puppet_conductor::ca::{CertState, PuppetCa};

use crate::cluster_support::*;
use crate::common::services::Services;
use crate::crd_schema_support::{yaml_documents, CrdSchema};
use crate::e2e_support::{
    assert_applied_webserver, assert_cleaned_up, assert_run_refused, autosign_mode, write_enc_env,
    PUPPETSERVER, REGION,
};
use crate::node_support::{unique, MotoServices, MOTO_LOAD};

fn is_true(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// A `Loopback` with made-up services: enough to check the rewritten examples.
fn sample_loopback(mode: SigningMode) -> Loopback {
    Loopback {
        server: "puppet.test".into(),
        port: 8140,
        ca_url: "https://127.0.0.1:8140".into(),
        ca_pem: b"ca".to_vec(),
        client_cert: b"cert".to_vec(),
        client_key: b"key".to_vec(),
        moto_endpoint: "http://127.0.0.1:5000".into(),
        region: REGION.into(),
        bucket: "cluster-records".into(),
        mode,
    }
}

/// Runs without a cluster: what the cluster tests apply is what the examples say, only
/// pointed at loopback, and the CRD schema (with its CEL rules) admits it.
#[test]
fn examples_rewritten_for_loopback_are_admitted_and_still_reference_each_other() {
    for mode in [SigningMode::Operator, SigningMode::Policy] {
        let o = example_objects(&sample_loopback(mode));
        let master = serde_json::to_value(&o.master).unwrap();
        let node = serde_json::to_value(&o.node).unwrap();
        assert_eq!(
            CrdSchema::of::<PuppetMaster>().create_errors(&master),
            Vec::<String>::new()
        );
        assert_eq!(
            CrdSchema::of::<PuppetNode>().create_errors(&node),
            Vec::<String>::new()
        );
        assert_eq!(o.node.spec.master_ref.name, o.master.name_any());
        assert_eq!(o.node.spec.classes, vec!["role::webserver".to_string()]);
        assert_eq!(
            o.master.spec.ca.client_secret_ref.name,
            o.ca_client.name_any()
        );
        for reference in [
            &o.master.spec.cloud.credentials_secret_ref,
            &o.master.spec.records.credentials_secret_ref,
        ] {
            assert_eq!(
                reference.as_ref().map(|r| r.name.as_str()),
                Some(o.cloud_credentials.name_any().as_str())
            );
        }
        assert_eq!(o.master.spec.signing.mode, mode);
        assert_eq!(
            o.master.spec.cloud.endpoint.as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(o.master.spec.records.bucket, "cluster-records");
        let ca = o.ca_client.data.as_ref().unwrap();
        assert_eq!(ca["tls.crt"].0, b"cert");
        assert_eq!(ca["tls.key"].0, b"key");
        assert_eq!(ca["ca.crt"].0, b"ca");
        let cloud = o.cloud_credentials.data.as_ref().unwrap();
        assert_eq!(cloud["accessKeyId"].0, b"testing");
    }
}

/// The whole scenario in one signing mode.
async fn signed_classified_and_revoked(prefix: &'static str, mode: SigningMode) {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    let moto_load = MOTO_LOAD.read().await;
    let Some(svc) = Services::from_env() else {
        return;
    };
    let puppetserver = PUPPETSERVER.lock().await;
    autosign_mode("off");
    let bucket = unique(&format!("{prefix}-records"));
    let moto = MotoServices::new(&svc.moto_endpoint, REGION, &bucket).await;
    write_enc_env(&bucket, &svc.moto_endpoint, REGION);
    let objects = example_objects(&Loopback::of(&svc, REGION, &bucket, mode));

    with_cluster(&kubeconfig, prefix, move |c| async move {
        let ca = svc.puppet.ca_client(Duration::from_secs(20));
        let Launched {
            master,
            node,
            certname,
            instance_id,
        } = apply_examples_and_await_launch(&c, &objects).await;
        let (masters, nodes) = (c.api::<PuppetMaster>(), c.api::<PuppetNode>());

        // The agent plays the instance with what its cloud-init would hand it.
        let (challenge, pp_instance_id) = launched_csr_attributes(&svc.moto_endpoint, &instance_id).await;
        assert_eq!(pp_instance_id, instance_id);
        let agent = || {
            svc.puppet
                .run_agent(&certname, Some(&challenge), Some(&pp_instance_id), None)
        };

        let run = match mode {
            SigningMode::Operator => {
                let first = agent().await;
                assert_eq!(first.code, 1, "no certificate yet:\n{}", first.output);
                let submitted = Instant::now();
                eventually("the CSR signed", Duration::from_secs(60), || async {
                    let st = ca.status(&certname).await.ok()??;
                    (st.state == CertState::Signed).then_some(())
                })
                .await;
                // Issue 13: CSR → signed at the default settings, through the CA watch.
                println!(
                    "BENCH cluster, Operator mode, default signing settings (pollInterval {:?}): CSR submitted to signed: {:.2} s",
                    puppet_conductor::api::master::DEFAULT_POLL_INTERVAL,
                    submitted.elapsed().as_secs_f64()
                );
                agent().await
            }
            SigningMode::Policy => {
                autosign_mode("policy");
                let run = agent().await;
                autosign_mode("off");
                run
            }
        };
        assert_applied_webserver(&run);

        let st = eventually("Classified and Ready", Duration::from_secs(60), || async {
            let st = nodes.get(&node.name_any()).await.ok()?.status?;
            (st.phase == Some(Phase::Ready) && is_true(&st.conditions, conditions::CLASSIFIED))
                .then_some(st)
        })
        .await;
        assert!(st.last_check_in.is_some());
        assert_eq!(
            st.certificate.as_ref().and_then(|c| c.state.as_deref()),
            Some("signed")
        );
        if mode == SigningMode::Operator {
            let reasons = c.event_reasons(&node.name_any()).await;
            assert!(
                reasons.iter().any(|r| r == "CertificateSigned"),
                "{reasons:?}"
            );
        }

        // kubectl delete: terminate, revoke, remove the record, release.
        delete_and_await_release(&nodes, &node.name_any(), Duration::from_secs(120)).await;
        let master_key = format!("{}/{}", c.ns, master.name_any());
        assert_cleaned_up(&ca, &moto, &certname, &master_key).await;
        assert_run_refused(&agent().await);

        // The master, now without nodes, is released at once.
        delete_and_await_release(&masters, &master.name_any(), Duration::from_secs(30)).await;
    })
    .await;
    drop((puppetserver, moto_load));
}

#[tokio::test]
async fn cluster_operator_mode_signs_classifies_and_revokes() {
    signed_classified_and_revoked("cluster-op", SigningMode::Operator).await;
}

#[tokio::test]
async fn cluster_policy_mode_signs_at_submission_classifies_and_revokes() {
    signed_classified_and_revoked("cluster-policy", SigningMode::Policy).await;
}

/// Every example manifest, full ones included, is admitted by the cluster's API server
/// (server-side dry run: schema, CEL rules and defaults as the real server applies them).
#[tokio::test]
async fn cluster_admits_every_example_manifest() {
    let Some(kubeconfig) = kubeconfig() else {
        return;
    };
    with_cluster(&kubeconfig, "cluster-examples", |c| async move {
        let dir = crate::crd_schema_support::repo_root().join("manifests/examples");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let dry_run = PatchParams::apply("puppet-conductor-tests").dry_run();
        for path in files {
            for doc in yaml_documents(&std::fs::read_to_string(&path).unwrap()).unwrap() {
                let name = doc["metadata"]["name"].as_str().unwrap().to_string();
                let result = match doc["kind"].as_str() {
                    Some("Secret") => c
                        .api::<Secret>()
                        .patch(&name, &dry_run, &Patch::Apply(&doc))
                        .await
                        .map(|_| ()),
                    Some("PuppetMaster") => c
                        .api::<PuppetMaster>()
                        .patch(&name, &dry_run, &Patch::Apply(&doc))
                        .await
                        .map(|_| ()),
                    Some("PuppetNode") => c
                        .api::<PuppetNode>()
                        .patch(&name, &dry_run, &Patch::Apply(&doc))
                        .await
                        .map(|_| ()),
                    other => panic!("{}: unexpected kind {other:?}", path.display()),
                };
                if let Err(e) = result {
                    panic!("{} ({name}) refused: {e}", path.display());
                }
            }
        }
    })
    .await;
}
