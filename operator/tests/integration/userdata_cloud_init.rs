//! Generated user data checked with the real cloud-init (Debian's `cloud-init`):
//! each rendering is a jinja template, so it is first rendered the way the
//! instance renders it (`cloud-init devel render F -i instance-data.json`),
//! then validated with `cloud-init schema --config-file`, and read back with
//! cloud-init's own YAML loader to check that every value means what was put in.
//!
//! Needs only the `cloud-init` binary (tests/services/install.sh installs it),
//! no running services. Without it the tests are skipped, unless
//! `PC_REQUIRE_SERVICES=1`, where they fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use puppet_conductor::identity::{self, ChallengeKey};
use puppet_conductor::userdata::{
    render, rendered_csr_attributes, UserDataError, UserDataInput, MAX_USER_DATA_BYTES,
    OID_CHALLENGE_PASSWORD,
};
use serde_json::json;

const INSTANCE_ID: &str = "i-0123456789abcdef0";
const UID: &str = "0f3c9a2e-7b1d-4c8e-9a6f-1e2d3c4b5a69";

/// The only instance data the template needs: cloud-init refuses to render
/// without `v1` ("'v1' is undefined") and silently writes
/// `CI_MISSING_JINJA_VAR/instance_id` without `v1.instance_id`.
const INSTANCE_DATA: &str = r#"{"v1": {"instance_id": "i-0123456789abcdef0"}}"#;

/// Prints cloud-init's YAML loader's view of a file as JSON; values JSON
/// cannot hold (dates, sets) come out as tagged strings so they fail comparisons.
const LOAD_AS_CLOUD_INIT: &str = "import json, sys\n\
from cloudinit import safeyaml\n\
with open(sys.argv[1]) as f:\n    data = safeyaml.load(f.read())\n\
json.dump(data, sys.stdout, default=lambda o: '<%s %r>' % (type(o).__name__, o))\n";

/// A scratch directory for one test and the `cloud-init` commands run in it.
struct CloudInit {
    dir: PathBuf,
    /// The interpreter cloud-init runs under (its shebang), to load YAML the same way.
    python: String,
}

impl Drop for CloudInit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// cloud-init, or `None` (test skipped) when it is not installed.
fn cloud_init() -> Option<CloudInit> {
    let installed = Command::new("cloud-init")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        if std::env::var("PC_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!(
                "PC_REQUIRE_SERVICES=1 but `cloud-init` is not installed: run tests/services/install.sh"
            );
        }
        eprintln!("skipped: `cloud-init` is not installed (tests/services/install.sh installs it)");
        return None;
    }
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pc-userdata-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("instance-data.json"), INSTANCE_DATA).unwrap();
    Some(CloudInit {
        dir,
        python: cloud_init_python(),
    })
}

/// The interpreter named by `cloud-init`'s shebang (`/usr/bin/python3` on Debian).
fn cloud_init_python() -> String {
    let out = Command::new("sh")
        .args(["-c", "command -v cloud-init"])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| {
            let first = text.lines().next()?.strip_prefix("#!")?.trim().to_owned();
            // `#!/usr/bin/env python3` and `#!/usr/bin/python3 -s` alike.
            let mut words = first.split_whitespace();
            let program = words.next()?;
            if program.ends_with("/env") {
                words.next().map(str::to_owned)
            } else {
                Some(program.to_owned())
            }
        })
        .unwrap_or_else(|| "python3".to_owned())
}

