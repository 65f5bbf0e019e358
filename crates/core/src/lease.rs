//! What a candidate does with the Lease it observed (pure).

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The next step of one election round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No Lease exists: create it holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Its holder let it expire (or released it): take it over.
    TakeOver,
    /// Someone else holds a live Lease: stand by.
    Follow {
        /// The current holder.
        holder: String,
    },
}

/// Decides from the observed Lease (`None` when absent), our identity and the time now.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseDecision {
    let Some(spec) = lease else {
        return LeaseDecision::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return LeaseDecision::Renew;
    }
    if holder.is_empty() || expired(spec, now) {
        return LeaseDecision::TakeOver;
    }
    LeaseDecision::Follow { holder }
}

/// A Lease without a renew time or duration counts as expired: nobody can prove they hold it.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    match renewed
        .0
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
    {
        Ok(deadline) => now > deadline,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: &str, renewed_secs_ago: i64, duration: i32, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            renew_time: Some(MicroTime(
                now.checked_sub(SignedDuration::from_secs(renewed_secs_ago))
                    .unwrap(),
            )),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn absent_lease_is_created() {
        assert_eq!(decide(None, "a", Timestamp::now()), LeaseDecision::Create);
    }

    #[test]
    fn own_lease_is_renewed_even_when_expired() {
        let now = Timestamp::now();
        assert_eq!(
            decide(Some(&lease("a", 100, 15, now)), "a", now),
            LeaseDecision::Renew
        );
    }

    #[test]
    fn live_foreign_lease_is_followed() {
        let now = Timestamp::now();
        assert_eq!(
            decide(Some(&lease("b", 5, 15, now)), "a", now),
            LeaseDecision::Follow {
                holder: "b".to_string()
            }
        );
    }

    #[test]
    fn expired_foreign_lease_is_taken_over() {
        let now = Timestamp::now();
        assert_eq!(
            decide(Some(&lease("b", 16, 15, now)), "a", now),
            LeaseDecision::TakeOver
        );
    }

    #[test]
    fn released_lease_is_taken_over() {
        let now = Timestamp::now();
        assert_eq!(
            decide(Some(&lease("", 1, 15, now)), "a", now),
            LeaseDecision::TakeOver
        );
    }

    #[test]
    fn lease_without_renew_time_is_taken_over() {
        let spec = LeaseSpec {
            holder_identity: Some("b".to_string()),
            ..Default::default()
        };
        assert_eq!(
            decide(Some(&spec), "a", Timestamp::now()),
            LeaseDecision::TakeOver
        );
    }
}
