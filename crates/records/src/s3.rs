//! [`Records`] on S3 (AWS, Eucalyptus Walrus/OSG, moto, any S3-compatible store).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use chrono::{DateTime, SecondsFormat, Utc};

use super::error::{service_parts, RecordsError};
use super::{Claim, ListedRecord, Privacy, RecordListing, Records, SignatureRecord, WriteOutcome};
use puppet_conductor_core::certname::validate_certname;
use puppet_conductor_core::record::{sha256_hex, NodeRecord, RecordOwner};
use puppet_conductor_core::record::{KeyLayout, ParsedKey};

/// Default timeout around each S3 call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Keys per ListObjectsV2 page (S3's maximum).
const LIST_PAGE_SIZE: i32 = 1000;
/// Region used when none is configured (S3-compatible stores rarely care).
const FALLBACK_REGION: &str = "us-east-1";
/// Metadata (sent as `x-amz-meta-…`) carrying the record's content hash.
const META_CONTENT_SHA256: &str = "content-sha256";
/// Metadata carrying the owner's node UID, so ownership needs no GET.
const META_OWNER_NODE_UID: &str = "owner-node-uid";
/// Metadata on check-ins: the exact check-in time.
const META_CHECKED_IN_AT: &str = "checked-in-at";

/// Explicit credentials: the same type the cloud client takes.
pub use puppet_conductor_aws::StaticCredentials;

/// Where the records live and how to reach them.
#[derive(Clone, Debug)]
pub struct RecordsConfig {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix (normalised: `"puppet"` means `puppet/`).
    pub prefix: String,
    /// Region to sign for (`us-east-1` when empty).
    pub region: String,
    /// Custom endpoint URL (Eucalyptus, moto); AWS's when `None`.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible stores.
    pub force_path_style: bool,
    /// Static credentials; the default credential chain (environment, web
    /// identity, instance profile, ...) when `None`.
    pub credentials: Option<StaticCredentials>,
    /// Timeout around each S3 call (one page, one PUT, ...).
    pub call_timeout: Duration,
}

/// How many calls of each kind an [`S3Records`] made (each counts once
/// however often the SDK retried it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// ListObjectsV2 pages of [`Records::list`].
    pub list_pages: u64,
    /// GetObject.
    pub gets: u64,
    /// HeadObject.
    pub heads: u64,
    /// PutObject (records and check-ins).
    pub puts: u64,
    /// DeleteObject.
    pub deletes: u64,
    /// Calls made by [`Records::probe`].
    pub probes: u64,
}

impl CallCounts {
    /// All calls.
    pub fn total(&self) -> u64 {
        self.list_pages + self.gets + self.heads + self.puts + self.deletes + self.probes
    }
}

#[derive(Debug, Default)]
struct Counters {
    list_pages: AtomicU64,
    gets: AtomicU64,
    heads: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    probes: AtomicU64,
}

/// What is known about the stored version of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    etag: String,
    content_sha256: String,
    /// `None` when the object names no owner (not written by this code, or unparseable).
    node_uid: Option<String>,
}

/// Node records in one bucket under one prefix.
///
/// Cheap to share (`Arc`); the content-hash cache (see the module docs) lives
/// as long as the value.
#[derive(Debug)]
pub struct S3Records {
    pub(super) client: Client,
    pub(super) bucket: String,
    pub(super) layout: KeyLayout,
    pub(super) timeout: Duration,
    counters: Counters,
    /// key → what was last seen of that key, valid while its ETag matches.
    known: Mutex<HashMap<String, Stored>>,
}