/// Output of a command: success, stdout, stderr.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(command: &mut Command) -> Run {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl CloudInit {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `cloud-init devel render` of `user_data` with [`INSTANCE_DATA`]: what the
    /// instance's cloud-init reads as its cloud-config. Writes `<name>.rendered`.
    fn render_on_instance(&self, name: &str, user_data: &str) -> String {
        let template = self.path(&format!("{name}.user-data"));
        std::fs::write(&template, user_data).unwrap();
        let out = run(Command::new("cloud-init")
            .args(["devel", "render"])
            .arg(&template)
            .arg("-i")
            .arg(self.path("instance-data.json")));
        assert!(out.ok, "cloud-init devel render failed:\n{}", out.stderr);
        // A variable jinja could not resolve is only a warning; here it is a bug.
        assert!(
            !out.stderr.contains("WARNING") && !out.stdout.contains("CI_MISSING_JINJA_VAR"),
            "cloud-init devel render warned:\n{}\n{}",
            out.stderr,
            out.stdout
        );
        std::fs::write(self.path(&format!("{name}.rendered")), &out.stdout).unwrap();
        out.stdout
    }

    /// `cloud-init schema --config-file` of a rendered cloud-config.
    fn schema(&self, name: &str) -> Run {
        run(Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(self.path(&format!("{name}.rendered"))))
    }

    /// The rendered cloud-config as cloud-init's YAML loader reads it.
    fn load(&self, name: &str) -> serde_json::Value {
        let out = run(Command::new(&self.python)
            .arg("-c")
            .arg(LOAD_AS_CLOUD_INIT)
            .arg(self.path(&format!("{name}.rendered"))));
        assert!(
            out.ok,
            "loading with cloud-init's safeyaml failed:\n{}",
            out.stderr
        );
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// Render `input` on the instance, require `cloud-init schema` to accept it,
    /// and return what cloud-init reads. Prints the user data's size.
    fn accepted(&self, name: &str, input: &UserDataInput<'_>) -> (String, serde_json::Value) {
        let user_data = render(input).unwrap();
        eprintln!("{name}: user data is {} bytes", user_data.len());
        let rendered = self.render_on_instance(name, &user_data);
        let schema = self.schema(name);
        assert!(
            schema.ok,
            "cloud-init schema rejected {name}:\n{}{}\n--- rendered ---\n{rendered}",
            schema.stdout, schema.stderr
        );
        (rendered, self.load(name))
    }
}

/// A Puppet-CA-like certificate (PEM, LF line endings).
fn ca_pem(name: &str) -> String {
    rcgen::generate_simple_self_signed(vec![name.to_owned()])
        .unwrap()
        .cert
        .pem()
}

struct Fixture {
    certname: String,
    challenge: String,
    ca: String,
}

impl Fixture {
    fn new(ca: String) -> Self {
        Self {
            certname: identity::certname(UID, 1, None),
            challenge: ChallengeKey::generate().challenge(UID, 1),
            ca,
        }
    }

    fn input<'a>(&'a self, extra: &'a BTreeMap<String, serde_json::Value>) -> UserDataInput<'a> {
        UserDataInput {
            server: "puppet.example.com",
            port: 8140,
            certname: &self.certname,
            environment: "production",
            ca_cert_pem: &self.ca,
            challenge: &self.challenge,
            extra,
            wait_for_cert_seconds: 30,
        }
    }
}

/// Check the operator's part as cloud-init reads it.
fn assert_puppet_part(loaded: &serde_json::Value, input: &UserDataInput<'_>) {
    let puppet = &loaded["puppet"];
    assert_eq!(
        puppet["csr_attributes"]["extension_requests"]["pp_instance_id"],
        INSTANCE_ID
    );
    assert_eq!(
        puppet["csr_attributes"]["custom_attributes"][OID_CHALLENGE_PASSWORD],
        input.challenge
    );
    let agent = &puppet["conf"]["agent"];
    assert_eq!(agent["certname"], input.certname);
    assert_eq!(agent["server"], input.server);
    assert_eq!(agent["masterport"], input.port);
    assert_eq!(agent["environment"], input.environment);
    assert_eq!(agent["http_keepalive_timeout"], 0);
    assert_eq!(puppet["conf"]["ca_cert"], input.ca_cert_pem);
    assert_eq!(puppet["install"], true);
    assert_eq!(puppet["start_service"], true);
}

/// Every extra key reads back exactly as given.
fn assert_extra(loaded: &serde_json::Value, extra: &BTreeMap<String, serde_json::Value>) {
    for (key, value) in extra {
        assert_eq!(&loaded[key], value, "extra key {key:?}");
    }
    let keys = loaded.as_object().unwrap().len();
    assert_eq!(keys, extra.len() + 1, "unexpected keys: {loaded}");
}

#[test]
fn minimal_user_data_passes_cloud_init_schema() {
    let Some(ci) = cloud_init() else { return };
    let fixture = Fixture::new(ca_pem("puppet-ca"));
    let extra = BTreeMap::new();
    let input = fixture.input(&extra);
    let (rendered, loaded) = ci.accepted("minimal", &input);
    assert!(rendered.starts_with("#cloud-config\n"), "{rendered}");
    assert_puppet_part(&loaded, &input);
    assert_extra(&loaded, &extra);
}

