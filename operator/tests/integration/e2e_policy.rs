//! Policy signing mode end to end: puppetserver runs `puppet-conductor autosign` at CSR
//! submission; it signs the agent that holds its incarnation's challenge and instance id
//! (the agent gets its catalog in the same run) and refuses a CSR with another node's
//! challenge, which stays waiting.

use std::sync::Arc;

use puppet_conductor::api::master::{CloudProvider, SigningMode};
use puppet_conductor::ca::{CertState, PuppetCa};
use puppet_conductor::controller::services::MasterServices;
use puppet_conductor::identity::ChallengeKey;

use crate::common::services::Services;
use crate::e2e_agent::{autosign_mode, write_enc_env, Fixed, PUPPETSERVER};
use crate::node_support::*;

#[tokio::test]
async fn policy_mode_autosign_signs_at_submission_and_refuses_a_wrong_challenge() {
    let _shared = MOTO_LOAD.read().await;
    let Some(svc) = Services::from_env() else {
        return;
    };
    let _puppetserver = PUPPETSERVER.lock().await;
    let region = "us-east-1";
    let bucket = unique("e2e-policy");
    let moto = MotoServices::new(&svc.moto_endpoint, region, &bucket).await;
    let ca: Arc<dyn PuppetCa> = Arc::new(svc.puppet.ca_client(std::time::Duration::from_secs(20)));
    let services = Arc::new(MasterServices {
        cloud: moto.cloud.clone(),
        records: moto.records.clone(),
        ca: ca.clone(),
        ca_cert_pem: String::from_utf8(svc.puppet.ca_pem()).unwrap(),
        challenge_key: ChallengeKey::generate(),
    });
    write_enc_env(&bucket, &svc.moto_endpoint, region);
    let master_name = unique("pm-policy");
    let mut m = master(
        &master_name,
        &svc.moto_endpoint,
        region,
        &bucket,
        CloudProvider::Ec2,
    );
    m.spec.signing.mode = SigningMode::Policy;
    m.spec.node_defaults.subnet_id = None;
    m.spec.node_defaults.security_group_ids = Vec::new();
    let nodes = vec![
        node("policy-1", &master_name, &["profile::base"]),
        node("policy-2", &master_name, &["profile::base"]),
    ];
    let h = Harness::new(Arc::new(Fixed(services)), (m, nodes)).await;
    h.converge("policy-1", 2).await;
    h.converge("policy-2", 2).await;
    let st1 = h.get("policy-1").await.status.unwrap();
    let st2 = h.get("policy-2").await.status.unwrap();
    let (c1, i1) = (st1.certname.unwrap(), st1.instance_id.unwrap());
    let (c2, i2) = (st2.certname.unwrap(), st2.instance_id.unwrap());
    let user_data = crate::node_lifecycle::user_data_of(&svc.moto_endpoint, region, &i1).await;
    let Some(rendered) = crate::userdata_cloud_init::assert_cloud_init_valid(&user_data, &i1)
    else {
        return;
    };
    let (challenge1, iid1) =
        puppet_conductor::userdata::rendered_csr_attributes(&rendered).unwrap();

    autosign_mode("policy");
    let started = std::time::Instant::now();
    let run = svc
        .puppet
        .run_agent(&c1, Some(&challenge1), Some(&iid1), None)
        .await;
    let took = started.elapsed();
    // policy-2's certname with policy-1's challenge: refused, left waiting.
    let bad = svc
        .puppet
        .run_agent(&c2, Some(&challenge1), Some(&i2), None)
        .await;
    autosign_mode("off");
    assert_eq!(
        run.code, 2,
        "signed at submission, catalog in the same run:\n{}",
        run.output
    );
    assert!(
        run.output
            .contains("puppet-conductor: applied profile::base"),
        "{}",
        run.output
    );
    println!(
        "BENCH Policy mode: agent run from CSR submission to applied catalog: {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(bad.code, 1, "{}", bad.output);
    assert_eq!(
        ca.status(&c2).await.unwrap().unwrap().state,
        CertState::Requested,
        "never signed"
    );
    ca.revoke_and_clean(&c1).await.unwrap();
    ca.revoke_and_clean(&c2).await.unwrap();
}
