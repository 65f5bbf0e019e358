//! What the schema cannot check of a master's spec, and the reasons its failures get.

use crate::api::master::{PuppetMaster, MAX_WAIT_FOR_CERT, MIN_POLL_INTERVAL, MIN_WAIT_FOR_CERT};
use crate::controller::error::ReconcileError;

/// What the schema checks only on servers with CEL rules: checked again here, since
/// durations are typed but not bounded (a negative one the schema's pattern refuses).
pub(super) fn validate(master: &PuppetMaster) -> Result<(), String> {
    let spec = &master.spec;
    let poll = spec.signing.poll_interval;
    if poll < MIN_POLL_INTERVAL {
        return Err(format!(
            "signing.pollInterval {poll} is below the minimum of {MIN_POLL_INTERVAL:?}"
        ));
    }
    let wait = spec.signing.wait_for_cert;
    if wait < MIN_WAIT_FOR_CERT || wait > MAX_WAIT_FOR_CERT {
        return Err(format!(
            "signing.waitForCert {wait} is not between {MIN_WAIT_FOR_CERT:?} and {MAX_WAIT_FOR_CERT:?}"
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
