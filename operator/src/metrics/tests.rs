use std::collections::BTreeMap;
use std::time::Duration;

use super::Metrics;

fn encoded(metrics: &Metrics) -> String {
    metrics.encode().unwrap()
}

#[track_caller]
fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing line `{line}` in:\n{text}"
    );
}

#[track_caller]
fn assert_no_line_starting(text: &str, prefix: &str) {
    assert!(
        !text.lines().any(|l| l.starts_with(prefix)),
        "unexpected `{prefix}...` in:\n{text}"
    );
}

#[test]
fn reconciles_count_time_and_categorise_errors() {
    let m = Metrics::new();
    m.count_reconcile("PuppetNode", Duration::from_millis(30), None);
    m.count_reconcile("PuppetNode", Duration::from_millis(700), Some("cloud"));
    m.count_reconcile("PuppetMaster", Duration::from_millis(5), None);
    let text = encoded(&m);
    assert_line(
        &text,
        r#"puppet_conductor_reconciles_total{kind="PuppetNode"} 2"#,
    );
    assert_line(
        &text,
        r#"puppet_conductor_reconciles_total{kind="PuppetMaster"} 1"#,
    );
    assert_line(
        &text,
        r#"puppet_conductor_reconcile_errors_total{kind="PuppetNode",category="cloud"} 1"#,
    );
    assert_no_line_starting(
        &text,
        r#"puppet_conductor_reconcile_errors_total{kind="PuppetMaster""#,
    );
    assert_line(
        &text,
        r#"puppet_conductor_reconcile_duration_seconds_count{kind="PuppetNode"} 2"#,
    );
    assert_line(
        &text,
        r#"puppet_conductor_reconcile_duration_seconds_bucket{le="0.05",kind="PuppetNode"} 1"#,
    );
    assert_line(
        &text,
        r#"puppet_conductor_reconcile_duration_seconds_bucket{le="1.0",kind="PuppetNode"} 2"#,
    );
    assert_line(
        &text,
        "# UNIT puppet_conductor_reconcile_duration_seconds seconds",
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn external_calls_by_outcome() {
    let m = Metrics::new();
    m.count_call("ec2", "launch", "ok", Duration::from_millis(200));
    m.count_call("ec2", "launch", "throttled", Duration::from_millis(50));
    m.count_call("ec2", "launch", "ok", Duration::from_millis(100));
    let text = encoded(&m);
    assert_line(
        &text,
        r#"puppet_conductor_external_calls_total{service="ec2",operation="launch",outcome="ok"} 2"#,
    );
    assert_line(
        &text,
        r#"puppet_conductor_external_calls_total{service="ec2",operation="launch",outcome="throttled"} 1"#,
    );
    assert_line(
        &text,
        r#"puppet_conductor_external_call_duration_seconds_count{service="ec2",operation="launch"} 3"#,
    );
}

#[test]
fn phases_that_empty_drop_to_zero() {
    let m = Metrics::new();
    let counts = |pairs: &[(&str, i32)]| -> BTreeMap<String, i32> {
        pairs.iter().map(|(p, n)| (p.to_string(), *n)).collect()
    };
    m.set_nodes_by_phase("m1", &counts(&[("Launching", 2), ("Ready", 3)]));
    m.set_nodes_by_phase("m2", &counts(&[("Launching", 1)]));
    m.set_nodes_by_phase("m1", &counts(&[("Ready", 5)]));
    let text = encoded(&m);
    assert_line(
        &text,
        r#"puppet_conductor_nodes{master="m1",phase="Launching"} 0"#,
    );
    assert_line(
        &text,
        r#"puppet_conductor_nodes{master="m1",phase="Ready"} 5"#,
    );
    // Another master's phases are its own.
    assert_line(
        &text,
        r#"puppet_conductor_nodes{master="m2",phase="Launching"} 1"#,
    );
    assert_no_line_starting(
        &text,
        r#"puppet_conductor_nodes{master="m2",phase="Ready"}"#,
    );
}

#[test]
fn csr_ages_lifecycle_orphans_and_leader() {
    let m = Metrics::new();
    m.set_oldest_pending_csr_age("m1", 42.5);
    m.observe_pending_csr_age(3.0);
    m.observe_pending_csr_age(400.0);
    m.observe_launch_to_signed(75.0);
    m.observe_launch_to_first_check_in(2000.0);
    m.count_orphans("m1", "instance", "terminate");
    m.count_orphans("m1", "instance", "terminate");
    m.count_orphans("m1", "record", "ignore");
    m.set_orphans_left("m1", &[("instance", 0), ("record", 3)]);
    m.set_leader(true);
    let text = encoded(&m);
    for line in [
        r#"puppet_conductor_pending_csr_oldest_age_seconds{master="m1"} 42.5"#,
        "puppet_conductor_pending_csr_age_seconds_count 2",
        "puppet_conductor_pending_csr_age_seconds_sum 403.0",
        r#"puppet_conductor_launch_to_signed_seconds_bucket{le="60.0"} 0"#,
        r#"puppet_conductor_launch_to_signed_seconds_bucket{le="90.0"} 1"#,
        // Beyond the last bucket (30 min) only +Inf counts it.
        r#"puppet_conductor_launch_to_first_check_in_seconds_bucket{le="1800.0"} 0"#,
        r#"puppet_conductor_launch_to_first_check_in_seconds_bucket{le="+Inf"} 1"#,
        r#"puppet_conductor_orphans_total{master="m1",kind="instance",action="terminate"} 2"#,
        r#"puppet_conductor_orphans_total{master="m1",kind="record",action="ignore"} 1"#,
        r#"puppet_conductor_orphans_left{master="m1",kind="record"} 3"#,
        r#"puppet_conductor_orphans_left{master="m1",kind="instance"} 0"#,
    ] {
        assert_line(&text, line);
    }
    assert_line(&text, "puppet_conductor_leader 1");
    m.set_leader(false);
    assert_line(&encoded(&m), "puppet_conductor_leader 0");
}

#[test]
fn recording_is_shared_across_threads() {
    let m = std::sync::Arc::new(Metrics::default());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    m.count_reconcile("PuppetNode", Duration::from_millis(1), None);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_line(
        &encoded(&m),
        r#"puppet_conductor_reconciles_total{kind="PuppetNode"} 100"#,
    );
}
