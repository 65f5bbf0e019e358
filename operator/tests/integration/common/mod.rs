//! Helpers shared by the integration tests.

// Not every helper is used by every build of the tests.
#![allow(dead_code)]

pub mod services;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A certname no earlier run against a reused server has used:
/// `<prefix>-<unix millis>-<pid>-<counter>`, lower case as Puppet requires.
pub fn unique_certname(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{millis}-{}-{n}", std::process::id()).to_lowercase()
}

/// A loopback address free at the time of the call (nothing listens on it).
pub fn free_loopback_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// GET `http://addr/path`: status and body (trimmed), or `None` when nothing answers.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://{addr}{path}")).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?.trim().to_string()))
}
