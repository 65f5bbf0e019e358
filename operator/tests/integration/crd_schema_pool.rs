//! The generated PuppetNodePool CRD admits what it should and rejects what it should,
//! checked without an API server as in crd_schema.rs (OpenAPI v3 through `jsonschema`,
//! CEL rules through kube's client-side evaluator, see crd_schema_support.rs), and the
//! generic checks of crd_schema.rs (structural schema, valid defaults, CEL cost) applied
//! to the pool's CRD, which the tests there do not name.
//!
//! Every rejection test first checks that the unmodified object is admitted and then that
//! the rejection names the offending field or rule, so a test cannot pass for the wrong
//! reason.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use puppet_conductor::api::pool::{PuppetNodePool, ScaleDownOrder, StrategyType};
use serde_json::{json, Value};

use crate::crd_schema_support::{
    assert_create_rejected, assert_update_rejected, cel_rules, invalid_defaults,
    structural_problems, CrdSchema,
};

/// A pool with only the required fields: a selector and a template whose labels match it.
fn pool() -> Value {
    json!({
        "apiVersion": "puppet-conductor.dev/v1alpha1",
        "kind": "PuppetNodePool",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"role": "web"}},
            "template": {
                "metadata": {"labels": {"role": "web"}},
                "spec": {
                    "masterRef": {"name": "puppet"},
                    "classes": ["role::webserver"],
                },
            },
        },
    })
}

fn schema() -> CrdSchema {
    CrdSchema::of::<PuppetNodePool>()
}

fn assert_admitted(schema: &CrdSchema, object: &Value, case: &str) {
    let errors = schema.create_errors(object);
    assert!(
        errors.is_empty(),
        "{case}: expected the object to be admitted, got {errors:#?}\nobject: {object:#}"
    );
}

#[test]
fn minimal_pool_is_admitted_and_gets_the_defaults() {
    let schema = schema();
    assert_admitted(&schema, &pool(), "minimal pool");

    // What the API server stores for a minimal pool is what serde makes of it.
    let stored = schema.defaulted(&pool());
    let typed: PuppetNodePool = serde_json::from_value(pool()).unwrap();
    assert_eq!(
        stored["spec"],
        serde_json::to_value(&typed).unwrap()["spec"]
    );
    assert_eq!(
        stored,
        schema.defaulted(&stored),
        "defaults are not complete"
    );
    let spec = &stored["spec"];
    assert_eq!(spec["replicas"], json!(1));
    assert_eq!(spec["strategy"], json!({"type": "RollingUpdate"}));
    assert_eq!(spec["minReadySeconds"], json!(0));
    assert_eq!(spec["scaleDownOrder"], json!("NewestFirst"));
    // The template's spec gets the PuppetNode defaults, as a node of its own would.
    let template = &spec["template"]["spec"];
    assert_eq!(template["replacePolicy"], json!("Replace"));
    assert_eq!(template["deletionPolicy"], json!("Delete"));
    assert_eq!(
        template["instance"]["metadataHttpTokens"],
        json!("Required")
    );
    assert_eq!(typed.spec.replicas, 1);
    assert_eq!(typed.spec.strategy.type_, StrategyType::RollingUpdate);
    assert_eq!(typed.spec.strategy.rolling_update, None);
    assert_eq!(typed.spec.min_ready_seconds, 0);
    assert_eq!(typed.spec.scale_down_order, ScaleDownOrder::NewestFirst);

    // A template without metadata is stored with an empty one (then the selector rule
    // rejects the object: see selector_labels_missing_from_the_template_are_rejected).
    let mut bare = pool();
    bare["spec"]["template"]
        .as_object_mut()
        .unwrap()
        .remove("metadata");
    assert_eq!(
        schema.defaulted(&bare)["spec"]["template"]["metadata"],
        json!({})
    );
}

