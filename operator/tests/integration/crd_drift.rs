//! The checked-in CRD YAML (`crds/` and the chart's copy) is what the Rust types generate.
//! CI runs scripts/check-generated.sh for the same purpose on the exact text; this test
//! compares parsed YAML, so it fails on any change of meaning even when run alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

use crate::crd_schema_support::{repo_root, yaml_documents};

/// Where the CRDs are checked in, relative to the repository root.
const CRD_DIRS: [&str; 2] = ["crds", "charts/puppet-conductor/crds"];

const FIX: &str = "run scripts/generate.sh and commit the result";

/// `<group>_<plural>.yaml`, the file name scripts/generate.sh gives a CRD.
fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// The CRDs the types generate, by file name.
fn expected() -> BTreeMap<String, Value> {
    puppet_conductor::api::crds()
        .iter()
        .map(|crd| (file_name(crd), serde_json::to_value(crd).unwrap()))
        .collect()
}

/// The first place where two JSON values differ, as a path (`$.spec.versions[0]...`).
fn first_difference(path: &str, checked_in: &Value, generated: &Value) -> Option<String> {
    match (checked_in, generated) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|k| {
                let child = format!("{path}.{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => first_difference(&child, x, y),
                    (Some(_), None) => Some(format!("{child}: only in the checked-in file")),
                    (None, _) => Some(format!("{child}: missing from the checked-in file")),
                }
            })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(&format!("{path}[{i}]"), x, y)),
        _ if checked_in == generated => None,
        _ => Some(format!(
            "{path}: checked in {checked_in}, generated {generated}"
        )),
    }
}

/// What is wrong with the CRD files in `dir` (empty: they match the types).
fn problems_in(dir: &Path) -> Vec<String> {
    let rel = dir.strip_prefix(repo_root()).unwrap_or(dir).display();
    let expected = expected();
    let mut problems = Vec::new();
    let mut present = BTreeSet::new();
    match std::fs::read_dir(dir) {
        Err(e) => return vec![format!("{rel}/: cannot read: {e}")],
        Ok(entries) => {
            for entry in entries {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                if name.ends_with(".yaml") || name.ends_with(".yml") {
                    present.insert(name);
                }
            }
        }
    }
    for name in &present {
        let Some(generated) = expected.get(name) else {
            problems.push(format!(
                "{rel}/{name}: not generated from the types (stale or hand-written)"
            ));
            continue;
        };
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let docs = match yaml_documents(&text) {
            Ok(docs) => docs,
            Err(e) => {
                problems.push(format!("{rel}/{name}: not valid YAML: {e}"));
                continue;
            }
        };
        match docs.as_slice() {
            [checked_in] => {
                if let Some(diff) = first_difference("$", checked_in, generated) {
                    problems.push(format!("{rel}/{name} differs from the types: {diff}"));
                }
            }
            _ => problems.push(format!(
                "{rel}/{name}: expected exactly one CRD document, found {}",
                docs.len()
            )),
        }
    }
    for name in expected.keys().filter(|n| !present.contains(*n)) {
        problems.push(format!("{rel}/{name}: missing"));
    }
    problems
}

#[test]
fn checked_in_crds_match_the_types() {
    let problems: Vec<String> = CRD_DIRS
        .iter()
        .flat_map(|dir| problems_in(&repo_root().join(dir)))
        .collect();
    assert!(
        problems.is_empty(),
        "the checked-in CRD YAML is out of date with crates/api/src: {FIX}\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn crds_subcommand_output_is_the_same_crds() {
    // scripts/generate.sh splits the output of `puppet-conductor crds` (crds_yaml()).
    let yaml = puppet_conductor::api::crds_yaml().unwrap();
    let docs = yaml_documents(&yaml).unwrap();
    let generated: Vec<Value> = expected().into_values().collect();
    assert_eq!(docs.len(), generated.len());
    for doc in &docs {
        assert!(
            generated.contains(doc),
            "crds_yaml() and crds() disagree on {}",
            doc["metadata"]["name"]
        );
    }
}

#[test]
fn drift_is_detected() {
    // The comparison itself: a changed field is reported with its path.
    let (name, generated) = expected().into_iter().next().unwrap();
    let mut edited = generated.clone();
    edited["spec"]["versions"][0]["served"] = Value::Bool(false);
    let diff = first_difference("$", &edited, &generated).unwrap();
    assert!(diff.contains("$.spec.versions[0].served"), "{name}: {diff}");
    assert_eq!(first_difference("$", &generated, &generated), None);
}
