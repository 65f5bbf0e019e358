//! Crash trials of the real binary (issue 11, part 4): `puppet-conductor run` against moto
//! and the real Puppet CA, each behind a fault proxy of the project's own, SIGKILLed at
//! seeded random points while a batch of nodes is created and deleted, restarted each
//! time; the invariants are checked from outside (moto's EC2 and S3, the CA) during the
//! run and at its end. See docs/reliability.md.
//!
//! `PC_CRASH_SEED` (default 1; it draws the driver's schedule, not the processes' timing)
//! and `PC_CRASH_KILLS` (default 50).
//! Needs `tests/services/up.sh`; skipped without it unless `PC_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../simulation/agents.rs"]
#[allow(dead_code)] // The simulation's hostile CSRs are not drawn here.
mod agents;
mod apiserver;
mod apiserver_tests;
mod invariants;
mod invariants_tests;
mod operator;
mod proxy;
#[path = "../integration/common/services.rs"]
#[allow(dead_code)] // The agent runner of the end-to-end tests is not used here.
mod services;
mod trial;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_trials_of_the_real_binary() {
    let Some(svc) = services::Services::from_env() else {
        return;
    };
    let seed = env_u64("PC_CRASH_SEED").unwrap_or(1);
    let kills = env_u64("PC_CRASH_KILLS").unwrap_or(50) as usize;
    let report = trial::run(&svc, &trial::Config { seed, kills })
        .await
        .unwrap_or_else(|e| panic!("crash trials could not run (seed {seed}): {e}"));
    let r = &report;
    eprintln!(
        "crash trials: seed {}, {} kills, {} nodes, {} launches, {} violations, {:.1} s",
        r.seed,
        r.kills,
        r.nodes,
        r.launches,
        r.violations.len(),
        r.secs
    );
    eprintln!(
        "  {} nodes launched, {} incarnations ({} replacements), {} CSRs sent by agents, \
         {} certnames seen signed, {} late CSRs; {} polls ({} failed reads)\n  moto proxy: {}\n  \
         CA proxy: {}\n  operator log: {}\n  driver trace: {}",
        r.nodes_launched,
        r.incarnations,
        r.replacements,
        r.csrs,
        r.signed,
        r.late_csrs,
        r.polls,
        r.poll_errors,
        r.moto,
        r.ca,
        r.log.display(),
        r.trace.display()
    );
    if !r.violations.is_empty() {
        let list: Vec<String> = r
            .violations
            .iter()
            .enumerate()
            .map(|(i, v)| format!("  {}. {v}", i + 1))
            .collect();
        // The violations go before the log tail: CI shows the head of a long output.
        eprintln!("violations:\n{}", list.join("\n"));
        eprintln!("operator log, last lines:\n{}", r.log_tail);
        panic!(
            "crash trials (seed {seed}) found {} violation(s):\n{}\nrerun the schedule: PC_CRASH_SEED={seed} cargo test --test crash -- --nocapture",
            r.violations.len(),
            list.join("\n")
        );
    }
}
