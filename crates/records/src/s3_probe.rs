//! [`super::Records::probe`] for S3: reachability, then whether anything makes the
//! records public.
//!
//! Calls, in order (later ones skipped when a bucket-level public access block
//! already neutralises what they would check):
//!
//! 1. `HeadBucket` — reachability, credentials, the bucket exists. Errors here
//!    are returned as errors.
//! 2. `GetPublicAccessBlock` — `IgnorePublicAcls` / `RestrictPublicBuckets`.
//! 3. `GetBucketPolicyStatus` — `IsPublic` of the bucket policy.
//! 4. `GetBucketAcl` — grants to `AllUsers` / `AuthenticatedUsers`.
//! 5. `ListObjectsV2` (one key) + `GetObjectAcl` of one record — a sample of
//!    the object ACLs. Every record is not checked (that would be a call per
//!    node per probe); this code never sets an ACL, so a public object means
//!    someone else changed it.
//!
//! An S3 error answer to 2–5 (denied, not implemented) makes that check
//! undetermined → [`Privacy::Unknown`] unless something else is public; a
//! transport failure (timeout, connection) is returned as an error.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::Grant;

use super::error::{service_parts, RecordsError};
use super::s3::{Counter, S3Records};
use super::Privacy;
use puppet_conductor_core::record::{
    evaluate_privacy, AccessBlock, AclGrant, Observation, PrivacyObservations,
};

/// S3 error codes meaning "there is none" rather than "could not check".
const ABSENT_CODES: [&str; 3] = [
    "NoSuchPublicAccessBlockConfiguration",
    "NoSuchBucketPolicy",
    "NoSuchKey",
];

pub(super) async fn probe(records: &S3Records) -> Result<Privacy, RecordsError> {
    let bucket = records.bucket.as_str();
    let client = &records.client;

    const HEAD: &str = "HeadBucket";
    records
        .call(
            HEAD,
            Counter::Probe,
            client.head_bucket().bucket(bucket).send(),
        )
        .await?
        .map_err(|e| records.error(HEAD, e))?;

    const PAB: &str = "GetPublicAccessBlock";
    let request = client.get_public_access_block().bucket(bucket).send();
    let access_block = match records.call(PAB, Counter::Probe, request).await? {
        Ok(out) => Observation::Found(
            out.public_access_block_configuration()
                .map(|c| AccessBlock {
                    ignore_public_acls: c.ignore_public_acls().unwrap_or(false),
                    restrict_public_buckets: c.restrict_public_buckets().unwrap_or(false),
                })
                .unwrap_or_default(),
        ),
        Err(e) => not_found(records, PAB, e)?,
    };
    let block = match &access_block {
        Observation::Found(block) => *block,
        _ => AccessBlock::default(),
    };

    const POLICY: &str = "GetBucketPolicyStatus";
    let policy_is_public = if block.restrict_public_buckets {
        Observation::Absent
    } else {
        let request = client.get_bucket_policy_status().bucket(bucket).send();
        match records.call(POLICY, Counter::Probe, request).await? {
            Ok(out) => match out.policy_status().and_then(|s| s.is_public()) {
                Some(public) => Observation::Found(public),
                None => Observation::Undetermined(format!("{POLICY} returned no IsPublic")),
            },
            Err(e) => not_found(records, POLICY, e)?,
        }
    };

    let (bucket_acl, sample_object_acl) = if block.ignore_public_acls {
        (Observation::Absent, Observation::Absent)
    } else {
        (
            bucket_acl(records).await?,
            sample_object_acl(records).await?,
        )
    };

    let privacy = evaluate_privacy(&PrivacyObservations {
        access_block,
        policy_is_public,
        bucket_acl,
        sample_object_acl,
    });
    tracing::debug!(bucket, ?privacy, "records bucket probed");
    Ok(privacy)
}

async fn bucket_acl(records: &S3Records) -> Result<Observation<Vec<AclGrant>>, RecordsError> {
    const OP: &str = "GetBucketAcl";
    let request = records
        .client
        .get_bucket_acl()
        .bucket(&records.bucket)
        .send();
    match records.call(OP, Counter::Probe, request).await? {
        Ok(out) => Ok(Observation::Found(grants(out.grants()))),
        Err(e) => not_found(records, OP, e),
    }
}

/// The ACL of the first record under the prefix; `Absent` when there is none.
async fn sample_object_acl(
    records: &S3Records,
) -> Result<Observation<(String, Vec<AclGrant>)>, RecordsError> {
    const LIST: &str = "ListObjectsV2";
    let request = records
        .client
        .list_objects_v2()
        .bucket(&records.bucket)
        .prefix(records.layout.records_prefix())
        .max_keys(1)
        .send();
    let page = match records.call(LIST, Counter::Probe, request).await? {
        Ok(page) => page,
        Err(e) => {
            return Ok(match not_found::<(), _>(records, LIST, e)? {
                Observation::Undetermined(why) => Observation::Undetermined(why),
                _ => Observation::Absent,
            })
        }
    };
    let Some(key) = page.contents().iter().find_map(|o| o.key()) else {
        return Ok(Observation::Absent);
    };

    const OP: &str = "GetObjectAcl";
    let request = records
        .client
        .get_object_acl()
        .bucket(&records.bucket)
        .key(key)
        .send();
    match records.call(OP, Counter::Probe, request).await? {
        Ok(out) => Ok(Observation::Found((key.to_owned(), grants(out.grants())))),
        Err(e) => Ok(match not_found::<(), _>(records, OP, e)? {
            Observation::Undetermined(why) => Observation::Undetermined(why),
            // Deleted since the listing: nothing to sample.
            _ => Observation::Absent,
        }),
    }
}

/// An S3 error answer to a check: `Absent` for "there is none", otherwise
/// `Undetermined` with what S3 said. Transport failures stay errors.
fn not_found<T, E>(
    records: &S3Records,
    operation: &'static str,
    error: SdkError<E>,
) -> Result<Observation<T>, RecordsError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if !matches!(error, SdkError::ServiceError(_)) {
        return Err(records.error(operation, error));
    }
    let (status, code, message) = service_parts(&error);
    if ABSENT_CODES.contains(&code.as_str()) {
        return Ok(Observation::Absent);
    }
    let code = if code.is_empty() { "error" } else { &code };
    let mut why = format!("{operation} answered {status} {code}");
    if !message.is_empty() {
        why.push_str(": ");
        why.extend(message.chars().take(120));
    }
    Ok(Observation::Undetermined(why))
}

fn grants(grants: &[Grant]) -> Vec<AclGrant> {
    grants
        .iter()
        .map(|g| AclGrant {
            grantee_uri: g.grantee().and_then(|g| g.uri()).map(str::to_owned),
            permission: g
                .permission()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
        })
        .collect()
}
