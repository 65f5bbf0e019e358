//! What the schema cannot check of a master's spec, and the reasons its failures get.

use crate::api::master::PuppetMaster;
use crate::controller::error::ReconcileError;
use crate::duration::parse_duration;

/// What the schema cannot check.
pub(super) fn validate(master: &PuppetMaster) -> Result<(), String> {
    let spec = &master.spec;
    if parse_duration(&spec.signing.poll_interval).is_none() {
        return Err(format!(
            "signing.pollInterval {:?} is not a duration",
            spec.signing.poll_interval
        ));
    }
    if parse_duration(&spec.orphans.min_age).is_none() {
        return Err(format!(
            "orphans.minAge {:?} is not a duration",
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
