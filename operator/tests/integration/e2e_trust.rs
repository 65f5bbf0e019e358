//! Trust bound to the lifecycle, against the real CA, moto and the real agent: the six
//! situations in which the operator once signed keys it must not, or stopped signing.
//!
//! 1. a replay after the certificate was cleaned by hand (both modes);
//! 2. a CSR for a node being deleted (Policy mode: autosign reads the record's state);
//! 3. a CSR for an old incarnation after a replacement (Policy mode, and the ENC);
//! 4. two nodes claiming one certname on one CA;
//! 5. a CSR that breaks puppetserver's listing (the real 500);
//! 6. a squatter's CSR blocking the real agent (both modes).

use puppet_conductor::api::master::{CloudProvider, SigningMode};
use puppet_conductor::api::{PuppetMaster, PuppetNode};
use puppet_conductor::ca::{CaError, CertState, PuppetCa};
use puppet_conductor::cloud::Cloud;
use puppet_conductor::controller::context::NodeSettings;
use puppet_conductor::controller::events::MemoryEvents;
use puppet_conductor::controller::services::{MasterServices, ServiceFactory};
use puppet_conductor::controller::{Context, ReconcileError};
use puppet_conductor::identity::ChallengeKey;
use puppet_conductor::records::{RecordState, Records};
use reqwest::StatusCode;

use crate::ca_hostile_contract::{delete_csr, forge_csr, submit_csr, CleanupGuard};
use crate::common::services::Services;
use crate::e2e_support::{autosign_mode, E2e, Launched};
use crate::node_support::*;

fn has_warning(e: &E2e, reason: &str) -> bool {
    e.h.events
        .all()
        .iter()
        .any(|ev| ev.warning && ev.reason == reason)
}

fn condition_reason(n: &PuppetNode, type_: &str) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.clone())
}

/// Runs the real agent for `launched` with its own challenge and instance id.
async fn real_agent(e: &E2e, l: &Launched, incarnation: i64) -> i32 {
    let challenge = e.key.challenge(&l.uid, incarnation);
    e.svc
        .puppet
        .run_agent(&l.certname, Some(&challenge), Some(&l.instance_id), None)
        .await
        .code
}

/// Signs the node through its mode (reconcile in Operator mode, autosign in Policy mode)
/// and confirms it; returns the recorded serial.
async fn signed(e: &E2e, name: &str, l: &Launched, mode: SigningMode) -> String {
    if mode == SigningMode::Policy {
        autosign_mode("policy");
    }
    let code = real_agent(e, l, 1).await;
    autosign_mode("off");
    assert!(code == 1 || code == 2, "agent run: {code}");
    e.h.converge(name, 2).await;
    let st = e.h.get(name).await.status.unwrap();
    let cert = st.certificate.expect("certificate status");
    let serial = cert.serial.expect("serial recorded in status");
    assert_eq!(
        cert.signed_fingerprint, cert.fingerprint,
        "the CA holds the one signed"
    );
    let sig = e
        .moto
        .records
        .get_signature(&l.certname)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sig.serial.as_deref(),
        Some(serial.as_str()),
        "and in the signature record"
    );
    serial
}

