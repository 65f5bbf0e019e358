//! How `Ec2Cloud` classifies failures moto cannot produce: nothing listening,
//! nobody answering, throttling, server errors and refusals from a canned
//! endpoint. These need no services and always run.

use std::time::{Duration, Instant};

use puppet_conductor::cloud::{Cloud, CloudConfig, CloudError, Ec2Cloud};

use crate::cloud_support::{
    ec2_error_xml, free_port, launch_request, moto_config, CannedEndpoint, CANNED_REQUEST_ID,
    REGION,
};

/// A client for `endpoint` with `timeout` per call.
async fn cloud_for(endpoint: &str, timeout: Duration) -> Ec2Cloud {
    Ec2Cloud::new(&CloudConfig {
        call_timeout: timeout,
        ..moto_config(endpoint, REGION)
    })
    .await
}

#[tokio::test]
async fn unreachable_endpoint_is_retryable_within_the_timeout() {
    let port = free_port();
    let timeout = Duration::from_secs(5);
    let cloud = cloud_for(&format!("http://127.0.0.1:{port}"), timeout).await;
    let start = Instant::now();
    let error = cloud.probe().await.expect_err("nothing listens");
    let elapsed = start.elapsed();
    assert!(error.is_retryable(), "{error:?}");
    assert!(
        matches!(error.category(), "connect" | "timeout"),
        "{error:?}"
    );
    assert!(
        elapsed < timeout + Duration::from_millis(500),
        "{elapsed:?}"
    );
    let error = cloud
        .launch(&launch_request("ns/m", "ns/n", 1))
        .await
        .expect_err("nothing listens");
    assert!(error.is_retryable(), "{error:?}");
    eprintln!(
        "closed port: {} after {elapsed:?}: {error}",
        error.category()
    );
}

#[tokio::test]
async fn silent_endpoint_times_out() {
    // The kernel accepts connections on a listening socket nobody serves.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let timeout = Duration::from_secs(2);
    let cloud = cloud_for(&format!("http://127.0.0.1:{port}"), timeout).await;
    let start = Instant::now();
    let error = cloud
        .describe_master_instances("ns/m")
        .await
        .expect_err("nobody answers");
    let elapsed = start.elapsed();
    assert_eq!(error.category(), "timeout", "{error:?}");
    assert!(error.is_retryable());
    assert!(
        elapsed >= timeout - Duration::from_millis(100),
        "{elapsed:?}"
    );
    assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
    drop(listener);
}

#[tokio::test]
async fn throttling_is_retryable_and_keeps_code_message_and_request_id() {
    let server = CannedEndpoint::start(
        503,
        "text/xml",
        ec2_error_xml("RequestLimitExceeded", "Request limit exceeded."),
    )
    .await;
    let cloud = cloud_for(&server.endpoint, Duration::from_secs(30)).await;
    let error = cloud.probe().await.expect_err("throttled");
    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(error.category(), "throttled");
    assert_eq!(error.code(), Some("RequestLimitExceeded"));
    assert_eq!(error.message(), Some("Request limit exceeded."));
    assert_eq!(error.http_status(), Some(503));
    let CloudError::Api { request_id, .. } = &error else {
        panic!("not an API error: {error:?}")
    };
    assert_eq!(request_id.as_deref(), Some(CANNED_REQUEST_ID));
    // The SDK's standard retry made its 3 attempts; each one is counted.
    assert_eq!(server.requests(), 3);
    assert_eq!(cloud.calls().describe, 3);
}

#[tokio::test]
async fn refusals_are_permanent_and_not_retried() {
    let server = CannedEndpoint::start(
        400,
        "text/xml",
        ec2_error_xml(
            "InvalidAMIID.NotFound",
            "The image id '[ami-12c6146b]' does not exist",
        ),
    )
    .await;
    let cloud = cloud_for(&server.endpoint, Duration::from_secs(30)).await;
    let error = cloud
        .launch(&launch_request("ns/m", "ns/n", 1))
        .await
        .expect_err("refused");
    assert!(!error.is_retryable(), "{error:?}");
    assert_eq!(error.category(), "not_found");
    assert_eq!(error.code(), Some("InvalidAMIID.NotFound"));
    assert_eq!(
        error.to_string(),
        "EC2 RunInstances failed: InvalidAMIID.NotFound: \
         The image id '[ami-12c6146b]' does not exist"
    );
    assert_eq!(server.requests(), 1);
    assert_eq!(cloud.calls().run, 1);
}

#[tokio::test]
async fn server_error_pages_are_retryable() {
    // What a proxy in front of a private cloud (or moto, on an internal
    // error) answers: HTML, no EC2 error document.
    let server = CannedEndpoint::start(
        500,
        "text/html",
        "<!doctype html><title>500 Internal Server Error</title>".to_owned(),
    )
    .await;
    let cloud = cloud_for(&server.endpoint, Duration::from_secs(30)).await;
    let error = cloud
        .describe_master_instances("ns/m")
        .await
        .expect_err("server error");
    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(error.http_status(), Some(500), "{error:?}");
    assert_eq!(server.requests(), 3);
    assert_eq!(error.category(), "unavailable", "{error:?}");
}
