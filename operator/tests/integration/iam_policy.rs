//! `manifests/iam-policy.json` grants exactly what the EC2 and S3 clients call, and the
//! dangerous EC2 actions only under the operator tag: RunInstances creates an instance only
//! when the request tags it, tags are written only by that launch, and TerminateInstances
//! reaches only instances carrying the tag. Without this, one AWS identity shared with other
//! tools could let the operator terminate instances it never launched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use puppet_conductor::cloud::tags;
use serde_json::Value;

use crate::crd_schema_support::repo_root;

/// Every SDK operation the clients call (method name as in the source), with the IAM
/// actions it needs. RunInstances also writes the tag specifications (CreateTags) and may
/// pass an instance profile's role (iam:PassRole); HeadObject is authorised as GetObject,
/// HeadBucket and ListObjectsV2 as ListBucket.
const CALLS: &[(&str, &[&str])] = &[
    ("describe_instances", &["ec2:DescribeInstances"]),
    (
        "run_instances",
        &["ec2:RunInstances", "ec2:CreateTags", "iam:PassRole"],
    ),
    ("terminate_instances", &["ec2:TerminateInstances"]),
    ("get_object", &["s3:GetObject"]),
    ("head_object", &["s3:GetObject"]),
    ("put_object", &["s3:PutObject"]),
    ("delete_object", &["s3:DeleteObject"]),
    ("list_objects_v2", &["s3:ListBucket"]),
    ("head_bucket", &["s3:ListBucket"]),
    (
        "get_public_access_block",
        &["s3:GetBucketPublicAccessBlock"],
    ),
    ("get_bucket_policy_status", &["s3:GetBucketPolicyStatus"]),
    ("get_bucket_acl", &["s3:GetBucketAcl"]),
    ("get_object_acl", &["s3:GetObjectAcl"]),
];

/// One statement of the policy, with `Action` and `Resource` as lists.
struct Statement {
    sid: String,
    actions: Vec<String>,
    resources: Vec<String>,
    /// `operator -> key -> value(s)`, `Null` when absent.
    condition: Value,
}

impl Statement {
    fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }

    /// The value(s) required for `key` under any condition operator.
    fn condition_values(&self, key: &str) -> Vec<String> {
        let Some(operators) = self.condition.as_object() else {
            return Vec::new();
        };
        operators
            .values()
            .filter_map(|keys| keys.get(key))
            .flat_map(strings)
            .collect()
    }

    fn condition_keys(&self) -> Vec<String> {
        self.condition
            .as_object()
            .into_iter()
            .flat_map(|operators| operators.values())
            .filter_map(Value::as_object)
            .flat_map(|keys| keys.keys().cloned())
            .collect()
    }
}

/// A string or a list of strings, as IAM allows for Action, Resource and condition values.
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().expect("a list of strings").to_owned())
            .collect(),
        other => panic!("expected a string or a list of strings, got {other}"),
    }
}

