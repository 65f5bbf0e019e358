//! The operator's HTTP endpoint: `/metrics` for Prometheus, `/healthz` (liveness)
//! and `/readyz` (readiness) for the kubelet.
//!
//! Liveness answers while the process serves at all, so a replica waiting for
//! the leader lease is not restarted; readiness turns on once the controllers
//! have started and says whether this replica leads.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the HTTP server stopped with an error.
#[derive(thiserror::Error, Debug)]
pub enum HttpError {
    /// Serving on the listener failed.
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Readiness and leadership as the probes report them; updated by the `run` loop.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    leader: AtomicBool,
}

impl Health {
    /// Marks the replica ready (controllers started) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Marks the replica as holding the leader lease or not.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// Whether the replica is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Whether the replica leads.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }
}

/// What the handlers read.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// The registry `/metrics` exports.
    pub metrics: Arc<Metrics>,
    /// What `/readyz` reports.
    pub health: Arc<Health>,
}

/// Serves the endpoints on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(HttpError::Serve)
}

fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "could not encode metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not encode metrics",
            )
                .into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    match (state.health.is_ready(), state.health.is_leader()) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        (true, true) => (StatusCode::OK, "ready leader"),
        (true, false) => (StatusCode::OK, "ready standby"),
    }
}
