//! Hostile CSRs against the real CA, Operator mode: each is refused by the reconciler with
//! a Warning event naming the reason, and stays unsigned on later passes too.

use std::sync::Arc;

use puppet_conductor::api::master::CloudProvider;
use puppet_conductor::ca::{CertState, PuppetCa};
use puppet_conductor::controller::services::MasterServices;
use puppet_conductor::identity::ChallengeKey;

use crate::common::services::Services;
use crate::e2e_agent::{autosign_mode, Fixed, PUPPETSERVER};
use crate::node_support::*;

#[tokio::test]
async fn hostile_csrs_are_refused_with_a_warning_and_never_signed() {
    let _shared = MOTO_LOAD.read().await;
    let Some(svc) = Services::from_env() else {
        return;
    };
    let _puppetserver = PUPPETSERVER.lock().await;
    autosign_mode("off");
    let region = "us-east-1";
    let bucket = unique("e2e-hostile");
    let moto = MotoServices::new(&svc.moto_endpoint, region, &bucket).await;
    let ca: Arc<dyn PuppetCa> = Arc::new(svc.puppet.ca_client(std::time::Duration::from_secs(20)));
    let key = ChallengeKey::generate();
    let services = Arc::new(MasterServices {
        cloud: moto.cloud.clone(),
        records: moto.records.clone(),
        ca: ca.clone(),
        ca_cert_pem: String::from_utf8(svc.puppet.ca_pem()).unwrap(),
        challenge_key: ChallengeKey::from_bytes(key.as_bytes()).unwrap(),
    });
    let master_name = unique("pm-hostile");
    let mut m = master(
        &master_name,
        &svc.moto_endpoint,
        region,
        &bucket,
        CloudProvider::Ec2,
    );
    m.spec.node_defaults.subnet_id = None;
    m.spec.node_defaults.security_group_ids = Vec::new();
    let h = Harness::new(
        Arc::new(Fixed(services)),
        (m, vec![node("target-1", &master_name, &["profile::base"])]),
    )
    .await;
    h.converge("target-1", 2).await;
    let n = h.get("target-1").await;
    let uid = n.metadata.uid.clone().unwrap();
    let st = n.status.unwrap();
    let certname = st.certname.unwrap();
    let instance_id = st.instance_id.unwrap();
    let challenge = key.challenge(&uid, 1);

    // (CSR attributes, alt names, expected refusal reason)
    let cases: [(&str, &str, Option<&str>, &str); 4] = [
        (
            "wrong challenge",
            "not-the-challenge",
            None,
            "CSRWrongChallenge",
        ),
        (
            "challenge of a previous incarnation",
            &key.challenge(&uid, 0),
            None,
            "CSRWrongChallenge",
        ),
        (
            "right challenge, wrong instance id",
            &challenge,
            None,
            "CSRWrongInstanceId",
        ),
        (
            "DNS alt names",
            &challenge,
            Some("evil.example.com"),
            "CSRDnsAltNamesNotAllowed",
        ),
    ];
    for (what, csr_challenge, alt_names, reason) in cases {
        let iid = if reason == "CSRWrongInstanceId" {
            "i-0fffffffffffffff0"
        } else {
            instance_id.as_str()
        };
        let run = svc
            .puppet
            .run_agent(&certname, Some(csr_challenge), Some(iid), alt_names)
            .await;
        assert_eq!(run.code, 1, "{what}: {}", run.output);
        for _ in 0..2 {
            h.reconcile("target-1").await.unwrap();
        }
        assert_eq!(
            ca.status(&certname).await.unwrap().unwrap().state,
            CertState::Requested,
            "{what}: never signed"
        );
        assert!(
            h.events
                .all()
                .iter()
                .any(|e| e.warning && e.reason == reason),
            "{what}: a Warning event {reason}: {:?}",
            h.events.all()
        );
        // Drop the CSR and the agent's key so the next case submits a fresh one.
        ca.revoke_and_clean(&certname).await.unwrap();
        let _ = std::fs::remove_dir_all(svc.puppet.agent_ssl_dir(&certname));
    }
    assert!(!h
        .events
        .all()
        .iter()
        .any(|e| e.reason == "CertificateSigned"));
}
