//! How many nodes a pool creates and which it deletes in one pass.
//!
//! A rolling replacement keeps, as a Deployment does: at most `replicas + maxSurge` nodes
//! (those being deleted count: their instances run until their cleanup is done), and it
//! deletes an available node only while at least `replicas - maxUnavailable` others stay
//! available.

use std::cmp::Ordering;

use puppet_conductor_api::pool::{ScaleDownOrder, StrategyType};

use super::{Bounds, Member};

/// What one pass of a pool does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolPlan {
    /// New nodes to create from the current template.
    pub create: usize,
    /// Nodes to delete.
    pub delete: Vec<String>,
    /// Nodes to bring in line with the template without a new instance (classification,
    /// policies, labels, annotations).
    pub update: Vec<String>,
}

/// The pass's plan for a pool with these members.
pub fn plan_pool(
    strategy: StrategyType,
    bounds: Bounds,
    order: ScaleDownOrder,
    members: &[Member],
) -> PoolPlan {
    let live: Vec<&Member> = members.iter().filter(|m| !m.deleting).collect();
    let update = live
        .iter()
        .filter(|m| !m.in_sync)
        .map(|m| m.name.clone())
        .collect();
    let (create, delete) = match strategy {
        StrategyType::OnDelete => on_delete(bounds, order, &live),
        StrategyType::RollingUpdate => rolling(bounds, order, &live, members.len()),
    };
    PoolPlan {
        create,
        delete,
        update,
    }
}

/// Nodes are replaced only by whoever deletes them: the pool keeps the count.
fn on_delete(bounds: Bounds, order: ScaleDownOrder, live: &[&Member]) -> (usize, Vec<String>) {
    let create = bounds.replicas.saturating_sub(live.len());
    let excess = live.len().saturating_sub(bounds.replicas);
    (create, first_to_go(live.to_vec(), order, excess))
}

fn rolling(
    bounds: Bounds,
    order: ScaleDownOrder,
    live: &[&Member],
    total: usize,
) -> (usize, Vec<String>) {
    let Bounds {
        replicas,
        max_surge,
        max_unavailable,
    } = bounds;
    let (updated, old): (Vec<&Member>, Vec<&Member>) = live.iter().partition(|m| m.updated);
    let room = (replicas + max_surge).saturating_sub(total);
    let create = replicas.saturating_sub(updated.len()).min(room);
    if old.is_empty() {
        let excess = live.len().saturating_sub(replicas);
        return (create, first_to_go(live.to_vec(), order, excess));
    }
    let mut delete = first_to_go(
        updated.clone(),
        order,
        updated.len().saturating_sub(replicas),
    );
    let min_available = replicas.saturating_sub(max_unavailable);
    let available = live.iter().filter(|m| m.available).count();
    let new_unavailable = updated.iter().filter(|m| !m.available).count();
    // Old nodes that are not available cost no availability, but a pool whose new nodes
    // are not available yet keeps them (they may become so; the new ones may not).
    let mut budget = live
        .len()
        .saturating_sub(min_available + new_unavailable + delete.len());
    let (old_available, old_unavailable): (Vec<&Member>, Vec<&Member>) =
        old.iter().partition(|m| m.available);
    for name in first_to_go(old_unavailable.clone(), order, old_unavailable.len()) {
        if budget == 0 {
            break;
        }
        budget -= 1;
        delete.push(name);
    }
    let spare = available.saturating_sub(min_available);
    delete.extend(first_to_go(old_available, order, spare));
    (create, delete)
}

/// The `count` members to delete first: not Ready, then not available, then old before
/// updated, then by creation time in `order` (names break ties).
fn first_to_go(mut members: Vec<&Member>, order: ScaleDownOrder, count: usize) -> Vec<String> {
    members.sort_by(|a, b| doomed_order(a, b, order));
    members
        .into_iter()
        .take(count)
        .map(|m| m.name.clone())
        .collect()
}

fn doomed_order(a: &Member, b: &Member, order: ScaleDownOrder) -> Ordering {
    let by_age = match order {
        ScaleDownOrder::NewestFirst => b.created.cmp(&a.created).then(b.name.cmp(&a.name)),
        ScaleDownOrder::OldestFirst => a.created.cmp(&b.created).then(a.name.cmp(&b.name)),
    };
    a.ready
        .cmp(&b.ready)
        .then(a.available.cmp(&b.available))
        .then(a.updated.cmp(&b.updated))
        .then(by_age)
}
