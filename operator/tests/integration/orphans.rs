//! The orphan sweep against moto (EC2, S3) and the real puppetserver CA: a node that is
//! gone left an instance, a signed certificate, a waiting CSR and a record behind.
//! Nothing is touched or reported before the minimum age or while a node owns it;
//! `Ignore` reports each once; `Cleanup` terminates, revokes and deletes; what another
//! operator wrote is reported, never removed; a failed action does not stop the rest.
//!
//! Needs `tests/services/up.sh`; skipped without it unless `PC_REQUIRE_SERVICES=1`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use puppet_conductor::api::master::{CloudProvider, OrphanAction};
use puppet_conductor::api::PuppetMaster;
use puppet_conductor::ca::{CertState, HttpCa, PuppetCa};
use puppet_conductor::cloud::{tags, Cloud, Ec2Cloud};
use puppet_conductor::controller::events::{MemoryEvents, RecordedEvent};
use puppet_conductor::controller::master::sweep::{sweep, SweepReport};
use puppet_conductor::controller::services::MasterServices;
use puppet_conductor::controller::ReconcileError;
use puppet_conductor::identity::ChallengeKey;
use puppet_conductor::observation::MasterObservation;
use puppet_conductor::orphans::{find_orphans, OrphanKind, OrphanScan, OrphanTracker, Owners};
use puppet_conductor::records::{Records, S3Records};

use crate::cloud_support::{launch_request, moto_config, REGION};
use crate::common::services::{PuppetServer, Services};
use crate::node_support::{create_bucket, master, unique, NS};

const OPERATOR_ID: &str = "orphan-test";
const HOUR: Duration = Duration::from_secs(3600);

/// A fresh lower-case UUID, shaped like a Kubernetes UID.
fn fresh_uid() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The sweep's clock, a little ahead: moto, S3 and the CA stamp times with their own
/// clocks and precision, and an age of "-1ms" must not make `min_age = 0` flaky.
fn clock() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(2)
}

/// Submits a CSR for `certname` over the CA API, as an agent does.
async fn submit_csr(puppet: &PuppetServer, certname: &str) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, certname);
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&puppet.ca_pem()).unwrap())
        .build()
        .unwrap();
    let response = http
        .put(format!(
            "{}/puppet-ca/v1/certificate_request/{certname}",
            puppet.ca_url
        ))
        .header("content-type", "text/plain")
        .body(pem)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
}

/// Serials in the CA's CRL.
fn crl_serials(pem: &str) -> Vec<u64> {
    use x509_parser::prelude::FromDer;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&pem.contents).unwrap();
    crl.iter_revoked_certificates()
        .filter_map(|r| r.user_certificate.to_u64_digits().first().copied())
        .collect()
}

/// One master on moto and the real CA, and what a vanished node left behind.
struct World {
    puppet: PuppetServer,
    master: PuppetMaster,
    master_key: String,
    cloud: Arc<Ec2Cloud>,
    records: Arc<S3Records>,
    ca: Arc<HttpCa>,
    services: MasterServices,
    /// The vanished node's UID.
    uid: String,
    /// Certnames this test made at the (shared) CA.
    certnames: HashSet<String>,
    /// Held while the world lists the shared CA.
    _listing: tokio::sync::RwLockReadGuard<'static, ()>,
}

impl World {
    async fn new(prefix: &str) -> Option<Self> {
        let svc = Services::from_env()?;
        let listing = crate::e2e_support::CA_LISTING.read().await;
        let name = unique(prefix);
        let bucket = unique(&format!("{prefix}-rec"));
        create_bucket(&svc.moto_endpoint, REGION, &bucket).await;
        let master = master(
            &name,
            &svc.moto_endpoint,
            REGION,
            &bucket,
            CloudProvider::Ec2,
        );
        let cloud = Arc::new(Ec2Cloud::new(&moto_config(&svc.moto_endpoint, REGION)).await);
        let records = Arc::new(
            S3Records::new(&crate::records_support::config(
                &svc.moto_endpoint,
                &bucket,
                "nodes/",
            ))
            .await,
        );
        let ca = Arc::new(svc.puppet.ca_client(Duration::from_secs(20)));
        let services = MasterServices {
            cloud: cloud.clone(),
            records: records.clone(),
            ca: ca.clone(),
            ca_cert_pem: String::from_utf8(svc.puppet.ca_pem()).unwrap(),
            challenge_key: ChallengeKey::generate(),
        };
        Some(Self {
            puppet: svc.puppet,
            master,
            master_key: format!("{NS}/{name}"),
            cloud,
            records,
            ca,
            services,
            uid: fresh_uid(),
            certnames: HashSet::new(),
            _listing: listing,
        })
    }

