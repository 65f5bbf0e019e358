//! The runner's side of the shared CA watch: every master in the watch's store is looked
//! at once per `signing.pollInterval` (`controller::signing_watch`), all due masters at
//! once, so one slow CA does not delay the others' listings by more than its call.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::join_all;
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::api::master::MIN_POLL_INTERVAL;
use crate::controller::master_cache::GuardedMaster;
use crate::controller::signing_watch::{master_awaits_signing, poll_interval, watch_signing};
use crate::controller::Context;
use crate::runner::wiring::GuardedNode;

/// Runs the CA watch of every master in `masters` until `shutdown`; `nodes` tells which
/// masters have a node waiting on their CA.
pub async fn signing_watch(
    ctx: Arc<Context>,
    masters: Store<GuardedMaster>,
    nodes: Store<GuardedNode>,
    shutdown: CancellationToken,
) {
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(MIN_POLL_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let current: Vec<_> = masters
            .state()
            .iter()
            .filter_map(|guarded| guarded.0.as_ref().ok().cloned())
            .map(|m| {
                (
                    format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any()),
                    m,
                )
            })
            .collect();
        // A deleted master's entry goes with it: the map never outgrows the store.
        due.retain(|key, _| current.iter().any(|(k, _)| k == key));
        let cached = nodes.state();
        let looks = current
            .iter()
            .filter(|(key, _)| due.get(key).is_none_or(|at| *at <= now))
            .map(|(key, master)| {
                let ctx = &ctx;
                let waiting = master_awaits_signing(
                    master,
                    cached.iter().filter_map(|guarded| guarded.0.as_ref().ok()),
                );
                async move {
                    let next = watch_signing(master, ctx, waiting).await;
                    (key.clone(), next.unwrap_or_else(|| poll_interval(master)))
                }
            });
        let looked = tokio::select! {
            () = shutdown.cancelled() => return,
            looked = join_all(looks) => looked,
        };
        for (key, after) in looked {
            due.insert(key, now + after);
        }
    }
}
