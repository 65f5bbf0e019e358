use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::certificate::{CertState, CertificateInfo};
use crate::instance::{tags, Instance, InstanceState};
use crate::record::{ListedRecord, RecordListing};

const LIVE: &str = "0f3c9a2e-7b1d-4c8e-9a6f-1e2d3c4b5a69";
const DEAD: &str = "7d2b1c4e-0a9f-4e3d-8c7b-6a5f4e3d2c1b";
const HOUR: i64 = 3600;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

fn ago(secs: i64) -> DateTime<Utc> {
    now() - chrono::Duration::seconds(secs)
}

fn inst(id: &str, uid: Option<&str>, state: InstanceState, age: Option<i64>) -> Instance {
    let mut t = BTreeMap::new();
    t.insert(tags::OPERATOR.to_string(), "op".to_string());
    if let Some(uid) = uid {
        t.insert(tags::NODE_UID.to_string(), uid.to_string());
        t.insert(tags::CERTNAME.to_string(), format!("{uid}-1"));
    }
    Instance {
        id: id.to_string(),
        state,
        tags: t,
        private_ip: None,
        public_ip: None,
        zone: None,
        launch_time: age.map(ago),
        image_id: None,
        instance_type: None,
        subnet_id: None,
        security_group_ids: Vec::new(),
        http_tokens: None,
    }
}

/// A certificate; `signed_secs_ago` is when the CA signed it (notBefore is a day earlier).
fn cert(name: &str, state: CertState, signed_secs_ago: Option<i64>) -> CertificateInfo {
    CertificateInfo {
        name: name.to_string(),
        state,
        fingerprint: None,
        dns_alt_names: Vec::new(),
        subject_alt_names: Vec::new(),
        authorization_extensions: BTreeMap::new(),
        not_before: signed_secs_ago.map(|s| ago(s + 24 * HOUR)),
        not_after: None,
        serial: None,
    }
}

fn listed(certname: &str, age: Option<i64>) -> (String, ListedRecord) {
    (
        certname.to_string(),
        ListedRecord {
            key: format!("nodes/records/{certname}.json"),
            etag: None,
            last_modified: age.map(ago),
            size: 1,
        },
    )
}

fn snap(
    instances: Vec<Instance>,
    certs: Option<Vec<CertificateInfo>>,
    records: Vec<(String, ListedRecord)>,
) -> MasterObservation {
    MasterObservation {
        instances: instances.into(),
        records: RecordListing {
            records: records.into_iter().collect(),
            check_ins: Default::default(),
            signatures: Default::default(),
        },
        certificates: certs.map(|c| c.into_iter().map(|c| (c.name.clone(), c)).collect()),
    }
}

fn live_owners() -> Owners {
    Owners {
        node_uids: [LIVE.to_string()].into(),
        certnames: [format!("{LIVE}-2"), "web01.example.com".to_string()].into(),
    }
}

fn dead(n: i64) -> String {
    format!("{DEAD}-{n}")
}

struct Case {
    name: &'static str,
    snapshot: MasterObservation,
    csr_seen: Vec<(String, i64)>,
    due: Vec<(OrphanKind, String)>,
    too_young: usize,
}

fn case(name: &'static str, snapshot: MasterObservation) -> Case {
    Case {
        name,
        snapshot,
        csr_seen: Vec::new(),
        due: Vec::new(),
        too_young: 0,
    }
}

impl Case {
    fn due(mut self, kind: OrphanKind, name: &str) -> Self {
        self.due.push((kind, name.to_string()));
        self
    }
    fn young(mut self, n: usize) -> Self {
        self.too_young = n;
        self
    }
    fn csr_seen(mut self, certname: &str, secs_ago: i64) -> Self {
        self.csr_seen.push((certname.to_string(), secs_ago));
        self
    }
}

