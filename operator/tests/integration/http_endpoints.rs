//! The `/metrics`, `/healthz` and `/readyz` endpoints over real HTTP on a loopback port.

use std::sync::Arc;
use std::time::Duration;

use puppet_conductor::http_server::{serve, Health, HttpState, OPENMETRICS_CONTENT_TYPE};
use puppet_conductor::metrics::Metrics;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, String, String) {
    let response = client.get(format!("{base}{path}")).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn probes_metrics_and_graceful_shutdown() {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        HttpState {
            metrics: metrics.clone(),
            health: health.clone(),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();

    assert_eq!(get(&client, &base, "/healthz").await.0, 200);
    assert_eq!(get(&client, &base, "/healthz").await.2, "ok");

    let (status, _, body) = get(&client, &base, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "not ready"));
    health.set_ready(true);
    let (status, _, body) = get(&client, &base, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready standby"));
    health.set_leader(true);
    let (status, _, body) = get(&client, &base, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready leader"));

    metrics.count_reconcile("PuppetNode", Duration::from_millis(12), None);
    metrics.set_leader(true);
    let (status, content_type, body) = get(&client, &base, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let lines: Vec<&str> = body.lines().collect();
    assert!(
        lines.contains(&r#"puppet_conductor_reconciles_total{kind="PuppetNode"} 1"#),
        "{body}"
    );
    assert!(lines.contains(&"puppet_conductor_leader 1"), "{body}");
    assert_eq!(lines.last(), Some(&"# EOF"));

    assert_eq!(get(&client, &base, "/nope").await.0, 404);

    // The pooled keep-alive connection must not hold the shutdown up.
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server did not stop after the shutdown signal")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(client.get(format!("{base}/healthz")).send().await.is_err());
}
