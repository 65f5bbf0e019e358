//! A pool's label selector: matched against node labels, and printed for `/scale`.

use std::collections::BTreeMap;

use puppet_conductor_api::pool::{PoolSelector, SelectorOperator};

/// The selector in the label-selector syntax `kubectl get -l` and autoscalers read
/// (`app=web,tier in (a,b),!canary`).
pub fn selector_string(selector: &PoolSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in &selector.match_expressions {
        let mut values = e.values.clone();
        values.sort();
        let list = values.join(",");
        parts.push(match e.operator {
            SelectorOperator::In => format!("{} in ({list})", e.key),
            SelectorOperator::NotIn => format!("{} notin ({list})", e.key),
            SelectorOperator::Exists => e.key.clone(),
            SelectorOperator::DoesNotExist => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// Whether `labels` match `selector` (an empty selector matches everything, as in
/// Kubernetes; the schema refuses one on a pool).
pub fn matches(selector: &PoolSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    let by_labels = selector.match_labels.iter().all(|(k, v)| get(k) == Some(v));
    by_labels
        && selector.match_expressions.iter().all(|e| match e.operator {
            SelectorOperator::In => get(&e.key).is_some_and(|v| e.values.contains(v)),
            SelectorOperator::NotIn => get(&e.key).is_none_or(|v| !e.values.contains(v)),
            SelectorOperator::Exists => get(&e.key).is_some(),
            SelectorOperator::DoesNotExist => get(&e.key).is_none(),
        })
}