fn policy() -> Value {
    let path = repo_root().join("manifests/iam-policy.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn statements() -> Vec<Statement> {
    policy()["Statement"]
        .as_array()
        .expect("Statement is a list")
        .iter()
        .map(|s| Statement {
            sid: s["Sid"]
                .as_str()
                .expect("every statement has a Sid")
                .to_owned(),
            actions: strings(&s["Action"]),
            resources: strings(&s["Resource"]),
            condition: s.get("Condition").cloned().unwrap_or(Value::Null),
        })
        .collect()
}

/// The resource type of an EC2 ARN (`instance` in `arn:aws:ec2:*:*:instance/*`); `*` for `*`.
fn ec2_resource_type(arn: &str) -> &str {
    if arn == "*" {
        return "*";
    }
    let resource = arn.splitn(6, ':').nth(5).expect("an ARN has six parts");
    resource.split('/').next().unwrap_or(resource)
}

fn request_tag_key() -> String {
    format!("aws:RequestTag/{}", tags::OPERATOR)
}

fn resource_tag_key() -> String {
    format!("ec2:ResourceTag/{}", tags::OPERATOR)
}

#[test]
fn policy_is_plain_allow_statements_without_wildcard_actions() {
    let policy = policy();
    assert_eq!(policy["Version"], "2012-10-17");
    let mut sids = BTreeSet::new();
    for s in policy["Statement"].as_array().unwrap() {
        let sid = s["Sid"].as_str().unwrap();
        assert!(sids.insert(sid), "duplicate Sid {sid}");
        assert_eq!(s["Effect"], "Allow", "{sid}");
        for field in ["NotAction", "NotResource", "Principal", "NotPrincipal"] {
            assert!(
                s.get(field).is_none(),
                "{sid}: {field} widens or misplaces the grant"
            );
        }
        for action in strings(&s["Action"]) {
            assert!(!action.contains('*'), "{sid}: wildcard action {action}");
        }
    }
}

#[test]
fn every_tag_condition_names_the_operator_tag() {
    let mut seen = 0;
    for s in statements() {
        for key in s.condition_keys() {
            let Some((_, tag)) = key.split_once("Tag/") else {
                continue;
            };
            assert_eq!(tag, tags::OPERATOR, "{}: condition on tag {tag}", s.sid);
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "expected the launch and the termination to be tag-conditioned"
    );
}

#[test]
fn terminate_only_instances_carrying_the_operator_tag() {
    let terminating: Vec<Statement> = statements()
        .into_iter()
        .filter(|s| s.allows("ec2:TerminateInstances"))
        .collect();
    assert!(!terminating.is_empty(), "nothing allows TerminateInstances");
    for s in &terminating {
        assert!(
            !s.condition_values(&resource_tag_key()).is_empty(),
            "{}: TerminateInstances without a condition on {}",
            s.sid,
            resource_tag_key()
        );
        for arn in &s.resources {
            assert_eq!(ec2_resource_type(arn), "instance", "{}: {arn}", s.sid);
        }
    }
}

#[test]
fn launch_creates_instances_only_with_the_operator_tag_in_the_request() {
    let mut tagged_launch = false;
    for s in statements().iter().filter(|s| s.allows("ec2:RunInstances")) {
        let required = s.condition_values(&request_tag_key());
        // The instance (and its volumes, tagged alike) is what the request creates; images,
        // subnets, security groups, key pairs and network interfaces are only referenced or
        // created untagged, so they cannot carry the request-tag condition.
        let creates_instances = s
            .resources
            .iter()
            .any(|arn| matches!(ec2_resource_type(arn), "instance" | "volume" | "*"));
        if creates_instances {
            assert!(
                !required.is_empty(),
                "{}: RunInstances on instances without a condition on {}",
                s.sid,
                request_tag_key()
            );
            assert!(
                s.resources.iter().all(|arn| arn != "*"),
                "{}: RunInstances on every resource",
                s.sid
            );
            tagged_launch = true;
        }
    }
    assert!(
        tagged_launch,
        "nothing allows RunInstances to create an instance"
    );
}

#[test]
fn launch_and_termination_require_the_same_operator_tag_value() {
    let statements = statements();
    let values = |key: &str, action: &str| -> BTreeSet<String> {
        statements
            .iter()
            .filter(|s| s.allows(action))
            .flat_map(|s| s.condition_values(key))
            .collect()
    };
    let launched = values(&request_tag_key(), "ec2:RunInstances");
    let terminated = values(&resource_tag_key(), "ec2:TerminateInstances");
    assert!(!launched.is_empty());
    assert_eq!(
        launched, terminated,
        "the operator could not terminate what it launches (or the reverse)"
    );
}

#[test]
fn tags_are_written_only_by_the_launch() {
    let tagging: Vec<Statement> = statements()
        .into_iter()
        .filter(|s| s.allows("ec2:CreateTags"))
        .collect();
    assert!(
        !tagging.is_empty(),
        "RunInstances with tag specifications needs CreateTags"
    );
    for s in tagging {
        assert_eq!(
            s.condition_values("ec2:CreateAction"),
            ["RunInstances"],
            "{}: CreateTags outside RunInstances would let the operator tag (and so \
             terminate) any instance",
            s.sid
        );
    }
}

#[test]
fn s3_actions_sit_on_the_bucket_or_its_objects() {
    for s in statements() {
        for action in s.actions.iter().filter(|a| a.starts_with("s3:")) {
            let object_level = action.contains("Object");
            for arn in &s.resources {
                assert!(arn.starts_with("arn:aws:s3:::"), "{}: {arn}", s.sid);
                assert_eq!(
                    arn.ends_with("/*"),
                    object_level,
                    "{}: {action} on {arn} grants nothing (bucket actions need the bucket \
                     ARN, object actions bucket/*)",
                    s.sid
                );
            }
        }
    }
}

#[test]
fn policy_grants_exactly_what_the_clients_call() {
    let needed: BTreeSet<&str> = CALLS.iter().flat_map(|(_, a)| a.iter().copied()).collect();
    let granted: BTreeSet<String> = statements().into_iter().flat_map(|s| s.actions).collect();
    let granted: BTreeSet<&str> = granted.iter().map(String::as_str).collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(
        missing.is_empty(),
        "the clients call these, the policy lacks them: {missing:?}"
    );
    assert!(extra.is_empty(), "granted but never called: {extra:?}");
}

/// `client.<operation>()` calls (whitespace removed, so chains split over lines count) in
/// the source files that use the AWS SDK, by operation.
fn sdk_calls_in_source() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    // The SDK clients live in the workspace's crates (cloud, records); the operator's own
    // source is walked too, so a call added there cannot escape the table.
    let src = repo_root();
    let mut files = Vec::new();
    walk(&src.join("crates"), &mut files);
    walk(&src.join("operator/src"), &mut files);
    let mut calls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Every file of the two SDK client crates counts (a module may reach the client
        // through `self.client` without naming the SDK); elsewhere, files naming it.
        let in_client_crate = ["crates/cloud/src", "crates/records/src"]
            .iter()
            .any(|dir| file.starts_with(src.join(dir)));
        if !in_client_crate && !text.contains("aws_sdk_ec2") && !text.contains("aws_sdk_s3") {
            continue;
        }
        let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for (at, _) in squeezed.match_indices("client.") {
            let rest = &squeezed[at + "client.".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.is_empty() || name == "clone" || !rest[name.len()..].starts_with("()") {
                continue;
            }
            let rel = file.strip_prefix(&src).unwrap().display().to_string();
            calls.entry(name).or_default().insert(rel);
        }
    }
    calls
}

#[test]
fn calls_table_matches_the_source() {
    let found = sdk_calls_in_source();
    let listed: BTreeSet<&str> = CALLS.iter().map(|(call, _)| *call).collect();
    let unlisted: Vec<_> = found
        .iter()
        .filter(|(call, _)| !listed.contains(call.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "new SDK calls: add them to CALLS and their IAM actions to manifests/iam-policy.json: \
         {unlisted:?}"
    );
    let stale: Vec<_> = listed
        .iter()
        .filter(|call| !found.contains_key(**call))
        .collect();
    assert!(
        stale.is_empty(),
        "CALLS lists calls the source no longer makes (drop them and their IAM actions): {stale:?}"
    );
}
