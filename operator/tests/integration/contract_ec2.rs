//! The EC2 contract: one list of cases written once over `&dyn Cloud`, run against
//! `Ec2Cloud` on moto and against `FakeEc2` (instant, and with boot, shutdown and
//! visibility delays on a paused clock), so the fake cannot drift from what the
//! operator sees of EC2. Then the fake's faults against the real client's errors for
//! the same failures, from an endpoint that answers as EC2 does (moto cannot fail).
//!
//! Where moto knowingly differs from AWS the backend says so and the case asserts each
//! side's behaviour: moto 5.2.5 ignores `ClientToken` (a second instance; no
//! `IdempotentParameterMismatch`), the fake follows AWS's documentation. If a moto
//! upgrade starts honouring tokens those cases fail and `honours_client_tokens` flips.
//! Pagination runs with pages of 5, the smallest `MaxResults` EC2 (and so
//! `Ec2Cloud::with_page_size`) allows.

use std::sync::Arc;
use std::time::Duration;

use puppet_conductor::cloud::{
    tags, CallCounts, Cloud, CloudConfig, CloudError, Ec2Cloud, Instance, InstanceState,
};
use puppet_conductor::fakes::ec2::FakeEc2;
use puppet_conductor::fakes::{FaultKind, Faults, System};

use crate::cloud_support::{
    ec2_error_xml, launch_request, moto, moto_cloud, moto_config, unique_master, CannedEndpoint,
    REGION,
};

/// DescribeInstances page size on every backend.
const PAGE_SIZE: i32 = 5;
/// An id no backend has launched.
const UNKNOWN_ID: &str = "i-0123456789abcdef0";

/// One implementation of `Cloud` under contract, and how it differs from the others.
struct Backend {
    cloud: Arc<dyn Cloud>,
    calls: Box<dyn Fn() -> CallCounts + Send + Sync>,
    /// How long a launch or terminate takes to show in describe.
    settle: Duration,
    /// Whether RunInstances deduplicates by ClientToken (AWS and the fake, not moto).
    honours_client_tokens: bool,
}

impl Backend {
    /// `Ec2Cloud` on the shared moto, or `None` (skipped) without the services.
    async fn moto() -> Option<Self> {
        let endpoint = moto()?;
        let cloud = Arc::new(moto_cloud(&endpoint).await.with_page_size(PAGE_SIZE));
        let counted = cloud.clone();
        Some(Self {
            cloud,
            calls: Box::new(move || counted.calls()),
            // moto changes state on the next describe.
            settle: Duration::ZERO,
            honours_client_tokens: false,
        })
    }

    /// The fake as moto behaves: no boot, shutdown or visibility delay.
    fn fake() -> Self {
        Self::from_fake(FakeEc2::default().with_page_size(PAGE_SIZE), Duration::ZERO)
    }

    /// The fake as EC2 behaves, on a paused clock (settling costs no real time).
    fn fake_with_delays() -> Self {
        let (boot, shutdown, lag) = (
            Duration::from_secs(20),
            Duration::from_secs(5),
            Duration::from_secs(3),
        );
        let fake = FakeEc2::default()
            .with_page_size(PAGE_SIZE)
            .with_boot_time(boot)
            .with_shutdown_time(shutdown)
            .with_visibility_lag(lag);
        Self::from_fake(fake, boot.max(shutdown) + lag)
    }

    fn from_fake(fake: FakeEc2, settle: Duration) -> Self {
        let fake = Arc::new(fake);
        let counted = fake.clone();
        Self {
            cloud: fake,
            calls: Box::new(move || counted.calls()),
            settle,
            honours_client_tokens: true,
        }
    }

    /// Wait until the last launch or terminate shows in describe.
    async fn settle(&self) {
        if !self.settle.is_zero() {
            tokio::time::sleep(self.settle).await;
        }
    }

    fn calls(&self) -> CallCounts {
        (self.calls)()
    }

    async fn describe(&self, master: &str) -> Vec<Instance> {
        self.cloud
            .describe_master_instances(master)
            .await
            .expect("describe")
    }
}

fn calls(describe: u64, run: u64, terminate: u64) -> CallCounts {
    CallCounts {
        describe,
        run,
        terminate,
        other: 0,
    }
}