async fn replay_after_clean_is_refused(mode: SigningMode) {
    let prefix = format!("replay-{}", mode_name(mode));
    // replacePolicy Never: the lost certificate is only reported, so the replay below
    // meets the same incarnation.
    let mut n = node("r-1", "x", &["profile::base"]);
    n.spec.replace_policy = puppet_conductor::api::node::ReplacePolicy::Never;
    let Some(e) = E2e::start(&prefix, mode, vec![n], |ca| ca).await else {
        return;
    };
    let l = e.launch("r-1").await;
    signed(&e, "r-1", &l, mode).await;

    // Cleaned by hand; a new key with the same certname, challenge and instance id.
    e.ca.revoke_and_clean(&l.certname).await.unwrap();
    let (pem, _) = forge_csr(
        &l.certname,
        Some(&e.key.challenge(&l.uid, 1)),
        Some(&l.instance_id),
        false,
    );
    if mode == SigningMode::Policy {
        autosign_mode("policy");
    }
    let (code, body) = submit_csr(&e.svc.puppet, &l.certname, &pem).await;
    autosign_mode("off");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        e.ca.status(&l.certname).await.unwrap().map(|c| c.state),
        Some(CertState::Requested),
        "not signed at submission"
    );
    e.h.converge("r-1", 2).await;
    assert!(
        e.ca.status(&l.certname).await.unwrap().is_none(),
        "the replayed CSR is refused and removed, never signed"
    );
    assert!(
        has_warning(&e, "CSRAlreadySigned"),
        "{:?}",
        e.h.events.all()
    );
    let n = e.h.get("r-1").await;
    assert_eq!(
        condition_reason(&n, "CertificateSigned").as_deref(),
        Some("CertificateVanished")
    );
    assert!(has_warning(&e, "CertificateVanished"));
}

/// Soak seed 1310876 against the real CA and moto: the bucket loses the node's records and
/// an admin cleans its certificate, so only status still says it was signed. The node
/// must read its certificate as vanished, not wait for a CSR its agent never sends.
#[tokio::test]
async fn a_clean_after_the_bucket_lost_the_records_is_read_from_status_as_vanished() {
    let mut n = node("v-1", "x", &["profile::base"]);
    n.spec.replace_policy = puppet_conductor::api::node::ReplacePolicy::Never;
    let Some(e) = E2e::start("vanish-emptied", SigningMode::Operator, vec![n], |ca| ca).await
    else {
        return;
    };
    let l = e.launch("v-1").await;
    signed(&e, "v-1", &l, SigningMode::Operator).await;

    e.moto.records.delete_signature(&l.certname).await.unwrap();
    e.moto.records.delete(&l.certname).await.unwrap();
    e.ca.revoke_and_clean(&l.certname).await.unwrap();
    e.h.converge("v-1", 2).await;
    let n = e.h.get("v-1").await;
    assert_eq!(
        condition_reason(&n, "CertificateSigned").as_deref(),
        Some("CertificateVanished"),
        "status still holds the signature: {:?}",
        n.status
    );
    assert_eq!(
        n.status.and_then(|s| s.phase),
        Some(puppet_conductor::api::node::Phase::Failed),
        "replacePolicy Never: reported, not waiting for a CSR"
    );
    assert!(has_warning(&e, "CertificateVanished"));
}

/// Reconciles a deleted node until its finalizer is released.
async fn finish_deletion(h: &Harness, name: &str) {
    for _ in 0..5 {
        if !h.exists(name).await {
            return;
        }
        let _ = h.reconcile(name).await;
    }
    assert!(!h.exists(name).await, "{name}: finalizer released");
}

fn mode_name(mode: SigningMode) -> &'static str {
    match mode {
        SigningMode::Operator => "op",
        SigningMode::Policy => "pol",
    }
}

#[tokio::test]
async fn a_replay_after_a_clean_is_refused_in_operator_mode() {
    replay_after_clean_is_refused(SigningMode::Operator).await;
}

#[tokio::test]
async fn a_replay_after_a_clean_is_refused_in_policy_mode() {
    replay_after_clean_is_refused(SigningMode::Policy).await;
}

#[tokio::test]
async fn autosign_refuses_a_node_whose_deletion_began_while_the_ca_is_unreachable() {
    let nodes = vec![node("d-1", "x", &["profile::base"])];
    let Some((e, flaky)) =
        E2e::start_with_flaky_ca("trust-deleting", SigningMode::Policy, nodes).await
    else {
        return;
    };
    let l = e.launch("d-1").await;
    flaky.set_down(true);
    let deleted = e.h.deleted_copy("d-1").await;
    // Terminates, then waits on the unreachable CA: the finalizer stays.
    for _ in 0..3 {
        let _ = deleted.reconcile("d-1").await;
    }
    let record = e.moto.records.get(&l.certname).await.unwrap().unwrap();
    assert_eq!(
        record.state,
        RecordState::Deleting,
        "marked before terminating"
    );
    autosign_mode("policy");
    let code = real_agent(&e, &l, 1).await;
    autosign_mode("off");
    assert_eq!(code, 1, "not signed");
    assert_eq!(
        e.ca.status(&l.certname).await.unwrap().map(|c| c.state),
        Some(CertState::Requested)
    );
    flaky.set_down(false);
    finish_deletion(&deleted, "d-1").await;
    assert!(
        e.ca.status(&l.certname).await.unwrap().is_none(),
        "dropped on cleanup"
    );
    assert!(e.moto.records.get(&l.certname).await.unwrap().is_none());
}

