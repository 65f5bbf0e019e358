//! The workspace's layering, checked over `cargo metadata`: which crate may depend on
//! which, and which outside crates each may reach. The crates make most mistakes a
//! compile error already (core cannot name the EC2 client); this test fails when a
//! manifest gains a dependency the layering forbids (core on the AWS SDK, the CA client
//! on kube's client, records on the CA client), directly or through a workspace crate.
//! `docs/architecture.md` draws the same rules.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::{json, Value};

/// kube features that are types and derives only; any other means a client or runtime.
const KUBE_TYPE_FEATURES: [&str; 2] = ["derive", "cel"];

/// Outside crates that mean talking to the Kubernetes API server.
const KUBE_CLIENT: &[&str] = &["kube-client", "kube-runtime", "kube-fake-client"];
/// Outside crates that mean the AWS SDK.
const AWS_SDK: &[&str] = &[
    "aws-config",
    "aws-sdk-",
    "aws-smithy-",
    "aws-credential-types",
];
/// Outside crates that mean HTTP (clients or servers).
const HTTP: &[&str] = &["reqwest", "hyper", "axum", "tower-http", "ureq"];
/// An async runtime: the pure layers do no I/O at all.
const RUNTIME: &[&str] = &["tokio"];

/// One crate's place in the layering.
struct Rule {
    /// The package name.
    name: &'static str,
    /// Workspace crates it may depend on (directly, any kind of dependency).
    uses: &'static [&'static str],
    /// Whether it may reach the API server through kube (client or runtime features).
    kube_client: bool,
    /// Outside crates it may not reach, by name or name prefix (ending in `-`), checked
    /// over its own dependencies and those of every workspace crate below it.
    forbidden: &'static [&'static [&'static str]],
}

const NO_IO: &[&[&str]] = &[KUBE_CLIENT, AWS_SDK, HTTP, RUNTIME];

/// The layering. A workspace crate missing here is a violation: place it first.
const RULES: &[Rule] = &[
    Rule {
        name: "puppet-conductor-api",
        uses: &[],
        kube_client: false,
        forbidden: NO_IO,
    },
    Rule {
        name: "puppet-conductor-core",
        uses: &["puppet-conductor-api"],
        kube_client: false,
        forbidden: NO_IO,
    },
    Rule {
        name: "puppet-conductor-aws",
        uses: &[],
        kube_client: false,
        forbidden: &[KUBE_CLIENT, HTTP],
    },
    Rule {
        name: "puppet-conductor-cloud",
        uses: &["puppet-conductor-core", "puppet-conductor-aws"],
        kube_client: false,
        forbidden: &[KUBE_CLIENT, &["aws-sdk-s3", "reqwest", "axum"]],
    },
    Rule {
        name: "puppet-conductor-records",
        uses: &["puppet-conductor-core", "puppet-conductor-aws"],
        kube_client: false,
        forbidden: &[KUBE_CLIENT, &["aws-sdk-ec2", "reqwest", "axum"]],
    },
    Rule {
        name: "puppet-conductor-ca",
        uses: &["puppet-conductor-core"],
        kube_client: false,
        forbidden: &[KUBE_CLIENT, AWS_SDK, &["axum"]],
    },
    Rule {
        name: "puppet-conductor-fakes",
        uses: &[
            "puppet-conductor-core",
            "puppet-conductor-cloud",
            "puppet-conductor-records",
            "puppet-conductor-ca",
        ],
        kube_client: false,
        forbidden: &[KUBE_CLIENT, &["axum"]],
    },
    Rule {
        name: "puppet-conductor",
        uses: &[
            "puppet-conductor-api",
            "puppet-conductor-core",
            "puppet-conductor-aws",
            "puppet-conductor-cloud",
            "puppet-conductor-records",
            "puppet-conductor-ca",
            "puppet-conductor-fakes",
        ],
        kube_client: true,
        forbidden: &[],
    },
];

/// One declared dependency of a workspace crate.
struct Dep {
    name: String,
    kind: String,
    features: Vec<String>,
}