#[test]
fn rules() {
    use CertState::{Requested, Revoked, Signed};
    use InstanceState::{Pending, Running, ShuttingDown, Stopped, Terminated};
    use OrphanKind::{Certificate, CertificateRequest, Instance as Inst, Record};
    let old = Some(2 * HOUR);
    let young = Some(HOUR / 2);
    let cases = vec![
        // Instances.
        case(
            "unowned old instance",
            snap(vec![inst("i-1", Some(DEAD), Running, old)], None, vec![]),
        )
        .due(Inst, "i-1"),
        case(
            "stopped and pending count too",
            snap(
                vec![
                    inst("i-1", Some(DEAD), Stopped, old),
                    inst("i-2", Some(DEAD), Pending, old),
                ],
                None,
                vec![],
            ),
        )
        .due(Inst, "i-1")
        .due(Inst, "i-2"),
        case(
            "owned instance",
            snap(vec![inst("i-1", Some(LIVE), Running, old)], None, vec![]),
        ),
        case(
            "young instance",
            snap(vec![inst("i-1", Some(DEAD), Running, young)], None, vec![]),
        )
        .young(1),
        case(
            "instance of unknown age",
            snap(vec![inst("i-1", Some(DEAD), Running, None)], None, vec![]),
        )
        .young(1),
        case(
            "instance launched in the future (skew)",
            snap(
                vec![inst("i-1", Some(DEAD), Running, Some(-60))],
                None,
                vec![],
            ),
        )
        .young(1),
        case(
            "terminating instances are done",
            snap(
                vec![
                    inst("i-1", Some(DEAD), ShuttingDown, old),
                    inst("i-2", Some(DEAD), Terminated, old),
                ],
                None,
                vec![],
            ),
        ),
        case(
            "instance without node uid is not the operator's",
            snap(vec![inst("i-1", None, Running, old)], None, vec![]),
        ),
        // Certificates and CSRs.
        case(
            "unowned generated certificate",
            snap(vec![], Some(vec![cert(&dead(1), Signed, old)]), vec![]),
        )
        .due(Certificate, &dead(1)),
        case(
            "just signed: notBefore's backdating is not age",
            snap(vec![], Some(vec![cert(&dead(1), Signed, Some(60))]), vec![]),
        )
        .young(1),
        case(
            "certificate without notBefore",
            snap(vec![], Some(vec![cert(&dead(1), Signed, None)]), vec![]),
        )
        .young(1),
        case(
            "foreign certnames are never ours",
            snap(
                vec![],
                Some(vec![
                    cert("web02.example.com", Signed, old),
                    cert("web-1", Signed, old),
                    cert("0F3C9A2E-7B1D-4C8E-9A6F-1E2D3C4B5A69-1", Signed, old),
                    cert(&format!("{DEAD}-0"), Signed, old),
                ]),
                vec![],
            ),
        ),
        case(
            "a custom certname named by a record is ours",
            snap(
                vec![],
                Some(vec![cert("db1.example.com", Signed, old)]),
                vec![listed("db1.example.com", old)],
            ),
        )
        .due(Certificate, "db1.example.com")
        .due(Record, "db1.example.com"),
        case("a custom certname named by an instance tag is ours", {
            let mut i = inst("i-1", Some(LIVE), Terminated, old);
            i.tags
                .insert(tags::CERTNAME.to_string(), "db2.example.com".to_string());
            snap(
                vec![i],
                Some(vec![cert("db2.example.com", Requested, None)]),
                vec![],
            )
        })
        .csr_seen("db2.example.com", 2 * HOUR)
        .due(CertificateRequest, "db2.example.com"),
        case(
            "revoked certificates are not orphans",
            snap(vec![], Some(vec![cert(&dead(1), Revoked, old)]), vec![]),
        ),
        case(
            "owned by certname",
            snap(
                vec![],
                Some(vec![cert("web01.example.com", Signed, old)]),
                vec![listed("web01.example.com", old)],
            ),
        ),
        case(
            "old incarnations of a live node are the node's to fence",
            snap(
                vec![inst("i-1", Some(LIVE), Running, old)],
                Some(vec![
                    cert(&format!("{LIVE}-1"), Signed, old),
                    cert(&format!("{LIVE}-3"), Requested, None),
                ]),
                vec![listed(&format!("{LIVE}-1"), old)],
            ),
        )
        .csr_seen(&format!("{LIVE}-3"), 2 * HOUR),
        case(
            "old CSR",
            snap(vec![], Some(vec![cert(&dead(2), Requested, None)]), vec![]),
        )
        .csr_seen(&dead(2), 2 * HOUR)
        .due(CertificateRequest, &dead(2)),
        case(
            "young CSR",
            snap(vec![], Some(vec![cert(&dead(2), Requested, None)]), vec![]),
        )
        .csr_seen(&dead(2), 60)
        .young(1),
        case(
            "CSR never seen before",
            snap(vec![], Some(vec![cert(&dead(2), Requested, None)]), vec![]),
        )
        .young(1),
        case(
            "CA not listed: no certificate findings",
            snap(vec![], None, vec![]),
        ),
        // Records.
        case(
            "unowned old record",
            snap(vec![], None, vec![listed(&dead(1), old)]),
        )
        .due(Record, &dead(1)),
        case(
            "young record",
            snap(vec![], None, vec![listed(&dead(1), young)]),
        )
        .young(1),
        case(
            "record of unknown age",
            snap(vec![], None, vec![listed(&dead(1), None)]),
        )
        .young(1),
        case(
            "owned record",
            snap(vec![], None, vec![listed(&format!("{LIVE}-2"), old)]),
        ),
        // Everything of one dead node at once, in a stable order.
        case(
            "a whole dead node",
            snap(
                vec![inst("i-9", Some(DEAD), Running, old)],
                Some(vec![
                    cert(&dead(2), Requested, None),
                    cert(&dead(1), Signed, old),
                ]),
                vec![listed(&dead(1), old)],
            ),
        )
        .csr_seen(&dead(2), 2 * HOUR)
        .due(Inst, "i-9")
        .due(Certificate, &dead(1))
        .due(CertificateRequest, &dead(2))
        .due(Record, &dead(1)),
    ];
    for c in cases {
        let seen: HashMap<String, DateTime<Utc>> = c
            .csr_seen
            .iter()
            .map(|(n, s)| (n.clone(), ago(*s)))
            .collect();
        let scan = find_orphans(
            &c.snapshot,
            &live_owners(),
            &seen,
            now(),
            Duration::from_secs(3600),
        );
        let due: Vec<(OrphanKind, String)> =
            scan.due.iter().map(|o| (o.kind, o.name.clone())).collect();
        assert_eq!(due, c.due, "{}", c.name);
        assert_eq!(scan.too_young, c.too_young, "{}", c.name);
    }
}

