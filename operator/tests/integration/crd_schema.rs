//! The generated CRD schemas admit what they should and reject what they should, checked
//! without an API server: OpenAPI v3 through `jsonschema`, CEL rules through kube's
//! client-side evaluator (see crd_schema_support.rs).
//!
//! Every rejection test first checks that the unmodified object is admitted and then that the
//! rejection names the offending field, so a test cannot pass for the wrong reason.

use puppet_conductor::api::master::{MAX_WAIT_FOR_CERT, MIN_WAIT_FOR_CERT};
use puppet_conductor::api::{PuppetMaster, PuppetNode};
use serde_json::{json, Value};

use crate::crd_schema_support::{
    assert_create_rejected, assert_update_rejected, cel_rules, draft4_validator, invalid_defaults,
    structural_problems, CrdSchema,
};

/// A PuppetMaster with only the required fields.
fn master() -> Value {
    json!({
        "apiVersion": "puppet-conductor.dev/v1alpha1",
        "kind": "PuppetMaster",
        "metadata": {"name": "puppet", "namespace": "default"},
        "spec": {
            "server": "puppet.example.com",
            "ca": {
                "url": "https://puppet.example.com:8140",
                "clientSecretRef": {"name": "puppet-conductor-ca-client"},
            },
            "cloud": {"region": "eu-west-1"},
            "records": {"bucket": "puppet-node-records"},
        },
    })
}

/// A PuppetNode with the required field and one class.
fn node() -> Value {
    json!({
        "apiVersion": "puppet-conductor.dev/v1alpha1",
        "kind": "PuppetNode",
        "metadata": {"name": "web-1", "namespace": "default"},
        "spec": {
            "masterRef": {"name": "puppet"},
            "classes": ["role::webserver"],
        },
    })
}

fn with_certname(certname: &str) -> Value {
    let mut n = node();
    n["spec"]["certname"] = json!(certname);
    n
}

fn assert_admitted(schema: &CrdSchema, object: &Value, case: &str) {
    let errors = schema.create_errors(object);
    assert!(
        errors.is_empty(),
        "{case}: expected the object to be admitted, got {errors:#?}\nobject: {object:#}"
    );
}

#[test]
fn minimal_objects_are_admitted() {
    assert_admitted(
        &CrdSchema::of::<PuppetMaster>(),
        &master(),
        "minimal master",
    );
    assert_admitted(&CrdSchema::of::<PuppetNode>(), &node(), "minimal node");
}

#[test]
fn bad_certnames_are_rejected() {
    let schema = CrdSchema::of::<PuppetNode>();
    for good in ["web-1", "web-1.prod.example.com", "db_2", "0node"] {
        assert_admitted(&schema, &with_certname(good), good);
    }
    let too_long = "a".repeat(254);
    for (case, bad) in [
        ("uppercase", "Web-1.example.com"),
        ("slash", "web/1"),
        ("leading dash", "-web-1"),
        ("leading dot", ".web-1"),
        ("space", "web 1"),
        ("empty", ""),
        ("longer than 253", too_long.as_str()),
    ] {
        assert_create_rejected(&schema, &node(), case, "spec.certname", |n| {
            n["spec"]["certname"] = json!(bad)
        });
    }
}

#[test]
fn unknown_replace_and_deletion_policies_are_rejected() {
    let schema = CrdSchema::of::<PuppetNode>();
    for good in ["Replace", "Never"] {
        let mut n = node();
        n["spec"]["replacePolicy"] = json!(good);
        assert_admitted(&schema, &n, good);
    }
    for bad in ["Recreate", "replace", ""] {
        assert_create_rejected(&schema, &node(), bad, "spec.replacePolicy", |n| {
            n["spec"]["replacePolicy"] = json!(bad)
        });
    }
    assert_create_rejected(&schema, &node(), "Retain", "spec.deletionPolicy", |n| {
        n["spec"]["deletionPolicy"] = json!("Retain")
    });
}

