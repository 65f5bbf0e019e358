//! Conditions and status of a PuppetNode (pure helpers; the write is in `node.rs`).

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A chrono instant as a Kubernetes `Time` (k8s-openapi uses jiff).
pub fn time(at: DateTime<Utc>) -> Time {
    let nanos = i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0);
    Time(
        k8s_openapi::jiff::Timestamp::new(at.timestamp(), nanos)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Sets `type_` in `conditions`, keeping `lastTransitionTime` unless the status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let status = if status { "True" } else { "False" };
    set_condition_status(conditions, type_, status, reason, message, generation, now);
}

/// Like [`set_condition`], for a status that may also be `Unknown`.
pub fn set_condition_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let status_str = status.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status_str {
                c.last_transition_time = time(now);
            }
            c.status = status_str;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status_str,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: time(now),
        }),
    }
}

/// The reason of condition `type_`, if present.
pub fn reason_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

/// Whether the condition `type_` is present with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_changes_only_when_status_flips() {
        let t0 = DateTime::from_timestamp(1_000, 0).unwrap_or_default();
        let t1 = DateTime::from_timestamp(2_000, 0).unwrap_or_default();
        let mut c = Vec::new();
        set_condition(&mut c, "Ready", false, "Launching", "a", Some(1), t0);
        set_condition(&mut c, "Ready", false, "Still", "b", Some(2), t1);
        assert_eq!(c[0].last_transition_time, time(t0));
        assert_eq!(c[0].reason, "Still");
        set_condition(&mut c, "Ready", true, "Ok", "c", Some(2), t1);
        assert_eq!(c[0].last_transition_time, time(t1));
        assert!(is_true(&c, "Ready"));
    }
}