fn deps_of(package: &Value) -> Vec<Dep> {
    package["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| Dep {
            name: d["name"].as_str().unwrap_or_default().to_owned(),
            kind: d["kind"].as_str().unwrap_or("normal").to_owned(),
            features: d["features"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect(),
        })
        .collect()
}

fn matches(name: &str, patterns: &[&str]) -> bool {
    patterns
        .iter()
        .any(|p| name == *p || (p.ends_with('-') && name.starts_with(p)))
}

/// Every rule the workspace in `metadata` (`cargo metadata --no-deps` JSON) breaks.
fn violations(metadata: &Value) -> Vec<String> {
    let rules: BTreeMap<&str, &Rule> = RULES.iter().map(|r| (r.name, r)).collect();
    let packages: BTreeMap<String, Vec<Dep>> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                deps_of(p),
            )
        })
        .collect();
    let mut found = Vec::new();
    for (name, deps) in &packages {
        let Some(rule) = rules.get(name.as_str()) else {
            found.push(format!("{name} has no place in the layering (add a Rule)"));
            continue;
        };
        // A crate's dev-dependency on itself (to enable its own test features) is no edge.
        for dep in deps
            .iter()
            .filter(|d| packages.contains_key(&d.name) && d.name != *name)
        {
            if !rule.uses.contains(&dep.name.as_str()) {
                found.push(format!(
                    "{name} may not depend on {} ({})",
                    dep.name, dep.kind
                ));
            }
        }
        // What its build reaches: its own dependencies and those of every workspace
        // crate below it. Dev-dependencies build only tests, never the crates above.
        let mut below = BTreeSet::new();
        let mut stack = vec![name.clone()];
        while let Some(current) = stack.pop() {
            for dep in packages.get(&current).into_iter().flatten() {
                if packages.contains_key(&dep.name)
                    && dep.kind != "dev"
                    && below.insert(dep.name.clone())
                {
                    stack.push(dep.name.clone());
                }
            }
        }
        let reached = std::iter::once(name)
            .chain(&below)
            .flat_map(|p| packages[p].iter().map(move |d| (p, d)))
            .filter(|(_, d)| !packages.contains_key(&d.name) && d.kind != "dev");
        for (via, dep) in reached {
            let path = if via == name {
                String::new()
            } else {
                format!(" through {via}")
            };
            if let Some(group) = rule.forbidden.iter().find(|g| matches(&dep.name, g)) {
                found.push(format!(
                    "{name} may not reach {}{path} (forbidden: {group:?})",
                    dep.name
                ));
            }
            let client_features: Vec<&String> = dep
                .features
                .iter()
                .filter(|f| !KUBE_TYPE_FEATURES.contains(&f.as_str()))
                .collect();
            if dep.name == "kube" && !rule.kube_client && !client_features.is_empty() {
                found.push(format!(
                    "{name} may not reach kube's client{path} (features {client_features:?})"
                ));
            }
        }
    }
    found
}

