//! [`FakeCa`]: a Puppet Server CA in memory behind [`PuppetCa`], for unit tests, the
//! lifecycle simulation and the benchmarks.
//!
//! It plays both sides of the wire as [`HttpCa`](puppet_conductor_ca::HttpCa) sees them:
//! puppetserver 7.9's CA (one CSR per certname; the status JSON; signing that checks
//! the CSR as `validate-csr` does and issues a real X.509 certificate carrying the CSR's
//! public key, the requested Puppet extensions and the certname as a DNS alt name;
//! `clean`, DELETE, the CRL; the answers 404, 409 and 500 with puppetserver's texts) and
//! the client's logic over it (the 409 of a second `sign` read back as success, the
//! look-then-remove rounds of `revoke_and_clean`, `remove_request` falling back to the
//! CSR when the status cannot be rendered). `tests/integration/contract_ca.rs` runs the
//! same cases against this fake and against `HttpCa` on the real puppetserver.
//!
//! A CSR whose first extension request repeats an extension is accepted, and then
//! breaks what puppetserver breaks: the unfiltered and `requested` listings, that
//! certname's status and signing answer 500 `repeated extension found: <oid>`, until
//! the CSR is deleted (measured in `tests/integration/ca_hostile_contract.rs`).
//!
//! Every request the real client makes passes the [`Gate`] once, named by what it asks
//! for: `list`, `status`, `csr`, `sign`, `remove_request` (DELETE certificate_status),
//! `clean`, `certificate`, `ca_certificate`, `crl`. So `sign` is one request, or two
//! when it answers 409; `revoke_and_clean` of a signed certificate is `status`, `clean`,
//! `status`; `remove_request` is `status` then `remove_request`. `Answer` applies and
//! answers; `Fail` applies nothing and returns what the real client returns
//! ([`FaultKind::Unavailable`]: status 503, `Throttled`: 429 with a `Retry-After` of
//! [`THROTTLE_RETRY_AFTER`], `Denied`: 403, `Timeout`: [`CaError::Timeout`]); `Lost`
//! applies and the whole call times out. The agent's and an administrator's side
//! ([`FakeCa::submit_csr`], [`FakeCa::clean_outside`], ...) is not gated.
//!
//! Time: validity dates are the epoch (wall clock at construction unless
//! [`FakeCa::with_epoch`]) plus the tokio time elapsed since construction, to the second;
//! a certificate is valid from a day before signing for [`CERT_TTL`], as puppetserver's.
//!
//! Knowingly different from puppetserver: the CA key is Ed25519 (ring cannot make RSA
//! keys; Ed25519 signatures are deterministic, so one CA key gives reproducible
//! certificates), made on first use unless [`FakeCa::with_ca_key`]; listings are sorted
//! by certname, requests first (puppetserver lists in directory order); no autosign;
//! subject alt names are allowed by default, as in the test server's `ca.conf`
//! (puppetserver's own default refuses them); a CSR the fake cannot read at all is
//! refused at submission with a 500 whose text is not puppetserver's (except for a body
//! that is not PEM, whose text was measured); signing takes no `cert_ttl`; no
//! infrastructure CRL.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rcgen::KeyPair;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{Call, Fate, FaultKind, Faults, Gate, System};
use csr::colon_hex;
use pki::Authority;
use puppet_conductor_ca::{
    validate_certname, CaError, CertState, CertificateInfo, PuppetCa, DEFAULT_TIMEOUT,
};
use puppet_conductor_core::sync::lock;
use server::{CaState, Context, Http, Issued, Policy};

mod csr;
mod pki;
mod server;
#[cfg(test)]
mod tests;

/// The CA certificate's subject common name.
pub const CA_NAME: &str = "Puppet CA: fake-puppetserver";
/// How long a signed certificate is valid (puppet's `ca_ttl` default, five years).
pub const CERT_TTL: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// The `Retry-After` a throttled request carries.
pub const THROTTLE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// puppetserver refused a request of the agent or an administrator: the HTTP status and
/// the body's text, as the real server sends them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the CA answered {status}: {message}")]
pub struct CaRefusal {
    /// 400 for a CSR the CA does not take, 404/409 as the API answers, 500 when it
    /// cannot read what it was given.
    pub status: u16,
    /// The response body.
    pub message: String,
}