#[test]
fn orphans_carry_age_certname_and_operator() {
    let s = snap(
        vec![inst(
            "i-1",
            Some(DEAD),
            InstanceState::Running,
            Some(2 * HOUR),
        )],
        Some(vec![cert(&dead(1), CertState::Signed, Some(3 * HOUR))]),
        vec![listed(&dead(1), Some(4 * HOUR))],
    );
    let scan = find_orphans(
        &s,
        &Owners::default(),
        &HashMap::new(),
        now(),
        Duration::ZERO,
    );
    let ages: Vec<u64> = scan.due.iter().map(|o| o.age.as_secs()).collect();
    assert_eq!(ages, [7200, 10800, 14400]);
    assert!(scan
        .due
        .iter()
        .all(|o| o.certname.as_deref() == Some(dead(1).as_str())));
    assert_eq!(scan.due[0].operator.as_deref(), Some("op"));
    assert_eq!(scan.due[1].operator, None);
}

#[test]
fn zero_min_age_takes_everything_unowned_of_known_age() {
    let s = snap(
        vec![inst("i-1", Some(DEAD), InstanceState::Running, Some(0))],
        None,
        vec![listed(&dead(1), Some(0))],
    );
    let scan = find_orphans(
        &s,
        &Owners::default(),
        &HashMap::new(),
        now(),
        Duration::ZERO,
    );
    assert_eq!(scan.due.len(), 2);
    assert_eq!(scan.too_young, 0);
}

