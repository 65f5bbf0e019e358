//! Probes: the CA (certificate, fingerprint, CSR listing) as the master's conditions see it.

use crate::ca::{CaError, CertState, CertificateInfo};
use crate::certificate::pem_fingerprint;
use crate::controller::error::chain;
use crate::controller::services::MasterServices;
use crate::status::master::Probe;

/// What this pass saw of the master's CA queue.
pub(super) struct CaProbe {
    pub(super) fingerprint: Probe<String>,
    /// CSRs waiting at the CA (`None` when the CA could not be listed).
    pub(super) pending: Option<Vec<CertificateInfo>>,
}

/// Fetches the CA certificate (reachability, fingerprint) and lists waiting CSRs (which
/// also proves auth.conf lets the operator's client certificate manage certificates).
pub(super) async fn probe_ca(services: &MasterServices) -> CaProbe {
    let certificate = match services.ca.ca_certificate().await {
        Ok(pem) => pem,
        Err(e) => {
            return CaProbe {
                fingerprint: Probe::Failed {
                    reason: "CAUnreachable",
                    message: chain(&e),
                },
                pending: None,
            }
        }
    };
    let Some(fingerprint) = pem_fingerprint(&certificate) else {
        return CaProbe {
            fingerprint: Probe::Failed {
                reason: "CACertificateInvalid",
                message: "the CA served no PEM certificate".to_string(),
            },
            pending: None,
        };
    };
    match services.ca.list(Some(CertState::Requested)).await {
        Ok(pending) => CaProbe {
            fingerprint: Probe::Ok(fingerprint),
            pending: Some(pending),
        },
        Err(e) => CaProbe {
            fingerprint: Probe::Failed {
                reason: listing_failure_reason(&e),
                message: listing_failure_message(&e),
            },
            pending: None,
        },
    }
}

/// The `CAReachable` reason when the CA answered its certificate but not the listing.
pub(super) fn listing_failure_reason(error: &CaError) -> &'static str {
    match error {
        CaError::Status {
            status: 401 | 403, ..
        } => "CAClientNotAllowed",
        CaError::Status { status, .. } if *status >= 500 => "CAListingFailed",
        _ => "CAListingUnavailable",
    }
}

/// What to tell the user about a failed listing: only a refusal points at auth.conf; a
/// server error is usually one malformed CSR that puppetserver cannot list.
pub(super) fn listing_failure_message(error: &CaError) -> String {
    match error {
        CaError::Status { status: 401 | 403, .. } => format!(
            "the CA answered but refused to list CSRs (check auth.conf allows the client certificate): {}",
            chain(error)
        ),
        CaError::Status { status, .. } if *status >= 500 => format!(
            "the CA's certificate_statuses listing fails with a server error, usually because of one malformed CSR it cannot list; nodes waiting for a CSR are read one by one meanwhile (find the CSR in the puppetserver log and delete it): {}",
            chain(error)
        ),
        _ => format!("listing the CA's CSRs failed: {}", chain(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> CaError {
        CaError::Status {
            operation: "list",
            status: code,
            message: "boom".into(),
            retry_after: None,
        }
    }

    #[test]
    fn a_failing_listing_names_its_real_cause() {
        assert_eq!(listing_failure_reason(&status(403)), "CAClientNotAllowed");
        assert!(listing_failure_message(&status(403)).contains("auth.conf"));
        assert_eq!(listing_failure_reason(&status(500)), "CAListingFailed");
        let server_error = listing_failure_message(&status(500));
        assert!(server_error.contains("malformed CSR"), "{server_error}");
        assert!(!server_error.contains("auth.conf"), "{server_error}");
    }
}
