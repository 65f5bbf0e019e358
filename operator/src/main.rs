//! The `puppet-conductor` binary: argument parsing and dispatch only.

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Kubernetes operator for Puppet nodes on EC2/Eucalyptus.
#[derive(Parser)]
#[command(name = "puppet-conductor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            let yaml = puppet_conductor::api::crds_yaml().context("rendering CRDs")?;
            print!("{yaml}");
        }
    }
    Ok(())
}
