//! `puppet-conductor autosign`: read one CSR from stdin, decide from the record, exit 0
//! only to sign. Everything else, including a bad argument, is exit 1 (puppetserver
//! reads exit 0 as "sign").

use std::ffi::OsString;
use std::io::Read;
use std::process::ExitCode;

use super::records_args::RecordsArgs;
use crate::autosign::{decide, Decision};
use crate::controller::error::chain;
use crate::csr::input::{single_csr_pem, MAX_CSR_INPUT};
use crate::records::S3Records;

/// Runs the subcommand to its exit code; every failure is a refusal (exit 1).
pub fn run(certname: &str, allow_dns_alt_names: bool, records: &RecordsArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return refuse(certname, &format!("starting the runtime: {error}")),
    };
    // Fail closed on a slow store too: puppetserver waits for this process.
    let limit = records.timeout().saturating_mul(3);
    let decision = runtime.block_on(async {
        tokio::time::timeout(
            limit,
            decide_from_stdin(certname, allow_dns_alt_names, records),
        )
        .await
    });
    match decision {
        Ok(Ok(())) => {
            eprintln!(
                "puppet-conductor autosign: signing {certname}: challenge and instance id verified"
            );
            ExitCode::SUCCESS
        }
        Ok(Err(why)) => refuse(certname, &why),
        Err(_) => refuse(certname, "timed out"),
    }
}

/// `Ok` to sign; otherwise why not.
async fn decide_from_stdin(
    certname: &str,
    allow_dns_alt_names: bool,
    records: &RecordsArgs,
) -> Result<(), String> {
    let mut input = Vec::new();
    // One byte over the limit is read so that an oversized input is refused, not cut to a
    // prefix that might parse. Fail closed: an unreadable stdin is a refusal too.
    let limit = u64::try_from(MAX_CSR_INPUT)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    std::io::stdin()
        .lock()
        .take(limit)
        .read_to_end(&mut input)
        .map_err(|error| format!("reading the CSR: {error}"))?;
    // The decision must be about the one request the CA holds, not the first of several.
    let csr = single_csr_pem(&input).map_err(|error| error.to_string())?;
    let store = S3Records::new(&records.config()).await;
    match decide(&store, certname, &csr, allow_dns_alt_names).await {
        Ok(Decision::Sign) => Ok(()),
        Ok(Decision::Refuse(why)) => Err(why.to_string()),
        Err(error) => Err(chain(&error)),
    }
}

fn refuse(certname: &str, why: &str) -> ExitCode {
    eprintln!("puppet-conductor autosign: not signing {certname}: {why}");
    ExitCode::from(1)
}

/// Whether `args` (with the program name first) ask for the `autosign` subcommand: its
/// first non-option argument, which is where clap looks for a subcommand (the top level
/// has only `--help` and `--version`, which take no value).
pub fn requests_autosign(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|arg| *arg != "--")
        .find(|arg| !arg.to_str().is_some_and(|a| a.starts_with('-')))
        .is_some_and(|arg| arg == "autosign")
}

/// Puppetserver reads exit 0 as "sign": for the autosign subcommand, help, version and
/// every argument error must be a refusal, not clap's exit 0 (or 2).
pub fn refuse_autosign_arguments(error: &clap::Error) -> ExitCode {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_autosign_subcommand_is_found_before_the_separator_only() {
        assert!(requests_autosign(&args(&["pc", "autosign", "--", "x"])));
        assert!(requests_autosign(&args(&["pc", "--help", "autosign"])));
        assert!(!requests_autosign(&args(&["pc", "enc", "--", "autosign"])));
        assert!(!requests_autosign(&args(&["pc", "--", "autosign"])));
    }
}
