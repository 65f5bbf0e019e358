//! The example manifests in `manifests/examples/` stay valid: every document parses into its
//! Rust type by kind (unknown kinds fail), every PuppetMaster/PuppetNode passes the generated
//! schema and CEL rules, the "full" examples set every spec field, references between the
//! examples resolve, Secrets hold only placeholders, and `manifests/kustomization.yaml` lists
//! every example.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use puppet_conductor::api::{PuppetMaster, PuppetNode, PuppetNodePool};
use serde_json::Value;

use crate::crd_schema_support::{repo_root, yaml_documents, CrdSchema};

fn examples_dir() -> PathBuf {
    repo_root().join("manifests/examples")
}

/// The example files, sorted.
fn example_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    files
}

/// One parsed example document.
struct Doc {
    /// `file#index`, for messages.
    origin: String,
    file: String,
    raw: Value,
}

fn example_docs() -> Vec<Doc> {
    let mut docs = Vec::new();
    for file in example_files() {
        let text = std::fs::read_to_string(examples_dir().join(&file)).unwrap();
        let values = yaml_documents(&text).unwrap_or_else(|e| panic!("{file}: invalid YAML: {e}"));
        assert!(!values.is_empty(), "{file}: no YAML documents");
        for (i, raw) in values.into_iter().enumerate() {
            docs.push(Doc {
                origin: format!("{file}#{i}"),
                file: file.clone(),
                raw,
            });
        }
    }
    docs
}

/// The examples parsed into their types.
#[derive(Default)]
struct Examples {
    masters: Vec<(String, PuppetMaster)>,
    nodes: Vec<(String, PuppetNode)>,
    secrets: Vec<(String, Secret)>,
}

/// Parse every example into its type by kind; panics with every problem found (unknown
/// kinds included).
fn parse_examples() -> Examples {
    let mut examples = Examples::default();
    let mut problems = Vec::new();
    for doc in example_docs() {
        let origin = doc.origin.clone();
        let api_version = doc.raw["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let kind = doc.raw["kind"].as_str().unwrap_or_default().to_owned();
        let parsed = match (api_version.as_str(), kind.as_str()) {
            ("puppet-conductor.dev/v1alpha1", "PuppetMaster") => {
                serde_json::from_value::<PuppetMaster>(doc.raw)
                    .map(|m| examples.masters.push((doc.file, m)))
            }
            ("puppet-conductor.dev/v1alpha1", "PuppetNode") => {
                serde_json::from_value::<PuppetNode>(doc.raw)
                    .map(|n| examples.nodes.push((doc.file, n)))
            }
            ("v1", "Secret") => serde_json::from_value::<Secret>(doc.raw)
                .map(|s| examples.secrets.push((doc.file, s))),
            _ => {
                problems.push(format!(
                    "{origin}: unexpected kind {kind:?} (apiVersion {api_version:?}); examples \
                     may hold puppet-conductor.dev/v1alpha1 PuppetMaster and PuppetNode, v1 Secret"
                ));
                Ok(())
            }
        };
        if let Err(e) = parsed {
            problems.push(format!("{origin}: does not parse as {kind}: {e}"));
        }
    }
    assert!(
        problems.is_empty(),
        "example manifests do not parse:\n  {}",
        problems.join("\n  ")
    );
    examples
}

#[test]
fn examples_parse_into_the_types_and_pass_the_schema() {
    let examples = parse_examples();
    // A minimal and a full example of each kind, and the two Secrets.
    assert!(examples.masters.len() >= 2, "expected two PuppetMasters");
    assert!(examples.nodes.len() >= 2, "expected two PuppetNodes");
    assert!(examples.secrets.len() >= 2, "expected two Secrets");

    // The documents as written (unknown fields are errors, as with `kubectl apply`).
    let master_schema = CrdSchema::of::<PuppetMaster>();
    let node_schema = CrdSchema::of::<PuppetNode>();
    let mut problems = Vec::new();
    for doc in example_docs() {
        let schema = match doc.raw["kind"].as_str() {
            Some("PuppetMaster") => &master_schema,
            Some("PuppetNode") => &node_schema,
            _ => continue,
        };
        for error in schema.create_errors(&doc.raw) {
            problems.push(format!("{}: {error}", doc.origin));
        }
    }
    assert!(
        problems.is_empty(),
        "example manifests fail the CRD schema:\n  {}",
        problems.join("\n  ")
    );

    // What the types make of them passes too (and the typed CEL check agrees).
    for (file, master) in &examples.masters {
        let errors = master_schema.create_errors(&serde_json::to_value(master).unwrap());
        assert!(errors.is_empty(), "{file} after serde: {errors:#?}");
        master.validate_cel().unwrap();
    }
    for (file, node) in &examples.nodes {
        let errors = node_schema.create_errors(&serde_json::to_value(node).unwrap());
        assert!(errors.is_empty(), "{file} after serde: {errors:#?}");
        node.validate_cel().unwrap();
    }
}

/// Spec fields of the schema missing from `value` (recursing into nested objects).
fn unset_fields(schema: &Value, value: &Value, path: &str, missing: &mut Vec<String>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, prop) in props {
        let child = format!("{path}.{name}");
        match value.get(name) {
            None | Some(Value::Null) => missing.push(child),
            Some(v) => unset_fields(prop, v, &child, missing),
        }
    }
}