#[test]
fn a_full_pool_is_admitted() {
    let schema = schema();
    let mut p = pool();
    p["spec"]["replicas"] = json!(3);
    p["spec"]["selector"] = json!({
        "matchLabels": {"role": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend"]}],
    });
    p["spec"]["template"]["metadata"] = json!({
        "labels": {"role": "web", "tier": "frontend"},
        "annotations": {"example.com/owner": "web-team"},
    });
    p["spec"]["template"]["spec"]["instance"] = json!({"instanceType": "t3.small"});
    p["spec"]["strategy"] = json!({
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"},
    });
    p["spec"]["minReadySeconds"] = json!(30);
    p["spec"]["scaleDownOrder"] = json!("OldestFirst");
    assert_admitted(&schema, &p, "full pool");
    let typed: PuppetNodePool = serde_json::from_value(p).unwrap();
    typed.validate_cel().unwrap();

    for order in ["NewestFirst", "OldestFirst"] {
        let mut p = pool();
        p["spec"]["scaleDownOrder"] = json!(order);
        assert_admitted(&schema, &p, order);
    }
    let mut on_delete = pool();
    on_delete["spec"]["strategy"] = json!({"type": "OnDelete"});
    assert_admitted(&schema, &on_delete, "OnDelete without rollingUpdate");
}

#[test]
fn template_certname_is_rejected() {
    let needle = "template.spec.certname must not be set";
    assert_create_rejected(&schema(), &pool(), "certname", needle, |p| {
        p["spec"]["template"]["spec"]["certname"] = json!("web.example.com")
    });

    // The same rule through the generated typed API.
    let mut typed: PuppetNodePool = serde_json::from_value(pool()).unwrap();
    typed.validate_cel().unwrap();
    typed.spec.template.spec.certname = Some("web.example.com".into());
    let errors = typed.validate_cel().unwrap_err();
    assert!(
        errors.iter().any(|e| e.message.contains(needle)),
        "{errors}"
    );
}

#[test]
fn selector_labels_missing_from_the_template_are_rejected() {
    let schema = schema();
    let needle = "selector.matchLabels must match template.metadata.labels";
    assert_create_rejected(&schema, &pool(), "other value", needle, |p| {
        p["spec"]["template"]["metadata"]["labels"]["role"] = json!("db")
    });
    assert_create_rejected(&schema, &pool(), "label missing", needle, |p| {
        p["spec"]["selector"]["matchLabels"]["tier"] = json!("frontend")
    });
    assert_create_rejected(&schema, &pool(), "no template labels", needle, |p| {
        p["spec"]["template"]["metadata"] = json!({})
    });
    assert_create_rejected(&schema, &pool(), "no template metadata", needle, |p| {
        p["spec"]["template"]
            .as_object_mut()
            .unwrap()
            .remove("metadata");
    });
    // The template may carry more labels than the selector names.
    let mut more = pool();
    more["spec"]["template"]["metadata"]["labels"]["tier"] = json!("frontend");
    assert_admitted(&schema, &more, "template labels beyond the selector");
}

#[test]
fn selector_cannot_change_on_update() {
    let schema = schema();
    let old = pool();
    let mut new = pool();
    new["spec"]["selector"]["matchLabels"] = json!({"role": "web", "tier": "frontend"});
    new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("frontend");
    assert_update_rejected(
        &schema,
        &old,
        &new,
        "selector changed",
        "selector is immutable",
    );

    let mut expressions = pool();
    expressions["spec"]["selector"]["matchExpressions"] =
        json!([{"key": "role", "operator": "Exists"}]);
    assert_update_rejected(
        &schema,
        &old,
        &expressions,
        "matchExpressions added",
        "selector is immutable",
    );

    // The same rule through the generated typed API.
    let old: PuppetNodePool = serde_json::from_value(old).unwrap();
    let new: PuppetNodePool = serde_json::from_value(new).unwrap();
    new.validate_cel_update(&new).unwrap();
    let errors = new.validate_cel_update(&old).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("selector is immutable")),
        "{errors}"
    );
}

