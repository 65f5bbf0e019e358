//! The served API behaves as kube's client and runtime expect of an API server: the CRD
//! check the operator starts with, watches resumed from a list's resourceVersion, 410 for a
//! compacted one, pages, selectors and metadata-only answers. No services needed.

use std::path::Path;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::wait::{await_condition, conditions::is_crd_established};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::apiserver::ApiServer;

const NS: &str = "checks";

async fn server() -> (ApiServer, kube::Client) {
    puppet_conductor::tls::install_crypto_provider();
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let server = ApiServer::start("0000c4ec-0000-4000-8000-", &crds)
        .await
        .unwrap();
    let config = kube::Config::new(format!("http://{}", server.addr).parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    (server, client)
}

fn secret(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "dg=="}})
}

#[tokio::test]
async fn the_operators_crd_check_sees_both_crds_established() {
    let (server, client) = server().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for name in [
        "puppetnodes.puppet-conductor.dev",
        "puppetmasters.puppet-conductor.dev",
    ] {
        tokio::time::timeout(
            Duration::from_secs(10),
            await_condition(crds.clone(), name, is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("{name} not established"))
        .unwrap();
    }
    assert!(server.unserved().is_empty(), "{:?}", server.unserved());
}

#[tokio::test]
async fn a_watcher_lists_then_sees_every_later_change_in_order() {
    let (server, client) = server().await;
    let api = &server.api;
    api.create("secrets", NS, secret("before", json!({})))
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client, NS);
    let mut events = watcher(secrets, watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    // Init, the listed Secret, InitDone.
    for _ in 0..3 {
        seen.push(format!("{:?}", events.try_next().await.unwrap().unwrap()));
    }
    assert!(seen[1].contains("\"before\""), "{seen:?}");
    api.create("secrets", NS, secret("after", json!({})))
        .unwrap();
    api.edit("secrets", NS, "after", &json!({"data": {"k": "dw=="}}));
    api.delete("secrets", NS, "after");
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("a watch event")
            .unwrap()
            .unwrap();
        kinds.push(match event {
            watcher::Event::Apply(s) => format!("apply {} {:?}", s.name_any(), s.data),
            watcher::Event::Delete(s) => format!("delete {}", s.name_any()),
            other => format!("{other:?}"),
        });
    }
    assert!(
        kinds[0].starts_with("apply after") && kinds[0].contains("[118]"),
        "{kinds:?}"
    );
    assert!(
        kinds[1].starts_with("apply after") && kinds[1].contains("[119]"),
        "{kinds:?}"
    );
    assert_eq!(kinds[2], "delete after");
    assert!(server.unserved().is_empty(), "{:?}", server.unserved());
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_is_answered_410_gone() {
    let (server, _client) = server().await;
    let api = &server.api;
    api.keep_changes(2);
    for i in 0..5 {
        api.create("secrets", NS, secret(&format!("s{i}"), json!({})))
            .unwrap();
    }
    let url = format!(
        "http://{}/api/v1/namespaces/{NS}/secrets?watch=true&resourceVersion=1&timeoutSeconds=2",
        server.addr
    );
    let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let first: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "ERROR", "{body}");
    assert_eq!(first["object"]["code"], 410, "{body}");
}

#[tokio::test]
async fn lists_page_filter_by_selector_and_answer_metadata_only() {
    let (server, client) = server().await;
    let api = &server.api;
    for i in 0..5 {
        let labels = json!({"shard": if i % 2 == 0 { "even" } else { "odd" }});
        api.create("secrets", NS, secret(&format!("s{i}"), labels))
            .unwrap();
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let page = secrets.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("a continue token");
    let rest = secrets
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<String> = page
        .items
        .iter()
        .chain(&rest.items)
        .map(|s| s.name_any())
        .collect();
    assert_eq!(names, ["s0", "s1", "s2", "s3", "s4"]);
    assert_eq!(rest.metadata.continue_.as_deref().unwrap_or(""), "");

    let even = secrets
        .list(&ListParams::default().labels("shard=even"))
        .await
        .unwrap();
    assert_eq!(even.items.len(), 3);
    let named = secrets
        .list(&ListParams::default().fields("metadata.name=s3"))
        .await
        .unwrap();
    assert_eq!(named.items.len(), 1);

    let meta = secrets.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(meta.items.len(), 5);
    let url = format!("http://{}/api/v1/namespaces/{NS}/secrets", server.addr);
    let raw: Value = reqwest::Client::new()
        .get(&url)
        .header(
            "accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["kind"], "PartialObjectMetadataList");
    assert!(raw["items"][0]["data"].is_null(), "{raw}");

    // As the operator watches Secrets: `Api<PartialObjectMeta<Secret>>` asks for metadata.
    let metas: Api<PartialObjectMeta<Secret>> = Api::namespaced(client, NS);
    let mut changes = watcher(metas, watcher::Config::default())
        .applied_objects()
        .boxed();
    for _ in 0..5 {
        changes.try_next().await.unwrap();
    }
    api.create("secrets", NS, secret("late", json!({})))
        .unwrap();
    let late = tokio::time::timeout(Duration::from_secs(10), changes.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(late.name_any(), "late");
    assert!(server.unserved().is_empty(), "{:?}", server.unserved());
}
