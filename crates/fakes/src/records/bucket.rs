//! The S3 side of [`super::FakeRecords`]: objects with ETags and metadata, conditional
//! PUTs as S3 answers them, ListObjectsV2 pages in key order.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use puppet_conductor_records::sha256_hex;

/// One stored object.
#[derive(Clone, Debug)]
pub(super) struct Object {
    pub(super) bytes: Vec<u8>,
    pub(super) etag: String,
    pub(super) last_modified: DateTime<Utc>,
    pub(super) metadata: BTreeMap<String, String>,
}

/// The bucket: what every client of it sees.
#[derive(Default)]
pub(super) struct Bucket {
    /// By key; a `BTreeMap` lists in S3's order (UTF-8 byte order).
    pub(super) objects: BTreeMap<String, Object>,
    /// What the probe reports as public, if anything.
    pub(super) public: Option<String>,
}

/// The precondition of a PUT.
#[derive(Clone, Copy, Debug)]
pub(super) enum Condition<'a> {
    /// A plain PUT.
    Unconditional,
    /// `If-None-Match: *`.
    Absent,
    /// `If-Match: <etag>`.
    Etag(&'a str),
}

/// Why S3 refused a conditional PUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PutRefused {
    /// 412: the condition did not hold.
    Precondition,
    /// 404 `NoSuchKey`: `If-Match` named an object that is gone.
    NoSuchKey,
}

/// One object as ListObjectsV2 lists it.
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) etag: String,
    pub(super) last_modified: DateTime<Utc>,
    pub(super) size: i64,
}

/// One ListObjectsV2 page, and where the next starts (the last key served).
pub(super) struct Page {
    pub(super) objects: Vec<Entry>,
    pub(super) next: Option<String>,
}

impl Bucket {
    /// Stores an object; its ETag.
    pub(super) fn store(
        &mut self,
        key: &str,
        bytes: Vec<u8>,
        metadata: BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> String {
        let etag = etag_of(&bytes);
        self.objects.insert(
            key.to_owned(),
            Object {
                bytes,
                etag: etag.clone(),
                last_modified: now,
                metadata,
            },
        );
        etag
    }

    pub(super) fn page(&self, prefix: &str, after: Option<&str>, max: usize) -> Page {
        use std::ops::Bound;
        let start = match after {
            Some(after) => Bound::Excluded(after.to_owned()),
            None => Bound::Included(prefix.to_owned()),
        };
        let mut objects: Vec<Entry> = Vec::new();
        let mut next = None;
        for (key, o) in self.objects.range((start, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if objects.len() == max {
                // More keys follow: the page is truncated and the next starts after it.
                next = objects.last().map(|e| e.key.clone());
                break;
            }
            let size = i64::try_from(o.bytes.len()).unwrap_or(i64::MAX);
            objects.push(Entry {
                key: key.clone(),
                etag: o.etag.clone(),
                last_modified: o.last_modified,
                size,
            });
        }
        Page { objects, next }
    }

    /// PutObject under `condition`: the new ETag, or why S3 refused.
    pub(super) fn put(
        &mut self,
        key: &str,
        bytes: Vec<u8>,
        metadata: BTreeMap<String, String>,
        condition: Condition<'_>,
        now: DateTime<Utc>,
    ) -> Result<String, PutRefused> {
        let current = self.objects.get(key).map(|o| o.etag.as_str());
        match (condition, current) {
            (Condition::Absent, Some(_)) => return Err(PutRefused::Precondition),
            (Condition::Etag(_), None) => return Err(PutRefused::NoSuchKey),
            (Condition::Etag(want), Some(have)) if !same_etag(want, have) => {
                return Err(PutRefused::Precondition)
            }
            _ => {}
        }
        Ok(self.store(key, bytes, metadata, now))
    }
}

/// A quoted, content-derived ETag: equal content, equal ETag, as on S3.
pub(super) fn etag_of(bytes: &[u8]) -> String {
    let hash = sha256_hex(bytes);
    format!("\"{}\"", &hash[..32])
}

/// ETags compare equal with or without their quotes.
pub(super) fn same_etag(a: &str, b: &str) -> bool {
    a.trim_matches('"') == b.trim_matches('"')
}
