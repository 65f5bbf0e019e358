//! Deciding from what S3 reported whether the records are public (pure).
//!
//! AWS semantics: a bucket-level public access block with
//! `IgnorePublicAcls` makes public ACL grants ineffective, and with
//! `RestrictPublicBuckets` makes a public bucket policy ineffective for
//! anonymous and cross-account principals. The account-level block is not
//! visible through bucket calls; it can only make things more private, so
//! ignoring it errs on the side of reporting `Public`.

use super::Privacy;

/// Group grantees that make an ACL grant public.
const PUBLIC_GROUPS: [(&str, &str); 2] = [
    (
        "http://acs.amazonaws.com/groups/global/AllUsers",
        "AllUsers",
    ),
    (
        "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
        "AuthenticatedUsers",
    ),
];

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation<T> {
    /// S3 answered.
    Found(T),
    /// S3 said there is none (no public access block, no bucket policy, no
    /// record to sample), or the check was unnecessary.
    Absent,
    /// The check failed (access denied, not implemented, ...).
    Undetermined(String),
}

/// The bucket's public access block settings (missing fields count as `false`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessBlock {
    pub ignore_public_acls: bool,
    pub restrict_public_buckets: bool,
}

/// One ACL grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclGrant {
    /// The group URI, for group grantees.
    pub grantee_uri: Option<String>,
    /// READ, WRITE, FULL_CONTROL, ...
    pub permission: String,
}

/// Everything the probe learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivacyObservations {
    pub access_block: Observation<AccessBlock>,
    /// `IsPublic` of GetBucketPolicyStatus.
    pub policy_is_public: Observation<bool>,
    pub bucket_acl: Observation<Vec<AclGrant>>,
    /// The ACL of one record object (key, grants).
    pub sample_object_acl: Observation<(String, Vec<AclGrant>)>,
}

/// Decide [`Privacy`] from the observations: anything public wins, then
/// anything undetermined that could have been public, else private.
pub fn evaluate_privacy(obs: &PrivacyObservations) -> Privacy {
    let block = match &obs.access_block {
        Observation::Found(block) => *block,
        // Unknown or absent: assume no protection.
        Observation::Absent | Observation::Undetermined(_) => AccessBlock::default(),
    };
    let mut public = Vec::new();
    let mut unknown = Vec::new();

    if !block.restrict_public_buckets {
        match &obs.policy_is_public {
            Observation::Found(true) => public.push("the bucket policy is public".to_owned()),
            Observation::Found(false) | Observation::Absent => {}
            Observation::Undetermined(why) => unknown.push(format!("bucket policy status: {why}")),
        }
    }
    if !block.ignore_public_acls {
        match &obs.bucket_acl {
            Observation::Found(grants) => {
                public.extend(public_grants(grants).map(|g| format!("the bucket ACL grants {g}")));
            }
            Observation::Absent => {}
            Observation::Undetermined(why) => unknown.push(format!("bucket ACL: {why}")),
        }
        match &obs.sample_object_acl {
            Observation::Found((key, grants)) => {
                public.extend(
                    public_grants(grants).map(|g| format!("the ACL of object {key} grants {g}")),
                );
            }
            Observation::Absent => {}
            Observation::Undetermined(why) => unknown.push(format!("object ACL: {why}")),
        }
    }

    if !public.is_empty() {
        Privacy::Public {
            reason: public.join("; "),
        }
    } else if !unknown.is_empty() {
        Privacy::Unknown {
            reason: format!("could not check {}", unknown.join("; ")),
        }
    } else {
        Privacy::Private
    }
}

