//! Unit tests of user-data rendering. The real cloud-init checks are in
//! `tests/integration/userdata_cloud_init.rs`.

use super::*;
use proptest::prelude::*;
use serde_json::json;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const ID: &str = "i-0123456789abcdef0";

fn input(extra: &BTreeMap<String, serde_json::Value>) -> UserDataInput<'_> {
    UserDataInput {
        server: "puppet.example.com",
        port: 8140,
        certname: "0f3c9a2e-7b1d-4c8e-9a6f-1e2d3c4b5a69-1",
        environment: "production",
        ca_cert_pem: CA,
        challenge: "0123456789abcdef0123456789abcdef",
        extra,
        wait_for_cert_seconds: 30,
    }
}

/// What cloud-init renders the template to on instance `ID` (see `jinja::tests::render`,
/// which also fails on any jinja syntax other than ours).
fn render_on_instance(user_data: &str) -> String {
    let (header, template) = user_data.split_once('\n').unwrap();
    assert_eq!(header, JINJA_HEADER);
    jinja::tests::render(template, &[(INSTANCE_ID_EXPR, ID)])
}

/// The cloud-config `input` should yield on instance `ID`.
fn expected(input: &UserDataInput<'_>) -> serde_json::Value {
    let mut doc = serde_json::Map::new();
    doc.insert(
        "puppet".into(),
        json!({
            "install": true,
            "exec": false,
            "start_service": true,
            "conf": {
                "agent": {
                    "server": input.server,
                    "masterport": input.port,
                    "certname": input.certname,
                    "environment": input.environment,
                    "http_keepalive_timeout": 0,
                    "waitforcert": 30,
                },
                "ca_cert": input.ca_cert_pem,
            },
            "csr_attributes": {
                "custom_attributes": { OID_CHALLENGE_PASSWORD: input.challenge },
                "extension_requests": { "pp_instance_id": ID },
            },
        }),
    );
    for (key, value) in input.extra {
        doc.insert(key.clone(), value.clone());
    }
    serde_json::Value::Object(doc)
}

fn parse(rendered: &str) -> serde_json::Value {
    serde_yaml::from_str(rendered).unwrap_or_else(|e| panic!("{e}\n{rendered}"))
}

#[test]
fn minimal() {
    let extra = BTreeMap::new();
    let user_data = render(&input(&extra)).unwrap();
    assert!(user_data.starts_with("## template: jinja\n#cloud-config\npuppet:\n"));
    assert_eq!(user_data.matches(INSTANCE_ID_EXPR).count(), 1);
    assert!(user_data.contains("  pp_instance_id: \"{{ v1.instance_id }}\"\n"));
    assert!(user_data.contains("    ca_cert: |\n      -----BEGIN CERTIFICATE-----\n"));
    let rendered = render_on_instance(&user_data);
    assert!(rendered.starts_with("#cloud-config\n"));
    assert_eq!(parse(&rendered), expected(&input(&extra)));
}

#[test]
fn pinned_layout() {
    let extra = BTreeMap::from([("packages".to_owned(), json!(["git"]))]);
    let user_data = render(&input(&extra)).unwrap();
    assert_eq!(
        user_data,
        r#"## template: jinja
#cloud-config
puppet:
  install: true
  exec: false
  start_service: true
  conf:
    agent:
      server: puppet.example.com
      masterport: 8140
      certname: "0f3c9a2e-7b1d-4c8e-9a6f-1e2d3c4b5a69-1"
      environment: production
      http_keepalive_timeout: 0
      waitforcert: 30
    ca_cert: |
      -----BEGIN CERTIFICATE-----
      MIIB
      -----END CERTIFICATE-----
  csr_attributes:
    custom_attributes:
      "1.2.840.113549.1.9.7": "0123456789abcdef0123456789abcdef"
    extension_requests:
      pp_instance_id: "{{ v1.instance_id }}"
packages:
  - git
"#
    );
}

#[test]
fn extra_keys_are_merged_and_kept() {
    let extra = BTreeMap::from([
        ("packages".to_owned(), json!(["git", ["nginx", "1.22"]])),
        (
            "runcmd".to_owned(),
            json!([["echo", "on"], "date +%s > /tmp/t"]),
        ),
        (
            "write_files".to_owned(),
            json!([{"path": "/etc/motd", "content": "hello\nworld\n", "permissions": "0644"}]),
        ),
    ]);
    let user_data = render(&input(&extra)).unwrap();
    let rendered = parse(&render_on_instance(&user_data));
    assert_eq!(rendered, expected(&input(&extra)));
    // YAML 1.1 would read a plain `on` as true and `0644` as 420.
    assert!(user_data.contains("- \"on\"\n"), "{user_data}");
    assert!(user_data.contains("permissions: \"0644\"\n"), "{user_data}");
}

