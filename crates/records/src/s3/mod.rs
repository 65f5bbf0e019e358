//! [`Records`] on S3 (AWS, Eucalyptus Walrus/OSG, moto, any S3-compatible store).
//!
//! This module holds [`S3Records`] itself; its submodules hold the client's
//! configuration, the counted calls, the version cache, plain object calls,
//! conditional writes, the listing, the stored encoding and the [`Records`]
//! implementation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_s3::Client;
use puppet_conductor_core::record::KeyLayout;

#[cfg(doc)]
use super::Records;

mod cache;
mod calls;
mod conditional;
mod config;
mod encoding;
mod listing;
mod objects;
mod records;

pub use calls::CallCounts;
pub(crate) use calls::Counter;
pub use config::{RecordsConfig, StaticCredentials, DEFAULT_CALL_TIMEOUT};

use cache::Stored;
use calls::Counters;

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
    /// The key layout in use.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }
}

#[cfg(test)]
mod tests;