#[test]
fn extra_packages_runcmd_write_files_pass_cloud_init_schema() {
    let Some(ci) = cloud_init() else { return };
    let fixture = Fixture::new(ca_pem("puppet-ca"));
    let extra = BTreeMap::from([
        ("packages".to_owned(), json!(["git", ["nginx", "1.22.1-9"]])),
        (
            "runcmd".to_owned(),
            json!([["systemctl", "restart", "nginx"], "echo done > /tmp/done"]),
        ),
        (
            "write_files".to_owned(),
            json!([{
                "path": "/etc/motd",
                "content": "Managed by Puppet\nvia puppet-conductor\n",
                "permissions": "0644",
                "owner": "root:root",
            }]),
        ),
        ("timezone".to_owned(), json!("Europe/Berlin")),
    ]);
    let input = fixture.input(&extra);
    let (_, loaded) = ci.accepted("extras", &input);
    assert_puppet_part(&loaded, &input);
    assert_extra(&loaded, &extra);
}

#[test]
fn long_ca_bundle_passes_cloud_init_schema() {
    let Some(ci) = cloud_init() else { return };
    // A CA bundle (intermediate + roots), as a Puppet CA with an external root has.
    let bundle: String = (0..8).map(|i| ca_pem(&format!("puppet-ca-{i}"))).collect();
    assert!(bundle.len() > 4000, "{}", bundle.len());
    let fixture = Fixture::new(bundle);
    let extra = BTreeMap::new();
    let input = fixture.input(&extra);
    let (_, loaded) = ci.accepted("long-ca", &input);
    assert_puppet_part(&loaded, &input);
}

#[test]
fn tricky_user_values_reach_cloud_init_unchanged() {
    let Some(ci) = cloud_init() else { return };
    let fixture = Fixture::new(ca_pem("puppet-ca"));
    // Jinja syntax (would change the operator's part if not escaped) and
    // strings YAML 1.1 (PyYAML) would read as booleans, numbers or dates.
    let tricky = [
        "{{ v1.instance_id }}",
        "{% endraw %}{{ 7 * 7 }}{% raw %}",
        "{%- if true -%}x{%- endif -%}",
        "{# not a comment",
        "{{{{ }}}}",
        "yes",
        "No",
        "on",
        "OFF",
        "y",
        "~",
        "null",
        "",
        "0755",
        "0x1F",
        "1_000",
        "12:30:45",
        "2024-01-01",
        "1e3",
        ".inf",
        "-.5",
        "a: b",
        "- x",
        "#hash",
        "!tag",
        "&anchor",
        "*alias",
        "%percent",
        "@at",
        "`tick`",
        " leading",
        "trailing ",
        "tab\there",
        "crlf\r\nline",
        "nel\u{85}x",
        "ls\u{2028}x",
        "bom\u{feff}x",
        "é ü 日本 🦀",
        "quote\" back\\slash",
        "${HOME} $x",
    ];
    let extra = BTreeMap::from([
        (
            "bootcmd".to_owned(),
            json!([["echo", "{{ v1.instance_id }}"]]),
        ),
        (
            "runcmd".to_owned(),
            json!([([&["printf", "%s\n"][..], &tricky[..]].concat())]),
        ),
        (
            "write_files".to_owned(),
            json!([
                {"path": "/etc/t1", "content": "line {{ x }}\n{% block %}\n\tindented\n"},
                {"path": "/etc/t2", "content": "  leading spaces\n\n\ntrailing newlines\n\n"},
                {"path": "/etc/t3", "content": "no final newline\nyes"},
                {"path": "/etc/t4", "content": "-----BEGIN X-----\n---\n...\n# c\n"},
            ]),
        ),
        (
            "x_conductor_test".to_owned(),
            json!({
                "1.5": 1.5, "big": 1e20, "neg": -7, "on": true, "null": null,
                "k".repeat(1100): "long key", "{{ key }}": {"{% if %}": []}, "empty": {},
            }),
        ),
    ]);
    let input = fixture.input(&extra);
    let (_, loaded) = ci.accepted("tricky", &input);
    assert_puppet_part(&loaded, &input);
    assert_extra(&loaded, &extra);
}