async fn probe_is_one_describe_call(b: &Backend) {
    b.cloud.probe().await.expect("probe");
    assert_eq!(b.calls(), calls(1, 0, 0));
}

async fn launch_then_describe_shows_it_with_its_tags_and_fields(b: &Backend) {
    let master = unique_master("contract-launch");
    let request = launch_request(&master, "ns/web-1", 1);
    let launched = b.cloud.launch(&request).await.expect("launch");
    assert!(launched.id.starts_with("i-"), "{launched:?}");
    assert_eq!(launched.tags, request.tags);
    assert!(
        matches!(
            launched.state,
            InstanceState::Pending | InstanceState::Running
        ),
        "{launched:?}"
    );
    b.settle().await;

    let found = b.describe(&master).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let i = &found[0];
    assert_eq!(i.id, launched.id);
    assert_eq!(i.state, InstanceState::Running);
    assert_eq!(i.tags, request.tags, "every tag comes back");
    assert_eq!(i.tag(tags::MASTER), Some(master.as_str()));
    assert_eq!(
        i.image_id.as_deref(),
        Some(request.instance.image_id.as_str())
    );
    assert_eq!(
        i.instance_type.as_deref(),
        Some(request.instance.instance_type.as_str())
    );
    assert_eq!(i.http_tokens.as_deref(), Some("required"));
    // What the node status and the planner read.
    assert!(i.private_ip.is_some() && i.zone.is_some(), "{i:?}");
    assert!(i.subnet_id.is_some(), "the default subnet: {i:?}");
    assert!(i.security_group_ids.is_empty(), "none asked for: {i:?}");
    let age = chrono::Utc::now().signed_duration_since(i.launch_time.expect("launch time"));
    assert!(age.num_minutes().abs() < 60, "launched {age} ago");
    assert_eq!(b.calls(), calls(1, 1, 0));
}

async fn describe_lists_only_the_exact_master(b: &Backend) {
    let master = unique_master("contract-exact");
    let mine = b
        .cloud
        .launch(&launch_request(&master, "ns/a", 1))
        .await
        .expect("launch");
    // A longer key with the same prefix.
    b.cloud
        .launch(&launch_request(&format!("{master}-other"), "ns/b", 1))
        .await
        .expect("launch");
    b.settle().await;
    let ids: Vec<String> = b
        .describe(&master)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, [mine.id]);
    assert!(b
        .describe(&unique_master("contract-nobody"))
        .await
        .is_empty());
}

async fn the_same_client_token_and_request_launch_one_instance(b: &Backend) {
    let master = unique_master("contract-token");
    let request = launch_request(&master, "ns/a", 1);
    let first = b.cloud.launch(&request).await.expect("launch");
    let second = b.cloud.launch(&request).await.expect("same token");
    b.settle().await;
    let found = b.describe(&master).await;
    if b.honours_client_tokens {
        assert_eq!(second.id, first.id);
        assert_eq!(found.len(), 1, "{found:?}");
    } else {
        assert_ne!(
            second.id, first.id,
            "moto now honours ClientToken: set honours_client_tokens for it"
        );
        assert_eq!(found.len(), 2, "{found:?}");
    }
    assert_eq!(b.calls().run, 2);
}

async fn the_same_client_token_with_other_parameters_is_a_permanent_conflict(b: &Backend) {
    let master = unique_master("contract-mismatch");
    let request = launch_request(&master, "ns/a", 1);
    let first = b.cloud.launch(&request).await.expect("launch");
    let mut other = request.clone();
    other.instance.instance_type = "t3.large".into();
    let result = b.cloud.launch(&other).await;
    b.settle().await;
    let found = b.describe(&master).await;
    if b.honours_client_tokens {
        let e = result.expect_err("same token, other parameters");
        assert_eq!(e.code(), Some("IdempotentParameterMismatch"), "{e:?}");
        assert_eq!(e.category(), "conflict");
        assert!(!e.is_retryable());
        assert_eq!(e.http_status(), Some(400));
        let ids: Vec<_> = found.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, [first.id.as_str()]);
    } else {
        let second = result.expect("moto launches whatever the token");
        assert_ne!(second.id, first.id);
        assert_eq!(found.len(), 2, "{found:?}");
    }
}

