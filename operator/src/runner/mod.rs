//! `puppet-conductor run`: both controllers in one process, behind the CRDs being
//! established and (optionally) a Lease, with /metrics, /healthz and /readyz served
//! throughout, stopping on SIGTERM within a bounded time.

pub mod config;
pub mod pool_triggers;
pub mod signing_watch;
pub mod slim;
pub mod triggers;
pub mod wiring;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::wait::{await_condition, conditions::is_crd_established};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, CustomResourceExt, ResourceExt};
use tokio_util::sync::CancellationToken;

use self::config::RunConfig;
use self::pool_triggers::{pool_node_triggers, GuardedPool};
use self::triggers::{secret_triggers, SecretMeta};
use self::wiring::{
    drain_within, hold_sweep, master_controller, master_error_policy, master_triggers,
    node_controller, node_error_policy, pool_controller, pool_error_policy, reconcile_master,
    reconcile_node, reconcile_pool, GuardedMaster, GuardedNode, HoldCaches,
};
use crate::api::master::PuppetMaster;
use crate::api::node::PuppetNode;
use crate::api::pool::PuppetNodePool;
use crate::controller::context::Scope;
use crate::controller::events::KubeEvents;
use crate::controller::services::{ClientSettings, KubeServiceFactory};
use crate::controller::Context;
use crate::http_server::{serve, Health, HttpState};
use crate::leader::{LeaderElector, LeaderError, Round};
use crate::metrics::Metrics;

/// Why `run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A flag is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// No usable kubeconfig or in-cluster configuration.
    #[error("connecting to Kubernetes")]
    Client(#[source] Box<kube::Error>),
    /// The HTTP address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Leadership was lost (the process exits and restarts as a standby).
    #[error("leader election")]
    Leader(#[from] LeaderError),
}

/// Cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = terminate => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        trigger.cancel();
    });
    token
}

/// Runs the operator against the cluster in the default kubeconfig or in-cluster config.
pub async fn run(config: RunConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    crate::tls::install_crypto_provider();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| RunError::Client(Box::new(e)))?;
    run_with_client(client, config, shutdown).await
}

/// Runs the operator with `client` until `shutdown` is cancelled.
pub async fn run_with_client(
    client: kube::Client,
    config: RunConfig,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.http_addr,
            source,
        })?;
    tracing::info!(addr = %config.http_addr, "serving /metrics, /healthz, /readyz");
    let http = tokio::spawn(serve(
        listener,
        HttpState {
            metrics: metrics.clone(),
            health: health.clone(),
        },
        shutdown.clone().cancelled_owned(),
    ));

    // `lead_and_run` watches `shutdown` itself, so it can release the Lease on the way out.
    let result = lead_and_run(client, &config, metrics, health, shutdown.clone()).await;
    shutdown.cancel();
    if let Ok(Err(error)) = http.await {
        tracing::warn!(%error, "HTTP server stopped with an error");
    }
    result
}

async fn lead_and_run(
    client: kube::Client,
    config: &RunConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    tokio::select! {
        () = wait_for_crds(&client) => {}
        _ = shutdown.cancelled() => return Ok(()),
    }
    health.set_ready(true);
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            Arc::new(
                KubeServiceFactory::new(
                    client.clone(),
                    ClientSettings {
                        call_timeout: config.call_timeout,
                        ..ClientSettings::default()
                    },
                )
                .with_metrics(metrics.clone()),
            ),
            Arc::new(KubeEvents::new(
                client.clone(),
                "puppet-conductor",
                Some(config.identity.clone()),
            )),
            config.settings.clone(),
        )
        .with_metrics(metrics.clone()),
    );
    let Some(lease) = &config.lease else {
        health.set_leader(true);
        metrics.set_leader(true);
        run_controllers(client, ctx, config.concurrency, shutdown).await;
        return Ok(());
    };
    let elector = LeaderElector::new(client.clone(), lease.clone());
    tracing::info!(lease = %lease.name, identity = %lease.identity, "waiting for leadership");
    let acquired = elector.acquire(|round| match round {
        Ok(Round::Following(holder)) => tracing::debug!(%holder, "standing by"),
        Ok(Round::Leading) => tracing::info!("leading"),
        Err(error) => tracing::warn!(%error, "election round failed"),
    });
    tokio::select! {
        () = acquired => {}
        _ = shutdown.cancelled() => return Ok(()),
    }
    health.set_leader(true);
    metrics.set_leader(true);
    let outcome = elector
        .hold(run_controllers(client, ctx, config.concurrency, shutdown))
        .await;
    health.set_leader(false);
    metrics.set_leader(false);
    if let Err(error) = elector.release().await {
        tracing::warn!(%error, "could not release the Lease; a standby takes over when it expires");
    }
    outcome.map_err(RunError::from)
}

/// Longest pause between attempts to read the CRDs while the API server is unreachable.
const CRD_RETRY_CAP: std::time::Duration = std::time::Duration::from_secs(30);

/// Master events the store keeps for its subscriber (the nodes' triggers) before the
/// watch waits for it to catch up.
const MASTER_EVENT_BUFFER: usize = 256;

/// Waits until the master and node CRDs are established (the controllers' watches fail
/// without them). An unreachable or failing API server is retried with capped backoff
/// while /healthz keeps answering, so a blip at start-up does not crash-loop the pod.
async fn wait_for_crds(client: &kube::Client) {
    wait_for_crd_names(client, &[PuppetMaster::crd_name(), PuppetNode::crd_name()]).await;
}

async fn wait_for_crd_names(client: &kube::Client, names: &[&str]) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut delay = std::time::Duration::from_secs(1);
    for &name in names {
        tracing::info!(crd = name, "waiting for CRD to be established");
        while let Err(error) = await_condition(api.clone(), name, is_crd_established()).await {
            tracing::warn!(crd = name, %error, retry_in = ?delay, "cannot read the CRD; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(CRD_RETRY_CAP);
        }
    }
}

