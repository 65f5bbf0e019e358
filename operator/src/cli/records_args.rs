//! The records flags the ENC and autosign subcommands share.

use std::time::Duration;

use clap::Args;

use crate::cloud::StaticCredentials;
use crate::enc;
use crate::records::RecordsConfig;

/// Where the records are (the same settings as the PuppetMaster's `records`), from flags or
/// the environment puppetserver runs its ENC with.
#[derive(Args)]
pub struct RecordsArgs {
    /// Records bucket.
    #[arg(long = "records-bucket", env = "PC_RECORDS_BUCKET")]
    bucket: String,
    /// Key prefix of the records.
    #[arg(
        long = "records-prefix",
        env = "PC_RECORDS_PREFIX",
        default_value = "nodes/"
    )]
    prefix: String,
    /// S3 region.
    #[arg(
        long = "records-region",
        env = "PC_RECORDS_REGION",
        default_value = "us-east-1"
    )]
    region: String,
    /// S3-compatible endpoint URL.
    #[arg(long = "records-endpoint", env = "PC_RECORDS_ENDPOINT")]
    endpoint: Option<String>,
    /// Path-style bucket addressing.
    #[arg(long = "records-force-path-style", env = "PC_RECORDS_FORCE_PATH_STYLE")]
    force_path_style: bool,
    /// Timeout of each records call, in seconds.
    #[arg(long = "records-timeout", env = "PC_RECORDS_TIMEOUT", default_value_t = enc::DEFAULT_TIMEOUT.as_secs())]
    timeout_seconds: u64,
    /// Access key id (otherwise the default AWS credential chain).
    #[arg(
        long = "records-access-key-id",
        env = "PC_RECORDS_ACCESS_KEY_ID",
        requires = "secret_access_key"
    )]
    access_key_id: Option<String>,
    /// Secret access key.
    #[arg(
        long = "records-secret-access-key",
        env = "PC_RECORDS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    secret_access_key: Option<String>,
}

impl RecordsArgs {
    /// The records client's settings.
    pub fn config(&self) -> RecordsConfig {
        RecordsConfig {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            force_path_style: self.force_path_style,
            credentials: match (&self.access_key_id, &self.secret_access_key) {
                (Some(id), Some(secret)) => Some(StaticCredentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    session_token: None,
                }),
                _ => None,
            },
            call_timeout: self.timeout(),
        }
    }

    /// The timeout of one records call.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
}