#[test]
fn full_examples_set_every_field() {
    for (file, schema) in [
        ("puppetmaster-full.yaml", CrdSchema::of::<PuppetMaster>()),
        ("puppetnode-full.yaml", CrdSchema::of::<PuppetNode>()),
    ] {
        let text = std::fs::read_to_string(examples_dir().join(file)).unwrap();
        let docs = yaml_documents(&text).unwrap();
        let [doc] = docs.as_slice() else {
            panic!("{file}: expected one document");
        };
        let mut missing = Vec::new();
        unset_fields(
            &schema.openapi["properties"]["spec"],
            &doc["spec"],
            "spec",
            &mut missing,
        );
        assert!(
            missing.is_empty(),
            "{file} should set every field of the {} spec; missing: {missing:?}",
            schema.kind
        );
    }
}

#[test]
fn example_references_resolve() {
    let examples = parse_examples();
    let masters: BTreeSet<&str> = examples
        .masters
        .iter()
        .filter_map(|(_, m)| m.metadata.name.as_deref())
        .collect();
    let secrets: BTreeMap<&str, &Secret> = examples
        .secrets
        .iter()
        .filter_map(|(_, s)| s.metadata.name.as_deref().map(|n| (n, s)))
        .collect();
    let mut problems = Vec::new();

    for (file, node) in &examples.nodes {
        let master = node.spec.master_ref.name.as_str();
        if !masters.contains(master) {
            problems.push(format!("{file}: masterRef {master:?} is not an example"));
        }
    }

    let mut require = |file: &str, field: &str, name: &str, type_: Option<&str>, keys: &[&str]| {
        let Some(secret) = secrets.get(name) else {
            problems.push(format!("{file}: {field} {name:?} is not an example Secret"));
            return;
        };
        if let Some(type_) = type_ {
            if secret.type_.as_deref() != Some(type_) {
                problems.push(format!("{file}: {field} {name:?} must be of type {type_}"));
            }
        }
        let data = secret.data.clone().unwrap_or_default();
        for key in keys {
            if !data.contains_key(*key) {
                problems.push(format!("{file}: {field} {name:?} lacks key {key:?}"));
            }
        }
    };
    for (file, master) in &examples.masters {
        let spec = &master.spec;
        require(
            file,
            "ca.clientSecretRef",
            &spec.ca.client_secret_ref.name,
            Some("kubernetes.io/tls"),
            &["tls.crt", "tls.key", "ca.crt"],
        );
        let credentials = ["accessKeyId", "secretAccessKey"];
        if let Some(r) = &spec.cloud.credentials_secret_ref {
            require(
                file,
                "cloud.credentialsSecretRef",
                &r.name,
                None,
                &credentials,
            );
        }
        if let Some(r) = &spec.records.credentials_secret_ref {
            require(
                file,
                "records.credentialsSecretRef",
                &r.name,
                None,
                &credentials,
            );
        }
        // signing.challengeKeySecretRef is deliberately not an example: a published HMAC
        // key would let anyone forge challenges (the example says how to make one).
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn example_secrets_hold_only_placeholders() {
    let examples = parse_examples();
    for (file, secret) in &examples.secrets {
        let data = secret.data.clone().unwrap_or_default();
        assert!(!data.is_empty(), "{file}: no data");
        assert!(
            secret.string_data.is_none(),
            "{file}: use base64 `data`, as `kubectl get -o yaml` shows it"
        );
        for (key, value) in data {
            let text =
                String::from_utf8(value.0).unwrap_or_else(|_| panic!("{file}: {key} is not text"));
            assert!(
                text.contains("EXAMPLE"),
                "{file}: {key} must be an obvious placeholder (contain EXAMPLE), got {text:?}"
            );
            if key.ends_with(".crt") || key.ends_with(".key") {
                assert!(
                    text.starts_with("-----BEGIN ") && text.trim_end().ends_with("-----"),
                    "{file}: {key} should look like PEM, got {text:?}"
                );
            }
        }
    }
}

#[test]
fn kustomization_lists_every_example() {
    let text = std::fs::read_to_string(repo_root().join("manifests/kustomization.yaml")).unwrap();
    let docs = yaml_documents(&text).unwrap();
    let [kustomization] = docs.as_slice() else {
        panic!("manifests/kustomization.yaml: expected one document");
    };
    assert_eq!(kustomization["kind"], "Kustomization");
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .expect("resources is a list")
        .iter()
        .map(|r| r.as_str().expect("resources are paths").to_owned())
        .collect();
    let present: BTreeSet<String> = example_files()
        .into_iter()
        .map(|f| format!("examples/{f}"))
        .collect();
    assert_eq!(
        listed, present,
        "manifests/kustomization.yaml resources must be exactly the files in manifests/examples/"
    );
}

/// The pool example: `manifests/puppetnodepool.yaml`, outside `examples/` (and the
/// kustomization), validated by scripts/validate-manifests.sh as well.
const POOL_EXAMPLE: &str = "manifests/puppetnodepool.yaml";

#[test]
fn pool_example_passes_the_schema_and_names_an_example_master() {
    let text = std::fs::read_to_string(repo_root().join(POOL_EXAMPLE)).unwrap();
    let docs = yaml_documents(&text).unwrap_or_else(|e| panic!("{POOL_EXAMPLE}: {e}"));
    let [raw] = docs.as_slice() else {
        panic!(
            "{POOL_EXAMPLE}: expected one document, found {}",
            docs.len()
        );
    };
    assert_eq!(raw["apiVersion"], "puppet-conductor.dev/v1alpha1");
    assert_eq!(raw["kind"], "PuppetNodePool");

    // As written (unknown fields are errors, as with `kubectl apply`), and as the types
    // write it back; the typed CEL check agrees.
    let schema = CrdSchema::of::<PuppetNodePool>();
    let errors = schema.create_errors(raw);
    assert!(errors.is_empty(), "{POOL_EXAMPLE}: {errors:#?}");
    let pool: PuppetNodePool = serde_json::from_value(raw.clone())
        .unwrap_or_else(|e| panic!("{POOL_EXAMPLE}: does not parse: {e}"));
    let errors = schema.create_errors(&serde_json::to_value(&pool).unwrap());
    assert!(errors.is_empty(), "{POOL_EXAMPLE} after serde: {errors:#?}");
    pool.validate_cel().unwrap();

    // What the README says of it.
    let spec = &pool.spec;
    assert_eq!(spec.replicas, 3);
    assert!(!spec.template.spec.classes.is_empty(), "no classes");
    assert_eq!(spec.template.spec.certname, None);
    let rolling = spec
        .strategy
        .rolling_update
        .as_ref()
        .expect("rollingUpdate");
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(spec.min_ready_seconds, 30);

    let masters: BTreeSet<String> = parse_examples()
        .masters
        .iter()
        .filter_map(|(_, m)| m.metadata.name.clone())
        .collect();
    let master = &spec.template.spec.master_ref.name;
    assert!(
        masters.contains(master),
        "{POOL_EXAMPLE}: masterRef {master:?} is not an example master ({masters:?})"
    );
}

#[test]
fn readme_shows_the_pool_example_as_it_is() {
    // The README's pool example is the file from its apiVersion line on, verbatim.
    let text = std::fs::read_to_string(repo_root().join(POOL_EXAMPLE)).unwrap();
    let start = text
        .find("apiVersion:")
        .unwrap_or_else(|| panic!("{POOL_EXAMPLE}: no apiVersion"));
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```yaml\n{}```", &text[start..])),
        "README.md must show {POOL_EXAMPLE} from `apiVersion:` on, verbatim, in a yaml block"
    );
}
