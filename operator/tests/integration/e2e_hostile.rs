//! Hostile CSRs against the real CA, Operator mode: each is refused by the reconciler with
//! a Warning event naming the reason, and stays unsigned on later passes too.

use puppet_conductor::api::master::SigningMode;
use puppet_conductor::ca::CertState;

use crate::e2e_support::E2e;
use crate::node_support::*;

#[tokio::test]
async fn hostile_csrs_are_refused_with_a_warning_and_never_signed() {
    let nodes = vec![node("target-1", "x", &["profile::base"])];
    let Some(e) = E2e::start("hostile", SigningMode::Operator, nodes, |ca| ca).await else {
        return;
    };
    let (svc, ca, h, key) = (&e.svc, &e.ca, &e.h, &e.key);
    let launched = e.launch("target-1").await;
    let (uid, certname, instance_id) = (launched.uid, launched.certname, launched.instance_id);
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