/// "READ to AllUsers" for every grant to a public group.
fn public_grants(grants: &[AclGrant]) -> impl Iterator<Item = String> + '_ {
    grants.iter().filter_map(|grant| {
        let uri = grant.grantee_uri.as_deref()?;
        let (_, group) = PUBLIC_GROUPS.iter().find(|(u, _)| *u == uri)?;
        Some(format!("{} to {group}", grant.permission))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(uri: Option<&str>, permission: &str) -> AclGrant {
        AclGrant {
            grantee_uri: uri.map(str::to_owned),
            permission: permission.into(),
        }
    }

    fn owner_only() -> Vec<AclGrant> {
        vec![grant(None, "FULL_CONTROL")]
    }

    fn all_users_read() -> Vec<AclGrant> {
        vec![
            grant(None, "FULL_CONTROL"),
            grant(Some(PUBLIC_GROUPS[0].0), "READ"),
        ]
    }

    fn private() -> PrivacyObservations {
        PrivacyObservations {
            access_block: Observation::Absent,
            policy_is_public: Observation::Absent,
            bucket_acl: Observation::Found(owner_only()),
            sample_object_acl: Observation::Found(("p/records/a.json".into(), owner_only())),
        }
    }

    #[test]
    fn nothing_public_is_private() {
        assert_eq!(evaluate_privacy(&private()), Privacy::Private);
        let no_sample = PrivacyObservations {
            sample_object_acl: Observation::Absent,
            policy_is_public: Observation::Found(false),
            ..private()
        };
        assert_eq!(evaluate_privacy(&no_sample), Privacy::Private);
    }

    #[test]
    fn public_policy_acl_or_object_is_public() {
        let policy = PrivacyObservations {
            policy_is_public: Observation::Found(true),
            ..private()
        };
        let acl = PrivacyObservations {
            bucket_acl: Observation::Found(all_users_read()),
            ..private()
        };
        let authenticated = PrivacyObservations {
            bucket_acl: Observation::Found(vec![grant(Some(PUBLIC_GROUPS[1].0), "WRITE")]),
            ..private()
        };
        let object = PrivacyObservations {
            sample_object_acl: Observation::Found(("k".into(), all_users_read())),
            ..private()
        };
        for (obs, needle) in [
            (policy, "policy"),
            (acl, "READ to AllUsers"),
            (authenticated, "WRITE to AuthenticatedUsers"),
            (object, "object k"),
        ] {
            match evaluate_privacy(&obs) {
                Privacy::Public { reason } => assert!(reason.contains(needle), "{reason}"),
                other => panic!("{needle}: {other:?}"),
            }
        }
    }

    #[test]
    fn access_block_neutralises_acls_and_policies() {
        let obs = PrivacyObservations {
            access_block: Observation::Found(AccessBlock {
                ignore_public_acls: true,
                restrict_public_buckets: true,
            }),
            policy_is_public: Observation::Found(true),
            bucket_acl: Observation::Found(all_users_read()),
            sample_object_acl: Observation::Undetermined("AccessDenied".into()),
        };
        assert_eq!(evaluate_privacy(&obs), Privacy::Private);

        // Only ACLs ignored: the policy still counts.
        let partial = PrivacyObservations {
            access_block: Observation::Found(AccessBlock {
                ignore_public_acls: true,
                restrict_public_buckets: false,
            }),
            ..obs
        };
        assert!(matches!(evaluate_privacy(&partial), Privacy::Public { .. }));
    }

    #[test]
    fn undetermined_checks_are_unknown_unless_something_is_public() {
        let obs = PrivacyObservations {
            policy_is_public: Observation::Undetermined("NotImplemented".into()),
            ..private()
        };
        match evaluate_privacy(&obs) {
            Privacy::Unknown { reason } => assert!(reason.contains("NotImplemented"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let public_anyway = PrivacyObservations {
            bucket_acl: Observation::Found(all_users_read()),
            ..obs
        };
        assert!(matches!(
            evaluate_privacy(&public_anyway),
            Privacy::Public { .. }
        ));
        // An unreadable access block alone decides nothing.
        let block_unknown = PrivacyObservations {
            access_block: Observation::Undetermined("AccessDenied".into()),
            ..private()
        };
        assert_eq!(evaluate_privacy(&block_unknown), Privacy::Private);
    }
}