async fn terminate_shows_the_instance_terminating_and_still_listed(b: &Backend) {
    let master = unique_master("contract-terminate");
    let launched = b
        .cloud
        .launch(&launch_request(&master, "ns/a", 1))
        .await
        .expect("launch");
    b.settle().await;
    b.cloud
        .terminate(std::slice::from_ref(&launched.id))
        .await
        .expect("terminate");
    b.settle().await;
    let found = b.describe(&master).await;
    assert_eq!(
        found.len(),
        1,
        "terminated instances stay listed: {found:?}"
    );
    assert_eq!(found[0].id, launched.id);
    assert!(found[0].state.is_terminating(), "{:?}", found[0].state);
    assert_eq!(b.calls().terminate, 1);
}

async fn terminating_an_already_terminated_instance_is_accepted(b: &Backend) {
    let master = unique_master("contract-again");
    let launched = b
        .cloud
        .launch(&launch_request(&master, "ns/a", 1))
        .await
        .expect("launch");
    b.settle().await;
    let ids = std::slice::from_ref(&launched.id);
    b.cloud.terminate(ids).await.expect("terminate");
    b.settle().await;
    b.cloud.terminate(ids).await.expect("terminate again");
    assert_eq!(b.calls().terminate, 2);
    let found = b.describe(&master).await;
    assert!(found[0].state.is_terminating(), "{:?}", found[0].state);
}

async fn unknown_and_malformed_ids_are_terminated_as_success_and_spare_the_rest(b: &Backend) {
    let master = unique_master("contract-unknown");
    let kept = b
        .cloud
        .launch(&launch_request(&master, "ns/kept", 1))
        .await
        .expect("launch");
    let doomed = b
        .cloud
        .launch(&launch_request(&master, "ns/doomed", 1))
        .await
        .expect("launch");
    b.settle().await;

    b.cloud.terminate(&[]).await.expect("nothing");
    assert_eq!(b.calls().terminate, 0, "nothing to send");
    b.cloud
        .terminate(&[UNKNOWN_ID.to_owned()])
        .await
        .expect("unknown");
    b.cloud
        .terminate(&["bogus".to_owned()])
        .await
        .expect("malformed");
    b.cloud
        .terminate(&[doomed.id.clone(), UNKNOWN_ID.to_owned()])
        .await
        .expect("mixed");
    // unknown, malformed, mixed (refused whole, then repeated without the unknown id).
    assert_eq!(b.calls().terminate, 4);
    b.settle().await;
    for i in b.describe(&master).await {
        assert_eq!(i.state.is_terminating(), i.id == doomed.id, "{i:?}");
    }
    assert_ne!(kept.id, doomed.id);
}

async fn describe_follows_next_token_across_pages(b: &Backend) {
    let master = unique_master("contract-pages");
    let mut launched = Vec::new();
    for n in 0..11 {
        let request = launch_request(&master, &format!("ns/node-{n}"), 1);
        launched.push(b.cloud.launch(&request).await.expect("launch").id);
    }
    b.settle().await;
    let mut ids: Vec<String> = b
        .describe(&master)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    launched.sort();
    assert_eq!(ids, launched);
    assert_eq!(
        b.calls().describe,
        3,
        "11 instances in pages of {PAGE_SIZE}"
    );
}

/// Every case against every backend, one test each: `contract_ec2::<backend>::<case>`.
macro_rules! contract_cases {
    ($($case:ident),+ $(,)?) => {
        /// `Ec2Cloud` on the shared moto.
        mod on_moto {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(backend) = super::Backend::moto().await else { return };
                    super::$case(&backend).await;
                }
            )+
        }

        /// `FakeEc2` without delays.
        mod on_fake {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::Backend::fake()).await;
                }
            )+
        }

        /// `FakeEc2` with boot, shutdown and visibility delays.
        mod on_fake_with_delays {
            $(
                #[tokio::test(start_paused = true)]
                async fn $case() {
                    super::$case(&super::Backend::fake_with_delays()).await;
                }
            )+
        }
    };
}

