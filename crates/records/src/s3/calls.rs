//! One S3 call: run under the timeout, counted by kind ([`CallCounts`]), its error
//! classified.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::S3Records;
use crate::error::{service_parts, RecordsError};
#[cfg(doc)]
use crate::Records;

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
pub(super) struct Counters {
    list_pages: AtomicU64,
    gets: AtomicU64,
    heads: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    probes: AtomicU64,
}

/// Which counter a call increments.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    List,
    Get,
    Head,
    Put,
    Delete,
    Probe,
}

impl S3Records {
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
    pub(crate) async fn call<T, E>(
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
    pub(crate) fn error<E>(&self, operation: &'static str, error: SdkError<E>) -> RecordsError
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
}

pub(super) fn no_etag(operation: &'static str) -> RecordsError {
    RecordsError::InvalidResponse {
        operation,
        what: "no ETag in the response".into(),
    }
}
