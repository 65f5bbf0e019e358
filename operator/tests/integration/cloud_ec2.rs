//! `Ec2Cloud` against moto: launch, describe by master tag (paginated),
//! terminate, and how failures are classified.
//!
//! moto's state is shared by all tests (and earlier runs): each test uses its
//! own master key. Tests that need moto configured differently (auth enforced,
//! an unknown region) start a private moto_server.

use std::time::{Duration, Instant};

use futures::StreamExt;
use puppet_conductor::cloud::{
    tags, BucketLimits, CallCounts, Cloud, CloudError, Ec2Cloud, InstanceState, RateLimits,
    StaticCredentials,
};

use crate::cloud_support::{
    empty_describe_instances_xml, launch_request, moto, moto_cloud, moto_config, network,
    raw_client, unique_master, CannedEndpoint, SpawnedMoto, REGION,
};

#[tokio::test]
async fn probe_succeeds_against_moto() {
    let Some(endpoint) = moto() else { return };
    let cloud = moto_cloud(&endpoint).await;
    cloud.probe().await.expect("probe");
    assert_eq!(cloud.calls().describe, 1);
}

#[tokio::test]
async fn launch_then_describe_returns_it_with_everything_asked_for() {
    let Some(endpoint) = moto() else { return };
    let cloud = moto_cloud(&endpoint).await;
    let raw = raw_client(&endpoint, REGION).await;
    let (subnet, group) = network(&raw, "us-east-1a").await;
    let master = unique_master("launch");

    let mut request = launch_request(&master, "ns/web-1", 1);
    request.instance.subnet_id = Some(subnet.clone());
    request.instance.security_group_ids = vec![group.clone()];
    request.user_data =
        "## template: jinja\n#cloud-config\n# ünïcödé {{ v1.instance_id }}\n".into();
    let launched = cloud.launch(&request).await.expect("launch");
    assert!(launched.id.starts_with("i-"), "{launched:?}");
    assert_eq!(launched.tags, request.tags);

    let found = cloud
        .describe_master_instances(&master)
        .await
        .expect("describe");
    assert_eq!(found.len(), 1, "{found:?}");
    let i = &found[0];
    assert_eq!(i.id, launched.id);
    assert!(
        matches!(i.state, InstanceState::Pending | InstanceState::Running),
        "{:?}",
        i.state
    );
    assert_eq!(i.tags, request.tags, "every tag comes back");
    assert_eq!(i.tag(tags::MASTER), Some(master.as_str()));
    assert_eq!(i.image_id.as_deref(), Some("ami-12c6146b"));
    assert_eq!(i.instance_type.as_deref(), Some("t3.micro"));
    assert_eq!(i.subnet_id.as_deref(), Some(subnet.as_str()));
    assert_eq!(i.security_group_ids, vec![group]);
    assert_eq!(i.http_tokens.as_deref(), Some("required"));
    assert_eq!(i.zone.as_deref(), Some("us-east-1a"));
    assert!(i.private_ip.is_some(), "{i:?}");
    assert!(i.launch_time.is_some(), "{i:?}");

    // User data went out base64-encoded exactly once.
    let attribute = raw
        .describe_instance_attribute()
        .instance_id(&i.id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .expect("DescribeInstanceAttribute");
    let encoded = attribute
        .user_data()
        .and_then(|u| u.value())
        .expect("user data");
    let decoded = aws_smithy_types::base64::decode(encoded).expect("base64");
    assert_eq!(String::from_utf8(decoded).unwrap(), request.user_data);

    // The volumes carry the tags too.
    let volumes = raw
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{}", tags::MASTER))
                .values(&master)
                .build(),
        )
        .send()
        .await
        .expect("DescribeVolumes");
    assert!(!volumes.volumes().is_empty(), "no tagged volume");
    for volume in volumes.volumes() {
        let node = volume
            .tags()
            .iter()
            .find(|t| t.key() == Some(tags::NODE))
            .and_then(|t| t.value());
        assert_eq!(node, Some("ns/web-1"));
    }

    assert_eq!(
        cloud.calls(),
        CallCounts {
            describe: 1,
            run: 1,
            terminate: 0,
            other: 0
        }
    );
}

#[tokio::test]
async fn imdsv2_is_only_required_when_asked() {
    let Some(endpoint) = moto() else { return };
    let cloud = moto_cloud(&endpoint).await;
    let master = unique_master("imds");
    let mut request = launch_request(&master, "ns/legacy", 1);
    request.instance.imdsv2_required = false;
    let launched = cloud.launch(&request).await.expect("launch");
    let found = cloud.describe_master_instances(&master).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, launched.id);
    assert_ne!(found[0].http_tokens.as_deref(), Some("required"));
}