/// One certificate the fake ever signed, as it stands now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCert {
    /// The certname.
    pub certname: String,
    /// The certificate's serial.
    pub serial: u64,
    /// hex SHA-256 of the DER SubjectPublicKeyInfo: the key it was issued to.
    pub public_key_sha256: String,
    /// SHA-256 fingerprint (`AA:BB:..`) of the certificate's DER.
    pub fingerprint: String,
    /// The certificate, PEM.
    pub pem: String,
    /// `Signed`, or `Revoked` once its serial is in the CRL.
    pub state: CertState,
    /// Whether the CA still holds it (lists it, serves it). A certificate no longer on
    /// the CA but still `Signed` was deleted without being revoked: its agent still works.
    pub on_ca: bool,
}

/// One CSR waiting on the CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingCsr {
    /// The certname it was submitted for.
    pub certname: String,
    /// The CSR as submitted.
    pub pem: String,
    /// hex SHA-256 of its DER SubjectPublicKeyInfo.
    pub public_key_sha256: String,
    /// SHA-256 fingerprint (`AA:BB:..`) of its DER, as the status reports it.
    pub fingerprint: String,
}

/// A Puppet Server CA in memory; see the module documentation.
pub struct FakeCa {
    gate: Arc<dyn Gate>,
    state: Mutex<CaState>,
    authority: OnceLock<Result<Authority, String>>,
    ca_key: Mutex<Option<KeyPair>>,
    allow_subject_alt_names: bool,
    allow_authorization_extensions: bool,
    call_timeout: Duration,
    wait_on_timeout: bool,
    epoch: DateTime<Utc>,
    created: Instant,
}

impl Default for FakeCa {
    /// A fake behind an unscripted [`Faults`]: every call is answered.
    fn default() -> Self {
        Self::new(Arc::new(Faults::default()))
    }
}

impl FakeCa {
    /// An empty CA behind `gate`: subject alt names allowed, authorization extensions
    /// not, timeouts reported as [`DEFAULT_TIMEOUT`] without waiting, times counted from
    /// now. Its key is made on first use.
    pub fn new(gate: Arc<dyn Gate>) -> Self {
        Self {
            gate,
            state: Mutex::new(CaState {
                serial: 1,
                ..CaState::default()
            }),
            authority: OnceLock::new(),
            ca_key: Mutex::new(None),
            allow_subject_alt_names: true,
            allow_authorization_extensions: false,
            call_timeout: DEFAULT_TIMEOUT,
            wait_on_timeout: false,
            epoch: Utc::now(),
            created: Instant::now(),
        }
    }

    /// `allow-subject-alt-names` of `ca.conf`: whether CSRs asking for alt names other
    /// than their own certname may be signed.
    #[must_use]
    pub fn with_subject_alt_names_allowed(mut self, allowed: bool) -> Self {
        self.allow_subject_alt_names = allowed;
        self
    }

    /// `allow-authorization-extensions` of `ca.conf` (`pp_cli_auth` stays refused either way).
    #[must_use]
    pub fn with_authorization_extensions_allowed(mut self, allowed: bool) -> Self {
        self.allow_authorization_extensions = allowed;
        self
    }

    /// The CA's key (any key rcgen signs with), for certificates identical across runs.
    #[must_use]
    pub fn with_ca_key(self, key: KeyPair) -> Self {
        *lock(&self.ca_key) = Some(key);
        self
    }

