//! The signing decision: table cases for each rule, and a property test over sequences
//! of submissions, cleans, fencings, replacements and deletions in both signing modes.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::csr::{KeyAlgorithm, KeyInfo};
use crate::identity::ChallengeKey;
use crate::record::RecordOwner;

const UID: &str = "6f0e5c1a-8d1b-4b6e-9f7a-2d7c1e0b9a11";

fn key() -> ChallengeKey {
    ChallengeKey::from_bytes(&[7u8; 32]).unwrap()
}

fn instance(incarnation: i64) -> String {
    format!("i-{incarnation:017x}")
}

fn record(certname: &str, incarnation: i64, state: RecordState) -> NodeRecord {
    NodeRecord {
        certname: certname.to_owned(),
        classes: vec!["role::web".into()],
        environment: "production".into(),
        parameters: BTreeMap::new(),
        challenge_sha256: challenge_sha256(&key().challenge(UID, incarnation)),
        instance_id: Some(instance(incarnation)),
        owner: RecordOwner {
            operator: "default".into(),
            master: "ns/pm".into(),
            node: "ns/web-1".into(),
            node_uid: UID.into(),
            incarnation,
        },
        state,
    }
}

/// What an agent (or anyone who read a waiting CSR) submits for an incarnation: the
/// right challenge and instance id, with key number `key_no`.
fn csr(certname: &str, incarnation: i64, key_no: u8) -> CsrClaims {
    CsrClaims {
        subject_cn: Some(certname.to_owned()),
        challenge: Some(key().challenge(UID, incarnation)),
        pp_instance_id: Some(instance(incarnation)),
        dns_alt_names: Vec::new(),
        other_alt_names: Vec::new(),
        authorization_extensions: Vec::new(),
        key: KeyInfo {
            algorithm: KeyAlgorithm::Ed25519,
            bits: 256,
        },
        public_key_sha256: format!("{key_no:064x}"),
        signature_valid: true,
    }
}

fn operator_facts<'a>(
    certname: &'a str,
    record: Option<&'a NodeRecord>,
    signature: Option<&'a SignatureRecord>,
    incarnation: i64,
    instance_id: &'a str,
    challenge: &'a str,
    deleting: bool,
) -> Facts<'a> {
    Facts {
        certname,
        record,
        signature,
        node: Some(NodeFacts {
            uid: UID,
            incarnation,
            instance_id,
            challenge,
            deleting,
        }),
        conflict: None,
        allow_dns_alt_names: false,
    }
}

fn policy_facts<'a>(
    certname: &'a str,
    record: Option<&'a NodeRecord>,
    signature: Option<&'a SignatureRecord>,
) -> Facts<'a> {
    Facts {
        certname,
        record,
        signature,
        node: None,
        conflict: None,
        allow_dns_alt_names: false,
    }
}

fn confirmed(claim: SignatureRecord) -> SignatureRecord {
    SignatureRecord {
        serial: Some("7".into()),
        fingerprint: Some("AA:BB".into()),
        sign_requested: false,
        ..claim
    }
}

#[test]
fn a_fresh_incarnation_with_a_good_csr_is_signed_in_both_modes() {
    let (certname, r) = ("c-1", record("c-1", 1, RecordState::Live));
    let challenge = key().challenge(UID, 1);
    let iid = instance(1);
    let op = operator_facts(certname, Some(&r), None, 1, &iid, &challenge, false);
    assert_eq!(decide(&op, &csr(certname, 1, 1)), Decision::Sign);
    assert_eq!(
        decide(
            &policy_facts(certname, Some(&r), None),
            &csr(certname, 1, 1)
        ),
        Decision::Sign
    );
}

