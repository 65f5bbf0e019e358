//! The fakes of one world and the ground truth the invariants read from them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use puppet_conductor::ca::{CertState, PuppetCa};
use puppet_conductor::cloud::Instance;
use puppet_conductor::fakes::ca::FakeCa;
use puppet_conductor::fakes::ec2::FakeEc2;
use puppet_conductor::fakes::records::FakeRecords;
use puppet_conductor::fakes::Gate;
use tokio::time::Instant;

use crate::gate::SchedGate;

pub struct Fixtures {
    pub ec2: Arc<FakeEc2>,
    pub records: Arc<FakeRecords>,
    pub ca: Arc<FakeCa>,
    pub ca_pem: String,
    pub clock_origin: Instant,
    /// Whether EC2 ever lost its state (status may then name instances it forgot).
    pub ec2_lost: bool,
    csrs: Mutex<BTreeMap<String, String>>,
}

impl Fixtures {
    pub async fn new(sched: SchedGate) -> Self {
        let gate: Arc<dyn Gate> = Arc::new(sched.clone());
        let ec2 = FakeEc2::new(gate.clone())
            .with_boot_time(Duration::from_secs(20))
            .with_shutdown_time(Duration::from_secs(15))
            .with_visibility_lag(Duration::from_secs(2))
            .with_epoch(chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000));
        // The operator ages orphans by the wall clock, which a trial on the paused tokio
        // clock barely moves: a day back, what the CA signs and the bucket holds is older
        // than `orphans.minAge` (as every instance is, launched in the EC2 epoch above).
        let past = chrono::Utc::now() - chrono::Duration::days(1);
        let ca = FakeCa::new(gate.clone()).with_epoch(past);
        sched.set_open(true);
        let ca_pem = ca.ca_certificate().await.unwrap();
        sched.set_open(false);
        Self {
            ec2: Arc::new(ec2),
            records: Arc::new(FakeRecords::new(gate, "nodes/").with_epoch(past)),
            ca: Arc::new(ca),
            ca_pem,
            clock_origin: Instant::now(),
            ec2_lost: false,
            csrs: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn instances(&self) -> Vec<Instance> {
        self.ec2
            .instances()
            .into_iter()
            .map(|i| i.instance)
            .collect()
    }

    pub fn lose_ec2(&mut self) {
        self.ec2.lose_state();
        self.ec2_lost = true;
    }

    /// Whether the CA holds a signed (not revoked) certificate for `certname` now.
    pub fn ca_signed_now(&self, certname: &str) -> bool {
        self.ca
            .signed()
            .iter()
            .any(|c| c.certname == certname && c.on_ca && c.state == CertState::Signed)
    }

    /// Whether the CA holds anything (CSR or certificate) for `certname`.
    pub fn ca_has_any(&self, certname: &str) -> bool {
        self.ca.requests().iter().any(|c| c.certname == certname)
            || self
                .ca
                .signed()
                .iter()
                .any(|c| c.certname == certname && c.on_ca)
    }

    /// The public key (sha256 hex of its SPKI) of the certificate the CA serves for `certname`.
    pub fn signed_key(&self, certname: &str) -> Option<String> {
        self.ca
            .signed()
            .into_iter()
            .rev()
            .find(|s| s.certname == certname && s.on_ca && s.state == CertState::Signed)
            .map(|s| s.public_key_sha256)
    }

    /// Every signature the CA ever made, in order: (certname, public key sha256).
    pub fn signed_history(&self) -> Vec<(String, String)> {
        self.ca
            .signed()
            .into_iter()
            .map(|s| (s.certname, s.public_key_sha256))
            .collect()
    }

    pub fn has_records(&self, certname: &str) -> bool {
        self.records.objects().keys().any(|k| {
            k.ends_with(&format!("/{certname}.json")) || k.ends_with(&format!("/{certname}"))
        })
    }

    pub fn remember_csr(&self, instance_id: &str, pem: String) {
        self.csrs
            .lock()
            .unwrap()
            .insert(instance_id.to_string(), pem);
    }

    pub fn csr_of(&self, instance_id: &str) -> Option<String> {
        self.csrs.lock().unwrap().get(instance_id).cloned()
    }
}
