//! The server side of [`super::FakeCa`]: puppetserver's CA state and its answers to each
//! request of the CA API, before the client reads them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::csr::{validate_subject, Csr};
use super::pki::Authority;
use super::{CaRefusal, SignedCert};
use puppet_conductor_ca::{CaError, CertState, CertificateInfo};

/// A non-success HTTP answer of the server: status and body.
#[derive(Clone, Debug)]
pub(super) struct Http {
    pub(super) status: u16,
    pub(super) body: String,
}

impl Http {
    pub(super) fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }

    pub(super) fn error(&self, operation: &'static str) -> CaError {
        CaError::status(operation, self.status, &self.body, None)
    }

    pub(super) fn refusal(self) -> CaRefusal {
        CaRefusal {
            status: self.status,
            message: self.body,
        }
    }
}

/// A certificate on the CA, with what its status reports.
#[derive(Clone, Debug)]
pub(super) struct Issued {
    pub(super) cert: SignedCert,
    pub(super) info: CertificateInfo,
    pub(super) revoked_at: Option<DateTime<Utc>>,
}

/// What the CA holds: its `csrdir`, `signeddir`, serial file and CRL.
#[derive(Default)]
pub(super) struct CaState {
    /// Waiting CSRs by certname.
    pub(super) requests: BTreeMap<String, Csr>,
    /// Certname → index in `history` of the certificate the CA holds.
    pub(super) certs: BTreeMap<String, usize>,
    /// Every certificate ever signed, in signing order.
    pub(super) history: Vec<Issued>,
    /// The last serial used (the CA certificate's is 1).
    pub(super) serial: u64,
    /// Revocations so far: the CRL's number.
    pub(super) crl_number: u64,
    /// The current CRL, made again after each revocation.
    pub(super) crl: Option<String>,
    /// Requests that reached the fake, by gate operation.
    pub(super) calls: BTreeMap<&'static str, u64>,
}

/// What an applied request may use besides the state.
pub(super) struct Context<'a> {
    pub(super) authority: Result<&'a Authority, &'a str>,
    pub(super) policy: Policy,
    pub(super) now: DateTime<Utc>,
}

/// The signing settings of `ca.conf`.
#[derive(Clone, Copy)]
pub(super) struct Policy {
    pub(super) allow_subject_alt_names: bool,
    pub(super) allow_authorization_extensions: bool,
}

impl CaState {
    /// `PUT certificate_request/<certname>`, as an agent makes it.
    pub(super) fn submit(&mut self, certname: &str, pem: &str) -> Result<(), Http> {
        let csr = Csr::parse(pem)?;
        let Some(cn) = csr.cn.clone() else {
            return Err(Http::new(
                500,
                "Internal Server Error: the certificate request has no subject common name",
            ));
        };
        // puppetserver checks the CSR's own name for duplicates, before comparing names.
        let existing = match self.certs.get(&cn) {
            Some(index) => Some(self.history[*index].cert.state.as_str()),
            None => self.requests.contains_key(&cn).then_some("requested"),
        };
        if let Some(state) = existing {
            return Err(Http::new(
                400,
                format!("{cn} already has a {state} certificate; ignoring certificate request"),
            ));
        }
        validate_subject(certname, &cn)?;
        self.requests.insert(certname.to_owned(), csr);
        Ok(())
    }

    /// `GET certificate_statuses/any[?state=]`.
    pub(super) fn list(&self, state: Option<CertState>) -> Result<Vec<CertificateInfo>, Http> {
        let mut list = Vec::new();
        if matches!(state, None | Some(CertState::Requested)) {
            for (certname, csr) in &self.requests {
                list.push(csr.status(certname)?);
            }
        }
        if state != Some(CertState::Requested) {
            list.extend(
                self.certs
                    .values()
                    .map(|i| &self.history[*i])
                    .filter(|i| state.is_none_or(|s| s == i.cert.state))
                    .map(|i| i.info.clone()),
            );
        }
        Ok(list)
    }

    /// `GET certificate_status/<certname>`: the certificate if there is one, else the CSR.
    pub(super) fn status(&self, certname: &str) -> Result<CertificateInfo, Http> {
        if let Some(index) = self.certs.get(certname) {
            return Ok(self.history[*index].info.clone());
        }
        match self.requests.get(certname) {
            Some(csr) => csr.status(certname),
            None => Err(Http::new(404, "Resource not found.")),
        }
    }

    /// `PUT certificate_status/<certname>` `{"desired_state":"signed"}`.
    pub(super) fn sign(
        &mut self,
        policy: Policy,
        authority: &Authority,
        certname: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Http> {
        let Some(csr) = self.requests.get(certname) else {
            return Err(if self.certs.contains_key(certname) {
                Http::new(
                    409,
                    format!(
                        "Cannot sign certificate for host {certname} without a certificate request"
                    ),
                )
            } else {
                Http::new(404, "Invalid certificate subject.")
            });
        };
        csr.check_signable(certname, policy)?;
        let serial = self.serial + 1;
        let issued = csr
            .issue(authority, certname, serial, now)
            .map_err(|e| Http::new(500, format!("Internal Server Error: {e}")))?;
        self.serial = serial;
        self.requests.remove(certname);
        self.certs.insert(certname.to_owned(), self.history.len());
        self.history.push(issued);
        Ok(())
    }

    /// `DELETE certificate_status/<certname>`: certificate (not revoked!) and CSR.
    pub(super) fn delete(&mut self, certname: &str) -> Result<(), Http> {
        let cert = self.certs.remove(certname);
        if let Some(index) = cert {
            self.history[index].cert.on_ca = false;
        }
        let csr = self.requests.remove(certname);
        if cert.is_some() || csr.is_some() {
            Ok(())
        } else {
            Err(Http::new(404, "Resource not found."))
        }
    }

    /// `PUT clean` `{"certnames":[certname]}`: revoke and delete a certificate; a waiting
    /// CSR stays. Always 200, the text says what happened.
    pub(super) fn clean(&mut self, context: Context<'_>, certname: &str) -> String {
        let Some(index) = self.certs.get(certname).copied() else {
            return format!(
                "The following certs do not exist and cannot be revoked: [\"{certname}\"]"
            );
        };
        if let Ok(authority) = context.authority {
            self.revoke(authority, index, context.now);
        }
        self.certs.remove(certname);
        self.history[index].cert.on_ca = false;
        "Successfully cleaned all certs.".to_owned()
    }

    /// Adds a certificate to the CRL (once).
    pub(super) fn revoke(&mut self, authority: &Authority, index: usize, now: DateTime<Utc>) {
        let issued = &mut self.history[index];
        if issued.revoked_at.is_some() {
            return;
        }
        issued.revoked_at = Some(now);
        issued.cert.state = CertState::Revoked;
        issued.info.state = CertState::Revoked;
        self.crl_number += 1;
        self.crl = None;
        // Made now so the CRL's update time is the revocation's.
        let _crl = self.crl(authority, now);
    }

    pub(super) fn crl(
        &mut self,
        authority: &Authority,
        now: DateTime<Utc>,
    ) -> Result<String, Http> {
        if let Some(crl) = &self.crl {
            return Ok(crl.clone());
        }
        let revoked: Vec<(u64, DateTime<Utc>)> = self
            .history
            .iter()
            .filter_map(|i| Some((i.cert.serial, i.revoked_at?)))
            .collect();
        let pem = authority
            .crl(&revoked, self.crl_number, now)
            .map_err(|e| Http::new(500, format!("Internal Server Error: {e}")))?;
        self.crl = Some(pem.clone());
        Ok(pem)
    }
}
