//! maxSurge and maxUnavailable resolved against `replicas`, as a Deployment resolves them.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use puppet_conductor_api::pool::{PuppetNodePoolSpec, StrategyType};

use super::PoolError;

/// A pool's counts for one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Nodes wanted.
    pub replicas: usize,
    /// Nodes that may exist above `replicas` while rolling.
    pub max_surge: usize,
    /// Nodes that may be unavailable below `replicas` while rolling.
    pub max_unavailable: usize,
}

/// Default maxSurge: one node at a time.
const DEFAULT_SURGE: i32 = 1;
/// Default maxUnavailable: none, so a new node is Ready before an old one goes.
const DEFAULT_UNAVAILABLE: i32 = 0;

/// The pool's bounds; a percentage of surge rounds up and of unavailability down, and
/// when both come to 0 one node may be unavailable (else nothing could move).
pub fn bounds(spec: &PuppetNodePoolSpec) -> Result<Bounds, PoolError> {
    let replicas = usize::try_from(spec.replicas).unwrap_or(0);
    let rolling = spec.strategy.rolling_update.as_ref();
    let surge = rolling.and_then(|r| r.max_surge.as_ref());
    let unavailable = rolling.and_then(|r| r.max_unavailable.as_ref());
    let max_surge = resolve(surge, DEFAULT_SURGE, replicas, true, "maxSurge")?;
    let mut max_unavailable = resolve(
        unavailable,
        DEFAULT_UNAVAILABLE,
        replicas,
        false,
        "maxUnavailable",
    )?;
    if max_surge == 0 && max_unavailable == 0 && spec.strategy.type_ == StrategyType::RollingUpdate
    {
        max_unavailable = 1;
    }
    Ok(Bounds {
        replicas,
        max_surge,
        max_unavailable,
    })
}

fn resolve(
    value: Option<&IntOrString>,
    default: i32,
    replicas: usize,
    round_up: bool,
    field: &'static str,
) -> Result<usize, PoolError> {
    let bad = |v: &str| PoolError::BadBound {
        field,
        value: v.to_string(),
    };
    match value {
        None => Ok(usize::try_from(default).unwrap_or(0)),
        Some(IntOrString::Int(n)) => usize::try_from(*n).map_err(|_| bad(&n.to_string())),
        // A count written as a string is a count, as the schema's rule admits it.
        Some(IntOrString::String(s)) if !s.ends_with('%') => s.parse().map_err(|_| bad(s)),
        Some(IntOrString::String(s)) => {
            let percent: usize = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .filter(|p| *p <= 100)
                .ok_or_else(|| bad(s))?;
            let scaled = percent * replicas;
            Ok(if round_up {
                scaled.div_ceil(100)
            } else {
                scaled / 100
            })
        }
    }
}
