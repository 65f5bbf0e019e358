//! [`FakeRecords`]: the S3 records bucket in memory behind [`Records`], for unit tests,
//! the lifecycle simulation and the benchmarks.
//!
//! It plays both sides of the wire, as [`S3Records`](puppet_conductor_records::S3Records) sees
//! them: the bucket (objects with ETags, metadata and a `LastModified`; `If-None-Match:
//! *` and `If-Match` answered 412, or 404 `NoSuchKey` when the object to match is gone;
//! ListObjectsV2 pages in key order) and the client's own logic over it (the same key
//! layout, the `key → (ETag, content hash, owner)` cache filled by its writes, reads and
//! HEADs, a HEAD only when the listed ETag is not the cached one, a GET only for objects
//! without this code's metadata). So a case sends the same requests, in the same order,
//! to this fake as to S3; `tests/integration/contract_records.rs` runs the same cases
//! against both.
//!
//! Every request goes through the [`Gate`] first and is counted as `S3Records` counts
//! it; a call the real client makes several requests for (`delete`: three
//! DeleteObject; `put_if_changed`: HEAD, maybe GET, then PUT) passes the gate once per
//! request, so a fault can land between them. `Answer` applies and answers; `Fail`
//! applies nothing and returns what the real client returns for that
//! [`FaultKind`](crate::FaultKind) (`Unavailable`: 503 `ServiceUnavailable`,
//! `Throttled`: 503 `SlowDown`, `Denied`: 403 `AccessDenied`, HEAD requests without a
//! code as S3 sends them no body;
//! `Timeout`: [`RecordsError::Timeout`]); `Lost` applies and returns a timeout.
//!
//! Time: `LastModified` is the epoch (wall clock at construction unless
//! [`FakeRecords::with_epoch`]) plus the tokio time elapsed since construction, to the
//! second as S3 keeps it, so a paused tokio clock makes it reproducible.
//!
//! Knowingly different from S3 and moto: ETags are a truncated SHA-256 of the content,
//! quoted, not an MD5 (the client treats them as opaque, and equal content still gives
//! equal ETags as on S3); the listing's continuation token is the last key served; the
//! probe reports what [`FakeRecords::set_public`] configured (no ACLs or policies are
//! modelled, the requests are made and gated as the real probe makes them); there are no
//! versions, no multipart uploads, no other buckets and no missing bucket.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::time::Instant;

use super::{Faults, Gate};
use puppet_conductor_records::{
    sha256_hex, CallCounts, Claim, KeyLayout, ListedRecord, NodeRecord, ParsedKey, Privacy,
    RecordListing, Records, RecordsError, SignatureRecord, WriteOutcome, DEFAULT_CALL_TIMEOUT,
};

use bucket::{same_etag, Bucket, Condition, Entry};
use client::{
    check_certname, signature_bytes, stored_from_body, Counter, Stored, META_CHECKED_IN_AT,
};
use puppet_conductor_core::sync::lock;

mod bucket;
mod client;
#[cfg(test)]
mod tests;

/// Keys per ListObjectsV2 page unless configured otherwise (S3's maximum, the real
/// client's fixed page size).
pub const DEFAULT_PAGE_SIZE: usize = 1000;
/// The bucket name errors mention.
const BUCKET: &str = "fake-records";

/// The records bucket in memory, and one client of it; see the module documentation.
///
/// [`FakeRecords::another_client`] makes a second client of the same bucket (another
/// replica, or this one after a restart: its own cache and counters).
pub struct FakeRecords {
    gate: Arc<dyn Gate>,
    bucket: Arc<Mutex<Bucket>>,
    layout: KeyLayout,
    page_size: usize,
    call_timeout: Duration,
    wait_on_timeout: bool,
    epoch: DateTime<Utc>,
    created: Instant,
    /// The client's cache, key → what was last seen of it.
    known: Mutex<HashMap<String, Stored>>,
    counts: Mutex<CallCounts>,
}

impl Default for FakeRecords {
    /// An empty bucket under `nodes/` behind an unscripted [`Faults`].
    fn default() -> Self {
        Self::new(Arc::new(Faults::default()), "nodes/")
    }
}

