//! Validating objects against the generated CRDs the way an API server would, without one.
//!
//! An API server admits a custom resource in three steps that matter here: it applies the
//! schema's `default`s, validates the result against the OpenAPI v3 (structural) schema, and
//! evaluates the `x-kubernetes-validations` CEL rules (transition rules with `oldSelf` only on
//! update). [`CrdSchema`] does the same with `jsonschema` for the OpenAPI part and kube's
//! client-side CEL evaluator for the rules.
//!
//! OpenAPI v3 as Kubernetes uses it is JSON Schema draft 4 plus a few keywords; the conversion
//! ([`to_json_schema`]) handles what changes validation:
//! - `nullable: true` becomes `type: [T, "null"]` (and adds `null` to an `enum`);
//! - objects with `properties` reject unknown fields, like `kubectl apply` (field validation
//!   `Strict`, kubectl's default) — a typo in a manifest is an error, not a silently pruned field;
//! - the root gets the `apiVersion`, `kind` and `metadata` properties the API server adds.
//!
//! `x-kubernetes-*` keys are left in place: JSON Schema ignores unknown keywords, which the
//! tests in crd_schema.rs check.

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{
    analyze_rule, apply_defaults, compile_schema, CompiledSchema, ScopeContext, Validator,
};
use kube::CustomResourceExt;
use serde_json::{json, Map, Value};

/// The repository root (the parent of the `operator` crate).
pub fn repo_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("the operator crate sits inside the repository")
        .to_path_buf()
}

/// Every document of a (multi-document) YAML text, as JSON values; empty documents are skipped.
pub fn yaml_documents(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Pattern of `metadata.name` for custom resources (a DNS-1123 subdomain).
const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// One CRD's schema, ready to validate objects of its kind.
pub struct CrdSchema {
    /// The kind, e.g. `PuppetNode`.
    pub kind: String,
    /// The `openAPIV3Schema` exactly as generated.
    pub openapi: Value,
    json: jsonschema::Validator,
    cel: Validator,
}

impl CrdSchema {
    /// The schema of a derived custom resource type.
    pub fn of<K: CustomResourceExt>() -> Self {
        Self::from_crd(&K::crd())
    }

    /// The schema of the storage version of a CRD.
    pub fn from_crd(crd: &CustomResourceDefinition) -> Self {
        let version = crd
            .spec
            .versions
            .iter()
            .find(|v| v.storage)
            .expect("a CRD has a storage version");
        let openapi = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("the storage version has an openAPIV3Schema");
        let openapi = serde_json::to_value(openapi).unwrap();
        let api_version = format!("{}/{}", crd.spec.group, version.name);
        let kind = crd.spec.names.kind.clone();
        let json = draft4_validator(&to_json_schema(&openapi, &api_version, &kind));
        Self {
            kind,
            openapi,
            json,
            cel: Validator::new(),
        }
    }

    /// The object with the schema's defaults applied, as the API server stores it.
    pub fn defaulted(&self, object: &Value) -> Value {
        apply_defaults(&self.openapi, object)
    }

    /// What the API server would reject on create (empty: admitted).
    pub fn create_errors(&self, object: &Value) -> Vec<String> {
        self.errors(object, None)
    }

    /// What the API server would reject on an update from `old` to `new` (empty: admitted).
    pub fn update_errors(&self, new: &Value, old: &Value) -> Vec<String> {
        self.errors(new, Some(old))
    }

    /// Only the OpenAPI part (after defaulting), without the CEL rules.
    pub fn openapi_errors(&self, object: &Value) -> Vec<String> {
        let defaulted = self.defaulted(object);
        self.json
            .iter_errors(&defaulted)
            .map(|e| format!("{}: {e}", location(&e.instance_path().to_string())))
            .collect()
    }

    /// Only the CEL rules (kube applies the defaults itself).
    pub fn cel_errors(&self, object: &Value, old: Option<&Value>) -> Vec<String> {
        match self.cel.validate(&self.openapi, object, old) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|e| format!("CEL {e}")).collect(),
        }
    }

    fn errors(&self, object: &Value, old: Option<&Value>) -> Vec<String> {
        let mut errors = self.openapi_errors(object);
        errors.extend(self.cel_errors(object, old));
        errors
    }
}

