//! The CA API calls of [`HttpCa`], one per [`PuppetCa`] method.
//!
//! Status codes measured on puppetserver 7.9: certificate_status GET 200/404;
//! PUT 204, 404 unknown, 409 nothing to sign / never signed, 400 bad state,
//! 415 without `Content-Type: application/json`; DELETE 204/404; `clean`
//! always 200 (its text says which certnames did not exist, and a
//! requested-only CSR is left in place); certificate_request GET 200/404.

use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::http_client::{status_error, Accept};
use super::status_json::RawStatus;
use super::{validate_certname, CaError, CertState, CertificateInfo, HttpCa, PuppetCa};

/// Rounds of "look, then remove what is there" before giving up on a
/// certname that keeps coming back.
const CLEAN_ROUNDS: usize = 3;

#[async_trait::async_trait]
impl PuppetCa for HttpCa {
    async fn list(&self, state: Option<CertState>) -> Result<Vec<CertificateInfo>, CaError> {
        const OP: &str = "list";
        self.bounded(OP, async {
            // "any" is the key segment the API requires and ignores.
            let mut url = self.url(&["certificate_statuses", "any"])?;
            if let Some(state) = state {
                url.query_pairs_mut().append_pair("state", state.as_str());
            }
            let response = self
                .send(OP, self.request(Method::GET, url, Accept::Json))
                .await?;
            if !response.status().is_success() {
                return Err(status_error(OP, response).await);
            }
            let raw: Vec<RawStatus> = self.json(OP, response).await?;
            let list: Vec<CertificateInfo> = raw.into_iter().map(CertificateInfo::from).collect();
            tracing::debug!(count = list.len(), state = ?state, "listed Puppet CA certificates");
            Ok(list)
        })
        .await
    }

    async fn status(&self, certname: &str) -> Result<Option<CertificateInfo>, CaError> {
        validate_certname(certname)?;
        self.bounded("status", self.fetch_status("status", certname))
            .await
    }

    async fn csr_pem(&self, certname: &str) -> Result<Option<String>, CaError> {
        validate_certname(certname)?;
        self.optional_pem(
            "csr",
            &["certificate_request", certname],
            "CERTIFICATE REQUEST",
        )
        .await
    }

    async fn sign(&self, certname: &str) -> Result<(), CaError> {
        const OP: &str = "sign";
        validate_certname(certname)?;
        self.bounded(OP, async {
            let url = self.url(&["certificate_status", certname])?;
            let request = self
                .request(Method::PUT, url, Accept::Json)
                .json(&json!({ "desired_state": "signed" }));
            let response = self.send(OP, request).await?;
            if response.status().is_success() {
                tracing::info!(certname, "signed certificate");
                return Ok(());
            }
            let error = status_error(OP, response).await;
            if error.http_status() != Some(StatusCode::CONFLICT.as_u16()) {
                return Err(error);
            }
            // 409 means "no CSR to sign"; already signed is what we wanted.
            match self.fetch_status(OP, certname).await? {
                Some(info) if info.state == CertState::Signed => {
                    tracing::debug!(certname, "certificate was already signed");
                    Ok(())
                }
                _ => Err(error),
            }
        })
        .await
    }

    async fn revoke_and_clean(&self, certname: &str) -> Result<(), CaError> {
        const OP: &str = "revoke_and_clean";
        validate_certname(certname)?;
        self.bounded(OP, async {
            for round in 0..=CLEAN_ROUNDS {
                let Some(info) = self.fetch_status(OP, certname).await? else {
                    return Ok(());
                };
                if round == CLEAN_ROUNDS {
                    return Err(CaError::NotCleaned {
                        certname: certname.to_owned(),
                        state: info.state,
                    });
                }
                match info.state {
                    // `clean` refuses a never-signed CSR; DELETE drops it. (DELETE
                    // on a signed certificate would only remove the file, leaving
                    // the agent working, so it is used for requests only.)
                    CertState::Requested => self.delete_request(OP, certname).await?,
                    CertState::Signed | CertState::Revoked => self.clean(OP, certname).await?,
                }
                tracing::info!(certname, state = %info.state, "removed from the Puppet CA");
            }
            Ok(())
        })
        .await
    }

    async fn certificate_pem(&self, certname: &str) -> Result<Option<String>, CaError> {
        validate_certname(certname)?;
        self.optional_pem("certificate", &["certificate", certname], "CERTIFICATE")
            .await
    }

