//! Node records as data: the record and signature-record documents, their keys under
//! the prefix, what one listing saw, and the privacy decision (pure). The S3 client and
//! the in-memory bucket both speak these types.

mod keys;
mod node_record;
mod privacy;
mod signature;

pub use keys::{normalize_prefix, KeyLayout, ParsedKey};
pub use node_record::{sha256_hex, EncodeError, NodeRecord, RecordOwner, RecordState};
pub use privacy::{evaluate_privacy, AccessBlock, AclGrant, Observation, PrivacyObservations};
pub use signature::{Claim, SignatureRecord, Signer};

use imbl::{OrdMap, OrdSet};

use chrono::{DateTime, Utc};

/// Everything one listing of the prefix saw: records and check-ins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordListing {
    /// Records by certname.
    pub records: OrdMap<String, ListedRecord>,
    /// Last check-in by certname (the check-in object's `LastModified`).
    pub check_ins: OrdMap<String, DateTime<Utc>>,
    /// Certnames with a signature record (an incarnation whose one signature is claimed).
    pub signatures: OrdSet<String>,
}

/// One record object as the listing saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedRecord {
    /// Full object key.
    pub key: String,
    /// The object's ETag as S3 returned it (quotes included).
    pub etag: Option<String>,
    /// When S3 stored this version.
    pub last_modified: Option<DateTime<Utc>>,
    /// Size in bytes.
    pub size: i64,
}

/// What [`Records::put_if_changed`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The record was created or replaced; what a listing would now show for
    /// it (`last_modified` is `None`: S3 does not return it on PUT).
    Written(ListedRecord),
    /// The stored record already had this content; nothing was sent.
    Unchanged,
}

/// Whether the records bucket or its objects are readable by the public.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Privacy {
    /// Nothing found grants public access.
    Private,
    /// Something grants public access.
    Public {
        /// What does.
        reason: String,
    },
    /// Some check could not be made (denied, not implemented) and nothing
    /// found is public.
    Unknown {
        /// Which checks failed and why.
        reason: String,
    },
}