#[tokio::test]
async fn an_old_incarnation_is_neither_signed_nor_classified_after_a_replacement() {
    let nodes = vec![node("o-1", "x", &["profile::base"])];
    let Some(e) = E2e::start("trust-old", SigningMode::Policy, nodes, |ca| ca).await else {
        return;
    };
    let one = e.launch("o-1").await;
    e.moto
        .cloud
        .terminate(std::slice::from_ref(&one.instance_id))
        .await
        .unwrap();
    e.h.converge("o-1", 3).await;
    let st = e.h.get("o-1").await.status.unwrap();
    assert_eq!(st.incarnation, Some(2));
    assert!(
        e.moto.records.get(&one.certname).await.unwrap().is_none(),
        "incarnation 1's record is removed once its fencing completed"
    );
    autosign_mode("policy");
    let code = real_agent(&e, &one, 1).await;
    autosign_mode("off");
    assert_eq!(code, 1, "incarnation 1 is not signed");
    let enc = std::process::Command::new(env!("CARGO_BIN_EXE_puppet-conductor"))
        .args(["enc", "--", &one.certname])
        .envs(enc_env(&e))
        .output()
        .unwrap();
    assert_eq!(enc.status.code(), Some(1), "the ENC does not classify it");
    e.ca.revoke_and_clean(&one.certname).await.unwrap();
}

fn enc_env(e: &E2e) -> Vec<(&'static str, String)> {
    vec![
        ("PC_RECORDS_BUCKET", e.bucket.clone()),
        ("PC_RECORDS_ENDPOINT", e.svc.moto_endpoint.clone()),
        ("PC_RECORDS_REGION", crate::e2e_support::REGION.to_string()),
        ("PC_RECORDS_FORCE_PATH_STYLE", "true".into()),
        ("PC_RECORDS_ACCESS_KEY_ID", "testing".into()),
        ("PC_RECORDS_SECRET_ACCESS_KEY", "testing".into()),
    ]
}

#[tokio::test]
async fn two_nodes_claiming_one_certname_on_one_ca_sign_and_revoke_only_the_older_ones() {
    one_certname_two_nodes(SigningMode::Operator).await;
}

#[tokio::test]
async fn two_nodes_claiming_one_certname_in_policy_mode_sign_only_the_older_ones_key() {
    one_certname_two_nodes(SigningMode::Policy).await;
}

