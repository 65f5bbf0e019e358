//! Errors of the Puppet CA client and how the reconciler should treat them.

use std::time::Duration;

use puppet_conductor_core::certificate::CertState;
use puppet_conductor_core::certname::InvalidCertname;

/// Longest server message kept in an error; puppetserver's are one line.
const MAX_MESSAGE_CHARS: usize = 300;

/// Everything that can go wrong talking to the Puppet CA.
///
/// [`CaError::is_retryable`] splits them for the reconciler: retryable errors
/// (the CA is down, slow, overloaded) deserve capped exponential backoff and a
/// `CAReachable=False` condition; permanent ones (certificates or authorisation
/// wrong, a request the CA refuses) will fail the same way until someone changes
/// the configuration, so they are reported and retried only slowly.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The certname cannot safely name a CA resource; nothing was sent.
    #[error("invalid certname {certname:?}: {reason}")]
    InvalidCertname {
        /// The refused certname.
        certname: String,
        /// What rule it breaks.
        reason: &'static str,
    },

    /// The client could not be built from the given URL and PEM material.
    #[error("invalid Puppet CA client configuration: {what}")]
    Config {
        /// What is wrong.
        what: String,
        /// The underlying library error, when there is one.
        #[source]
        source: Option<reqwest::Error>,
    },

    /// No connection could be made (refused, reset, DNS), or it broke mid-request.
    #[error("could not reach the Puppet CA for {operation}")]
    Connect {
        /// The API operation attempted.
        operation: &'static str,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },

    /// The TLS handshake was refused: the CA rejected our client certificate,
    /// or the server's certificate is not signed by the configured CA.
    #[error("TLS handshake with the Puppet CA failed for {operation} (check the client certificate, key and trusted CA)")]
    Tls {
        /// The API operation attempted.
        operation: &'static str,
        /// The transport error; its chain carries the TLS alert.
        #[source]
        source: reqwest::Error,
    },

    /// The call did not finish within the configured timeout.
    #[error("Puppet CA {operation} timed out after {timeout:?}")]
    Timeout {
        /// The API operation attempted.
        operation: &'static str,
        /// The configured limit.
        timeout: Duration,
    },

    /// The CA answered with an unexpected HTTP status.
    #[error("Puppet CA answered {status} to {operation}: {message}")]
    Status {
        /// The API operation attempted.
        operation: &'static str,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body (puppetserver explains itself there).
        message: String,
        /// The `Retry-After` the CA asked for (503, 429).
        retry_after: Option<Duration>,
    },

    /// The response could not be read or parsed.
    #[error("unexpected response from the Puppet CA to {operation}: {what}")]
    InvalidResponse {
        /// The API operation attempted.
        operation: &'static str,
        /// What was wrong with it.
        what: String,
        /// The parse or read error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The certificate or request was still there after cleaning it.
    #[error("{certname} is still {state} on the Puppet CA after revoke and clean")]
    NotCleaned {
        /// The certname being removed.
        certname: String,
        /// The state it was last seen in.
        state: CertState,
    },

    /// Any other transport failure (e.g. reading the body).
    #[error("request to the Puppet CA failed for {operation}")]
    Transport {
        /// The API operation attempted.
        operation: &'static str,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
}

impl CaError {
    /// A short, stable label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidCertname { .. } => "invalid_certname",
            Self::Config { .. } => "config",
            Self::Connect { .. } => "connect",
            Self::Tls { .. } => "tls",
            Self::Timeout { .. } => "timeout",
            Self::Status { status, .. } => status_category(*status),
            Self::InvalidResponse { .. } => "invalid_response",
            Self::NotCleaned { .. } => "not_cleaned",
            Self::Transport { .. } => "transport",
        }
    }

    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::Transport { .. }
            // Another writer can re-create it between our calls; the next pass converges.
            | Self::NotCleaned { .. } => true,
            Self::Status { status, .. } => status_is_retryable(*status),
            // A TLS refusal repeats until the Secret or the CA changes.
            Self::InvalidCertname { .. }
            | Self::Config { .. }
            | Self::Tls { .. }
            | Self::InvalidResponse { .. } => false,
        }
    }

    /// How long the CA asked us to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status the CA answered with, if the error is one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Build a [`CaError::Status`], trimming the body to one short message.
    pub fn status(
        operation: &'static str,
        status: u16,
        body: &str,
        retry_after: Option<Duration>,
    ) -> Self {
        let message: String = body.trim().chars().take(MAX_MESSAGE_CHARS).collect();
        Self::Status {
            operation,
            status,
            message,
            retry_after,
        }
    }

    /// Classify a reqwest transport error.
    pub fn transport(operation: &'static str, timeout: Duration, source: reqwest::Error) -> Self {
        if source.is_timeout() {
            Self::Timeout { operation, timeout }
        } else if is_tls_refusal(&source) {
            Self::Tls { operation, source }
        } else if source.is_connect() || source.is_request() {
            Self::Connect { operation, source }
        } else {
            Self::Transport { operation, source }
        }
    }
}

fn status_category(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 | 403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        415 => "unsupported_media_type",
        429 => "throttled",
        500..=599 => "server_error",
        _ => "unexpected_status",
    }
}

fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// Whether the error chain shows the TLS handshake being refused rather than the
/// network failing.
///
/// rustls is not a direct dependency, so its error cannot be downcast; its
/// `Display` texts for these cases are stable and specific enough to match.
fn is_tls_refusal(error: &reqwest::Error) -> bool {
    const MARKERS: [&str; 4] = [
        "received fatal alert",
        "invalid peer certificate",
        "peer is incompatible",
        "peer sent no certificates",
    ];
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if MARKERS.iter().any(|m| text.contains(m)) {
            return true;
        }
        current = e.source();
    }
    false
}

impl From<InvalidCertname> for CaError {
    fn from(e: InvalidCertname) -> Self {
        Self::InvalidCertname {
            certname: e.certname,
            reason: e.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> CaError {
        CaError::status("list", code, "x", None)
    }

    #[test]
    fn retryable_statuses() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(status(code).is_retryable(), "{code}");
        }
    }

    #[test]
    fn permanent_statuses() {
        for code in [400, 401, 403, 404, 409, 415] {
            assert!(!status(code).is_retryable(), "{code}");
        }
    }

    #[test]
    fn categories_by_status() {
        let cases = [
            (400, "bad_request"),
            (401, "forbidden"),
            (403, "forbidden"),
            (404, "not_found"),
            (409, "conflict"),
            (415, "unsupported_media_type"),
            (429, "throttled"),
            (503, "server_error"),
            (418, "unexpected_status"),
        ];
        for (code, category) in cases {
            assert_eq!(status(code).category(), category, "{code}");
        }
    }

    #[test]
    fn retry_after_is_surfaced() {
        let e = CaError::status("sign", 503, "busy", Some(Duration::from_secs(7)));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(e.is_retryable());
        assert_eq!(e.http_status(), Some(503));
    }

    #[test]
    fn long_bodies_are_trimmed() {
        let e = CaError::status("list", 500, &"y".repeat(10_000), None);
        let CaError::Status { message, .. } = e else {
            panic!("not a status error")
        };
        assert_eq!(message.len(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn timeout_and_invalid_certname() {
        let t = CaError::Timeout {
            operation: "list",
            timeout: Duration::from_secs(10),
        };
        assert!(t.is_retryable());
        assert_eq!(t.category(), "timeout");
        let c = CaError::InvalidCertname {
            certname: "../x".into(),
            reason: "bad",
        };
        assert!(!c.is_retryable());
    }
}