#[test]
fn template_and_counts_may_change_on_update() {
    // What scaling, a roll and an in-place rewrite change: all admitted.
    let schema = schema();
    let old = pool();
    let mut new = pool();
    new["spec"]["replicas"] = json!(5);
    new["spec"]["template"]["spec"]["classes"] = json!(["role::webserver", "profile::tls"]);
    new["spec"]["template"]["spec"]["environment"] = json!("staging");
    new["spec"]["template"]["spec"]["parameters"] = json!({"workers": 4});
    new["spec"]["template"]["spec"]["instance"] =
        json!({"imageId": "ami-0123456789abcdef0", "instanceType": "t3.large"});
    new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("frontend");
    new["spec"]["template"]["metadata"]["annotations"] = json!({"example.com/rev": "2"});
    new["spec"]["strategy"] = json!({"type": "OnDelete"});
    new["spec"]["minReadySeconds"] = json!(60);
    new["spec"]["scaleDownOrder"] = json!("OldestFirst");
    let errors = schema.update_errors(&new, &old);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn rolling_update_with_on_delete_is_rejected() {
    let schema = schema();
    assert_create_rejected(
        &schema,
        &pool(),
        "OnDelete with rollingUpdate",
        "rollingUpdate is only allowed with type RollingUpdate",
        |p| {
            p["spec"]["strategy"] = json!({
                "type": "OnDelete",
                "rollingUpdate": {"maxSurge": 1},
            })
        },
    );
    let mut rolling = pool();
    rolling["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    assert_admitted(&schema, &rolling, "rollingUpdate with the default type");
}

#[test]
fn replicas_outside_0_to_10000_are_rejected() {
    let schema = schema();
    for good in [0, 1, 50, 10000] {
        let mut p = pool();
        p["spec"]["replicas"] = json!(good);
        assert_admitted(&schema, &p, &format!("replicas {good}"));
    }
    for bad in [json!(-1), json!(10001), json!(1.5), json!("3")] {
        assert_create_rejected(&schema, &pool(), &bad.to_string(), "spec.replicas", |p| {
            p["spec"]["replicas"] = bad.clone()
        });
    }
    for bad in [-1, 86401] {
        assert_create_rejected(
            &schema,
            &pool(),
            &format!("minReadySeconds {bad}"),
            "spec.minReadySeconds",
            |p| p["spec"]["minReadySeconds"] = json!(bad),
        );
    }
}

#[test]
fn unknown_strategy_types_and_scale_down_orders_are_rejected() {
    let schema = schema();
    for bad in ["Recreate", "rollingUpdate", "onDelete", ""] {
        assert_create_rejected(&schema, &pool(), bad, "spec.strategy.type", |p| {
            p["spec"]["strategy"] = json!({"type": bad})
        });
    }
    for bad in ["Newest", "newestFirst", "Random"] {
        assert_create_rejected(&schema, &pool(), bad, "spec.scaleDownOrder", |p| {
            p["spec"]["scaleDownOrder"] = json!(bad)
        });
    }
}

#[test]
fn required_fields_and_unknown_fields() {
    let schema = schema();
    for field in ["selector", "template"] {
        assert_create_rejected(&schema, &pool(), field, field, |p| {
            p["spec"].as_object_mut().unwrap().remove(field);
        });
    }
    assert_create_rejected(&schema, &pool(), "no template.spec", "spec", |p| {
        p["spec"]["template"]
            .as_object_mut()
            .unwrap()
            .remove("spec");
    });
    assert_create_rejected(&schema, &pool(), "no masterRef", "masterRef", |p| {
        p["spec"]["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("masterRef");
    });
    // What `kubectl apply` (field validation Strict) does with a typo.
    assert_create_rejected(&schema, &pool(), "typo", "replica", |p| {
        p["spec"]["replica"] = json!(3)
    });
    assert_create_rejected(&schema, &pool(), "nested typo", "maxSurges", |p| {
        p["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurges": 1}})
    });
    // The template's spec is a PuppetNode spec, with its patterns.
    assert_create_rejected(
        &schema,
        &pool(),
        "bad class",
        "spec.template.spec.classes[0]",
        |p| p["spec"]["template"]["spec"]["classes"] = json!(["Role::Web"]),
    );
}

#[test]
fn template_master_ref_cannot_change_on_update() {
    // The node spec's own transition rule (`masterRef is immutable`) sits on the
    // template's masterRef too: moving a pool to another master means a new pool.
    let schema = schema();
    let old = pool();
    let mut new = pool();
    new["spec"]["template"]["spec"]["masterRef"]["name"] = json!("puppet-staging");
    assert_update_rejected(
        &schema,
        &old,
        &new,
        "template masterRef changed",
        "masterRef is immutable",
    );
}

#[test]
fn status_formats_are_checked() {
    let schema = schema();
    let mut p = pool();
    p["status"] = json!({
        "replicas": 3,
        "readyReplicas": 2,
        "updatedReplicas": 3,
        "availableReplicas": 2,
        "unavailableReplicas": 1,
        "observedGeneration": 4,
        "templateHash": "5d1c0e9a7b",
        "selector": "role=web",
        "conditions": [{
            "type": "Available", "status": "True", "reason": "MinimumNodesAvailable",
            "message": "2 of 3 nodes available (at least 3 wanted)",
            "lastTransitionTime": "2024-05-01T10:00:00Z",
        }],
    });
    assert_admitted(&schema, &p, "status");
    let mut nulls = pool();
    nulls["status"] = json!({"observedGeneration": null, "templateHash": null, "selector": null});
    assert_admitted(&schema, &nulls, "nullable status fields");
    assert_create_rejected(&schema, &p, "count as text", "status.readyReplicas", |p| {
        p["status"]["readyReplicas"] = json!("two")
    });
    assert_create_rejected(
        &schema,
        &p,
        "bad time",
        "status.conditions[0].lastTransitionTime",
        |p| p["status"]["conditions"][0]["lastTransitionTime"] = json!("yesterday"),
    );
    assert_create_rejected(
        &schema,
        &p,
        "condition without reason",
        "status.conditions[0]",
        |p| {
            p["status"]["conditions"][0]
                .as_object_mut()
                .unwrap()
                .remove("reason");
        },
    );
}

#[test]
fn pool_crd_is_structural_with_valid_defaults() {
    let schema = schema();
    let problems = structural_problems(&schema.openapi);
    assert!(problems.is_empty(), "{problems:#?}");
    let problems = invalid_defaults(&schema.openapi);
    assert!(problems.is_empty(), "{problems:#?}");
    // Free-form values in the template survive pruning only with this marker.
    let template = &schema.openapi["properties"]["spec"]["properties"]["template"]["properties"]
        ["spec"]["properties"];
    for map in [
        &template["parameters"],
        &template["instance"]["properties"]["cloudConfig"],
    ] {
        assert_eq!(
            map["additionalProperties"],
            json!({"x-kubernetes-preserve-unknown-fields": true}),
            "{map:#}"
        );
    }
}

/// The variables a rule binds itself in a comprehension macro (`m.all(k, ...)`).
fn comprehension_vars(rule: &str) -> Vec<String> {
    let mut vars = Vec::new();
    for macro_ in [".all(", ".exists(", ".exists_one(", ".map(", ".filter("] {
        for (at, _) in rule.match_indices(macro_) {
            let rest = &rule[at + macro_.len()..];
            if let Some((var, _)) = rest.split_once(',') {
                vars.push(var.trim().to_owned());
            }
        }
    }
    vars
}

#[test]
fn pool_cel_rules_compile_and_fit_the_cost_budget() {
    let (rules, problems) = cel_rules(&schema().openapi);
    // kube-cel's scope check counts a comprehension's own variable (`k` in
    // `matchLabels.all(k, ...)`) as an unknown global: not a problem for the API server.
    let problems: Vec<&String> = problems
        .iter()
        .filter(|p| {
            !rules.iter().any(|(path, rule)| {
                p.starts_with(&format!("{path}: {rule:?}: "))
                    && comprehension_vars(rule).iter().any(|v| {
                        p.ends_with(&format!(
                            "variable '{v}' is not available in CrdValidation context; \
                             valid variables: [\"self\", \"oldSelf\", \"apiVersion\", \"apiGroup\", \"kind\"]"
                        ))
                    })
            })
        })
        .collect();
    assert!(problems.is_empty(), "PuppetNodePool: {problems:#?}");
    let paths: Vec<&str> = rules.iter().map(|(path, _)| path.as_str()).collect();
    let spec = "openAPIV3Schema.properties.spec";
    let template = format!("{spec}.properties.template.properties.spec");
    assert_eq!(
        paths,
        [
            // certname unset, selector within the labels, selector not empty, selector
            // immutable.
            spec.to_owned(),
            spec.to_owned(),
            spec.to_owned(),
            spec.to_owned(),
            // In/NotIn with values, Exists/DoesNotExist without.
            format!("{spec}.properties.selector.properties.matchExpressions.items"),
            format!("{spec}.properties.strategy"),
            // maxSurge and maxUnavailable: a count or a percentage.
            format!("{spec}.properties.strategy.properties.rollingUpdate"),
            format!("{spec}.properties.strategy.properties.rollingUpdate"),
            // The PuppetNode spec's own three rules, on the template.
            template.clone(),
            format!("{template}.properties.certname"),
            format!("{template}.properties.masterRef"),
        ],
        "PuppetNodePool rules: {rules:#?}"
    );
    assert_eq!(
        comprehension_vars("m.all(k, k in n) && l.exists( x , x)"),
        ["k", "x"]
    );
}

/// The schema node `self.a.b` names, from the node the rule sits on.
fn resolve<'a>(node: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(node, |n, field| n.get("properties")?.get(*field))
}