#[test]
fn each_lifecycle_rule_refuses() {
    let certname = "c-1";
    let challenge = key().challenge(UID, 1);
    let iid = instance(1);
    let live = record(certname, 1, RecordState::Live);
    let claims = csr(certname, 1, 1);
    let claim = claim_for(&live, &csr(certname, 1, 9), Signer::Operator, Utc::now());
    let same_key = claim_for(&live, &claims, Signer::Operator, Utc::now());
    let same_key_confirmed = confirmed(same_key.clone());
    let fencing = record(certname, 1, RecordState::Fencing);
    let deleting_record = record(certname, 1, RecordState::Deleting);
    let mut foreign = live.clone();
    foreign.owner.node_uid = "other".into();
    foreign.owner.node = "other-ns/web-1".into();

    type Case<'a> = (&'a str, Facts<'a>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "no record",
            operator_facts(certname, None, None, 1, &iid, &challenge, false),
            "CSRUnknownCertname",
        ),
        (
            "the node is being deleted",
            operator_facts(certname, Some(&live), None, 1, &iid, &challenge, true),
            "CSRNodeDeleting",
        ),
        (
            "the record says deleting (Policy mode)",
            policy_facts(certname, Some(&deleting_record), None),
            "CSRNodeDeleting",
        ),
        (
            "the record says fencing (Policy mode)",
            policy_facts(certname, Some(&fencing), None),
            "CSRIncarnationFencing",
        ),
        (
            "an old incarnation's record",
            operator_facts(certname, Some(&live), None, 2, &iid, &challenge, false),
            "CSROldIncarnation",
        ),
        (
            "another key claimed the incarnation",
            policy_facts(certname, Some(&live), Some(&claim)),
            "CSRAlreadySigned",
        ),
        (
            "the same key, already confirmed (replay after a clean)",
            policy_facts(certname, Some(&live), Some(&same_key_confirmed)),
            "CSRAlreadySigned",
        ),
        (
            "a record another node owns",
            operator_facts(certname, Some(&foreign), None, 1, &iid, &challenge, false),
            "CertnameConflict",
        ),
    ];
    for (what, facts, reason) in cases {
        match decide(&facts, &claims) {
            Decision::Refuse(r) => assert_eq!(r.reason(), reason, "{what}: {r}"),
            Decision::Sign => panic!("{what}: signed"),
        }
    }
    let mut conflicted = policy_facts(certname, Some(&live), None);
    conflicted.conflict = Some("other-ns/web-1");
    assert!(matches!(
        decide(&conflicted, &claims),
        Decision::Refuse(Refusal::CertnameConflict(_))
    ));
    // The same key, claimed but never confirmed: a signer that stopped half way goes on.
    assert_eq!(
        decide(
            &policy_facts(certname, Some(&live), Some(&same_key)),
            &claims
        ),
        Decision::Sign
    );
}

#[test]
fn a_challenge_that_does_not_hash_to_the_record_is_refused_in_policy_mode() {
    let r = record("c-1", 1, RecordState::Live);
    let mut claims = csr("c-1", 1, 1);
    claims.challenge = Some(key().challenge(UID, 2));
    assert!(matches!(
        decide(&policy_facts("c-1", Some(&r), None), &claims),
        Decision::Refuse(Refusal::Csr(crate::csr::Refusal::WrongChallenge))
    ));
}

#[test]
fn conflicts_and_unknown_certnames_keep_the_waiting_csr() {
    assert!(!Refusal::CertnameConflict("x".into()).removes_csr());
    assert!(!Refusal::NoRecord.removes_csr());
    assert!(Refusal::OtherKeySigned.removes_csr());
    assert!(Refusal::Csr(crate::csr::Refusal::WrongChallenge).removes_csr());
}

#[test]
fn a_claim_found_for_another_key_or_incarnation_stops_signing() {
    let live = record("c-1", 1, RecordState::Live);
    let ours = claim_for(&live, &csr("c-1", 1, 1), Signer::Operator, Utc::now());
    let other_key = claim_for(&live, &csr("c-1", 1, 2), Signer::Operator, Utc::now());
    let older = claim_for(
        &record("c-1", 0, RecordState::Live),
        &csr("c-1", 1, 1),
        Signer::Operator,
        Utc::now(),
    );
    assert_eq!(after_claim(&Claim::Created, &ours), Ok(()));
    // A signer that stopped between claiming and asking the CA may go on.
    assert_eq!(after_claim(&Claim::Existing(ours.clone()), &ours), Ok(()));
    // Once the CA was asked (or autosign said yes) the answer may be a certificate
    // cleaned since: the same key is not signed again.
    let asked = SignatureRecord {
        sign_requested: true,
        ..ours.clone()
    };
    assert_eq!(
        after_claim(&Claim::Existing(asked), &ours),
        Err(Refusal::AlreadySigned { serial: None })
    );
    let by_autosign = claim_for(&live, &csr("c-1", 1, 1), Signer::Autosign, Utc::now());
    assert!(by_autosign.sign_requested);
    assert_eq!(
        after_claim(&Claim::Existing(by_autosign), &ours),
        Err(Refusal::AlreadySigned { serial: None })
    );
    assert_eq!(
        after_claim(&Claim::Existing(other_key), &ours),
        Err(Refusal::OtherKeySigned)
    );
    assert_eq!(
        after_claim(&Claim::Existing(older), &ours),
        Err(Refusal::StaleSignature(0))
    );
    assert!(matches!(
        after_claim(&Claim::Existing(confirmed(ours.clone())), &ours),
        Err(Refusal::AlreadySigned { .. })
    ));
}

