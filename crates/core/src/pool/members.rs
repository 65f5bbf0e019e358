//! A pool's node as its decisions see it.

use chrono::{DateTime, Utc};
use puppet_conductor_api::conditions::READY;
use puppet_conductor_api::node::{Phase, PuppetNode};
use puppet_conductor_api::pool::{PuppetNodeTemplate, TEMPLATE_HASH_LABEL};

/// One node a pool owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its UID (a deletion is made conditional on it: a namesake created since is spared).
    pub uid: String,
    /// Made from the current template's launch hash (its label says so).
    pub updated: bool,
    /// Being deleted (its instance may still run until its cleanup is done).
    pub deleting: bool,
    /// Phase Ready with its `Ready` condition True.
    pub ready: bool,
    /// Ready for at least the pool's `minReadySeconds`.
    pub available: bool,
    /// When it became Ready (seconds since the epoch), if it is.
    pub ready_since: Option<i64>,
    /// Creation time, seconds since the epoch (0 when unknown).
    pub created: i64,
    /// Its classification, policies, labels and annotations are the template's.
    pub in_sync: bool,
}

impl Member {
    /// `node` as a member of a pool whose template is `template` with launch hash `hash`.
    pub fn of(
        node: &PuppetNode,
        template: &PuppetNodeTemplate,
        hash: &str,
        min_ready_seconds: i64,
        now: DateTime<Utc>,
    ) -> Member {
        let meta = &node.metadata;
        let ready_since = node
            .status
            .as_ref()
            .filter(|s| s.phase == Some(Phase::Ready))
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == READY && c.status == "True")
            })
            .map(|c| c.last_transition_time.0.as_second());
        Member {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            updated: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(TEMPLATE_HASH_LABEL))
                .is_some_and(|h| h == hash),
            deleting: meta.deletion_timestamp.is_some(),
            ready: ready_since.is_some(),
            available: ready_since.is_some_and(|at| now.timestamp() - at >= min_ready_seconds),
            ready_since,
            created: meta
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
            in_sync: in_sync(template, node),
        }
    }
}

/// Whether what a template changes without a new instance is already on `node`: its
/// classes, environment, parameters, replace and deletion policies, and the template's
/// labels and annotations (others the node carries are left alone).
pub fn in_sync(template: &PuppetNodeTemplate, node: &PuppetNode) -> bool {
    let (want, have) = (&template.spec, &node.spec);
    let contains =
        |wanted: &std::collections::BTreeMap<String, String>,
         present: Option<&std::collections::BTreeMap<String, String>>| {
            wanted
                .iter()
                .all(|(k, v)| present.and_then(|p| p.get(k)) == Some(v))
        };
    want.classes == have.classes
        && want.environment == have.environment
        && want.parameters == have.parameters
        && want.replace_policy == have.replace_policy
        && want.deletion_policy == have.deletion_policy
        && contains(&template.metadata.labels, node.metadata.labels.as_ref())
        && contains(
            &template.metadata.annotations,
            node.metadata.annotations.as_ref(),
        )
}
