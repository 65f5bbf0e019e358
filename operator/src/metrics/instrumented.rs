//! Decorators that time and count every call of the external-service traits,
//! then delegate: `external_calls_total{service,operation,outcome}` and
//! `external_call_duration_seconds{service,operation}`.
//!
//! Wrapping the trait objects (rather than the SDK clients) measures what the
//! reconciler waits for, retries and timeouts included, and needs no change in
//! the clients themselves.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::Metrics;
use crate::ca::{CaError, CertState, CertificateInfo, PuppetCa};
use crate::cloud::{Cloud, CloudError, Instance, LaunchRequest};
use crate::records::{
    Claim, ListedRecord, NodeRecord, Privacy, RecordListing, Records, RecordsError,
    SignatureRecord, WriteOutcome,
};

/// Service label of EC2 calls.
pub const SERVICE_EC2: &str = "ec2";
/// Service label of S3 record calls.
pub const SERVICE_S3: &str = "s3";
/// Service label of Puppet CA calls.
pub const SERVICE_PUPPET_CA: &str = "puppet_ca";

/// Outcome label of a call that succeeded.
pub const OUTCOME_OK: &str = "ok";

/// The three service errors' `category()`, for the outcome label.
trait Categorized {
    fn category(&self) -> &'static str;
}

impl Categorized for CloudError {
    fn category(&self) -> &'static str {
        CloudError::category(self)
    }
}

impl Categorized for RecordsError {
    fn category(&self) -> &'static str {
        RecordsError::category(self)
    }
}

impl Categorized for CaError {
    fn category(&self) -> &'static str {
        CaError::category(self)
    }
}

/// Awaits `call`, then counts it with its duration and outcome.
async fn timed<T, E: Categorized>(
    metrics: &Metrics,
    service: &str,
    operation: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(_) => OUTCOME_OK,
        Err(e) => e.category(),
    };
    metrics.count_call(service, operation, outcome, started.elapsed());
    result
}

/// A [`Cloud`] that counts and times every call (service `ec2`).
pub struct MeteredCloud {
    inner: Arc<dyn Cloud>,
    metrics: Arc<Metrics>,
}

impl MeteredCloud {
    /// Meters `inner` into `metrics`.
    pub fn new(inner: Arc<dyn Cloud>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait::async_trait]
impl Cloud for MeteredCloud {
    async fn describe_master_instances(
        &self,
        master_key: &str,
    ) -> Result<Vec<Instance>, CloudError> {
        let call = self.inner.describe_master_instances(master_key);
        timed(
            &self.metrics,
            SERVICE_EC2,
            "describe_master_instances",
            call,
        )
        .await
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Instance, CloudError> {
        timed(
            &self.metrics,
            SERVICE_EC2,
            "launch",
            self.inner.launch(request),
        )
        .await
    }

    async fn terminate(&self, instance_ids: &[String]) -> Result<(), CloudError> {
        let call = self.inner.terminate(instance_ids);
        timed(&self.metrics, SERVICE_EC2, "terminate", call).await
    }

    async fn probe(&self) -> Result<(), CloudError> {
        timed(&self.metrics, SERVICE_EC2, "probe", self.inner.probe()).await
    }
}

/// A [`Records`] store that counts and times every call (service `s3`).
pub struct MeteredRecords {
    inner: Arc<dyn Records>,
    metrics: Arc<Metrics>,
}

impl MeteredRecords {
    /// Meters `inner` into `metrics`.
    pub fn new(inner: Arc<dyn Records>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait::async_trait]
impl Records for MeteredRecords {
    async fn list(&self) -> Result<RecordListing, RecordsError> {
        timed(&self.metrics, SERVICE_S3, "list", self.inner.list()).await
    }

    async fn get(&self, certname: &str) -> Result<Option<NodeRecord>, RecordsError> {
        timed(&self.metrics, SERVICE_S3, "get", self.inner.get(certname)).await
    }

    async fn put_if_changed(
        &self,
        record: &NodeRecord,
        listed: Option<&ListedRecord>,
    ) -> Result<WriteOutcome, RecordsError> {
        let call = self.inner.put_if_changed(record, listed);
        timed(&self.metrics, SERVICE_S3, "put_if_changed", call).await
    }

