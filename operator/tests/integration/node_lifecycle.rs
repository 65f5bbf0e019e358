//! PuppetNode lifecycle at reconciler level: kube-fake-client + moto (EC2, S3) + a
//! recording CA at the certificate seam.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use puppet_conductor::api::conditions as cond;
use puppet_conductor::api::master::CloudProvider;
use puppet_conductor::api::node::Phase;
use puppet_conductor::cloud::{tags, Cloud, InstanceState};
use puppet_conductor::records::Records;

use crate::common::services::Services;
use crate::node_support::*;
use puppet_conductor::controller::ReconcileError;

fn ec2(endpoint: &str, region: &str) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

fn condition(n: &puppet_conductor::api::PuppetNode, t: &str) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
}

struct Setup {
    endpoint: String,
    master_key: String,
    moto: Arc<MotoServices>,
    h: Harness,
}

async fn setup(
    region: &str,
    provider: CloudProvider,
    nodes: Vec<puppet_conductor::api::PuppetNode>,
) -> Option<Setup> {
    let endpoint = Services::moto_endpoint_from_env()?;
    setup_at(&endpoint, region, provider, nodes).await
}

async fn setup_at(
    endpoint: &str,
    region: &str,
    provider: CloudProvider,
    nodes: Vec<puppet_conductor::api::PuppetNode>,
) -> Option<Setup> {
    let master_name = unique("pm");
    let bucket = unique("records");
    let moto = Arc::new(MotoServices::new(endpoint, region, &bucket).await);
    // moto checks subnets and security groups: give the master real ones.
    let (subnet, group) = network(&ec2(endpoint, region)).await;
    let mut m = master(&master_name, endpoint, region, &bucket, provider);
    m.spec.node_defaults.subnet_id = Some(subnet);
    m.spec.node_defaults.security_group_ids = vec![group];
    let nodes = nodes
        .into_iter()
        .map(|mut n| {
            n.spec.master_ref.name = master_name.clone();
            n
        })
        .collect();
    let h = Harness::new(moto.clone(), (m, nodes)).await;
    Some(Setup {
        endpoint: endpoint.to_string(),
        master_key: format!("{NS}/{master_name}"),
        moto,
        h,
    })
}

