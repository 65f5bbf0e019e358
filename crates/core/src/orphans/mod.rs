//! Orphan detection (pure, no I/O): tagged instances, certificates, waiting CSRs and
//! records of one master that no live PuppetNode owns.
//!
//! The master reconciler observes (a [`MasterObservation`] and the live nodes as
//! [`Owners`]), [`find_orphans`] decides, and the operator's sweep reports or cleans up.
//! Nothing younger than the minimum age is ever due: a node being created may not be in
//! the caller's cache yet, and its instance, CSR and record must not be mistaken for
//! orphans.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::certificate::CertState;
use crate::identity;
use crate::instance::tags;
use crate::observation::MasterObservation;
use crate::sync::lock;

/// How far puppetserver backdates a certificate's notBefore: one day (measured on 7.9:
/// signed at 07:37:49, notBefore 07:37:49 the day before). The signing time is notBefore
/// plus this; a CA that backdates less only makes certificates look younger (safe).
pub const CA_BACKDATE: Duration = Duration::from_secs(24 * 3600);

/// Who owns what: every PuppetNode in the operator's scope that still exists (deleting
/// ones too: their own finalizer cleans up). Filled by the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owners {
    /// UIDs of the live nodes.
    pub node_uids: HashSet<String>,
    /// Current certnames of the live nodes.
    pub certnames: HashSet<String>,
}

impl Owners {
    /// A certname is owned by name, or by the UID in a generated `<uid>-<incarnation>`
    /// (an old incarnation of a live node is for the node reconciler to fence).
    pub fn owns_certname(&self, certname: &str) -> bool {
        self.certnames.contains(certname)
            || uid_part(certname).is_some_and(|uid| self.node_uids.contains(uid))
    }
}

/// What kind of thing an orphan is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrphanKind {
    /// A running (or stopped) instance tagged for the master.
    Instance,
    /// A signed certificate.
    Certificate,
    /// A CSR waiting to be signed.
    CertificateRequest,
    /// A node record in the master's bucket.
    Record,
}

impl OrphanKind {
    /// Every kind, for metrics that report zeros too.
    pub const ALL: [OrphanKind; 4] = [
        Self::Instance,
        Self::Certificate,
        Self::CertificateRequest,
        Self::Record,
    ];

    /// Short label for metrics and event notes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Instance => "instance",
            Self::Certificate => "certificate",
            Self::CertificateRequest => "certificate-request",
            Self::Record => "record",
        }
    }
}

impl std::fmt::Display for OrphanKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing no live PuppetNode owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    /// What it is.
    pub kind: OrphanKind,
    /// Instance id, or certname for certificates, CSRs and records.
    pub name: String,
    /// The certname it belongs to (an instance's certname tag), when known.
    pub certname: Option<String>,
    /// How long it has existed (a lower bound).
    pub age: Duration,
    /// For instances, the operator its tag names: only this operator's own instances
    /// are terminated (two clusters may use the same `namespace/name` master in one
    /// account). `None` for the other kinds.
    pub operator: Option<String>,
}

/// What [`find_orphans`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrphanScan {
    /// Orphans at least the minimum age: to report or clean up.
    pub due: Vec<Orphan>,
    /// Unowned things not due yet: younger than the minimum age, or of unknown age.
    pub too_young: usize,
}

/// Finds what no live node owns among the master's observed instances, certificates,
/// CSRs and records. `csr_first_seen` comes from [`OrphanTracker::observe_csrs`].
///
/// - Instances: launched by the operator (carry a node-UID tag), not already shutting
///   down or terminated, UID not live; age from the launch time.
/// - Certificates and CSRs: only "ours" (a generated `<uuid>-<incarnation>` certname, or
///   one named by the master's records or instance tags), neither owned by certname nor
///   by UID, not revoked; a certificate's age from notBefore (see [`CA_BACKDATE`]), a
///   CSR's from when it was first seen. Skipped when the CA could not be listed.
/// - Records: not owned by certname nor by UID; age from the object's LastModified.
///
/// Unknown or negative ages are never due.
pub fn find_orphans(
    observed: &MasterObservation,
    owners: &Owners,
    csr_first_seen: &HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
    min_age: Duration,
) -> OrphanScan {
    let mut scan = OrphanScan::default();
    let mut consider = |kind, name: &str, certname: Option<&str>, operator, age| match age {
        Some(age) if age >= min_age => scan.due.push(Orphan {
            kind,
            name: name.to_string(),
            certname: certname.map(str::to_string),
            age,
            operator,
        }),
        _ => scan.too_young += 1,
    };

    for i in &observed.instances {
        if i.state.is_terminating() {
            continue;
        }
        // The operator tags every launch with the node UID; without it the instance is
        // someone else's, whatever its master tag says.
        let Some(uid) = i.tag(tags::NODE_UID) else {
            continue;
        };
        if owners.node_uids.contains(uid) {
            continue;
        }
        let operator = i.tag(tags::OPERATOR).map(str::to_string);
        let age = age_since(now, i.launch_time);
        consider(
            OrphanKind::Instance,
            &i.id,
            i.tag(tags::CERTNAME),
            operator,
            age,
        );
    }

    if let Some(certificates) = &observed.certificates {
        let tagged: HashSet<&str> = observed
            .instances
            .iter()
            .filter_map(|i| i.tag(tags::CERTNAME))
            .collect();
        let ours = |name: &str| {
            is_generated(name)
                || observed.records.records.contains_key(name)
                || tagged.contains(name)
        };
        let mut entries: Vec<_> = certificates.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (name, info) in entries {
            if !ours(name) || owners.owns_certname(name) {
                continue;
            }
            let (kind, age) = match info.state {
                CertState::Revoked => continue,
                CertState::Signed => (
                    OrphanKind::Certificate,
                    age_since(now, info.not_before.and_then(signed_at)),
                ),
                CertState::Requested => (
                    OrphanKind::CertificateRequest,
                    age_since(now, csr_first_seen.get(name.as_str()).copied()),
                ),
            };
            consider(kind, name, Some(name), None, age);
        }
    }

    for (certname, listed) in &observed.records.records {
        if owners.owns_certname(certname) {
            continue;
        }
        let age = age_since(now, listed.last_modified);
        consider(OrphanKind::Record, certname, Some(certname), None, age);
    }
    scan
}

