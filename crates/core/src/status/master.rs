//! The PuppetMaster's conditions from what its probes saw (pure).

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::conditions::set_condition_status;
use crate::record::Privacy;
use puppet_conductor_api::conditions as cond;

/// Outcome of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe<T> {
    /// The service answered.
    Ok(T),
    /// It did not; `reason` is a constant for the condition, `message` says why.
    Failed {
        /// CamelCase reason.
        reason: &'static str,
        /// Human-readable cause (the error chain).
        message: String,
    },
}

impl<T> Probe<T> {
    /// A failed probe.
    pub fn failed(reason: &'static str, message: &str) -> Self {
        Probe::Failed {
            reason,
            message: message.to_string(),
        }
    }

    /// Did the service answer?
    pub fn is_ok(&self) -> bool {
        matches!(self, Probe::Ok(_))
    }
}

/// Everything one master reconcile learnt about its three services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probes {
    /// CA: the fingerprint of its certificate, after the client certificate was allowed
    /// to list CSRs.
    pub ca: Probe<String>,
    /// Cloud API.
    pub cloud: Probe<()>,
    /// Records bucket and whether it is private.
    pub records: Probe<Privacy>,
}

impl Probes {
    /// Every probe failed for the same cause (e.g. a Secret the services need is missing).
    pub fn all_failed(reason: &'static str, message: &str) -> Self {
        Self {
            ca: Probe::failed(reason, message),
            cloud: Probe::failed(reason, message),
            records: Probe::failed(reason, message),
        }
    }
}

/// Reasons written to the master's conditions.
pub mod reasons {
    /// The service answered.
    pub const REACHABLE: &str = "Reachable";
    /// Nothing grants public access to the records.
    pub const PRIVATE: &str = "Private";
    /// A policy, ACL or missing block makes the records public.
    pub const PUBLIC: &str = "PubliclyReadable";
    /// Some privacy check could not be made.
    pub const UNDETERMINED: &str = "Undetermined";
    /// The bucket could not be reached, so privacy is unknown.
    pub const BUCKET_UNREACHABLE: &str = "BucketUnreachable";
    /// Everything is reachable and the records are not public.
    pub const READY: &str = "AllServicesReady";
    /// At least one service is unreachable or the records are public.
    pub const NOT_READY: &str = "ServicesNotReady";
    /// The spec is valid for the schema but cannot be used.
    pub const INVALID_SPEC: &str = "InvalidSpec";
}

fn reachability<T>(
    conditions: &mut Vec<Condition>,
    type_: &str,
    probe: &Probe<T>,
    what: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    match probe {
        Probe::Ok(_) => set_condition_status(
            conditions,
            type_,
            "True",
            reasons::REACHABLE,
            format!("{what} answered"),
            generation,
            now,
        ),
        Probe::Failed { reason, message } => set_condition_status(
            conditions,
            type_,
            "False",
            reason,
            message.clone(),
            generation,
            now,
        ),
    }
}

/// The master's conditions after this pass. `Ready` is True when the CA, the cloud and
/// the bucket answered and nothing makes the records public (`Unknown` privacy, e.g. a
/// check the credentials may not make, is reported but does not block).
pub fn master_conditions(
    old: &[Condition],
    probes: &Probes,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let mut c = old.to_vec();
    reachability(
        &mut c,
        cond::CA_REACHABLE,
        &probes.ca,
        "the CA API",
        generation,
        now,
    );
    reachability(
        &mut c,
        cond::CLOUD_REACHABLE,
        &probes.cloud,
        "the cloud API",
        generation,
        now,
    );
    reachability(
        &mut c,
        cond::RECORDS_REACHABLE,
        &probes.records,
        "the records bucket",
        generation,
        now,
    );
    let (status, reason, message) = match &probes.records {
        Probe::Ok(Privacy::Private) => (
            "True",
            reasons::PRIVATE,
            "no public grant found".to_string(),
        ),
        Probe::Ok(Privacy::Public { reason }) => ("False", reasons::PUBLIC, reason.clone()),
        Probe::Ok(Privacy::Unknown { reason }) => {
            ("Unknown", reasons::UNDETERMINED, reason.clone())
        }
        Probe::Failed { message, .. } => ("Unknown", reasons::BUCKET_UNREACHABLE, message.clone()),
    };
    set_condition_status(
        &mut c,
        cond::RECORDS_PRIVATE,
        status,
        reason,
        message,
        generation,
        now,
    );

    let mut problems = Vec::new();
    for (name, ok) in [
        ("CA", probes.ca.is_ok()),
        ("cloud", probes.cloud.is_ok()),
        ("records bucket", probes.records.is_ok()),
    ] {
        if !ok {
            problems.push(format!("{name} unreachable"));
        }
    }
    if matches!(probes.records, Probe::Ok(Privacy::Public { .. })) {
        problems.push("records are publicly readable".to_string());
    }
    if problems.is_empty() {
        set_condition_status(
            &mut c,
            cond::READY,
            "True",
            reasons::READY,
            "CA, cloud and records bucket ready",
            generation,
            now,
        );
    } else {
        set_condition_status(
            &mut c,
            cond::READY,
            "False",
            reasons::NOT_READY,
            problems.join("; "),
            generation,
            now,
        );
    }
    c
}

