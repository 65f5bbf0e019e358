//! The listing: one paginated ListObjectsV2 over the prefix, sorted into records,
//! check-ins and signature records; the cache forgets versions no longer listed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use puppet_conductor_core::record::ParsedKey;

use super::cache::same_etag;
use super::calls::Counter;
use super::S3Records;
#[cfg(doc)]
use crate::Records;
use crate::{ListedRecord, RecordListing, RecordsError};

/// Keys per ListObjectsV2 page (S3's maximum).
const LIST_PAGE_SIZE: i32 = 1000;

impl S3Records {
    /// [`Records::list`]: every record, check-in and signature record under the prefix.
    pub(super) async fn list_records(&self) -> Result<RecordListing, RecordsError> {
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
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}