/// When puppetserver signed a certificate with this notBefore.
fn signed_at(not_before: DateTime<Utc>) -> Option<DateTime<Utc>> {
    not_before.checked_add_signed(chrono::Duration::from_std(CA_BACKDATE).ok()?)
}

/// `now - since`; `None` when unknown or in the future (clock skew is not age).
fn age_since(now: DateTime<Utc>, since: Option<DateTime<Utc>>) -> Option<Duration> {
    now.signed_duration_since(since?).to_std().ok()
}

/// The `<uid>` of a `<uid>-<incarnation>` certname (any uid).
fn uid_part(certname: &str) -> Option<&str> {
    let (uid, incarnation) = certname.rsplit_once('-')?;
    identity::parse_incarnation(incarnation)?;
    (!uid.is_empty()).then_some(uid)
}

/// Is this a certname the operator generates: a Kubernetes UID (lower-case UUID) and
/// an incarnation? Hand-made certnames sharing the CA never match.
pub fn is_generated(certname: &str) -> bool {
    uid_part(certname).is_some_and(|uid| {
        uid.len() == 36
            && uid.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            })
    })
}

/// Memory across sweeps of each master: when each waiting CSR was first seen (the CA
/// reports no submission time) and which orphans were already reported (so `Ignore`
/// emits one event per orphan, not one per pass). Lost on restart, which only delays.
#[derive(Debug, Default)]
pub struct OrphanTracker {
    masters: Mutex<HashMap<String, MasterMemory>>,
}

#[derive(Debug, Default)]
struct MasterMemory {
    csr_first_seen: HashMap<String, DateTime<Utc>>,
    reported: HashSet<(OrphanKind, String)>,
}

impl OrphanTracker {
    fn with<R>(&self, master_key: &str, f: impl FnOnce(&mut MasterMemory) -> R) -> R {
        let mut masters = lock(&self.masters);
        f(masters.entry(master_key.to_string()).or_default())
    }

    /// Notes the CSRs waiting in `observed` (first sight is `now`), forgets those no
    /// longer waiting, and returns when each waiting one was first seen. Without a CA
    /// listing the memory is kept as it was.
    pub fn observe_csrs(
        &self,
        master_key: &str,
        observed: &MasterObservation,
        now: DateTime<Utc>,
    ) -> HashMap<String, DateTime<Utc>> {
        self.with(master_key, |m| {
            if let Some(certificates) = &observed.certificates {
                let waiting: HashSet<&str> = certificates
                    .iter()
                    .filter(|(_, c)| c.state == CertState::Requested)
                    .map(|(name, _)| name.as_str())
                    .collect();
                m.csr_first_seen
                    .retain(|name, _| waiting.contains(name.as_str()));
                for name in waiting {
                    m.csr_first_seen.entry(name.to_string()).or_insert(now);
                }
            }
            m.csr_first_seen.clone()
        })
    }

    /// `true` the first time an orphan is reported; `false` after that.
    pub fn first_report(&self, master_key: &str, orphan: &Orphan) -> bool {
        self.with(master_key, |m| {
            m.reported.insert((orphan.kind, orphan.name.clone()))
        })
    }

    /// Forgets reports of orphans no longer due (cleaned, adopted, gone), so the memory
    /// stays bounded and one that comes back is reported again.
    pub fn forget_resolved(&self, master_key: &str, due: &[Orphan]) {
        let current: HashSet<(OrphanKind, &str)> =
            due.iter().map(|o| (o.kind, o.name.as_str())).collect();
        self.with(master_key, |m| {
            m.reported
                .retain(|(kind, name)| current.contains(&(*kind, name.as_str())))
        });
    }

    /// Forgets everything about a master (it was deleted).
    pub fn forget_master(&self, master_key: &str) {
        let mut masters = lock(&self.masters);
        masters.remove(master_key);
    }
}

#[cfg(test)]
mod tests;
