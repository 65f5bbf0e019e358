//! Errors of the EC2 client and how the reconciler should treat them.

use std::error::Error as StdError;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::RequestId;
use puppet_conductor_aws::error::{
    classify_code as classify_aws_code, credentials_retryable, find_in_chain, status_is_retryable,
    AwsClass,
};

/// Longest AWS message kept in an error; EC2's are one sentence.
const MAX_MESSAGE_CHARS: usize = 300;

/// A boxed error source (what the SDK hands back).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong talking to EC2 (or an EC2-compatible cloud).
///
/// [`CloudError::is_retryable`] splits them for the reconciler: retryable
/// errors (throttling, 5xx, timeouts, the endpoint unreachable, capacity
/// shortages) deserve capped exponential backoff and a `CloudReachable=False`
/// or `InstanceRunning=False` condition; permanent ones (credentials refused,
/// an AMI, subnet or security group that does not exist, an invalid parameter)
/// fail the same way until someone changes the configuration, so they are
/// reported and retried only slowly.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// EC2 answered with an error code.
    #[error("EC2 {operation} failed: {code}: {message}")]
    Api {
        /// The EC2 action attempted (e.g. `RunInstances`).
        operation: &'static str,
        /// The AWS error code (e.g. `InvalidAMIID.NotFound`, `RequestLimitExceeded`).
        code: String,
        /// The start of the AWS error message.
        message: String,
        /// The HTTP status of the answer, when there was one.
        http_status: Option<u16>,
        /// The AWS request id, for support cases.
        request_id: Option<String>,
    },

    /// The call did not finish within the configured timeout (or the SDK's own
    /// connect/operation timeout fired).
    #[error("EC2 {operation} timed out after {timeout:?}")]
    Timeout {
        /// The EC2 action attempted.
        operation: &'static str,
        /// The configured limit.
        timeout: Duration,
    },

    /// No connection could be made (refused, reset, DNS), or it broke mid-request.
    #[error("could not reach EC2 for {operation}")]
    Connect {
        /// The EC2 action attempted.
        operation: &'static str,
        /// The transport error.
        #[source]
        source: BoxError,
    },

    /// No credentials could be obtained to sign the request.
    #[error("no usable AWS credentials for {operation}")]
    Credentials {
        /// The EC2 action attempted.
        operation: &'static str,
        /// Whether the provider failed transiently (timed out, IMDS/STS
        /// unavailable) rather than finding nothing or being misconfigured.
        retryable: bool,
        /// The credential provider's error.
        #[source]
        source: BoxError,
    },

    /// The request was refused before anything was sent: the input breaks an
    /// EC2 rule checked locally, or the SDK could not build the request.
    #[error("invalid EC2 {operation} request: {what}")]
    InvalidRequest {
        /// The EC2 action attempted.
        operation: &'static str,
        /// What is wrong.
        what: String,
        /// The SDK's error, when it refused.
        #[source]
        source: Option<BoxError>,
    },

    /// The answer could not be read, or lacked what the call needs.
    #[error("unexpected response from EC2 to {operation}: {what}")]
    InvalidResponse {
        /// The EC2 action attempted.
        operation: &'static str,
        /// What was wrong with it.
        what: String,
        /// The HTTP status of the answer, when there was one.
        http_status: Option<u16>,
        /// The parse error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
}

