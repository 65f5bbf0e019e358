//! The Puppet Server CA: the narrow interface the reconcilers use, and its
//! HTTP implementation (mutual TLS against `/puppet-ca/v1`).
//!
//! The trait lets the planner and reconcilers be tested without a CA; the
//! real one is [`HttpCa`]. Every method is one bounded call the reconciler
//! may repeat: nothing here retries or loops on errors — [`CaError::is_retryable`]
//! and [`CaError::retry_after`] tell the caller how to back off.

mod error;
mod http_api;
mod http_client;
mod retry_after;
mod status_json;

pub use error::CaError;
pub use http_client::{HttpCa, DEFAULT_TIMEOUT};
pub use puppet_conductor_core::certificate::{CertState, CertificateInfo};
pub use puppet_conductor_core::certname::validate_certname;

/// What the operator needs from a Puppet CA.
///
/// Every method that takes a certname refuses one that fails
/// [`validate_certname`] with [`CaError::InvalidCertname`] before sending anything.
#[async_trait::async_trait]
pub trait PuppetCa: Send + Sync {
    /// All certificates and CSRs the CA knows, or only those in `state`.
    ///
    /// One call serves every node of a master; poll this rather than
    /// [`PuppetCa::status`] per node.
    async fn list(&self, state: Option<CertState>) -> Result<Vec<CertificateInfo>, CaError>;

    /// The CSR or certificate for `certname`; `None` if the CA has neither.
    async fn status(&self, certname: &str) -> Result<Option<CertificateInfo>, CaError>;

    /// The PEM of the waiting CSR for `certname`; `None` if there is none
    /// (never submitted, already signed, or removed).
    ///
    /// The status JSON does not carry the CSR's attributes; verify the
    /// challenge and `pp_instance_id` from this PEM before signing.
    async fn csr_pem(&self, certname: &str) -> Result<Option<String>, CaError>;

    /// Sign the waiting CSR for `certname`.
    ///
    /// Level-triggered and idempotent: when the CA answers 409 because there
    /// is no CSR to sign, the certname's state is read back and a certificate
    /// that is already `signed` is success (a previous pass, or policy
    /// autosign, got there first). A 409 for any other state (e.g. revoked)
    /// stays an error with category `conflict`; an unknown certname is 404
    /// (`not_found`). Neither is retryable: observe again instead.
    ///
    /// The API signs by certname, not by CSR: verify the CSR right before
    /// calling this, and compare the signed certificate's fingerprint or key
    /// afterwards if the CSR could have been replaced in between.
    async fn sign(&self, certname: &str) -> Result<(), CaError>;

    /// Make sure `certname` can no longer be used: a signed or revoked
    /// certificate is revoked (added to the CRL) and deleted via
    /// `PUT /puppet-ca/v1/clean`, and a waiting CSR is deleted (`clean`
    /// leaves a requested-only CSR in place).
    ///
    /// Idempotent: a certname the CA does not know is success. Finishes by
    /// reading the state back; if something re-created it meanwhile the
    /// error is [`CaError::NotCleaned`] (retryable).
    async fn revoke_and_clean(&self, certname: &str) -> Result<(), CaError>;

    /// The signed certificate of `certname` (PEM); `None` if the CA has none.
    ///
    /// Read after signing to confirm the CA signed the very key that was verified (the
    /// API signs by certname, so the CSR could have been replaced in between).
    async fn certificate_pem(&self, certname: &str) -> Result<Option<String>, CaError>;

    /// Removes the waiting CSR of `certname` and nothing else: a certificate that is
    /// signed or revoked is left alone. Returns whether a CSR was removed.
    ///
    /// Used for refused CSRs: the CA keeps one CSR per certname, so a hostile one left
    /// waiting would block the real agent's submission.
    async fn remove_request(&self, certname: &str) -> Result<bool, CaError>;

    /// The CA certificate (PEM), what agents and the operator must trust.
    async fn ca_certificate(&self) -> Result<String, CaError>;

    /// The CA's certificate revocation list (PEM).
    async fn crl(&self) -> Result<String, CaError>;
}