    fn certname(&self, incarnation: i64) -> String {
        format!("{}-{incarnation}", self.uid)
    }

    /// An instance tagged for the master and `uid`, launched by `operator`.
    async fn launch(&self, uid: &str, operator: &str) -> String {
        let mut request = launch_request(&self.master_key, &format!("{NS}/gone"), 1);
        request.tags.insert(tags::OPERATOR.into(), operator.into());
        request.tags.insert(tags::NODE_UID.into(), uid.into());
        request
            .tags
            .insert(tags::CERTNAME.into(), format!("{uid}-1"));
        self.cloud.launch(&request).await.unwrap().id
    }

    /// A record for `<uid>-1` written by `operator` for this master.
    async fn record(&self, uid: &str, operator: &str) -> String {
        let certname = format!("{uid}-1");
        let mut record = crate::records_support::record(&certname, uid);
        record.owner.operator = operator.into();
        record.owner.master = self.master_key.clone();
        self.records.put_if_changed(&record, None).await.unwrap();
        certname
    }

    /// A signed certificate for `certname` (returns its serial).
    async fn signed(&mut self, certname: &str) -> u64 {
        self.waiting(certname).await;
        self.ca.sign(certname).await.unwrap();
        let info = self.ca.status(certname).await.unwrap().unwrap();
        assert_eq!(info.state, CertState::Signed);
        info.serial.unwrap()
    }

    /// A CSR for `certname`, left waiting.
    async fn waiting(&mut self, certname: &str) {
        submit_csr(&self.puppet, certname).await;
        self.certnames.insert(certname.to_string());
    }

    /// One observation, as the master reconciler makes it.
    async fn observe(&self) -> MasterObservation {
        let listing = self.ca.list(None).await.unwrap();
        MasterObservation {
            instances: self
                .cloud
                .describe_master_instances(&self.master_key)
                .await
                .unwrap()
                .into(),
            records: self.records.list().await.unwrap(),
            // The CA is shared with every test running now: look at this test's only, or
            // Cleanup would revoke theirs (their nodes are not in these Owners).
            certificates: Some(
                listing
                    .into_iter()
                    .filter(|c| self.certnames.contains(&c.name))
                    .map(|c| (c.name.clone(), c))
                    .collect(),
            ),
        }
    }

    /// Observe and decide.
    async fn scan(
        &self,
        tracker: &OrphanTracker,
        owners: &Owners,
        min_age: Duration,
    ) -> OrphanScan {
        let snapshot = self.observe().await;
        let now = clock();
        let seen = tracker.observe_csrs(&self.master_key, &snapshot, now);
        find_orphans(&snapshot, owners, &seen, now, min_age)
    }

    async fn sweep(
        &mut self,
        action: OrphanAction,
        scan: &OrphanScan,
        tracker: &OrphanTracker,
        events: &MemoryEvents,
    ) -> Result<SweepReport, ReconcileError> {
        self.master.spec.orphans.action = action;
        sweep(
            &self.master,
            &self.master_key,
            OPERATOR_ID,
            &self.services,
            scan,
            tracker,
            events,
        )
        .await
    }

    async fn instance_state(&self, id: &str) -> puppet_conductor::cloud::InstanceState {
        self.cloud
            .describe_master_instances(&self.master_key)
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.id == id)
            .unwrap()
            .state
    }

    async fn ca_state(&self, certname: &str) -> Option<CertState> {
        self.ca.status(certname).await.unwrap().map(|c| c.state)
    }

    async fn has_record(&self, certname: &str) -> bool {
        self.records.get(certname).await.unwrap().is_some()
    }
}

/// Everything the vanished node left is still there.
async fn untouched(w: &World, instance: &str, signed: &str, waiting: &str, record: &str) {
    assert!(!w.instance_state(instance).await.is_terminating());
    assert_eq!(w.ca_state(signed).await, Some(CertState::Signed));
    assert_eq!(w.ca_state(waiting).await, Some(CertState::Requested));
    assert!(w.has_record(record).await);
}

