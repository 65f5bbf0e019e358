//! S3 node records: one private JSON object per certname holding its
//! classification, plus a small check-in object the ENC writes whenever it
//! classifies the node.
//!
//! # Layout
//!
//! Under the configured prefix (normalised to end in `/` when not empty):
//!
//! - `<prefix>records/<certname>.json` — the [`NodeRecord`], canonical JSON
//!   ([`NodeRecord::to_bytes`]), written with metadata
//!   `x-amz-meta-content-sha256` (hex SHA-256 of the bytes) and
//!   `x-amz-meta-owner-node-uid`.
//! - `<prefix>checkins/<certname>` — the time of the last classification
//!   (RFC 3339 text). The listing reports the object's `LastModified`, i.e.
//!   when S3 stored it (second precision), so no GET per check-in is needed.
//!
//! Certnames never contain `/`, so the two families cannot collide; names that
//! fail [`puppet_conductor_core::certname::validate_certname`] are refused before any call and
//! ignored in listings.
//!
//! # Deciding whether to write, without a GET per node
//!
//! One paginated `ListObjectsV2` per pass ([`Records::list`]) yields every
//! record's ETag. [`Records::put_if_changed`] needs the stored content hash
//! and owner, which the listing does not carry (S3 lists no metadata). The S3
//! implementation keeps a small in-process cache `key → (ETag, content SHA-256,
//! owner node UID)`, filled by its own writes, reads and HEADs:
//!
//! - listed ETag equals the cached ETag → the stored hash is known: no call at
//!   all when nothing changed (steady state: **0 requests per record per pass**,
//!   only the listing pages, 1 per 1,000 objects);
//! - otherwise (first pass after a restart, or someone else wrote the object)
//!   one `HEAD` reads the hash and owner from the metadata and fills the cache
//!   (**1 HEAD per record on the first pass**); a GET happens only for objects
//!   without that metadata (not written by this code).
//!
//! The ETag is used only as an opaque version id, never as an MD5, so the
//! scheme also holds for SSE-KMS buckets and S3-compatible stores whose ETags
//! are not MD5s. (With an MD5 implementation the first pass could skip the
//! HEAD when ETag = MD5(bytes); not worth a dependency today.)
//!
//! Writes are conditional: creation uses `If-None-Match: *`, replacement
//! `If-Match: <etag>` of the version whose owner was checked, so a concurrent
//! writer makes the PUT fail with 412 ([`RecordsError::PreconditionFailed`],
//! retryable: observe again) instead of being overwritten. A record whose
//! owner node UID differs from ours is never overwritten
//! ([`RecordsError::Conflict`]). No write sets an ACL: objects stay private to
//! the bucket owner.

mod error;
mod s3;
mod s3_probe;

pub use error::RecordsError;
pub use puppet_conductor_core::record::{
    normalize_prefix, sha256_hex, Claim, KeyLayout, ListedRecord, NodeRecord, ParsedKey, Privacy,
    RecordListing, RecordOwner, RecordState, SignatureRecord, Signer, WriteOutcome,
};
pub use s3::{CallCounts, RecordsConfig, S3Records, StaticCredentials, DEFAULT_CALL_TIMEOUT};

use chrono::{DateTime, Utc};

/// What the operator and the ENC need from the node-record store.
///
/// Every method taking a certname refuses one that fails
/// [`puppet_conductor_core::certname::validate_certname`] with [`RecordsError::InvalidCertname`]
/// before sending anything. Nothing here loops on errors:
/// [`RecordsError::is_retryable`] tells the caller how to back off.
#[async_trait::async_trait]
pub trait Records: Send + Sync {
    /// One paginated ListObjectsV2 over the prefix: every record and every check-in.
    async fn list(&self) -> Result<RecordListing, RecordsError>;

    /// The record for `certname`; `None` if there is none.
    async fn get(&self, certname: &str) -> Result<Option<NodeRecord>, RecordsError>;

    /// Writes only when the stored content hash differs from
    /// `record.content_hash()` (`listed` is what the shared listing saw for
    /// this certname, `None` = absent). Never overwrites a record whose
    /// `owner.nodeUid` differs (another node/master owns that certname) →
    /// [`RecordsError::Conflict`]. Creation uses `If-None-Match: *`;
    /// replacement uses `If-Match: <etag>`; losing either race is
    /// [`RecordsError::PreconditionFailed`].
    async fn put_if_changed(
        &self,
        record: &NodeRecord,
        listed: Option<&ListedRecord>,
    ) -> Result<WriteOutcome, RecordsError>;

    /// Deletes record, check-in and signature record; absent is success.
    async fn delete(&self, certname: &str) -> Result<(), RecordsError>;

    /// Claims the incarnation's one signature for `claim.public_key_sha256`: creates the
    /// signature record only if none exists (`If-None-Match: *`); otherwise returns the
    /// existing one, whatever key it names.
    async fn claim_signature(&self, claim: &SignatureRecord) -> Result<Claim, RecordsError>;

    /// The signature record of `certname`; `None` if there is none.
    async fn get_signature(&self, certname: &str) -> Result<Option<SignatureRecord>, RecordsError>;

    /// Replaces the signature record (to add the confirmed serial and fingerprint).
    async fn put_signature(&self, signature: &SignatureRecord) -> Result<(), RecordsError>;

    /// Deletes the signature record of `certname` (a fenced incarnation of a fixed
    /// certname); absent is success.
    async fn delete_signature(&self, certname: &str) -> Result<(), RecordsError>;

    /// Written by the ENC each time it classifies a node.
    async fn record_check_in(&self, certname: &str, at: DateTime<Utc>) -> Result<(), RecordsError>;

    /// Probe for reachability; also reports whether the bucket or objects look
    /// public (used for `RecordsPrivate`).
    async fn probe(&self) -> Result<Privacy, RecordsError>;
}
