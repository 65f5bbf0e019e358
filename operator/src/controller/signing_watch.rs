//! The shared CA watch of a master: one CA listing per `signing.pollInterval` while one of
//! its nodes waits on the CA, in place of a poll per waiting node. Each listing wakes the
//! nodes whose certname's entry changed (`SnapshotCache::watch_ca`), so a CSR is signed
//! within about one interval of its arrival and nothing is read while nothing waits.

use std::time::Duration;

use kube::{Resource, ResourceExt};

use crate::api::master::{PuppetMaster, MIN_POLL_INTERVAL};
use crate::api::node::{Phase, PuppetNode};
use crate::controller::Context;

/// The master's `signing.pollInterval`, never below the schema's minimum (a server
/// without CEL rules admits less; a zero interval would poll in a tight loop).
pub fn poll_interval(master: &PuppetMaster) -> Duration {
    Duration::from(master.spec.signing.poll_interval).max(MIN_POLL_INTERVAL)
}

/// Does this node wait on its CA (its instance starting or running, no certificate
/// signed yet)? What the watch's caller asks of its node store.
pub fn waits_on_ca(node: &PuppetNode) -> bool {
    node.meta().deletion_timestamp.is_none()
        && matches!(
            node.status.as_ref().and_then(|s| s.phase),
            Some(Phase::Launching | Phase::AwaitingCsr | Phase::Replacing)
        )
}

/// Whether any of `nodes` names `master` and waits on its CA.
pub fn master_awaits_signing<'a>(
    master: &PuppetMaster,
    mut nodes: impl Iterator<Item = &'a PuppetNode>,
) -> bool {
    nodes.any(|n| {
        n.spec.master_ref.name == master.name_any()
            && n.namespace() == master.namespace()
            && waits_on_ca(n)
    })
}

/// One look of the watch at `master`, whose nodes (from the caller's store) `waiting`
/// or not: lists its CA when one waits and its instance is live in the master's
/// snapshot, unless a pass listed it within half an interval. `Some(interval)`: look
/// again then; `None`: nothing waits. An instance left by a deleted node (an `Orphan`
/// deletion policy, say) is never waited for. A master whose services cannot be built
/// is looked at again in an interval: its node passes report why.
pub async fn watch_signing(
    master: &PuppetMaster,
    ctx: &Context,
    waiting: bool,
) -> Option<Duration> {
    let interval = poll_interval(master);
    if !waiting {
        return None;
    }
    let key = format!(
        "{}/{}",
        master.namespace().unwrap_or_default(),
        master.name_any()
    );
    let services = match ctx.services.services(master).await {
        Ok(services) => services,
        Err(error) => {
            tracing::debug!(master = key, error = %super::error::chain(&error), "CA watch: services unavailable");
            return Some(interval);
        }
    };
    ctx.snapshots
        .watch_ca(&key, &services, interval)
        .await
        .then_some(interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::node::PuppetNodeStatus;

    fn node(ns: &str, master: &str, phase: Option<Phase>, deleting: bool) -> PuppetNode {
        let mut n: PuppetNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "puppet-conductor.dev/v1alpha1", "kind": "PuppetNode",
            "metadata": {"name": "n", "namespace": ns},
            "spec": {"masterRef": {"name": master}}
        }))
        .unwrap();
        n.status = Some(PuppetNodeStatus {
            phase,
            ..Default::default()
        });
        if deleting {
            n.metadata.deletion_timestamp =
                Some(crate::status::conditions::time(chrono::Utc::now()));
        }
        n
    }

    #[test]
    fn a_master_awaits_signing_only_for_its_own_nodes_that_wait_on_the_ca() {
        let master: PuppetMaster = serde_json::from_value(serde_json::json!({
            "apiVersion": "puppet-conductor.dev/v1alpha1", "kind": "PuppetMaster",
            "metadata": {"name": "pm", "namespace": "a"},
            "spec": {"server": "puppet", "ca": {"url": "https://ca", "clientSecretRef": {"name": "c"}},
                     "cloud": {"region": "r"}, "records": {"bucket": "b"}}
        }))
        .unwrap();
        for phase in [Phase::Launching, Phase::AwaitingCsr, Phase::Replacing] {
            let waiting = [node("a", "pm", Some(phase), false)];
            assert!(master_awaits_signing(&master, waiting.iter()), "{phase:?}");
        }
        let not_waiting = [
            node("a", "pm", Some(Phase::Ready), false),
            node("a", "pm", Some(Phase::Signed), false),
            node("a", "pm", None, false),
            node("a", "pm", Some(Phase::AwaitingCsr), true),
            node("a", "other", Some(Phase::AwaitingCsr), false),
            node("b", "pm", Some(Phase::AwaitingCsr), false),
        ];
        assert!(!master_awaits_signing(&master, not_waiting.iter()));
    }
}