/// How long reconciles in flight at SIGTERM may go on before they are dropped: well inside
/// the pod's termination grace period (the chart leaves Kubernetes' default, 30 s), leaving
/// time to release the Lease and exit. A single call may take `--call-timeout` (20 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

fn watch_config(scope: &Scope) -> watcher::Config {
    match &scope.label_selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    }
}

/// Both controllers until `shutdown`: then no reconcile starts, and those in flight get
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn run_controllers(
    client: kube::Client,
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: CancellationToken,
) {
    let scope = ctx.settings.scope.clone();
    let node_api: Api<GuardedNode> = scope.api(client.clone());
    let master_api: Api<GuardedMaster> = scope.api(client.clone());
    let wc = watch_config(&scope);
    // Every Secret of the scope's namespaces (Secrets carry no shard labels), metadata only.
    let secret_api: Api<SecretMeta> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };

    // Cached nodes and masters keep only what the passes read (`slim`).
    let (node_reader, node_writer) = reflector::store();
    let nodes = watcher(node_api, wc.clone())
        .default_backoff()
        .modify(slim::slim_cached)
        .reflect(node_writer)
        .applied_objects();
    // One watch of the masters feeds their store, which node passes read their master from
    // (`MasterCache`), and the master controller; the nodes' master triggers come from the
    // same store's subscription, so a node woken by a master change reads that change.
    let (master_reader, master_writer) = reflector::store_shared(MASTER_EVENT_BUFFER);
    let Some(master_subscription) = master_writer.subscribe() else {
        tracing::error!("the master store takes no subscribers; controllers not started");
        return;
    };
    ctx.master_cache.attach(master_reader.clone());
    ctx.node_cache.attach(node_reader.clone());
    let masters = watcher(master_api, wc.clone())
        .default_backoff()
        .modify(slim::slim_cached)
        .reflect_shared(master_writer)
        .applied_objects();
    // Only spec changes of a master re-trigger its nodes, not its status writes; they also
    // wake the hold sweep for the master's namespace (a reference may have moved).
    let (wake_sweep, sweep_woken) = tokio::sync::mpsc::unbounded_channel();
    let master_changes = master_triggers(
        master_subscription.map(|master| Ok::<_, watcher::Error>(GuardedMaster::clone(&master))),
    )
    .inspect(move |_| {
        let _ = wake_sweep.send(());
    });
    // Annotations are dropped too: kubectl's last-applied copy holds the Secret's data.
    let (secret_reader, secret_writer) = reflector::store();
    let secrets = secret_triggers(
        watcher(secret_api, watcher::Config::default())
            .default_backoff()
            .modify(|s| {
                s.managed_fields_mut().clear();
                s.annotations_mut().clear();
            })
            .reflect(secret_writer),
    );
    ctx.services.attach_secret_versions(secret_reader.clone());
    ctx.secret_cache.attach(secret_reader.clone());
    let sweep = hold_sweep(
        ctx.clone(),
        HoldCaches {
            secrets: secret_reader,
            masters: master_reader.clone(),
            nodes: node_reader.clone(),
        },
        sweep_woken,
        ctx.settings.master_resync,
        shutdown.clone(),
    );

    // Nodes whose instance a master's describe found gone, or whose CA entry a listing
    // found changed, are reconciled now.
    let mut wakes = ctx.snapshots.subscribe_wakes();
    let wakes = futures::stream::poll_fn(move |cx| wakes.poll_recv(cx));
    let watch = signing_watch::signing_watch(
        ctx.clone(),
        master_reader.clone(),
        node_reader.clone(),
        shutdown.clone(),
    );
    let node_run = node_controller(nodes, node_reader, master_changes, wakes, concurrency)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile_node, node_error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "node reconcile");
            }
        });
    let master_run = master_controller(masters, master_reader, secrets, concurrency)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile_master, master_error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "master reconcile");
            }
        });
    // Pools start once their CRD is there: Helm does not upgrade the CRDs of an installed
    // chart, so an upgrade from a release without pools runs nodes and masters meanwhile.
    let pool_run = {
        let shutdown = shutdown.clone();
        async move {
            let pool_crd = [PuppetNodePool::crd_name()];
            tokio::select! {
                () = wait_for_crd_names(&client, &pool_crd) => {}
                () = shutdown.cancelled() => return,
            }
            let pool_api: Api<GuardedPool> = scope.api(client.clone());
            let (pool_reader, pool_writer) = reflector::store();
            let pools = watcher(pool_api, wc.clone())
                .default_backoff()
                .modify(slim::slim_cached)
                .reflect(pool_writer)
                .applied_objects();
            // A watch of its own (no store): the pools must see deletions, which a store's
            // subscription does not pass on.
            let node_api: Api<GuardedNode> = scope.api(client.clone());
            let pool_nodes = pool_node_triggers(watcher(node_api, wc).default_backoff());
            tracing::info!("pool controller started");
            pool_controller(pools, pool_reader, pool_nodes, concurrency)
                .graceful_shutdown_on(shutdown.cancelled_owned())
                .run(reconcile_pool, pool_error_policy, ctx)
                .for_each(|result| async move {
                    if let Err(error) = result {
                        tracing::debug!(%error, "pool reconcile");
                    }
                })
                .await;
        }
    };
    tracing::info!("controllers started");
    let all = async {
        futures::join!(node_run, master_run, sweep, watch, pool_run);
    };
    if drain_within(all, &shutdown, SHUTDOWN_GRACE).await {
        tracing::info!("controllers stopped");
    } else {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "reconciles still running after SIGTERM were dropped");
    }
}
