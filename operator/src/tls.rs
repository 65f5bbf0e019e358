//! The process-wide rustls crypto provider.

/// Installs ring as rustls' process-wide provider. kube (ring) and the AWS SDK
/// (aws-lc-rs) each enable one, and with two rustls refuses to choose: it panics when
/// kube builds its first TLS client. Call before any client is built; later calls keep
/// the provider already installed.
pub fn install_crypto_provider() {
    // `Err` only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
