//! The S3 node records against moto: round trip, write-only-when-changed (PUTs
//! and HEADs counted), ownership conflicts, conditional-write races, deletion,
//! paginated listing and check-ins.
//!
//! Each test makes its own bucket; all skip without moto unless
//! `PC_REQUIRE_SERVICES=1`.

use chrono::{Duration as ChronoDuration, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use puppet_conductor::records::{Records, RecordsError, WriteOutcome};

use crate::records_support::{record, TestBucket};

const UID_A: &str = "0b0c9a52-5d7e-4b55-9c4e-aaaaaaaaaaaa";
const UID_B: &str = "0b0c9a52-5d7e-4b55-9c4e-bbbbbbbbbbbb";

#[tokio::test]
async fn records_write_get_round_trip() {
    let Some(b) = TestBucket::create("puppet").await else {
        return;
    };
    let store = b.records().await;
    let rec = record("web-1", UID_A);

    let WriteOutcome::Written(written) = store.put_if_changed(&rec, None).await.unwrap() else {
        panic!("a new record must be written")
    };
    assert_eq!(written.key, "puppet/records/web-1.json");
    assert_eq!(b.keys().await, vec!["puppet/records/web-1.json".to_owned()]);
    // Exactly the canonical bytes are stored.
    assert_eq!(b.body(&written.key).await, rec.to_bytes().unwrap());

    assert_eq!(store.get("web-1").await.unwrap(), Some(rec.clone()));
    assert_eq!(store.get("web-2").await.unwrap(), None);

    let listing = store.list().await.unwrap();
    let listed = &listing.records["web-1"];
    assert_eq!(listed.key, written.key);
    assert_eq!(
        listed.etag, written.etag,
        "Written reports the listing's ETag"
    );
    assert_eq!(listed.size, written.size);
    assert!(listed.last_modified.is_some());

    // Stored metadata: hash and owner; and no public grant on the object.
    let head = b
        .raw
        .head_object()
        .bucket(&b.bucket)
        .key(&written.key)
        .send()
        .await
        .unwrap();
    let meta = head.metadata().unwrap();
    assert_eq!(meta["content-sha256"], rec.content_hash().unwrap());
    assert_eq!(meta["owner-node-uid"], UID_A);
    assert_eq!(head.content_type(), Some("application/json"));
    let acl = b
        .raw
        .get_object_acl()
        .bucket(&b.bucket)
        .key(&written.key)
        .send()
        .await
        .unwrap();
    assert!(acl
        .grants()
        .iter()
        .all(|g| g.grantee().and_then(|g| g.uri()).is_none()));
}

#[tokio::test]
async fn records_unchanged_record_sends_no_put() {
    let Some(b) = TestBucket::create("p").await else {
        return;
    };
    let rec = record("web-1", UID_A);
    let store = b.records().await;
    store.put_if_changed(&rec, None).await.unwrap();

    // Same process, steady state: nothing but the listing page.
    let listing = store.list().await.unwrap();
    let before = store.counts();
    let outcome = store
        .put_if_changed(&rec, listing.records.get("web-1"))
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Unchanged);
    let after = store.counts();
    assert_eq!(after.puts - before.puts, 0, "PUTs");
    assert_eq!(
        after.total() - before.total(),
        0,
        "no call at all: {after:?}"
    );

    // After a restart: one HEAD fills the cache, then nothing again.
    let restarted = b.records().await;
    let listing = restarted.list().await.unwrap();
    let outcome = restarted
        .put_if_changed(&rec, listing.records.get("web-1"))
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Unchanged);
    let c = restarted.counts();
    assert_eq!((c.puts, c.heads, c.gets), (0, 1, 0), "{c:?}");
    let listing = restarted.list().await.unwrap();
    restarted
        .put_if_changed(&rec, listing.records.get("web-1"))
        .await
        .unwrap();
    let c = restarted.counts();
    assert_eq!((c.puts, c.heads, c.gets), (0, 1, 0), "{c:?}");
}

#[tokio::test]
async fn records_changed_classes_put_exactly_once() {
    let Some(b) = TestBucket::create("p").await else {
        return;
    };
    let store = b.records().await;
    let mut rec = record("web-1", UID_A);
    store.put_if_changed(&rec, None).await.unwrap();

    rec.classes.push("role::db".into());
    let listing = store.list().await.unwrap();
    let before = store.put_count();
    let outcome = store
        .put_if_changed(&rec, listing.records.get("web-1"))
        .await
        .unwrap();
    assert!(matches!(outcome, WriteOutcome::Written(_)), "{outcome:?}");
    assert_eq!(store.put_count() - before, 1);
    assert_eq!(store.get("web-1").await.unwrap(), Some(rec.clone()));

    // A fresh process sees it current.
    let restarted = b.records().await;
    let listing = restarted.list().await.unwrap();
    assert_eq!(
        restarted
            .put_if_changed(&rec, listing.records.get("web-1"))
            .await
            .unwrap(),
        WriteOutcome::Unchanged
    );
    assert_eq!(restarted.put_count(), 0);
}

