//! What one master's cloud, bucket and CA were seen to hold: the data of a snapshot,
//! without its timing or the I/O that took it, so the pure parts (orphan finding) can
//! read it.

use std::collections::HashMap;

use crate::certificate::CertificateInfo;
use crate::instance::Instance;
use crate::record::RecordListing;

/// One observation of a master's instances, records and CA.
#[derive(Clone, Debug)]
pub struct MasterObservation {
    /// Every instance tagged for the master, any state.
    pub instances: Vec<Instance>,
    /// Records and check-ins under the master's prefix.
    pub records: RecordListing,
    /// Certificates and CSRs by certname; `None` when the CA could not be listed
    /// (unknown, never read as empty).
    pub certificates: Option<HashMap<String, CertificateInfo>>,
}