#[test]
fn rendering_is_deterministic() {
    let a = BTreeMap::from([
        ("runcmd".to_owned(), json!(["b"])),
        ("bootcmd".to_owned(), json!(["a"])),
    ]);
    let mut b = BTreeMap::new();
    b.insert("bootcmd".to_owned(), json!(["a"]));
    b.insert("runcmd".to_owned(), json!(["b"]));
    assert_eq!(render(&input(&a)).unwrap(), render(&input(&b)).unwrap());
    let user_data = render(&input(&a)).unwrap();
    assert!(user_data.find("\nbootcmd:").unwrap() < user_data.find("\nruncmd:").unwrap());
}

#[test]
fn user_values_cannot_inject_jinja() {
    let nasty = [
        "{{ v1.instance_id }}",
        "{% endraw %}{{ 7 * 7 }}",
        "{%- raw -%}",
        "{# comment",
        "{{{{",
        "{% set x = 1 %}",
        "\"{{ v1.instance_id }}\"",
        "${HOME} $x",
    ];
    let extra = BTreeMap::from([
        ("runcmd".to_owned(), json!(nasty)),
        (
            "{{ key }}".to_owned(),
            json!({"{% if true %}": "{% endif %}"}),
        ),
        (
            "write_files".to_owned(),
            json!([{"path": "/t", "content": "a {{ b }}\n{% c %}\n"}]),
        ),
    ]);
    let user_data = render(&input(&extra)).unwrap();
    // Exactly one jinja expression that is not an escaped brace, and no blocks or comments.
    let stripped = user_data.replace(jinja::OPEN_BRACE, "");
    assert_eq!(stripped.matches("{{").count(), 1, "{user_data}");
    assert!(
        !stripped.contains("{%") && !stripped.contains("{#"),
        "{user_data}"
    );
    // render_on_instance panics on any other jinja syntax.
    let rendered = parse(&render_on_instance(&user_data));
    assert_eq!(rendered, expected(&input(&extra)));
}

#[test]
fn reserved_key_is_refused() {
    let extra = BTreeMap::from([("puppet".to_owned(), json!({"install": false}))]);
    let err = render(&input(&extra)).unwrap_err();
    assert!(matches!(&err, UserDataError::ReservedKey { key } if key == "puppet"));
    assert_eq!(err.category(), "reserved_key");
    assert_eq!(
        err.to_string(),
        "the extra cloud-config may not set the top-level key `puppet`: the operator generates it"
    );
}

#[test]
fn too_large_is_refused() {
    let extra = BTreeMap::from([(
        "write_files".to_owned(),
        json!([{"path": "/big", "content": "x".repeat(MAX_USER_DATA_BYTES)}]),
    )]);
    let err = render(&input(&extra)).unwrap_err();
    let UserDataError::TooLarge { size, limit } = err else {
        panic!("{err:?}")
    };
    assert_eq!(limit, 16384);
    assert!(size > limit);
    assert_eq!(
        UserDataError::TooLarge {
            size: 20000,
            limit: 16384
        }
        .to_string(),
        "user data is 20000 bytes, over EC2's limit of 16384 bytes; shrink the extra cloud-config"
    );
}

#[test]
fn limit_is_on_the_bytes_sent() {
    let base = render(&input(&BTreeMap::new())).unwrap().len();
    // `bootcmd: ["xxx…"]` adds "bootcmd:\n  - " (13 bytes) + the string + "\n".
    let fits = |n: usize| {
        let extra = BTreeMap::from([("bootcmd".to_owned(), json!(["x".repeat(n)]))]);
        render(&input(&extra)).map(|u| u.len())
    };
    let n = MAX_USER_DATA_BYTES - base - 14;
    assert_eq!(fits(n).unwrap(), MAX_USER_DATA_BYTES);
    assert!(matches!(
        fits(n + 1),
        Err(UserDataError::TooLarge { size: 16385, .. })
    ));
}