fn with_reason<'a>(events: &'a [RecordedEvent], reason: &str) -> Vec<&'a RecordedEvent> {
    events.iter().filter(|e| e.reason == reason).collect()
}

fn kinds(report: &[puppet_conductor::orphans::Orphan]) -> Vec<OrphanKind> {
    let mut k: Vec<OrphanKind> = report.iter().map(|o| o.kind).collect();
    k.sort();
    k
}

const ALL_KINDS: [OrphanKind; 4] = [
    OrphanKind::Instance,
    OrphanKind::Certificate,
    OrphanKind::CertificateRequest,
    OrphanKind::Record,
];

#[tokio::test]
async fn orphans_are_left_while_young_or_owned_then_reported_then_cleaned() {
    let Some(mut w) = World::new("orphans").await else {
        return;
    };
    let uid = w.uid.clone();
    let instance = w.launch(&uid, OPERATOR_ID).await;
    let record = w.record(&uid, OPERATOR_ID).await;
    let signed = w.certname(1);
    let serial = w.signed(&signed).await;
    let waiting = w.certname(2);
    w.waiting(&waiting).await;
    let tracker = OrphanTracker::default();
    let events = MemoryEvents::default();
    let master_obj = w.master_key.clone();
    let nobody = Owners::default();

    // (a) Never before the minimum age, even under Cleanup. The certificate's notBefore
    // is backdated a day by the CA: it still counts as seconds old.
    let scan = w.scan(&tracker, &nobody, HOUR).await;
    assert!(scan.due.is_empty(), "{scan:?}");
    assert_eq!(scan.too_young, 4, "{scan:?}");
    let report = w
        .sweep(OrphanAction::Cleanup, &scan, &tracker, &events)
        .await
        .unwrap();
    assert_eq!(report, SweepReport::default());
    assert!(events.all().is_empty(), "{:?}", events.all());
    untouched(&w, &instance, &signed, &waiting, &record).await;

    // A live owner (the UID, and its current certname) keeps everything, even at age 0.
    let owner = Owners {
        node_uids: [uid.clone()].into(),
        certnames: [waiting.clone()].into(),
    };
    let scan = w.scan(&tracker, &owner, Duration::ZERO).await;
    assert_eq!(scan, OrphanScan::default());
    let report = w
        .sweep(OrphanAction::Cleanup, &scan, &tracker, &events)
        .await
        .unwrap();
    assert_eq!(report, SweepReport::default());
    assert!(events.all().is_empty());
    untouched(&w, &instance, &signed, &waiting, &record).await;

    // (b) Ignore: one Warning per orphan, once; nothing touched.
    let scan = w.scan(&tracker, &nobody, Duration::ZERO).await;
    assert_eq!(kinds(&scan.due), ALL_KINDS, "{scan:?}");
    for _ in 0..2 {
        let report = w
            .sweep(OrphanAction::Ignore, &scan, &tracker, &events)
            .await
            .unwrap();
        assert!(report.cleaned.is_empty());
        assert_eq!(kinds(&report.reported), ALL_KINDS);
    }
    let all = events.all();
    let found = with_reason(&all, "OrphanFound");
    assert_eq!(found.len(), 4, "once each, not once per pass: {all:?}");
    assert!(found.iter().all(|e| e.warning && e.object == master_obj));
    for name in [&instance, &signed, &waiting, &record] {
        assert!(
            found.iter().any(|e| e.note.contains(name.as_str())),
            "{name}: {found:?}"
        );
    }
    untouched(&w, &instance, &signed, &waiting, &record).await;

    // (c) Cleanup: terminated, revoked, dropped, deleted.
    let scan = w.scan(&tracker, &nobody, Duration::ZERO).await;
    let report = w
        .sweep(OrphanAction::Cleanup, &scan, &tracker, &events)
        .await
        .unwrap();
    assert_eq!(kinds(&report.cleaned), ALL_KINDS, "{report:?}");
    assert!(report.reported.is_empty());
    assert!(w.instance_state(&instance).await.is_terminating());
    assert_eq!(w.ca_state(&signed).await, None);
    assert!(
        crl_serials(&w.ca.crl().await.unwrap()).contains(&serial),
        "revoked, not only cleaned"
    );
    assert_eq!(w.ca_state(&waiting).await, None);
    assert!(!w.has_record(&record).await);
    let all = events.all();
    let cleaned = with_reason(&all, "OrphanCleaned");
    assert_eq!(cleaned.len(), 4, "{all:?}");
    assert!(cleaned.iter().all(|e| !e.warning && e.object == master_obj));

    // Converged: the next pass finds nothing.
    let scan = w.scan(&tracker, &nobody, Duration::ZERO).await;
    assert_eq!(scan, OrphanScan::default());
}