impl S3Records {
    /// A client for `config`. Builds no connection; nothing is checked until
    /// the first call ([`Records::probe`] is the cheap one).
    pub async fn new(config: &RecordsConfig) -> Self {
        let region = if config.region.is_empty() {
            FALLBACK_REGION.to_owned()
        } else {
            config.region.clone()
        };
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region));
        if let Some(c) = &config.credentials {
            loader = loader.credentials_provider(c.provider("puppet-conductor-records"));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let shared = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            // Plain PUTs with Content-Length: S3-compatible stores (Eucalyptus,
            // older Ceph/MinIO) do not all understand the flexible-checksum trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self {
            client: Client::from_conf(s3),
            bucket: config.bucket.clone(),
            layout: KeyLayout::new(&config.prefix),
            timeout: config.call_timeout,
            counters: Counters::default(),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The key layout in use.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// PutObject calls made so far (records and check-ins).
    pub fn put_count(&self) -> u64 {
        self.counters.puts.load(Ordering::Relaxed)
    }

    /// All S3 calls made so far.
    pub fn calls(&self) -> u64 {
        self.counts().total()
    }

    /// Calls made so far, by kind.
    pub fn counts(&self) -> CallCounts {
        let c = &self.counters;
        CallCounts {
            list_pages: c.list_pages.load(Ordering::Relaxed),
            gets: c.gets.load(Ordering::Relaxed),
            heads: c.heads.load(Ordering::Relaxed),
            puts: c.puts.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            probes: c.probes.load(Ordering::Relaxed),
        }
    }

    /// Run one SDK call under the timeout, counting it.
    pub(super) async fn call<T, E>(
        &self,
        operation: &'static str,
        counter: Counter,
        request: impl Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<Result<T, SdkError<E>>, RecordsError> {
        self.counter(counter).fetch_add(1, Ordering::Relaxed);
        tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| RecordsError::Timeout {
                operation,
                timeout: self.timeout,
            })
    }

    fn counter(&self, counter: Counter) -> &AtomicU64 {
        let c = &self.counters;
        match counter {
            Counter::List => &c.list_pages,
            Counter::Get => &c.gets,
            Counter::Head => &c.heads,
            Counter::Put => &c.puts,
            Counter::Delete => &c.deletes,
            Counter::Probe => &c.probes,
        }
    }

    /// Classify an SDK error, naming the bucket when it is missing.
    pub(super) fn error<E>(&self, operation: &'static str, error: SdkError<E>) -> RecordsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (status, code, _) = service_parts(&error);
        if code == "NoSuchBucket" || (operation == "HeadBucket" && status == 404) {
            return RecordsError::NoSuchBucket {
                bucket: self.bucket.clone(),
            };
        }
        RecordsError::from_sdk(operation, self.timeout, error)
    }

    fn known(&self) -> MutexGuard<'_, HashMap<String, Stored>> {
        // The map is only ever replaced entry by entry: a panic elsewhere
        // cannot leave it inconsistent.
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The object's bytes and ETag; `None` if there is no such object.
    async fn get_object(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, RecordsError> {
        const OP: &str = "GetObject";
        let request = self.client.get_object().bucket(&self.bucket).key(key);
        let timeout = self.timeout;
        let result = self
            .call(OP, Counter::Get, async move {
                let out = request.send().await?;
                Ok((out.e_tag, out.body))
            })
            .await?;
        let (etag, body) = match result {
            Ok(parts) => parts,
            Err(e) if service_parts(&e).0 == 404 && service_parts(&e).1 != "NoSuchBucket" => {
                return Ok(None)
            }
            Err(e) => return Err(self.error(OP, e)),
        };
        let bytes = tokio::time::timeout(timeout, body.collect())
            .await
            .map_err(|_| RecordsError::Timeout {
                operation: OP,
                timeout,
            })?
            .map_err(|e| RecordsError::Transport {
                operation: OP,
                source: Box::new(e),
            })?
            .into_bytes()
            .to_vec();
        let etag = etag.ok_or_else(|| no_etag(OP))?;
        Ok(Some((bytes, etag)))
    }

    /// What HEAD says about the stored record; `None` if it is absent.
    async fn head_record(&self, key: &str) -> Result<Option<Stored>, RecordsError> {
        const OP: &str = "HeadObject";
        let request = self.client.head_object().bucket(&self.bucket).key(key);
        let out = match self.call(OP, Counter::Head, request.send()).await? {
            Ok(out) => out,
            Err(e) if service_parts(&e).0 == 404 => return Ok(None),
            Err(e) => return Err(self.error(OP, e)),
        };
        let etag = out.e_tag().ok_or_else(|| no_etag(OP))?.to_owned();
        let meta = out.metadata();
        let get = |name: &str| meta.and_then(|m| m.get(name)).cloned();
        match (get(META_CONTENT_SHA256), get(META_OWNER_NODE_UID)) {
            (Some(content_sha256), Some(node_uid)) => Ok(Some(Stored {
                etag,
                content_sha256,
                node_uid: Some(node_uid),
            })),
            // Not written by this code (or by an owner whose UID could not be a
            // header): read it.
            _ => Ok(self
                .get_object(key)
                .await?
                .map(|(bytes, etag)| stored_from_body(&bytes, etag))),
        }
    }

    /// The stored version of `key` as of now, from the cache when the listed
    /// ETag still matches, else from S3.
    async fn stored(
        &self,
        key: &str,
        listed: &ListedRecord,
    ) -> Result<Option<Stored>, RecordsError> {
        if let Some(etag) = &listed.etag {
            if let Some(hit) = self.known().get(key).filter(|s| same_etag(&s.etag, etag)) {
                return Ok(Some(hit.clone()));
            }
        }
        let stored = self.head_record(key).await?;
        self.remember(key, stored.clone());
        Ok(stored)
    }

    fn remember(&self, key: &str, stored: Option<Stored>) {
        let mut known = self.known();
        match stored {
            Some(s) => known.insert(key.to_owned(), s),
            None => known.remove(key),
        };
    }

    /// PUT the record's bytes under a condition.
    async fn put_record(
        &self,
        key: &str,
        record: &NodeRecord,
        bytes: Vec<u8>,
        content_sha256: &str,
        condition: Condition<'_>,
    ) -> Result<ListedRecord, RecordsError> {
        const OP: &str = "PutObject";
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let uid = &record.owner.node_uid;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(bytes))
            .metadata(META_CONTENT_SHA256, content_sha256);
        // Metadata travels as an HTTP header; a UID that could not be one is
        // found by reading the body instead.
        if is_header_safe(uid) {
            request = request.metadata(META_OWNER_NODE_UID, uid);
        }
        request = match condition {
            Condition::Absent => request.if_none_match("*"),
            Condition::Etag(etag) => request.if_match(etag),
        };
        let out = match self.call(OP, Counter::Put, request.send()).await? {
            Ok(out) => out,
            Err(e) if lost_race(&e) => {
                self.remember(key, None);
                return Err(RecordsError::PreconditionFailed {
                    operation: OP,
                    key: key.to_owned(),
                });
            }
            Err(e) => return Err(self.error(OP, e)),
        };
        let etag = out.e_tag().ok_or_else(|| no_etag(OP))?.to_owned();
        self.remember(
            key,
            Some(Stored {
                etag: etag.clone(),
                content_sha256: content_sha256.to_owned(),
                node_uid: Some(uid.clone()),
            }),
        );
        tracing::debug!(key, certname = %record.certname, "node record written");
        Ok(ListedRecord {
            key: key.to_owned(),
            etag: Some(etag),
            last_modified: None,
            size,
        })
    }

    /// The owner stored in `key`, best effort (for the conflict message).
    async fn stored_owner(&self, key: &str) -> Option<Box<RecordOwner>> {
        match self.get_object(key).await {
            Ok(Some((bytes, _))) => owner_from_body(&bytes).map(Box::new),
            Ok(None) => None,
            Err(error) => {
                tracing::debug!(key, %error, "could not read the conflicting record's owner");
                None
            }
        }
    }

    async fn delete_object(&self, key: &str) -> Result<(), RecordsError> {
        const OP: &str = "DeleteObject";
        let request = self.client.delete_object().bucket(&self.bucket).key(key);
        let result = self.call(OP, Counter::Delete, request.send()).await?;
        self.remember(key, None);
        match result {
            Ok(_) => Ok(()),
            // S3 answers 204 for absent keys; some compatible stores say 404.
            Err(e) if service_parts(&e).0 == 404 && service_parts(&e).1 != "NoSuchBucket" => Ok(()),
            Err(e) => Err(self.error(OP, e)),
        }
    }
}

