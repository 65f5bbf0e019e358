//! Contract: one list of cases over `&dyn Records`, run against `S3Records` on moto and
//! against `FakeRecords`, so the fake cannot drift from what the real client does on S3.
//!
//! Each case gets a fresh bucket (moto) or a fresh fake, both under prefix `p/`. A case
//! also asserts how many requests of each kind the client made, since the fake mirrors
//! the real client's cache and HEAD/GET logic, not only its answers.
//!
//! Pagination: the real client always asks for 1,000 keys a page (not configurable), so
//! here the fake serves pages of 2 and the listing must come out the same; the moto side
//! pages only in `records_s3.rs` (1,200 records) and the fake's own unit tests.
//!
//! The moto side needs `tests/services/up.sh`; skipped without it unless
//! `PC_REQUIRE_SERVICES=1`.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use puppet_conductor::fakes::records::FakeRecords;
use puppet_conductor::fakes::Faults;
use puppet_conductor::records::{
    CallCounts, Claim, Privacy, Records, RecordsError, S3Records, SignatureRecord, Signer,
    WriteOutcome,
};

use crate::records_support::{record, TestBucket};

const UID_A: &str = "0b0c9a52-5d7e-4b55-9c4e-aaaaaaaaaaaa";
const UID_B: &str = "0b0c9a52-5d7e-4b55-9c4e-bbbbbbbbbbbb";
const PREFIX: &str = "p";
/// Keys per page the fake serves here.
const FAKE_PAGE_SIZE: usize = 2;

/// A records client whose requests can be counted.
trait Client: Records {
    fn counts(&self) -> CallCounts;
}

impl Client for S3Records {
    fn counts(&self) -> CallCounts {
        S3Records::counts(self)
    }
}

impl Client for FakeRecords {
    fn counts(&self) -> CallCounts {
        self.calls()
    }
}

/// What a case needs from a backend besides `Records`.
#[async_trait::async_trait]
trait Backend: Send + Sync {
    /// A new client of the bucket (empty cache and counters): another replica, or the
    /// operator after a restart.
    async fn client(&self) -> Box<dyn Client>;
    /// Writes `bytes` under `key` behind the clients' backs, without their metadata.
    async fn put_raw(&self, key: &str, bytes: &[u8]);
    /// Every key in the bucket, sorted.
    async fn keys(&self) -> Vec<String>;
    /// The stored bytes of `key`.
    async fn body(&self, key: &str) -> Vec<u8>;
    /// The store's clock now.
    fn now(&self) -> DateTime<Utc>;
    /// Keys per ListObjectsV2 page the client gets.
    fn page_size(&self) -> usize;
}

struct Moto(TestBucket);

#[async_trait::async_trait]
impl Backend for Moto {
    async fn client(&self) -> Box<dyn Client> {
        Box::new(self.0.records().await)
    }
    async fn put_raw(&self, key: &str, bytes: &[u8]) {
        self.0
            .raw
            .put_object()
            .bucket(&self.0.bucket)
            .key(key)
            .body(bytes.to_vec().into())
            .send()
            .await
            .unwrap();
    }
    async fn keys(&self) -> Vec<String> {
        let mut keys = self.0.keys().await;
        keys.sort();
        keys
    }
    async fn body(&self, key: &str) -> Vec<u8> {
        self.0.body(key).await
    }
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn page_size(&self) -> usize {
        1000
    }
}

impl Moto {
    async fn create() -> Option<Self> {
        TestBucket::create(PREFIX).await.map(Self)
    }
}

struct Fake(FakeRecords);

impl Fake {
    fn new() -> Self {
        Self(FakeRecords::new(Arc::new(Faults::default()), PREFIX).with_page_size(FAKE_PAGE_SIZE))
    }
}

#[async_trait::async_trait]
impl Backend for Fake {
    async fn client(&self) -> Box<dyn Client> {
        Box::new(self.0.another_client())
    }
    async fn put_raw(&self, key: &str, bytes: &[u8]) {
        self.0.put_raw(key, bytes.to_vec());
    }
    async fn keys(&self) -> Vec<String> {
        self.0.objects().into_keys().collect()
    }
    async fn body(&self, key: &str) -> Vec<u8> {
        self.0.objects().remove(key).unwrap_or_default()
    }
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
    fn page_size(&self) -> usize {
        FAKE_PAGE_SIZE
    }
}