// ---- the property: one key per incarnation, none once fencing or deletion began ----

/// One step of the world around one node.
#[derive(Clone, Debug)]
enum Step {
    /// Someone submits a CSR with key `key` for the certname of incarnation
    /// `current - back` (the CA refuses a second CSR for a certname).
    Submit { key: u8, back: i64 },
    /// The controller's signing pass (Operator mode signs; both modes confirm).
    OperatorPass,
    /// The controller claims but stops before signing (crash).
    OperatorCrashAfterClaim,
    /// The certificate or CSR of incarnation `current - back` is cleaned at the CA by hand.
    Clean { back: i64 },
    /// The CA is restored from an old backup: everything signed is gone.
    RestoreCa,
    /// Fencing of the current incarnation starts (record marked first).
    StartFence,
    /// Fencing completes: revoked, record (and signature) removed, successor recorded.
    CompleteFence,
    /// Deletion starts (record marked first).
    StartDelete,
    /// Deletion completes.
    CompleteDelete,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..4, 0i64..3).prop_map(|(key, back)| Step::Submit { key, back }),
        4 => Just(Step::OperatorPass),
        1 => Just(Step::OperatorCrashAfterClaim),
        2 => (0i64..3).prop_map(|back| Step::Clean { back }),
        1 => Just(Step::RestoreCa),
        1 => Just(Step::StartFence),
        1 => Just(Step::CompleteFence),
        1 => Just(Step::StartDelete),
        1 => Just(Step::CompleteDelete),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CaEntry {
    Requested(u8),
    Signed(u8),
}

/// The node, its records, signature records and the CA, as the signers see them.
struct World {
    policy: bool,
    fixed_certname: bool,
    incarnation: i64,
    deleting: bool,
    gone: bool,
    records: BTreeMap<String, NodeRecord>,
    signatures: BTreeMap<String, SignatureRecord>,
    ca: BTreeMap<String, CaEntry>,
    fence_started: BTreeSet<i64>,
    delete_started: bool,
    /// (incarnation, key) of every signature the CA issued, in order.
    signed: Vec<(i64, u8)>,
}

impl World {
    fn new(policy: bool, fixed_certname: bool) -> Self {
        let mut w = Self {
            policy,
            fixed_certname,
            incarnation: 1,
            deleting: false,
            gone: false,
            records: BTreeMap::new(),
            signatures: BTreeMap::new(),
            ca: BTreeMap::new(),
            fence_started: BTreeSet::new(),
            delete_started: false,
            signed: Vec::new(),
        };
        let c = w.certname(1);
        w.records
            .insert(c.clone(), record(&c, 1, RecordState::Live));
        w
    }

    fn certname(&self, incarnation: i64) -> String {
        crate::identity::certname(
            UID,
            incarnation,
            self.fixed_certname.then_some("web.example.com"),
        )
    }

    fn key_no(claims: &CsrClaims) -> u8 {
        u8::from_str_radix(&claims.public_key_sha256[62..], 16).unwrap()
    }