/// Which counter a call increments.
#[derive(Clone, Copy, Debug)]
pub(super) enum Counter {
    List,
    Get,
    Head,
    Put,
    Delete,
    Probe,
}

/// The precondition of a record PUT.
#[derive(Clone, Copy, Debug)]
enum Condition<'a> {
    /// `If-None-Match: *`.
    Absent,
    /// `If-Match: <etag>`.
    Etag(&'a str),
}

#[async_trait::async_trait]
impl Records for S3Records {
    async fn list(&self) -> Result<RecordListing, RecordsError> {
        const OP: &str = "ListObjectsV2";
        let mut listing = RecordListing::default();
        let mut token: Option<String> = None;
        loop {
            let request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.layout.prefix())
                .max_keys(LIST_PAGE_SIZE)
                .set_continuation_token(token.take());
            let page = self
                .call(OP, Counter::List, request.send())
                .await?
                .map_err(|e| self.error(OP, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let last_modified = object.last_modified().and_then(to_chrono);
                match self.layout.parse(key) {
                    Some(ParsedKey::Record(certname)) => {
                        listing.records.insert(
                            certname,
                            ListedRecord {
                                key: key.to_owned(),
                                etag: object.e_tag().map(str::to_owned),
                                last_modified,
                                size: object.size().unwrap_or_default(),
                            },
                        );
                    }
                    Some(ParsedKey::CheckIn(certname)) => {
                        if let Some(at) = last_modified {
                            listing.check_ins.insert(certname, at);
                        }
                    }
                    Some(ParsedKey::Signature(certname)) => {
                        listing.signatures.insert(certname);
                    }
                    None => {}
                }
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) if !next.is_empty() => token = Some(next.to_owned()),
                (Some(true), _) => {
                    return Err(RecordsError::InvalidResponse {
                        operation: OP,
                        what: "truncated page without a continuation token".into(),
                    })
                }
                _ => break,
            }
        }
        // Forget versions that no longer exist, so the cache stays as small as the bucket.
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
            .await?;
        tracing::debug!(
            certname,
            "node record, check-in and signature record deleted"
        );
        Ok(())
    }

    async fn claim_signature(&self, claim: &SignatureRecord) -> Result<Claim, RecordsError> {
        const OP: &str = "PutObject";
        check_certname(&claim.certname)?;
        let key = self.layout.signature_key(&claim.certname);
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .if_none_match("*")
            .body(ByteStream::from(signature_bytes(claim)?));
        match self.call(OP, Counter::Put, request.send()).await? {
            Ok(_) => Ok(Claim::Created),
            Err(e) if lost_race(&e) => match self.get_signature(&claim.certname).await? {
                Some(existing) => Ok(Claim::Existing(existing)),
                // Created and deleted again in between: the incarnation's record is being
                // removed, so nothing may be signed for it now.
                None => Err(RecordsError::PreconditionFailed { operation: OP, key }),
            },
            Err(e) => Err(self.error(OP, e)),
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
        const OP: &str = "PutObject";
        check_certname(&signature.certname)?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.layout.signature_key(&signature.certname))
            .content_type("application/json")
            .body(ByteStream::from(signature_bytes(signature)?));
        self.call(OP, Counter::Put, request.send())
            .await?
            .map_err(|e| self.error(OP, e))?;
        Ok(())
    }

    async fn delete_signature(&self, certname: &str) -> Result<(), RecordsError> {
        check_certname(certname)?;
        self.delete_object(&self.layout.signature_key(certname))
            .await
    }

    async fn record_check_in(&self, certname: &str, at: DateTime<Utc>) -> Result<(), RecordsError> {
        const OP: &str = "PutObject";
        check_certname(certname)?;
        let at = at.to_rfc3339_opts(SecondsFormat::Millis, true);
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.layout.check_in_key(certname))
            .content_type("text/plain; charset=utf-8")
            .metadata(META_CHECKED_IN_AT, &at)
            .body(ByteStream::from(format!("{at}\n").into_bytes()));
        self.call(OP, Counter::Put, request.send())
            .await?
            .map_err(|e| self.error(OP, e))?;
        Ok(())
    }

    async fn probe(&self) -> Result<Privacy, RecordsError> {
        super::s3_probe::probe(self).await
    }
}

