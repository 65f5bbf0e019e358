//! The PuppetMaster reconciler: finalizer → validate → probe CA, cloud and bucket → hold
//! the referenced Secrets → count nodes → report unknown CSRs and sweep orphans → status.
//! One file a stage; deletion in `deletion.rs`; the Secrets' in-use finalizer is
//! `controller/secret_hold.rs`.

pub mod deletion;
mod orphans;
mod probe;
mod status;
pub mod sweep;
mod validate;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};

use self::deletion::finish_deletion;
use self::orphans::sweep_orphans;
use self::probe::probe_ca;
use self::status::{publish_flips, report_pause, warn_unknown_csrs, write_status};
use self::validate::{reason_of, validate};
use crate::api::master::{PuppetMaster, PuppetMasterStatus};
use crate::api::node::{Phase, PuppetNode};
use crate::controller::error::{chain, ReconcileError};
use crate::controller::finalizers::{add_finalizer, has_finalizer};
use crate::controller::secret_hold::hold;
use crate::controller::{Context, MASTER_FINALIZER};
use crate::identity;
use crate::status::master::{invalid_spec_conditions, master_conditions, Probe, Probes};
use crate::sync::lock;
use puppet_conductor_core::pause::{master_pause, set_paused_condition};

/// What the `Paused` condition of a master says is stopped.
const MASTER_PAUSE_EFFECT: &str = "its orphan sweep removes nothing, and none of its nodes is \
    launched, replaced, signed, written or removed, until the annotation is removed (probes, \
    status and deletion go on)";

/// The live PuppetNodes in the operator's scope, as owners of certnames.
#[derive(Clone, Debug, Default)]
pub struct LiveNodes {
    /// UIDs of every live node.
    pub uids: HashSet<String>,
    /// Current certnames of every live node.
    pub certnames: HashSet<String>,
    /// Phase counts of this master's nodes.
    pub phases: BTreeMap<String, i32>,
}

/// One reconcile pass of a master (the `Controller`'s reconcile function).
pub async fn reconcile(
    master: Arc<PuppetMaster>,
    ctx: Arc<Context>,
) -> Result<Requeue, ReconcileError> {
    let ns = master
        .namespace()
        .ok_or(ReconcileError::MissingMetadata("namespace"))?;
    if master.meta().deletion_timestamp.is_some() {
        return finish_deletion(&master, &ctx, &ns).await;
    }
    let master = if has_finalizer(master.as_ref(), MASTER_FINALIZER) {
        master
    } else {
        let api: Api<PuppetMaster> = Api::namespaced(ctx.client.clone(), &ns);
        Arc::new(add_finalizer(&api, &master, MASTER_FINALIZER).await?)
    };
    let key = format!("{ns}/{}", master.name_any());
    let now = Utc::now();
    let old = master.status.clone().unwrap_or_default();
    let generation = master.meta().generation;
    // Paused: the sweep removes nothing; probes and status go on (its nodes read the same
    // annotation and hold their own actions). The finalizer above and the Secrets' holds
    // stay: they keep the nodes' cleanup possible, which a pause never blocks.
    let pause = master_pause(&master.name_any(), master.meta().annotations.as_ref());

    if let Err(problem) = validate(&master) {
        // Its nodes' cleanup still reads the Secrets, whatever the spec's other faults.
        let held = hold(&ctx, &ns, &master).await;
        let mut conditions = invalid_spec_conditions(&old.conditions, &problem, generation, now);
        set_paused_condition(
            &mut conditions,
            pause.as_ref(),
            MASTER_PAUSE_EFFECT,
            generation,
            now,
        );
        let status = PuppetMasterStatus {
            observed_generation: generation,
            conditions,
            ..old.clone()
        };
        report_pause(&master, &ctx, &old, pause.as_ref()).await;
        publish_flips(&master, &ctx, &old, &status).await;
        write_status(&ctx, &master, &ns, &status).await?;
        held?;
        return Err(ReconcileError::InvalidSpec(problem));
    }

    let live = live_nodes(&ctx, &ns, &master.name_any(), NodeView::Watched).await?;
    ctx.metrics.set_nodes_by_phase(&key, &live.phases);
    let mut sweep_failed = false;
    let (probes, pending) = match ctx.services.services(&master).await {
        Ok(services) => {
            let (ca, cloud, records) = tokio::join!(
                probe_ca(&services),
                services.cloud.probe(),
                services.records.probe()
            );
            let probes = Probes {
                ca: ca.fingerprint,
                cloud: match cloud {
                    Ok(()) => Probe::Ok(()),
                    Err(e) => Probe::failed("CloudUnreachable", &chain(&e)),
                },
                records: match records {
                    Ok(privacy) => Probe::Ok(privacy),
                    Err(e) => Probe::failed("RecordsUnreachable", &chain(&e)),
                },
            };
            if probes.ca.is_ok() && probes.cloud.is_ok() && probes.records.is_ok() {
                sweep_failed =
                    sweep_orphans(&master, &ctx, &key, &services, &live, pause.is_some())
                        .await
                        .is_err();
            }
            (probes, ca.pending)
        }
        Err(error) => (Probes::all_failed(reason_of(&error), &chain(&error)), None),
    };
    // After the services, which create the default challenge key Secret when it is absent.
    let held = hold(&ctx, &ns, &master).await;

    if let Some(pending) = &pending {
        warn_unknown_csrs(&master, &ctx, &key, pending, &live).await;
    }

    let mut conditions = master_conditions(&old.conditions, &probes, generation, now);
    set_paused_condition(
        &mut conditions,
        pause.as_ref(),
        MASTER_PAUSE_EFFECT,
        generation,
        now,
    );
    let status = PuppetMasterStatus {
        observed_generation: generation,
        conditions,
        ca_fingerprint: match &probes.ca {
            Probe::Ok(fp) => Some(fp.clone()),
            Probe::Failed { .. } => old.ca_fingerprint.clone(),
        },
        nodes: live.phases.clone(),
    };
    report_pause(&master, &ctx, &old, pause.as_ref()).await;
    publish_flips(&master, &ctx, &old, &status).await;
    write_status(&ctx, &master, &ns, &status).await?;
    // Not holding a Secret is retried with backoff like any failure (e.g. RBAC without patch).
    held?;

    let healthy =
        probes.ca.is_ok() && probes.cloud.is_ok() && probes.records.is_ok() && !sweep_failed;
    if healthy {
        ctx.backoff.reset(&master_backoff_key(&key));
        Ok(Requeue::requeue(ctx.settings.master_resync))
    } else {
        // Unreachable services are retried with capped backoff, not at the resync pace.
        Ok(Requeue::requeue(
            ctx.backoff
                .next_delay(&master_backoff_key(&key))
                .min(ctx.settings.master_resync),
        ))
    }
}