#[test]
fn parameters_must_be_a_map() {
    let schema = CrdSchema::of::<PuppetNode>();
    let mut n = node();
    n["spec"]["parameters"] = json!({
        "datacenter": "eu-1",
        "ntp_servers": ["0.pool.ntp.org"],
        "postgresql": {"version": "15", "settings": {"max_connections": 200}},
        "enabled": true,
        "unset": null,
    });
    assert_admitted(&schema, &n, "map of any JSON values");
    for (case, bad) in [
        ("string", json!("datacenter=eu-1")),
        ("list", json!(["datacenter", "eu-1"])),
        ("number", json!(1)),
    ] {
        assert_create_rejected(&schema, &node(), case, "spec.parameters", |n| {
            n["spec"]["parameters"] = bad
        });
    }
}

#[test]
fn master_ref_is_required() {
    let schema = CrdSchema::of::<PuppetNode>();
    assert_create_rejected(&schema, &node(), "no masterRef", "masterRef", |n| {
        n["spec"].as_object_mut().unwrap().remove("masterRef");
    });
    assert_create_rejected(&schema, &node(), "no spec", "spec", |n| {
        n.as_object_mut().unwrap().remove("spec");
    });
    assert_create_rejected(&schema, &node(), "empty name", "spec.masterRef.name", |n| {
        n["spec"]["masterRef"]["name"] = json!("")
    });
    assert_create_rejected(&schema, &node(), "no name", "spec.masterRef", |n| {
        n["spec"]["masterRef"] = json!({})
    });
}

#[test]
fn certname_cannot_change_on_update() {
    let schema = CrdSchema::of::<PuppetNode>();
    let old = with_certname("web-1.example.com");
    let new = with_certname("web-2.example.com");
    assert_update_rejected(
        &schema,
        &old,
        &new,
        "changed certname",
        "certname is immutable",
    );

    // The same rule through the generated typed API.
    let old: PuppetNode = serde_json::from_value(old).unwrap();
    let new: PuppetNode = serde_json::from_value(new).unwrap();
    new.validate_cel().unwrap();
    new.validate_cel_update(&new).unwrap();
    let errors = new.validate_cel_update(&old).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("certname is immutable")),
        "{errors}"
    );
}

#[test]
fn certname_cannot_be_added_or_removed_on_update() {
    let schema = CrdSchema::of::<PuppetNode>();
    let without = node();
    let with = with_certname("web-1.example.com");
    let needle = "certname cannot be added or removed";
    assert_update_rejected(&schema, &without, &with, "certname added", needle);
    assert_update_rejected(&schema, &with, &without, "certname removed", needle);
}

