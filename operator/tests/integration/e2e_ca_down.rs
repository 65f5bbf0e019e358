//! The CA goes away during signing and during deletion: nothing is signed or released
//! wrongly, and both complete once it is back.

use puppet_conductor::api::master::SigningMode;
use puppet_conductor::ca::CertState;
use puppet_conductor::controller::ReconcileError;
use puppet_conductor::records::Records;

use crate::e2e_support::E2e;
use crate::node_support::*;

#[tokio::test]
async fn ca_outage_delays_signing_and_deletion_but_loses_nothing() {
    let nodes = vec![node("outage-1", "x", &["profile::base"])];
    let Some((e, ca)) = E2e::start_with_flaky_ca("cadown", SigningMode::Operator, nodes).await
    else {
        return;
    };
    let (svc, real, h, moto, key) = (&e.svc, &e.ca, &e.h, &e.moto, &e.key);
    let launched = e.launch("outage-1").await;
    let (uid, certname, instance_id) = (launched.uid, launched.certname, launched.instance_id);
    let run = svc
        .puppet
        .run_agent(
            &certname,
            Some(&key.challenge(&uid, 1)),
            Some(&instance_id),
            None,
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.output);

    // Signing while the CA is down: nothing signed, no error that loses state.
    ca.set_down(true);
    for _ in 0..2 {
        h.reconcile("outage-1").await.unwrap();
    }
    assert_eq!(
        real.status(&certname).await.unwrap().unwrap().state,
        CertState::Requested
    );
    ca.set_down(false);
    h.reconcile("outage-1").await.unwrap();
    assert_eq!(
        real.status(&certname).await.unwrap().unwrap().state,
        CertState::Signed,
        "signed once the CA is back"
    );

    // Deletion while the CA is down: the instance is terminated, but the finalizer stays
    // (and the record too) until the certificate is really revoked.
    ca.set_down(true);
    let d = h.deleted_copy("outage-1").await;
    let mut failures = 0;
    for _ in 0..3 {
        match d.reconcile("outage-1").await {
            Err(e) if matches!(e.root(), ReconcileError::Ca(_)) => failures += 1,
            Err(e) if matches!(e.root(), ReconcileError::CleanupInProgress(_)) => {}
            other => panic!("unexpected while the CA is down: {other:?}"),
        }
        assert!(
            d.exists("outage-1").await,
            "finalizer kept while the CA is down"
        );
    }
    assert!(failures >= 1, "the revoke was attempted and failed");
    assert!(
        moto.records.get(&certname).await.unwrap().is_some(),
        "record kept until revocation is confirmed"
    );
    assert_eq!(
        real.status(&certname).await.unwrap().unwrap().state,
        CertState::Signed
    );
    ca.set_down(false);
    for _ in 0..3 {
        if !d.exists("outage-1").await {
            break;
        }
        let _ = d.reconcile("outage-1").await;
    }
    assert!(!d.exists("outage-1").await, "released once the CA is back");
    assert!(
        real.status(&certname).await.unwrap().is_none(),
        "revoked and cleaned"
    );
    assert!(moto.records.get(&certname).await.unwrap().is_none());
}

/// Issue 11, failure 4: a failed CA listing is unknown, not empty. A Ready node stays Ready
/// and signed while the CA is unreachable, instead of flipping to "no CSR yet".
#[tokio::test]
async fn a_ready_node_stays_ready_while_the_ca_cannot_be_listed() {
    let nodes = vec![node("unknown-1", "x", &["profile::base"])];
    let Some((e, ca)) = E2e::start_with_flaky_ca("caunknown", SigningMode::Operator, nodes).await
    else {
        return;
    };
    let l = e.launch("unknown-1").await;
    let challenge = e.key.challenge(&l.uid, 1);
    let agent = || {
        e.svc
            .puppet
            .run_agent(&l.certname, Some(&challenge), Some(&l.instance_id), None)
    };
    assert_eq!(agent().await.code, 1);
    e.h.converge("unknown-1", 2).await;
    let applied = agent().await;
    assert_eq!(applied.code, 2, "catalog applied:\n{}", applied.output);
    e.h.converge("unknown-1", 1).await;
    let ready = e.h.get("unknown-1").await.status.unwrap();
    assert_eq!(ready.phase, Some(puppet_conductor::api::node::Phase::Ready));

    ca.set_down(true);
    for _ in 0..2 {
        let _ = e.h.reconcile("unknown-1").await;
    }
    let st = e.h.get("unknown-1").await.status.unwrap();
    ca.set_down(false);
    assert_eq!(
        st.phase,
        Some(puppet_conductor::api::node::Phase::Ready),
        "{st:?}"
    );
    let signed = st
        .conditions
        .iter()
        .find(|c| c.type_ == "CertificateSigned")
        .unwrap();
    assert_eq!(
        signed.status, "True",
        "unknown is not \"no CSR\": {signed:?}"
    );
    e.ca.revoke_and_clean(&l.certname).await.unwrap();
}
