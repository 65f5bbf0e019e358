//! The command line: the subcommands, their flags and how the ENC and autosign ones run.
//! `main.rs` only parses, starts the runtime for `run` and dispatches.

pub mod autosign_command;
pub mod enc_command;
pub mod records_args;

use clap::{Parser, Subcommand};

use crate::runner::config::RunArgs;
use records_args::RecordsArgs;

/// Kubernetes operator for Puppet nodes on EC2/Eucalyptus.
#[derive(Parser)]
#[command(name = "puppet-conductor", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
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
        /// Where the records are.
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
        /// Where the records are.
        #[command(flatten)]
        records: RecordsArgs,
    },
}
