//! `puppet-conductor run` as a child process that the trial SIGKILLs and restarts; every
//! start appends to one log file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// The operator binary: `PUPPET_CONDUCTOR_BIN`, else the one cargo built for this test.
pub fn binary() -> PathBuf {
    std::env::var_os("PUPPET_CONDUCTOR_BIN")
        .filter(|p| !p.is_empty())
        .map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_puppet-conductor")),
            PathBuf::from,
        )
}

/// A free loopback port for /metrics (a fresh one per start: no waiting on the old one).
fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or_else(|_| "127.0.0.1:0".to_string(), |a| a.to_string())
}

pub struct Operator {
    bin: PathBuf,
    kubeconfig: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    child: Option<tokio::process::Child>,
    /// Starts so far.
    pub starts: usize,
}

impl Operator {
    /// Not started yet; `args` follow `run`.
    pub fn new(kubeconfig: &Path, log: &Path, args: Vec<String>) -> Self {
        Self {
            bin: binary(),
            kubeconfig: kubeconfig.to_path_buf(),
            log: log.to_path_buf(),
            args,
            child: None,
            starts: 0,
        }
    }

    /// Starts the process (its output appended to the log).
    pub fn start(&mut self) -> Result<(), String> {
        self.starts += 1;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let _ = writeln!(out, "=== crash trials: start {}", self.starts);
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = tokio::process::Command::new(&self.bin)
            .arg("run")
            .args(&self.args)
            .args(["--http-addr", &free_addr()])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,puppet_conductor=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether (and how) the process ended by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM, as Kubernetes stops a pod: `Err` unless it exits cleanly within 30 s.
    pub async fn terminate(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("the operator exited with {status} on SIGTERM")),
            _ => {
                let _ = child.kill().await;
                Err("the operator ignored SIGTERM for 30 s".to_string())
            }
        }
    }

    /// The last `lines` lines of the log.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }
}
