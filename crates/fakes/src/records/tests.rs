use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::TimeZone;
use serde_json::json;

use super::client::{META_CONTENT_SHA256, META_OWNER_NODE_UID};
use super::*;
use crate::{Call, Fate, FaultKind, System};
use puppet_conductor_records::{RecordOwner, RecordState, Signer};

const UID_A: &str = "0b0c9a52-5d7e-4b55-9c4e-aaaaaaaaaaaa";
const UID_B: &str = "0b0c9a52-5d7e-4b55-9c4e-bbbbbbbbbbbb";

fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn record(certname: &str, node_uid: &str) -> NodeRecord {
    NodeRecord {
        certname: certname.into(),
        classes: vec!["role::web".into()],
        environment: "production".into(),
        parameters: BTreeMap::from([("tier".into(), json!("frontend"))]),
        challenge_sha256: sha256_hex(certname.as_bytes()),
        instance_id: Some("i-0123456789abcdef0".into()),
        owner: RecordOwner {
            operator: "puppet-conductor".into(),
            master: "puppet/main".into(),
            node: format!("puppet/{certname}"),
            node_uid: node_uid.into(),
            incarnation: 1,
        },
        state: RecordState::Live,
    }
}

fn claim(certname: &str, key: &str) -> SignatureRecord {
    SignatureRecord {
        certname: certname.into(),
        node_uid: UID_A.into(),
        incarnation: 1,
        public_key_sha256: sha256_hex(key.as_bytes()),
        claimed_at: epoch(),
        signer: Signer::Operator,
        serial: None,
        fingerprint: None,
        sign_requested: false,
        instance_id: None,
    }
}

/// A fake with its faults, under prefix `p/`, times from [`epoch`].
fn fake() -> (Arc<Faults>, FakeRecords) {
    let faults = Arc::new(Faults::default());
    let records = FakeRecords::new(faults.clone(), "p").with_epoch(epoch());
    (faults, records)
}

fn written(outcome: WriteOutcome) -> ListedRecord {
    match outcome {
        WriteOutcome::Written(listed) => listed,
        WriteOutcome::Unchanged => panic!("expected a write"),
    }
}