#[test]
fn other_fields_may_change_on_update() {
    let schema = CrdSchema::of::<PuppetNode>();
    let old = with_certname("web-1.example.com");
    let mut new = old.clone();
    new["spec"]["classes"] = json!(["role::webserver", "profile::monitoring"]);
    new["spec"]["environment"] = json!("staging");
    new["spec"]["replacePolicy"] = json!("Never");
    new["spec"]["instance"] = json!({"instanceType": "t3.large"});
    let errors = schema.update_errors(&new, &old);
    assert!(errors.is_empty(), "{errors:#?}");
    let errors = schema.update_errors(&node(), &node());
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn master_ref_cannot_change_on_update() {
    let schema = CrdSchema::of::<PuppetNode>();
    let old = node();
    let mut new = node();
    new["spec"]["masterRef"]["name"] = json!("puppet-staging");
    assert_update_rejected(
        &schema,
        &old,
        &new,
        "changed masterRef",
        "masterRef is immutable",
    );
}

#[test]
fn bad_class_names_are_rejected() {
    let schema = CrdSchema::of::<PuppetNode>();
    for good in [
        "ntp",
        "::ntp",
        "profile::web",
        "role::web_server2",
        "a::b::c",
    ] {
        let mut n = node();
        n["spec"]["classes"] = json!([good]);
        assert_admitted(&schema, &n, good);
    }
    let too_long = format!("profile::{}", "a".repeat(250));
    for bad in [
        "Profile::web",
        "profile::Web",
        "profile::",
        "profile:web",
        "profile-web",
        "1profile",
        "::",
        "",
        "profile web",
        too_long.as_str(),
    ] {
        assert_create_rejected(&schema, &node(), bad, "spec.classes[1]", |n| {
            n["spec"]["classes"] = json!(["profile::base", bad])
        });
    }
}

#[test]
fn too_many_classes_are_rejected() {
    let schema = CrdSchema::of::<PuppetNode>();
    let classes = |n: usize| -> Vec<String> { (0..n).map(|i| format!("profile::c{i}")).collect() };
    let mut n = node();
    n["spec"]["classes"] = json!(classes(100));
    assert_admitted(&schema, &n, "100 classes");
    assert_create_rejected(&schema, &node(), "101 classes", "spec.classes", |n| {
        n["spec"]["classes"] = json!(classes(101))
    });
}

#[test]
fn bad_image_subnet_and_security_group_ids_are_rejected() {
    let schema = CrdSchema::of::<PuppetNode>();
    let mut n = node();
    n["spec"]["instance"] = json!({
        "imageId": "ami-0123456789abcdef0",
        "subnetId": "subnet-0123abcd",
        "securityGroupIds": ["sg-0123abcd", "sg-0123456789abcdef0"],
    });
    assert_admitted(&schema, &n, "AWS ids");
    n["spec"]["instance"]["imageId"] = json!("emi-0a1b2c3d");
    assert_admitted(&schema, &n, "Eucalyptus image id");

    for bad in [
        "ami-123",
        "AMI-0123abcd",
        "ami-0123ABCD",
        "img-0123abcd",
        "ami-0123456789abcdef01",
        "ami-0123abcd ",
    ] {
        assert_create_rejected(&schema, &node(), bad, "spec.instance.imageId", |n| {
            n["spec"]["instance"] = json!({"imageId": bad})
        });
    }
    for bad in ["subnet-123", "subnet-XYZ01234", "sn-0123abcd", "0123abcd"] {
        assert_create_rejected(&schema, &node(), bad, "spec.instance.subnetId", |n| {
            n["spec"]["instance"] = json!({"subnetId": bad})
        });
    }
    for bad in ["sg-123", "sg-0123ABCD", "group-0123abcd", "default"] {
        assert_create_rejected(
            &schema,
            &node(),
            bad,
            "spec.instance.securityGroupIds[0]",
            |n| n["spec"]["instance"] = json!({"securityGroupIds": [bad]}),
        );
    }
    let seventeen: Vec<String> = (0..17).map(|i| format!("sg-0123ab{i:02x}")).collect();
    assert_create_rejected(
        &schema,
        &node(),
        "17 security groups",
        "spec.instance.securityGroupIds",
        |n| n["spec"]["instance"] = json!({"securityGroupIds": seventeen}),
    );

    // The master's nodeDefaults carry the same patterns.
    let schema = CrdSchema::of::<PuppetMaster>();
    for (field, bad) in [
        ("imageId", "ami-xyz"),
        ("subnetId", "subnet-1"),
        ("securityGroupIds", "sg-1"),
    ] {
        let mut defaults = serde_json::Map::new();
        let value = if field == "securityGroupIds" {
            json!([bad])
        } else {
            json!(bad)
        };
        defaults.insert(field.to_owned(), value);
        assert_create_rejected(
            &schema,
            &master(),
            field,
            &format!("spec.nodeDefaults.{field}"),
            |m| m["spec"]["nodeDefaults"] = Value::Object(defaults),
        );
    }
}

#[test]
fn eucalyptus_requires_an_endpoint() {
    let schema = CrdSchema::of::<PuppetMaster>();
    let mut m = master();
    m["spec"]["cloud"] = json!({
        "provider": "eucalyptus",
        "region": "eucalyptus",
        "endpoint": "https://compute.cloud.example.com:8773/",
    });
    assert_admitted(&schema, &m, "eucalyptus with endpoint");
    let mut ec2 = master();
    ec2["spec"]["cloud"]["provider"] = json!("ec2");
    assert_admitted(&schema, &ec2, "ec2 without endpoint");

    assert_create_rejected(
        &schema,
        &master(),
        "eucalyptus without endpoint",
        "cloud.endpoint is required for provider eucalyptus",
        |m| m["spec"]["cloud"] = json!({"provider": "eucalyptus", "region": "eucalyptus"}),
    );
    assert_create_rejected(
        &schema,
        &master(),
        "unknown provider",
        "spec.cloud.provider",
        |m| m["spec"]["cloud"]["provider"] = json!("openstack"),
    );

    // The same rule through the generated typed API.
    let mut m: PuppetMaster = serde_json::from_value(m).unwrap();
    m.validate_cel().unwrap();
    m.spec.cloud.endpoint = None;
    let errors = m.validate_cel().unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("cloud.endpoint is required")),
        "{errors}"
    );
}