fn check_certname(certname: &str) -> Result<(), RecordsError> {
    Ok(validate_certname(certname)?)
}

fn signature_bytes(signature: &SignatureRecord) -> Result<Vec<u8>, RecordsError> {
    let mut bytes =
        serde_json::to_vec_pretty(signature).map_err(|source| RecordsError::Encode {
            certname: signature.certname.clone(),
            source,
        })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn no_etag(operation: &'static str) -> RecordsError {
    RecordsError::InvalidResponse {
        operation,
        what: "no ETag in the response".into(),
    }
}

/// ETags compare equal with or without their quotes.
fn same_etag(a: &str, b: &str) -> bool {
    a.trim_matches('"') == b.trim_matches('"')
}

/// A conditional PUT that lost: 412, or 409 ConditionalRequestConflict
/// (S3's answer when another conditional write is in flight).
fn lost_race<E: ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    let (status, code, _) = service_parts(error);
    status == 412 || code == "PreconditionFailed" || code == "ConditionalRequestConflict"
}

fn is_header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

/// What a record's body says about it (hash of the bytes as stored, owner UID
/// if it parses as a record owner).
fn stored_from_body(bytes: &[u8], etag: String) -> Stored {
    Stored {
        etag,
        content_sha256: sha256_hex(bytes),
        node_uid: owner_from_body(bytes).map(|o| o.node_uid),
    }
}

