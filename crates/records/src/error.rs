//! Errors of the node-record store and how the reconciler should treat them.

use std::time::Duration;

use puppet_conductor_core::certname::InvalidCertname;
use puppet_conductor_core::record::EncodeError;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use puppet_conductor_aws::error::{classify_code, status_is_retryable, trim_message, AwsClass};

use puppet_conductor_core::record::RecordOwner;

/// A boxed error source (what the AWS SDK hands back).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Longest server message kept in an error.
const MAX_MESSAGE_CHARS: usize = 300;

/// Everything that can go wrong with the S3 node records.
///
/// [`RecordsError::is_retryable`] splits them for the reconciler: retryable
/// errors (S3 unreachable, slow, throttling, a concurrent writer) deserve capped
/// exponential backoff and a `RecordsReachable=False` condition; permanent ones
/// (no bucket, access denied, a certname owned by another node) fail the same
/// way until someone changes something, so they are reported and retried only
/// slowly.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The certname cannot name a record; nothing was sent.
    #[error("invalid certname {certname:?}: {reason}")]
    InvalidCertname {
        /// The refused certname.
        certname: String,
        /// What rule it breaks.
        reason: &'static str,
    },

    /// The client could not be built or the request could not be formed.
    #[error("invalid S3 records configuration: {what}")]
    Config {
        /// What is wrong.
        what: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The record could not be serialised.
    #[error("could not encode the record for {certname}")]
    Encode {
        /// The record's certname.
        certname: String,
        /// The serialisation error.
        #[source]
        source: serde_json::Error,
    },

    /// No connection could be made (refused, reset, DNS), or it broke mid-request.
    #[error("could not reach S3 for {operation}")]
    Connect {
        /// The S3 operation attempted.
        operation: &'static str,
        /// The transport error.
        #[source]
        source: BoxError,
    },

    /// The call did not finish within the configured timeout.
    #[error("S3 {operation} timed out after {timeout:?}")]
    Timeout {
        /// The S3 operation attempted.
        operation: &'static str,
        /// The configured limit.
        timeout: Duration,
    },

    /// The records bucket does not exist.
    #[error("S3 bucket {bucket:?} does not exist")]
    NoSuchBucket {
        /// The configured bucket.
        bucket: String,
    },

    /// S3 answered with an error this module has no better name for.
    #[error("S3 answered {status} {code} to {operation}: {message}")]
    Service {
        /// The S3 operation attempted.
        operation: &'static str,
        /// The HTTP status code.
        status: u16,
        /// The S3 error code (`AccessDenied`, `SlowDown`, ...), or empty.
        code: String,
        /// The error message, trimmed.
        message: String,
    },

    /// A conditional write lost a race (HTTP 412, or 409
    /// `ConditionalRequestConflict`): the object changed since it was observed.
    /// Retryable: observe again and decide anew.
    #[error("{key} changed concurrently during {operation}; observe again")]
    PreconditionFailed {
        /// The S3 operation attempted.
        operation: &'static str,
        /// The object key.
        key: String,
    },

    /// The certname's record belongs to another node; it was left untouched.
    #[error("the record for {certname} belongs to {}", describe_owner(.owner.as_deref()))]
    Conflict {
        /// The certname.
        certname: String,
        /// The owner stored in the record, if it could be read.
        owner: Option<Box<RecordOwner>>,
    },

    /// A stored record could not be parsed.
    #[error("S3 object {key} is not a valid node record")]
    InvalidRecord {
        /// The object key.
        key: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },

    /// S3 answered, but not with what the operation needs (e.g. no ETag).
    #[error("unexpected response from S3 to {operation}: {what}")]
    InvalidResponse {
        /// The S3 operation attempted.
        operation: &'static str,
        /// What was wrong with it.
        what: String,
    },

    /// Any other failure of the SDK (e.g. a response it could not read).
    #[error("request to S3 failed for {operation}")]
    Transport {
        /// The S3 operation attempted.
        operation: &'static str,
        /// The SDK error.
        #[source]
        source: BoxError,
    },
}