async fn one_certname_two_nodes(mode: SigningMode) {
    let shared = crate::common::unique_certname("shared");
    let mut older = node("s-old", "x", &["profile::base"]);
    older.spec.certname = Some(shared.clone());
    let mut newer = node("s-new", "x", &["profile::base"]);
    newer.spec.certname = Some(shared.clone());
    let prefix = format!("trust-shared-{}", mode_name(mode));
    let Some(e) = E2e::start(&prefix, mode, vec![older, newer], |ca| ca).await else {
        return;
    };
    // Which one is older is decided by creation time, then UID.
    let (a, b) = (e.h.get("s-old").await, e.h.get("s-new").await);
    let key = |n: &PuppetNode| {
        (
            n.metadata.creation_timestamp.clone().map(|t| t.0),
            n.metadata.uid.clone(),
        )
    };
    let (winner, loser) = if key(&a) <= key(&b) {
        ("s-old", "s-new")
    } else {
        ("s-new", "s-old")
    };
    let l = e.launch(winner).await;
    e.h.converge(loser, 2).await;
    let lost = e.h.get(loser).await;
    assert_eq!(
        condition_reason(&lost, "CertnameConflict").as_deref(),
        Some("CertnameConflict")
    );
    assert!(
        lost.status.as_ref().unwrap().instance_id.is_none(),
        "nothing launched"
    );
    let conflicts =
        e.h.events
            .all()
            .iter()
            .filter(|ev| ev.warning && ev.reason == "CertnameConflict")
            .count();
    assert_eq!(
        conflicts, 1,
        "one event when the conflict begins, not one per pass"
    );

    // A CSR with the newer node's challenge is never signed, and it does not block the
    // older node: refused (by autosign at submission in Policy mode) and removed.
    let loser_uid = e.h.get(loser).await.metadata.uid.unwrap();
    let (pem, _) = forge_csr(
        &shared,
        Some(&e.key.challenge(&loser_uid, 1)),
        Some(&l.instance_id),
        false,
    );
    if mode == SigningMode::Policy {
        autosign_mode("policy");
    }
    let (code, body) = submit_csr(&e.svc.puppet, &shared, &pem).await;
    autosign_mode("off");
    assert_eq!(code, StatusCode::OK, "{body}");
    e.h.converge(winner, 1).await;
    assert!(
        e.ca.status(&shared).await.unwrap().is_none(),
        "the newer node's CSR is refused and removed"
    );
    signed(&e, winner, &l, mode).await;

    // Deleting the loser revokes nothing of the winner's.
    let deleted = e.h.deleted_copy(loser).await;
    finish_deletion(&deleted, loser).await;
    assert_eq!(
        e.ca.status(&shared).await.unwrap().map(|c| c.state),
        Some(CertState::Signed),
        "the winner's certificate stands"
    );
    assert!(
        e.moto.records.get(&shared).await.unwrap().is_some(),
        "and its record"
    );
    e.ca.revoke_and_clean(&shared).await.unwrap();
}

#[tokio::test]
async fn a_csr_that_breaks_the_ca_listing_does_not_stop_signing_a_good_node() {
    let nodes = vec![node("l-1", "x", &["profile::base"])];
    let Some(e) = E2e::start("trust-listing", SigningMode::Operator, nodes, |ca| ca).await else {
        return;
    };
    let l = e.launch("l-1").await;
    // No other test lists the shared CA while its listing is broken.
    let _listing = crate::e2e_support::CA_LISTING.write().await;
    let bad = crate::common::unique_certname("listing-breaker");
    // Removed however the test ends (declared after the lock: dropped before it).
    let mut cleanup = CleanupGuard::new(&e.svc.puppet);
    cleanup.add(&bad);
    let (pem, _) = forge_csr(&bad, None, None, true);
    assert_eq!(
        submit_csr(&e.svc.puppet, &bad, &pem).await.0,
        StatusCode::OK
    );
    let broken = e.ca.list(None).await;
    let code = real_agent(&e, &l, 1).await;
    e.h.converge("l-1", 2).await;
    let status = e.ca.status(&l.certname).await;
    let serial =
        e.h.get("l-1")
            .await
            .status
            .and_then(|s| s.certificate?.serial);
    assert_eq!(
        delete_csr(&e.svc.puppet, &bad).await,
        StatusCode::NO_CONTENT
    );
    assert!(
        matches!(broken, Err(CaError::Status { status: 500, .. })),
        "the listing answers 500: {broken:?}"
    );
    assert_eq!(code, 1);
    assert_eq!(
        status.unwrap().map(|c| c.state),
        Some(CertState::Signed),
        "signed through a per-certname read"
    );
    assert!(serial.is_some(), "and recorded");
    e.ca.revoke_and_clean(&l.certname).await.unwrap();
}

