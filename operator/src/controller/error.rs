//! Errors of a reconcile pass and how the error policy treats them.

use crate::ca::CaError;
use crate::cloud::CloudError;
use crate::records::RecordsError;
use crate::spec::SpecError;
use crate::userdata::UserDataError;

/// Why a reconcile pass stopped early.
#[derive(thiserror::Error, Debug)]
pub enum ReconcileError {
    /// The Kubernetes API refused or failed a call.
    #[error("kubernetes API call failed")]
    Kube(#[source] kube::Error),
    /// The cloud (EC2/Eucalyptus) failed a call.
    #[error("cloud call failed")]
    Cloud(#[from] CloudError),
    /// The records bucket failed a call.
    #[error("records call failed")]
    Records(#[from] RecordsError),
    /// The Puppet CA failed a call.
    #[error("CA call failed")]
    Ca(#[from] CaError),
    /// The user data could not be rendered.
    #[error("user data")]
    UserData(#[from] UserDataError),
    /// The spec with its master's defaults cannot be acted on (e.g. no image anywhere).
    #[error("invalid spec")]
    Spec(#[from] SpecError),
    /// The spec is valid for the schema but cannot be acted on.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The object could not be read as its kind (a malformed object in the API).
    #[error("malformed object: {0}")]
    InvalidObject(String),
    /// The referenced PuppetMaster does not exist (yet).
    #[error("PuppetMaster {0} not found")]
    MasterNotFound(String),
    /// A referenced Secret is missing or lacks a key.
    #[error("secret {name}: {problem}")]
    Secret {
        /// Secret name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The object lacks a name, namespace or UID (never for objects read from the API).
    #[error("object has no {0}")]
    MissingMetadata(&'static str),
    /// Deletion is under way (instances still shutting down): not a failure, but the
    /// finalizer is released on `Ok`, so waiting is reported this way.
    #[error("cleanup in progress: {0}")]
    CleanupInProgress(String),
    /// A failure this pass already wrote into the node's status: the error reporting
    /// must not write it again (one status write per pass).
    #[error(transparent)]
    StatusReported(Box<ReconcileError>),
}

impl ReconcileError {
    /// Permanent errors wait for a change of the object; the rest back off and retry.
    pub fn is_permanent(&self) -> bool {
        match self {
            ReconcileError::InvalidSpec(_)
            | ReconcileError::Spec(_)
            | ReconcileError::InvalidObject(_)
            | ReconcileError::UserData(_) => true,
            ReconcileError::StatusReported(e) => e.is_permanent(),
            // Secrets, masters and credentials can be fixed without touching the node: retry.
            _ => false,
        }
    }

    /// Short label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::Kube(_) => "kubernetes",
            ReconcileError::Cloud(_) if self.is_retryable() => "cloud-unavailable",
            ReconcileError::Cloud(_) => "cloud-refused",
            ReconcileError::Records(_) if self.is_retryable() => "records-unavailable",
            ReconcileError::Records(_) => "records-refused",
            ReconcileError::Ca(_) if self.is_retryable() => "ca-unavailable",
            ReconcileError::Ca(_) => "ca-refused",
            ReconcileError::UserData(_) => "user-data",
            ReconcileError::InvalidSpec(_) | ReconcileError::Spec(_) => "invalid-spec",
            ReconcileError::InvalidObject(_) => "invalid-object",
            ReconcileError::MasterNotFound(_) => "master-not-found",
            ReconcileError::Secret { .. } => "secret",
            ReconcileError::MissingMetadata(_) => "metadata",
            ReconcileError::CleanupInProgress(_) => "cleanup-in-progress",
            ReconcileError::StatusReported(e) => e.category(),
        }
    }

    /// Whether the failure may pass by itself (a timeout, throttling, a service that is
    /// down, a write conflict) rather than being a refusal that only a change elsewhere
    /// mends (credentials, a missing Secret or master, a request the service rejects).
    pub fn is_retryable(&self) -> bool {
        match self {
            ReconcileError::Kube(kube::Error::Api(status)) => {
                status.code >= 500 || status.code == 429 || status.code == 409
            }
            // No answer at all (connection, TLS, a body that did not arrive).
            ReconcileError::Kube(_) => true,
            ReconcileError::Cloud(e) => e.is_retryable(),
            ReconcileError::Records(e) => e.is_retryable(),
            ReconcileError::Ca(e) => e.is_retryable(),
            ReconcileError::CleanupInProgress(_) => true,
            ReconcileError::StatusReported(e) => e.is_retryable(),
            ReconcileError::Spec(_)
            | ReconcileError::InvalidSpec(_)
            | ReconcileError::InvalidObject(_)
            | ReconcileError::UserData(_)
            | ReconcileError::MasterNotFound(_)
            | ReconcileError::Secret { .. }
            | ReconcileError::MissingMetadata(_) => false,
        }
    }

    /// How long the object `key` waits after this failure (not for permanent errors,
    /// which wait for a change): a retryable failure backs off from the backoff's base,
    /// a refusal no sooner than `refused_floor` (asking again at once would be refused
    /// the same way), and either no sooner than the service's `Retry-After`; the
    /// backoff's cap bounds every wait.
    pub fn retry_delay(
        &self,
        backoff: &super::backoff::Backoff,
        key: &str,
        refused_floor: std::time::Duration,
    ) -> std::time::Duration {
        let after = self.retry_after();
        let floor = if self.is_retryable() {
            after
        } else {
            Some(after.map_or(refused_floor, |a| a.max(refused_floor)))
        };
        backoff.next_delay_at_least(key, floor)
    }

    /// How long the failing service asked to be left alone (the CA's `Retry-After`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self.root() {
            ReconcileError::Ca(e) => e.retry_after(),
            _ => None,
        }
    }

    /// The innermost reconcile error (unwrapping a status-reported wrapper).
    pub fn root(&self) -> &ReconcileError {
        match self {
            ReconcileError::StatusReported(e) => e.root(),
            _ => self,
        }
    }
}

impl ReconcileError {
    /// `error` after the pass tried to write it into the object's status (`written`).
    /// When that write failed, `error` itself is returned, not the write's failure: the
    /// error policy backs off by what really went wrong, and its report writes the
    /// status again.
    pub fn reported<T>(error: ReconcileError, written: Result<T, ReconcileError>) -> Self {
        match written {
            Ok(_) => ReconcileError::StatusReported(Box::new(error)),
            Err(write) => {
                tracing::warn!(error = %chain(&write), "could not write the failure into status");
                error
            }
        }
    }

    /// Whether the pass already wrote this failure into the object's status.
    pub fn status_reported(&self) -> bool {
        matches!(self, ReconcileError::StatusReported(_))
    }
}

/// Renders an error with its whole source chain, for conditions, events and logs.
///
/// A wrapper whose message already ends with its source's (kube's finalizer error
/// prints `failed to apply object: {0}` and also returns it as the source) keeps only
/// its own words, so no text appears twice.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut messages = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        messages.push(e.to_string());
        current = e.source();
    }
    let mut parts: Vec<&str> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let own = match messages.get(i + 1) {
            Some(next) if !next.is_empty() => message
                .strip_suffix(next.as_str())
                .map_or(message.as_str(), |head| head.trim_end_matches([' ', ':'])),
            _ => message.as_str(),
        };
        if !own.is_empty() && parts.last() != Some(&own) {
            parts.push(own);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrapper that prints its source in its own message and also returns it as the
    /// source (as kube's finalizer error does).
    #[derive(Debug)]
    struct Embedding(ReconcileError);

    impl std::fmt::Display for Embedding {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failed to apply object: {}", self.0)
        }
    }

    impl std::error::Error for Embedding {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn throttled() -> ReconcileError {
        ReconcileError::Cloud(CloudError::api(
            "RunInstances",
            "RequestLimitExceeded",
            "slow down",
            Some(503),
            None,
        ))
    }

    #[test]
    fn a_wrapper_that_prints_its_source_is_named_once() {
        let error = Embedding(throttled());
        assert_eq!(
            chain(&error),
            "failed to apply object: cloud call failed: \
             EC2 RunInstances failed: RequestLimitExceeded: slow down"
        );
    }

    #[test]
    fn a_chain_of_plain_wrappers_joins_every_level() {
        let error = ReconcileError::StatusReported(Box::new(throttled()));
        assert_eq!(
            chain(&error),
            "cloud call failed: EC2 RunInstances failed: RequestLimitExceeded: slow down"
        );
    }

    #[test]
    fn a_failed_status_write_keeps_the_original_error() {
        let written: Result<(), _> = Err(ReconcileError::MissingMetadata("namespace"));
        let error = ReconcileError::reported(throttled(), written);
        assert!(!error.status_reported(), "{error:?}");
        assert_eq!(error.category(), "cloud-unavailable");
    }

    fn denied() -> ReconcileError {
        ReconcileError::Cloud(CloudError::api(
            "DescribeInstances",
            "UnauthorizedOperation",
            "not allowed",
            Some(403),
            None,
        ))
    }

    #[test]
    fn a_refusal_waits_at_least_the_floor_and_a_transient_failure_backs_off_from_the_base() {
        use super::super::backoff::Backoff;
        use std::time::Duration;
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let floor = Duration::from_secs(10);
        assert!(throttled().is_retryable() && !denied().is_retryable());
        let first = throttled().retry_delay(&backoff, "a", floor);
        assert!(first < Duration::from_secs(3), "{first:?}");
        let refused = denied().retry_delay(&backoff, "b", floor);
        assert!(refused >= floor, "{refused:?}");
        // Backoff still grows past the floor for a refusal that lasts.
        let mut last = refused;
        for _ in 0..8 {
            last = denied().retry_delay(&backoff, "b", floor);
        }
        assert!(last > Duration::from_secs(60), "{last:?}");
        assert!(
            last <= Duration::from_secs(300),
            "the cap bounds it: {last:?}"
        );
        let missing = ReconcileError::MasterNotFound("ns/m".into());
        assert!(!missing.is_retryable());
        assert!(missing.retry_delay(&backoff, "c", floor) >= floor);
        let wrapped = ReconcileError::StatusReported(Box::new(denied()));
        assert!(!wrapped.is_retryable());
        assert_eq!(wrapped.category(), "cloud-refused");
    }

    #[test]
    fn a_written_status_marks_the_error_reported() {
        let error = ReconcileError::reported(throttled(), Ok(()));
        assert!(error.status_reported());
        assert_eq!(error.category(), "cloud-unavailable");
    }
}