/// The `self.a.b...` paths a rule reads.
fn self_paths(rule: &str) -> Vec<Vec<&str>> {
    let mut paths = Vec::new();
    for (at, _) in rule.match_indices("self.") {
        if at > 0 && rule[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // oldSelf.
        }
        let rest = &rule[at + "self.".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        paths.push(rest[..end].split('.').filter(|s| !s.is_empty()).collect());
    }
    paths.sort();
    paths.dedup();
    paths
}

/// Where a rule with a comprehension reads a map or list without a size bound, or its
/// string entries without a length bound: the API server then estimates the rule's cost
/// from the 3 MiB request limit (about 524,000 entries of about 3 million bytes each; a
/// string comparison costs a tenth of its length) and refuses a CRD whose rule is
/// estimated above 10,000,000. kube-cel's estimate does not count string comparisons,
/// so this checks the bounds Kubernetes' error message asks for instead.
fn unbounded_comprehension_inputs(openapi: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    walk_unbounded(openapi, "openAPIV3Schema", &mut problems);
    problems
}

fn walk_unbounded(node: &Value, at: &str, problems: &mut Vec<String>) {
    for rule in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["rule"].as_str())
        .filter(|r| !comprehension_vars(r).is_empty())
    {
        for path in self_paths(rule) {
            let name = path.join(".");
            let Some(field) = resolve(node, &path) else {
                continue;
            };
            let (entries, bound) = match field["type"].as_str() {
                Some("array") => (&field["items"], "maxItems"),
                Some("object") if field.get("additionalProperties").is_some() => {
                    (&field["additionalProperties"], "maxProperties")
                }
                _ => continue,
            };
            if field.get(bound).is_none() {
                problems.push(format!("{at}: self.{name} has no {bound} (rule {rule:?})"));
            }
            if entries["type"] == "string"
                && entries.get("maxLength").is_none()
                && entries.get("enum").is_none()
            {
                problems.push(format!(
                    "{at}: the entries of self.{name} have no maxLength (rule {rule:?})"
                ));
            }
        }
    }
    for (key, child) in node["properties"].as_object().into_iter().flatten() {
        walk_unbounded(child, &format!("{at}.properties.{key}"), problems);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key).filter(|c| c.is_object()) {
            walk_unbounded(child, &format!("{at}.{key}"), problems);
        }
    }
}

