//! Names of a pool's new nodes.

use std::collections::BTreeSet;

/// `count` names `{pool}-{n}` with the smallest ordinals no node has (`taken` holds every
/// node name in the namespace the pass saw). Names from the lowest free ordinals make a
/// creation repeated after a crash or a lost answer collide (409) instead of making a
/// second node.
pub fn node_names(pool: &str, taken: &BTreeSet<String>, count: usize) -> Vec<String> {
    (0..)
        .map(|n: u64| format!("{pool}-{n}"))
        .filter(|name| !taken.contains(name))
        .take(count)
        .collect()
}