fn workspace_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// One declared dependency: name, kind (`normal`, `dev`, `build`) and features.
type DepSpec = (&'static str, &'static str, &'static [&'static str]);
/// Packages and their dependencies.
type Workspace = Vec<(&'static str, Vec<DepSpec>)>;

/// `workspace` as a minimal `cargo metadata` document.
fn metadata(workspace: &Workspace) -> Value {
    let packages: Vec<Value> = workspace
        .iter()
        .map(|(name, deps)| {
            let deps: Vec<Value> = deps
                .iter()
                .map(|(dep, kind, features)| {
                    let kind = if *kind == "normal" {
                        Value::Null
                    } else {
                        json!(kind)
                    };
                    json!({"name": dep, "kind": kind, "features": features})
                })
                .collect();
            json!({"name": name, "dependencies": deps})
        })
        .collect();
    json!({ "packages": packages })
}

/// A workspace that keeps every rule, to break one rule at a time.
fn layered() -> Workspace {
    const NONE: &[&str] = &[];
    vec![
        (
            "puppet-conductor-api",
            vec![("kube", "normal", &["derive", "cel"])],
        ),
        (
            "puppet-conductor-core",
            vec![
                ("puppet-conductor-api", "normal", NONE),
                ("sha2", "normal", NONE),
            ],
        ),
        (
            "puppet-conductor-aws",
            vec![("aws-credential-types", "normal", NONE)],
        ),
        (
            "puppet-conductor-cloud",
            vec![
                ("puppet-conductor-core", "normal", NONE),
                ("aws-sdk-ec2", "normal", NONE),
            ],
        ),
        (
            "puppet-conductor-ca",
            vec![
                ("puppet-conductor-core", "normal", NONE),
                ("reqwest", "normal", NONE),
            ],
        ),
        (
            "puppet-conductor",
            vec![
                ("puppet-conductor-ca", "normal", NONE),
                ("kube", "normal", &["client", "runtime"]),
            ],
        ),
    ]
}

fn check(workspace: &Workspace) -> Vec<String> {
    violations(&metadata(workspace))
}

/// The layered workspace with one more dependency of `package`.
fn with(package: &str, dep: DepSpec) -> Workspace {
    let mut workspace = layered();
    if let Some((_, deps)) = workspace.iter_mut().find(|(n, _)| *n == package) {
        deps.push(dep);
    }
    workspace
}

#[test]
fn the_workspace_keeps_its_layering() {
    let metadata = workspace_metadata();
    let names: BTreeSet<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    // Every crate the layering names exists: a rule for a renamed crate checks nothing.
    for rule in RULES {
        assert!(
            names.contains(rule.name),
            "no workspace crate {}",
            rule.name
        );
    }
    assert_eq!(violations(&metadata), Vec::<String>::new());
}

#[test]
fn a_layered_workspace_passes_the_check() {
    assert_eq!(check(&layered()), Vec::<String>::new());
}

#[test]
fn core_gaining_the_aws_sdk_fails_the_check() {
    let found = check(&with(
        "puppet-conductor-core",
        ("aws-sdk-ec2", "normal", &[]),
    ));
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("puppet-conductor-core may not reach aws-sdk-ec2")),
        "{found:?}"
    );
}

#[test]
fn core_reaching_kubes_client_through_the_api_crate_fails_the_check() {
    let found = check(&with(
        "puppet-conductor-api",
        ("kube", "normal", &["client"]),
    ));
    assert!(
        found.iter().any(|v| v.contains(
            "puppet-conductor-core may not reach kube's client through puppet-conductor-api"
        )),
        "{found:?}"
    );
    assert!(found
        .iter()
        .any(|v| v.starts_with("puppet-conductor-api may not reach kube's client")));
}

#[test]
fn a_client_importing_another_client_fails_the_check() {
    let found = check(&with(
        "puppet-conductor-cloud",
        ("puppet-conductor-ca", "normal", &[]),
    ));
    assert!(
        found
            .iter()
            .any(|v| v == "puppet-conductor-cloud may not depend on puppet-conductor-ca (normal)"),
        "{found:?}"
    );
    // Through the CA client the EC2 crate would also reach HTTP.
    assert!(found
        .iter()
        .any(|v| v.contains("may not reach reqwest through puppet-conductor-ca")));
}

#[test]
fn a_crate_depending_on_the_operator_fails_even_as_a_dev_dependency() {
    let found = check(&with(
        "puppet-conductor-core",
        ("puppet-conductor", "dev", &[]),
    ));
    assert!(
        found
            .iter()
            .any(|v| v == "puppet-conductor-core may not depend on puppet-conductor (dev)"),
        "{found:?}"
    );
}

#[test]
fn a_dev_dependency_of_a_lower_crate_does_not_count_against_the_crates_above() {
    // core's tests may use tokio; the crates above never build them.
    let found = check(&with("puppet-conductor-core", ("tokio", "dev", &[])));
    assert_eq!(found, Vec::<String>::new());
}

#[test]
fn a_crate_without_a_place_in_the_layering_fails_the_check() {
    let mut workspace = layered();
    workspace.push(("puppet-conductor-pools", vec![]));
    assert_eq!(
        check(&workspace),
        ["puppet-conductor-pools has no place in the layering (add a Rule)"]
    );
}