#[tokio::test]
async fn describe_returns_only_the_exact_master() {
    let Some(endpoint) = moto() else { return };
    let cloud = moto_cloud(&endpoint).await;
    let master = unique_master("exact");
    let mine = cloud
        .launch(&launch_request(&master, "ns/a", 1))
        .await
        .unwrap();
    // A longer key with the same prefix, and an empty master.
    cloud
        .launch(&launch_request(&format!("{master}-other"), "ns/b", 1))
        .await
        .unwrap();
    let found = cloud.describe_master_instances(&master).await.unwrap();
    let ids: Vec<_> = found.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, [mine.id.as_str()]);
    let none = cloud
        .describe_master_instances(&unique_master("nobody"))
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn terminate_is_idempotent_and_unknown_ids_are_success() {
    let Some(endpoint) = moto() else { return };
    let cloud = moto_cloud(&endpoint).await;
    let master = unique_master("terminate");
    let a = cloud
        .launch(&launch_request(&master, "ns/a", 1))
        .await
        .unwrap();
    let b = cloud
        .launch(&launch_request(&master, "ns/b", 1))
        .await
        .unwrap();
    let unknown = "i-0123456789abcdef0".to_owned();

    cloud.terminate(&[]).await.expect("nothing to terminate");
    assert_eq!(cloud.calls().terminate, 0);

    cloud
        .terminate(std::slice::from_ref(&a.id))
        .await
        .expect("first");
    cloud
        .terminate(std::slice::from_ref(&a.id))
        .await
        .expect("again");
    // moto answers InvalidInstanceID.NotFound (400) for an unknown id, and
    // for a request naming it beside a real one (nothing is terminated then).
    cloud
        .terminate(std::slice::from_ref(&unknown))
        .await
        .expect("unknown");
    cloud
        .terminate(&[b.id.clone(), unknown.clone()])
        .await
        .expect("mixed");
    cloud
        .terminate(&["bogus".to_owned()])
        .await
        .expect("malformed");
    // first, again, unknown, mixed (refused, then retried without the
    // unknown id), malformed.
    assert_eq!(cloud.calls().terminate, 6);

    let found = cloud.describe_master_instances(&master).await.unwrap();
    assert_eq!(found.len(), 2);
    for i in &found {
        assert!(i.state.is_terminating(), "{} is {}", i.id, i.state);
    }
}

#[tokio::test]
async fn describe_paginates_250_instances_in_few_calls() {
    if moto().is_none() {
        return;
    }
    // A private moto: its tag filters cost O(tagged resources) per instance,
    // so 250 more instances in the shared one would slow every other test.
    let server = SpawnedMoto::start(&[]).await;
    let cloud = moto_cloud(&server.endpoint).await;
    let master = unique_master("paginate");
    const COUNT: usize = 250;

    let start = Instant::now();
    let requests: Vec<_> = (0..COUNT)
        .map(|n| launch_request(&master, &format!("ns/node-{n}"), 1))
        .collect();
    let launched: Vec<_> = futures::stream::iter(&requests)
        .map(|r| cloud.launch(r))
        .buffer_unordered(8)
        .collect()
        .await;
    let launch_time = start.elapsed();
    let mut launched_ids: Vec<String> = launched
        .into_iter()
        .map(|r| r.expect("launch").id)
        .collect();
    launched_ids.sort();
    assert_eq!(cloud.calls().run, COUNT as u64);

    let start = Instant::now();
    let found = cloud.describe_master_instances(&master).await.unwrap();
    let describe_time = start.elapsed();
    let mut ids: Vec<String> = found.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, launched_ids);
    assert_eq!(cloud.calls().describe, 1, "one page of up to 1,000");

    // Smaller pages: moto counts reservations (one per launch here), EC2 instances.
    let paged = cloud.clone().with_page_size(100);
    let before = paged.calls().describe;
    let start = Instant::now();
    let found = paged.describe_master_instances(&master).await.unwrap();
    let paged_time = start.elapsed();
    assert_eq!(found.len(), COUNT);
    let pages = paged.calls().describe - before;
    assert!(
        pages <= 3,
        "{pages} DescribeInstances for {COUNT} instances"
    );
    eprintln!(
        "{COUNT} launches (8 concurrent): {launch_time:?}; describe (1 page): {describe_time:?}; \
         describe ({pages} pages of 100): {paged_time:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn launches_wait_for_the_run_instances_bucket() {
    let Some(endpoint) = moto() else { return };
    let mut config = moto_config(&endpoint, REGION);
    config.rate_limits = RateLimits {
        run_instances: Some(BucketLimits::new(2, 10.0)),
        ..RateLimits::unlimited()
    };
    let cloud = Ec2Cloud::new(&config).await;
    let master = unique_master("bucket");
    let start = Instant::now();
    for n in 0..6 {
        cloud
            .launch(&launch_request(&master, &format!("ns/n{n}"), 1))
            .await
            .unwrap();
    }
    // 2 from the burst, then 4 at 100 ms each.
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(390), "{elapsed:?}");
    assert_eq!(cloud.calls().run, 6);
}