#[tokio::test]
async fn records_other_owner_is_a_conflict_and_untouched() {
    let Some(b) = TestBucket::create("p").await else {
        return;
    };
    let ours = record("web-1", UID_A);
    b.records().await.put_if_changed(&ours, None).await.unwrap();
    let key = "p/records/web-1.json";
    let original = b.body(key).await;

    let mut theirs = record("web-1", UID_B);
    theirs.classes = vec!["role::other".into()];
    let store = b.records().await;
    let listing = store.list().await.unwrap();
    let err = store
        .put_if_changed(&theirs, listing.records.get("web-1"))
        .await
        .unwrap_err();
    let RecordsError::Conflict { certname, owner } = &err else {
        panic!("expected a conflict, got {err:?}")
    };
    assert_eq!(certname, "web-1");
    assert_eq!(owner.as_deref(), Some(&ours.owner));
    assert!(!err.is_retryable());
    assert_eq!(err.category(), "conflict");
    assert_eq!(store.put_count(), 0);
    assert_eq!(b.body(key).await, original, "untouched");

    // Same content as stored but another owner is still a conflict, not "unchanged".
    let mut same_but_theirs = ours.clone();
    same_but_theirs.owner.node_uid = UID_B.into();
    assert!(matches!(
        store
            .put_if_changed(&same_but_theirs, listing.records.get("web-1"))
            .await,
        Err(RecordsError::Conflict { .. })
    ));

    // A stale listing that missed the record: If-None-Match refuses, retryably.
    let err = store.put_if_changed(&theirs, None).await.unwrap_err();
    assert!(
        matches!(err, RecordsError::PreconditionFailed { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(b.body(key).await, original, "untouched");
}

#[tokio::test]
async fn records_foreign_object_is_a_conflict() {
    let Some(b) = TestBucket::create("p").await else {
        return;
    };
    // What the 2010 conductor wrote: YAML, no metadata.
    b.raw
        .put_object()
        .bucket(&b.bucket)
        .key("p/records/web-1.json")
        .body(b"classes:\n  - base\n".to_vec().into())
        .send()
        .await
        .unwrap();
    let store = b.records().await;
    let listing = store.list().await.unwrap();
    let err = store
        .put_if_changed(&record("web-1", UID_A), listing.records.get("web-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RecordsError::Conflict { owner: None, .. }),
        "{err:?}"
    );
    assert_eq!(store.put_count(), 0);
    let err = store.get("web-1").await.unwrap_err();
    assert_eq!(err.category(), "invalid_record");
}

#[tokio::test]
async fn records_concurrent_replacement_loses_with_412() {
    let Some(b) = TestBucket::create("p").await else {
        return;
    };
    let store = b.records().await;
    let v1 = record("web-1", UID_A);
    store.put_if_changed(&v1, None).await.unwrap();
    let listing = store.list().await.unwrap();

    // Another replica replaces it after our listing.
    let mut v2 = v1.clone();
    v2.environment = "staging".into();
    let other = b.records().await;
    let fresh = other.list().await.unwrap();
    other
        .put_if_changed(&v2, fresh.records.get("web-1"))
        .await
        .unwrap();

    // Our cached version matches our stale listing; If-Match must refuse.
    let mut v3 = v1.clone();
    v3.environment = "testing".into();
    let err = store
        .put_if_changed(&v3, listing.records.get("web-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RecordsError::PreconditionFailed { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(store.get("web-1").await.unwrap(), Some(v2));

    // Observing again converges.
    let listing = store.list().await.unwrap();
    assert!(matches!(
        store
            .put_if_changed(&v3, listing.records.get("web-1"))
            .await
            .unwrap(),
        WriteOutcome::Written(_)
    ));
    assert_eq!(store.get("web-1").await.unwrap(), Some(v3));
}

#[tokio::test]
async fn records_delete_is_idempotent_and_removes_the_check_in() {
    let Some(b) = TestBucket::create("p").await else {
        return;
    };
    let store = b.records().await;
    store
        .put_if_changed(&record("web-1", UID_A), None)
        .await
        .unwrap();
    store.record_check_in("web-1", Utc::now()).await.unwrap();
    // Another node's objects stay.
    store
        .put_if_changed(&record("web-2", UID_B), None)
        .await
        .unwrap();
    store.record_check_in("web-2", Utc::now()).await.unwrap();
    assert_eq!(b.keys().await.len(), 4);

    store.delete("web-1").await.unwrap();
    assert_eq!(store.get("web-1").await.unwrap(), None);
    let listing = store.list().await.unwrap();
    assert!(!listing.records.contains_key("web-1"));
    assert!(!listing.check_ins.contains_key("web-1"));
    assert!(listing.records.contains_key("web-2"));
    assert!(listing.check_ins.contains_key("web-2"));

    store.delete("web-1").await.unwrap();
    store.delete("never-existed").await.unwrap();
    assert_eq!(
        b.keys().await,
        vec![
            "p/checkins/web-2".to_owned(),
            "p/records/web-2.json".to_owned()
        ]
    );

    // A re-created record after deletion is a creation again.
    assert!(matches!(
        store
            .put_if_changed(&record("web-1", UID_A), None)
            .await
            .unwrap(),
        WriteOutcome::Written(_)
    ));
}

#[tokio::test]
async fn records_listing_paginates_over_1200_records() {
    let Some(b) = TestBucket::create("big").await else {
        return;
    };
    const N: usize = 1200;
    let writer = b.records().await;
    let names: Vec<String> = (0..N).map(|i| format!("node-{i:04}")).collect();
    stream::iter(names.iter())
        .map(|name| {
            let writer = &writer;
            async move {
                writer
                    .put_if_changed(&record(name, &format!("uid-{name}")), None)
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(writer.put_count(), N as u64);
    for name in &names[..3] {
        writer.record_check_in(name, Utc::now()).await.unwrap();
    }
    // Outside the prefix: not ours.
    b.raw
        .put_object()
        .bucket(&b.bucket)
        .key("other/records/node-0000.json")
        .body(b"{}".to_vec().into())
        .send()
        .await
        .unwrap();

    let store = b.records().await;
    let listing = store.list().await.unwrap();
    assert_eq!(listing.records.len(), N);
    assert!(names.iter().all(|n| listing.records.contains_key(n)));
    assert_eq!(listing.check_ins.len(), 3);
    let pages = store.counts().list_pages;
    assert!(pages >= 2, "{pages} pages");
    assert_eq!(store.calls(), pages, "the listing is the only call");
    eprintln!("1,200 records + 3 check-ins listed in {pages} pages");

    // Steady state over the whole fleet after a restart: N HEADs once, then nothing.
    let mut heads = 0;
    for pass in 0..2 {
        let listing = store.list().await.unwrap();
        let before = store.counts();
        for name in &names {
            let outcome = store
                .put_if_changed(
                    &record(name, &format!("uid-{name}")),
                    listing.records.get(name),
                )
                .await
                .unwrap();
            assert_eq!(outcome, WriteOutcome::Unchanged);
        }
        let after = store.counts();
        assert_eq!(after.puts, before.puts, "pass {pass}: no PUT");
        heads = after.heads - before.heads;
        if pass == 0 {
            assert_eq!(heads, N as u64, "first pass after a restart: one HEAD each");
        }
    }
    assert_eq!(heads, 0, "second pass: no HEAD");
}

#[tokio::test]
async fn records_check_ins_show_in_the_listing() {
    let Some(b) = TestBucket::create("").await else {
        return;
    };
    let store = b.records().await;
    store
        .put_if_changed(&record("web-1", UID_A), None)
        .await
        .unwrap();
    let at = Utc::now();
    store.record_check_in("web-1", at).await.unwrap();
    // A check-in without a record (the ENC saw a node whose record is gone).
    store.record_check_in("web-9", at).await.unwrap();

    let listing = store.list().await.unwrap();
    assert_eq!(listing.records.keys().collect::<Vec<_>>(), vec!["web-1"]);
    assert_eq!(
        listing.check_ins.keys().collect::<Vec<_>>(),
        vec!["web-1", "web-9"]
    );
    for (name, seen) in &listing.check_ins {
        let skew = (*seen - at).num_milliseconds().abs();
        assert!(
            skew <= ChronoDuration::seconds(5).num_milliseconds(),
            "{name}: {seen} vs {at}"
        );
    }
    // The body carries the exact time.
    let body = String::from_utf8(b.body("checkins/web-1").await).unwrap();
    assert_eq!(
        body.trim(),
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );

    // A later check-in moves forward.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    store.record_check_in("web-1", Utc::now()).await.unwrap();
    let later = store.list().await.unwrap();
    assert!(later.check_ins["web-1"] > listing.check_ins["web-1"]);
}

#[tokio::test]
async fn records_invalid_certnames_send_nothing() {
    let Some(b) = TestBucket::create("p").await else {
        return;
    };
    let store = b.records().await;
    for name in ["../escape", "a/b", "", "Upper"] {
        let err = store.get(name).await.unwrap_err();
        assert_eq!(err.category(), "invalid_certname", "{name}");
        assert!(store.delete(name).await.is_err());
        assert!(store.record_check_in(name, Utc::now()).await.is_err());
        assert!(store
            .put_if_changed(&record(name, UID_A), None)
            .await
            .is_err());
    }
    assert_eq!(store.calls(), 0);
}