/// A real API server estimates a rule's cost from the sizes the schema allows: a rule
/// that iterates a map or compares strings without bounds exceeds its budget (the pool's
/// first selector rule did, over k8s-openapi's unbounded LabelSelector).
#[test]
fn cel_comprehensions_of_every_crd_read_only_bounded_maps_and_strings() {
    for crd in puppet_conductor::api::crds() {
        let schema = CrdSchema::from_crd(&crd);
        let problems = unbounded_comprehension_inputs(&schema.openapi);
        assert!(problems.is_empty(), "{}: {problems:#?}", schema.kind);
    }
}

#[test]
fn the_unbounded_comprehension_check_finds_unbounded_maps() {
    // The check itself, on a schema with the pool selector rule's shape.
    let rule = "self.m.all(k, k in self.n && self.n[k] == self.m[k])";
    let map = |bounded: bool| {
        if bounded {
            json!({"type": "object", "maxProperties": 64,
                   "additionalProperties": {"type": "string", "maxLength": 63}})
        } else {
            json!({"type": "object", "additionalProperties": {"type": "string"}})
        }
    };
    let with_rule = |m: Value, n: Value| {
        json!({"type": "object", "properties": {"m": m, "n": n},
               "x-kubernetes-validations": [{"rule": rule}]})
    };
    assert_eq!(
        unbounded_comprehension_inputs(&with_rule(map(true), map(true))),
        Vec::<String>::new()
    );
    let problems = unbounded_comprehension_inputs(&with_rule(map(false), map(true)));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].contains("self.m has no maxProperties"),
        "{problems:#?}"
    );
    assert!(
        problems[1].contains("entries of self.m have no maxLength"),
        "{problems:#?}"
    );
}

