//! Holding the Secrets a PuppetMaster references (CA client certificate, cloud and records
//! credentials, challenge key) with an in-use finalizer, so that deleting the namespace or
//! pruning a GitOps directory cannot remove them while the master's nodes still need them
//! for their cleanup.
//!
//! A master needs its Secrets while it is live, and while it is being deleted but a
//! PuppetNode still names it. The master reconcile adds the finalizer where it is missing
//! (no write when it is held already); `finish_deletion` releases the master's Secrets
//! before its own finalizer, so a crash in between leaves the master there to retry.
//! Whatever else leaves a hold behind (a spec that now names another Secret, a master
//! removed by hand, two masters sharing a Secret released at once) is found by the runner
//! from its caches ([`stale_holds`]) and confirmed against the API before release
//! ([`release_unneeded`]). A held Secret that is deleted stays readable (Terminating) and
//! the services keep using it until it is released.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::core::DeserializeGuard;
use kube::{Resource, ResourceExt};

use super::error::ReconcileError;
use super::finalizers::{add_finalizer, has_finalizer, remove_finalizer, secret_finalizer_key};
use super::services::default_challenge_secret_name;
use super::{Context, SECRET_FINALIZER};
use crate::api::master::PuppetMaster;
use crate::api::node::PuppetNode;

/// A PuppetMaster as listed or cached: a malformed one must not hide the others.
type Guarded<K> = DeserializeGuard<K>;

/// Names of the Secrets `master` reads (all in its namespace).
pub fn referenced_secrets(master: &PuppetMaster) -> BTreeSet<String> {
    let spec = &master.spec;
    let mut names = BTreeSet::from([spec.ca.client_secret_ref.name.clone()]);
    names.extend(
        spec.cloud
            .credentials_secret_ref
            .iter()
            .map(|r| r.name.clone()),
    );
    names.extend(
        spec.records
            .credentials_secret_ref
            .iter()
            .map(|r| r.name.clone()),
    );
    names.insert(
        spec.signing
            .challenge_key_secret_ref
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_else(|| default_challenge_secret_name(&master.name_any())),
    );
    names
}

/// Which Secrets the masters of one namespace still need.
#[derive(Clone, Debug, Default)]
pub struct Holders {
    /// Per master (by name): the Secrets it needs now (none once it no longer needs any).
    needed: BTreeMap<String, BTreeSet<String>>,
    /// A master could not be read, so what it references is unknown: nothing is released.
    unknown: bool,
}

impl Holders {
    /// From the masters and nodes of `namespace` (objects of other namespaces are skipped).
    /// A master needs its Secrets unless it is being deleted and no node names it any more;
    /// a node that cannot be read might name any master, so it keeps every deleting one.
    pub fn new<'a>(
        namespace: &str,
        masters: impl IntoIterator<Item = &'a Guarded<PuppetMaster>>,
        nodes: impl IntoIterator<Item = &'a Guarded<PuppetNode>>,
    ) -> Self {
        let in_namespace = |meta: &ObjectMeta| meta.namespace.as_deref() == Some(namespace);
        let mut named = BTreeSet::new();
        let mut any_unreadable_node = false;
        for node in nodes.into_iter().filter(|n| in_namespace(n.meta())) {
            match &node.0 {
                Ok(n) => {
                    named.insert(n.spec.master_ref.name.clone());
                }
                Err(_) => any_unreadable_node = true,
            }
        }
        let mut holders = Holders::default();
        for master in masters.into_iter().filter(|m| in_namespace(m.meta())) {
            let Ok(m) = &master.0 else {
                holders.unknown = true;
                continue;
            };
            let name = m.name_any();
            let deleting = m.meta().deletion_timestamp.is_some();
            let needs = !deleting || any_unreadable_node || named.contains(&name);
            let secrets = if needs {
                referenced_secrets(m)
            } else {
                BTreeSet::new()
            };
            holders.needed.insert(name, secrets);
        }
        holders
    }

    /// Whether a master other than `except` needs the Secret `secret`.
    pub fn needs(&self, secret: &str, except: Option<&str>) -> bool {
        self.unknown
            || self.needed.iter().any(|(master, secrets)| {
                Some(master.as_str()) != except && secrets.contains(secret)
            })
    }
}

/// Held Secrets (from a cache of Secret metadata) that no cached master needs, by
/// namespace. The caches may lag or miss masters of another shard, so each candidate is
/// confirmed with [`release_unneeded`] before it is released.
pub fn stale_holds<'a>(
    secrets: impl IntoIterator<Item = &'a ObjectMeta>,
    masters: &[&Guarded<PuppetMaster>],
    nodes: &[&Guarded<PuppetNode>],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut held: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for meta in secrets {
        let holds = meta
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == SECRET_FINALIZER));
        if let (true, Some(ns), Some(name)) = (holds, &meta.namespace, &meta.name) {
            held.entry(ns.clone()).or_default().insert(name.clone());
        }
    }
    held.into_iter()
        .filter_map(|(ns, names)| {
            let holders = Holders::new(&ns, masters.iter().copied(), nodes.iter().copied());
            let stale: BTreeSet<String> = names
                .into_iter()
                .filter(|name| !holders.needs(name, None))
                .collect();
            (!stale.is_empty()).then_some((ns, stale))
        })
        .collect()
}

