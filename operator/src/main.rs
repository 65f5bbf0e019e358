//! The `puppet-conductor` binary: argument parsing and dispatch only.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use puppet_conductor::autosign;
use puppet_conductor::ca::validate_certname;
use puppet_conductor::cloud::StaticCredentials;
use puppet_conductor::csr::input::{single_csr_pem, MAX_CSR_INPUT};
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
    /// classification from its record; exit 1 for an unknown node (or a certname the
    /// operator never issues), 2 when the store fails.
    Enc {
        /// The node's certname. Configure `external_nodes = puppet-conductor enc --`: puppetserver
        /// appends the certname, and after `--` it is never read as an option.
        certname: String,
        /// Print an empty classification for unknown nodes (exit 0) so Puppet falls back to
        /// its own node definitions, instead of refusing the catalog.
        #[arg(long, env = "PC_ENC_FALLBACK")]
        fallback_to_node_definitions: bool,
        #[command(flatten)]
        records: RecordsArgs,
    },
    /// Policy-based autosign executable for puppetserver (`autosign`): exactly one CSR PEM
    /// on stdin; exit 0 signs, anything else leaves the CSR waiting. Exits 1 for
    /// anything but a verified CSR, including `--help`, `--version` and bad arguments.
    Autosign {
        /// The certname of the CSR (the wrapper passes puppetserver's argument after `--`, so
        /// it is never read as an option).
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
    let mut input = Vec::new();
    // One byte over the limit is read so that an oversized input is refused, not cut to a
    // prefix that might parse. Fail closed: an unreadable stdin is a refusal too.
    let limit = u64::try_from(MAX_CSR_INPUT)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    if let Err(error) = std::io::stdin().lock().take(limit).read_to_end(&mut input) {
        eprintln!("puppet-conductor autosign: not signing {certname}: reading the CSR: {error}");
        return Ok(ExitCode::from(1));
    }
    // The decision must be about the one request the CA holds, not the first of several.
    let csr = match single_csr_pem(&input) {
        Ok(pem) => pem,
        Err(error) => {
            eprintln!("puppet-conductor autosign: not signing {certname}: {error}");
            return Ok(ExitCode::from(1));
        }
    };
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
            match validate_certname(certname) {
                Err(error) => eprintln!(
                    "puppet-conductor enc: unknown node: not a certname the operator issues: {error}"
                ),
                Ok(()) => eprintln!("puppet-conductor enc: no record for {certname}"),
            }
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

/// Whether `args` (with the program name first) ask for the `autosign` subcommand: its
/// first non-option argument, which is where clap looks for a subcommand (the top level
/// has only `--help` and `--version`, which take no value).
fn requests_autosign(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|arg| *arg != "--")
        .find(|arg| !arg.to_str().is_some_and(|a| a.starts_with('-')))
        .is_some_and(|arg| arg == "autosign")
}

/// Puppetserver reads exit 0 as "sign": for the autosign subcommand, help, version and
/// every argument error must be a refusal, not clap's exit 0 (or 2).
fn refuse_autosign_arguments(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let why = match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "help requested".to_owned()
        }
        ErrorKind::DisplayVersion => "version requested".to_owned(),
        _ => {
            let text = error.to_string();
            let first = text.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_owned()
        }
    };
    eprintln!(
        "puppet-conductor autosign: not signing: {why} \
         (usage: puppet-conductor autosign [OPTIONS] -- <CERTNAME>, one CSR PEM on stdin)"
    );
    // Then clap's own text (help, version or the error with its usage), for a human.
    eprintln!("{}", error.to_string().trim_end());
    ExitCode::from(1)
}

fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(error) if requests_autosign(&args) => return Ok(refuse_autosign_arguments(&error)),
        // Everything else keeps clap's behaviour (help and version exit 0, errors exit 2).
        Err(error) => error.exit(),
    };
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
