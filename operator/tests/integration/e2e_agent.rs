//! End to end with real parts: the reconciler launches a node in moto, a real puppet agent
//! plays the instance with exactly the CSR attributes the generated user data gives it
//! (rendered by the real cloud-init for the moto instance id), the reconciler verifies and
//! signs the CSR on the real puppetserver CA, the agent applies a catalog classified by
//! `puppet-conductor enc` from the S3 record, and deleting the node terminates the
//! instance, revokes the certificate (the agent's next run fails) and removes the record.

use puppet_conductor::api::master::SigningMode;
use puppet_conductor::api::node::Phase;
use puppet_conductor::ca::CertState;
use puppet_conductor::controller::ReconcileError;

use crate::e2e_support::{
    assert_applied_webserver, assert_cleaned_up, assert_run_refused, E2e, REGION,
};
use crate::node_support::*;

#[tokio::test]
async fn agent_gets_signed_and_classified_then_loses_its_certificate_on_delete() {
    let mut n = node("agent-1", "x", &["role::webserver"]);
    n.spec
        .parameters
        .insert("tier".into(), serde_json::json!("web"));
    let Some(e) = E2e::start("e2e", SigningMode::Operator, vec![n], |ca| ca).await else {
        return;
    };
    let (svc, ca, h, moto) = (&e.svc, &e.ca, &e.h, &e.moto);
    let (master_name, region) = (&e.master_name, REGION);

    // Launch: one pass adds the finalizer and launches; the next sees it running.
    let launched = e.launch("agent-1").await;
    let (certname, instance_id) = (launched.certname, launched.instance_id);
    assert_eq!(
        h.get("agent-1").await.status.unwrap().phase,
        Some(Phase::AwaitingCsr)
    );

    say(&format!(
        "launched {instance_id} for PuppetNode agent-1, certname {certname}, phase AwaitingCSR"
    ));
    // What the instance's cloud-init would hand its agent.
    let user_data =
        crate::node_lifecycle::user_data_of(&svc.moto_endpoint, region, &instance_id).await;
    let Some(rendered) =
        crate::userdata_cloud_init::assert_cloud_init_valid(&user_data, &instance_id)
    else {
        return;
    };
    let (challenge, pp_instance_id) =
        puppet_conductor::userdata::rendered_csr_attributes(&rendered).unwrap();
    assert_eq!(pp_instance_id, instance_id);

    say("cloud-init rendered the user data: the agent's CSR carries the challenge and pp_instance_id");
    let first = svc
        .puppet
        .run_agent(&certname, Some(&challenge), Some(&pp_instance_id), None)
        .await;
    assert_eq!(first.code, 1, "no certificate yet:\n{}", first.output);
    say("puppet agent submitted its CSR and waits (exit 1)");
    let csr_at = std::time::Instant::now();

    // The operator verifies and signs on its next pass.
    h.reconcile("agent-1").await.unwrap();
    let signed_after = csr_at.elapsed();
    let status = ca.status(&certname).await.unwrap().unwrap();
    assert_eq!(status.state, CertState::Signed, "signed by the reconciler");
    say(&format!(
        "reconciler verified challenge + instance id and signed {certname}"
    ));
    println!(
        "BENCH CSR submitted to signed, Operator mode, reconcile right after: {:.2} s",
        signed_after.as_secs_f64()
    );
    assert!(h
        .events
        .all()
        .iter()
        .any(|e| e.reason == "CertificateSigned"));

    let run = svc
        .puppet
        .run_agent(&certname, Some(&challenge), Some(&pp_instance_id), None)
        .await;
    assert_applied_webserver(&run);

    // The ENC's check-in closes the loop: Classified and Ready.
    say("puppet agent applied its catalog (exit 2): role::webserver, profile::base, profile::web");
    h.reconcile("agent-1").await.unwrap();
    let n = h.get("agent-1").await;
    let st = n.status.clone().unwrap();
    assert_eq!(st.phase, Some(Phase::Ready), "{:?}", st.conditions);
    assert!(st.last_check_in.is_some());
    assert_eq!(
        st.certificate.as_ref().and_then(|c| c.state.as_deref()),
        Some("signed")
    );
    say("ENC check-in seen: Classified=True, phase Ready");

    // Delete: terminate, revoke, remove the record, release.
    let d = h.deleted_copy("agent-1").await;
    for _ in 0..4 {
        if !d.exists("agent-1").await {
            break;
        }
        match d.reconcile("agent-1").await {
            Ok(_) => {}
            Err(e) if matches!(e.root(), ReconcileError::CleanupInProgress(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(!d.exists("agent-1").await, "finalizer released");
    assert_cleaned_up(ca.as_ref(), moto, &certname, &format!("{NS}/{master_name}")).await;
    let after = svc
        .puppet
        .run_agent(&certname, Some(&challenge), Some(&pp_instance_id), None)
        .await;
    assert_run_refused(&after);
    say("deleted: instance terminated, certificate revoked and cleaned, record gone, finalizer released");
    say("the revoked agent's next run fails");
}

/// A line of the readable summary `tests/quickstart.sh` prints.
fn say(line: &str) {
    println!("==> {line}");
}
