//! Explicit credentials for both SDK clients; `Debug` redacts the secrets.

use std::fmt;

use aws_credential_types::Credentials;

/// An access key pair (and session token) given explicitly, e.g. from the
/// master's `cloud.credentialsSecretRef`. `Debug` does not print the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl StaticCredentials {
    /// These credentials as the SDK's provider; `provider_name` shows in the SDK's logs.
    pub fn provider(&self, provider_name: &'static str) -> Credentials {
        Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            self.session_token.clone(),
            None,
            provider_name,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = StaticCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("token-secret".into()),
        };
        let text = format!("{c:?}");
        assert!(text.contains("AKIDEXAMPLE"));
        assert!(!text.contains("very-secret") && !text.contains("token-secret"));
    }
}