    /// The limit timeouts report (the real client's configured timeout).
    #[must_use]
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Whether a timed-out or lost call makes its caller wait the call timeout (tokio
    /// time) first, as the real one does; off by default to keep running-clock tests fast.
    #[must_use]
    pub fn with_timeout_wait(mut self, wait: bool) -> Self {
        self.wait_on_timeout = wait;
        self
    }

    /// Times are `epoch` plus the tokio time elapsed since construction (wall clock at
    /// construction by default; fix it for reproducible runs).
    #[must_use]
    pub fn with_epoch(mut self, epoch: DateTime<Utc>) -> Self {
        self.epoch = epoch;
        self
    }

    /// The CA's time now, to the second.
    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = Instant::now().saturating_duration_since(self.created);
        let now = self.epoch + TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX);
        DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
    }

    // ------------------------------------------------------------ the agent's side

    /// An agent submits `pem` for `certname` (`PUT certificate_request/<certname>`), with
    /// puppetserver's rules: a certname (the CSR's common name) that already has a CSR or
    /// a certificate is refused with 400 `<cn> already has a requested|signed|revoked
    /// certificate; ignoring certificate request`, a common name other than `certname`
    /// with 400 `Instance name "<cn>" does not match requested key "<certname>"`, badly
    /// formed names as puppetserver refuses them. No autosign: the CSR waits.
    pub fn submit_csr(&self, certname: &str, pem: &str) -> Result<(), CaRefusal> {
        self.with(|s| s.submit(certname, pem))
            .map_err(Http::refusal)
    }

    /// An administrator signs the waiting CSR (`puppetserver ca sign`, or policy autosign
    /// getting there first), with the checks the API's signing makes.
    pub fn sign_outside(&self, certname: &str) -> Result<(), CaRefusal> {
        let now = self.now();
        let authority = self.authority().map_err(|e| CaRefusal {
            status: 500,
            message: e.to_owned(),
        })?;
        self.with(|s| s.sign(self.policy(), authority, certname, now))
            .map_err(Http::refusal)
    }

    /// An administrator revokes the certificate (`PUT certificate_status` revoked): it
    /// stays on the CA, `revoked`. Whether there was a certificate to revoke.
    pub fn revoke_outside(&self, certname: &str) -> bool {
        let now = self.now();
        let Ok(authority) = self.authority() else {
            return false;
        };
        self.with(|s| match s.certs.get(certname).copied() {
            Some(index) => {
                s.revoke(authority, index, now);
                true
            }
            None => false,
        })
    }

    /// An administrator runs `puppetserver ca clean --certname <certname>`: the
    /// certificate is revoked, then certificate and CSR are deleted. Whether there was
    /// anything to remove.
    pub fn clean_outside(&self, certname: &str) -> bool {
        let now = self.now();
        let authority = self.authority().ok();
        self.with(|s| {
            if let (Some(index), Some(authority)) = (s.certs.get(certname).copied(), authority) {
                s.revoke(authority, index, now);
            }
            s.delete(certname).is_ok()
        })
    }

    /// The CA loses its inventory (a restore from an old backup, a wiped `cadir/signed`):
    /// every CSR and certificate is gone from it. Its key, serial counter and CRL survive,
    /// so revoked certificates stay revoked; [`FakeCa::signed`] still shows the history.
    pub fn lose_state(&self) {
        self.with(|s| {
            s.requests.clear();
            for index in std::mem::take(&mut s.certs).into_values() {
                s.history[index].cert.on_ca = false;
            }
        });
    }

    // ------------------------------------------------------------ ground truth (not gated)

    /// Every certificate ever signed, in signing order (revoked and removed ones too).
    pub fn signed(&self) -> Vec<SignedCert> {
        self.with(|s| s.history.iter().map(|i| i.cert.clone()).collect())
    }

    /// The CSRs waiting, by certname.
    pub fn requests(&self) -> Vec<WaitingCsr> {
        self.with(|s| {
            s.requests
                .iter()
                .map(|(certname, csr)| WaitingCsr {
                    certname: certname.clone(),
                    pem: csr.pem.clone(),
                    public_key_sha256: hex::encode(Sha256::digest(&csr.spki)),
                    fingerprint: colon_hex(&csr.der),
                })
                .collect()
        })
    }

    /// Requests that reached the fake so far, by gate operation, whatever their fate.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.with(|s| s.calls.clone())
    }

    /// Requests of `operation` that reached the fake so far.
    pub fn call_count(&self, operation: &str) -> u64 {
        self.with(|s| s.calls.get(operation).copied().unwrap_or(0))
    }

    // ------------------------------------------------------------ plumbing

    fn with<T>(&self, f: impl FnOnce(&mut CaState) -> T) -> T {
        // Every change under the lock is complete before anything can fail.
        f(&mut lock(&self.state))
    }

    fn policy(&self) -> Policy {
        Policy {
            allow_subject_alt_names: self.allow_subject_alt_names,
            allow_authorization_extensions: self.allow_authorization_extensions,
        }
    }

    /// The CA's key and certificate, made on first use.
    fn authority(&self) -> Result<&Authority, &str> {
        self.authority
            .get_or_init(|| {
                let key = lock(&self.ca_key).take();
                Authority::new(key, self.now()).map_err(|e| format!("the fake CA has no key: {e}"))
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// One request: counted, gated, then applied (`apply` answers as the server would,
    /// which may be an HTTP error the caller interprets). `error_op` names the trait
    /// call in errors, as the real client does.
    async fn request<T>(
        &self,
        gate_op: &'static str,
        error_op: &'static str,
        target: &str,
        apply: impl FnOnce(&mut CaState, Context<'_>) -> Result<T, Http>,
    ) -> Result<Result<T, Http>, CaError> {
        self.with(|s| *s.calls.entry(gate_op).or_default() += 1);
        let call = Call::new(System::Ca, gate_op, target);
        let fate = self.gate.admit(&call).await;
        match fate {
            Fate::Answer => Ok(self.apply(apply)),
            Fate::Lost => {
                // Applied; only the answer is lost.
                let _lost = self.apply(apply);
                Err(self.timeout(error_op).await)
            }
            Fate::Late => {
                let answer = self.apply(apply);
                if self.gate.deliver(&call).await {
                    Ok(answer)
                } else {
                    Err(self.timeout(error_op).await)
                }
            }
            Fate::Fail(kind) => Err(self.fault(error_op, kind).await),
        }
    }

    fn apply<T>(
        &self,
        apply: impl FnOnce(&mut CaState, Context<'_>) -> Result<T, Http>,
    ) -> Result<T, Http> {
        let now = self.now();
        let context = Context {
            authority: self.authority(),
            policy: self.policy(),
            now,
        };
        self.with(|s| apply(s, context))
    }

    /// What the real client returns when a request fails with `kind`.
    async fn fault(&self, operation: &'static str, kind: FaultKind) -> CaError {
        match kind {
            FaultKind::Timeout => self.timeout(operation).await,
            FaultKind::Unavailable => CaError::status(operation, 503, "Service Unavailable", None),
            FaultKind::Throttled => CaError::status(
                operation,
                429,
                "Too Many Requests",
                Some(THROTTLE_RETRY_AFTER),
            ),
            FaultKind::Denied => CaError::status(
                operation,
                403,
                "Forbidden request: the client certificate is not allowed. \
                 Please see the server logs for details.",
                None,
            ),
        }
    }

    async fn timeout(&self, operation: &'static str) -> CaError {
        if self.wait_on_timeout {
            tokio::time::sleep(self.call_timeout).await;
        }
        CaError::Timeout {
            operation,
            timeout: self.call_timeout,
        }
    }

    /// `GET certificate_status/<certname>`, 404 as `None`.
    async fn fetch_status(
        &self,
        operation: &'static str,
        certname: &str,
    ) -> Result<Option<CertificateInfo>, CaError> {
        match self
            .request("status", operation, certname, |s, _| s.status(certname))
            .await?
        {
            Ok(info) => Ok(Some(info)),
            Err(h) if h.status == 404 => Ok(None),
            Err(h) => Err(h.error(operation)),
        }
    }

    /// `DELETE certificate_status/<certname>`; already gone is fine.
    async fn delete_request(&self, operation: &'static str, certname: &str) -> Result<(), CaError> {
        match self
            .request("remove_request", operation, certname, |s, _| {
                s.delete(certname)
            })
            .await?
        {
            Ok(()) => Ok(()),
            Err(h) if h.status == 404 => Ok(()),
            Err(h) => Err(h.error(operation)),
        }
    }

    /// GET a PEM document, 404 as `None`.
    async fn optional_pem(
        &self,
        operation: &'static str,
        certname: &str,
        read: impl FnOnce(&CaState) -> Option<String>,
    ) -> Result<Option<String>, CaError> {
        let answer = self
            .request(operation, operation, certname, |s, _| {
                read(s).ok_or_else(|| Http::new(404, format!("Could not find {certname}")))
            })
            .await?;
        match answer {
            Ok(pem) => Ok(Some(pem)),
            Err(h) if h.status == 404 => Ok(None),
            Err(h) => Err(h.error(operation)),
        }
    }
}

#[async_trait::async_trait]
impl PuppetCa for FakeCa {
    async fn list(&self, state: Option<CertState>) -> Result<Vec<CertificateInfo>, CaError> {
        const OP: &str = "list";
        self.request(OP, OP, "any", |s, _| s.list(state))
            .await?
            .map_err(|h| h.error(OP))
    }

    async fn status(&self, certname: &str) -> Result<Option<CertificateInfo>, CaError> {
        validate_certname(certname)?;
        self.fetch_status("status", certname).await
    }

    async fn csr_pem(&self, certname: &str) -> Result<Option<String>, CaError> {
        validate_certname(certname)?;
        self.optional_pem("csr", certname, |s| {
            s.requests.get(certname).map(|c| c.pem.clone())
        })
        .await
    }

    async fn sign(&self, certname: &str) -> Result<(), CaError> {
        const OP: &str = "sign";
        validate_certname(certname)?;
        let answer = self
            .request(OP, OP, certname, |s, c| match c.authority {
                Ok(authority) => s.sign(c.policy, authority, certname, c.now),
                Err(e) => Err(Http::new(500, e)),
            })
            .await?;
        let Err(refused) = answer else {
            return Ok(());
        };
        if refused.status != 409 {
            return Err(refused.error(OP));
        }
        // 409 means "no CSR to sign"; already signed is what was wanted.
        match self.fetch_status(OP, certname).await? {
            Some(info) if info.state == CertState::Signed => Ok(()),
            _ => Err(refused.error(OP)),
        }
    }

    async fn revoke_and_clean(&self, certname: &str) -> Result<(), CaError> {
        const OP: &str = "revoke_and_clean";
        // The real client's rounds of "look, then remove what is there".
        const ROUNDS: usize = 3;
        validate_certname(certname)?;
        for round in 0..=ROUNDS {
            let Some(info) = self.fetch_status(OP, certname).await? else {
                return Ok(());
            };
            if round == ROUNDS {
                return Err(CaError::NotCleaned {
                    certname: certname.to_owned(),
                    state: info.state,
                });
            }
            match info.state {
                CertState::Requested => self.delete_request(OP, certname).await?,
                CertState::Signed | CertState::Revoked => {
                    // `clean` answers 200 whatever it found.
                    let _answer = self
                        .request("clean", OP, certname, |s, c| Ok(s.clean(c, certname)))
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn certificate_pem(&self, certname: &str) -> Result<Option<String>, CaError> {
        validate_certname(certname)?;
        self.optional_pem("certificate", certname, |s| {
            s.certs
                .get(certname)
                .map(|i| s.history[*i].cert.pem.clone())
        })
        .await
    }

    async fn remove_request(&self, certname: &str) -> Result<bool, CaError> {
        const OP: &str = "remove_request";
        validate_certname(certname)?;
        let requested = match self.fetch_status(OP, certname).await {
            Ok(info) => info.is_some_and(|i| i.state == CertState::Requested),
            // The status of a CSR puppetserver cannot parse answers 500; the CSR is served.
            Err(CaError::Status { status, .. }) if status >= 500 => {
                self.csr_pem(certname).await?.is_some()
            }
            Err(e) => return Err(e),
        };
        if !requested {
            return Ok(false);
        }
        self.delete_request(OP, certname).await?;
        Ok(true)
    }

    async fn ca_certificate(&self) -> Result<String, CaError> {
        const OP: &str = "ca_certificate";
        self.request(OP, OP, "ca", |_, c| match c.authority {
            Ok(a) => Ok(a.pem.clone()),
            Err(e) => Err(Http::new(500, e)),
        })
        .await?
        .map_err(|h| h.error(OP))
    }

    async fn crl(&self) -> Result<String, CaError> {
        const OP: &str = "crl";
        self.request(OP, OP, "ca", |s, c| match c.authority {
            Ok(a) => s.crl(a, c.now),
            Err(e) => Err(Http::new(500, e)),
        })
        .await?
        .map_err(|h| h.error(OP))
    }
}
