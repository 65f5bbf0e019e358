//! The client side of [`super::FakeRecords`], as `S3Records` makes its requests: one
//! gated, counted request at a time, the cache of what was last seen of each record,
//! HEAD before GET, the errors the SDK would return.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::bucket::{same_etag, Bucket, Condition, Page, PutRefused};
use super::FakeRecords;
use crate::{Call, Fate, FaultKind, System};
use puppet_conductor_core::certname::validate_certname;
use puppet_conductor_core::sync::lock;
use puppet_conductor_records::{
    sha256_hex, ListedRecord, NodeRecord, RecordOwner, RecordsError, SignatureRecord,
};

// The real client's metadata names (private to `records::s3`, repeated on purpose: the
// contract tests catch a drift).
pub(super) const META_CONTENT_SHA256: &str = "content-sha256";
pub(super) const META_OWNER_NODE_UID: &str = "owner-node-uid";
pub(super) const META_CHECKED_IN_AT: &str = "checked-in-at";

/// What the client knows about the stored version of a record (as `S3Records` caches it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Stored {
    pub(super) etag: String,
    pub(super) content_sha256: String,
    pub(super) node_uid: Option<String>,
}

/// Which counter a request increments (as `S3Records` counts them).
#[derive(Clone, Copy, Debug)]
pub(super) enum Counter {
    List,
    Get,
    Head,
    Put,
    Delete,
    Probe,
}

impl FakeRecords {
    /// One S3 request: counted, gated, then applied to the bucket (`apply` is the
    /// server's answer, which may itself be an S3 error the caller interprets).
    pub(super) async fn request<T>(
        &self,
        operation: &'static str,
        target: &str,
        counter: Counter,
        apply: impl FnOnce(&mut Bucket, DateTime<Utc>) -> T,
    ) -> Result<T, RecordsError> {
        {
            let mut c = lock(&self.counts);
            match counter {
                Counter::List => c.list_pages += 1,
                Counter::Get => c.gets += 1,
                Counter::Head => c.heads += 1,
                Counter::Put => c.puts += 1,
                Counter::Delete => c.deletes += 1,
                Counter::Probe => c.probes += 1,
            }
        }
        let call = Call::new(System::S3, operation, target);
        let fate = self.gate.admit(&call).await;
        match fate {
            Fate::Answer => {
                let now = self.now();
                Ok(self.with_bucket(|b| apply(b, now)))
            }
            Fate::Lost => {
                // Applied; only the answer is lost.
                let now = self.now();
                let _lost = self.with_bucket(|b| apply(b, now));
                Err(self.timeout(operation).await)
            }
            Fate::Late => {
                let now = self.now();
                let answer = self.with_bucket(|b| apply(b, now));
                if self.gate.deliver(&call).await {
                    Ok(answer)
                } else {
                    Err(self.timeout(operation).await)
                }
            }
            Fate::Fail(kind) => Err(self.fault(operation, kind).await),
        }
    }

    /// What the real client returns when a request fails with `kind` (the SDK's own
    /// retries used up).
    pub(super) async fn fault(&self, operation: &'static str, kind: FaultKind) -> RecordsError {
        // S3 answers HEAD without a body, so the SDK has no error code to report.
        let head = operation.starts_with("Head");
        let (status, code, message) = match kind {
            FaultKind::Timeout => return self.timeout(operation).await,
            FaultKind::Unavailable => (
                503,
                "ServiceUnavailable",
                "Service is unable to handle request.",
            ),
            FaultKind::Throttled => (503, "SlowDown", "Please reduce your request rate."),
            FaultKind::Denied => (403, "AccessDenied", "Access Denied"),
        };
        if head {
            RecordsError::service(operation, status, "", "")
        } else {
            RecordsError::service(operation, status, code, message)
        }
    }

    pub(super) async fn timeout(&self, operation: &'static str) -> RecordsError {
        if self.wait_on_timeout {
            tokio::time::sleep(self.call_timeout).await;
        }
        RecordsError::Timeout {
            operation,
            timeout: self.call_timeout,
        }
    }

    /// GetObject: bytes and ETag; `None` for 404.
    pub(super) async fn get_object(
        &self,
        key: &str,
    ) -> Result<Option<(Vec<u8>, String)>, RecordsError> {
        self.request("GetObject", key, Counter::Get, |b, _| {
            b.objects
                .get(key)
                .map(|o| (o.bytes.clone(), o.etag.clone()))
        })
        .await
    }

    /// What HEAD (and, without this code's metadata, GET) says about a stored record.
    pub(super) async fn head_record(&self, key: &str) -> Result<Option<Stored>, RecordsError> {
        let head = self
            .request("HeadObject", key, Counter::Head, |b, _| {
                b.objects
                    .get(key)
                    .map(|o| (o.etag.clone(), o.metadata.clone()))
            })
            .await?;
        let Some((etag, meta)) = head else {
            return Ok(None);
        };
        match (meta.get(META_CONTENT_SHA256), meta.get(META_OWNER_NODE_UID)) {
            (Some(content_sha256), Some(node_uid)) => Ok(Some(Stored {
                etag,
                content_sha256: content_sha256.clone(),
                node_uid: Some(node_uid.clone()),
            })),
            _ => Ok(self
                .get_object(key)
                .await?
                .map(|(bytes, etag)| stored_from_body(&bytes, etag))),
        }
    }

