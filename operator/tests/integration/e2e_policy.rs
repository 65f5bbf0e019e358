//! Policy signing mode end to end: puppetserver runs `puppet-conductor autosign` at CSR
//! submission; it signs the agent that holds its incarnation's challenge and instance id
//! (the agent gets its catalog in the same run) and refuses a CSR with another node's
//! challenge, which stays waiting.

use puppet_conductor::api::master::SigningMode;
use puppet_conductor::ca::CertState;

use crate::e2e_support::{autosign_mode, wrapper_call_ms, E2e};
use crate::node_support::*;

#[tokio::test]
async fn policy_mode_autosign_signs_at_submission_and_refuses_a_wrong_challenge() {
    let nodes = vec![
        node("policy-1", "x", &["profile::base"]),
        node("policy-2", "x", &["profile::base"]),
    ];
    let Some(e) = E2e::start("policy", SigningMode::Policy, nodes, |ca| ca).await else {
        return;
    };
    let one = e.launch("policy-1").await;
    let two = e.launch("policy-2").await;
    let Some((challenge1, iid1)) = e.agent_attributes(&one).await else {
        return;
    };

    autosign_mode("policy");
    let started = std::time::Instant::now();
    let run = e
        .svc
        .puppet
        .run_agent(&one.certname, Some(&challenge1), Some(&iid1), None)
        .await;
    let took = started.elapsed();
    // policy-2's certname with policy-1's challenge: refused, left waiting.
    let bad = e
        .svc
        .puppet
        .run_agent(
            &two.certname,
            Some(&challenge1),
            Some(&two.instance_id),
            None,
        )
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
    // The test puppetserver's wrappers log how long each call took.
    let state = &e.svc.puppet.state_dir;
    let autosign = wrapper_call_ms(state, "autosign.log", &one.certname);
    let enc = wrapper_call_ms(state, "enc.log", &one.certname);
    assert_eq!(
        autosign.len(),
        1,
        "one autosign decision for {}",
        one.certname
    );
    assert!(!enc.is_empty(), "the ENC classified {}", one.certname);
    println!(
        "BENCH Policy mode: `puppet-conductor autosign` as puppetserver ran it (CSR check, record and signature-record GETs, claim PUT): {} ms",
        autosign[0]
    );
    println!(
        "BENCH ENC calls as puppetserver ran them in that agent run: {} calls, {} ms",
        enc.len(),
        enc.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ms, ")
    );
    assert_eq!(bad.code, 1, "{}", bad.output);
    assert_eq!(
        e.ca.status(&two.certname).await.unwrap().unwrap().state,
        CertState::Requested,
        "never signed"
    );
    e.ca.revoke_and_clean(&one.certname).await.unwrap();
    e.ca.revoke_and_clean(&two.certname).await.unwrap();
}

/// Policy mode: puppetserver runs autosign once, at submission. A genuine CSR it left
/// waiting (here autosign was off; in operation, the record did not name the instance
/// yet, or was lost and rewritten) would wait for good: the next pass sees that the rules
/// allow it now and removes it, the real agent's next run submits it again, and autosign
/// signs it then.
#[tokio::test]
async fn policy_mode_a_csr_autosign_left_waiting_is_removed_and_signed_on_resubmission() {
    let nodes = vec![node("policy-late", "x", &["profile::base"])];
    let Some(e) = E2e::start("policylate", SigningMode::Policy, nodes, |ca| ca).await else {
        return;
    };
    let one = e.launch("policy-late").await;
    let Some((challenge, iid)) = e.agent_attributes(&one).await else {
        return;
    };

    // autosign is off (E2e::start leaves it so): the CSR is left waiting.
    let first = e
        .svc
        .puppet
        .run_agent(&one.certname, Some(&challenge), Some(&iid), None)
        .await;
    assert_eq!(first.code, 1, "not signed at submission:\n{}", first.output);
    assert_eq!(
        e.ca.status(&one.certname).await.unwrap().unwrap().state,
        CertState::Requested
    );
    e.h.reconcile("policy-late").await.unwrap();
    assert!(
        e.ca.status(&one.certname).await.unwrap().is_none(),
        "the waiting CSR the rules allow was removed"
    );
    assert!(
        e.h.events
            .all()
            .iter()
            .any(|ev| ev.reason == "CSRResubmissionRequested" && !ev.warning),
        "a Normal event says why"
    );

    autosign_mode("policy");
    let second = e
        .svc
        .puppet
        .run_agent(&one.certname, Some(&challenge), Some(&iid), None)
        .await;
    autosign_mode("off");
    assert_eq!(
        second.code, 2,
        "submitted again, signed by autosign, catalog applied:\n{}",
        second.output
    );
    assert_eq!(
        e.ca.status(&one.certname).await.unwrap().unwrap().state,
        CertState::Signed
    );
    e.ca.revoke_and_clean(&one.certname).await.unwrap();
}