impl FakeRecords {
    /// An empty bucket with records under `prefix` (normalised as `S3Records` does),
    /// behind `gate`: pages of [`DEFAULT_PAGE_SIZE`], timeouts reported as
    /// [`DEFAULT_CALL_TIMEOUT`] without waiting, times counted from now.
    pub fn new(gate: Arc<dyn Gate>, prefix: &str) -> Self {
        Self {
            gate,
            bucket: Arc::new(Mutex::new(Bucket::default())),
            layout: KeyLayout::new(prefix),
            page_size: DEFAULT_PAGE_SIZE,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            wait_on_timeout: false,
            epoch: Utc::now(),
            created: Instant::now(),
            known: Mutex::new(HashMap::new()),
            counts: Mutex::new(CallCounts::default()),
        }
    }

    /// Keys per ListObjectsV2 page (at least 1). The real client always asks for 1,000;
    /// a small page makes pagination visible in tests.
    #[must_use]
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// The limit timeouts report (the real client's configured call timeout).
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Whether a timed-out or lost request makes its caller wait the call timeout (tokio
    /// time) first, as the real one does; off by default to keep running-clock tests fast.
    #[must_use]
    pub fn with_timeout_wait(mut self, wait: bool) -> Self {
        self.wait_on_timeout = wait;
        self
    }

    /// `LastModified` is `epoch` plus the tokio time elapsed since construction (wall
    /// clock at construction by default; fix it for reproducible runs).
    #[must_use]
    pub fn with_epoch(mut self, epoch: DateTime<Utc>) -> Self {
        self.epoch = epoch;
        self
    }

    /// Another client of the same bucket, with the same gate, settings and clock and its
    /// own (empty) cache and counters: a second replica, or this one restarted.
    pub fn another_client(&self) -> Self {
        Self {
            gate: self.gate.clone(),
            bucket: self.bucket.clone(),
            layout: self.layout.clone(),
            page_size: self.page_size,
            call_timeout: self.call_timeout,
            wait_on_timeout: self.wait_on_timeout,
            epoch: self.epoch,
            created: self.created,
            known: Mutex::new(HashMap::new()),
            counts: Mutex::new(CallCounts::default()),
        }
    }

    /// The key layout in use.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// Requests this client made so far, by kind, whatever their fate (as
    /// [`S3Records::counts`](puppet_conductor_records::S3Records::counts)).
    pub fn calls(&self) -> CallCounts {
        *lock(&self.counts)
    }

    /// ListObjectsV2 pages this client asked for (of [`Records::list`]).
    pub fn pages_served(&self) -> u64 {
        self.calls().list_pages
    }

    /// The time S3 would stamp on a write now (to the second).
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = Instant::now().saturating_duration_since(self.created);
        let now =
            self.epoch + chrono::TimeDelta::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX);
        DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
    }

    // ------------------------------------------------------------ ground truth (not gated)

    /// Every object in the bucket, key → bytes.
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.with_bucket(|b| {
            b.objects
                .iter()
                .map(|(k, o)| (k.clone(), o.bytes.clone()))
                .collect()
        })
    }

    /// The stored record of `certname`, if there is one that parses.
    pub fn record(&self, certname: &str) -> Option<NodeRecord> {
        let bytes = self.object(&self.layout.record_key(certname))?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The stored signature record of `certname`, if there is one that parses.
    pub fn signature(&self, certname: &str) -> Option<SignatureRecord> {
        let bytes = self.object(&self.layout.signature_key(certname))?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The time the ENC's last check-in of `certname` says (what it wrote, to the
    /// millisecond; the listing reports the object's `LastModified` instead).
    pub fn check_in(&self, certname: &str) -> Option<DateTime<Utc>> {
        let bytes = self.object(&self.layout.check_in_key(certname))?;
        let text = String::from_utf8(bytes).ok()?;
        DateTime::parse_from_rfc3339(text.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Stores `bytes` under `key` as another tool would: unconditionally, without this
    /// code's metadata (so the client reads the body to learn the owner).
    pub fn put_raw(&self, key: &str, bytes: impl Into<Vec<u8>>) {
        let now = self.now();
        self.with_bucket(|b| b.store(key, bytes.into(), BTreeMap::new(), now));
    }

    /// Removes `key` behind every client's back; whether it was there.
    pub fn delete_raw(&self, key: &str) -> bool {
        self.with_bucket(|b| b.objects.remove(key).is_some())
    }

    /// Empties the bucket (a restore from nothing, someone's `aws s3 rm --recursive`).
    /// Client caches are not told, as in reality.
    pub fn lose_state(&self) {
        self.with_bucket(|b| b.objects.clear());
    }

    /// Makes the probe report the records as public for `reason` (`None`: private again).
    pub fn set_public(&self, reason: Option<&str>) {
        self.with_bucket(|b| b.public = reason.map(str::to_owned));
    }

    fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.with_bucket(|b| b.objects.get(key).map(|o| o.bytes.clone()))
    }

    fn with_bucket<T>(&self, f: impl FnOnce(&mut Bucket) -> T) -> T {
        // Every change under the lock is a single insert, remove or clear.
        f(&mut lock(&self.bucket))
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stored>> {
        lock(&self.known)
    }

    fn remember(&self, key: &str, stored: Option<Stored>) {
        let mut known = self.known();
        match stored {
            Some(s) => known.insert(key.to_owned(), s),
            None => known.remove(key),
        };
    }
}

#[async_trait::async_trait]
impl Records for FakeRecords {
    async fn list(&self) -> Result<RecordListing, RecordsError> {
        let mut listing = RecordListing::default();
        let prefix = self.layout.prefix().to_owned();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .list_page(&prefix, after.as_deref(), self.page_size)
                .await?;
            for Entry {
                key,
                etag,
                last_modified,
                size,
            } in page.objects
            {
                match self.layout.parse(&key) {
                    Some(ParsedKey::Record(certname)) => {
                        listing.records.insert(
                            certname,
                            ListedRecord {
                                key,
                                etag: Some(etag),
                                last_modified: Some(last_modified),
                                size,
                            },
                        );
                    }
                    Some(ParsedKey::CheckIn(certname)) => {
                        listing.check_ins.insert(certname, last_modified);
                    }
                    Some(ParsedKey::Signature(certname)) => {
                        listing.signatures.insert(certname);
                    }
                    None => {}
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        // As the real client: forget versions that no longer exist.
        let current: HashMap<&str, &str> = listing
            .records
            .values()
            .filter_map(|l| Some((l.key.as_str(), l.etag.as_deref()?)))
            .collect();
        self.known().retain(|key, stored| {
            current
                .get(key.as_str())
                .is_some_and(|etag| same_etag(etag, &stored.etag))
        });
        Ok(listing)
    }

    async fn get(&self, certname: &str) -> Result<Option<NodeRecord>, RecordsError> {
        check_certname(certname)?;
        let key = self.layout.record_key(certname);
        let Some((bytes, etag)) = self.get_object(&key).await? else {
            return Ok(None);
        };
        let record: NodeRecord =
            serde_json::from_slice(&bytes).map_err(|source| RecordsError::InvalidRecord {
                key: key.clone(),
                source,
            })?;
        self.remember(&key, Some(stored_from_body(&bytes, etag)));
        Ok(Some(record))
    }

    async fn put_if_changed(
        &self,
        record: &NodeRecord,
        listed: Option<&ListedRecord>,
    ) -> Result<WriteOutcome, RecordsError> {
        check_certname(&record.certname)?;
        let key = self.layout.record_key(&record.certname);
        let bytes = record.to_bytes()?;
        let hash = sha256_hex(&bytes);
        let stored = match listed {
            Some(listed) => self.stored(&key, listed).await?,
            None => None,
        };
        let Some(stored) = stored else {
            let listed = self
                .put_record(&key, record, bytes, &hash, Condition::Absent)
                .await?;
            return Ok(WriteOutcome::Written(listed));
        };
        if stored.node_uid.as_deref() != Some(record.owner.node_uid.as_str()) {
            return Err(RecordsError::Conflict {
                certname: record.certname.clone(),
                owner: self.stored_owner(&key).await,
            });
        }
        if stored.content_sha256 == hash {
            return Ok(WriteOutcome::Unchanged);
        }
        let listed = self
            .put_record(&key, record, bytes, &hash, Condition::Etag(&stored.etag))
            .await?;
        Ok(WriteOutcome::Written(listed))
    }

    async fn delete(&self, certname: &str) -> Result<(), RecordsError> {
        check_certname(certname)?;
        self.delete_object(&self.layout.record_key(certname))
            .await?;
        self.delete_object(&self.layout.check_in_key(certname))
            .await?;
        self.delete_object(&self.layout.signature_key(certname))
            .await
    }

    async fn claim_signature(&self, claim: &SignatureRecord) -> Result<Claim, RecordsError> {
        const OP: &str = "PutObject";
        check_certname(&claim.certname)?;
        let key = self.layout.signature_key(&claim.certname);
        let bytes = signature_bytes(claim)?;
        match self
            .put_object(&key, bytes, BTreeMap::new(), Condition::Absent)
            .await?
        {
            Ok(_) => Ok(Claim::Created),
            Err(_) => match self.get_signature(&claim.certname).await? {
                Some(existing) => Ok(Claim::Existing(existing)),
                // Created and deleted again in between, as the real client reads it.
                None => Err(RecordsError::PreconditionFailed { operation: OP, key }),
            },
        }
    }

    async fn get_signature(&self, certname: &str) -> Result<Option<SignatureRecord>, RecordsError> {
        check_certname(certname)?;
        let key = self.layout.signature_key(certname);
        let Some((bytes, _)) = self.get_object(&key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| RecordsError::InvalidRecord { key, source })
    }

    async fn put_signature(&self, signature: &SignatureRecord) -> Result<(), RecordsError> {
        check_certname(&signature.certname)?;
        let key = self.layout.signature_key(&signature.certname);
        let bytes = signature_bytes(signature)?;
        // An unconditional PUT is never refused.
        let _etag = self
            .put_object(&key, bytes, BTreeMap::new(), Condition::Unconditional)
            .await?;
        Ok(())
    }

    async fn delete_signature(&self, certname: &str) -> Result<(), RecordsError> {
        check_certname(certname)?;
        self.delete_object(&self.layout.signature_key(certname))
            .await
    }

    async fn record_check_in(&self, certname: &str, at: DateTime<Utc>) -> Result<(), RecordsError> {
        check_certname(certname)?;
        let at = at.to_rfc3339_opts(SecondsFormat::Millis, true);
        let key = self.layout.check_in_key(certname);
        let metadata = BTreeMap::from([(META_CHECKED_IN_AT.to_owned(), at.clone())]);
        let _etag = self
            .put_object(
                &key,
                format!("{at}\n").into_bytes(),
                metadata,
                Condition::Unconditional,
            )
            .await?;
        Ok(())
    }

    async fn probe(&self) -> Result<Privacy, RecordsError> {
        // The requests of `records::s3_probe`, in its order (no public access block is
        // modelled, so none is skipped): an S3 error answer to any but HeadBucket leaves
        // that check undetermined, a transport failure is an error.
        self.request("HeadBucket", BUCKET, Counter::Probe, |_, _| ())
            .await?;
        let mut unknown = Vec::new();
        for (operation, what) in [
            // An undetermined access block only means "assume none": not reported.
            ("GetPublicAccessBlock", None),
            ("GetBucketPolicyStatus", Some("bucket policy status")),
            ("GetBucketAcl", Some("bucket ACL")),
        ] {
            if let Err(why) = self.probe_check(operation, BUCKET, |_| ()).await? {
                unknown.extend(what.map(|w| format!("{w}: {why}")));
            }
        }
        let records_prefix = self.layout.records_prefix();
        let sample = self
            .probe_check("ListObjectsV2", &records_prefix, |b| {
                b.page(&records_prefix, None, 1).objects.into_iter().next()
            })
            .await?;
        match sample {
            Ok(Some(Entry { key, .. })) => {
                if let Err(why) = self.probe_check("GetObjectAcl", &key, |_| ()).await? {
                    unknown.push(format!("object ACL: {why}"));
                }
            }
            Ok(None) => {}
            Err(why) => unknown.push(format!("object ACL: {why}")),
        }
        let public = self.with_bucket(|b| b.public.clone());
        Ok(match public {
            Some(reason) => Privacy::Public { reason },
            None if !unknown.is_empty() => Privacy::Unknown {
                reason: format!("could not check {}", unknown.join("; ")),
            },
            None => Privacy::Private,
        })
    }
}