/// A VPC with a subnet large enough for 1,000 instances, and a security group.
async fn network(client: &aws_sdk_ec2::Client) -> (String, String) {
    let vpc = client
        .create_vpc()
        .cidr_block("10.90.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_owned();
    let subnet = client
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.90.0.0/18")
        .availability_zone("us-east-1a")
        .send()
        .await
        .unwrap();
    let subnet_id = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .unwrap()
        .to_owned();
    let group = client
        .create_security_group()
        .group_name(unique("sg"))
        .description("puppet-conductor node test")
        .vpc_id(&vpc_id)
        .send()
        .await
        .unwrap();
    (subnet_id, group.group_id().unwrap().to_owned())
}

/// The user data an instance was launched with, as the instance would read it.
pub async fn user_data_of(endpoint: &str, region: &str, instance_id: &str) -> String {
    let attr = ec2(endpoint, region)
        .describe_instance_attribute()
        .instance_id(instance_id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let b64 = attr.user_data().and_then(|u| u.value()).unwrap();
    String::from_utf8(aws_smithy_types::base64::decode(b64).unwrap()).unwrap()
}

/// `passes` reconciles of `name` by a restarted operator (a fresh context: no snapshot
/// cache) whose services are `services`.
async fn restarted(s: &Setup, services: Arc<MotoServices>, name: &str, passes: usize) {
    let ctx = Arc::new(puppet_conductor::controller::Context::new(
        s.h.ctx.client.clone(),
        services,
        s.h.events.clone(),
        s.h.ctx.settings.clone(),
    ));
    for _ in 0..passes {
        puppet_conductor::controller::node::reconcile(Arc::new(s.h.get(name).await), ctx.clone())
            .await
            .unwrap();
    }
}

async fn live_instances(s: &Setup) -> Vec<puppet_conductor::cloud::Instance> {
    s.moto
        .cloud
        .describe_master_instances(&s.master_key)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| {
            !matches!(
                i.state,
                InstanceState::Terminated | InstanceState::ShuttingDown
            )
        })
        .collect()
}

#[tokio::test]
async fn create_launches_one_instance_with_record_and_status() {
    let _shared = MOTO_LOAD.read().await;
    let Some(s) = setup(
        "us-east-1",
        CloudProvider::Ec2,
        vec![node("web-1", "x", &["role::webserver"])],
    )
    .await
    else {
        return;
    };
    s.h.converge("web-1", 3).await;

    let n = s.h.get("web-1").await;
    let uid = n.metadata.uid.clone().unwrap();
    let status = n.status.clone().unwrap();
    let certname = format!("{uid}-1");
    assert_eq!(status.certname.as_deref(), Some(certname.as_str()));
    assert_eq!(status.incarnation, Some(1));
    assert_eq!(status.phase, Some(Phase::AwaitingCsr));
    assert_eq!(
        condition(&n, cond::INSTANCE_RUNNING).as_deref(),
        Some("True")
    );
    assert_eq!(condition(&n, cond::RECORD_WRITTEN).as_deref(), Some("True"));
    assert_eq!(
        condition(&n, cond::CERTIFICATE_SIGNED).as_deref(),
        Some("False")
    );
    assert!(n
        .metadata
        .finalizers
        .unwrap()
        .contains(&"puppet-conductor.dev/cleanup".to_string()));

    let live = live_instances(&s).await;
    assert_eq!(live.len(), 1, "exactly one instance: {live:?}");
    let i = &live[0];
    assert_eq!(status.instance_id.as_deref(), Some(i.id.as_str()));
    assert_eq!(i.image_id.as_deref(), Some("ami-0123456789abcdef0"));
    assert_eq!(i.instance_type.as_deref(), Some("t3.small"));
    let master = s.h.ctx.client.clone();
    let _ = master;
    assert!(i
        .subnet_id
        .as_deref()
        .is_some_and(|x| x.starts_with("subnet-")));
    assert_eq!(i.security_group_ids.len(), 1);
    assert_eq!(i.http_tokens.as_deref(), Some("required"));
    assert_eq!(i.tag(tags::NODE_UID), Some(uid.as_str()));
    assert_eq!(i.tag(tags::CERTNAME), Some(certname.as_str()));
    assert_eq!(i.tag(tags::INCARNATION), Some("1"));
    assert_eq!(i.tag(tags::MASTER), Some(s.master_key.as_str()));
    assert_eq!(i.tag(tags::NODE), Some(format!("{NS}/web-1").as_str()));
    assert_eq!(i.tag(tags::OPERATOR), Some("test"));
    assert_eq!(i.tag("team"), Some("infra"));

    // User data: the server, certname, CA certificate and this incarnation's challenge.
    let user_data = user_data_of(&s.endpoint, "us-east-1", &i.id).await;
    let challenge = s.moto.services.challenge_key.challenge(&uid, 1);
    assert!(user_data.contains("puppet.example.com"));
    assert!(user_data.contains(&certname));
    assert!(user_data.contains("MIIBtest"));
    assert!(user_data.contains(&challenge));
    assert!(user_data.contains("{{ v1.instance_id }}"));
    let rendered = crate::userdata_cloud_init::assert_cloud_init_valid(&user_data, &i.id);
    if let Some(rendered) = rendered {
        let (c, iid) = puppet_conductor::userdata::rendered_csr_attributes(&rendered).unwrap();
        assert_eq!(
            (c.as_str(), iid.as_str()),
            (challenge.as_str(), i.id.as_str())
        );
    }

    let record = s.moto.records.get(&certname).await.unwrap().unwrap();
    assert_eq!(record.classes, vec!["role::webserver".to_string()]);
    assert_eq!(record.environment, "production");
    assert_eq!(record.instance_id.as_deref(), Some(i.id.as_str()));
    assert_eq!(record.owner.node_uid, uid);
    assert_ne!(
        record.challenge_sha256, challenge,
        "the record never holds the challenge itself"
    );
    assert!(s.h.events.all().iter().any(|e| e.reason == "Launched"));
}

#[tokio::test]
async fn changing_classes_rewrites_the_record_once() {
    let _shared = MOTO_LOAD.read().await;
    let Some(s) = setup(
        "us-east-1",
        CloudProvider::Ec2,
        vec![node("app-1", "x", &["profile::base"])],
    )
    .await
    else {
        return;
    };
    s.h.converge("app-1", 3).await;
    let before = s.moto.records.put_count();
    s.h.converge("app-1", 2).await;
    assert_eq!(
        s.moto.records.put_count(),
        before,
        "a converged node writes nothing"
    );

    let mut n = s.h.get("app-1").await;
    n.spec.classes = vec!["profile::base".into(), "profile::web".into()];
    s.h.nodes
        .replace("app-1", &Default::default(), &n)
        .await
        .unwrap();
    s.h.converge("app-1", 3).await;
    assert_eq!(
        s.moto.records.put_count(),
        before + 1,
        "one PUT for one change"
    );
    let certname = s.h.get("app-1").await.status.unwrap().certname.unwrap();
    let record = s.moto.records.get(&certname).await.unwrap().unwrap();
    assert_eq!(
        record.classes,
        vec!["profile::base".to_string(), "profile::web".to_string()]
    );
    assert_eq!(live_instances(&s).await.len(), 1);
}

#[tokio::test]
async fn restarted_operator_with_empty_status_adopts_the_instance() {
    let _shared = MOTO_LOAD.read().await;
    let Some(s) = setup(
        "us-east-1",
        CloudProvider::Ec2,
        vec![node("db-1", "x", &["profile::base"])],
    )
    .await
    else {
        return;
    };
    s.h.converge("db-1", 3).await;
    let first = live_instances(&s).await;
    assert_eq!(first.len(), 1);

    // Wipe status and start a fresh context (a restarted operator: no snapshot cache).
    let mut n = s.h.get("db-1").await;
    n.status = None;
    s.h.nodes
        .replace_status("db-1", &Default::default(), &n)
        .await
        .unwrap();
    assert!(s
        .h
        .get("db-1")
        .await
        .status
        .is_none_or(|st| st.instance_id.is_none()));
    restarted(&s, s.moto.clone(), "db-1", 3).await;
    let after = live_instances(&s).await;
    assert_eq!(after.len(), 1, "still exactly one instance: {after:?}");
    assert_eq!(after[0].id, first[0].id);
    assert!(
        s.h.events.all().iter().any(|e| e.reason == "Adopted"),
        "adoption is an event"
    );
    assert_eq!(
        s.h.get("db-1").await.status.unwrap().instance_id.as_deref(),
        Some(first[0].id.as_str())
    );
}

#[tokio::test]
async fn instance_terminated_behind_our_back_is_replaced_once() {
    let _shared = MOTO_LOAD.read().await;
    let Some(s) = setup(
        "us-east-1",
        CloudProvider::Ec2,
        vec![node("cache-1", "x", &["profile::base"])],
    )
    .await
    else {
        return;
    };
    s.h.converge("cache-1", 3).await;
    let old = s.h.get("cache-1").await.status.unwrap();
    let old_id = old.instance_id.clone().unwrap();
    let old_certname = old.certname.clone().unwrap();

    ec2(&s.endpoint, "us-east-1")
        .terminate_instances()
        .instance_ids(&old_id)
        .send()
        .await
        .unwrap();
    // The next resync observes afresh.
    s.h.ctx.snapshots.invalidate(&s.master_key).await;
    s.h.converge("cache-1", 4).await;

    let new = s.h.get("cache-1").await.status.unwrap();
    assert_eq!(new.incarnation, Some(2));
    assert_ne!(new.certname.as_deref(), Some(old_certname.as_str()));
    assert!(new.certname.as_deref().unwrap().ends_with("-2"));
    let live = live_instances(&s).await;
    assert_eq!(live.len(), 1, "replaced once: {live:?}");
    assert_ne!(live[0].id, old_id);
    assert_eq!(live[0].tag(tags::INCARNATION), Some("2"));
    assert!(
        s.moto.ca.revoked.lock().unwrap().is_empty(),
        "nothing was signed for the old certname, so nothing is revoked"
    );
    assert!(
        s.moto.records.get(&old_certname).await.unwrap().is_none(),
        "the old incarnation's record is removed once its fencing completed"
    );
    assert!(
        !s.h.events
            .all()
            .iter()
            .any(|e| e.reason == "CertificateRevoked"),
        "nothing the operator signed, nothing revoked"
    );
}

#[tokio::test]
async fn delete_terminates_revokes_removes_record_and_releases() {
    let _shared = MOTO_LOAD.read().await;
    let Some(s) = setup(
        "us-east-1",
        CloudProvider::Ec2,
        vec![node("gone-1", "x", &["profile::base"])],
    )
    .await
    else {
        return;
    };
    s.h.converge("gone-1", 3).await;
    assert_eq!(
        s.h.get("gone-1").await.metadata.finalizers,
        Some(vec!["puppet-conductor.dev/cleanup".to_string()])
    );
    let st = s.h.get("gone-1").await.status.unwrap();
    let certname = st.certname.unwrap();
    let d = s.h.deleted_copy("gone-1").await;
    assert!(
        d.exists("gone-1").await,
        "the finalizer holds the object until cleanup"
    );
    let deletes_before = s.moto.records.counts().deletes;
    let mut stale = None;
    for _ in 0..4 {
        if !d.exists("gone-1").await {
            break;
        }
        stale = Some(d.get("gone-1").await);
        match d.reconcile("gone-1").await {
            Ok(_) => {}
            Err(e) if matches!(e.root(), ReconcileError::CleanupInProgress(_)) => {
                // Nothing is revoked or deleted while an instance may still run.
                assert!(s.moto.ca.revoked.lock().unwrap().is_empty());
                assert!(s.moto.records.get(&certname).await.unwrap().is_some());
                assert!(
                    d.exists("gone-1").await,
                    "finalizer kept while instances shut down"
                );
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(!d.exists("gone-1").await, "finalizer released");
    assert!(live_instances(&s).await.is_empty());
    // Each of the node's three objects (record, check-in, signature record) is deleted
    // once: the deletion issues no repeated deletes on the way to release.
    assert_eq!(
        s.moto.records.counts().deletes - deletes_before,
        3,
        "DeleteObject calls of one node's deletion"
    );
    assert!(s.moto.records.get(&certname).await.unwrap().is_none());
    assert!(
        s.moto.ca.revoked.lock().unwrap().is_empty(),
        "only certificates the operator had signed are revoked, and none was"
    );
    // A pass queued from the copy the releasing pass started with (the watch had not yet
    // delivered the deletion) finds the object gone: that is success, not a failure.
    let warnings_before = d.events.all().iter().filter(|e| e.warning).count();
    let stale = Arc::new(stale.expect("at least one deletion pass ran"));
    let again = puppet_conductor::controller::node::reconcile(stale, d.ctx.clone()).await;
    assert!(
        again.is_ok(),
        "a stale pass after release failed: {again:?}"
    );
    assert_eq!(
        d.events.all().iter().filter(|e| e.warning).count(),
        warnings_before,
        "a stale pass after release published a Warning"
    );
}

/// A node whose master's cloud never answered properly: no finalizer, a condition and a
/// Warning event saying why, and a delete that goes through at once.
async fn assert_unreached_cloud_leaves_node_deletable(cloud_endpoint: &str, expected_reason: &str) {
    let endpoint = Services::moto_endpoint_from_env().unwrap();
    let bucket = unique("records");
    create_bucket(&endpoint, "us-east-1", &bucket).await;
    let mut moto = MotoServices::new(&endpoint, "us-east-1", &unique("unused")).await;
    let mut cfg = puppet_conductor::cloud::CloudConfig::new("us-east-1");
    cfg.endpoint = Some(cloud_endpoint.to_string());
    cfg.credentials = Some(moto_credentials());
    cfg.call_timeout = std::time::Duration::from_secs(5);
    let cloud = Arc::new(puppet_conductor::cloud::Ec2Cloud::new(&cfg).await);
    Arc::get_mut(&mut moto.services).unwrap().cloud = cloud;
    let m = master(
        "pm-stuck",
        cloud_endpoint,
        "us-east-1",
        &bucket,
        CloudProvider::Ec2,
    );
    let h = Harness::new(
        Arc::new(moto),
        (m, vec![node("stuck-1", "pm-stuck", &["profile::base"])]),
    )
    .await;

    let err = h.reconcile("stuck-1").await.unwrap_err();
    // Credentials and endpoints are fixed in the master or its Secret, not the node:
    // retried with backoff rather than parked until the node changes.
    assert!(!err.is_permanent(), "{err}");
    let n = h.get("stuck-1").await;
    assert!(
        n.metadata.finalizers.unwrap_or_default().is_empty(),
        "no finalizer before the cloud answered"
    );
    let ready = n
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == cond::READY)
        .unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, expected_reason, "{}", ready.message);
    assert!(h
        .events
        .all()
        .iter()
        .any(|e| e.warning && e.reason == "ReconcileFailed"));
    h.delete("stuck-1").await;
    assert!(
        !h.exists("stuck-1").await,
        "deleted at once: nothing to clean up"
    );
}

#[tokio::test]
async fn node_whose_cloud_is_unreachable_stays_deletable_and_says_why() {
    let _shared = MOTO_LOAD.read().await;
    if Services::moto_endpoint_from_env().is_none() {
        return;
    }
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    assert_unreached_cloud_leaves_node_deletable(&closed, "cloud-unavailable").await;
}

#[tokio::test]
async fn node_with_bad_cloud_credentials_stays_deletable_and_says_why() {
    let _shared = MOTO_LOAD.read().await;
    if Services::moto_endpoint_from_env().is_none() {
        return;
    }
    // A moto that enforces authentication: the test's keys are unknown to it.
    let server =
        crate::cloud_support::SpawnedMoto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).await;
    assert_unreached_cloud_leaves_node_deletable(&server.endpoint, "cloud-refused").await;
}

#[tokio::test]
async fn a_pass_over_1000_nodes_makes_at_most_10_describes() {
    let _alone = MOTO_LOAD.write().await;
    if Services::moto_endpoint_from_env().is_none() {
        return;
    }
    // Its own moto, so 1,000 instances do not slow every other test's describes.
    let server = crate::cloud_support::SpawnedMoto::start(&[]).await;
    let nodes: Vec<_> = (0..1000)
        .map(|i| node(&format!("n-{i:04}"), "x", &["profile::base"]))
        .collect();
    let Some(mut s) = setup_at(&server.endpoint, "us-east-1", CloudProvider::Ec2, nodes).await
    else {
        return;
    };
    // A snapshot lives for a resync period: the whole pass shares one describe.
    Arc::get_mut(&mut s.h.ctx)
        .unwrap()
        .settings
        .snapshot_max_age = std::time::Duration::from_secs(600);
    let start = std::time::Instant::now();
    for i in 0..1000 {
        s.h.reconcile(&format!("n-{i:04}")).await.unwrap();
    }
    let first_pass = start.elapsed();
    println!(
        "BENCH first pass over 1,000 nodes (finalizer, record, launch each): {:.1} s",
        first_pass.as_secs_f64()
    );
    let (ec2_before, s3_before) = (s.moto.cloud.calls(), s.moto.records.counts());
    for i in 0..1000 {
        s.h.reconcile(&format!("n-{i:04}")).await.unwrap();
    }
    let calls = s.moto.cloud.calls();
    let s3 = s.moto.records.counts();
    let second_pass = start.elapsed() - first_pass;
    println!(
        "BENCH second pass over 1,000 nodes (nothing to do): {:.1} s, {:.0} no-op reconciles per second (one at a time, moto's describe shared from the snapshot)",
        second_pass.as_secs_f64(),
        1000.0 / second_pass.as_secs_f64()
    );
    println!(
        "BENCH second pass's calls: {} DescribeInstances, {} RunInstances; S3 {} list pages, {} GETs, {} HEADs, {} PUTs",
        calls.describe - ec2_before.describe,
        calls.run - ec2_before.run,
        s3.list_pages - s3_before.list_pages,
        s3.gets - s3_before.gets,
        s3.heads - s3_before.heads,
        s3.puts - s3_before.puts,
    );
    println!(
        "BENCH EC2 calls for both passes: {} DescribeInstances, {} RunInstances, {} TerminateInstances",
        calls.describe, calls.run, calls.terminate
    );
    println!(
        "BENCH S3 PUTs for both passes: {}",
        s.moto.records.put_count()
    );
    assert!(
        calls.describe <= 10,
        "DescribeInstances calls: {}",
        calls.describe
    );
    assert_eq!(calls.run, 1000);
    // Count without a tag filter: moto's tag filters are quadratic in the instance count.
    let mut pages = ec2(&s.endpoint, "us-east-1")
        .describe_instances()
        .max_results(1000)
        .into_paginator()
        .send();
    let mut ids = BTreeSet::new();
    while let Some(page) = pages.next().await {
        for r in page.unwrap().reservations() {
            for i in r.instances() {
                ids.insert(i.instance_id().unwrap().to_string());
            }
        }
    }
    assert_eq!(ids.len(), 1000, "one instance per node, none twice");
}

#[tokio::test]
async fn eucalyptus_master_on_another_endpoint_works() {
    let _shared = MOTO_LOAD.read().await;
    if Services::moto_endpoint_from_env().is_none() {
        return;
    }
    // A private cloud: its own endpoint and a region name AWS does not have.
    let moto =
        crate::cloud_support::SpawnedMoto::start(&[("MOTO_ALLOW_NONEXISTENT_REGION", "true")])
            .await;
    let Some(s) = setup_at(
        &moto.endpoint,
        "eucalyptus",
        CloudProvider::Eucalyptus,
        vec![node("euca-1", "x", &["profile::base"])],
    )
    .await
    else {
        return;
    };
    s.h.converge("euca-1", 3).await;
    let st = s.h.get("euca-1").await.status.unwrap();
    assert_eq!(st.phase, Some(Phase::AwaitingCsr));
    assert_eq!(live_instances(&s).await.len(), 1);
    assert!(s
        .moto
        .records
        .get(st.certname.as_deref().unwrap())
        .await
        .unwrap()
        .is_some());
}

/// Issue 11, failure 2: EC2 and S3 state lost together (here: the master's services now
/// answer from another region and an empty bucket). Status still names incarnation 1 and
/// its instance: that is evidence of a launch, so the node moves to incarnation 2 (a new
/// certname) instead of launching incarnation 1 again under a certname the CA already signed.
#[tokio::test]
async fn ec2_and_s3_state_lost_together_move_the_node_to_a_new_incarnation() {
    let _shared = MOTO_LOAD.read().await;
    let Some(s) = setup(
        "us-east-1",
        CloudProvider::Ec2,
        vec![node("lost-1", "x", &["profile::base"])],
    )
    .await
    else {
        return;
    };
    s.h.converge("lost-1", 3).await;
    let before = s.h.get("lost-1").await.status.unwrap();
    assert_eq!(before.incarnation, Some(1));
    assert!(before.instance_id.is_some());
    let old_certname = before.certname.clone().unwrap();

    let region = "eu-west-1";
    let lost = Arc::new(MotoServices::new(&s.endpoint, region, &unique("records")).await);
    let (subnet, group) = network(&ec2(&s.endpoint, region)).await;
    let masters: kube::Api<puppet_conductor::api::PuppetMaster> =
        kube::Api::namespaced(s.h.ctx.client.clone(), NS);
    let master_name = s.master_key.rsplit('/').next().unwrap().to_string();
    let mut m = masters.get(&master_name).await.unwrap();
    m.spec.node_defaults.subnet_id = Some(subnet);
    m.spec.node_defaults.security_group_ids = vec![group];
    masters
        .replace(&master_name, &Default::default(), &m)
        .await
        .unwrap();
    restarted(&s, lost.clone(), "lost-1", 3).await;
    let after = s.h.get("lost-1").await.status.unwrap();
    assert_eq!(after.incarnation, Some(2), "{after:?}");
    assert_ne!(after.certname.as_deref(), Some(old_certname.as_str()));
    let live: Vec<_> = lost
        .cloud
        .describe_master_instances(&s.master_key)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| {
            !matches!(
                i.state,
                InstanceState::ShuttingDown | InstanceState::Terminated
            )
        })
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].tag(tags::INCARNATION), Some("2"));
    let ids: Vec<String> = live.iter().map(|i| i.id.clone()).collect();
    lost.cloud.terminate(&ids).await.unwrap();
}