/// A JSON pointer as a readable path: `/spec/classes/0` -> `spec.classes[0]`, `` -> `<root>`.
fn location(pointer: &str) -> String {
    if pointer.is_empty() {
        return "<root>".to_owned();
    }
    let mut out = String::new();
    for segment in pointer.trim_start_matches('/').split('/') {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

/// A draft-4 validator (the JSON Schema dialect OpenAPI v3.0 builds on), checking formats
/// such as `date-time` like the API server does.
pub fn draft4_validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema:#}"))
}

/// The JSON Schema equivalent of a CRD's `openAPIV3Schema` (see the module docs).
pub fn to_json_schema(openapi: &Value, api_version: &str, kind: &str) -> Value {
    let mut root = convert(openapi);
    let Some(root_obj) = root.as_object_mut() else {
        return root;
    };
    let props = root_obj
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("root properties are an object");
    props.insert(
        "apiVersion".into(),
        json!({"type": "string", "enum": [api_version]}),
    );
    props.insert("kind".into(), json!({"type": "string", "enum": [kind]}));
    props.insert(
        "metadata".into(),
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 253, "pattern": DNS1123_SUBDOMAIN},
                "namespace": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            },
        }),
    );
    let required = root_obj
        .entry("required")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("root required is a list");
    for key in ["apiVersion", "kind", "metadata"] {
        required.push(json!(key));
    }
    root
}

/// `nullable` and strict unknown fields, recursively (see the module docs).
fn convert(node: &Value) -> Value {
    let Some(obj) = node.as_object() else {
        // Boolean schemas (`additionalProperties: true`) mean the same in both dialects.
        return node.clone();
    };
    let mut out = Map::new();
    for (key, value) in obj {
        let converted = match key.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .map(|props| props.iter().map(|(k, v)| (k.clone(), convert(v))).collect())
                    .unwrap_or_default(),
            ),
            "items" | "additionalProperties" | "not" => convert(value),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                value
                    .as_array()
                    .map(|all| all.iter().map(convert).collect())
                    .unwrap_or_default(),
            ),
            "nullable" => continue,
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    if obj.get("nullable") == Some(&Value::Bool(true)) {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".into(), json!([t, "null"]));
        }
        if let Some(Value::Array(values)) = out.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    let preserves_unknown = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if obj.contains_key("properties")
        && !obj.contains_key("additionalProperties")
        && !preserves_unknown
    {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

/// Where the schema is not structural, or keeps data the API server would prune: each entry
/// names the JSON path of the schema node and the problem. Mirrors the API server's checks
/// of a CRD schema that matter for generated schemas.
pub fn structural_problems(openapi: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    walk_structure(openapi, "openAPIV3Schema", &mut problems);
    problems
}

fn walk_structure(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        problems.push(format!(
            "{path}: boolean schema `{node}`: the API server prunes every object nested below it; \
             use `{{x-kubernetes-preserve-unknown-fields: true}}` for free-form values"
        ));
        return;
    };
    let flag = |key: &str| obj.get(key) == Some(&json!(true));
    let preserves_unknown = flag("x-kubernetes-preserve-unknown-fields");
    if obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(false)) {
        problems.push(format!(
            "{path}: x-kubernetes-preserve-unknown-fields must be true or absent"
        ));
    }
    match obj.get("type").and_then(Value::as_str) {
        None if !preserves_unknown && !flag("x-kubernetes-int-or-string") => {
            problems.push(format!("{path}: no type (structural schemas need one)"))
        }
        Some("null") => problems.push(format!("{path}: type null (use nullable)")),
        Some("object")
            if !obj.contains_key("properties")
                && !obj.contains_key("additionalProperties")
                && !preserves_unknown =>
        {
            problems.push(format!(
                "{path}: object without properties or additionalProperties: its content is pruned"
            ))
        }
        _ => {}
    }
    for key in [
        "$ref",
        "definitions",
        "patternProperties",
        "additionalItems",
        "dependencies",
        "id",
    ] {
        if obj.contains_key(key) {
            problems.push(format!("{path}: `{key}` is not supported in CRD schemas"));
        }
    }
    if flag("uniqueItems") {
        problems.push(format!(
            "{path}: uniqueItems: true is forbidden (use x-kubernetes-list-type: set)"
        ));
    }
    if obj.contains_key("properties") {
        if let Some(additional) = obj.get("additionalProperties") {
            if additional != &json!(true) {
                problems.push(format!(
                    "{path}: properties and additionalProperties are mutually exclusive"
                ));
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            walk_structure(prop, &format!("{path}.properties.{name}"), problems);
        }
    }
    if let Some(items) = obj.get("items") {
        walk_structure(items, &format!("{path}.items"), problems);
    }
    if let Some(additional) = obj.get("additionalProperties") {
        walk_structure(
            additional,
            &format!("{path}.additionalProperties"),
            problems,
        );
    }
}