async fn squatter_is_removed_and_the_real_agent_signed(mode: SigningMode) {
    let prefix = format!("squat-{}", mode_name(mode));
    let nodes = vec![node("q-1", "x", &["profile::base"])];
    let Some(e) = E2e::start(&prefix, mode, nodes, |ca| ca).await else {
        return;
    };
    let l = e.launch("q-1").await;
    if mode == SigningMode::Policy {
        autosign_mode("policy");
    }
    let (pem, _) = forge_csr(&l.certname, Some("guessed"), Some(&l.instance_id), false);
    assert_eq!(
        submit_csr(&e.svc.puppet, &l.certname, &pem).await.0,
        StatusCode::OK
    );
    // The real agent's CSR is rejected as a duplicate while the squatter's waits.
    let blocked = real_agent(&e, &l, 1).await;
    autosign_mode("off");
    assert_eq!(blocked, 1);
    e.h.converge("q-1", 1).await;
    assert!(
        has_warning(&e, "CSRWrongChallenge"),
        "{:?}",
        e.h.events.all()
    );
    assert!(
        e.ca.status(&l.certname).await.unwrap().is_none(),
        "the squatter's CSR is removed"
    );
    signed(&e, "q-1", &l, mode).await;
    e.ca.revoke_and_clean(&l.certname).await.unwrap();
}

#[tokio::test]
async fn a_squatters_csr_is_removed_and_the_real_agent_signed_in_operator_mode() {
    squatter_is_removed_and_the_real_agent_signed(SigningMode::Operator).await;
}

#[tokio::test]
async fn a_squatters_csr_is_removed_and_the_real_agent_signed_in_policy_mode() {
    squatter_is_removed_and_the_real_agent_signed(SigningMode::Policy).await;
}

/// Services by the master's namespace: two masters, two buckets, two challenge keys, one CA.
struct ByNamespace(std::collections::BTreeMap<String, std::sync::Arc<MasterServices>>);

#[async_trait::async_trait]
impl ServiceFactory for ByNamespace {
    async fn services(
        &self,
        m: &PuppetMaster,
    ) -> Result<std::sync::Arc<MasterServices>, ReconcileError> {
        let ns = m.metadata.namespace.clone().unwrap_or_default();
        self.0
            .get(&ns)
            .cloned()
            .ok_or_else(|| ReconcileError::MasterNotFound(ns))
    }
}

/// One team's master (own bucket) and a node with the shared certname, in namespace `ns`.
struct Team {
    ns: &'static str,
    moto: MotoServices,
    key: ChallengeKey,
    master: PuppetMaster,
    node: PuppetNode,
}

async fn team(svc: &Services, ns: &'static str, certname: &str) -> Team {
    let bucket = unique(&format!("{ns}-records"));
    let moto = MotoServices::new(&svc.moto_endpoint, crate::e2e_support::REGION, &bucket).await;
    let name = unique(&format!("pm-{ns}"));
    let mut m = master(
        &name,
        &svc.moto_endpoint,
        crate::e2e_support::REGION,
        &bucket,
        CloudProvider::Ec2,
    );
    m.metadata.namespace = Some(ns.into());
    m.spec.server = svc.puppet.server.clone();
    m.spec.ca.url = svc.puppet.ca_url.clone();
    m.spec.node_defaults.subnet_id = None;
    m.spec.node_defaults.security_group_ids = Vec::new();
    let mut n = node("web", &name, &["profile::base"]);
    n.metadata.namespace = Some(ns.into());
    n.spec.certname = Some(certname.to_owned());
    Team {
        ns,
        moto,
        key: ChallengeKey::generate(),
        master: m,
        node: n,
    }
}

fn services_of(t: &Team, ca: &std::sync::Arc<dyn PuppetCa>, ca_pem: &str) -> MasterServices {
    MasterServices {
        cloud: t.moto.cloud.clone(),
        records: t.moto.records.clone(),
        ca: ca.clone(),
        ca_cert_pem: ca_pem.to_owned(),
        challenge_key: ChallengeKey::from_bytes(t.key.as_bytes()).unwrap(),
    }
}