/// Each case as a test on moto (`contract_records::moto::<case>`) and on the fake
/// (`contract_records::fake::<case>`).
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod moto {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(backend) = super::Moto::create().await {
                        super::$case(&backend).await;
                    }
                }
            )*
        }
        mod fake {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::Fake::new()).await;
                }
            )*
        }
    };
}

contract!(
    a_record_round_trips_with_its_listing,
    equal_content_gives_equal_etags,
    an_unchanged_record_sends_no_put_and_one_head_after_a_restart,
    a_changed_record_is_one_put,
    a_stale_etag_is_a_precondition_failure,
    creating_over_an_unlisted_record_is_a_precondition_failure,
    another_owners_record_is_a_conflict_and_untouched,
    a_foreign_object_is_a_conflict_and_an_invalid_record,
    replacing_a_record_deleted_meanwhile_answers_no_such_key,
    a_signature_is_claimed_once,
    delete_removes_record_check_in_and_signature,
    the_listing_shows_records_check_ins_and_signatures_across_pages,
    check_ins_are_listed_at_the_time_the_store_wrote_them,
    the_probe_finds_a_fresh_bucket_private,
    invalid_certnames_send_nothing,
);

fn claim(certname: &str, key: &str) -> SignatureRecord {
    SignatureRecord {
        certname: certname.into(),
        node_uid: UID_A.into(),
        incarnation: 1,
        public_key_sha256: puppet_conductor::records::sha256_hex(key.as_bytes()),
        claimed_at: DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
        signer: Signer::Operator,
        serial: None,
        fingerprint: None,
        sign_requested: false,
        instance_id: None,
    }
}

fn written(outcome: WriteOutcome) -> puppet_conductor::records::ListedRecord {
    match outcome {
        WriteOutcome::Written(listed) => listed,
        WriteOutcome::Unchanged => panic!("expected a write"),
    }
}

// ---------------------------------------------------------------- the cases

async fn a_record_round_trips_with_its_listing(b: &dyn Backend) {
    let store = b.client().await;
    let rec = record("web-1", UID_A);
    let listed = written(store.put_if_changed(&rec, None).await.unwrap());
    assert_eq!(listed.key, "p/records/web-1.json");
    assert_eq!(listed.last_modified, None);
    assert_eq!(b.keys().await, ["p/records/web-1.json"]);
    assert_eq!(b.body(&listed.key).await, rec.to_bytes().unwrap());
    assert_eq!(store.counts().puts, 1);

    assert_eq!(store.get("web-1").await.unwrap(), Some(rec));
    assert_eq!(store.get("web-2").await.unwrap(), None);
    let listing = store.list().await.unwrap();
    let seen = &listing.records["web-1"];
    assert_eq!(seen.key, listed.key);
    assert_eq!(seen.etag, listed.etag, "Written reports the listing's ETag");
    assert_eq!(seen.size, listed.size);
    assert!(seen.last_modified.is_some());
    assert!(listing.check_ins.is_empty() && listing.signatures.is_empty());
}

async fn equal_content_gives_equal_etags(b: &dyn Backend) {
    let store = b.client().await;
    let v1 = record("web-1", UID_A);
    let first = written(store.put_if_changed(&v1, None).await.unwrap());
    let mut v2 = v1.clone();
    v2.environment = "staging".into();
    let listing = store.list().await.unwrap();
    let second = written(
        store
            .put_if_changed(&v2, listing.records.get("web-1"))
            .await
            .unwrap(),
    );
    assert_ne!(first.etag, second.etag);
    let listing = store.list().await.unwrap();
    let third = written(
        store
            .put_if_changed(&v1, listing.records.get("web-1"))
            .await
            .unwrap(),
    );
    assert_eq!(first.etag, third.etag);
}

