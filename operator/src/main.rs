//! The `puppet-conductor` binary: argument parsing and dispatch only.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use puppet_conductor::autosign;
use puppet_conductor::cloud::StaticCredentials;
use puppet_conductor::enc::{self, Answer};
use puppet_conductor::records::{RecordsConfig, S3Records};
use puppet_conductor::runner::config::{RunArgs, RunConfig};
use puppet_conductor::{runner, telemetry};

/// Kubernetes operator for Puppet nodes on EC2/Eucalyptus.
#[derive(Parser)]
#[command(name = "puppet-conductor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: the PuppetMaster and PuppetNode controllers, /metrics, /healthz
    /// and /readyz, behind a Lease when leader election is on.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// External node classifier for puppetserver (`external_nodes`): prints the node's
    /// classification from its record; exit 1 for an unknown node, 2 when the store fails.
    Enc {
        /// The node's certname (puppetserver passes it as the only argument).
        certname: String,
        /// Print an empty classification for unknown nodes (exit 0) so Puppet falls back to
        /// its own node definitions, instead of refusing the catalog.
        #[arg(long, env = "PC_ENC_FALLBACK")]
        fallback_to_node_definitions: bool,
        #[command(flatten)]
        records: RecordsArgs,
    },
    /// Policy-based autosign executable for puppetserver (`autosign`): CSR PEM on stdin;
    /// exit 0 signs, anything else leaves the CSR waiting.
    Autosign {
        /// The certname of the CSR (puppetserver passes it as the only argument).
        certname: String,
        /// Sign CSRs that ask for DNS alt names (the master's `signing.allowDnsAltNames`).
        #[arg(long, env = "PC_AUTOSIGN_ALLOW_DNS_ALT_NAMES")]
        allow_dns_alt_names: bool,
        #[command(flatten)]
        records: RecordsArgs,
    },
}

/// Reads the CSR from stdin and decides from the record (Policy signing mode).
async fn run_autosign(
    certname: &str,
    allow_dns_alt_names: bool,
    records: &RecordsArgs,
) -> anyhow::Result<ExitCode> {
    use std::io::Read;
    let mut csr = String::new();
    // Fail closed: an unreadable stdin is a refusal, like every other error.
    if let Err(error) = std::io::stdin().take(64 * 1024).read_to_string(&mut csr) {
        eprintln!("puppet-conductor autosign: not signing {certname}: reading the CSR: {error}");
        return Ok(ExitCode::from(1));
    }
    let store = S3Records::new(&records.config()).await;
    match autosign::decide(&store, certname, &csr, allow_dns_alt_names).await {
        Ok(autosign::Decision::Sign) => {
            eprintln!(
                "puppet-conductor autosign: signing {certname}: challenge and instance id verified"
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(autosign::Decision::Refuse(why)) => {
            eprintln!("puppet-conductor autosign: not signing {certname}: {why}");
            Ok(ExitCode::from(1))
        }
        Err(error) => {
            eprintln!(
                "puppet-conductor autosign: not signing {certname}: {:#}",
                anyhow::Error::from(error)
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// Where the records are (the same settings as the PuppetMaster's `records`), from flags or
/// the environment puppetserver runs its ENC with.
#[derive(Args)]
struct RecordsArgs {
    /// Records bucket.
    #[arg(long = "records-bucket", env = "PC_RECORDS_BUCKET")]
    bucket: String,
    /// Key prefix of the records.
    #[arg(
        long = "records-prefix",
        env = "PC_RECORDS_PREFIX",
        default_value = "nodes/"
    )]
    prefix: String,
    /// S3 region.
    #[arg(
        long = "records-region",
        env = "PC_RECORDS_REGION",
        default_value = "us-east-1"
    )]
    region: String,
    /// S3-compatible endpoint URL.
    #[arg(long = "records-endpoint", env = "PC_RECORDS_ENDPOINT")]
    endpoint: Option<String>,
    /// Path-style bucket addressing.
    #[arg(long = "records-force-path-style", env = "PC_RECORDS_FORCE_PATH_STYLE")]
    force_path_style: bool,
    /// Timeout of each records call, in seconds.
    #[arg(long = "records-timeout", env = "PC_RECORDS_TIMEOUT", default_value_t = enc::DEFAULT_TIMEOUT.as_secs())]
    timeout_seconds: u64,
    /// Access key id (otherwise the default AWS credential chain).
    #[arg(
        long = "records-access-key-id",
        env = "PC_RECORDS_ACCESS_KEY_ID",
        requires = "secret_access_key"
    )]
    access_key_id: Option<String>,
    /// Secret access key.
    #[arg(
        long = "records-secret-access-key",
        env = "PC_RECORDS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    secret_access_key: Option<String>,
}

impl RecordsArgs {
    fn config(&self) -> RecordsConfig {
        RecordsConfig {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            force_path_style: self.force_path_style,
            credentials: match (&self.access_key_id, &self.secret_access_key) {
                (Some(id), Some(secret)) => Some(StaticCredentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    session_token: None,
                }),
                _ => None,
            },
            call_timeout: Duration::from_secs(self.timeout_seconds),
        }
    }
}

async fn run_enc(
    certname: &str,
    fallback: bool,
    records: &RecordsArgs,
) -> anyhow::Result<ExitCode> {
    let store = S3Records::new(&records.config()).await;
    let yaml = match enc::classify(&store, certname, chrono::Utc::now()).await {
        Ok(Answer::Classified(yaml)) => yaml,
        Ok(Answer::Unknown) if fallback => enc::render_fallback()?,
        Ok(Answer::Unknown) => {
            eprintln!("puppet-conductor enc: no record for {certname}");
            return Ok(ExitCode::from(1));
        }
        Err(error) => {
            eprintln!("puppet-conductor enc: {:#}", anyhow::Error::from(error));
            return Ok(ExitCode::from(2));
        }
    };
    std::io::stdout()
        .write_all(yaml.as_bytes())
        .context("writing the classification")?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            telemetry::init(args.log_format, &args.log_filter).context("starting logs")?;
            let config = RunConfig::from_args(&args)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let shutdown = runner::shutdown_on_signals();
                runner::run(config, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds => {
            let yaml = puppet_conductor::api::crds_yaml().context("rendering CRDs")?;
            print!("{yaml}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Autosign {
            certname,
            allow_dns_alt_names,
            records,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // Fail closed on a slow store too: puppetserver waits for this process.
            let decision = runtime.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(records.timeout_seconds.saturating_mul(3)),
                    run_autosign(&certname, allow_dns_alt_names, &records),
                )
                .await
            });
            match decision {
                Ok(code) => code,
                Err(_) => {
                    eprintln!("puppet-conductor autosign: not signing {certname}: timed out");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Enc {
            certname,
            fallback_to_node_definitions,
            records,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run_enc(&certname, fallback_to_node_definitions, &records))
        }
    }
}