fn secrets_api(ctx: &Context, namespace: &str) -> Api<Secret> {
    Api::namespaced(ctx.client.clone(), namespace)
}

/// Adds the in-use finalizer to each Secret `master` references that exists and lacks it;
/// returns how many it added. A Secret the watch shows held, or that this process held
/// (or read held) since the watch's copy, is not read again; the others are read from
/// the API. A missing Secret is left to the services' own error, and one
/// already being deleted cannot take a new finalizer (the API forbids it): it is still
/// read until it goes.
pub async fn hold(
    ctx: &Context,
    namespace: &str,
    master: &PuppetMaster,
) -> Result<usize, ReconcileError> {
    let api = secrets_api(ctx, namespace);
    let mut added = 0;
    for name in referenced_secrets(master) {
        let key = secret_finalizer_key(namespace, &name);
        let cached = ctx.secret_cache.version(namespace, &name);
        let watched = ctx.secret_cache.is_watched();
        if ctx.secret_cache.holds(namespace, &name, SECRET_FINALIZER)
            || (watched && ctx.added_finalizers.noted(&key, cached.as_deref()))
        {
            continue;
        }
        let Some(secret) = api.get_opt(&name).await.map_err(ReconcileError::Kube)? else {
            continue;
        };
        if has_finalizer(&secret, SECRET_FINALIZER) {
            ctx.added_finalizers.note(&key, cached.as_deref());
            continue;
        }
        if secret.meta().deletion_timestamp.is_some() {
            tracing::warn!(
                namespace,
                secret = %name,
                master = %master.name_any(),
                "Secret is being deleted and was not held; it goes once nothing else holds it"
            );
            continue;
        }
        add_finalizer(&api, &secret, SECRET_FINALIZER).await?;
        ctx.added_finalizers.note(&key, cached.as_deref());
        added += 1;
    }
    Ok(added)
}

/// Releases the Secrets `master` references, which it no longer needs (it is being deleted
/// and no node names it), unless another master of the namespace still needs them.
pub async fn release_for(
    ctx: &Context,
    namespace: &str,
    master: &PuppetMaster,
) -> Result<Vec<String>, ReconcileError> {
    let name = master.name_any();
    release(ctx, namespace, &referenced_secrets(master), Some(&name)).await
}

/// Releases the held Secrets among `names` that no master of `namespace` needs; returns the
/// names released. The masters and nodes are listed from the API (every shard's, not only
/// the cached ones), and only when one of the Secrets is held.
pub async fn release_unneeded(
    ctx: &Context,
    namespace: &str,
    names: &BTreeSet<String>,
) -> Result<Vec<String>, ReconcileError> {
    release(ctx, namespace, names, None).await
}

