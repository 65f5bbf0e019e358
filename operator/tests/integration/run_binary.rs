//! The `puppet-conductor run` binary itself, without a cluster: it builds its Kubernetes
//! client (TLS included), serves /healthz while the API server is unreachable, keeps
//! retrying instead of exiting, and stops cleanly on SIGTERM.

use std::time::Duration;

use crate::cluster_support::{eventually, OperatorProcess};
use crate::common::{free_loopback_addr, http_get};

/// A kubeconfig for an HTTPS API server on a closed loopback port.
fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let port = free_loopback_addr().port();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: x\n\
             clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\n\
             users:\n- name: u\n  user:\n    token: t\n\
             contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn run_waits_for_an_unreachable_api_server_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(crate::node_support::unique("run-binary"));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = unreachable_kubeconfig(&dir);
    let addr = free_loopback_addr();
    let args: Vec<String> = [
        "--leader-election",
        "false",
        "--http-addr",
        &addr.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let operator = OperatorProcess::start(&kubeconfig, &args, dir.join("operator.log"));

    let live = eventually("/healthz", Duration::from_secs(20), || {
        http_get(addr, "/healthz")
    })
    .await;
    assert_eq!(live, (200, "ok".to_string()), "{}", operator.tail());
    // Several failed attempts later it still runs, alive but not ready.
    eventually("a retried CRD read", Duration::from_secs(20), || async {
        operator
            .tail()
            .contains("cannot read the CRD; retrying")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        http_get(addr, "/readyz").await,
        Some((503, "not ready".to_string())),
        "{}",
        operator.tail()
    );
    assert_eq!(http_get(addr, "/healthz").await.map(|r| r.0), Some(200));
    if let Err(problem) = operator.stop().await {
        panic!("{problem}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
