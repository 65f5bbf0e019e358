//! Conditional record writes: `If-None-Match: *` to create, `If-Match: <etag>` to
//! replace, and which answers mean the race was lost.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use puppet_conductor_core::record::NodeRecord;

use super::cache::Stored;
use super::calls::{no_etag, Counter};
use super::encoding::{is_header_safe, META_CONTENT_SHA256, META_OWNER_NODE_UID};
use super::S3Records;
use crate::error::{service_parts, RecordsError};
use crate::ListedRecord;

/// The precondition of a record PUT.
#[derive(Clone, Copy, Debug)]
pub(super) enum Condition<'a> {
    /// `If-None-Match: *`.
    Absent,
    /// `If-Match: <etag>`.
    Etag(&'a str),
}

impl S3Records {
    /// PUT the record's bytes under a condition.
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
}

/// A conditional PUT that lost: 412, or 409 ConditionalRequestConflict
/// (S3's answer when another conditional write is in flight).
pub(super) fn lost_race<E: ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    let (status, code, _) = service_parts(error);
    status == 412 || code == "PreconditionFailed" || code == "ConditionalRequestConflict"
}
