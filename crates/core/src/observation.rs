//! What one master's cloud, bucket and CA were seen to hold: the data of a snapshot,
//! without its timing or the I/O that took it, so the pure parts (orphan finding) can
//! read it.
//!
//! Its collections are persistent (imbl): a snapshot is copied for every launch and
//! record write the operator folds into it, and a copy shares all it does not change,
//! so a burst of n writes costs O(n log n), not O(n²).

use crate::certificate::CertificateInfo;
use crate::instance::Instance;
use crate::record::RecordListing;

/// One observation of a master's instances, records and CA.
#[derive(Clone, Debug)]
pub struct MasterObservation {
    /// Every instance tagged for the master, any state.
    pub instances: imbl::Vector<Instance>,
    /// Records and check-ins under the master's prefix.
    pub records: RecordListing,
    /// Certificates and CSRs by certname; `None` when the CA could not be listed
    /// (unknown, never read as empty).
    pub certificates: Option<CaListing>,
}

/// The CA's certificates and CSRs by certname, as one listing saw them.
pub type CaListing = imbl::HashMap<String, CertificateInfo>;