/// Error policy: an invalid spec waits for a change; anything else backs off.
pub fn error_policy(
    master: Arc<PuppetMaster>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Requeue {
    tracing::warn!(master = %master.name_any(), error = %chain(error), "master reconcile failed");
    if error.is_permanent() {
        return Requeue::await_change();
    }
    let key = format!(
        "{}/{}",
        master.namespace().unwrap_or_default(),
        master.name_any()
    );
    Requeue::requeue(error.retry_delay(
        &ctx.backoff,
        &master_backoff_key(&key),
        ctx.settings.converging,
    ))
}

/// Masters and nodes share the backoff table; keep their keys apart.
fn master_backoff_key(key: &str) -> String {
    format!("master:{key}")
}

/// How fresh a master's view of its nodes must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeView {
    /// The watch's store when it can stand for a LIST (phase counts, the sweep's owners:
    /// any node that launched was in it before its pass launched).
    Watched,
    /// A LIST of the API: the master's finalizer is released on what it says.
    Listed,
}

/// Owners of certnames across the operator's scope, and this master's phase counts.
pub async fn live_nodes(
    ctx: &Context,
    namespace: &str,
    master: &str,
    view: NodeView,
) -> Result<LiveNodes, ReconcileError> {
    let watched = match view {
        NodeView::Watched => ctx.node_cache.all(&ctx.settings.scope),
        NodeView::Listed => None,
    };
    let live = match watched {
        Some(nodes) => count_nodes(
            nodes.iter().filter_map(|n| n.0.as_ref().ok()),
            namespace,
            master,
        ),
        None => {
            // No label selector here: a node of another shard still owns its instance,
            // record and certificate, and the orphan sweep must never take it for an
            // orphan.
            let api: Api<PuppetNode> = ctx.settings.scope.api(ctx.client.clone());
            let listed = api
                .list(&kube::api::ListParams::default())
                .await
                .map_err(ReconcileError::Kube)?;
            count_nodes(listed.items.iter(), namespace, master)
        }
    };
    Ok(live)
}

fn count_nodes<'a>(
    nodes: impl Iterator<Item = &'a PuppetNode>,
    namespace: &str,
    master: &str,
) -> LiveNodes {
    // Every phase is listed, zeros included: a count that drops to zero must overwrite
    // the old value under server-side apply, not linger.
    let mut live = LiveNodes {
        phases: Phase::ALL.iter().map(|p| (phase_name(*p), 0)).collect(),
        ..LiveNodes::default()
    };
    for node in nodes {
        let Some(uid) = node.uid() else { continue };
        let status = node.status.as_ref();
        let incarnation = status.and_then(|s| s.incarnation).unwrap_or(1);
        live.certnames.insert(identity::certname(
            &uid,
            incarnation,
            node.spec.certname.as_deref(),
        ));
        if let Some(certname) = status.and_then(|s| s.certname.clone()) {
            live.certnames.insert(certname);
        }
        live.uids.insert(uid);
        if node.namespace().as_deref() == Some(namespace) && node.spec.master_ref.name == master {
            let phase = status.and_then(|s| s.phase).unwrap_or(Phase::Pending);
            *live.phases.entry(phase_name(phase)).or_default() += 1;
        }
    }
    live
}

fn phase_name(phase: Phase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{phase:?}"))
}

/// What the master reconciler remembers between passes (only to avoid repeating events).
#[derive(Default)]
pub struct MasterMemory {
    warned: std::sync::Mutex<HashSet<(String, String)>>,
}

impl MasterMemory {
    /// True the first time `(master, certname)` is seen.
    pub fn first_warning(&self, master_key: &str, certname: &str) -> bool {
        lock(&self.warned).insert((master_key.to_string(), certname.to_string()))
    }

    /// Keeps only the warnings of `master_key` for certnames in `still_unknown`: a CSR
    /// that was signed, cleaned or adopted is forgotten (and warned again if it returns).
    pub fn retain_warnings(&self, master_key: &str, still_unknown: &HashSet<&str>) {
        lock(&self.warned).retain(|(master, certname)| {
            master != master_key || still_unknown.contains(certname.as_str())
        });
    }

    /// Forgets everything about a master (it was deleted).
    pub fn forget(&self, master_key: &str) {
        lock(&self.warned).retain(|(master, _)| master != master_key);
    }
}
