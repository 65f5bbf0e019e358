//! The CA goes away during signing and during deletion: nothing is signed or released
//! wrongly, and both complete once it is back.

use std::sync::Arc;

use puppet_conductor::api::master::SigningMode;
use puppet_conductor::ca::CertState;
use puppet_conductor::controller::ReconcileError;
use puppet_conductor::records::Records;

use crate::e2e_support::{E2e, FlakyCa};
use crate::node_support::*;

#[tokio::test]
async fn ca_outage_delays_signing_and_deletion_but_loses_nothing() {
    let flaky: std::sync::OnceLock<Arc<FlakyCa>> = std::sync::OnceLock::new();
    let nodes = vec![node("outage-1", "x", &["profile::base"])];
    let Some(e) = E2e::start("cadown", SigningMode::Operator, nodes, |real| {
        let ca = FlakyCa::around(real);
        let _ = flaky.set(ca.clone());
        ca
    })
    .await
    else {
        return;
    };
    let ca = flaky.get().unwrap().clone();
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