    async fn remove_request(&self, certname: &str) -> Result<bool, CaError> {
        const OP: &str = "remove_request";
        validate_certname(certname)?;
        self.bounded(OP, async {
            let requested = match self.fetch_status(OP, certname).await {
                Ok(info) => info.is_some_and(|i| i.state == CertState::Requested),
                // puppetserver cannot render the status of some malformed CSRs (a repeated
                // extension answers 500): the CSR itself is still served, so it is one.
                Err(CaError::Status { status, .. }) if status >= 500 => {
                    self.csr_pem(certname).await?.is_some()
                }
                Err(e) => return Err(e),
            };
            if !requested {
                return Ok(false);
            }
            self.delete_request(OP, certname).await?;
            tracing::info!(certname, "waiting CSR removed from the Puppet CA");
            Ok(true)
        })
        .await
    }

    async fn ca_certificate(&self) -> Result<String, CaError> {
        self.fetch_pem("ca_certificate", &["certificate", "ca"], "CERTIFICATE")
            .await
    }

    async fn crl(&self) -> Result<String, CaError> {
        self.fetch_pem("crl", &["certificate_revocation_list", "ca"], "X509 CRL")
            .await
    }
}

impl HttpCa {
    /// GET certificate_status/<certname>, 404 as `None`. No timeout of its own.
    async fn fetch_status(
        &self,
        operation: &'static str,
        certname: &str,
    ) -> Result<Option<CertificateInfo>, CaError> {
        let url = self.url(&["certificate_status", certname])?;
        let response = self
            .send(operation, self.request(Method::GET, url, Accept::Json))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(status_error(operation, response).await);
        }
        let raw: RawStatus = self.json(operation, response).await?;
        Ok(Some(raw.into()))
    }

    /// DELETE certificate_status/<certname>; already gone is fine.
    async fn delete_request(&self, operation: &'static str, certname: &str) -> Result<(), CaError> {
        let url = self.url(&["certificate_status", certname])?;
        let response = self
            .send(operation, self.request(Method::DELETE, url, Accept::Json))
            .await?;
        if response.status().is_success() || response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(status_error(operation, response).await)
    }

    /// PUT clean: revoke and delete a certificate. Its 200 text is not
    /// parsed; the caller reads the state back instead.
    async fn clean(&self, operation: &'static str, certname: &str) -> Result<(), CaError> {
        let url = self.url(&["clean"])?;
        let request = self
            .request(Method::PUT, url, Accept::Pem)
            .json(&json!({ "certnames": [certname] }));
        let response = self.send(operation, request).await?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(status_error(operation, response).await)
    }

    /// GET a PEM document that may be absent (404 as `None`), under the timeout.
    async fn optional_pem(
        &self,
        operation: &'static str,
        segments: &[&str],
        label: &str,
    ) -> Result<Option<String>, CaError> {
        self.bounded(operation, async {
            let url = self.url(segments)?;
            let response = self
                .send(operation, self.request(Method::GET, url, Accept::Pem))
                .await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !response.status().is_success() {
                return Err(status_error(operation, response).await);
            }
            self.pem(operation, response, label).await.map(Some)
        })
        .await
    }

    /// GET a PEM document that must exist.
    async fn fetch_pem(
        &self,
        operation: &'static str,
        segments: &[&str],
        label: &str,
    ) -> Result<String, CaError> {
        self.bounded(operation, async {
            let url = self.url(segments)?;
            let response = self
                .send(operation, self.request(Method::GET, url, Accept::Pem))
                .await?;
            if !response.status().is_success() {
                return Err(status_error(operation, response).await);
            }
            self.pem(operation, response, label).await
        })
        .await
    }

    /// The body as a PEM text that must contain a `label` block.
    async fn pem(
        &self,
        operation: &'static str,
        response: Response,
        label: &str,
    ) -> Result<String, CaError> {
        let text = self.text(operation, response).await?;
        if !text.contains(&format!("-----BEGIN {label}-----")) {
            return Err(CaError::InvalidResponse {
                operation,
                what: format!("expected a PEM {label}"),
                source: None,
            });
        }
        Ok(text)
    }

    /// The body parsed as JSON (puppetserver labels it `*/*`, so the
    /// content type is not checked).
    async fn json<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        response: Response,
    ) -> Result<T, CaError> {
        let text = self.text(operation, response).await?;
        serde_json::from_str(&text).map_err(|e| CaError::InvalidResponse {
            operation,
            what: "JSON not in the certificate_status format".to_owned(),
            source: Some(Box::new(e)),
        })
    }
}