    /// The stored version of `key`, from the cache when the listed ETag is the cached one.
    pub(super) async fn stored(
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

    /// PutObject under `condition`; the new ETag, or why S3 refused.
    pub(super) async fn put_object(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: BTreeMap<String, String>,
        condition: Condition<'_>,
    ) -> Result<Result<String, PutRefused>, RecordsError> {
        self.request("PutObject", key, Counter::Put, |b, now| {
            b.put(key, bytes, metadata, condition, now)
        })
        .await
    }

    /// A record PUT as `S3Records::put_record` makes it.
    pub(super) async fn put_record(
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
        let mut metadata =
            BTreeMap::from([(META_CONTENT_SHA256.to_owned(), content_sha256.to_owned())]);
        if is_header_safe(uid) {
            metadata.insert(META_OWNER_NODE_UID.to_owned(), uid.clone());
        }
        let etag = match self.put_object(key, bytes, metadata, condition).await? {
            Ok(etag) => etag,
            Err(PutRefused::Precondition) => {
                self.remember(key, None);
                return Err(RecordsError::PreconditionFailed {
                    operation: OP,
                    key: key.to_owned(),
                });
            }
            Err(PutRefused::NoSuchKey) => return Err(no_such_key(OP)),
        };
        self.remember(
            key,
            Some(Stored {
                etag: etag.clone(),
                content_sha256: content_sha256.to_owned(),
                node_uid: Some(uid.clone()),
            }),
        );
        Ok(ListedRecord {
            key: key.to_owned(),
            etag: Some(etag),
            last_modified: None,
            size,
        })
    }

    /// The owner stored in `key`, best effort (for the conflict message).
    pub(super) async fn stored_owner(&self, key: &str) -> Option<Box<RecordOwner>> {
        match self.get_object(key).await {
            Ok(Some((bytes, _))) => owner_from_body(&bytes).map(Box::new),
            Ok(None) | Err(_) => None,
        }
    }

    pub(super) async fn delete_object(&self, key: &str) -> Result<(), RecordsError> {
        let result = self
            .request("DeleteObject", key, Counter::Delete, |b, _| {
                b.objects.remove(key);
            })
            .await;
        // The real client forgets the key once S3 answered anything; a timeout returns first.
        if !matches!(result, Err(RecordsError::Timeout { .. })) {
            self.remember(key, None);
        }
        result
    }

    pub(super) async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Page, RecordsError> {
        self.request("ListObjectsV2", prefix, Counter::List, |b, _| {
            b.page(prefix, after, max)
        })
        .await
    }

    /// One probe request after HeadBucket: `Err(why)` when S3 answered with an error
    /// (the check is undetermined), the outer error for a transport failure.
    pub(super) async fn probe_check<T>(
        &self,
        operation: &'static str,
        target: &str,
        apply: impl FnOnce(&mut Bucket) -> T,
    ) -> Result<Result<T, String>, RecordsError> {
        match self
            .request(operation, target, Counter::Probe, |b, _| apply(b))
            .await
        {
            Ok(answer) => Ok(Ok(answer)),
            Err(RecordsError::Service {
                status,
                code,
                message,
                ..
            }) => {
                let code = if code.is_empty() { "error" } else { &code };
                let mut why = format!("{operation} answered {status} {code}");
                if !message.is_empty() {
                    why.push_str(": ");
                    why.extend(message.chars().take(120));
                }
                Ok(Err(why))
            }
            Err(e) => Err(e),
        }
    }
}

pub(super) fn check_certname(certname: &str) -> Result<(), RecordsError> {
    Ok(validate_certname(certname)?)
}

pub(super) fn no_such_key(operation: &'static str) -> RecordsError {
    RecordsError::service(
        operation,
        404,
        "NoSuchKey",
        "The specified key does not exist.",
    )
}

pub(super) fn signature_bytes(signature: &SignatureRecord) -> Result<Vec<u8>, RecordsError> {
    let mut bytes =
        serde_json::to_vec_pretty(signature).map_err(|source| RecordsError::Encode {
            certname: signature.certname.clone(),
            source,
        })?;
    bytes.push(b'\n');
    Ok(bytes)
}

pub(super) fn is_header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

pub(super) fn stored_from_body(bytes: &[u8], etag: String) -> Stored {
    Stored {
        etag,
        content_sha256: sha256_hex(bytes),
        node_uid: owner_from_body(bytes).map(|o| o.node_uid),
    }
}

pub(super) fn owner_from_body(bytes: &[u8]) -> Option<RecordOwner> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    serde_json::from_value(value.get("owner")?.clone()).ok()
}