impl CloudError {
    /// A short, stable label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Api {
                code, http_status, ..
            } => classify_code(code, *http_status).category(),
            Self::Timeout { .. } => "timeout",
            Self::Connect { .. } => "connect",
            Self::Credentials { .. } => "credentials",
            Self::InvalidRequest { .. } => "invalid_request",
            // An error page instead of an EC2 error document: the server failed.
            Self::InvalidResponse {
                http_status: Some(500..=599),
                ..
            } => "unavailable",
            Self::InvalidResponse { .. } => "invalid_response",
        }
    }

    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api {
                code, http_status, ..
            } => classify_code(code, *http_status).is_retryable(),
            Self::Timeout { .. } | Self::Connect { .. } => true,
            Self::Credentials { retryable, .. } => *retryable,
            Self::InvalidRequest { .. } => false,
            // A proxy's error page or a restarting endpoint, not a bad request.
            Self::InvalidResponse { http_status, .. } => {
                http_status.is_some_and(status_is_retryable)
            }
        }
    }

    /// The AWS error code, if EC2 answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The AWS error message, if EC2 answered with one.
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The HTTP status of EC2's answer, if there was one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Api { http_status, .. } | Self::InvalidResponse { http_status, .. } => {
                *http_status
            }
            _ => None,
        }
    }

    /// Whether EC2 said the instance ids do not exist (or cannot exist:
    /// malformed). For terminate that is success.
    pub fn is_instance_not_found(&self) -> bool {
        matches!(
            self.code(),
            Some("InvalidInstanceID.NotFound" | "InvalidInstanceID.Malformed")
        )
    }

    /// Build an [`CloudError::Api`], trimming the message to one short line.
    pub fn api(
        operation: &'static str,
        code: &str,
        message: &str,
        http_status: Option<u16>,
        request_id: Option<String>,
    ) -> Self {
        Self::Api {
            operation,
            code: code.to_owned(),
            message: trim_message(message),
            http_status,
            request_id,
        }
    }

    /// Classify an SDK error of any EC2 operation.
    pub(crate) fn from_sdk<E>(
        operation: &'static str,
        timeout: Duration,
        error: SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
    ) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let http_status = error.raw_response().map(|r| r.status().as_u16());
        let error = match error {
            SdkError::ServiceError(context) => {
                let err = context.into_err();
                return match err.code() {
                    Some(code) => Self::api(
                        operation,
                        code,
                        err.message().unwrap_or_default(),
                        http_status,
                        err.meta().request_id().map(str::to_owned),
                    ),
                    // An error answer without a code: only its status says anything.
                    None => Self::InvalidResponse {
                        operation,
                        what: "error response without an error code".to_owned(),
                        http_status,
                        source: Some(Box::new(err)),
                    },
                };
            }
            other => other,
        };
        match &error {
            SdkError::TimeoutError(_) => Self::Timeout { operation, timeout },
            SdkError::DispatchFailure(failure) => {
                let is_timeout = failure.is_timeout();
                let is_user = failure.is_user();
                let source: BoxError = Box::new(error);
                if let Some(credentials) = find_in_chain::<CredentialsError>(source.as_ref()) {
                    let retryable = credentials_retryable(credentials);
                    Self::Credentials {
                        operation,
                        retryable,
                        source,
                    }
                } else if is_timeout {
                    Self::Timeout { operation, timeout }
                } else if is_user {
                    Self::InvalidRequest {
                        operation,
                        what: "the HTTP client refused the request (check the endpoint URL)"
                            .to_owned(),
                        source: Some(source),
                    }
                } else {
                    Self::Connect { operation, source }
                }
            }
            SdkError::ConstructionFailure(_) => Self::InvalidRequest {
                operation,
                what: "the SDK could not build the request".to_owned(),
                source: Some(Box::new(error)),
            },
            SdkError::ResponseError(_) => Self::InvalidResponse {
                operation,
                what: "the response could not be parsed".to_owned(),
                http_status,
                source: Some(Box::new(error)),
            },
            // SdkError is non-exhaustive.
            _ => Self::InvalidResponse {
                operation,
                what: "unclassified SDK error".to_owned(),
                http_status,
                source: Some(Box::new(error)),
            },
        }
    }
}

/// What an AWS error code means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CodeClass {
    /// Slow down: EC2's token buckets are empty.
    Throttled,
    /// EC2 (or the private cloud) failed internally or is unavailable.
    Unavailable,
    /// Not enough capacity in the zone right now.
    Capacity,
    /// The resource is in a state that forbids the action for now.
    IncorrectState,
    /// Credentials refused or not allowed to do this.
    Auth,
    /// A referenced resource (AMI, subnet, group, key pair, profile, instance) does not exist.
    NotFound,
    /// A parameter is invalid or missing.
    InvalidRequest,
    /// An account quota is exhausted (vCPUs, instances).
    Quota,
    /// The client token was reused with different parameters.
    Conflict,
    /// A code this table does not know.
    Other,
}

impl CodeClass {
    fn category(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::Unavailable => "unavailable",
            Self::Capacity => "capacity",
            Self::IncorrectState => "incorrect_state",
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::InvalidRequest => "invalid_request",
            Self::Quota => "quota",
            Self::Conflict => "conflict",
            Self::Other => "api_error",
        }
    }

    fn is_retryable(self) -> bool {
        match self {
            Self::Throttled | Self::Unavailable | Self::Capacity | Self::IncorrectState => true,
            Self::Auth | Self::NotFound | Self::InvalidRequest | Self::Quota | Self::Conflict => {
                false
            }
            // Decided by the HTTP status in classify_code.
            Self::Other => false,
        }
    }
}