#[test]
fn unknown_signing_modes_are_rejected() {
    let schema = CrdSchema::of::<PuppetMaster>();
    for good in ["Operator", "Policy"] {
        let mut m = master();
        m["spec"]["signing"] = json!({"mode": good});
        assert_admitted(&schema, &m, good);
    }
    for bad in ["Auto", "operator", "policy", ""] {
        assert_create_rejected(&schema, &master(), bad, "spec.signing.mode", |m| {
            m["spec"]["signing"] = json!({"mode": bad})
        });
    }
    assert_create_rejected(
        &schema,
        &master(),
        "poll interval",
        "spec.signing.pollInterval",
        |m| m["spec"]["signing"] = json!({"pollInterval": "10 seconds"}),
    );
}

#[test]
fn durations_are_go_durations_and_the_poll_interval_is_at_least_a_second() {
    let schema = CrdSchema::of::<PuppetMaster>();
    for good in ["1s", "10s", "1m30s", "1.5s", "2h", "1500ms"] {
        let mut m = master();
        m["spec"]["signing"] = json!({"pollInterval": good});
        m["spec"]["orphans"] = json!({"minAge": good});
        assert_admitted(&schema, &m, good);
        let typed: PuppetMaster = serde_json::from_value(m).unwrap();
        typed.validate_cel().unwrap();
    }
    for bad in ["0s", "500ms", "999ms"] {
        assert_create_rejected(
            &schema,
            &master(),
            bad,
            "pollInterval must be at least 1s",
            |m| m["spec"]["signing"] = json!({"pollInterval": bad}),
        );
    }
    for bad in ["-5s", "5", "5d", "1h-1m", ""] {
        assert_create_rejected(&schema, &master(), bad, "spec.orphans.minAge", |m| {
            m["spec"]["orphans"] = json!({"minAge": bad})
        });
    }
    for (bad, needle) in [
        ("0s", "waitForCert must be between 1s and 24h"),
        ("25h", "waitForCert must be between 1s and 24h"),
        ("ten", "spec.signing.waitForCert"),
    ] {
        assert_create_rejected(&schema, &master(), bad, needle, |m| {
            m["spec"]["signing"] = json!({"waitForCert": bad})
        });
    }
    // The CEL rule's bounds are the constants the operator and the user data check.
    let ms = |d: std::time::Duration| format!("{}ms", d.as_millis());
    for edge in [MIN_WAIT_FOR_CERT, MAX_WAIT_FOR_CERT] {
        let mut m = master();
        m["spec"]["signing"] = json!({"waitForCert": ms(edge)});
        assert_admitted(&schema, &m, "a bound");
        let typed: PuppetMaster = serde_json::from_value(m).unwrap();
        typed.validate_cel().unwrap();
    }
    for outside in [
        MIN_WAIT_FOR_CERT - std::time::Duration::from_millis(1),
        MAX_WAIT_FOR_CERT + std::time::Duration::from_millis(1),
    ] {
        assert_create_rejected(&schema, &master(), "outside", "waitForCert must be", |m| {
            m["spec"]["signing"] = json!({"waitForCert": ms(outside)})
        });
    }
    // The typed API reads what the schema admits as the same length of time.
    let mut m = master();
    m["spec"]["signing"] = json!({"pollInterval": "1m30s"});
    let typed: PuppetMaster = serde_json::from_value(m).unwrap();
    assert_eq!(
        typed.spec.signing.poll_interval,
        std::time::Duration::from_secs(90)
    );
}