#[tokio::test]
async fn bad_credentials_are_a_permanent_error() {
    if moto().is_none() {
        return;
    }
    // moto checks signatures only with INITIAL_NO_AUTH_ACTION_COUNT=0.
    let server = SpawnedMoto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).await;
    let mut config = moto_config(&server.endpoint, REGION);
    config.credentials = Some(StaticCredentials {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: "not-the-secret".into(),
        session_token: None,
    });
    let cloud = Ec2Cloud::new(&config).await;

    let probe = cloud.probe().await.expect_err("probe with bad credentials");
    assert_permanent_auth(&probe);
    let describe = cloud
        .describe_master_instances("ns/any")
        .await
        .expect_err("describe with bad credentials");
    assert_permanent_auth(&describe);
    let launch = cloud
        .launch(&launch_request("ns/any", "ns/n", 1))
        .await
        .expect_err("launch with bad credentials");
    assert_permanent_auth(&launch);
    // Permanent errors are not retried by the SDK either.
    assert_eq!(cloud.calls().describe, 2);
    assert_eq!(cloud.calls().run, 1);
    server.stop().await;
}

fn assert_permanent_auth(error: &CloudError) {
    assert!(!error.is_retryable(), "{error:?}");
    assert_eq!(error.category(), "auth", "{error:?}");
    assert!(
        matches!(
            error.code(),
            Some("AuthFailure" | "InvalidClientTokenId" | "InvalidAccessKeyId")
        ),
        "{error:?}"
    );
    assert!(!error.message().unwrap_or_default().is_empty(), "{error:?}");
}

#[tokio::test]
async fn eucalyptus_style_config_works() {
    if moto().is_none() {
        return;
    }
    // A private cloud: custom endpoint and its own region name. moto answers
    // 500 for regions it does not know unless told to allow them.
    let server = SpawnedMoto::start(&[("MOTO_ALLOW_NONEXISTENT_REGION", "true")]).await;
    let region = "eucalyptus";
    let raw = raw_client(&server.endpoint, region).await;
    // moto's unknown region has no default subnets and only knows AWS zone names.
    let (subnet, group) = network(&raw, "us-east-1a").await;
    let cloud = Ec2Cloud::new(&moto_config(&server.endpoint, region)).await;
    assert_eq!(cloud.region(), region);

    cloud.probe().await.expect("probe");
    let master = unique_master("euca");
    let mut request = launch_request(&master, "ns/euca-1", 1);
    request.instance.image_id = "emi-0123abcd".into();
    request.instance.instance_type = "m1.small".into();
    request.instance.subnet_id = Some(subnet);
    request.instance.security_group_ids = vec![group];
    let launched = cloud.launch(&request).await.expect("launch");
    let found = cloud.describe_master_instances(&master).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, launched.id);
    assert_eq!(found[0].image_id.as_deref(), Some("emi-0123abcd"));
    assert_eq!(found[0].instance_type.as_deref(), Some("m1.small"));
    cloud
        .terminate(std::slice::from_ref(&launched.id))
        .await
        .unwrap();
    let found = cloud.describe_master_instances(&master).await.unwrap();
    assert!(found[0].state.is_terminating(), "{:?}", found[0].state);
    server.stop().await;
}

#[tokio::test]
async fn eucalyptus_endpoint_path_and_signing_region_are_kept() {
    // Eucalyptus serves EC2 under a path (`/services/compute` on the classic
    // port 8773) and signs with its own region name.
    let server = CannedEndpoint::start(200, "text/xml", empty_describe_instances_xml()).await;
    let endpoint = format!("{}/services/compute", server.endpoint);
    let cloud = Ec2Cloud::new(&moto_config(&endpoint, "eucalyptus")).await;
    cloud.probe().await.expect("probe");
    let heads = server.request_heads();
    assert_eq!(heads.len(), 1);
    let head = &heads[0];
    assert!(
        head.starts_with("POST /services/compute HTTP/1.1\r\n")
            || head.starts_with("POST /services/compute/ HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("/eucalyptus/ec2/aws4_request"), "{head}");
}
