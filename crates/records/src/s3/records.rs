//! The [`Records`] implementation of [`S3Records`]: certnames checked first, then the
//! calls of the sibling modules.

use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, SecondsFormat, Utc};
use puppet_conductor_core::certname::validate_certname;
use puppet_conductor_core::record::{sha256_hex, NodeRecord};

use super::calls::Counter;
use super::conditional::{lost_race, Condition};
use super::encoding::{signature_bytes, stored_from_body, META_CHECKED_IN_AT};
use super::S3Records;
use crate::error::RecordsError;
use crate::{Claim, ListedRecord, Privacy, RecordListing, Records, SignatureRecord, WriteOutcome};

#[async_trait::async_trait]
impl Records for S3Records {
    async fn list(&self) -> Result<RecordListing, RecordsError> {
        self.list_records().await
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
        crate::s3_probe::probe(self).await
    }
}

pub(super) fn check_certname(certname: &str) -> Result<(), RecordsError> {
    Ok(validate_certname(certname)?)
}
