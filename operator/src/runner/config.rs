//! `puppet-conductor run`'s settings: flags or environment, parsed once at start.

use std::net::SocketAddr;
use std::time::Duration;

use crate::controller::context::{NodeSettings, Scope};
use crate::leader::LeaseSettings;
use crate::telemetry::LogFormat;

use super::RunError;

/// Flags of `puppet-conductor run` (each also read from the environment variable named).
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Name of this operator installation, written into every tag and record it owns.
    #[arg(long, env = "PC_OPERATOR_ID", default_value = "default")]
    pub operator_id: String,
    /// Manage only objects in this namespace (all namespaces when unset).
    #[arg(long, env = "PC_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Manage only PuppetMasters and PuppetNodes matching this label selector (sharding).
    #[arg(long, env = "PC_LABEL_SELECTOR")]
    pub label_selector: Option<String>,
    /// Most reconciles running at once, per kind.
    #[arg(long, env = "PC_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Run only while holding the Lease (several replicas, one active).
    #[arg(long, env = "PC_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "PC_LEASE_NAME", default_value = "puppet-conductor")]
    pub lease_name: String,
    /// Namespace of the Lease (defaults to the pod's namespace).
    #[arg(long, env = "PC_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// The pod's namespace (downward API).
    #[arg(long, env = "POD_NAMESPACE", hide = true)]
    pub pod_namespace: Option<String>,
    /// Identity in the election (defaults to the pod name, then the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "PC_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "PC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// Requeue interval of a converged node (level-triggered resync), e.g. `5m`.
    #[arg(long, env = "PC_RESYNC", default_value = "5m")]
    pub resync: String,
    /// Requeue interval of a healthy master (probes, counts, orphan sweep), e.g. `1m`.
    #[arg(long, env = "PC_MASTER_RESYNC", default_value = "1m")]
    pub master_resync: String,
    /// Timeout of each cloud, records or CA call, e.g. `20s`.
    #[arg(long, env = "PC_CALL_TIMEOUT", default_value = "20s")]
    pub call_timeout: String,
}

/// Everything `run` needs, validated.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Controller settings (shared with the reconcilers through the context).
    pub settings: NodeSettings,
    /// Reconciles at once, per kind.
    pub concurrency: u16,
    /// Lease settings when leader election is on.
    pub lease: Option<LeaseSettings>,
    /// HTTP server address.
    pub http_addr: SocketAddr,
    /// Timeout of each external call.
    pub call_timeout: Duration,
    /// Identity of this replica (events' reporting instance, Lease holder).
    pub identity: String,
}

/// A flag's Go-style duration, parsed as the CRDs' are (kube's `Duration`); empty or
/// negative is refused.
fn duration(flag: &'static str, text: &str) -> Result<Duration, RunError> {
    text.parse::<kube::core::Duration>()
        .ok()
        .filter(|d| !text.trim().is_empty() && !d.is_negative())
        .map(Duration::from)
        .ok_or_else(|| {
            RunError::Config(format!(
                "--{flag} {text:?} is not a duration like 30s, 5m or 1h"
            ))
        })
}

impl RunConfig {
    /// Validates the flags.
    pub fn from_args(args: &RunArgs) -> Result<Self, RunError> {
        let identity = args
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("puppet-conductor-{}", std::process::id()));
        let lease = if args.leader_election {
            let namespace = args
                .lease_namespace
                .clone()
                .or_else(|| args.pod_namespace.clone())
                .ok_or_else(|| {
                    RunError::Config(
                        "leader election needs --lease-namespace or POD_NAMESPACE (or --leader-election=false)".to_string(),
                    )
                })?;
            Some(LeaseSettings::new(&args.lease_name, &namespace, &identity))
        } else {
            None
        };
        if args.concurrency == 0 {
            return Err(RunError::Config(
                "--concurrency must be at least 1".to_string(),
            ));
        }
        let settings = NodeSettings {
            operator_id: args.operator_id.clone(),
            resync: duration("resync", &args.resync)?,
            master_resync: duration("master-resync", &args.master_resync)?,
            scope: Scope {
                namespace: args.watch_namespace.clone().filter(|s| !s.is_empty()),
                label_selector: args.label_selector.clone().filter(|s| !s.is_empty()),
            },
            ..NodeSettings::default()
        };
        Ok(Self {
            settings,
            concurrency: args.concurrency,
            lease,
            http_addr: args.http_addr,
            call_timeout: duration("call-timeout", &args.call_timeout)?,
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunConfig, RunError> {
        let cli = Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied())).unwrap();
        RunConfig::from_args(&cli.run)
    }

    #[test]
    fn scope_and_lease_come_from_flags() {
        let c = parse(&[
            "--watch-namespace",
            "team-a",
            "--label-selector",
            "shard=1",
            "--lease-namespace",
            "ops",
            "--identity",
            "pod-0",
            "--resync",
            "2m",
        ])
        .unwrap();
        assert_eq!(c.settings.scope.namespace.as_deref(), Some("team-a"));
        assert_eq!(c.settings.scope.label_selector.as_deref(), Some("shard=1"));
        let lease = c.lease.unwrap();
        assert_eq!(
            (lease.namespace.as_str(), lease.identity.as_str()),
            ("ops", "pod-0")
        );
        assert_eq!(c.settings.resync, Duration::from_secs(120));
    }

    #[test]
    fn leader_election_without_a_namespace_is_a_clear_error() {
        let error = parse(&["--identity", "x"]).err().unwrap();
        assert!(error.to_string().contains("POD_NAMESPACE"), "{error}");
    }

    #[test]
    fn leader_election_can_be_turned_off() {
        let c = parse(&["--leader-election", "false"]).unwrap();
        assert!(c.lease.is_none());
    }

    #[test]
    fn a_bad_duration_is_rejected() {
        let error = parse(&["--leader-election", "false", "--resync", "soon"])
            .err()
            .unwrap();
        assert!(error.to_string().contains("--resync"), "{error}");
        for bad in ["", "10", "s", "5d", "-5s"] {
            let flag = format!("--resync={bad}");
            let error = parse(&["--leader-election", "false", &flag])
                .err()
                .unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert!(error.to_string().contains("--resync"), "{error}");
        }
        for (good, seconds) in [
            ("1m30s", 90.0),
            ("1.5s", 1.5),
            ("500ms", 0.5),
            ("2h", 7200.0),
        ] {
            let c = parse(&["--leader-election", "false", "--resync", good]).unwrap();
            assert_eq!(c.settings.resync.as_secs_f64(), seconds, "{good}");
        }
    }
}
