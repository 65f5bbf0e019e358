//! [`HttpCa`]: the Puppet CA HTTP API over mutual TLS (reqwest + rustls).
//!
//! Construction and request plumbing live here; the API calls themselves are
//! in `http_api.rs`.

use std::future::Future;
use std::time::Duration;

use reqwest::header::{ACCEPT, RETRY_AFTER};
use reqwest::{Certificate, Identity, RequestBuilder, Response, Url};

use super::error::CaError;
use super::retry_after::parse_retry_after;

/// Time allowed for one [`PuppetCa`](super::PuppetCa) call unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The Puppet CA client over HTTPS with a client certificate.
///
/// Only the configured CA is trusted (built-in roots are off), redirects are
/// not followed, and each trait call — including the several requests of
/// `sign` or `revoke_and_clean` — finishes within the timeout or fails with
/// [`CaError::Timeout`].
#[derive(Debug, Clone)]
pub struct HttpCa {
    pub(super) client: reqwest::Client,
    base: Url,
    pub(super) timeout: Duration,
}

/// What a response body is expected to be, for the `Accept` header.
#[derive(Clone, Copy)]
pub(super) enum Accept {
    Json,
    Pem,
}

impl HttpCa {
    /// Build a client for the CA at `base_url` (e.g. `https://puppet:8140`)
    /// from the PEM contents of the operator's Secret: `tls.crt`, `tls.key`
    /// and `ca.crt` (one or more CA certificates).
    pub fn from_pem(
        base_url: &str,
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
        timeout: Duration,
    ) -> Result<Self, CaError> {
        let base = parse_base_url(base_url)?;
        if timeout.is_zero() {
            return Err(config("timeout must be greater than zero", None));
        }
        let roots = Certificate::from_pem_bundle(ca_pem)
            .map_err(|e| config("ca.crt is not valid PEM", Some(e)))?;
        if roots.is_empty() {
            return Err(config("ca.crt holds no certificate", None));
        }
        // reqwest wants the key and the chain in one PEM buffer.
        let mut identity_pem = Vec::with_capacity(cert_pem.len() + key_pem.len() + 1);
        identity_pem.extend_from_slice(cert_pem);
        identity_pem.push(b'\n');
        identity_pem.extend_from_slice(key_pem);
        let identity = Identity::from_pem(&identity_pem).map_err(|e| {
            config(
                "tls.crt/tls.key are not a valid certificate and key",
                Some(e),
            )
        })?;

        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .identity(identity)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("puppet-conductor/", env!("CARGO_PKG_VERSION")));
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
        let client = builder
            .build()
            .map_err(|e| config("could not build the TLS client", Some(e)))?;
        Ok(Self {
            client,
            base,
            timeout,
        })
    }

    /// The CA's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The time allowed for each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `<base>/puppet-ca/v1/<segments...>`, each segment percent-encoded
    /// (a `/` in one becomes `%2F`), so a segment can never change the route.
    pub(super) fn url(&self, segments: &[&str]) -> Result<Url, CaError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| config("the CA URL cannot have a path", None))?
            .pop_if_empty()
            .extend(["puppet-ca", "v1"])
            .extend(segments);
        Ok(url)
    }

    /// Start a request with the `Accept` header for `accept`.
    pub(super) fn request(
        &self,
        method: reqwest::Method,
        url: Url,
        accept: Accept,
    ) -> RequestBuilder {
        let accept = match accept {
            Accept::Json => "application/json",
            Accept::Pem => "text/plain",
        };
        self.client.request(method, url).header(ACCEPT, accept)
    }

    /// Send, classifying transport failures.
    pub(super) async fn send(
        &self,
        operation: &'static str,
        request: RequestBuilder,
    ) -> Result<Response, CaError> {
        request
            .send()
            .await
            .map_err(|e| CaError::transport(operation, self.timeout, e))
    }

    /// The body of a successful response as text.
    pub(super) async fn text(
        &self,
        operation: &'static str,
        response: Response,
    ) -> Result<String, CaError> {
        response
            .text()
            .await
            .map_err(|e| CaError::transport(operation, self.timeout, e))
    }

    /// Run one trait call under the timeout.
    pub(super) async fn bounded<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, CaError>>,
    ) -> Result<T, CaError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| CaError::Timeout {
                operation,
                timeout: self.timeout,
            })?
    }
}