#[test]
fn invalid_inputs_are_refused() {
    let extra = BTreeMap::new();
    let cases: Vec<(&str, UserDataInput<'_>)> = vec![
        (
            "server",
            UserDataInput {
                server: "",
                ..input(&extra)
            },
        ),
        (
            "server",
            UserDataInput {
                server: "a b",
                ..input(&extra)
            },
        ),
        (
            "server",
            UserDataInput {
                server: "a\nb",
                ..input(&extra)
            },
        ),
        (
            "port",
            UserDataInput {
                port: 0,
                ..input(&extra)
            },
        ),
        (
            "port",
            UserDataInput {
                port: 65536,
                ..input(&extra)
            },
        ),
        (
            "certname",
            UserDataInput {
                certname: "Upper",
                ..input(&extra)
            },
        ),
        (
            "certname",
            UserDataInput {
                certname: "%i.%f",
                ..input(&extra)
            },
        ),
        (
            "environment",
            UserDataInput {
                environment: "",
                ..input(&extra)
            },
        ),
        (
            "environment",
            UserDataInput {
                environment: "prod\n[main]",
                ..input(&extra)
            },
        ),
        (
            "challenge",
            UserDataInput {
                challenge: "",
                ..input(&extra)
            },
        ),
        (
            "CA certificate",
            UserDataInput {
                ca_cert_pem: "junk",
                ..input(&extra)
            },
        ),
    ];
    for (field, bad) in cases {
        match render(&bad) {
            Err(e @ UserDataError::InvalidInput { field: f, .. }) if f == field => {
                assert_eq!(e.category(), "invalid_input");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn crlf_ca_certificates_are_normalised() {
    let extra = BTreeMap::new();
    let pem = CA.replace('\n', "\r\n");
    let user_data = render(&UserDataInput {
        ca_cert_pem: &pem,
        ..input(&extra)
    })
    .unwrap();
    assert!(!user_data.contains('\r'));
    assert_eq!(
        parse(&render_on_instance(&user_data)),
        expected(&input(&extra))
    );
}

#[test]
fn csr_attributes_from_rendered_cloud_config() {
    let extra = BTreeMap::from([("runcmd".to_owned(), json!(["true"]))]);
    let user_data = render(&input(&extra)).unwrap();
    let rendered = render_on_instance(&user_data);
    let (challenge, instance_id) = rendered_csr_attributes(&rendered).unwrap();
    assert_eq!(challenge, "0123456789abcdef0123456789abcdef");
    assert_eq!(instance_id, ID);

    // The unrendered template, or one rendered without instance data, is refused.
    let err = rendered_csr_attributes(&user_data).unwrap_err();
    assert!(matches!(&err, UserDataError::NotRendered { value } if value == INSTANCE_ID_EXPR));
    let missing = user_data.replace(INSTANCE_ID_EXPR, "CI_MISSING_JINJA_VAR/instance_id");
    assert!(matches!(
        rendered_csr_attributes(&missing),
        Err(UserDataError::NotRendered { .. })
    ));

    let err = rendered_csr_attributes("#cloud-config\npuppet: {}\n").unwrap_err();
    assert_eq!(err.category(), "invalid_rendered");
    assert!(err.to_string().contains("custom_attributes"), "{err}");
    assert!(matches!(
        rendered_csr_attributes("a: [\n"),
        Err(UserDataError::Parse(_))
    ));
}

fn extra_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<String>().prop_map(serde_json::Value::String),
        "[{}%# a\nyes:-]{0,20}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[{}%#a-z_ ]{0,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_extra_renders_to_itself_beside_the_operator_part(
        extra in prop::collection::btree_map("[{}%#a-z_ ]{0,10}", extra_value(), 0..5)
    ) {
        prop_assume!(!extra.contains_key("puppet"));
        let user_data = render(&input(&extra)).unwrap();
        prop_assert_eq!(user_data.matches(INSTANCE_ID_EXPR).count(), 1);
        let rendered = render_on_instance(&user_data);
        prop_assert_eq!(parse(&rendered), expected(&input(&extra)));
        prop_assert_eq!(render(&input(&extra)).unwrap(), user_data);
        let (challenge, instance_id) = rendered_csr_attributes(&rendered).unwrap();
        prop_assert_eq!(challenge, "0123456789abcdef0123456789abcdef");
        prop_assert_eq!(instance_id, ID);
    }
}