/// What [`Hook`] runs, and before which operation.
type Pending = Option<(&'static str, Box<dyn FnOnce() + Send>)>;

/// Runs a closure on the bucket just before the first call of `operation` is decided:
/// another writer acting between two requests of one call.
#[derive(Default)]
struct Hook {
    pending: Mutex<Pending>,
}

impl Hook {
    fn before(&self, operation: &'static str, action: impl FnOnce() + Send + 'static) {
        *self.pending.lock().unwrap() = Some((operation, Box::new(action)));
    }
}

#[async_trait::async_trait]
impl Gate for Hook {
    async fn admit(&self, call: &Call) -> Fate {
        let mut pending = self.pending.lock().unwrap();
        if pending
            .as_ref()
            .is_some_and(|(op, _)| *op == call.operation)
        {
            if let Some((_, action)) = pending.take() {
                action();
            }
        }
        Fate::Answer
    }
}

// ---------------------------------------------------------------- records

#[tokio::test(start_paused = true)]
async fn a_new_record_is_created_with_the_real_layout_and_metadata() {
    let (faults, store) = fake();
    let rec = record("web-1", UID_A);
    tokio::time::advance(Duration::from_millis(2500)).await;
    let listed = written(store.put_if_changed(&rec, None).await.unwrap());
    assert_eq!(listed.key, "p/records/web-1.json");
    assert_eq!(
        listed.last_modified, None,
        "S3 returns no LastModified on PUT"
    );
    assert_eq!(listed.size, rec.to_bytes().unwrap().len() as i64);
    let etag = listed.etag.clone().unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34,
        "{etag}"
    );

    assert_eq!(
        store.objects().keys().collect::<Vec<_>>(),
        ["p/records/web-1.json"]
    );
    assert_eq!(
        store.objects()["p/records/web-1.json"],
        rec.to_bytes().unwrap()
    );
    assert_eq!(store.record("web-1"), Some(rec.clone()));
    let meta = store.with_bucket(|b| b.objects["p/records/web-1.json"].metadata.clone());
    assert_eq!(meta[META_CONTENT_SHA256], rec.content_hash().unwrap());
    assert_eq!(meta[META_OWNER_NODE_UID], UID_A);
    // Creation was one conditional PUT.
    assert_eq!(faults.count(System::S3, "PutObject"), 1);
    assert_eq!(store.calls().total(), 1);

    assert_eq!(store.get("web-1").await.unwrap(), Some(rec));
    assert_eq!(store.get("web-2").await.unwrap(), None);
    let listing = store.list().await.unwrap();
    let seen = &listing.records["web-1"];
    assert_eq!(seen.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(seen.size, listed.size);
    // To the second, from the epoch and the tokio time since construction.
    assert_eq!(
        seen.last_modified,
        Some(epoch() + chrono::TimeDelta::seconds(2))
    );
}

#[tokio::test]
async fn equal_content_gives_equal_etags() {
    let (_, store) = fake();
    store.put_raw("p/x", b"same".to_vec());
    store.put_raw("p/y", b"same".to_vec());
    store.put_raw("p/z", b"other".to_vec());
    let etags = store.with_bucket(|b| {
        b.objects
            .values()
            .map(|o| o.etag.clone())
            .collect::<Vec<_>>()
    });
    assert_eq!(etags[0], etags[1]);
    assert_ne!(etags[0], etags[2]);
}

#[tokio::test]
async fn an_unchanged_record_costs_nothing_and_one_head_after_a_restart() {
    let (_, store) = fake();
    let rec = record("web-1", UID_A);
    store.put_if_changed(&rec, None).await.unwrap();
    let listing = store.list().await.unwrap();
    let before = store.calls();
    assert_eq!(
        store
            .put_if_changed(&rec, listing.records.get("web-1"))
            .await
            .unwrap(),
        WriteOutcome::Unchanged
    );
    assert_eq!(store.calls(), before, "the cache answers");

    let restarted = store.another_client();
    for pass in 0..2 {
        let listing = restarted.list().await.unwrap();
        assert_eq!(
            restarted
                .put_if_changed(&rec, listing.records.get("web-1"))
                .await
                .unwrap(),
            WriteOutcome::Unchanged,
            "pass {pass}"
        );
        let c = restarted.calls();
        assert_eq!((c.puts, c.heads, c.gets), (0, 1, 0), "pass {pass}: {c:?}");
    }
}

#[tokio::test]
async fn a_changed_record_is_replaced_with_one_conditional_put() {
    let (_, store) = fake();
    let mut rec = record("web-1", UID_A);
    let first = written(store.put_if_changed(&rec, None).await.unwrap());
    rec.classes.push("role::db".into());
    let listing = store.list().await.unwrap();
    let before = store.calls();
    let second = written(
        store
            .put_if_changed(&rec, listing.records.get("web-1"))
            .await
            .unwrap(),
    );
    assert_eq!(store.calls().puts - before.puts, 1);
    assert_eq!(store.calls().total() - before.total(), 1, "no HEAD: cached");
    assert_ne!(first.etag, second.etag);
    assert_eq!(store.record("web-1"), Some(rec));
}

#[tokio::test]
async fn a_stale_cached_etag_loses_with_412_and_observing_again_converges() {
    let (_, store) = fake();
    let v1 = record("web-1", UID_A);
    store.put_if_changed(&v1, None).await.unwrap();
    let stale = store.list().await.unwrap();

    let other = store.another_client();
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
    assert_eq!(store.record("web-1"), Some(v2));
    // The refusal cleared the cache entry; the next observation decides again.
    let listing = store.list().await.unwrap();
    written(
        store
            .put_if_changed(&v3, listing.records.get("web-1"))
            .await
            .unwrap(),
    );
    assert_eq!(store.record("web-1"), Some(v3));
}

#[tokio::test]
async fn a_stale_listing_without_a_cached_etag_heads_and_replaces_the_current_version() {
    // What S3Records does too: the HEAD reads the current ETag, so the If-Match holds.
    let (_, store) = fake();
    let v1 = record("web-1", UID_A);
    store.put_if_changed(&v1, None).await.unwrap();
    let stale = store.list().await.unwrap();
    let mut v2 = v1.clone();
    v2.environment = "staging".into();
    let other = store.another_client();
    let fresh = other.list().await.unwrap();
    other
        .put_if_changed(&v2, fresh.records.get("web-1"))
        .await
        .unwrap();

    let restarted = store.another_client();
    let mut v3 = v1.clone();
    v3.environment = "testing".into();
    written(
        restarted
            .put_if_changed(&v3, stale.records.get("web-1"))
            .await
            .unwrap(),
    );
    let c = restarted.calls();
    assert_eq!((c.heads, c.puts), (1, 1), "{c:?}");
    assert_eq!(store.record("web-1"), Some(v3));
}

#[tokio::test]
async fn replacing_a_record_deleted_meanwhile_answers_404_no_such_key() {
    let (_, store) = fake();
    let v1 = record("web-1", UID_A);
    store.put_if_changed(&v1, None).await.unwrap();
    let listing = store.list().await.unwrap();
    store.another_client().delete("web-1").await.unwrap();
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
    assert!(store.objects().is_empty());
}

#[tokio::test]
async fn creating_over_an_unlisted_record_loses_with_412() {
    let (_, store) = fake();
    store
        .put_if_changed(&record("web-1", UID_A), None)
        .await
        .unwrap();
    let err = store
        .put_if_changed(&record("web-1", UID_B), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RecordsError::PreconditionFailed { .. }),
        "{err:?}"
    );
    assert_eq!(store.record("web-1").unwrap().owner.node_uid, UID_A);
}