/// The pool's CRD as generated.
fn pool_crd() -> CustomResourceDefinition {
    PuppetNodePool::crd()
}

#[test]
fn pool_crd_has_the_scale_subresource_short_name_and_printer_columns() {
    let crd = pool_crd();
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["pnp".to_owned()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["puppet".to_owned()]));
    let [version] = crd.spec.versions.as_slice() else {
        panic!("expected one version, got {:#?}", crd.spec.versions);
    };
    let subresources = version.subresources.as_ref().expect("subresources");
    assert!(subresources.status.is_some(), "no status subresource");
    let scale = subresources.scale.as_ref().expect("no scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );

    // The paths name fields of the schema of the type /scale reads and writes (int32
    // replicas, a string selector).
    let openapi = &CrdSchema::from_crd(&crd).openapi;
    let props = |part: &str| &openapi["properties"][part]["properties"];
    for (field, kind) in [
        (&props("spec")["replicas"], "integer"),
        (&props("status")["replicas"], "integer"),
        (&props("status")["selector"], "string"),
    ] {
        assert_eq!(field["type"], json!(kind), "{field:#}");
    }

    let columns: Vec<(String, String, String)> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.clone(), c.type_.clone(), c.json_path.clone()))
        .collect();
    let expected = [
        ("Desired", "integer", ".spec.replicas"),
        ("Current", "integer", ".status.replicas"),
        ("Ready", "integer", ".status.readyReplicas"),
        ("Up-to-date", "integer", ".status.updatedReplicas"),
        ("Available", "integer", ".status.availableReplicas"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    .map(|(n, t, p)| (n.to_owned(), t.to_owned(), p.to_owned()));
    assert_eq!(columns, expected);
}

/// The schema node a printer column's JSONPath reads (`.status.conditions[?(...)].status`
/// descends into the list's items), or `None` when the path leaves the schema.
fn column_schema<'a>(openapi: &'a Value, json_path: &str) -> Option<&'a Value> {
    let mut node = openapi;
    for segment in json_path.trim_start_matches('.').split('.') {
        // A filter's own dots (`@.type`) are inside the brackets of the previous segment.
        if segment.starts_with("type==") || segment.starts_with("type ==") {
            continue;
        }
        let (name, filtered) = match segment.split_once('[') {
            Some((name, _)) => (name, true),
            None => (segment, false),
        };
        node = node.get("properties")?.get(name)?;
        if filtered {
            node = node.get("items")?;
        }
    }
    Some(node)
}

