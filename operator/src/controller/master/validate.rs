//! What the schema cannot check of a master's spec, and the reasons its failures get.

use crate::api::master::{PuppetMaster, MIN_POLL_INTERVAL};
use crate::controller::error::ReconcileError;

/// What the schema checks only on servers with CEL rules (and, for a negative duration,
/// the pattern): checked again here, since durations are typed but not bounded.
pub(super) fn validate(master: &PuppetMaster) -> Result<(), String> {
    let spec = &master.spec;
    let poll = spec.signing.poll_interval;
    if poll < MIN_POLL_INTERVAL {
        return Err(format!(
            "signing.pollInterval {poll} is below the minimum of {MIN_POLL_INTERVAL:?}"
        ));
    }
    let wait = spec.signing.wait_for_cert;
    if wait < std::time::Duration::from_secs(1) || wait > std::time::Duration::from_secs(86_400) {
        return Err(format!(
            "signing.waitForCert {wait} is not between 1s and 24h"
        ));
    }
    if spec.orphans.min_age.is_negative() {
        return Err(format!(
            "orphans.minAge {} is negative",
            spec.orphans.min_age
        ));
    }
    Ok(())
}

pub(super) fn reason_of(error: &ReconcileError) -> &'static str {
    match error {
        ReconcileError::Secret { .. } => "SecretInvalid",
        ReconcileError::Kube(_) => "KubernetesUnavailable",
        _ => "ServicesUnavailable",
    }
}