#[test]
fn ca_url_must_be_https() {
    let schema = CrdSchema::of::<PuppetMaster>();
    for good in [
        "https://puppet:8140",
        "https://puppet.example.com:8140",
        "https://10.0.0.5:8140/puppet-ca/v1",
    ] {
        let mut m = master();
        m["spec"]["ca"]["url"] = json!(good);
        assert_admitted(&schema, &m, good);
    }
    for bad in [
        "http://puppet.example.com:8140",
        "puppet.example.com:8140",
        "https://",
        "https://puppet example.com:8140",
        "https://puppet.example.com:8140/?x=1",
        "ftp://puppet.example.com",
    ] {
        assert_create_rejected(&schema, &master(), bad, "spec.ca.url", |m| {
            m["spec"]["ca"]["url"] = json!(bad)
        });
    }
}

#[test]
fn unknown_fields_are_rejected() {
    // What `kubectl apply` (field validation Strict) does with a typo.
    let node_schema = CrdSchema::of::<PuppetNode>();
    assert_create_rejected(&node_schema, &node(), "typo", "replacementPolicy", |n| {
        n["spec"]["replacementPolicy"] = json!("Never")
    });
    let master_schema = CrdSchema::of::<PuppetMaster>();
    assert_create_rejected(
        &master_schema,
        &master(),
        "nested typo",
        "bucketName",
        |m| m["spec"]["records"]["bucketName"] = json!("x"),
    );
}

#[test]
fn schema_defaults_match_the_types_defaults() {
    // Master: what the API server stores for a minimal object is what serde makes of it.
    let schema = CrdSchema::of::<PuppetMaster>();
    let stored = schema.defaulted(&master());
    let typed: PuppetMaster = serde_json::from_value(master()).unwrap();
    assert_eq!(
        stored["spec"],
        serde_json::to_value(&typed).unwrap()["spec"]
    );
    assert_eq!(
        stored,
        schema.defaulted(&stored),
        "defaults are not complete"
    );
    assert_eq!(stored["spec"]["port"], json!(8140));
    assert_eq!(typed.spec.port, 8140);
    assert_eq!(stored["spec"]["cloud"]["provider"], json!("ec2"));
    assert_eq!(stored["spec"]["records"]["prefix"], json!("nodes/"));
    assert_eq!(stored["spec"]["records"]["forcePathStyle"], json!(false));
    assert_eq!(
        stored["spec"]["signing"],
        // The CA watch's interval: 1 s since signing is driven by the CA (issue 13, item 2).
        json!({"mode": "Operator", "pollInterval": "1s", "waitForCert": "10s", "allowDnsAltNames": false})
    );
    assert_eq!(
        stored["spec"]["orphans"],
        // One hour, written as kube's `Duration` writes it.
        json!({"action": "Ignore", "minAge": "3600s"})
    );

    // Node.
    let schema = CrdSchema::of::<PuppetNode>();
    let stored = schema.defaulted(&node());
    let typed: PuppetNode = serde_json::from_value(node()).unwrap();
    assert_eq!(
        stored["spec"],
        serde_json::to_value(&typed).unwrap()["spec"]
    );
    assert_eq!(
        stored,
        schema.defaulted(&stored),
        "defaults are not complete"
    );
    assert_eq!(stored["spec"]["replacePolicy"], json!("Replace"));
    assert_eq!(stored["spec"]["deletionPolicy"], json!("Delete"));
    assert_eq!(
        stored["spec"]["instance"]["metadataHttpTokens"],
        json!("Required")
    );
}

#[test]
fn crds_are_structural_and_keep_free_form_values() {
    for schema in [
        CrdSchema::of::<PuppetMaster>(),
        CrdSchema::of::<PuppetNode>(),
    ] {
        let problems = structural_problems(&schema.openapi);
        assert!(problems.is_empty(), "{}: {problems:#?}", schema.kind);
        let problems = invalid_defaults(&schema.openapi);
        assert!(problems.is_empty(), "{}: {problems:#?}", schema.kind);
    }
    // Nested values under the free-form maps survive pruning only with this marker.
    let node = CrdSchema::of::<PuppetNode>();
    let spec = &node.openapi["properties"]["spec"]["properties"];
    for map in [
        &spec["parameters"],
        &spec["instance"]["properties"]["cloudConfig"],
    ] {
        assert_eq!(
            map["additionalProperties"],
            json!({"x-kubernetes-preserve-unknown-fields": true}),
            "{map:#}"
        );
    }
}