/// The `owner` of a stored record, read leniently (only that field must parse).
fn owner_from_body(bytes: &[u8]) -> Option<RecordOwner> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    serde_json::from_value(value.get("owner")?.clone()).ok()
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeRecord {
        serde_json::from_value(serde_json::json!({
            "certname": "web-1", "classes": ["role::web"], "environment": "production",
            "challengeSha256": sha256_hex(b"challenge"), "state": "Live",
            "owner": {"operator": "puppet-conductor", "master": "puppet/main",
                      "node": "puppet/web-1", "nodeUid": "6f0e5c1a-8d1b", "incarnation": 1},
        }))
        .unwrap()
    }

    #[test]
    fn etags_compare_without_quotes() {
        assert!(same_etag("\"abc\"", "abc"));
        assert!(same_etag("\"abc\"", "\"abc\""));
        assert!(!same_etag("\"abc\"", "\"abd\""));
    }

    #[test]
    fn stored_state_from_a_body() {
        let bytes = sample().to_bytes().unwrap();
        let s = stored_from_body(&bytes, "\"e\"".into());
        assert_eq!(s.content_sha256, sample().content_hash().unwrap());
        assert_eq!(
            s.node_uid.as_deref(),
            Some(sample().owner.node_uid.as_str())
        );
        let foreign = stored_from_body(b"classes: [a]\n", "\"f\"".into());
        assert_eq!(foreign.node_uid, None);
        assert_eq!(owner_from_body(b"{\"owner\": 1}"), None);
    }

    #[test]
    fn header_safety() {
        assert!(is_header_safe("6f0e5c1a-8d1b-4b6e-9f7a-2d7c1e0b9a11"));
        assert!(!is_header_safe(""));
        assert!(!is_header_safe("a b"));
        assert!(!is_header_safe("ü"));
        assert!(!is_header_safe("a\r\nb"));
    }

    #[test]
    fn invalid_certnames_are_refused() {
        for name in ["", "../x", "a/b", "Upper"] {
            let e = check_certname(name).unwrap_err();
            assert_eq!(e.category(), "invalid_certname", "{name}");
        }
        assert!(check_certname("web-1.example.com").is_ok());
    }
}