async fn an_unchanged_record_sends_no_put_and_one_head_after_a_restart(b: &dyn Backend) {
    let rec = record("web-1", UID_A);
    let store = b.client().await;
    store.put_if_changed(&rec, None).await.unwrap();
    let listing = store.list().await.unwrap();
    let before = store.counts();
    assert_eq!(
        store
            .put_if_changed(&rec, listing.records.get("web-1"))
            .await
            .unwrap(),
        WriteOutcome::Unchanged
    );
    assert_eq!(store.counts(), before, "steady state: no request at all");

    let restarted = b.client().await;
    for pass in 0..2 {
        let listing = restarted.list().await.unwrap();
        assert_eq!(
            restarted
                .put_if_changed(&rec, listing.records.get("web-1"))
                .await
                .unwrap(),
            WriteOutcome::Unchanged
        );
        let c = restarted.counts();
        assert_eq!((c.puts, c.heads, c.gets), (0, 1, 0), "pass {pass}: {c:?}");
    }
}

async fn a_changed_record_is_one_put(b: &dyn Backend) {
    let store = b.client().await;
    let mut rec = record("web-1", UID_A);
    store.put_if_changed(&rec, None).await.unwrap();
    rec.classes.push("role::db".into());
    let listing = store.list().await.unwrap();
    let before = store.counts();
    written(
        store
            .put_if_changed(&rec, listing.records.get("web-1"))
            .await
            .unwrap(),
    );
    let after = store.counts();
    assert_eq!(
        (after.puts - before.puts, after.total() - before.total()),
        (1, 1)
    );
    assert_eq!(store.get("web-1").await.unwrap(), Some(rec.clone()));
    let restarted = b.client().await;
    let listing = restarted.list().await.unwrap();
    assert_eq!(
        restarted
            .put_if_changed(&rec, listing.records.get("web-1"))
            .await
            .unwrap(),
        WriteOutcome::Unchanged
    );
}