#[test]
fn printer_columns_of_every_crd_read_fields_of_their_type() {
    // A column whose path names no field (a typo, a renamed field) shows <none> forever;
    // the API server does not check. All three CRDs, the pool's included.
    let crds = puppet_conductor::api::crds();
    assert_eq!(crds.len(), 3, "a new CRD: check its columns here too");
    for crd in &crds {
        let kind = &crd.spec.names.kind;
        let openapi = CrdSchema::from_crd(crd).openapi;
        for version in &crd.spec.versions {
            for column in version.additional_printer_columns.iter().flatten() {
                let path = column.json_path.as_str();
                if path.starts_with(".metadata.") {
                    assert_eq!(path, ".metadata.creationTimestamp", "{kind}");
                    assert_eq!(column.type_, "date", "{kind} {}", column.name);
                    continue;
                }
                let field = column_schema(&openapi, path).unwrap_or_else(|| {
                    panic!("{kind} column {}: {path} is not in the schema", column.name)
                });
                assert_eq!(
                    field["type"].as_str(),
                    Some(column.type_.as_str()),
                    "{kind} column {} ({path}): the field is {field:#}",
                    column.name
                );
            }
        }
    }
    // The check itself: a misspelt path is caught.
    let openapi = schema().openapi;
    assert!(column_schema(&openapi, ".status.readyReplica").is_none());
    assert!(column_schema(&openapi, ".status.readyReplicas").is_some());
}

#[test]
fn bounds_that_are_no_count_or_percentage_are_rejected() {
    let schema = schema();
    for (field, value) in [
        ("maxSurge", json!(-1)),
        ("maxSurge", json!("abc")),
        ("maxSurge", json!("150%")),
        ("maxUnavailable", json!("-5%")),
    ] {
        assert_create_rejected(
            &schema,
            &pool(),
            &format!("{field}: {value}"),
            &format!("{field} must be a count of at least 0 or a percentage from 0% to 100%"),
            |p| p["spec"]["strategy"] = json!({"rollingUpdate": {field: value}}),
        );
    }
    // A count written as a string is a count (the pool reads it so too).
    for value in [
        json!(0),
        json!(3),
        json!("2"),
        json!("0%"),
        json!("25%"),
        json!("100%"),
    ] {
        let mut ok = pool();
        ok["spec"]["strategy"] =
            json!({"rollingUpdate": {"maxSurge": value, "maxUnavailable": value}});
        assert_admitted(&schema, &ok, &format!("bounds {value}"));
    }
}

#[test]
fn an_empty_selector_and_malformed_expressions_are_rejected() {
    let schema = schema();
    assert_create_rejected(
        &schema,
        &pool(),
        "empty selector",
        "selector must not be empty",
        |p| p["spec"]["selector"] = json!({}),
    );
    for (case, expression) in [
        (
            "In without values",
            json!({"key": "tier", "operator": "In"}),
        ),
        (
            "Exists with values",
            json!({"key": "tier", "operator": "Exists", "values": ["a"]}),
        ),
    ] {
        assert_create_rejected(
            &schema,
            &pool(),
            case,
            "In and NotIn need values; Exists and DoesNotExist take none",
            |p| p["spec"]["selector"]["matchExpressions"] = json!([expression]),
        );
    }
    let errors = schema.create_errors(&{
        let mut p = pool();
        p["spec"]["selector"]["matchExpressions"] = json!([{"key": "tier", "operator": "Near"}]);
        p
    });
    assert!(!errors.is_empty(), "an unknown operator is admitted");
    let mut with_expressions = pool();
    with_expressions["spec"]["selector"] = json!({"matchExpressions": [
        {"key": "role", "operator": "In", "values": ["web"]},
        {"key": "canary", "operator": "DoesNotExist"}]});
    assert_admitted(&schema, &with_expressions, "expressions only");
    let mut long_value = pool();
    long_value["spec"]["selector"]["matchLabels"]["role"] = json!("x".repeat(64));
    assert!(
        !schema.create_errors(&long_value).is_empty(),
        "a label value over 63 characters is admitted"
    );
}