/// Classify an AWS error code; unknown codes fall back on the HTTP status.
///
/// The codes every AWS service shares (throttling, transient, credentials) are the
/// SDK's and `puppet_conductor_aws::error`'s; the table below holds EC2's own, from the
/// EC2 API reference ("Error codes for the Amazon EC2 API") and what moto and
/// Eucalyptus answer.
pub(crate) fn classify_code(code: &str, http_status: Option<u16>) -> CodeClass {
    if let Some(class) = classify_aws_code(code) {
        return match class {
            AwsClass::Throttled => CodeClass::Throttled,
            AwsClass::Transient => CodeClass::Unavailable,
            AwsClass::Auth => CodeClass::Auth,
        };
    }
    // EC2's own codes.
    match code {
        "InsufficientInstanceCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InsufficientAddressCapacity"
        | "InsufficientCapacity"
        | "InsufficientFreeAddressesInSubnet" => return CodeClass::Capacity,
        "IncorrectState" | "IncorrectInstanceState" | "ConcurrentTagAccess" => {
            return CodeClass::IncorrectState
        }
        "AuthFailure"
        | "UnauthorizedOperation"
        | "OptInRequired"
        | "PendingVerification"
        | "Blocked" => return CodeClass::Auth,
        "IdempotentParameterMismatch" => return CodeClass::Conflict,
        "InstanceLimitExceeded" | "VcpuLimitExceeded" | "MaxSpotInstanceCountExceeded" => {
            return CodeClass::Quota
        }
        // IAM's answer for an unknown instance profile (moto answers it too).
        "NoSuchEntity" => return CodeClass::NotFound,
        "MissingParameter"
        | "MissingInput"
        | "UnknownParameter"
        | "UnsupportedOperation"
        | "Unsupported"
        | "InvalidAction"
        | "ValidationError"
        | "MalformedQueryString" => return CodeClass::InvalidRequest,
        _ => {}
    }
    if code.ends_with(".NotFound") {
        CodeClass::NotFound
    } else if code.starts_with("Invalid") || code.ends_with(".Malformed") {
        // InvalidAMIID.*, InvalidParameter*, InvalidSubnetID.*, InvalidGroup.*,
        // InvalidKeyPair.*, InvalidUserData.*, InvalidBlockDeviceMapping ...
        CodeClass::InvalidRequest
    } else if code.ends_with("LimitExceeded") {
        CodeClass::Quota
    } else if code.starts_with("Unauthorized") {
        CodeClass::Auth
    } else if http_status.is_some_and(status_is_retryable) {
        CodeClass::Unavailable
    } else {
        CodeClass::Other
    }
}