    async fn delete(&self, certname: &str) -> Result<(), RecordsError> {
        timed(
            &self.metrics,
            SERVICE_S3,
            "delete",
            self.inner.delete(certname),
        )
        .await
    }

    async fn record_check_in(&self, certname: &str, at: DateTime<Utc>) -> Result<(), RecordsError> {
        let call = self.inner.record_check_in(certname, at);
        timed(&self.metrics, SERVICE_S3, "record_check_in", call).await
    }

    async fn claim_signature(&self, claim: &SignatureRecord) -> Result<Claim, RecordsError> {
        let call = self.inner.claim_signature(claim);
        timed(&self.metrics, SERVICE_S3, "claim_signature", call).await
    }

    async fn get_signature(&self, certname: &str) -> Result<Option<SignatureRecord>, RecordsError> {
        let call = self.inner.get_signature(certname);
        timed(&self.metrics, SERVICE_S3, "get_signature", call).await
    }

    async fn put_signature(&self, signature: &SignatureRecord) -> Result<(), RecordsError> {
        let call = self.inner.put_signature(signature);
        timed(&self.metrics, SERVICE_S3, "put_signature", call).await
    }

    async fn delete_signature(&self, certname: &str) -> Result<(), RecordsError> {
        let call = self.inner.delete_signature(certname);
        timed(&self.metrics, SERVICE_S3, "delete_signature", call).await
    }

    async fn probe(&self) -> Result<Privacy, RecordsError> {
        timed(&self.metrics, SERVICE_S3, "probe", self.inner.probe()).await
    }
}

/// A [`PuppetCa`] that counts and times every call (service `puppet_ca`).
pub struct MeteredCa {
    inner: Arc<dyn PuppetCa>,
    metrics: Arc<Metrics>,
}

impl MeteredCa {
    /// Meters `inner` into `metrics`.
    pub fn new(inner: Arc<dyn PuppetCa>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait::async_trait]
impl PuppetCa for MeteredCa {
    async fn list(&self, state: Option<CertState>) -> Result<Vec<CertificateInfo>, CaError> {
        timed(
            &self.metrics,
            SERVICE_PUPPET_CA,
            "list",
            self.inner.list(state),
        )
        .await
    }

    async fn status(&self, certname: &str) -> Result<Option<CertificateInfo>, CaError> {
        let call = self.inner.status(certname);
        timed(&self.metrics, SERVICE_PUPPET_CA, "status", call).await
    }

    async fn csr_pem(&self, certname: &str) -> Result<Option<String>, CaError> {
        let call = self.inner.csr_pem(certname);
        timed(&self.metrics, SERVICE_PUPPET_CA, "csr_pem", call).await
    }

    async fn sign(&self, certname: &str) -> Result<(), CaError> {
        timed(
            &self.metrics,
            SERVICE_PUPPET_CA,
            "sign",
            self.inner.sign(certname),
        )
        .await
    }

    async fn revoke_and_clean(&self, certname: &str) -> Result<(), CaError> {
        let call = self.inner.revoke_and_clean(certname);
        timed(&self.metrics, SERVICE_PUPPET_CA, "revoke_and_clean", call).await
    }

    async fn certificate_pem(&self, certname: &str) -> Result<Option<String>, CaError> {
        let call = self.inner.certificate_pem(certname);
        timed(&self.metrics, SERVICE_PUPPET_CA, "certificate", call).await
    }

    async fn remove_request(&self, certname: &str) -> Result<bool, CaError> {
        let call = self.inner.remove_request(certname);
        timed(&self.metrics, SERVICE_PUPPET_CA, "remove_request", call).await
    }

    async fn ca_certificate(&self) -> Result<String, CaError> {
        let call = self.inner.ca_certificate();
        timed(&self.metrics, SERVICE_PUPPET_CA, "ca_certificate", call).await
    }

    async fn crl(&self) -> Result<String, CaError> {
        timed(&self.metrics, SERVICE_PUPPET_CA, "crl", self.inner.crl()).await
    }
}