#[test]
fn cel_rules_compile_and_fit_the_cost_budget() {
    let (rules, problems) = cel_rules(&CrdSchema::of::<PuppetMaster>().openapi);
    assert!(problems.is_empty(), "PuppetMaster: {problems:#?}");
    assert_eq!(rules.len(), 3, "PuppetMaster rules: {rules:#?}");

    let (rules, problems) = cel_rules(&CrdSchema::of::<PuppetNode>().openapi);
    assert!(problems.is_empty(), "PuppetNode: {problems:#?}");
    let paths: Vec<&str> = rules.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "openAPIV3Schema.properties.spec",
            "openAPIV3Schema.properties.spec.properties.certname",
            "openAPIV3Schema.properties.spec.properties.masterRef",
        ],
        "PuppetNode rules: {rules:#?}"
    );

    // The check itself: a rule that does not compile, or names an unknown variable.
    let broken = json!({
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "x-kubernetes-validations": [
            {"rule": "self.a ==", "message": "x"},
            {"rule": "object.a == 'x'", "message": "y"},
        ],
    });
    let (_, problems) = cel_rules(&broken);
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

#[test]
fn structural_check_catches_boolean_additional_properties() {
    // The shape schemars gives a map of serde_json::Value by default: the API server keeps
    // the keys but prunes every object below them, e.g. {"db": {"host": "x"}} -> {"db": {}}.
    let schema = json!({
        "type": "object",
        "properties": {"parameters": {"type": "object", "additionalProperties": true}},
    });
    let problems = structural_problems(&schema);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("properties.parameters.additionalProperties")),
        "{problems:#?}"
    );
}

#[test]
fn jsonschema_ignores_kubernetes_keywords_and_needs_the_nullable_conversion() {
    let schema = CrdSchema::of::<PuppetMaster>();
    // The raw openAPIV3Schema compiles: x-kubernetes-* (and nullable) are unknown keywords.
    let raw = draft4_validator(&schema.openapi);
    assert!(raw.is_valid(&master()));

    // x-kubernetes-validations is ignored by jsonschema: only the CEL pass catches this.
    let mut m = master();
    m["spec"]["cloud"] = json!({"provider": "eucalyptus", "region": "eucalyptus"});
    assert!(raw.is_valid(&m));
    assert!(schema.openapi_errors(&m).is_empty());
    assert!(!schema.cel_errors(&m, None).is_empty());

    // `nullable: true` is not JSON Schema: the raw schema rejects an explicit null the API
    // server accepts, the converted one accepts it and still rejects null where not nullable.
    let mut m = master();
    m["spec"]["cloud"]["endpoint"] = Value::Null;
    assert!(!raw.is_valid(&m));
    assert!(
        schema.openapi_errors(&m).is_empty(),
        "{:#?}",
        schema.openapi_errors(&m)
    );
    let mut m = master();
    m["spec"]["cloud"]["region"] = Value::Null;
    assert!(!schema.openapi_errors(&m).is_empty());

    // Nullable enums accept null too (status.phase).
    let node_schema = CrdSchema::of::<PuppetNode>();
    let mut n = node();
    n["status"] = json!({"phase": null});
    assert!(node_schema.openapi_errors(&n).is_empty());
    n["status"] = json!({"phase": "Exploded"});
    assert!(!node_schema.openapi_errors(&n).is_empty());
}

#[test]
fn status_formats_are_checked() {
    let schema = CrdSchema::of::<PuppetNode>();
    let mut n = node();
    n["status"] = json!({
        "phase": "Ready",
        "certname": "web-1.example.com",
        "incarnation": 1,
        "lastCheckIn": "2024-05-01T10:00:00Z",
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "Classified", "message": "",
            "lastTransitionTime": "2024-05-01T10:00:00Z",
        }],
    });
    assert_admitted(&schema, &n, "status");
    assert_create_rejected(&schema, &n, "bad time", "status.lastCheckIn", |n| {
        n["status"]["lastCheckIn"] = json!("yesterday")
    });
    assert_create_rejected(
        &schema,
        &n,
        "condition without reason",
        "status.conditions[0]",
        |n| {
            n["status"]["conditions"][0]
                .as_object_mut()
                .unwrap()
                .remove("reason");
        },
    );
}
