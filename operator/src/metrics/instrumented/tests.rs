//! In-test fakes: the first call of each kind succeeds, later ones time out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::controller::services::MasterServices;
use crate::identity::ChallengeKey;

/// True on the first call only.
#[derive(Default)]
struct FirstOnly(AtomicUsize);

impl FirstOnly {
    fn first(&self) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst) == 0
    }
}

#[derive(Default)]
struct FakeCloud(FirstOnly);

#[async_trait::async_trait]
impl Cloud for FakeCloud {
    async fn describe_master_instances(&self, _: &str) -> Result<Vec<Instance>, CloudError> {
        if self.0.first() {
            Ok(Vec::new())
        } else {
            Err(CloudError::Timeout {
                operation: "DescribeInstances",
                timeout: Duration::from_secs(20),
            })
        }
    }

    async fn launch(&self, _: &LaunchRequest) -> Result<Instance, CloudError> {
        Err(CloudError::InvalidRequest {
            operation: "RunInstances",
            what: "not faked".to_string(),
            source: None,
        })
    }

    async fn terminate(&self, _: &[String]) -> Result<(), CloudError> {
        Ok(())
    }

    async fn probe(&self) -> Result<(), CloudError> {
        Ok(())
    }
}

#[derive(Default)]
struct FakeRecords(FirstOnly);

#[async_trait::async_trait]
impl Records for FakeRecords {
    async fn list(&self) -> Result<RecordListing, RecordsError> {
        Ok(RecordListing::default())
    }

    async fn get(&self, _: &str) -> Result<Option<NodeRecord>, RecordsError> {
        Ok(None)
    }

    async fn put_if_changed(
        &self,
        _: &NodeRecord,
        _: Option<&ListedRecord>,
    ) -> Result<WriteOutcome, RecordsError> {
        Ok(WriteOutcome::Unchanged)
    }

    async fn delete(&self, _: &str) -> Result<(), RecordsError> {
        if self.0.first() {
            Ok(())
        } else {
            Err(RecordsError::Timeout {
                operation: "DeleteObject",
                timeout: Duration::from_secs(20),
            })
        }
    }

    async fn record_check_in(&self, _: &str, _: DateTime<Utc>) -> Result<(), RecordsError> {
        Ok(())
    }

    async fn claim_signature(&self, _: &SignatureRecord) -> Result<Claim, RecordsError> {
        Ok(Claim::Created)
    }

    async fn get_signature(&self, _: &str) -> Result<Option<SignatureRecord>, RecordsError> {
        Ok(None)
    }

    async fn put_signature(&self, _: &SignatureRecord) -> Result<(), RecordsError> {
        Ok(())
    }

    async fn delete_signature(&self, _: &str) -> Result<(), RecordsError> {
        Ok(())
    }

    async fn probe(&self) -> Result<Privacy, RecordsError> {
        Ok(Privacy::Private)
    }
}

#[derive(Default)]
struct FakeCa(FirstOnly);

#[async_trait::async_trait]
impl PuppetCa for FakeCa {
    async fn list(&self, _: Option<CertState>) -> Result<Vec<CertificateInfo>, CaError> {
        Ok(Vec::new())
    }

    async fn status(&self, _: &str) -> Result<Option<CertificateInfo>, CaError> {
        Ok(None)
    }

    async fn csr_pem(&self, _: &str) -> Result<Option<String>, CaError> {
        Ok(None)
    }

    async fn sign(&self, _: &str) -> Result<(), CaError> {
        if self.0.first() {
            Ok(())
        } else {
            Err(CaError::Timeout {
                operation: "sign",
                timeout: Duration::from_secs(20),
            })
        }
    }

    async fn revoke_and_clean(&self, _: &str) -> Result<(), CaError> {
        Ok(())
    }

    async fn certificate_pem(&self, _: &str) -> Result<Option<String>, CaError> {
        Ok(None)
    }

    async fn remove_request(&self, _: &str) -> Result<bool, CaError> {
        Ok(false)
    }

    async fn ca_certificate(&self) -> Result<String, CaError> {
        Ok(String::new())
    }

    async fn crl(&self) -> Result<String, CaError> {
        Ok(String::new())
    }
}

#[track_caller]
fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing line `{line}` in:\n{text}"
    );
}

#[tokio::test]
async fn metered_cloud_counts_ok_and_error_category() {
    let metrics = Arc::new(Metrics::new());
    let cloud = MeteredCloud::new(Arc::new(FakeCloud::default()), metrics.clone());
    assert!(cloud.describe_master_instances("m").await.is_ok());
    let err = cloud.describe_master_instances("m").await.unwrap_err();
    // The decorator hands the error back untouched.
    assert!(matches!(err, CloudError::Timeout { .. }), "{err:?}");
    let text = metrics.encode().unwrap();
    assert_line(
        &text,
        r#"puppet_conductor_external_calls_total{service="ec2",operation="describe_master_instances",outcome="ok"} 1"#,
    );
    assert_line(
        &text,
        r#"puppet_conductor_external_calls_total{service="ec2",operation="describe_master_instances",outcome="timeout"} 1"#,
    );
    assert_line(
        &text,
        r#"puppet_conductor_external_call_duration_seconds_count{service="ec2",operation="describe_master_instances"} 2"#,
    );
}

#[tokio::test]
async fn instrument_wraps_all_three_services() {
    let metrics = Arc::new(Metrics::new());
    let services = MasterServices {
        cloud: Arc::new(FakeCloud::default()),
        records: Arc::new(FakeRecords::default()),
        ca: Arc::new(FakeCa::default()),
        ca_cert_pem: "PEM".to_string(),
        challenge_key: ChallengeKey::generate(),
    }
    .metered(&metrics);
    assert_eq!(services.ca_cert_pem, "PEM");
    services
        .cloud
        .terminate(&["i-1".to_string()])
        .await
        .unwrap();
    services.records.delete("node-1").await.unwrap();
    services.records.delete("node-1").await.unwrap_err();
    services.records.probe().await.unwrap();
    services.ca.sign("node-1").await.unwrap();
    services.ca.sign("node-1").await.unwrap_err();
    let text = metrics.encode().unwrap();
    for line in [
        r#"puppet_conductor_external_calls_total{service="ec2",operation="terminate",outcome="ok"} 1"#,
        r#"puppet_conductor_external_calls_total{service="s3",operation="delete",outcome="ok"} 1"#,
        r#"puppet_conductor_external_calls_total{service="s3",operation="delete",outcome="timeout"} 1"#,
        r#"puppet_conductor_external_calls_total{service="s3",operation="probe",outcome="ok"} 1"#,
        r#"puppet_conductor_external_calls_total{service="puppet_ca",operation="sign",outcome="ok"} 1"#,
        r#"puppet_conductor_external_calls_total{service="puppet_ca",operation="sign",outcome="timeout"} 1"#,
    ] {
        assert_line(&text, line);
    }
}
