//! The `puppet-conductor` binary: argument parsing and dispatch only.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use puppet_conductor::cli::autosign_command::{self, refuse_autosign_arguments, requests_autosign};
use puppet_conductor::cli::{enc_command, Cli, Command};
use puppet_conductor::runner::config::RunConfig;
use puppet_conductor::{runner, telemetry};

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
        } => Ok(autosign_command::run(
            &certname,
            allow_dns_alt_names,
            &records,
        )),
        Command::Enc {
            certname,
            fallback_to_node_definitions,
            records,
        } => Ok(enc_command::run(
            &certname,
            fallback_to_node_definitions,
            &records,
        )?),
    }
}