/// Every `default` in the schema that does not validate against the schema node it sits on
/// (the API server rejects such a CRD).
pub fn invalid_defaults(openapi: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    walk_defaults(openapi, "openAPIV3Schema", &mut problems);
    problems
}

fn walk_defaults(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        return;
    };
    if let Some(default) = obj.get("default") {
        let validator = draft4_validator(&convert(node));
        for error in validator.iter_errors(default) {
            problems.push(format!("{path}.default {default}: {error}"));
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            walk_defaults(prop, &format!("{path}.properties.{name}"), problems);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = obj.get(key) {
            walk_defaults(child, &format!("{path}.{key}"), problems);
        }
    }
}

/// Every CEL rule in the schema as `(path, rule)`, and what is wrong with them: rules that
/// do not compile, reference variables a CRD rule cannot see, or exceed the API server's
/// cost budget (kube's static analysis).
pub fn cel_rules(openapi: &Value) -> (Vec<(String, String)>, Vec<String>) {
    let compiled = compile_schema(openapi);
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    walk_rules(&compiled, "openAPIV3Schema", &mut rules, &mut problems);
    (rules, problems)
}

fn walk_rules(
    node: &CompiledSchema,
    path: &str,
    rules: &mut Vec<(String, String)>,
    problems: &mut Vec<String>,
) {
    for result in &node.validations {
        match result {
            Ok(compiled) => {
                let rule = &compiled.rule.rule;
                rules.push((path.to_owned(), rule.clone()));
                for warning in analyze_rule(rule, node, ScopeContext::CrdValidation) {
                    problems.push(format!("{path}: {rule:?}: {}", warning.message));
                }
            }
            Err(e) => problems.push(format!("{path}: {e}")),
        }
    }
    let mut props: Vec<_> = node.properties.iter().collect();
    props.sort_by(|a, b| a.0.cmp(b.0));
    for (name, child) in props {
        walk_rules(child, &format!("{path}.properties.{name}"), rules, problems);
    }
    if let Some(items) = &node.items {
        walk_rules(items, &format!("{path}.items"), rules, problems);
    }
    if let Some(additional) = &node.additional_properties {
        walk_rules(
            additional,
            &format!("{path}.additionalProperties"),
            rules,
            problems,
        );
    }
}

/// Assert that `base` is admitted and that `mutate(base)` is rejected with an error that
/// contains `needle` (so the test fails if the rejection has another cause).
pub fn assert_create_rejected(
    schema: &CrdSchema,
    base: &Value,
    case: &str,
    needle: &str,
    mutate: impl FnOnce(&mut Value),
) {
    let errors = schema.create_errors(base);
    assert!(
        errors.is_empty(),
        "{case}: the unmodified object must be admitted, got {errors:#?}"
    );
    let mut object = base.clone();
    mutate(&mut object);
    let errors = schema.create_errors(&object);
    assert!(
        errors.iter().any(|e| e.contains(needle)),
        "{case}: expected a rejection mentioning {needle:?}, got {errors:#?}\nobject: {object:#}"
    );
}

/// Assert that updating `old` to itself is admitted, that `new` is valid on its own (on
/// create), and that updating `old` to `new` is rejected with an error containing `needle`.
pub fn assert_update_rejected(
    schema: &CrdSchema,
    old: &Value,
    new: &Value,
    case: &str,
    needle: &str,
) {
    let unchanged = schema.update_errors(old, old);
    assert!(
        unchanged.is_empty(),
        "{case}: updating an object to itself must be admitted, got {unchanged:#?}"
    );
    let created = schema.create_errors(new);
    assert!(
        created.is_empty(),
        "{case}: the new object must be valid on its own (only the transition is wrong), got {created:#?}"
    );
    let errors = schema.update_errors(new, old);
    assert!(
        errors.iter().any(|e| e.contains(needle)),
        "{case}: expected the update to be rejected mentioning {needle:?}, got {errors:#?}"
    );
}