/// Conditions of a master whose spec cannot be used: `Ready=False` with the reason, the
/// other conditions left as they were (nothing was probed).
pub fn invalid_spec_conditions(
    old: &[Condition],
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let mut c = old.to_vec();
    set_condition_status(
        &mut c,
        cond::READY,
        "False",
        reasons::INVALID_SPEC,
        message,
        generation,
        now,
    );
    c
}

/// Types whose status differs between `old` and `new` (for events on state changes).
pub fn flipped<'a>(old: &[Condition], new: &'a [Condition]) -> Vec<&'a Condition> {
    new.iter()
        .filter(|n| {
            old.iter()
                .find(|o| o.type_ == n.type_)
                .map(|o| o.status != n.status)
                .unwrap_or(true)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(c: &[Condition], t: &str) -> String {
        c.iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    fn healthy() -> Probes {
        Probes {
            ca: Probe::Ok("AA:BB".to_string()),
            cloud: Probe::Ok(()),
            records: Probe::Ok(Privacy::Private),
        }
    }

    #[test]
    fn all_reachable_and_private_is_ready() {
        let c = master_conditions(&[], &healthy(), Some(1), Utc::now());
        for t in [
            cond::CA_REACHABLE,
            cond::CLOUD_REACHABLE,
            cond::RECORDS_REACHABLE,
            cond::RECORDS_PRIVATE,
            cond::READY,
        ] {
            assert_eq!(status_of(&c, t), "True", "{t}");
        }
    }

    #[test]
    fn public_records_make_the_master_not_ready() {
        let mut p = healthy();
        p.records = Probe::Ok(Privacy::Public {
            reason: "bucket policy grants s3:GetObject to *".to_string(),
        });
        let c = master_conditions(&[], &p, Some(1), Utc::now());
        assert_eq!(status_of(&c, cond::RECORDS_PRIVATE), "False");
        assert_eq!(status_of(&c, cond::RECORDS_REACHABLE), "True");
        assert_eq!(status_of(&c, cond::READY), "False");
        let ready = c.iter().find(|c| c.type_ == cond::READY).unwrap();
        assert!(
            ready.message.contains("publicly readable"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn undetermined_privacy_is_unknown_but_ready() {
        let mut p = healthy();
        p.records = Probe::Ok(Privacy::Unknown {
            reason: "GetBucketAcl denied".to_string(),
        });
        let c = master_conditions(&[], &p, Some(1), Utc::now());
        assert_eq!(status_of(&c, cond::RECORDS_PRIVATE), "Unknown");
        assert_eq!(status_of(&c, cond::READY), "True");
    }

    #[test]
    fn unreachable_ca_names_itself_in_ready() {
        let mut p = healthy();
        p.ca = Probe::Failed {
            reason: "CAUnreachable",
            message: "connection refused".to_string(),
        };
        let c = master_conditions(&[], &p, Some(1), Utc::now());
        assert_eq!(status_of(&c, cond::CA_REACHABLE), "False");
        let ready = c.iter().find(|c| c.type_ == cond::READY).unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.message, "CA unreachable");
    }

    #[test]
    fn failed_services_fail_every_probe_and_privacy_is_unknown() {
        let p = Probes::all_failed("SecretInvalid", "secret ca-client: not found");
        let c = master_conditions(&[], &p, Some(1), Utc::now());
        assert_eq!(status_of(&c, cond::CA_REACHABLE), "False");
        assert_eq!(status_of(&c, cond::RECORDS_PRIVATE), "Unknown");
        assert_eq!(status_of(&c, cond::READY), "False");
    }

    #[test]
    fn flipped_lists_only_changed_conditions() {
        let now = Utc::now();
        let before = master_conditions(&[], &healthy(), Some(1), now);
        let mut p = healthy();
        p.cloud = Probe::Failed {
            reason: "CloudUnreachable",
            message: "timeout".to_string(),
        };
        let after = master_conditions(&before, &p, Some(1), now);
        let types: Vec<&str> = flipped(&before, &after)
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, vec![cond::CLOUD_REACHABLE, cond::READY]);
    }

    #[test]
    fn invalid_spec_sets_only_ready() {
        let c = invalid_spec_conditions(&[], "signing.pollInterval: bad", Some(3), Utc::now());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].reason, reasons::INVALID_SPEC);
        assert_eq!(c[0].observed_generation, Some(3));
    }
}
