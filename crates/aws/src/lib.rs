//! What the EC2 and S3 clients share: explicit credentials, and what an AWS error code,
//! HTTP status or credentials failure means (classified once, here).

mod credentials;
pub mod error;

pub use credentials::StaticCredentials;