fn describe_owner(owner: Option<&RecordOwner>) -> String {
    match owner {
        Some(owner) => owner.to_string(),
        None => "an unknown owner (not a puppet-conductor record, or unreadable)".to_owned(),
    }
}

impl RecordsError {
    /// A short, stable label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidCertname { .. } => "invalid_certname",
            Self::Config { .. } => "config",
            Self::Encode { .. } => "encode",
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::NoSuchBucket { .. } => "no_such_bucket",
            Self::Service { status, code, .. } => service_category(*status, code),
            Self::PreconditionFailed { .. } => "precondition_failed",
            Self::Conflict { .. } => "conflict",
            Self::InvalidRecord { .. } => "invalid_record",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::Transport { .. } => "transport",
        }
    }

    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::Transport { .. }
            // Someone wrote in between: the next observation decides again.
            | Self::PreconditionFailed { .. } => true,
            Self::Service { status, code, .. } => service_is_retryable(*status, code),
            // Another node's record stays until that node is gone or renamed.
            Self::InvalidCertname { .. }
            | Self::Config { .. }
            | Self::Encode { .. }
            | Self::NoSuchBucket { .. }
            | Self::Conflict { .. }
            | Self::InvalidRecord { .. }
            | Self::InvalidResponse { .. } => false,
        }
    }

    /// The HTTP status S3 answered with, if the error is one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Service { status, .. } => Some(*status),
            Self::PreconditionFailed { .. } => Some(412),
            Self::NoSuchBucket { .. } => Some(404),
            _ => None,
        }
    }

    /// Classify an SDK error of `operation`. Service errors keep status, code
    /// and message; callers map the ones they expect (404, 412) first.
    pub(crate) fn from_sdk<E>(
        operation: &'static str,
        timeout: Duration,
        error: SdkError<E>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match error {
            SdkError::ServiceError(_) => {
                let (status, code, message) = service_parts(&error);
                Self::service(operation, status, &code, &message)
            }
            SdkError::TimeoutError(_) => Self::Timeout { operation, timeout },
            SdkError::DispatchFailure(ref failure) if failure.is_timeout() => {
                Self::Timeout { operation, timeout }
            }
            SdkError::DispatchFailure(ref failure) if failure.is_user() => Self::Config {
                what: format!("the request for {operation} could not be sent"),
                source: Some(Box::new(error)),
            },
            SdkError::DispatchFailure(_) => Self::Connect {
                operation,
                source: Box::new(error),
            },
            SdkError::ConstructionFailure(_) => Self::Config {
                what: format!("the request for {operation} could not be built"),
                source: Some(Box::new(error)),
            },
            _ => Self::Transport {
                operation,
                source: Box::new(error),
            },
        }
    }

    /// Build a [`RecordsError::Service`], trimming the message.
    pub fn service(operation: &'static str, status: u16, code: &str, message: &str) -> Self {
        Self::Service {
            operation,
            status,
            code: code.to_owned(),
            message: trim_message(message, MAX_MESSAGE_CHARS),
        }
    }
}

/// The HTTP status, S3 error code and message of a service error (zero and
/// empty strings for other kinds).
pub(crate) fn service_parts<E>(error: &SdkError<E>) -> (u16, String, String)
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(context) => (
            context.raw().status().as_u16(),
            context.err().code().unwrap_or_default().to_owned(),
            context.err().message().unwrap_or_default().to_owned(),
        ),
        _ => (0, String::new(), String::new()),
    }
}

fn service_category(status: u16, code: &str) -> &'static str {
    let class = classify_code(code);
    match (status, code) {
        _ if class == Some(AwsClass::Throttled) || status == 429 => "throttled",
        _ if class == Some(AwsClass::Auth) || matches!(status, 401 | 403) => "forbidden",
        (_, "NotImplemented") | (501, _) => "not_implemented",
        (400, _) => "bad_request",
        (404, _) => "not_found",
        (409, _) => "conflict",
        (500..=599, _) => "server_error",
        _ => "unexpected_status",
    }
}