#[test]
fn broken_extra_fails_cloud_init_schema() {
    let Some(ci) = cloud_init() else { return };
    let fixture = Fixture::new(ca_pem("puppet-ca"));
    let extra = BTreeMap::from([("packages".to_owned(), json!(5))]);
    let user_data = render(&fixture.input(&extra)).unwrap();
    ci.render_on_instance("broken", &user_data);
    let schema = ci.schema("broken");
    assert!(!schema.ok, "cloud-init schema accepted packages: 5");
    let output = format!("{}{}", schema.stdout, schema.stderr);
    assert!(
        output.contains("packages: 5 is not of type 'array'"),
        "{output}"
    );
}

#[test]
fn csr_attributes_read_from_cloud_init_output() {
    let Some(ci) = cloud_init() else { return };
    let fixture = Fixture::new(ca_pem("puppet-ca"));
    let extra = BTreeMap::from([("runcmd".to_owned(), json!(["true"]))]);
    let user_data = render(&fixture.input(&extra)).unwrap();
    let rendered = ci.render_on_instance("csr", &user_data);
    let (challenge, instance_id) = rendered_csr_attributes(&rendered).unwrap();
    assert_eq!(challenge, fixture.challenge);
    assert_eq!(instance_id, INSTANCE_ID);
    // The template itself is not what an agent gets.
    assert!(matches!(
        rendered_csr_attributes(&user_data),
        Err(UserDataError::NotRendered { .. })
    ));
}

#[test]
fn reserved_key_and_oversize_are_refused() {
    let fixture = Fixture::new(ca_pem("puppet-ca"));
    let extra = BTreeMap::from([("puppet".to_owned(), json!({"exec": true}))]);
    let err = render(&fixture.input(&extra)).unwrap_err();
    assert!(
        matches!(&err, UserDataError::ReservedKey { key } if key == "puppet"),
        "{err:?}"
    );

    let extra = BTreeMap::from([(
        "write_files".to_owned(),
        json!([{"path": "/big", "content": "x".repeat(MAX_USER_DATA_BYTES)}]),
    )]);
    let err = render(&fixture.input(&extra)).unwrap_err();
    assert!(
        matches!(err, UserDataError::TooLarge { size, limit: 16384 } if size > 16384),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("over EC2's limit of 16384 bytes"),
        "{err}"
    );
}

#[test]
fn typical_user_data_is_small() {
    // A real Puppet CA certificate (RSA 4096) is about 1.9 kB of PEM; use the
    // test puppetserver's when it is around, else one of the same shape.
    let ca = std::env::var("PC_CA_CERT")
        .ok()
        .and_then(|path| std::fs::read_to_string(Path::new(&path)).ok())
        .unwrap_or_else(|| {
            let body = "A".repeat(1800);
            let lines: Vec<&str> = body
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            )
        });
    let fixture = Fixture::new(ca);
    let extra = BTreeMap::from([
        ("packages".to_owned(), json!(["git", "curl"])),
        ("runcmd".to_owned(), json!([["touch", "/var/tmp/booted"]])),
    ]);
    let user_data = render(&fixture.input(&extra)).unwrap();
    eprintln!(
        "typical user data: {} bytes (CA certificate {} bytes)",
        user_data.len(),
        fixture.ca.len()
    );
    assert!(user_data.len() < 4096, "{}", user_data.len());
}

/// For other tests: `user_data` rendered for `instance_id` passes `cloud-init schema`.
/// Returns the rendered cloud-config (`None` when cloud-init is absent and not required).
pub(crate) fn assert_cloud_init_valid(user_data: &str, instance_id: &str) -> Option<String> {
    let ci = cloud_init()?;
    let data = json!({"v1": {"instance_id": instance_id}});
    std::fs::write(ci.path("instance-data.json"), data.to_string()).unwrap();
    let rendered = ci.render_on_instance("external", user_data);
    let schema = ci.schema("external");
    assert!(
        schema.ok,
        "cloud-init schema rejected:\n{}{}\n{rendered}",
        schema.stdout, schema.stderr
    );
    Some(rendered)
}
