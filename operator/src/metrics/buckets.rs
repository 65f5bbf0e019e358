//! Histogram buckets, in seconds.

/// Reconcile passes and external calls: milliseconds (a cached listing) up to
/// a minute (a slow cloud under the 20 s call timeout, several calls in a row).
pub(super) const CALL_SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Instance lifecycle waits: a CSR signed within seconds up to an instance that
/// takes half an hour to boot and check in; beyond that only the count matters.
pub(super) const LIFECYCLE_SECONDS: [f64; 14] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1200.0, 1800.0,
];