/// A context over a fake API holding both teams' masters and `nodes`.
async fn two_team_context(
    a: &Team,
    b: &Team,
    nodes: Vec<PuppetNode>,
    ca: &std::sync::Arc<dyn PuppetCa>,
    ca_pem: &str,
) -> (
    std::sync::Arc<Context>,
    std::sync::Arc<MemoryEvents>,
    kube::Client,
) {
    let mut builder = kube_fake_client::ClientBuilder::new()
        .with_resource::<PuppetMaster>()
        .with_resource::<PuppetNode>()
        .with_object(a.master.clone())
        .with_object(b.master.clone());
    for n in nodes {
        builder = builder.with_object(n);
    }
    let client = builder.build().await.unwrap();
    let factory = ByNamespace(
        [
            (
                a.ns.to_string(),
                std::sync::Arc::new(services_of(a, ca, ca_pem)),
            ),
            (
                b.ns.to_string(),
                std::sync::Arc::new(services_of(b, ca, ca_pem)),
            ),
        ]
        .into(),
    );
    let events = std::sync::Arc::new(MemoryEvents::default());
    let settings = NodeSettings {
        operator_id: "test".into(),
        snapshot_max_age: std::time::Duration::ZERO,
        ..Default::default()
    };
    let ctx = std::sync::Arc::new(Context::new(
        client.clone(),
        std::sync::Arc::new(factory),
        events.clone(),
        settings,
    ));
    (ctx, events, client)
}

async fn reconcile_in(ctx: &std::sync::Arc<Context>, client: &kube::Client, ns: &str) -> bool {
    let api: kube::Api<PuppetNode> = kube::Api::namespaced(client.clone(), ns);
    let Some(n) = api.get_opt("web").await.unwrap() else {
        return false;
    };
    let _ =
        puppet_conductor::controller::node::reconcile(std::sync::Arc::new(n), ctx.clone()).await;
    true
}

async fn get_in(client: &kube::Client, ns: &str) -> PuppetNode {
    kube::Api::<PuppetNode>::namespaced(client.clone(), ns)
        .get("web")
        .await
        .unwrap()
}

#[tokio::test]
async fn two_masters_in_two_namespaces_sharing_one_ca_never_sign_or_revoke_each_others_certname() {
    let _moto = MOTO_LOAD.read().await;
    let Some(svc) = Services::from_env() else {
        return;
    };
    let _puppetserver = crate::e2e_support::PUPPETSERVER.lock().await;
    autosign_mode("off");
    let shared = crate::common::unique_certname("two-masters");
    let (a, b) = (
        team(&svc, "team-a", &shared).await,
        team(&svc, "team-b", &shared).await,
    );
    let ca: std::sync::Arc<dyn PuppetCa> =
        std::sync::Arc::new(svc.puppet.ca_client(std::time::Duration::from_secs(20)));
    let ca_pem = String::from_utf8(svc.puppet.ca_pem()).unwrap();
    let nodes = vec![a.node.clone(), b.node.clone()];
    let (ctx, events, client) = two_team_context(&a, &b, nodes, &ca, &ca_pem).await;

    // The older node (creation time, then UID) keeps the certname.
    let rank = |n: &PuppetNode| {
        (
            n.metadata.creation_timestamp.clone().map(|t| t.0),
            n.metadata.uid.clone(),
        )
    };
    let (na, nb) = (get_in(&client, a.ns).await, get_in(&client, b.ns).await);
    let (winner, loser) = if rank(&na) <= rank(&nb) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    for _ in 0..2 {
        reconcile_in(&ctx, &client, winner.ns).await;
        reconcile_in(&ctx, &client, loser.ns).await;
    }
    let won = get_in(&client, winner.ns).await.status.unwrap();
    let lost = get_in(&client, loser.ns).await;
    assert!(
        lost.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "CertnameConflict" && c.status == "True"),
        "{:?}",
        lost.status
    );
    assert!(
        lost.status.as_ref().unwrap().instance_id.is_none(),
        "the newer launches nothing"
    );
    assert!(
        loser.moto.records.get(&shared).await.unwrap().is_none(),
        "and writes no record in its own bucket"
    );
    assert!(events
        .all()
        .iter()
        .any(|e| e.warning && e.reason == "CertnameConflict"));

    // The winner's agent is signed.
    let uid = get_in(&client, winner.ns).await.metadata.uid.unwrap();
    let iid = won.instance_id.clone().unwrap();
    let run = svc
        .puppet
        .run_agent(
            &shared,
            Some(&winner.key.challenge(&uid, 1)),
            Some(&iid),
            None,
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.output);
    reconcile_in(&ctx, &client, winner.ns).await;
    reconcile_in(&ctx, &client, loser.ns).await;
    assert_eq!(
        ca.status(&shared).await.unwrap().map(|c| c.state),
        Some(CertState::Signed)
    );

    // The loser is deleted: the winner's certificate and record stand.
    let mut deleted = get_in(&client, loser.ns).await;
    deleted.metadata.deletion_timestamp = Some(puppet_conductor::status::conditions::time(
        chrono::Utc::now(),
    ));
    let winner_node = get_in(&client, winner.ns).await;
    let (ctx2, _, client2) =
        two_team_context(&a, &b, vec![winner_node, deleted], &ca, &ca_pem).await;
    for _ in 0..5 {
        if !reconcile_in(&ctx2, &client2, loser.ns).await {
            break;
        }
    }
    assert!(
        kube::Api::<PuppetNode>::namespaced(client2.clone(), loser.ns)
            .get_opt("web")
            .await
            .unwrap()
            .is_none(),
        "the loser's finalizer is released"
    );
    assert_eq!(
        ca.status(&shared).await.unwrap().map(|c| c.state),
        Some(CertState::Signed),
        "the winner's certificate is not revoked"
    );
    assert!(winner.moto.records.get(&shared).await.unwrap().is_some());
    ca.revoke_and_clean(&shared).await.unwrap();
}