    /// Claim create-once, then sign: what both signers do after [`decide`] said Sign.
    fn claim_and_sign(&mut self, certname: &str, claims: &CsrClaims, signer: Signer, sign: bool) {
        let Some(record) = self.records.get(certname).cloned() else {
            return;
        };
        let ours = claim_for(&record, claims, signer, Utc::now());
        let claim = match self.signatures.get(certname) {
            Some(existing) => Claim::Existing(existing.clone()),
            None => {
                self.signatures.insert(certname.to_owned(), ours.clone());
                Claim::Created
            }
        };
        if after_claim(&claim, &ours).is_err() || !sign {
            return;
        }
        let key = Self::key_no(claims);
        self.ca.insert(certname.to_owned(), CaEntry::Signed(key));
        self.signed.push((record.owner.incarnation, key));
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::Submit { key, back } => {
                let inc = (self.incarnation - back).max(1);
                let certname = self.certname(inc);
                if self.ca.contains_key(&certname) {
                    return;
                }
                self.ca.insert(certname.clone(), CaEntry::Requested(*key));
                if self.policy {
                    let claims = csr(&certname, inc, *key);
                    let facts = policy_facts(
                        &certname,
                        self.records.get(&certname),
                        self.signatures.get(&certname),
                    );
                    if decide(&facts, &claims) == Decision::Sign {
                        self.claim_and_sign(&certname, &claims, Signer::Autosign, true);
                    }
                }
            }
            Step::OperatorPass | Step::OperatorCrashAfterClaim => {
                if self.gone {
                    return;
                }
                let inc = self.incarnation;
                let certname = self.certname(inc);
                if let Some(CaEntry::Requested(key_no)) = self.ca.get(&certname).copied() {
                    // The controller verifies with the same facts as autosign, plus the node's.
                    let claims = csr(&certname, inc, key_no);
                    let challenge = key().challenge(UID, inc);
                    let iid = instance(inc);
                    let facts = operator_facts(
                        &certname,
                        self.records.get(&certname),
                        self.signatures.get(&certname),
                        inc,
                        &iid,
                        &challenge,
                        self.deleting,
                    );
                    match decide(&facts, &claims) {
                        Decision::Sign if !self.policy => {
                            let sign = matches!(step, Step::OperatorPass);
                            self.claim_and_sign(&certname, &claims, Signer::Operator, sign);
                        }
                        Decision::Sign => {}
                        Decision::Refuse(r) => {
                            if r.removes_csr() {
                                self.ca.remove(&certname);
                            }
                        }
                    }
                }
                // Confirm what was signed for the claimed key.
                if let (Some(CaEntry::Signed(k)), Some(sig)) = (
                    self.ca.get(&certname).copied(),
                    self.signatures.get_mut(&certname),
                ) {
                    if sig.public_key_sha256 == format!("{k:064x}") {
                        sig.serial = Some("1".into());
                        sig.fingerprint = Some(format!("FP{k}"));
                    }
                }
            }
            Step::Clean { back } => {
                let certname = self.certname((self.incarnation - back).max(1));
                self.ca.remove(&certname);
            }
            Step::RestoreCa => self.ca.clear(),
            Step::StartFence => {
                if self.gone || self.deleting {
                    return;
                }
                let certname = self.certname(self.incarnation);
                if let Some(r) = self.records.get_mut(&certname) {
                    r.state = RecordState::Fencing;
                }
                self.fence_started.insert(self.incarnation);
            }
            Step::CompleteFence => {
                if self.gone || self.deleting || !self.fence_started.contains(&self.incarnation) {
                    return;
                }
                let certname = self.certname(self.incarnation);
                self.ca.remove(&certname);
                self.records.remove(&certname);
                self.signatures.remove(&certname);
                self.incarnation += 1;
                let next = self.certname(self.incarnation);
                self.records.insert(
                    next.clone(),
                    record(&next, self.incarnation, RecordState::Live),
                );
            }
            Step::StartDelete => {
                if self.gone {
                    return;
                }
                self.deleting = true;
                self.delete_started = true;
                for r in self.records.values_mut() {
                    r.state = RecordState::Deleting;
                }
            }
            Step::CompleteDelete => {
                if !self.deleting {
                    return;
                }
                let certnames: Vec<String> =
                    (1..=self.incarnation).map(|i| self.certname(i)).collect();
                for certname in certnames {
                    self.ca.remove(&certname);
                    self.records.remove(&certname);
                    self.signatures.remove(&certname);
                }
                self.gone = true;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn at_most_one_key_is_signed_per_incarnation_and_none_after_fencing_or_deletion_began(
        policy in any::<bool>(),
        fixed_certname in any::<bool>(),
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let mut world = World::new(policy, fixed_certname);
        for (n, step) in steps.iter().enumerate() {
            let before = world.signed.len();
            let (fencing, deleting) = (world.fence_started.clone(), world.delete_started);
            world.apply(step);
            for (inc, key) in &world.signed[before..] {
                prop_assert!(!deleting, "step {n} {step:?}: signed {key} for {inc} during deletion");
                prop_assert!(
                    !fencing.contains(inc),
                    "step {n} {step:?}: signed {key} for incarnation {inc} while it was fenced"
                );
            }
            let mut keys: BTreeMap<i64, BTreeSet<u8>> = BTreeMap::new();
            for (inc, key) in &world.signed {
                keys.entry(*inc).or_default().insert(*key);
            }
            for (inc, keys) in keys {
                prop_assert!(keys.len() <= 1, "step {n} {step:?}: incarnation {inc} signed keys {keys:?}");
            }
        }
    }
}

#[test]
fn the_real_agent_is_signed_in_both_modes_when_nothing_hostile_happens() {
    for policy in [false, true] {
        let mut world = World::new(policy, false);
        world.apply(&Step::Submit { key: 1, back: 0 });
        world.apply(&Step::OperatorPass);
        assert_eq!(world.signed, vec![(1, 1)], "policy={policy}");
        assert!(world.signatures[&world.certname(1)].is_confirmed());
    }
}

#[test]
fn a_refused_csr_for_our_certname_is_removed_by_the_controller_in_both_modes() {
    for policy in [false, true] {
        let mut world = World::new(policy, false);
        let certname = world.certname(1);
        let live = record(&certname, 1, RecordState::Live);
        let other = claim_for(&live, &csr(&certname, 1, 3), Signer::Operator, Utc::now());
        world.signatures.insert(certname.clone(), other);
        world.apply(&Step::Submit { key: 2, back: 0 });
        world.apply(&Step::OperatorPass);
        assert!(world.signed.is_empty(), "policy={policy}");
        assert!(
            !world.ca.contains_key(&certname),
            "policy={policy}: removed"
        );
    }
}

#[test]
fn an_unasked_claim_for_an_instance_the_incarnation_no_longer_runs_gives_way() {
    // Every trace of incarnation 1's launch was lost and it was launched again as another
    // instance: the claim a pass made for the old instance's CSR, never asked of the CA,
    // must not lock the new agent out (simulation seed 218482).
    let relaunched = NodeRecord {
        instance_id: Some("i-0000000000000000f".into()),
        ..record("c-1", 1, RecordState::Live)
    };
    let ours = claim_for(&relaunched, &csr("c-1", 1, 2), Signer::Operator, Utc::now());
    let old_instance = claim_for(
        &record("c-1", 1, RecordState::Live),
        &csr("c-1", 1, 1),
        Signer::Operator,
        Utc::now(),
    );
    assert_eq!(
        after_claim(&Claim::Existing(old_instance.clone()), &ours),
        Ok(())
    );
    // Asked of the CA, or autosign's (its claim is the request): spent, whatever instance.
    let asked = SignatureRecord {
        sign_requested: true,
        ..old_instance.clone()
    };
    assert_eq!(
        after_claim(&Claim::Existing(asked), &ours),
        Err(Refusal::OtherKeySigned)
    );
    let confirmed_old = confirmed(old_instance.clone());
    assert_eq!(
        after_claim(&Claim::Existing(confirmed_old), &ours),
        Err(Refusal::OtherKeySigned)
    );
    // For the instance it names, the first key claimed stays the only one (a replay of
    // the current instance's CSR with another key is refused), and a claim written before
    // instance ids were kept gives way to nothing.
    let same_instance = claim_for(&relaunched, &csr("c-1", 1, 3), Signer::Operator, Utc::now());
    assert_eq!(
        after_claim(&Claim::Existing(same_instance), &ours),
        Err(Refusal::OtherKeySigned)
    );
    let unknown_instance = SignatureRecord {
        instance_id: None,
        ..old_instance
    };
    assert_eq!(
        after_claim(&Claim::Existing(unknown_instance), &ours),
        Err(Refusal::OtherKeySigned)
    );
}