#[test]
fn generated_certnames() {
    assert!(is_generated(&format!("{LIVE}-1")));
    assert!(is_generated(&format!("{LIVE}-42")));
    for name in [
        LIVE.to_string(),
        format!("{LIVE}-0"),
        format!("{LIVE}-01"),
        format!("{LIVE}-x"),
        format!("x{LIVE}-1"),
        LIVE.to_uppercase() + "-1",
        "web-1".to_string(),
        "-1".to_string(),
    ] {
        assert!(!is_generated(&name), "{name}");
    }
    assert_eq!(uid_part("web-3"), Some("web"));
    assert_eq!(uid_part("-3"), None);
    assert_eq!(uid_part("web"), None);
}

#[test]
fn kinds_have_labels() {
    let labels: Vec<&str> = [
        OrphanKind::Instance,
        OrphanKind::Certificate,
        OrphanKind::CertificateRequest,
        OrphanKind::Record,
    ]
    .iter()
    .map(|k| k.as_str())
    .collect();
    assert_eq!(
        labels,
        ["instance", "certificate", "certificate-request", "record"]
    );
}

#[test]
fn tracker_remembers_first_sight_of_waiting_csrs_only() {
    let tracker = OrphanTracker::default();
    let csr = |state| snap(vec![], Some(vec![cert(&dead(1), state, None)]), vec![]);
    let first = tracker.observe_csrs("ns/m", &csr(CertState::Requested), ago(100));
    assert_eq!(first.get(&dead(1)), Some(&ago(100)));
    let again = tracker.observe_csrs("ns/m", &csr(CertState::Requested), now());
    assert_eq!(again.get(&dead(1)), Some(&ago(100)), "first sight is kept");
    assert!(tracker
        .observe_csrs("other/m", &csr(CertState::Requested), now())
        .get(&dead(1))
        .is_some_and(|t| *t == now()));
    // An unreachable CA forgets nothing.
    let unlisted = snap(vec![], None, vec![]);
    assert_eq!(tracker.observe_csrs("ns/m", &unlisted, now()).len(), 1);
    // Signed: no longer waiting, so a later CSR of that name starts afresh.
    assert!(tracker
        .observe_csrs("ns/m", &csr(CertState::Signed), now())
        .is_empty());
    let later = tracker.observe_csrs("ns/m", &csr(CertState::Requested), now());
    assert_eq!(later.get(&dead(1)), Some(&now()));
    tracker.forget_master("ns/m");
    let fresh = tracker.observe_csrs("ns/m", &csr(CertState::Requested), ago(-5));
    assert_eq!(fresh.get(&dead(1)), Some(&ago(-5)));
}

#[test]
fn tracker_reports_once_until_resolved() {
    let tracker = OrphanTracker::default();
    let orphan = Orphan {
        kind: OrphanKind::Record,
        name: dead(1),
        certname: Some(dead(1)),
        age: Duration::from_secs(1),
        operator: None,
    };
    assert!(tracker.first_report("ns/m", &orphan));
    assert!(!tracker.first_report("ns/m", &orphan));
    assert!(tracker.first_report("ns/other", &orphan), "per master");
    let same_name_other_kind = Orphan {
        kind: OrphanKind::Certificate,
        ..orphan.clone()
    };
    assert!(tracker.first_report("ns/m", &same_name_other_kind));
    tracker.forget_resolved("ns/m", std::slice::from_ref(&orphan));
    assert!(!tracker.first_report("ns/m", &orphan), "still due: kept");
    assert!(
        tracker.first_report("ns/m", &same_name_other_kind),
        "resolved, then back: reported again"
    );
    tracker.forget_resolved("ns/m", &[]);
    assert!(tracker.first_report("ns/m", &orphan));
}

// Property: whatever is observed, nothing owned and nothing younger than the minimum
// age is ever due, and every due orphan's age is what its inputs say.

const POOL: [&str; 3] = [LIVE, DEAD, "11111111-2222-4333-8444-555555555555"];

fn certname_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..POOL.len(), 1i64..4).prop_map(|(u, n)| format!("{}-{n}", POOL[u])),
        Just("web01.example.com".to_string()),
        Just("web-1".to_string()),
    ]
}