async fn release(
    ctx: &Context,
    namespace: &str,
    names: &BTreeSet<String>,
    except: Option<&str>,
) -> Result<Vec<String>, ReconcileError> {
    let api = secrets_api(ctx, namespace);
    let mut held = Vec::new();
    for name in names {
        if let Some(secret) = api.get_opt(name).await.map_err(ReconcileError::Kube)? {
            if has_finalizer(&secret, SECRET_FINALIZER) {
                held.push(secret);
            }
        }
    }
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let masters: Api<Guarded<PuppetMaster>> = Api::namespaced(ctx.client.clone(), namespace);
    let nodes: Api<Guarded<PuppetNode>> = Api::namespaced(ctx.client.clone(), namespace);
    let lp = ListParams::default();
    let masters = masters.list(&lp).await.map_err(ReconcileError::Kube)?;
    let nodes = nodes.list(&lp).await.map_err(ReconcileError::Kube)?;
    let holders = Holders::new(namespace, &masters.items, &nodes.items);
    let mut released = Vec::new();
    for secret in held {
        let name = secret.name_any();
        if holders.needs(&name, except) {
            continue;
        }
        ctx.added_finalizers
            .forget(&secret_finalizer_key(namespace, &name));
        match remove_finalizer(&api, &secret, SECRET_FINALIZER).await {
            Ok(()) => {}
            // Gone meanwhile: nothing left to release.
            Err(ReconcileError::Kube(kube::Error::Api(e))) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
        tracing::info!(namespace, secret = %name, "released Secret: no PuppetMaster needs it any more");
        released.push(name);
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::master::{CaSpec, CloudSpec, PuppetMasterSpec, RecordsSpec};
    use crate::api::node::PuppetNodeSpec;
    use crate::api::{MasterRef, SecretRef};

    fn master(name: &str, ca: &str, cloud: Option<&str>) -> PuppetMaster {
        let mut m = PuppetMaster::new(
            name,
            PuppetMasterSpec {
                server: "puppet".into(),
                port: 8140,
                ca: CaSpec {
                    url: "https://ca:8140".into(),
                    client_secret_ref: SecretRef { name: ca.into() },
                },
                cloud: CloudSpec {
                    provider: Default::default(),
                    region: "us-east-1".into(),
                    endpoint: None,
                    credentials_secret_ref: cloud.map(|n| SecretRef { name: n.into() }),
                },
                records: RecordsSpec {
                    bucket: "b".into(),
                    prefix: "nodes/".into(),
                    endpoint: None,
                    force_path_style: false,
                    region: None,
                    credentials_secret_ref: None,
                },
                signing: Default::default(),
                node_defaults: Default::default(),
                orphans: Default::default(),
            },
        );
        m.metadata.namespace = Some("ns".into());
        m
    }

    fn deleting(mut m: PuppetMaster) -> PuppetMaster {
        m.metadata.deletion_timestamp = Some(crate::status::conditions::time(chrono::Utc::now()));
        m
    }

    fn node(master: &str) -> Guarded<PuppetNode> {
        let mut n = PuppetNode::new(
            "n",
            PuppetNodeSpec {
                master_ref: MasterRef {
                    name: master.into(),
                },
                classes: vec![],
                environment: None,
                parameters: Default::default(),
                instance: Default::default(),
                certname: None,
                replace_policy: Default::default(),
                deletion_policy: Default::default(),
            },
        );
        n.metadata.namespace = Some("ns".into());
        DeserializeGuard(Ok(n))
    }

    fn guard(m: PuppetMaster) -> Guarded<PuppetMaster> {
        DeserializeGuard(Ok(m))
    }

    fn held(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            finalizers: Some(vec![SECRET_FINALIZER.into()]),
            ..Default::default()
        }
    }

    #[test]
    fn a_master_references_its_ca_credentials_and_challenge_key_secrets() {
        let mut m = master("pm", "ca-client", Some("cloud"));
        assert_eq!(
            referenced_secrets(&m),
            BTreeSet::from([
                "ca-client".into(),
                "cloud".into(),
                "pm-challenge-key".into()
            ])
        );
        m.spec.records.credentials_secret_ref = Some(SecretRef {
            name: "records".into(),
        });
        m.spec.signing.challenge_key_secret_ref = Some(SecretRef { name: "key".into() });
        assert_eq!(
            referenced_secrets(&m),
            BTreeSet::from([
                "ca-client".into(),
                "cloud".into(),
                "key".into(),
                "records".into()
            ])
        );
    }

    #[test]
    fn a_deleting_master_needs_its_secrets_only_while_a_node_names_it() {
        let masters = [guard(deleting(master("pm", "ca", None)))];
        let with_node = Holders::new("ns", &masters, &[node("pm")]);
        assert!(with_node.needs("ca", None));
        assert!(!with_node.needs("ca", Some("pm")), "its own release");
        let without = Holders::new("ns", &masters, &[node("other")]);
        assert!(!without.needs("ca", None));
    }

    #[test]
    fn a_shared_secret_is_needed_while_any_master_needs_it() {
        let masters = [
            guard(deleting(master("a", "shared", None))),
            guard(master("b", "shared", None)),
        ];
        let holders = Holders::new("ns", &masters, &[]);
        assert!(holders.needs("shared", Some("a")), "b is live");
        assert!(
            !holders.needs("shared", Some("b")),
            "a is deleting with no node"
        );
        // Masters of another namespace do not count.
        let elsewhere = Holders::new("other-ns", &masters, &[]);
        assert!(!elsewhere.needs("shared", None));
    }

    #[test]
    fn an_unreadable_master_keeps_every_secret_of_its_namespace() {
        let invalid: Guarded<PuppetMaster> = serde_json::from_value(serde_json::json!({
            "apiVersion": "puppet-conductor.dev/v1alpha1",
            "kind": "PuppetMaster",
            "metadata": {"name": "broken", "namespace": "ns"},
            "spec": {"ca": 42}
        }))
        .unwrap();
        assert!(invalid.0.is_err());
        let holders = Holders::new("ns", [&invalid], []);
        assert!(holders.needs("anything", None));
    }

    #[test]
    fn stale_holds_are_held_secrets_no_cached_master_needs() {
        let live = guard(master("pm", "ca", Some("cloud")));
        let secrets = [held("ca"), held("old-cloud"), {
            let mut not_held = held("unrelated");
            not_held.finalizers = None;
            not_held
        }];
        let stale = stale_holds(secrets.iter(), &[&live], &[]);
        assert_eq!(
            stale,
            BTreeMap::from([("ns".to_string(), BTreeSet::from(["old-cloud".to_string()]))])
        );
        assert!(stale_holds([&held("ca")], &[&live], &[]).is_empty());
    }
}