/// Turn a non-success response into a [`CaError::Status`], keeping the body's
/// message and any `Retry-After`.
pub(super) async fn status_error(operation: &'static str, response: Response) -> CaError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    // The message is only a hint; a body that cannot be read must not hide the status.
    let body = response.text().await.unwrap_or_default();
    CaError::status(operation, status, &body, retry_after)
}

fn parse_base_url(base_url: &str) -> Result<Url, CaError> {
    let url = Url::parse(base_url)
        .map_err(|e| config(&format!("CA URL {base_url:?} is not a URL ({e})"), None))?;
    if url.scheme() != "https" {
        return Err(config("the CA URL must use https", None));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(config("the CA URL needs a host", None));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(config("the CA URL must not have a query or fragment", None));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config("the CA URL must not carry credentials", None));
    }
    Ok(url)
}

fn config(what: &str, source: Option<reqwest::Error>) -> CaError {
    CaError::Config {
        what: what.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway CA and client certificate; the client is never connected.
    fn client(base_url: &str) -> Result<HttpCa, CaError> {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&ca_key)
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["operator".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        HttpCa::from_pem(
            base_url,
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            ca.pem().as_bytes(),
            DEFAULT_TIMEOUT,
        )
    }

    fn url_of(base: &str, segments: &[&str]) -> String {
        client(base).unwrap().url(segments).unwrap().to_string()
    }

    #[test]
    fn urls_are_built_under_puppet_ca_v1() {
        assert_eq!(
            url_of("https://puppet:8140", &["certificate_status", "node-1"]),
            "https://puppet:8140/puppet-ca/v1/certificate_status/node-1"
        );
        assert_eq!(
            url_of("https://puppet:8140/", &["certificate", "ca"]),
            "https://puppet:8140/puppet-ca/v1/certificate/ca"
        );
        // A base path (reverse proxy prefix) is kept.
        assert_eq!(
            url_of("https://proxy/puppet/", &["clean"]),
            "https://proxy/puppet/puppet-ca/v1/clean"
        );
    }

    #[test]
    fn segments_cannot_change_the_route() {
        // validate_certname refuses these first; the URL layer encodes them anyway.
        assert_eq!(
            url_of("https://puppet:8140", &["certificate_status", "../clean"]),
            "https://puppet:8140/puppet-ca/v1/certificate_status/..%2Fclean"
        );
        assert_eq!(
            url_of(
                "https://puppet:8140",
                &["certificate_status", "a?state=x#y"]
            ),
            "https://puppet:8140/puppet-ca/v1/certificate_status/a%3Fstate=x%23y"
        );
        assert_eq!(
            url_of("https://puppet:8140", &["certificate_status", "a b%2f"]),
            "https://puppet:8140/puppet-ca/v1/certificate_status/a%20b%252f"
        );
    }

    #[test]
    fn base_url_must_be_plain_https() {
        for bad in [
            "http://puppet:8140",
            "puppet:8140",
            "not a url",
            "https://puppet:8140/?x=1",
            "https://user:pw@puppet:8140",
        ] {
            let err = client(bad).unwrap_err();
            assert_eq!(err.category(), "config", "{bad}");
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn pem_material_is_checked() {
        let err =
            HttpCa::from_pem("https://puppet", b"junk", b"junk", b"", DEFAULT_TIMEOUT).unwrap_err();
        assert_eq!(err.category(), "config");
        let ok = client("https://puppet").unwrap();
        assert_eq!(ok.timeout(), DEFAULT_TIMEOUT);
    }
}
