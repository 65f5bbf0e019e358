//! Certificates as the CA lists them, their fingerprints, and where a node's certificate
//! stands against its record.

mod fingerprint;
mod info;
pub mod standing;

pub use fingerprint::{pem_fingerprint, pem_public_key_sha256};
pub use info::{CertState, CertificateInfo};