fn offset() -> impl Strategy<Value = Option<i64>> {
    proptest::option::of(-100i64..20_000)
}

fn state_strategy() -> impl Strategy<Value = InstanceState> {
    prop_oneof![
        Just(InstanceState::Pending),
        Just(InstanceState::Running),
        Just(InstanceState::ShuttingDown),
        Just(InstanceState::Terminated),
        Just(InstanceState::Stopped),
        Just(InstanceState::Unknown),
    ]
}

fn cert_state_strategy() -> impl Strategy<Value = CertState> {
    prop_oneof![
        Just(CertState::Requested),
        Just(CertState::Signed),
        Just(CertState::Revoked),
    ]
}

fn owned(owners: &Owners, name: &str) -> bool {
    owners.certnames.contains(name)
        || owners.node_uids.iter().any(|u| {
            name.strip_prefix(u.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|n| n.parse::<i64>().is_ok_and(|n| n > 0))
        })
}

proptest! {
    #[test]
    fn nothing_owned_or_young_is_ever_due(
        instances in proptest::collection::vec((proptest::option::of(0..POOL.len()), state_strategy(), offset()), 0..6),
        certs in proptest::collection::vec((certname_strategy(), cert_state_strategy(), offset(), offset()), 0..6),
        records in proptest::collection::vec((certname_strategy(), offset()), 0..6),
        live_uids in proptest::collection::vec(0..POOL.len(), 0..3),
        live_certnames in proptest::collection::vec(certname_strategy(), 0..3),
        ca_listed in any::<bool>(),
        min_age in 0u64..20_000,
    ) {
        let instances: Vec<Instance> = instances
            .iter()
            .enumerate()
            .map(|(n, (u, state, age))| inst(&format!("i-{n}"), u.map(|u| POOL[u]), *state, *age))
            .collect();
        let mut seen = HashMap::new();
        let mut cert_list = Vec::new();
        for (name, state, signed, first_seen) in &certs {
            cert_list.push(cert(name, *state, *signed));
            if let Some(s) = first_seen {
                seen.insert(name.clone(), ago(*s));
            }
        }
        let s = snap(
            instances,
            ca_listed.then_some(cert_list),
            records.iter().map(|(n, a)| listed(n, *a)).collect(),
        );
        let owners = Owners {
            node_uids: live_uids.iter().map(|u| POOL[*u].to_string()).collect(),
            certnames: live_certnames.into_iter().collect::<HashSet<_>>(),
        };
        let min_age = Duration::from_secs(min_age);
        let scan = find_orphans(&s, &owners, &seen, now(), min_age);
        prop_assert_eq!(&scan, &find_orphans(&s, &owners, &seen, now(), min_age), "deterministic");
        for o in &scan.due {
            prop_assert!(o.age >= min_age, "{:?}", o);
            let since = match o.kind {
                OrphanKind::Instance => {
                    let i = s.instances.iter().find(|i| i.id == o.name).unwrap();
                    prop_assert!(!owners.node_uids.contains(i.tag(tags::NODE_UID).unwrap()), "{:?}", o);
                    prop_assert!(!i.state.is_terminating());
                    i.launch_time.unwrap()
                }
                OrphanKind::Certificate => {
                    prop_assert!(!owned(&owners, &o.name), "{:?}", o);
                    let c = &s.certificates.as_ref().unwrap()[&o.name];
                    prop_assert_eq!(c.state, CertState::Signed);
                    c.not_before.unwrap() + chrono::Duration::days(1)
                }
                OrphanKind::CertificateRequest => {
                    prop_assert!(!owned(&owners, &o.name), "{:?}", o);
                    seen[&o.name]
                }
                OrphanKind::Record => {
                    prop_assert!(!owned(&owners, &o.name), "{:?}", o);
                    s.records.records[&o.name].last_modified.unwrap()
                }
            };
            prop_assert!(now() - since >= chrono::Duration::from_std(min_age).unwrap(), "{:?}", o);
            prop_assert_eq!(Some(o.age), (now() - since).to_std().ok());
        }
    }
}
