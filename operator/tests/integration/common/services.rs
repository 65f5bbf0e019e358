//! The local services `tests/services/up.sh` starts (puppetserver, moto), as
//! seen by the integration tests.
//!
//! Configuration comes from the `export K=V` file named by `PC_SERVICES_ENV`
//! (default `${PC_STATE_DIR:-/tmp/puppet-conductor}/services.env`, which up.sh
//! writes and down.sh removes), overridden by the same variables in the
//! environment. up.sh leaves out the variables of a service that is not
//! running, so each test asks only for the service it needs.
//!
//! A missing service skips the test with a note on stderr, unless
//! `PC_REQUIRE_SERVICES=1` (CI), where it fails instead: these tests must not
//! pass silently there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use puppet_conductor::ca::HttpCa;

/// Everything up.sh starts.
#[derive(Debug, Clone)]
pub struct Services {
    /// moto's endpoint for EC2 and S3 (`PC_MOTO_ENDPOINT`).
    pub moto_endpoint: String,
    /// The puppetserver.
    pub puppet: PuppetServer,
}

/// The test puppetserver and the operator's client certificate for its CA.
#[derive(Debug, Clone)]
pub struct PuppetServer {
    /// Host agents connect to (`PC_PUPPET_SERVER`).
    pub server: String,
    /// Port agents connect to (`PC_PUPPET_PORT`).
    pub port: u16,
    /// CA API base URL (`PC_CA_URL`).
    pub ca_url: String,
    /// The Puppet CA certificate, PEM path (`PC_CA_CERT`).
    pub ca_cert: PathBuf,
    /// The operator's client certificate, PEM path (`PC_CLIENT_CERT`).
    pub client_cert: PathBuf,
    /// Its key, PEM path (`PC_CLIENT_KEY`).
    pub client_key: PathBuf,
    /// The server's puppet.conf (`PC_PUPPET_CONF`).
    pub puppet_conf: PathBuf,
    /// up.sh's state directory (`PC_STATE_DIR`); agents live under `agents/`.
    pub state_dir: PathBuf,
    /// The services.env file, when configuration came from one.
    pub env_file: Option<PathBuf>,
}

/// What one `agent.sh` run did.
#[derive(Debug, Clone)]
pub struct AgentRun {
    /// puppet's exit code (1 while unsigned or on failure; 0/2 after a catalog run).
    pub code: i32,
    /// stdout followed by stderr.
    pub output: String,
}

impl Services {
    /// Both services, or `None` (test skipped) when either is not configured.
    pub fn from_env() -> Option<Self> {
        let env = Env::load();
        let Some(moto_endpoint) = env.get("PC_MOTO_ENDPOINT") else {
            return missing("moto (PC_MOTO_ENDPOINT)");
        };
        let puppet = PuppetServer::from_loaded(&env)?;
        Some(Self {
            moto_endpoint,
            puppet,
        })
    }

    /// Only moto's endpoint, for tests that need no puppetserver.
    pub fn moto_endpoint_from_env() -> Option<String> {
        match Env::load().get("PC_MOTO_ENDPOINT") {
            Some(endpoint) => Some(endpoint),
            None => missing("moto (PC_MOTO_ENDPOINT)"),
        }
    }
}

impl PuppetServer {
    /// The puppetserver alone, or `None` (test skipped) when it is not configured.
    pub fn from_env() -> Option<Self> {
        Self::from_loaded(&Env::load())
    }

    fn from_loaded(env: &Env) -> Option<Self> {
        const KEYS: [&str; 8] = [
            "PC_PUPPET_SERVER",
            "PC_PUPPET_PORT",
            "PC_CA_URL",
            "PC_CA_CERT",
            "PC_CLIENT_CERT",
            "PC_CLIENT_KEY",
            "PC_PUPPET_CONF",
            "PC_STATE_DIR",
        ];
        let absent: Vec<&str> = KEYS
            .iter()
            .copied()
            .filter(|k| env.get(k).is_none())
            .collect();
        if !absent.is_empty() {
            return missing(&format!("puppetserver ({} unset)", absent.join(", ")));
        }
        let get = |k: &str| env.get(k).unwrap_or_default();
        let port = match get("PC_PUPPET_PORT").parse() {
            Ok(port) => port,
            Err(_) => panic!("PC_PUPPET_PORT is not a port: {:?}", get("PC_PUPPET_PORT")),
        };
        Some(Self {
            server: get("PC_PUPPET_SERVER"),
            port,
            ca_url: get("PC_CA_URL"),
            ca_cert: get("PC_CA_CERT").into(),
            client_cert: get("PC_CLIENT_CERT").into(),
            client_key: get("PC_CLIENT_KEY").into(),
            puppet_conf: get("PC_PUPPET_CONF").into(),
            state_dir: get("PC_STATE_DIR").into(),
            env_file: env.file.clone(),
        })
    }

    /// An [`HttpCa`] with the operator's client certificate.
    pub fn ca_client(&self, timeout: Duration) -> HttpCa {
        HttpCa::from_pem(
            &self.ca_url,
            &read(&self.client_cert),
            &read(&self.client_key),
            &read(&self.ca_cert),
            timeout,
        )
        .unwrap_or_else(|e| panic!("building the CA client from services.env: {e:?}"))
    }

