//! The checker can fail: each invariant the polls and the final check guard is shown the
//! state it forbids, made by hand in moto, S3 and the real CA, and must report it.

use std::collections::BTreeSet;
use std::sync::Mutex;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use puppet_conductor::ca::PuppetCa;
use puppet_conductor::cloud::tags;
use serde_json::json;
use tokio::time::Instant;

use crate::agents;
use crate::apiserver::MemoryApi;
use crate::invariants::{final_outside, poll, Ledger, Outside, OutsideConfig};
use crate::services::Services;

#[tokio::test]
async fn every_invariant_reports_the_state_it_forbids() {
    let Some(svc) = Services::from_env() else {
        return;
    };
    puppet_conductor::tls::install_crypto_provider();
    let id = crate::trial::run_id();
    let ns = format!("check-{id}");
    let uid_prefix = format!("{id}-c4ec-4000-8000-");
    let uid = format!("{uid_prefix}000000000001");
    let certname = format!("{uid}-1");
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let (cert, key, ca_pem) = (
        read(&svc.puppet.client_cert),
        read(&svc.puppet.client_key),
        read(&svc.puppet.ca_cert),
    );
    let outside = Outside::new(
        &OutsideConfig {
            moto: &svc.moto_endpoint,
            ca_url: &svc.puppet.ca_url,
            client_cert: &cert,
            client_key: &key,
            ca_pem: &ca_pem,
        },
        "pc-crash-trials",
        &format!("{ns}/"),
        &format!("{ns}/pm"),
        &uid_prefix,
    )
    .unwrap();
    outside.ensure_bucket().await.unwrap();

    // Node n was deleted and is gone from the API; the master is gone too, while another
    // node still names it.
    let api = MemoryApi::served(&format!("{id}-c4ec-4000-9000-"));
    api.create(
        "puppetnodes",
        &ns,
        json!({"metadata": {"name": "other"}, "spec": {"masterRef": {"name": "pm"}}}),
    )
    .unwrap();
    let ledger = Mutex::new(Ledger::default());
    {
        let mut l = ledger.lock().unwrap();
        l.uids.insert("n".into(), uid.clone());
        l.deleted.insert("n".into(), Instant::now());
        l.submitted.insert(
            certname.clone(),
            BTreeSet::from(["another key".to_string()]),
        );
    }
    // Two live instances for it, an object under the prefix, and a certificate the CA
    // signed for a key no agent sent.
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    let launched = outside
        .ec2
        .run_instances()
        .image_id("ami-0123456789abcdef0")
        .min_count(2)
        .max_count(2)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(tag(tags::MASTER, &outside.master_key))
                .tags(tag(tags::NODE_UID, &uid))
                .tags(tag(tags::CERTNAME, &certname))
                .tags(tag(tags::INCARNATION, "1"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = launched
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    let object = format!("{ns}/records/{certname}.json");
    outside
        .s3
        .put_object()
        .bucket(&outside.bucket)
        .key(&object)
        .body(b"{}".to_vec().into())
        .send()
        .await
        .unwrap();
    let (pem, _) = agents::csr(&certname, "not a challenge", "i-0");
    assert_eq!(outside.submit_csr(&certname, &pem).await.unwrap(), 200);
    outside.ca.sign(&certname).await.unwrap();

    poll(&outside, &api, &ns, &ledger).await;
    let finals = final_outside(&outside, &ledger).await;

    // Clean up before asserting.
    outside
        .ec2
        .terminate_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
        .unwrap();
    outside.ca.revoke_and_clean(&certname).await.unwrap();
    outside
        .s3
        .delete_object()
        .bucket(&outside.bucket)
        .key(&object)
        .send()
        .await
        .unwrap();

    let violations = ledger.lock().unwrap().violations.clone();
    for expected in [
        "2 live instances at once",
        "was released while its instance(s)",
        "released while the CA still held a signed certificate",
        "which no agent of the trial submitted",
        "remained",
        "the master was released while nodes still named it",
    ] {
        assert!(
            violations.iter().any(|v| v.contains(expected)),
            "no violation says {expected:?}: {violations:#?}"
        );
    }
    for expected in [
        "is still running",
        "still holds a signed certificate",
        "remains after every node was deleted",
    ] {
        assert!(
            finals.problems.iter().any(|v| v.contains(expected)),
            "no final problem says {expected:?}: {:#?}",
            finals.problems
        );
    }
}
