//! The fake's behaviours one by one, on a paused tokio clock (time moves only by
//! `advance`), so every state change is at an exact instant.

use std::collections::BTreeMap;

use tokio::time::advance;

use super::region::{filter_matches, well_formed};
use super::*;
use puppet_conductor_cloud::{InstanceSettings, InstanceState};

const MASTER: &str = "ns/m";

fn scripted() -> (Arc<Faults>, FakeEc2) {
    let faults = Arc::new(Faults::default());
    let fake = FakeEc2::new(faults.clone());
    (faults, fake)
}

/// A request tagged as the reconciler tags one, with its own client token.
fn request(master: &str, node: &str) -> LaunchRequest {
    let tags: BTreeMap<String, String> = [
        (tags::MASTER, master.to_owned()),
        (tags::NODE, node.to_owned()),
        (tags::CERTNAME, format!("{}.test", node.replace('/', "-"))),
        (tags::NODE_UID, format!("uid-{node}")),
        (tags::INCARNATION, "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    LaunchRequest {
        instance: InstanceSettings::new("ami-12c6146b", "t3.micro"),
        tags,
        user_data: format!("#cloud-config\n# {node}\n"),
        client_token: format!("uid-{node}-1"),
    }
}

async fn states(fake: &FakeEc2, master: &str) -> Vec<(String, InstanceState)> {
    let found = fake.describe_master_instances(master).await.unwrap();
    found.into_iter().map(|i| (i.id, i.state)).collect()
}

fn id(n: u64) -> String {
    format!("i-{n:017x}")
}

#[tokio::test(start_paused = true)]
async fn launch_answers_pending_and_describe_shows_every_field() {
    let epoch = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let fake = FakeEc2::default().with_epoch(epoch);
    let r = request(MASTER, "ns/a");
    let launched = fake.launch(&r).await.unwrap();
    assert_eq!(
        launched.state,
        InstanceState::Pending,
        "as EC2 answers RunInstances"
    );
    let found = fake.describe_master_instances(MASTER).await.unwrap();
    let expected = Instance {
        id: "i-00000000000000001".into(),
        state: InstanceState::Running,
        tags: r.tags.clone(),
        private_ip: Some("10.0.0.1".into()),
        public_ip: Some("203.0.113.2".into()),
        zone: Some(DEFAULT_ZONE.into()),
        launch_time: Some(epoch),
        image_id: Some("ami-12c6146b".into()),
        instance_type: Some("t3.micro".into()),
        subnet_id: Some(DEFAULT_SUBNET_ID.into()),
        security_group_ids: vec![],
        http_tokens: Some("required".into()),
    };
    assert_eq!(found, vec![expected.clone()]);
    assert_eq!(
        launched,
        Instance {
            state: InstanceState::Pending,
            ..expected
        }
    );

    let mut in_subnet = request(MASTER, "ns/b");
    in_subnet.instance.subnet_id = Some("subnet-0123456789abcdef0".into());
    in_subnet.instance.security_group_ids = vec!["sg-1".into()];
    in_subnet.instance.imdsv2_required = false;
    let other = FakeEc2::default()
        .with_zone("eu-west-1b")
        .launch(&in_subnet)
        .await
        .unwrap();
    assert_eq!(other.subnet_id.as_deref(), Some("subnet-0123456789abcdef0"));
    assert_eq!(
        other.public_ip, None,
        "no public address outside the default subnet"
    );
    assert_eq!(other.security_group_ids, ["sg-1"]);
    assert_eq!(other.zone.as_deref(), Some("eu-west-1b"));
    assert_eq!(other.http_tokens.as_deref(), Some("optional"));
}

#[tokio::test(start_paused = true)]
async fn ids_count_up_in_the_ec2_format_and_launch_times_follow_tokio_time() {
    let epoch = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let fake = FakeEc2::default().with_epoch(epoch);
    for n in 1..=3 {
        advance(Duration::from_secs(90)).await;
        let launched = fake
            .launch(&request(MASTER, &format!("ns/{n}")))
            .await
            .unwrap();
        assert_eq!(launched.id, id(n));
        assert!(well_formed(&launched.id), "{}", launched.id);
        assert_eq!(launched.id.len(), 19);
        let elapsed = chrono::TimeDelta::seconds(90 * i64::try_from(n).unwrap());
        assert_eq!(launched.launch_time, Some(epoch + elapsed));
    }
}

#[tokio::test(start_paused = true)]
async fn describe_filters_like_ec2_then_keeps_only_the_exact_master() {
    let fake = FakeEc2::default();
    for master in ["ns/m1", "ns/m?", "ns/m2", "other/m1"] {
        fake.launch(&request(master, &format!("{master}/n")))
            .await
            .unwrap();
    }
    // EC2 matches `ns/m?` as a pattern (three instances); the client keeps one.
    let found = states(&fake, "ns/m?").await;
    assert_eq!(found, [(id(2), InstanceState::Running)]);
    assert_eq!(
        states(&fake, "ns/m1").await,
        [(id(1), InstanceState::Running)]
    );
    assert!(states(&fake, "ns/nobody").await.is_empty());
}

#[test]
fn filter_values_are_ec2_patterns() {
    let cases = [
        ("ns/m", "ns/m", true),
        ("ns/m", "ns/mm", false),
        ("ns/m", "ns/", false),
        ("ns/*", "ns/x/y", true),
        ("n?/m", "ns/m", true),
        ("n?/m", "n/m", false),
        ("a\\*b", "a*b", true),
        ("a\\*b", "axb", false),
        ("a\\?", "a?", true),
        ("*", "", true),
        ("", "", true),
        ("", "a", false),
        ("a*c", "abbbc", true),
        ("a*c", "abbb", false),
        ("*a*b", "xxaxxb", true),
        ("**", "é", true),
    ];
    for (pattern, value, expected) in cases {
        assert_eq!(
            filter_matches(pattern, value),
            expected,
            "{pattern:?} {value:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn boot_time_keeps_new_instances_pending() {
    let fake = FakeEc2::default().with_boot_time(Duration::from_secs(30));
    fake.launch(&request(MASTER, "ns/a")).await.unwrap();
    assert_eq!(
        states(&fake, MASTER).await,
        [(id(1), InstanceState::Pending)]
    );
    advance(Duration::from_secs(29)).await;
    assert_eq!(
        states(&fake, MASTER).await,
        [(id(1), InstanceState::Pending)]
    );
    advance(Duration::from_secs(1)).await;
    assert_eq!(
        states(&fake, MASTER).await,
        [(id(1), InstanceState::Running)]
    );
}

#[tokio::test(start_paused = true)]
async fn terminated_instances_shut_down_then_stay_listed_for_the_retention() {
    let fake = FakeEc2::default()
        .with_boot_time(Duration::from_secs(30))
        .with_shutdown_time(Duration::from_secs(10))
        .with_terminated_retention(Duration::from_secs(60));
    fake.launch(&request(MASTER, "ns/a")).await.unwrap();
    // Terminating a pending instance goes straight to shutting-down.
    fake.terminate(&[id(1)]).await.unwrap();
    assert_eq!(
        states(&fake, MASTER).await,
        [(id(1), InstanceState::ShuttingDown)]
    );
    advance(Duration::from_secs(10)).await;
    assert_eq!(
        states(&fake, MASTER).await,
        [(id(1), InstanceState::Terminated)]
    );
    advance(Duration::from_secs(59)).await;
    assert_eq!(
        states(&fake, MASTER).await,
        [(id(1), InstanceState::Terminated)]
    );
    advance(Duration::from_secs(1)).await;
    assert!(states(&fake, MASTER).await.is_empty(), "vanished");
    let truth = fake.instances();
    assert_eq!(truth.len(), 1);
    assert_eq!(truth[0].instance.state, InstanceState::Terminated);
    assert!(!truth[0].listed);
    // EC2 no longer knows the id: not found, which terminate takes as done.
    fake.terminate(&[id(1)]).await.unwrap();
    assert_eq!(fake.calls().terminate, 2);
}

#[tokio::test(start_paused = true)]
async fn visibility_lag_hides_new_instances_and_shows_old_states() {
    let fake = FakeEc2::default().with_visibility_lag(Duration::from_secs(5));
    fake.launch(&request(MASTER, "ns/a")).await.unwrap();
    assert!(states(&fake, MASTER).await.is_empty());
    assert!(fake.instances()[0].listed, "the truth does not lag");
    advance(Duration::from_secs(5)).await;
    assert_eq!(
        states(&fake, MASTER).await,
        [(id(1), InstanceState::Running)]
    );
    fake.terminate(&[id(1)]).await.unwrap();
    assert_eq!(
        states(&fake, MASTER).await,
        [(id(1), InstanceState::Running)]
    );
    assert_eq!(
        fake.instances()[0].instance.state,
        InstanceState::Terminated
    );
    advance(Duration::from_secs(5)).await;
    assert_eq!(
        states(&fake, MASTER).await,
        [(id(1), InstanceState::Terminated)]
    );
}

#[tokio::test(start_paused = true)]
async fn terminating_an_instance_not_visible_yet_is_not_found_and_spares_it() {
    let fake = FakeEc2::default().with_visibility_lag(Duration::from_secs(5));
    fake.launch(&request(MASTER, "ns/a")).await.unwrap();
    // The client takes InvalidInstanceID.NotFound as success: a hazard EC2 has too.
    fake.terminate(&[id(1)]).await.unwrap();
    assert_eq!(fake.calls().terminate, 1);
    assert_eq!(fake.instances()[0].instance.state, InstanceState::Running);
}

#[tokio::test(start_paused = true)]
async fn same_client_token_and_request_return_the_same_instance() {
    let fake = FakeEc2::default().with_boot_time(Duration::from_secs(30));
    let r = request(MASTER, "ns/a");
    let first = fake.launch(&r).await.unwrap();
    advance(Duration::from_secs(30)).await;
    let again = fake.launch(&r).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(
        again.state,
        InstanceState::Running,
        "only the state is current"
    );
    assert_eq!(fake.instances().len(), 1);
    assert_eq!(fake.calls().run, 2);
}

#[tokio::test(start_paused = true)]
async fn same_client_token_with_other_parameters_is_idempotent_parameter_mismatch() {
    let fake = FakeEc2::default();
    let r = request(MASTER, "ns/a");
    fake.launch(&r).await.unwrap();
    let changes: [fn(&mut LaunchRequest); 4] = [
        |r| r.instance.instance_type = "t3.large".into(),
        |r| r.user_data.push('x'),
        |r| {
            r.tags.insert(tags::INCARNATION.into(), "2".into());
        },
        |r| r.instance.imdsv2_required = false,
    ];
    for (i, change) in changes.iter().enumerate() {
        let mut other = r.clone();
        change(&mut other);
        let e = fake.launch(&other).await.unwrap_err();
        assert_eq!(e.code(), Some("IdempotentParameterMismatch"), "case {i}");
        assert_eq!(e.category(), "conflict", "case {i}");
        assert!(!e.is_retryable(), "case {i}");
        assert_eq!(e.http_status(), Some(400), "case {i}");
        let CloudError::Api { request_id, .. } = &e else {
            panic!("{e:?}")
        };
        assert!(request_id.is_some());
    }
    assert_eq!(fake.instances().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn client_tokens_outlive_termination_then_expire_with_the_instance() {
    let fake = FakeEc2::default().with_terminated_retention(Duration::from_secs(60));
    let r = request(MASTER, "ns/a");
    fake.launch(&r).await.unwrap();
    fake.terminate(&[id(1)]).await.unwrap();
    advance(Duration::from_secs(61)).await;
    assert!(states(&fake, MASTER).await.is_empty());
    let again = fake.launch(&r).await.unwrap();
    assert_eq!(
        (again.id.as_str(), again.state),
        (id(1).as_str(), InstanceState::Terminated)
    );

    advance(TOKEN_RETENTION).await;
    assert!(
        fake.instances().is_empty(),
        "forgotten once its token expired"
    );
    let relaunched = fake.launch(&r).await.unwrap();
    assert_eq!(relaunched.id, id(2));
}

#[tokio::test(start_paused = true)]
async fn lose_state_empties_the_region_and_never_reuses_ids() {
    let fake = FakeEc2::default();
    let r = request(MASTER, "ns/a");
    fake.launch(&r).await.unwrap();
    fake.launch(&request(MASTER, "ns/b")).await.unwrap();
    fake.lose_state();
    assert!(fake.instances().is_empty());
    assert!(states(&fake, MASTER).await.is_empty());
    assert_eq!(
        fake.launch(&r).await.unwrap().id,
        id(3),
        "the token is forgotten too"
    );
}

#[tokio::test(start_paused = true)]
async fn describe_follows_pages_of_the_configured_size() {
    let fake = FakeEc2::default().with_page_size(5);
    let mut mine = Vec::new();
    for n in 0..11 {
        mine.push(
            fake.launch(&request(MASTER, &format!("ns/{n}")))
                .await
                .unwrap()
                .id,
        );
        if n % 4 == 0 {
            fake.launch(&request("ns/other", &format!("ns/o{n}")))
                .await
                .unwrap();
        }
    }
    let found = fake.describe_master_instances(MASTER).await.unwrap();
    assert_eq!(found.into_iter().map(|i| i.id).collect::<Vec<_>>(), mine);
    assert_eq!(fake.pages_served(), 3);
    assert_eq!(fake.calls().describe, 3);

    // No empty page after an exact fit; page sizes are clamped like the real client's.
    let exact = FakeEc2::default().with_page_size(1);
    for n in 0..10 {
        exact
            .launch(&request(MASTER, &format!("ns/{n}")))
            .await
            .unwrap();
    }
    assert_eq!(
        exact.describe_master_instances(MASTER).await.unwrap().len(),
        10
    );
    assert_eq!(exact.pages_served(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_page_fails_the_whole_describe() {
    let (faults, fake) = scripted();
    let fake = fake.with_page_size(5);
    for n in 0..6 {
        fake.launch(&request(MASTER, &format!("ns/{n}")))
            .await
            .unwrap();
    }
    faults.next(System::Ec2, Some("DescribeInstances"), Fate::Answer);
    faults.next(
        System::Ec2,
        Some("DescribeInstances"),
        Fate::Fail(FaultKind::Throttled),
    );
    let e = fake.describe_master_instances(MASTER).await.unwrap_err();
    assert_eq!(e.category(), "throttled");
    assert_eq!(fake.pages_served(), 1);
    assert_eq!(fake.calls().describe, 2);
}

#[tokio::test(start_paused = true)]
async fn failed_calls_are_not_applied_and_classify_like_the_real_clients() {
    let cases = [
        (
            FaultKind::Unavailable,
            "unavailable",
            true,
            Some("Unavailable"),
            Some(503),
        ),
        (
            FaultKind::Throttled,
            "throttled",
            true,
            Some("RequestLimitExceeded"),
            Some(503),
        ),
        (
            FaultKind::Denied,
            "auth",
            false,
            Some("AuthFailure"),
            Some(401),
        ),
        (FaultKind::Timeout, "timeout", true, None, None),
    ];
    for (kind, category, retryable, code, status) in cases {
        let (faults, fake) = scripted();
        let check = |e: CloudError, op: &str| {
            assert_eq!(e.category(), category, "{kind:?} {op}");
            assert_eq!(e.is_retryable(), retryable, "{kind:?} {op}");
            assert_eq!(e.code(), code, "{kind:?} {op}");
            assert_eq!(e.http_status(), status, "{kind:?} {op}");
        };
        faults.next(System::Ec2, Some("RunInstances"), Fate::Fail(kind));
        check(
            fake.launch(&request(MASTER, "ns/a")).await.unwrap_err(),
            "launch",
        );
        assert!(fake.instances().is_empty(), "{kind:?}: launched anyway");

        fake.launch(&request(MASTER, "ns/a")).await.unwrap();
        faults.next(System::Ec2, Some("TerminateInstances"), Fate::Fail(kind));
        check(fake.terminate(&[id(1)]).await.unwrap_err(), "terminate");
        assert_eq!(fake.instances()[0].instance.state, InstanceState::Running);

        faults.next(System::Ec2, Some("DescribeInstances"), Fate::Fail(kind));
        check(
            fake.describe_master_instances(MASTER).await.unwrap_err(),
            "describe",
        );
        faults.next(System::Ec2, Some("DescribeInstances"), Fate::Fail(kind));
        check(fake.probe().await.unwrap_err(), "probe");
        fake.probe().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_launch_is_applied_and_its_retry_finds_the_instance() {
    let (faults, fake) = scripted();
    let r = request(MASTER, "ns/a");
    faults.next(System::Ec2, Some("RunInstances"), Fate::Lost);
    let e = fake.launch(&r).await.unwrap_err();
    assert!(
        matches!(
            e,
            CloudError::Timeout {
                operation: "RunInstances",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        fake.instances().len(),
        1,
        "applied although the answer was lost"
    );
    assert_eq!(fake.launch(&r).await.unwrap().id, id(1));
    assert_eq!(fake.instances().len(), 1);
    assert_eq!(fake.calls().run, 2);
}

#[tokio::test(start_paused = true)]
async fn a_lost_terminate_is_applied() {
    let (faults, fake) = scripted();
    fake.launch(&request(MASTER, "ns/a")).await.unwrap();
    faults.next(System::Ec2, Some("TerminateInstances"), Fate::Lost);
    let e = fake.terminate(&[id(1)]).await.unwrap_err();
    assert_eq!(e.category(), "timeout");
    assert_eq!(
        fake.instances()[0].instance.state,
        InstanceState::Terminated
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_wait_the_call_timeout_only_when_asked() {
    for (wait, waited) in [(false, Duration::ZERO), (true, Duration::from_secs(7))] {
        let (faults, fake) = scripted();
        let fake = fake
            .with_call_timeout(Duration::from_secs(7))
            .with_timeout_wait(wait);
        faults.next(System::Ec2, None, Fate::Fail(FaultKind::Timeout));
        faults.next(System::Ec2, None, Fate::Lost);
        for _ in 0..2 {
            let start = Instant::now();
            let e = fake.probe().await.unwrap_err();
            assert_eq!(start.elapsed(), waited, "wait: {wait}");
            let CloudError::Timeout { timeout, .. } = e else {
                panic!("{e:?}")
            };
            assert_eq!(timeout, Duration::from_secs(7));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn every_call_goes_through_the_gate_and_is_counted() {
    let (faults, fake) = scripted();
    fake.launch(&request(MASTER, "ns/a")).await.unwrap();
    fake.describe_master_instances(MASTER).await.unwrap();
    fake.terminate(&[id(1)]).await.unwrap();
    fake.probe().await.unwrap();
    let log: Vec<(&str, String)> = faults
        .log()
        .into_iter()
        .map(|(call, fate)| {
            assert_eq!((call.system, fate), (System::Ec2, Fate::Answer));
            (call.operation, call.target)
        })
        .collect();
    assert_eq!(
        log,
        [
            ("RunInstances", "ns-a.test".to_owned()),
            ("DescribeInstances", MASTER.to_owned()),
            ("TerminateInstances", id(1)),
            ("DescribeInstances", "probe".to_owned()),
        ]
    );
    let expected = CallCounts {
        describe: 2,
        run: 1,
        terminate: 1,
        other: 0,
    };
    assert_eq!(fake.calls(), expected);
    assert_eq!(fake.pages_served(), 1, "the probe is not a page");
}

#[tokio::test(start_paused = true)]
async fn terminate_tolerates_unknown_and_malformed_ids_as_the_real_client_does() {
    let fake = FakeEc2::default();
    let a = fake.launch(&request(MASTER, "ns/a")).await.unwrap().id;
    let b = fake.launch(&request(MASTER, "ns/b")).await.unwrap().id;
    let unknown = "i-0123456789abcdef0".to_owned();
    let mut calls = 0;
    let mut expect = |fake: &FakeEc2, more: u64, what: &str| {
        calls += more;
        assert_eq!(fake.calls().terminate, calls, "{what}");
    };

    fake.terminate(&[]).await.unwrap();
    expect(&fake, 0, "nothing to terminate");
    fake.terminate(std::slice::from_ref(&unknown))
        .await
        .unwrap();
    expect(&fake, 1, "unknown");
    fake.terminate(&["bogus".to_owned()]).await.unwrap();
    expect(&fake, 1, "malformed");
    fake.terminate(&[a.clone(), unknown.clone()]).await.unwrap();
    expect(
        &fake,
        2,
        "mixed: refused, then repeated without the unknown id",
    );
    fake.terminate(&[b.clone(), "bogus".into(), String::new(), b.clone()])
        .await
        .unwrap();
    expect(&fake, 2, "malformed beside a real one");
    fake.terminate(std::slice::from_ref(&a)).await.unwrap();
    expect(&fake, 1, "already terminated");
    for i in fake.instances() {
        assert_eq!(
            i.instance.state,
            InstanceState::Terminated,
            "{}",
            i.instance.id
        );
    }
}

#[tokio::test(start_paused = true)]
async fn terminate_sends_batches_of_200() {
    let fake = FakeEc2::default();
    let mut ids = Vec::new();
    for n in 0..201 {
        ids.push(
            fake.launch(&request(MASTER, &format!("ns/{n}")))
                .await
                .unwrap()
                .id,
        );
    }
    fake.terminate(&ids).await.unwrap();
    assert_eq!(fake.calls().terminate, 2);
    assert!(fake
        .instances()
        .iter()
        .all(|i| i.instance.state == InstanceState::Terminated));
}

#[tokio::test(start_paused = true)]
async fn invalid_requests_are_refused_before_anything_is_sent() {
    let (faults, fake) = scripted();
    let breakers: [fn(&mut LaunchRequest); 5] = [
        |r| r.instance.image_id = " ".into(),
        |r| r.instance.instance_type.clear(),
        |r| r.user_data = "x".repeat(MAX_USER_DATA_BYTES + 1),
        |r| r.client_token = "t".repeat(MAX_CLIENT_TOKEN_CHARS + 1),
        |r| {
            r.tags.insert("aws:x".into(), String::new());
        },
    ];
    for (i, breaker) in breakers.iter().enumerate() {
        let mut r = request(MASTER, "ns/a");
        breaker(&mut r);
        let e = fake.launch(&r).await.unwrap_err();
        assert_eq!(e.category(), "invalid_request", "case {i}");
    }
    assert_eq!(fake.calls(), CallCounts::default());
    assert!(faults.log().is_empty());
}

#[tokio::test(start_paused = true)]
async fn ground_truth_accessors_bypass_the_gate() {
    let (faults, fake) = scripted();
    let r = request(MASTER, "ns/a");
    fake.launch(&r).await.unwrap();
    faults.outage(System::Ec2, FaultKind::Unavailable);
    assert_eq!(fake.user_data(&id(1)), Some(r.user_data.clone()));
    assert_eq!(fake.user_data("i-0123456789abcdef0"), None);
    let truth = fake.instance(&id(1)).unwrap();
    assert_eq!(truth.request, r);
    assert!(truth.listed);
    assert!(fake.terminate_outside(&id(1)));
    assert!(!fake.terminate_outside(&id(1)), "already terminated");
    assert!(!fake.terminate_outside("i-0123456789abcdef0"));
    faults.restore(System::Ec2);
    assert_eq!(
        states(&fake, MASTER).await,
        [(id(1), InstanceState::Terminated)]
    );
    assert_eq!(fake.calls().describe, 1);
}

#[test]
fn instance_ids_and_not_found_messages() {
    for good in ["i-12345678", "i-0123456789abcdef0", &id(1)] {
        assert!(well_formed(good), "{good}");
    }
    for bad in ["bogus", "i-", "i-123", "i-0123456789abcdefg", "x-12345678"] {
        assert!(!well_formed(bad), "{bad}");
    }
    let named = ids_named_in(
        "The instance IDs 'i-0000000000000000a, i-0000000000000000b' do not exist",
        &[
            "i-0000000000000000a",
            "i-0000000000000000b",
            "i-0000000000000000c",
        ],
    );
    assert_eq!(
        named,
        HashSet::from(["i-0000000000000000a", "i-0000000000000000b"])
    );
    let malformed = ids_named_in(
        "Invalid id: \"bogus\" (expecting \"i-...\")",
        &["bogus", "i-1"],
    );
    assert_eq!(malformed, HashSet::from(["bogus"]));
}
