//! Leader election on a Lease (kube-fake-client keeps resource versions and conflicts).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use kube_fake_client::ClientBuilder;
use puppet_conductor::leader::{LeaderElector, LeaderError, LeaseSettings, Round};

async fn client() -> kube::Client {
    ClientBuilder::new()
        .with_resource::<Lease>()
        .build()
        .await
        .unwrap()
}

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        duration: Duration::from_millis(1500),
        retry: Duration::from_millis(100),
        ..LeaseSettings::new("conductor", "ops", identity)
    }
}

async fn lease(client: &kube::Client) -> Lease {
    Api::<Lease>::namespaced(client.clone(), "ops")
        .get("conductor")
        .await
        .unwrap()
}

fn holder(l: &Lease) -> Option<String> {
    l.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

#[tokio::test]
async fn first_candidate_creates_the_lease_and_the_second_stands_by() {
    let c = client().await;
    let a = LeaderElector::new(c.clone(), settings("a"));
    let b = LeaderElector::new(c.clone(), settings("b"));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Round::Leading);
    assert_eq!(
        b.try_acquire_or_renew().await.unwrap(),
        Round::Following("a".into())
    );
    let before = lease(&c).await;
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Round::Leading);
    let after = lease(&c).await;
    assert_eq!(holder(&after).as_deref(), Some("a"));
    let renew = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
    assert!(renew(&after) > renew(&before), "renewal moves renewTime");
    assert_eq!(after.spec.unwrap().lease_transitions, Some(0));
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_counts_a_transition() {
    let c = client().await;
    let a = LeaderElector::new(c.clone(), settings("a"));
    let b = LeaderElector::new(c.clone(), settings("b"));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Round::Leading);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Round::Leading);
    let l = lease(&c).await;
    assert_eq!(holder(&l).as_deref(), Some("b"));
    assert_eq!(l.spec.unwrap().lease_transitions, Some(1));
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        Round::Following("b".into())
    );
}

#[tokio::test]
async fn racing_candidates_for_an_expired_lease_yield_exactly_one_leader() {
    for _ in 0..5 {
        let c = client().await;
        let old = LeaderElector::new(c.clone(), settings("old"));
        assert_eq!(old.try_acquire_or_renew().await.unwrap(), Round::Leading);
        tokio::time::sleep(Duration::from_millis(1700)).await;
        let a = LeaderElector::new(c.clone(), settings("a"));
        let b = LeaderElector::new(c.clone(), settings("b"));
        let (ra, rb) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
        let leaders = [ra.unwrap(), rb.unwrap()]
            .iter()
            .filter(|r| **r == Round::Leading)
            .count();
        assert_eq!(leaders, 1);
        let winner = holder(&lease(&c).await).unwrap();
        assert!(winner == "a" || winner == "b");
    }
}

#[tokio::test]
async fn release_hands_over_at_once() {
    let c = client().await;
    let a = LeaderElector::new(c.clone(), settings("a"));
    let b = LeaderElector::new(c.clone(), settings("b"));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Round::Leading);
    a.release().await.unwrap();
    assert_eq!(holder(&lease(&c).await), None);
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Round::Leading);
    // Releasing a Lease someone else holds changes nothing.
    a.release().await.unwrap();
    assert_eq!(holder(&lease(&c).await).as_deref(), Some("b"));
}

#[tokio::test]
async fn hold_stops_the_work_when_another_replica_takes_the_lease() {
    let c = client().await;
    let a = LeaderElector::new(c.clone(), settings("a"));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Round::Leading);
    let api: Api<Lease> = Api::namespaced(c.clone(), "ops");
    let thief = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut l = api.get("conductor").await.unwrap();
        let spec = l.spec.as_mut().unwrap();
        spec.holder_identity = Some("intruder".into());
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        api.replace("conductor", &PostParams::default(), &l)
            .await
            .unwrap();
    };
    let work = std::future::pending::<()>();
    let (held, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(5), a.hold(work)),
        thief
    );
    assert!(
        matches!(held, Ok(Err(LeaderError::Lost(_)))),
        "the leader must stop when its Lease is taken: {held:?}"
    );
}

#[tokio::test]
async fn hold_returns_the_work_output_while_leading() {
    let c = client().await;
    let a = LeaderElector::new(c.clone(), settings("a"));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Round::Leading);
    let out = a
        .hold(async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            7
        })
        .await
        .unwrap();
    assert_eq!(out, 7);
    assert_eq!(holder(&lease(&c).await).as_deref(), Some("a"));
}