    /// The operator's trusted CA certificate (PEM bytes).
    pub fn ca_pem(&self) -> Vec<u8> {
        read(&self.ca_cert)
    }

    /// The ssldir agent.sh uses for `certname`.
    pub fn agent_ssl_dir(&self, certname: &str) -> PathBuf {
        self.state_dir.join("agents").join(certname).join("ssl")
    }

    /// Run `tests/services/agent.sh` once for `certname`, playing a launched
    /// instance whose CSR carries `challenge` and `instance_id` (and asks for
    /// `dns_alt_names`, comma-separated).
    pub async fn run_agent(
        &self,
        certname: &str,
        challenge: Option<&str>,
        instance_id: Option<&str>,
        dns_alt_names: Option<&str>,
    ) -> AgentRun {
        self.agent(None, certname, challenge, instance_id, dns_alt_names)
            .await
    }

    /// [`Self::run_agent`] with the agent's own directory `dir` (its own key and ssldir):
    /// a second machine claiming the same certname.
    pub async fn run_agent_in(
        &self,
        dir: &Path,
        certname: &str,
        challenge: Option<&str>,
        instance_id: Option<&str>,
    ) -> AgentRun {
        self.agent(Some(dir), certname, challenge, instance_id, None)
            .await
    }

    async fn agent(
        &self,
        dir: Option<&Path>,
        certname: &str,
        challenge: Option<&str>,
        instance_id: Option<&str>,
        dns_alt_names: Option<&str>,
    ) -> AgentRun {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/services/agent.sh");
        let mut command = tokio::process::Command::new("bash");
        command.arg(&script).args(["--certname", certname]);
        if let Some(dir) = dir {
            command.arg("--dir").arg(dir);
        }
        for (flag, value) in [
            ("--challenge", challenge),
            ("--instance-id", instance_id),
            ("--dns-alt-names", dns_alt_names),
        ] {
            if let Some(value) = value {
                command.args([flag, value]);
            }
        }
        command
            .env("PC_STATE_DIR", &self.state_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(file) = &self.env_file {
            command.env("PC_SERVICES_ENV", file);
        }
        let out = match command.output().await {
            Ok(out) => out,
            Err(e) => panic!("running {}: {e}", script.display()),
        };
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        AgentRun {
            // Killed by a signal: report it as a failure puppet never uses.
            code: out.status.code().unwrap_or(-1),
            output,
        }
    }
}

/// Skip (or, under `PC_REQUIRE_SERVICES=1`, fail) a test whose service is missing.
fn missing<T>(what: &str) -> Option<T> {
    if std::env::var("PC_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!(
            "PC_REQUIRE_SERVICES=1 but {what} is not configured: \
             run tests/services/up.sh and set PC_SERVICES_ENV or source the file it writes"
        );
    }
    eprintln!("skipped: services not running (run tests/services/up.sh): {what}");
    None
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// services.env values with the process environment on top.
struct Env {
    file: Option<PathBuf>,
    values: BTreeMap<String, String>,
}

impl Env {
    fn load() -> Self {
        let explicit = std::env::var_os("PC_SERVICES_ENV").map(PathBuf::from);
        let path = explicit.clone().unwrap_or_else(|| {
            let state = std::env::var_os("PC_STATE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp/puppet-conductor"));
            state.join("services.env")
        });
        let (file, values) = match std::fs::read_to_string(&path) {
            Ok(text) => (Some(path), parse_env_file(&text)),
            Err(e) if explicit.is_some() && e.kind() != std::io::ErrorKind::NotFound => {
                panic!("PC_SERVICES_ENV={}: {e}", path.display())
            }
            // A named file that does not exist means the services are down.
            Err(_) => (None, BTreeMap::new()),
        };
        Self { file, values }
    }

    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key)
            .ok()
            .or_else(|| self.values.get(key).cloned())
            .filter(|v| !v.is_empty())
    }
}

/// Parse up.sh's `export K=V` lines (values possibly quoted by `printf %q`
/// or with quotes); comments and other lines are ignored.
fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (key, value) = line.split_once('=')?;
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            Some((key.to_owned(), unquote(value)))
        })
        .collect()
}

fn unquote(value: &str) -> String {
    let value = value.trim();
    for quote in ['\'', '"'] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner.to_owned();
        }
    }
    // printf %q escapes with backslashes.
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_up_sh_output() {
        let text = "# Written by tests/services/up.sh\n\
                    export PC_STATE_DIR=/tmp/puppet-conductor\n\
                    export PC_PUPPET_PORT=53343\n\
                    export PC_X='a b'\n\
                    export PC_Y=a\\ b\n\
                    PC_Z=\"q\"\n";
        let env = parse_env_file(text);
        assert_eq!(env["PC_STATE_DIR"], "/tmp/puppet-conductor");
        assert_eq!(env["PC_PUPPET_PORT"], "53343");
        assert_eq!(env["PC_X"], "a b");
        assert_eq!(env["PC_Y"], "a b");
        assert_eq!(env["PC_Z"], "q");
        assert_eq!(env.len(), 5);
    }
}
