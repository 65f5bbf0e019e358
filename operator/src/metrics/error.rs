//! Errors of the metrics registry.

/// Why the metrics could not be exported.
#[derive(thiserror::Error, Debug)]
pub enum MetricsError {
    /// Writing the OpenMetrics text failed (a metric's encoder refused).
    #[error("could not encode the metrics as OpenMetrics text")]
    Encode(#[source] std::fmt::Error),
}