fn service_is_retryable(status: u16, code: &str) -> bool {
    match classify_code(code) {
        Some(class) => class.is_retryable(),
        // S3 answers 501 for a feature it lacks: asking again will not add it.
        None if status == 501 => false,
        None => status_is_retryable(status),
    }
}

impl From<InvalidCertname> for RecordsError {
    fn from(e: InvalidCertname) -> Self {
        Self::InvalidCertname {
            certname: e.certname,
            reason: e.reason,
        }
    }
}

impl From<EncodeError> for RecordsError {
    fn from(e: EncodeError) -> Self {
        Self::Encode {
            certname: e.certname,
            source: e.source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str) -> RecordsError {
        RecordsError::service("PutObject", status, code, "m")
    }

    #[test]
    fn retryable_service_errors() {
        for (status, code) in [
            (500, "InternalError"),
            (503, "SlowDown"),
            (503, ""),
            (429, ""),
            (400, "RequestTimeout"),
            (502, ""),
        ] {
            assert!(service(status, code).is_retryable(), "{status} {code}");
        }
    }

    #[test]
    fn permanent_service_errors() {
        for (status, code) in [
            (403, "AccessDenied"),
            (403, "InvalidAccessKeyId"),
            (400, "InvalidArgument"),
            (404, "NoSuchKey"),
            (501, "NotImplemented"),
        ] {
            assert!(!service(status, code).is_retryable(), "{status} {code}");
        }
    }

    #[test]
    fn categories() {
        let cases = [
            (503, "SlowDown", "throttled"),
            (403, "AccessDenied", "forbidden"),
            (400, "InvalidAccessKeyId", "forbidden"),
            (501, "NotImplemented", "not_implemented"),
            (400, "InvalidArgument", "bad_request"),
            (404, "NoSuchKey", "not_found"),
            (409, "BucketNotEmpty", "conflict"),
            (500, "InternalError", "server_error"),
            (418, "", "unexpected_status"),
        ];
        for (status, code, category) in cases {
            assert_eq!(
                service(status, code).category(),
                category,
                "{status} {code}"
            );
        }
    }

    #[test]
    fn conflicts() {
        let race = RecordsError::PreconditionFailed {
            operation: "PutObject",
            key: "records/a.json".into(),
        };
        assert!(race.is_retryable());
        assert_eq!(race.category(), "precondition_failed");
        assert_eq!(race.http_status(), Some(412));

        let owned = RecordsError::Conflict {
            certname: "a".into(),
            owner: Some(Box::new(RecordOwner {
                operator: "op".into(),
                master: "ns/m".into(),
                node: "ns/n".into(),
                node_uid: "uid-1".into(),
                incarnation: 3,
            })),
        };
        assert!(!owned.is_retryable());
        assert_eq!(owned.category(), "conflict");
        let text = owned.to_string();
        assert!(text.contains("ns/n") && text.contains("uid-1"), "{text}");
        let unknown = RecordsError::Conflict {
            certname: "a".into(),
            owner: None,
        };
        assert!(unknown.to_string().contains("unknown owner"));
    }

    #[test]
    fn long_messages_are_trimmed() {
        let RecordsError::Service { message, .. } =
            RecordsError::service("GetObject", 500, "InternalError", &"y".repeat(5000))
        else {
            panic!("not a service error")
        };
        assert_eq!(message.len(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn timeout_is_retryable() {
        let t = RecordsError::Timeout {
            operation: "ListObjectsV2",
            timeout: Duration::from_secs(10),
        };
        assert!(t.is_retryable());
        assert_eq!(t.category(), "timeout");
        assert!(!RecordsError::NoSuchBucket { bucket: "b".into() }.is_retryable());
    }
}
