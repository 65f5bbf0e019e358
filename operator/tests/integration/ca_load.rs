//! What booting agents cost the real puppetserver while they wait for their certificates:
//! each asks `GET /puppet-ca/v1/certificate/<certname>` once per `waitforcert`, on a new
//! TLS connection (the user data turns keep-alive off) and without a client certificate.
//! Measured, not asserted (a timed assertion would be flaky): `scripts/bench.sh` prints
//! the figures into docs/benchmarks.md, from which `signing.waitForCert`'s default is
//! chosen. Checked here only that every answer was puppetserver's "not signed yet" (404).
//!
//! Needs `tests/services/up.sh`; skipped without it unless `PC_REQUIRE_SERVICES=1`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::services::PuppetServer;

/// Agents asking at once.
const CONCURRENCY: usize = 16;
/// How long they ask.
const WINDOW: Duration = Duration::from_secs(10);

#[tokio::test]
async fn certificate_gets_of_waiting_agents_measured_against_puppetserver() {
    let Some(puppet) = PuppetServer::from_env() else {
        return;
    };
    let ca = reqwest::Certificate::from_pem(&puppet.ca_pem()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for agent in 0..CONCURRENCY {
        // One client per agent without idle connections: every GET opens a new TLS
        // connection, as an agent with `http_keepalive_timeout = 0` does.
        let client = reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let url = format!(
            "{}/puppet-ca/v1/certificate/waiting-agent-{agent}-{}",
            puppet.ca_url,
            std::process::id()
        );
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut unexpected = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match client.get(&url).header("Accept", "text/plain").send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed());
                    }
                    Ok(r) => unexpected.push(format!("HTTP {}", r.status())),
                    Err(e) => unexpected.push(e.to_string()),
                }
            }
            (latencies, unexpected)
        }));
    }
    tokio::time::sleep(WINDOW).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut unexpected = Vec::new();
    for t in tasks {
        let (l, u) = t.await.unwrap();
        latencies.extend(l);
        unexpected.extend(u);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert!(!latencies.is_empty());
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let per_second = latencies.len() as f64 / elapsed;
    println!(
        "BENCH certificate GETs of waiting agents (new TLS connection each, {CONCURRENCY} at once, {:.0} s): {} answered, {per_second:.0} per second, p50 {:.1} ms, p99 {:.1} ms",
        elapsed,
        latencies.len(),
        at(0.5),
        at(0.99)
    );
    for wait in [5u32, 10, 30] {
        println!(
            "BENCH waitforcert {wait} s: 1,000 booting agents ask {:.0} GETs per second, {:.0}% of the rate measured above; a signed agent fetches its certificate {:.1} s later on average",
            1000.0 / f64::from(wait),
            100.0 * 1000.0 / f64::from(wait) / per_second,
            f64::from(wait) / 2.0
        );
    }
}