/// The master named `s.master_key`, changed by `change` in the fake API.
async fn change_master(s: &Setup, change: impl FnOnce(&mut puppet_conductor::api::PuppetMaster)) {
    let masters: kube::Api<puppet_conductor::api::PuppetMaster> =
        kube::Api::namespaced(s.h.ctx.client.clone(), NS);
    let name = s.master_key.rsplit('/').next().unwrap().to_string();
    let mut m = masters.get(&name).await.unwrap();
    change(&mut m);
    masters
        .replace(&name, &Default::default(), &m)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_node_with_no_image_anywhere_is_refused_before_anything_is_written() {
    let _shared = MOTO_LOAD.read().await;
    let Some(s) = setup(
        "us-east-1",
        CloudProvider::Ec2,
        vec![node("noimage-1", "x", &["role::webserver"])],
    )
    .await
    else {
        return;
    };
    change_master(&s, |m| m.spec.node_defaults.image_id = None).await;
    for _ in 0..2 {
        let error = s.h.reconcile("noimage-1").await.unwrap_err();
        assert!(error.is_permanent(), "{error:?}");
        assert!(
            puppet_conductor::controller::error::chain(&error).contains("no image"),
            "{error:?}"
        );
    }
    let n = s.h.get("noimage-1").await;
    let uid = n.metadata.uid.clone().unwrap();
    assert!(
        n.metadata.finalizers.clone().unwrap_or_default().is_empty(),
        "nothing to clean up, so no finalizer: {:?}",
        n.metadata.finalizers
    );
    assert!(
        s.moto
            .records
            .get(&format!("{uid}-1"))
            .await
            .unwrap()
            .is_none(),
        "no record for a spec that cannot launch"
    );
    assert!(live_instances(&s).await.is_empty());
    let status = n.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == cond::READY)
        .unwrap();
    assert!(ready.message.contains("no image"), "{ready:?}");
    assert!(s
        .h
        .events
        .all()
        .iter()
        .any(|e| e.warning && e.note.contains("no image")));

    // The master's default fixes it: the node launches.
    change_master(&s, |m| {
        m.spec.node_defaults.image_id = Some("ami-0123456789abcdef0".into())
    })
    .await;
    s.h.converge("noimage-1", 3).await;
    let n = s.h.get("noimage-1").await;
    assert_eq!(n.status.unwrap().phase, Some(Phase::AwaitingCsr));
    assert_eq!(live_instances(&s).await.len(), 1);
    assert!(s
        .moto
        .records
        .get(&format!("{uid}-1"))
        .await
        .unwrap()
        .is_some());
    let ids: Vec<String> = live_instances(&s).await.into_iter().map(|i| i.id).collect();
    s.moto.cloud.terminate(&ids).await.unwrap();
}