#[tokio::test]
async fn what_another_operator_wrote_is_reported_never_removed() {
    let Some(mut w) = World::new("orphans-foreign").await else {
        return;
    };
    let uid = w.uid.clone();
    let instance = w.launch(&uid, "someone-else").await;
    let record = w.record(&uid, "someone-else").await;
    let other_master = fresh_uid();
    let record_of_other_master = {
        let certname = format!("{other_master}-1");
        let mut r = crate::records_support::record(&certname, &other_master);
        r.owner.operator = OPERATOR_ID.into();
        r.owner.master = format!("{NS}/another-master");
        w.records.put_if_changed(&r, None).await.unwrap();
        certname
    };
    let tracker = OrphanTracker::default();
    let events = MemoryEvents::default();

    let scan = w.scan(&tracker, &Owners::default(), Duration::ZERO).await;
    assert_eq!(scan.due.len(), 3, "{scan:?}");
    let report = w
        .sweep(OrphanAction::Cleanup, &scan, &tracker, &events)
        .await
        .unwrap();
    assert!(report.cleaned.is_empty(), "{report:?}");
    assert_eq!(report.reported.len(), 3);
    let all = events.all();
    let found = with_reason(&all, "OrphanFound");
    assert_eq!(found.len(), 3, "{all:?}");
    assert!(found
        .iter()
        .any(|e| e.note.contains(&instance) && e.note.contains("someone-else")));
    assert!(found
        .iter()
        .any(|e| e.note.contains(&record) && e.note.contains("someone-else")));
    assert!(found
        .iter()
        .any(|e| e.note.contains(&record_of_other_master) && e.note.contains("another-master")));
    assert!(!w.instance_state(&instance).await.is_terminating());
    assert!(w.has_record(&record).await);
    assert!(w.has_record(&record_of_other_master).await);
}

#[tokio::test]
async fn a_failed_cleanup_does_not_stop_the_others() {
    let Some(mut w) = World::new("orphans-fail").await else {
        return;
    };
    let uid = w.uid.clone();
    let instance = w.launch(&uid, OPERATOR_ID).await;
    let record = w.record(&uid, OPERATOR_ID).await;
    let waiting = w.certname(1);
    w.waiting(&waiting).await;
    let tracker = OrphanTracker::default();
    let events = MemoryEvents::default();
    let scan = w.scan(&tracker, &Owners::default(), Duration::ZERO).await;
    assert_eq!(scan.due.len(), 3, "{scan:?}");

    // The CA goes away between observing and acting.
    let closed = crate::cloud_support::free_port();
    let dead: Arc<dyn PuppetCa> = Arc::new(
        HttpCa::from_pem(
            &format!("https://127.0.0.1:{closed}"),
            &std::fs::read(&w.puppet.client_cert).unwrap(),
            &std::fs::read(&w.puppet.client_key).unwrap(),
            &w.puppet.ca_pem(),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let real = std::mem::replace(&mut w.services.ca, dead);
    let error = w
        .sweep(OrphanAction::Cleanup, &scan, &tracker, &events)
        .await
        .unwrap_err();
    assert!(matches!(error, ReconcileError::Ca(_)), "{error:?}");
    assert!(w.instance_state(&instance).await.is_terminating());
    assert!(!w.has_record(&record).await);
    assert_eq!(w.ca_state(&waiting).await, Some(CertState::Requested));
    let all = events.all();
    assert_eq!(with_reason(&all, "OrphanCleaned").len(), 2, "{all:?}");
    let failed = with_reason(&all, "OrphanCleanupFailed");
    assert_eq!(failed.len(), 1, "{all:?}");
    assert!(failed[0].warning && failed[0].note.contains(&waiting));

    // Back: the next pass finishes the job.
    w.services.ca = real;
    let scan = w.scan(&tracker, &Owners::default(), Duration::ZERO).await;
    let report = w
        .sweep(OrphanAction::Cleanup, &scan, &tracker, &events)
        .await
        .unwrap();
    assert_eq!(kinds(&report.cleaned), [OrphanKind::CertificateRequest]);
    assert_eq!(w.ca_state(&waiting).await, None);
}
