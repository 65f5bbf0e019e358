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
        assert!(
            ca.status(&certname).await.unwrap().is_none(),
            "{what}: never signed, and removed so the real agent can submit"
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

/// Two agents race for one certname: the CA keeps one CSR per certname, and the reconciler
/// signs only if the CSR it finds is the verified one. A hostile CSR that arrives first is
/// refused and removed (the real agent's next submission then goes through); a real CSR
/// that arrives first is signed and the hostile one gets no certificate.
#[tokio::test]
async fn two_csrs_racing_for_one_certname_never_sign_the_hostile_one() {
    let nodes = vec![
        node("race-1", "x", &["profile::base"]),
        node("race-2", "x", &["profile::base"]),
    ];
    let Some(e) = E2e::start("race", SigningMode::Operator, nodes, |ca| ca).await else {
        return;
    };
    let (svc, ca, h, key) = (&e.svc, &e.ca, &e.h, &e.key);

    // Hostile first: its CSR is what the CA holds; the real agent's is turned away.
    let one = e.launch("race-1").await;
    let real_challenge = key.challenge(&one.uid, 1);
    let hostile_dir = std::env::temp_dir().join(unique("hostile-agent"));
    let hostile = svc
        .puppet
        .run_agent_in(
            &hostile_dir,
            &one.certname,
            Some("stolen-guess"),
            Some(&one.instance_id),
        )
        .await;
    assert_eq!(hostile.code, 1, "{}", hostile.output);
    let real = svc
        .puppet
        .run_agent(
            &one.certname,
            Some(&real_challenge),
            Some(&one.instance_id),
            None,
        )
        .await;
    assert_eq!(real.code, 1, "{}", real.output);
    for _ in 0..2 {
        h.reconcile("race-1").await.unwrap();
    }
    assert!(
        ca.status(&one.certname).await.unwrap().is_none(),
        "hostile CSR not signed, and removed"
    );
    assert!(h
        .events
        .all()
        .iter()
        .any(|ev| ev.warning && ev.reason == "CSRWrongChallenge"));
    let again = svc
        .puppet
        .run_agent(
            &one.certname,
            Some(&real_challenge),
            Some(&one.instance_id),
            None,
        )
        .await;
    assert_eq!(again.code, 1, "{}", again.output);
    h.reconcile("race-1").await.unwrap();
    assert_eq!(
        ca.status(&one.certname).await.unwrap().unwrap().state,
        CertState::Signed,
        "the real agent's resubmission is signed"
    );

    // Real first: signed; the hostile agent that comes later gets no certificate.
    let two = e.launch("race-2").await;
    let real = svc
        .puppet
        .run_agent(
            &two.certname,
            Some(&key.challenge(&two.uid, 1)),
            Some(&two.instance_id),
            None,
        )
        .await;
    assert_eq!(real.code, 1, "{}", real.output);
    h.reconcile("race-2").await.unwrap();
    assert_eq!(
        ca.status(&two.certname).await.unwrap().unwrap().state,
        CertState::Signed
    );
    let hostile_dir2 = std::env::temp_dir().join(unique("hostile-agent"));
    let late = svc
        .puppet
        .run_agent_in(
            &hostile_dir2,
            &two.certname,
            Some("stolen-guess"),
            Some(&two.instance_id),
        )
        .await;
    assert_ne!(late.code, 0, "{}", late.output);
    assert_ne!(
        late.code, 2,
        "the hostile agent got no catalog:\n{}",
        late.output
    );
    ca.revoke_and_clean(&one.certname).await.unwrap();
    ca.revoke_and_clean(&two.certname).await.unwrap();
    let _ = std::fs::remove_dir_all(hostile_dir);
    let _ = std::fs::remove_dir_all(hostile_dir2);
}