#[tokio::test]
async fn another_owners_record_is_a_conflict_naming_the_owner() {
    let (_, store) = fake();
    let ours = record("web-1", UID_A);
    store.put_if_changed(&ours, None).await.unwrap();
    let theirs = store.another_client();
    let listing = theirs.list().await.unwrap();
    let mut same_but_theirs = ours.clone();
    same_but_theirs.owner.node_uid = UID_B.into();
    let err = theirs
        .put_if_changed(&same_but_theirs, listing.records.get("web-1"))
        .await
        .unwrap_err();
    let RecordsError::Conflict { certname, owner } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(certname, "web-1");
    assert_eq!(owner.as_deref(), Some(&ours.owner));
    assert!(!err.is_retryable());
    let c = theirs.calls();
    // HEAD for the owner, GET for the conflict message, no PUT.
    assert_eq!((c.heads, c.gets, c.puts), (1, 1, 0), "{c:?}");
    assert_eq!(store.record("web-1"), Some(ours));
}

#[tokio::test]
async fn a_foreign_object_is_read_in_full_and_is_a_conflict_without_owner() {
    let (_, store) = fake();
    store.put_raw("p/records/web-1.json", b"classes:\n  - base\n".to_vec());
    let listing = store.list().await.unwrap();
    let err = store
        .put_if_changed(&record("web-1", UID_A), listing.records.get("web-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RecordsError::Conflict { owner: None, .. }),
        "{err:?}"
    );
    let c = store.calls();
    assert_eq!((c.heads, c.gets, c.puts), (1, 2, 0), "{c:?}");
    assert_eq!(
        store.get("web-1").await.unwrap_err().category(),
        "invalid_record"
    );
}

#[tokio::test]
async fn an_owner_uid_that_cannot_be_a_header_is_read_from_the_body() {
    let (_, store) = fake();
    let rec = record("web-1", "uid with spaces");
    store.put_if_changed(&rec, None).await.unwrap();
    let meta = store.with_bucket(|b| b.objects["p/records/web-1.json"].metadata.clone());
    assert!(!meta.contains_key(META_OWNER_NODE_UID));
    let restarted = store.another_client();
    let listing = restarted.list().await.unwrap();
    assert_eq!(
        restarted
            .put_if_changed(&rec, listing.records.get("web-1"))
            .await
            .unwrap(),
        WriteOutcome::Unchanged
    );
    let c = restarted.calls();
    assert_eq!((c.heads, c.gets), (1, 1), "{c:?}");
}

// ---------------------------------------------------------------- signatures, check-ins, delete

#[tokio::test]
async fn a_signature_is_claimed_once_and_later_claims_see_the_first() {
    let (_, store) = fake();
    let first = claim("web-1", "key-a");
    assert_eq!(store.claim_signature(&first).await.unwrap(), Claim::Created);
    let second = claim("web-1", "key-b");
    assert_eq!(
        store.claim_signature(&second).await.unwrap(),
        Claim::Existing(first.clone())
    );
    assert_eq!(store.signature("web-1"), Some(first.clone()));
    assert_eq!(
        store.get_signature("web-1").await.unwrap(),
        Some(first.clone())
    );

    let mut confirmed = first.clone();
    confirmed.serial = Some("7".into());
    confirmed.fingerprint = Some("AA:BB".into());
    store.put_signature(&confirmed).await.unwrap();
    assert_eq!(store.signature("web-1"), Some(confirmed));
    assert!(store.list().await.unwrap().signatures.contains("web-1"));

    store.delete_signature("web-1").await.unwrap();
    assert_eq!(store.get_signature("web-1").await.unwrap(), None);
    store.delete_signature("web-1").await.unwrap();
}

#[tokio::test]
async fn a_claim_whose_rival_is_deleted_before_it_is_read_is_a_precondition_failure() {
    let hook = Arc::new(Hook::default());
    let store = FakeRecords::new(hook.clone(), "p");
    store
        .claim_signature(&claim("web-1", "key-a"))
        .await
        .unwrap();
    let bucket = store.bucket.clone();
    hook.before("GetObject", move || {
        bucket
            .lock()
            .unwrap()
            .objects
            .remove("p/signatures/web-1.json");
    });
    let err = store
        .claim_signature(&claim("web-1", "key-b"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RecordsError::PreconditionFailed { key, .. } if key == "p/signatures/web-1.json"),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn check_ins_list_their_last_modified_and_keep_the_exact_time_in_the_body() {
    let (_, store) = fake();
    let at =
        Utc.with_ymd_and_hms(2029, 6, 1, 12, 0, 0).unwrap() + chrono::TimeDelta::milliseconds(345);
    tokio::time::advance(Duration::from_secs(90)).await;
    store.record_check_in("web-1", at).await.unwrap();
    store.record_check_in("web-9", at).await.unwrap();
    let listing = store.list().await.unwrap();
    assert_eq!(
        listing.check_ins.keys().collect::<Vec<_>>(),
        ["web-1", "web-9"]
    );
    assert_eq!(
        listing.check_ins["web-1"],
        epoch() + chrono::TimeDelta::seconds(90)
    );
    assert_eq!(
        store.objects()["p/checkins/web-1"],
        b"2029-06-01T12:00:00.345Z\n".to_vec()
    );
    assert_eq!(store.check_in("web-1"), Some(at));

    tokio::time::advance(Duration::from_secs(30)).await;
    store.record_check_in("web-1", at).await.unwrap();
    let later = store.list().await.unwrap();
    assert_eq!(
        later.check_ins["web-1"],
        epoch() + chrono::TimeDelta::seconds(120)
    );
}

#[tokio::test]
async fn delete_removes_record_check_in_and_signature_with_one_request_each() {
    let (faults, store) = fake();
    for name in ["web-1", "web-2"] {
        store
            .put_if_changed(&record(name, UID_A), None)
            .await
            .unwrap();
        store.record_check_in(name, epoch()).await.unwrap();
        store.claim_signature(&claim(name, "k")).await.unwrap();
    }
    store.delete("web-1").await.unwrap();
    assert_eq!(
        store.objects().keys().collect::<Vec<_>>(),
        [
            "p/checkins/web-2",
            "p/records/web-2.json",
            "p/signatures/web-2.json"
        ]
    );
    let deletes: Vec<String> = faults
        .log()
        .into_iter()
        .filter(|(c, _)| c.operation == "DeleteObject")
        .map(|(c, _)| c.target)
        .collect();
    assert_eq!(
        deletes,
        [
            "p/records/web-1.json",
            "p/checkins/web-1",
            "p/signatures/web-1.json"
        ]
    );
    // Absent is success.
    store.delete("web-1").await.unwrap();
    store.delete("never-existed").await.unwrap();
}

#[tokio::test]
async fn a_fault_between_the_deletes_leaves_the_rest_for_the_retry() {
    let (faults, store) = fake();
    store
        .put_if_changed(&record("web-1", UID_A), None)
        .await
        .unwrap();
    store.record_check_in("web-1", epoch()).await.unwrap();
    store.claim_signature(&claim("web-1", "k")).await.unwrap();
    faults.next(System::S3, Some("DeleteObject"), Fate::Answer);
    faults.next(
        System::S3,
        Some("DeleteObject"),
        Fate::Fail(FaultKind::Unavailable),
    );
    let err = store.delete("web-1").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        store.objects().keys().collect::<Vec<_>>(),
        ["p/checkins/web-1", "p/signatures/web-1.json"]
    );
    store.delete("web-1").await.unwrap();
    assert!(store.objects().is_empty());
}

// ---------------------------------------------------------------- listing

#[tokio::test]
async fn the_listing_pages_through_the_prefix_in_key_order() {
    let faults = Arc::new(Faults::default());
    let store = FakeRecords::new(faults.clone(), "p").with_page_size(2);
    for i in 0..5 {
        store
            .put_if_changed(&record(&format!("node-{i}"), UID_A), None)
            .await
            .unwrap();
    }
    store.record_check_in("node-0", epoch()).await.unwrap();
    store.record_check_in("node-1", epoch()).await.unwrap();
    store.claim_signature(&claim("node-3", "k")).await.unwrap();
    // Outside the prefix, or not a valid name under it: not ours.
    store.put_raw("other/records/node-9.json", b"{}".to_vec());
    store.put_raw("p/records/Upper.json", b"{}".to_vec());
    store.put_raw("p/notes.txt", b"x".to_vec());

    let listing = store.list().await.unwrap();
    assert_eq!(listing.records.len(), 5);
    assert_eq!(listing.check_ins.len(), 2);
    assert_eq!(listing.signatures.iter().collect::<Vec<_>>(), ["node-3"]);
    // 10 keys under p/, two per page.
    assert_eq!(store.pages_served(), 5);
    let pages: Vec<String> = faults
        .log()
        .into_iter()
        .filter(|(c, _)| c.operation == "ListObjectsV2")
        .map(|(c, _)| c.target)
        .collect();
    assert_eq!(pages, vec!["p/".to_owned(); 5]);

    let exact = FakeRecords::new(Arc::new(Faults::default()), "q").with_page_size(2);
    for i in 0..4 {
        exact.put_raw(&format!("q/checkins/n-{i}"), b"t".to_vec());
    }
    exact.list().await.unwrap();
    assert_eq!(exact.pages_served(), 2, "a full last page ends the listing");
    let empty = FakeRecords::default();
    assert_eq!(empty.list().await.unwrap(), RecordListing::default());
    assert_eq!(empty.pages_served(), 1);
}

#[tokio::test]
async fn a_page_failing_fails_the_listing() {
    let (faults, store) = fake();
    let store = store.with_page_size(1);
    store.put_raw("p/checkins/a", b"t".to_vec());
    store.put_raw("p/checkins/b", b"t".to_vec());
    faults.next(System::S3, Some("ListObjectsV2"), Fate::Answer);
    faults.next(
        System::S3,
        Some("ListObjectsV2"),
        Fate::Fail(FaultKind::Throttled),
    );
    let err = store.list().await.unwrap_err();
    assert_eq!(err.category(), "throttled");
    assert_eq!(store.pages_served(), 2);
}

#[tokio::test]
async fn the_listing_forgets_cached_versions_that_are_gone() {
    let (_, store) = fake();
    store
        .put_if_changed(&record("web-1", UID_A), None)
        .await
        .unwrap();
    assert!(store.known().contains_key("p/records/web-1.json"));
    store.delete_raw("p/records/web-1.json");
    store.list().await.unwrap();
    assert!(store.known().is_empty());
}

// ---------------------------------------------------------------- fates

#[tokio::test]
async fn every_fault_is_the_error_the_real_client_returns() {
    // (fault, status, code, category, retryable) for a request with a body.
    let cases = [
        (
            FaultKind::Unavailable,
            503,
            "ServiceUnavailable",
            "server_error",
            true,
        ),
        (FaultKind::Throttled, 503, "SlowDown", "throttled", true),
        (FaultKind::Denied, 403, "AccessDenied", "forbidden", false),
    ];
    for (kind, status, code, category, retryable) in cases {
        let (faults, store) = fake();
        faults.next(System::S3, Some("PutObject"), Fate::Fail(kind));
        let err = store
            .put_if_changed(&record("web-1", UID_A), None)
            .await
            .unwrap_err();
        match &err {
            RecordsError::Service {
                operation: "PutObject",
                status: s,
                code: c,
                ..
            } => assert_eq!((*s, c.as_str()), (status, code), "{kind:?}"),
            other => panic!("{kind:?}: {other:?}"),
        }
        assert_eq!(err.category(), category, "{kind:?}");
        assert_eq!(err.is_retryable(), retryable, "{kind:?}");
        assert!(store.objects().is_empty(), "{kind:?}: nothing applied");
    }

    let (faults, store) = fake();
    faults.next(
        System::S3,
        Some("GetObject"),
        Fate::Fail(FaultKind::Timeout),
    );
    let err = store.get("web-1").await.unwrap_err();
    assert!(
        matches!(err, RecordsError::Timeout { operation: "GetObject", timeout } if timeout == DEFAULT_CALL_TIMEOUT),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn head_faults_carry_no_error_code() {
    let (faults, store) = fake();
    store
        .put_if_changed(&record("web-1", UID_A), None)
        .await
        .unwrap();
    let listing = store.list().await.unwrap();
    let restarted = store.another_client();
    for (kind, status, category) in [
        (FaultKind::Throttled, 503, "server_error"),
        (FaultKind::Denied, 403, "forbidden"),
    ] {
        faults.next(System::S3, Some("HeadObject"), Fate::Fail(kind));
        let err = restarted
            .put_if_changed(&record("web-1", UID_A), listing.records.get("web-1"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RecordsError::Service { operation: "HeadObject", status: s, code, .. } if *s == status && code.is_empty()),
            "{err:?}"
        );
        assert_eq!(err.category(), category);
    }
}

#[tokio::test]
async fn a_lost_create_is_applied_and_its_retry_loses_the_race_with_itself() {
    let (faults, store) = fake();
    let rec = record("web-1", UID_A);
    faults.next(System::S3, Some("PutObject"), Fate::Lost);
    let err = store.put_if_changed(&rec, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            RecordsError::Timeout {
                operation: "PutObject",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.record("web-1"), Some(rec.clone()), "applied");
    assert!(store.known().is_empty(), "the client never saw the answer");
    // Retrying blindly: the object is there now.
    let err = store.put_if_changed(&rec, None).await.unwrap_err();
    assert!(
        matches!(err, RecordsError::PreconditionFailed { .. }),
        "{err:?}"
    );
    // Observing again: it is ours and current.
    let listing = store.list().await.unwrap();
    assert_eq!(
        store
            .put_if_changed(&rec, listing.records.get("web-1"))
            .await
            .unwrap(),
        WriteOutcome::Unchanged
    );
}

#[tokio::test]
async fn a_lost_delete_is_applied() {
    let (faults, store) = fake();
    store
        .put_if_changed(&record("web-1", UID_A), None)
        .await
        .unwrap();
    faults.next(System::S3, Some("DeleteObject"), Fate::Lost);
    let err = store.delete("web-1").await.unwrap_err();
    assert_eq!(err.category(), "timeout");
    assert!(store.objects().is_empty());
    assert!(
        store.known().contains_key("p/records/web-1.json"),
        "as the real client: not forgotten"
    );
}

#[tokio::test]
async fn an_answered_call_passes_the_gate_once_per_request() {
    let (faults, store) = fake();
    store
        .put_if_changed(&record("web-1", UID_A), None)
        .await
        .unwrap();
    store.get("web-1").await.unwrap();
    let log = faults.log();
    assert_eq!(
        log.iter()
            .map(|(c, f)| (c.system, c.operation, c.target.as_str(), *f))
            .collect::<Vec<_>>(),
        [
            (
                System::S3,
                "PutObject",
                "p/records/web-1.json",
                Fate::Answer
            ),
            (
                System::S3,
                "GetObject",
                "p/records/web-1.json",
                Fate::Answer
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_can_take_the_call_timeout() {
    let faults = Arc::new(Faults::default());
    let store = FakeRecords::new(faults.clone(), "p")
        .with_call_timeout(Duration::from_secs(7))
        .with_timeout_wait(true);
    faults.next(System::S3, None, Fate::Fail(FaultKind::Timeout));
    let started = Instant::now();
    let err = store.get("web-1").await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(7));
    assert!(
        matches!(err, RecordsError::Timeout { timeout, .. } if timeout == Duration::from_secs(7))
    );
    faults.next(System::S3, None, Fate::Lost);
    store.get("web-1").await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(14));
}

#[tokio::test]
async fn invalid_certnames_send_nothing() {
    let (faults, store) = fake();
    for name in ["../escape", "a/b", "", "Upper"] {
        assert_eq!(
            store.get(name).await.unwrap_err().category(),
            "invalid_certname"
        );
        assert!(store.delete(name).await.is_err());
        assert!(store.record_check_in(name, epoch()).await.is_err());
        assert!(store
            .put_if_changed(&record(name, UID_A), None)
            .await
            .is_err());
        assert!(store.claim_signature(&claim(name, "k")).await.is_err());
    }
    assert!(faults.log().is_empty());
    assert_eq!(store.calls().total(), 0);
}

// ---------------------------------------------------------------- probe, ground truth

#[tokio::test]
async fn the_probe_makes_the_real_requests_and_reports_what_was_configured() {
    let (faults, store) = fake();
    assert_eq!(store.probe().await.unwrap(), Privacy::Private);
    assert_eq!(store.calls().probes, 5, "no record to sample");
    store
        .put_if_changed(&record("web-1", UID_A), None)
        .await
        .unwrap();
    assert_eq!(store.probe().await.unwrap(), Privacy::Private);
    assert_eq!(
        store.calls().probes,
        11,
        "HeadBucket, PAB, policy, ACL, list 1, object ACL"
    );
    assert_eq!(faults.count(System::S3, "GetObjectAcl"), 1);

    store.set_public(Some("the bucket ACL grants READ to AllUsers"));
    assert_eq!(
        store.probe().await.unwrap(),
        Privacy::Public {
            reason: "the bucket ACL grants READ to AllUsers".into()
        }
    );
    store.set_public(None);

    faults.next(
        System::S3,
        Some("GetBucketAcl"),
        Fate::Fail(FaultKind::Denied),
    );
    match store.probe().await.unwrap() {
        Privacy::Unknown { reason } => {
            assert!(
                reason.contains("bucket ACL: GetBucketAcl answered 403 AccessDenied"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    faults.next(
        System::S3,
        Some("GetPublicAccessBlock"),
        Fate::Fail(FaultKind::Denied),
    );
    assert_eq!(
        store.probe().await.unwrap(),
        Privacy::Private,
        "an unknown PAB only assumes none"
    );
    faults.next(
        System::S3,
        Some("GetBucketPolicyStatus"),
        Fate::Fail(FaultKind::Timeout),
    );
    assert_eq!(store.probe().await.unwrap_err().category(), "timeout");
    faults.next(
        System::S3,
        Some("HeadBucket"),
        Fate::Fail(FaultKind::Denied),
    );
    let err = store.probe().await.unwrap_err();
    assert_eq!(
        (err.http_status(), err.category()),
        (Some(403), "forbidden")
    );
}

#[tokio::test]
async fn lose_state_empties_the_bucket_and_ground_truth_reads_it() {
    let (_, store) = fake();
    store
        .put_if_changed(&record("web-1", UID_A), None)
        .await
        .unwrap();
    store.claim_signature(&claim("web-1", "k")).await.unwrap();
    store.record_check_in("web-1", epoch()).await.unwrap();
    assert!(store.record("web-1").is_some());
    assert!(store.signature("web-1").is_some());
    assert_eq!(store.check_in("web-1"), Some(epoch()));
    store.lose_state();
    assert!(store.objects().is_empty());
    assert_eq!(store.record("web-1"), None);
    assert_eq!(store.get("web-1").await.unwrap(), None);
    assert_eq!(store.list().await.unwrap(), RecordListing::default());
}

#[tokio::test]
async fn an_empty_prefix_lists_the_whole_bucket() {
    let store = FakeRecords::new(Arc::new(Faults::default()), "");
    store
        .put_if_changed(&record("web-1", UID_A), None)
        .await
        .unwrap();
    assert_eq!(
        store.objects().keys().collect::<Vec<_>>(),
        ["records/web-1.json"]
    );
    assert!(store.list().await.unwrap().records.contains_key("web-1"));
    assert_eq!(FakeRecords::default().layout().prefix(), "nodes/");
}
