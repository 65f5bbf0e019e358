//! The in-process cache of stored record versions (key → [`Stored`]), valid while
//! the listed ETag matches: what spares a HEAD per record and pass.

use std::collections::HashMap;
use std::sync::MutexGuard;

use puppet_conductor_core::sync::lock;

use super::S3Records;
use crate::{ListedRecord, RecordsError};

/// What is known about the stored version of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Stored {
    pub(super) etag: String,
    pub(super) content_sha256: String,
    /// `None` when the object names no owner (not written by this code, or unparseable).
    pub(super) node_uid: Option<String>,
}

impl S3Records {
    pub(super) fn known(&self) -> MutexGuard<'_, HashMap<String, Stored>> {
        // The map is only ever replaced entry by entry: a panic elsewhere
        // cannot leave it inconsistent.
        lock(&self.known)
    }

    /// The stored version of `key` as of now, from the cache when the listed
    /// ETag still matches, else from S3.
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

    pub(super) fn remember(&self, key: &str, stored: Option<Stored>) {
        let mut known = self.known();
        match stored {
            Some(s) => known.insert(key.to_owned(), s),
            None => known.remove(key),
        };
    }
}

/// ETags compare equal with or without their quotes.
pub(super) fn same_etag(a: &str, b: &str) -> bool {
    a.trim_matches('"') == b.trim_matches('"')
}