contract_cases!(
    probe_is_one_describe_call,
    launch_then_describe_shows_it_with_its_tags_and_fields,
    describe_lists_only_the_exact_master,
    the_same_client_token_and_request_launch_one_instance,
    the_same_client_token_with_other_parameters_is_a_permanent_conflict,
    terminate_shows_the_instance_terminating_and_still_listed,
    terminating_an_already_terminated_instance_is_accepted,
    unknown_and_malformed_ids_are_terminated_as_success_and_spare_the_rest,
    describe_follows_next_token_across_pages,
);

// ---------------------------------------------------------------- faults

/// What the operator's error policy looks at.
fn classification(e: &CloudError) -> (&'static str, bool, Option<String>, Option<u16>) {
    (
        e.category(),
        e.is_retryable(),
        e.code().map(str::to_owned),
        e.http_status(),
    )
}

/// The real client's error for an endpoint answering `status` with EC2 error `code`.
async fn real_api_error(status: u16, code: &str, message: &str) -> CloudError {
    let server = CannedEndpoint::start(status, "text/xml", ec2_error_xml(code, message)).await;
    let cloud = Ec2Cloud::new(&moto_config(&server.endpoint, REGION)).await;
    cloud.probe().await.expect_err("canned error")
}

/// The fake's error for `kind`, on every operation (they must agree).
async fn fake_error(kind: FaultKind, timeout: Duration) -> CloudError {
    let faults = Arc::new(Faults::default());
    faults.outage(System::Ec2, kind);
    let fake = FakeEc2::new(faults).with_call_timeout(timeout);
    let probe = fake.probe().await.expect_err("probe");
    let launch = fake
        .launch(&launch_request("ns/m", "ns/n", 1))
        .await
        .expect_err("launch");
    let describe = fake
        .describe_master_instances("ns/m")
        .await
        .expect_err("describe");
    let terminate = fake
        .terminate(&[UNKNOWN_ID.to_owned()])
        .await
        .expect_err("terminate");
    for other in [&launch, &describe, &terminate] {
        assert_eq!(classification(other), classification(&probe), "{other:?}");
    }
    assert!(fake.instances().is_empty());
    probe
}

#[tokio::test]
async fn an_unavailable_fault_classifies_as_an_ec2_503_unavailable() {
    let real = real_api_error(
        503,
        "Unavailable",
        "The service is unavailable. Please try again shortly.",
    )
    .await;
    let fake = fake_error(FaultKind::Unavailable, Duration::from_secs(20)).await;
    assert_eq!(classification(&fake), classification(&real));
    assert_eq!(classification(&fake).0, "unavailable");
}

#[tokio::test]
async fn a_throttled_fault_classifies_as_request_limit_exceeded() {
    let real = real_api_error(503, "RequestLimitExceeded", "Request limit exceeded.").await;
    let fake = fake_error(FaultKind::Throttled, Duration::from_secs(20)).await;
    assert_eq!(classification(&fake), classification(&real));
    assert_eq!(classification(&fake).0, "throttled");
}

#[tokio::test]
async fn a_denied_fault_classifies_as_a_permanent_auth_failure() {
    let real = real_api_error(
        401,
        "AuthFailure",
        "AWS was not able to validate the provided access credentials",
    )
    .await;
    let fake = fake_error(FaultKind::Denied, Duration::from_secs(20)).await;
    assert_eq!(classification(&fake), classification(&real));
    assert_eq!(classification(&fake).0, "auth");
    assert!(!fake.is_retryable());
}

#[tokio::test]
async fn a_timeout_fault_classifies_as_the_real_clients_timeout() {
    // The kernel accepts connections on a listening socket nobody serves.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let timeout = Duration::from_secs(1);
    let cloud = Ec2Cloud::new(&CloudConfig {
        call_timeout: timeout,
        ..moto_config(&endpoint, REGION)
    })
    .await;
    let real = cloud.probe().await.expect_err("nobody answers");
    let fake = fake_error(FaultKind::Timeout, timeout).await;
    assert_eq!(classification(&fake), classification(&real));
    assert!(matches!(
        (&fake, &real),
        (CloudError::Timeout { timeout: a, .. }, CloudError::Timeout { timeout: b, .. }) if a == b
    ));
    drop(listener);
}
