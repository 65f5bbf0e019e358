//! What an AWS answer means, for every AWS client of the operator: the SDK's own retry
//! classification (aws-runtime's throttling and transient code lists, smithy's transient
//! statuses) plus the codes all AWS query and REST services share for refused
//! credentials and internal failures. Service clients add only their service's codes.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};

/// What a code means to any AWS service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsClass {
    /// Slow down: the service's rate limits are hit (retry with backoff).
    Throttled,
    /// The request timed out or the service failed internally (retry).
    Transient,
    /// The credentials were refused or may not do this (retrying will not help).
    Auth,
}

impl AwsClass {
    /// Whether a retry can succeed without anything changing.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Transient)
    }
}

/// Internal failures, named alike by the AWS services (and moto, Eucalyptus, MinIO).
const INTERNAL_ERRORS: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "ServerInternal",
];

/// Credentials refused, expired or not allowed: the common AWS codes.
const AUTH_ERRORS: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "RequestExpired",
];

/// What `code` means to any AWS service; `None` for a code only its service knows.
pub fn classify_code(code: &str) -> Option<AwsClass> {
    if THROTTLING_ERRORS.contains(&code) {
        Some(AwsClass::Throttled)
    } else if TRANSIENT_ERRORS.contains(&code) || INTERNAL_ERRORS.contains(&code) {
        Some(AwsClass::Transient)
    } else if AUTH_ERRORS.contains(&code) {
        Some(AwsClass::Auth)
    } else {
        None
    }
}

/// Whether an answer with this HTTP status is worth retrying whatever its code says
/// (request timeout, too many requests, server errors).
pub fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// Whether the credentials provider may succeed on a retry (it timed out or failed
/// transiently), as opposed to being misconfigured.
pub fn credentials_retryable(error: &CredentialsError) -> bool {
    match error {
        CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_) => true,
        CredentialsError::CredentialsNotLoaded(_)
        | CredentialsError::InvalidConfiguration(_)
        | CredentialsError::Unhandled(_) => false,
        // CredentialsError is non-exhaustive.
        _ => false,
    }
}

/// The first error of type `T` in `error`'s source chain (itself included).
pub fn find_in_chain<'a, T: StdError + 'static>(
    error: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// A service message cut to `max` characters, whitespace trimmed: answers from a proxy
/// can be whole HTML pages.
pub fn trim_message(message: &str, max: usize) -> String {
    message.trim().chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdks_throttling_codes_are_throttling_for_every_service() {
        for code in [
            "RequestLimitExceeded",
            "SlowDown",
            "Throttling",
            "EC2ThrottledException",
        ] {
            assert_eq!(classify_code(code), Some(AwsClass::Throttled), "{code}");
        }
    }

    #[test]
    fn timeouts_and_internal_failures_are_transient() {
        for code in ["RequestTimeout", "InternalError", "ServiceUnavailable"] {
            assert_eq!(classify_code(code), Some(AwsClass::Transient), "{code}");
            assert!(AwsClass::Transient.is_retryable());
        }
    }

    #[test]
    fn refused_credentials_are_not_retried() {
        for code in ["AccessDenied", "InvalidAccessKeyId", "ExpiredToken"] {
            assert_eq!(classify_code(code), Some(AwsClass::Auth), "{code}");
        }
        assert!(!AwsClass::Auth.is_retryable());
    }

    #[test]
    fn a_service_specific_code_is_left_to_its_service() {
        assert_eq!(classify_code("InsufficientInstanceCapacity"), None);
        assert_eq!(classify_code("NoSuchKey"), None);
    }

    #[test]
    fn retryable_statuses() {
        for status in [408, 429, 500, 503] {
            assert!(status_is_retryable(status), "{status}");
        }
        for status in [400, 403, 404, 412] {
            assert!(!status_is_retryable(status), "{status}");
        }
    }

    #[test]
    fn messages_are_trimmed_to_the_limit() {
        assert_eq!(trim_message("  abcdef \n", 3), "abc");
    }
}
