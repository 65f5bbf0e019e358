//! Plain object calls: GET (bytes and ETag), HEAD of a record (its stored hash and
//! owner), DELETE (absent is success).

use puppet_conductor_core::record::RecordOwner;

use super::cache::Stored;
use super::calls::{no_etag, Counter};
use super::encoding::{
    owner_from_body, stored_from_body, META_CONTENT_SHA256, META_OWNER_NODE_UID,
};
use super::S3Records;
use crate::error::{service_parts, RecordsError};

impl S3Records {
    /// The object's bytes and ETag; `None` if there is no such object.
    pub(super) async fn get_object(
        &self,
        key: &str,
    ) -> Result<Option<(Vec<u8>, String)>, RecordsError> {
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
    pub(super) async fn head_record(&self, key: &str) -> Result<Option<Stored>, RecordsError> {
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

    /// The owner stored in `key`, best effort (for the conflict message).
    pub(super) async fn stored_owner(&self, key: &str) -> Option<Box<RecordOwner>> {
        match self.get_object(key).await {
            Ok(Some((bytes, _))) => owner_from_body(&bytes).map(Box::new),
            Ok(None) => None,
            Err(error) => {
                tracing::debug!(key, %error, "could not read the conflicting record's owner");
                None
            }
        }
    }

    pub(super) async fn delete_object(&self, key: &str) -> Result<(), RecordsError> {
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