fn trim_message(message: &str) -> String {
    puppet_conductor_aws::error::trim_message(message, MAX_MESSAGE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, status: u16) -> CloudError {
        CloudError::api("RunInstances", code, "m", Some(status), None)
    }

    #[test]
    fn retryable_codes() {
        let cases = [
            ("RequestLimitExceeded", 503, "throttled"),
            ("Throttling", 400, "throttled"),
            ("ThrottlingException", 400, "throttled"),
            ("InternalError", 500, "unavailable"),
            ("Unavailable", 503, "unavailable"),
            ("ServiceUnavailable", 503, "unavailable"),
            ("InsufficientInstanceCapacity", 500, "capacity"),
            ("IncorrectInstanceState", 400, "incorrect_state"),
            // Unknown codes follow the HTTP status.
            ("SomethingNew", 502, "unavailable"),
            ("SomethingNew", 429, "unavailable"),
        ];
        for (code, status, category) in cases {
            let e = api(code, status);
            assert!(e.is_retryable(), "{code} should be retryable");
            assert_eq!(e.category(), category, "{code}");
        }
    }

    #[test]
    fn permanent_codes() {
        let cases = [
            ("AuthFailure", 401, "auth"),
            ("UnauthorizedOperation", 403, "auth"),
            ("InvalidClientTokenId", 403, "auth"),
            ("InvalidAccessKeyId", 403, "auth"),
            ("SignatureDoesNotMatch", 403, "auth"),
            ("InvalidAMIID.NotFound", 400, "not_found"),
            ("InvalidAMIID.Malformed", 400, "invalid_request"),
            ("InvalidParameterValue", 400, "invalid_request"),
            ("InvalidParameterCombination", 400, "invalid_request"),
            ("InvalidParameter", 400, "invalid_request"),
            ("InvalidSubnetID.NotFound", 400, "not_found"),
            ("InvalidGroup.NotFound", 400, "not_found"),
            ("InvalidGroupId.Malformed", 400, "invalid_request"),
            ("InvalidKeyPair.NotFound", 400, "not_found"),
            ("InvalidInstanceID.NotFound", 400, "not_found"),
            ("InvalidUserData.Malformed", 400, "invalid_request"),
            ("NoSuchEntity", 404, "not_found"),
            ("MissingParameter", 400, "invalid_request"),
            ("MissingInput", 400, "invalid_request"),
            ("VcpuLimitExceeded", 400, "quota"),
            ("InstanceLimitExceeded", 400, "quota"),
            ("IdempotentParameterMismatch", 400, "conflict"),
            ("SomethingNew", 400, "api_error"),
        ];
        for (code, status, category) in cases {
            let e = api(code, status);
            assert!(!e.is_retryable(), "{code} should be permanent");
            assert_eq!(e.category(), category, "{code}");
        }
    }

    #[test]
    fn code_and_message_are_kept() {
        let e = CloudError::api(
            "RunInstances",
            "InvalidAMIID.NotFound",
            "  The image id '[ami-1]' does not exist\n",
            Some(400),
            Some("req-1".into()),
        );
        assert_eq!(e.code(), Some("InvalidAMIID.NotFound"));
        assert_eq!(e.message(), Some("The image id '[ami-1]' does not exist"));
        assert_eq!(e.http_status(), Some(400));
        assert_eq!(
            e.to_string(),
            "EC2 RunInstances failed: InvalidAMIID.NotFound: The image id '[ami-1]' does not exist"
        );
    }

    #[test]
    fn long_messages_are_trimmed() {
        let e = CloudError::api("DescribeInstances", "X", &"y".repeat(10_000), None, None);
        assert_eq!(e.message().map(str::len), Some(MAX_MESSAGE_CHARS));
    }

    #[test]
    fn instance_not_found_codes() {
        assert!(api("InvalidInstanceID.NotFound", 400).is_instance_not_found());
        assert!(api("InvalidInstanceID.Malformed", 400).is_instance_not_found());
        assert!(!api("InvalidAMIID.NotFound", 400).is_instance_not_found());
    }

    #[test]
    fn transport_errors() {
        let t = CloudError::Timeout {
            operation: "DescribeInstances",
            timeout: Duration::from_secs(5),
        };
        assert!(t.is_retryable());
        assert_eq!(t.category(), "timeout");
        let c = CloudError::Connect {
            operation: "DescribeInstances",
            source: "connection refused".into(),
        };
        assert!(c.is_retryable());
        assert_eq!(c.category(), "connect");
        let r = CloudError::InvalidRequest {
            operation: "RunInstances",
            what: "user data too long".into(),
            source: None,
        };
        assert!(!r.is_retryable());
        assert_eq!(r.category(), "invalid_request");
    }

    #[test]
    fn unparseable_responses_follow_the_status() {
        let bad = |status| CloudError::InvalidResponse {
            operation: "DescribeInstances",
            what: "x".into(),
            http_status: status,
            source: None,
        };
        assert!(bad(Some(502)).is_retryable());
        assert_eq!(bad(Some(502)).category(), "unavailable");
        assert!(!bad(Some(200)).is_retryable());
        assert_eq!(bad(Some(200)).category(), "invalid_response");
        assert!(!bad(None).is_retryable());
    }

    #[test]
    fn credentials_errors() {
        let not_loaded = CredentialsError::not_loaded("no provider");
        assert!(!credentials_retryable(&not_loaded));
        let timed_out = CredentialsError::provider_timed_out(Duration::from_secs(5));
        assert!(credentials_retryable(&timed_out));
        let wrapped: BoxError = Box::new(not_loaded);
        assert!(find_in_chain::<CredentialsError>(wrapped.as_ref()).is_some());
    }
}
