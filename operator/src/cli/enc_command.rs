//! `puppet-conductor enc`: print a node's classification from its record (exit 0), or
//! refuse an unknown node (exit 1); a failing store is exit 2.

use std::io::Write;
use std::process::ExitCode;

use super::records_args::RecordsArgs;
use crate::certname::validate_certname;
use crate::controller::error::chain;
use crate::enc::{classify, render_fallback, Answer, EncError};
use crate::records::S3Records;

/// Why the ENC could not answer at all.
#[derive(thiserror::Error, Debug)]
pub enum EncCommandError {
    /// The async runtime did not start.
    #[error("starting the runtime")]
    Runtime(#[source] std::io::Error),
    /// The fallback classification did not render.
    #[error("rendering the fallback classification")]
    Fallback(#[source] EncError),
    /// The classification could not be written to stdout.
    #[error("writing the classification")]
    Write(#[source] std::io::Error),
}

/// Runs the subcommand to its exit code.
pub fn run(
    certname: &str,
    fallback: bool,
    records: &RecordsArgs,
) -> Result<ExitCode, EncCommandError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EncCommandError::Runtime)?;
    let store = runtime.block_on(S3Records::new(&records.config()));
    let answer = runtime.block_on(classify(&store, certname, chrono::Utc::now()));
    let yaml = match answer {
        Ok(Answer::Classified(yaml)) => yaml,
        Ok(Answer::Unknown) if fallback => render_fallback().map_err(EncCommandError::Fallback)?,
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
            eprintln!("puppet-conductor enc: {}", chain(&error));
            return Ok(ExitCode::from(2));
        }
    };
    std::io::stdout()
        .write_all(yaml.as_bytes())
        .map_err(EncCommandError::Write)?;
    Ok(ExitCode::SUCCESS)
}