#[tokio::test]
async fn a_ca_restored_from_an_old_backup_replaces_at_most_three_nodes_of_a_master_at_once() {
    let names = ["b-1", "b-2", "b-3", "b-4"];
    let nodes = names
        .iter()
        .map(|n| node(n, "x", &["profile::base"]))
        .collect();
    let Some(e) = E2e::start("trust-restore", SigningMode::Operator, nodes, |ca| ca).await else {
        return;
    };
    let mut launched = Vec::new();
    for name in names {
        let l = e.launch(name).await;
        signed(&e, name, &l, SigningMode::Operator).await;
        launched.push(l);
    }
    // The CA forgets every certificate (restored from a backup older than them).
    for l in &launched {
        e.ca.revoke_and_clean(&l.certname).await.unwrap();
    }
    for name in names {
        e.h.reconcile(name).await.unwrap();
    }
    let mut replacing = 0;
    for name in names {
        let st = e.h.get(name).await.status.unwrap();
        let reason = st
            .conditions
            .iter()
            .find(|c| c.type_ == "CertificateSigned")
            .map(|c| c.reason.clone());
        assert_eq!(reason.as_deref(), Some("CertificateVanished"), "{name}");
        if st.phase == Some(puppet_conductor::api::node::Phase::Replacing) {
            replacing += 1;
        }
    }
    assert_eq!(
        replacing, 3,
        "at most three of the master's nodes are replaced at once"
    );
    // As the first replacements complete, the last one gets its slot.
    for _ in 0..4 {
        for name in names {
            let _ = e.h.reconcile(name).await;
        }
    }
    for (name, l) in names.iter().zip(&launched) {
        let st = e.h.get(name).await.status.unwrap();
        assert_eq!(
            st.incarnation,
            Some(2),
            "{name} replaced once: {:#?}",
            e.h.events
                .all()
                .iter()
                .filter(|ev| ev.object.ends_with(name))
                .map(|ev| format!("{} {}", ev.reason, ev.note))
                .collect::<Vec<_>>()
        );
        assert_ne!(st.certname.as_deref(), Some(l.certname.as_str()));
        assert!(
            e.ca.status(&l.certname).await.unwrap().is_none(),
            "{name}: the old certname is never signed again"
        );
    }
}