async fn a_stale_etag_is_a_precondition_failure(b: &dyn Backend) {
    let store = b.client().await;
    let v1 = record("web-1", UID_A);
    store.put_if_changed(&v1, None).await.unwrap();
    let stale = store.list().await.unwrap();

    // Another replica replaces it after our listing.
    let other = b.client().await;
    let mut v2 = v1.clone();
    v2.environment = "staging".into();
    let fresh = other.list().await.unwrap();
    other
        .put_if_changed(&v2, fresh.records.get("web-1"))
        .await
        .unwrap();

    let mut v3 = v1.clone();
    v3.environment = "testing".into();
    let err = store
        .put_if_changed(&v3, stale.records.get("web-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RecordsError::PreconditionFailed { operation: "PutObject", key } if key == "p/records/web-1.json"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(store.get("web-1").await.unwrap(), Some(v2));
    let listing = store.list().await.unwrap();
    written(
        store
            .put_if_changed(&v3, listing.records.get("web-1"))
            .await
            .unwrap(),
    );
    assert_eq!(store.get("web-1").await.unwrap(), Some(v3));
}

async fn creating_over_an_unlisted_record_is_a_precondition_failure(b: &dyn Backend) {
    let store = b.client().await;
    let ours = record("web-1", UID_A);
    store.put_if_changed(&ours, None).await.unwrap();
    let err = store
        .put_if_changed(&record("web-1", UID_B), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RecordsError::PreconditionFailed { .. }),
        "{err:?}"
    );
    assert_eq!(
        b.body("p/records/web-1.json").await,
        ours.to_bytes().unwrap()
    );
}

async fn another_owners_record_is_a_conflict_and_untouched(b: &dyn Backend) {
    let ours = record("web-1", UID_A);
    b.client().await.put_if_changed(&ours, None).await.unwrap();
    let theirs = b.client().await;
    let listing = theirs.list().await.unwrap();
    let mut same_but_theirs = ours.clone();
    same_but_theirs.owner.node_uid = UID_B.into();
    let err = theirs
        .put_if_changed(&same_but_theirs, listing.records.get("web-1"))
        .await
        .unwrap_err();
    let RecordsError::Conflict { certname, owner } = &err else {
        panic!("expected a conflict, got {err:?}")
    };
    assert_eq!(certname, "web-1");
    assert_eq!(owner.as_deref(), Some(&ours.owner));
    assert!(!err.is_retryable());
    let c = theirs.counts();
    assert_eq!((c.heads, c.gets, c.puts), (1, 1, 0), "{c:?}");
    assert_eq!(
        b.body("p/records/web-1.json").await,
        ours.to_bytes().unwrap()
    );
}

async fn a_foreign_object_is_a_conflict_and_an_invalid_record(b: &dyn Backend) {
    b.put_raw("p/records/web-1.json", b"classes:\n  - base\n")
        .await;
    let store = b.client().await;
    let listing = store.list().await.unwrap();
    let err = store
        .put_if_changed(&record("web-1", UID_A), listing.records.get("web-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RecordsError::Conflict { owner: None, .. }),
        "{err:?}"
    );
    let c = store.counts();
    assert_eq!((c.heads, c.gets, c.puts), (1, 2, 0), "{c:?}");
    assert_eq!(
        store.get("web-1").await.unwrap_err().category(),
        "invalid_record"
    );
}

async fn replacing_a_record_deleted_meanwhile_answers_no_such_key(b: &dyn Backend) {
    // If-Match on an object that is gone: S3 (and moto) answer 404 NoSuchKey, which the
    // real client does not read as a lost race.
    let store = b.client().await;
    let v1 = record("web-1", UID_A);
    store.put_if_changed(&v1, None).await.unwrap();
    let listing = store.list().await.unwrap();
    b.client().await.delete("web-1").await.unwrap();
    let mut v2 = v1.clone();
    v2.environment = "staging".into();
    let err = store
        .put_if_changed(&v2, listing.records.get("web-1"))
        .await
        .unwrap_err();
    match &err {
        RecordsError::Service {
            operation: "PutObject",
            status: 404,
            code,
            ..
        } => assert_eq!(code, "NoSuchKey"),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.category(), "not_found");
    assert!(b.keys().await.is_empty());
}

async fn a_signature_is_claimed_once(b: &dyn Backend) {
    let store = b.client().await;
    let first = claim("web-1", "key-a");
    assert_eq!(store.claim_signature(&first).await.unwrap(), Claim::Created);
    // A rival (another replica, or autosign) claiming another key sees the first.
    let rival = b.client().await;
    assert_eq!(
        rival
            .claim_signature(&claim("web-1", "key-b"))
            .await
            .unwrap(),
        Claim::Existing(first.clone())
    );
    assert_eq!(
        rival.get_signature("web-1").await.unwrap(),
        Some(first.clone())
    );
    let mut confirmed = first.clone();
    confirmed.serial = Some("12".into());
    confirmed.fingerprint = Some("AA:BB".into());
    store.put_signature(&confirmed).await.unwrap();
    assert_eq!(store.get_signature("web-1").await.unwrap(), Some(confirmed));
    store.delete_signature("web-1").await.unwrap();
    assert_eq!(store.get_signature("web-1").await.unwrap(), None);
    store.delete_signature("web-1").await.unwrap();
    assert!(b.keys().await.is_empty());
}

async fn delete_removes_record_check_in_and_signature(b: &dyn Backend) {
    let store = b.client().await;
    for (name, uid) in [("web-1", UID_A), ("web-2", UID_B)] {
        store
            .put_if_changed(&record(name, uid), None)
            .await
            .unwrap();
        store.record_check_in(name, Utc::now()).await.unwrap();
        store.claim_signature(&claim(name, "k")).await.unwrap();
    }
    assert_eq!(b.keys().await.len(), 6);
    let before = store.counts();
    store.delete("web-1").await.unwrap();
    assert_eq!(
        store.counts().deletes - before.deletes,
        3,
        "one DeleteObject each"
    );
    assert_eq!(
        b.keys().await,
        [
            "p/checkins/web-2",
            "p/records/web-2.json",
            "p/signatures/web-2.json"
        ]
    );
    let listing = store.list().await.unwrap();
    assert!(!listing.records.contains_key("web-1"));
    assert!(!listing.check_ins.contains_key("web-1"));
    assert!(!listing.signatures.contains("web-1"));
    // Absent is success; a new record is a creation again.
    store.delete("web-1").await.unwrap();
    store.delete("never-existed").await.unwrap();
    written(
        store
            .put_if_changed(&record("web-1", UID_A), None)
            .await
            .unwrap(),
    );
}

async fn the_listing_shows_records_check_ins_and_signatures_across_pages(b: &dyn Backend) {
    let writer = b.client().await;
    let names: Vec<String> = (0..5).map(|i| format!("node-{i}")).collect();
    for name in &names {
        writer
            .put_if_changed(&record(name, &format!("uid-{name}")), None)
            .await
            .unwrap();
    }
    writer.record_check_in("node-0", Utc::now()).await.unwrap();
    writer.record_check_in("node-9", Utc::now()).await.unwrap();
    writer.claim_signature(&claim("node-3", "k")).await.unwrap();
    // Not ours: outside the prefix, or not a record, check-in or signature name.
    b.put_raw("other/records/node-0.json", b"{}").await;
    b.put_raw("p/records/Upper.json", b"{}").await;
    b.put_raw("p/notes.txt", b"x").await;
    let keys_under_prefix = b
        .keys()
        .await
        .iter()
        .filter(|k| k.starts_with("p/"))
        .count();
    assert_eq!(keys_under_prefix, 10);

    let store = b.client().await;
    let listing = store.list().await.unwrap();
    assert_eq!(listing.records.keys().cloned().collect::<Vec<_>>(), names);
    assert_eq!(
        listing.check_ins.keys().collect::<Vec<_>>(),
        ["node-0", "node-9"]
    );
    assert_eq!(listing.signatures.iter().collect::<Vec<_>>(), ["node-3"]);
    for listed in listing.records.values() {
        assert!(
            listed.etag.is_some() && listed.last_modified.is_some(),
            "{listed:?}"
        );
    }
    let pages = keys_under_prefix.div_ceil(b.page_size()) as u64;
    let c = store.counts();
    assert_eq!(
        (c.list_pages, c.total()),
        (pages, pages),
        "only the listing's pages"
    );
}

async fn check_ins_are_listed_at_the_time_the_store_wrote_them(b: &dyn Backend) {
    let store = b.client().await;
    let at = DateTime::from_timestamp_millis(1_900_000_000_123).unwrap();
    let written_at = b.now();
    store.record_check_in("web-1", at).await.unwrap();
    let listing = store.list().await.unwrap();
    let seen = listing.check_ins["web-1"];
    assert!(
        seen >= written_at - TimeDelta::seconds(1) && seen <= written_at + TimeDelta::seconds(5),
        "{seen} vs {written_at}"
    );
    assert_eq!(seen.timestamp_subsec_nanos(), 0, "S3 keeps seconds");
    assert_eq!(
        b.body("p/checkins/web-1").await,
        b"2030-03-17T17:46:40.123Z\n".to_vec(),
        "the body carries the exact time"
    );
}

async fn the_probe_finds_a_fresh_bucket_private(b: &dyn Backend) {
    let store = b.client().await;
    assert_eq!(store.probe().await.unwrap(), Privacy::Private);
    assert_eq!(store.counts().probes, 5, "no record to sample");
    store
        .put_if_changed(&record("web-1", UID_A), None)
        .await
        .unwrap();
    let before = store.counts().probes;
    assert_eq!(store.probe().await.unwrap(), Privacy::Private);
    // HeadBucket, PAB, policy status, bucket ACL, list 1, object ACL.
    assert_eq!(store.counts().probes - before, 6);
}

async fn invalid_certnames_send_nothing(b: &dyn Backend) {
    let store = b.client().await;
    for name in ["../escape", "a/b", "", "Upper"] {
        assert_eq!(
            store.get(name).await.unwrap_err().category(),
            "invalid_certname"
        );
        assert!(store.delete(name).await.is_err());
        assert!(store.record_check_in(name, Utc::now()).await.is_err());
        assert!(store
            .put_if_changed(&record(name, UID_A), None)
            .await
            .is_err());
        assert!(store.claim_signature(&claim(name, "k")).await.is_err());
        assert!(store.get_signature(name).await.is_err());
    }
    assert_eq!(store.counts().total(), 0);
}