#[tokio::test]
async fn a_running_node_whose_spec_turns_unusable_is_not_rewritten_and_still_deletes() {
    let _shared = MOTO_LOAD.read().await;
    let Some(s) = setup(
        "us-east-1",
        CloudProvider::Ec2,
        vec![node("turns-bad-1", "x", &["role::webserver"])],
    )
    .await
    else {
        return;
    };
    s.h.converge("turns-bad-1", 3).await;
    let n = s.h.get("turns-bad-1").await;
    let certname = n.status.clone().unwrap().certname.unwrap();
    // A cloud-config key the operator reserves (`puppet`), with a class change beside it:
    // the record keeps what it had, nothing is launched again.
    let nodes = &s.h.nodes;
    let mut bad = n.clone();
    bad.spec.classes = vec!["role::other".into()];
    bad.spec
        .instance
        .cloud_config
        .insert("puppet".into(), serde_json::json!({"install": false}));
    nodes
        .replace("turns-bad-1", &Default::default(), &bad)
        .await
        .unwrap();
    let error = s.h.reconcile("turns-bad-1").await.unwrap_err();
    assert!(error.is_permanent(), "{error:?}");
    assert!(
        puppet_conductor::controller::error::chain(&error).contains("puppet"),
        "{error:?}"
    );
    let record = s.moto.records.get(&certname).await.unwrap().unwrap();
    assert_eq!(record.classes, vec!["role::webserver".to_string()]);
    assert_eq!(live_instances(&s).await.len(), 1);

    // Deletion cleans up whatever the spec has become.
    let d = s.h.deleted_copy("turns-bad-1").await;
    for _ in 0..4 {
        let _ = d.reconcile("turns-bad-1").await;
        if !d.exists("turns-bad-1").await {
            break;
        }
    }
    assert!(!d.exists("turns-bad-1").await, "released");
    assert!(live_instances(&s).await.is_empty());
    assert!(s.moto.records.get(&certname).await.unwrap().is_none());
}
