//! What happens to each call reaching a fake: the gate between caller and fake state.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use puppet_conductor_core::sync::lock;

/// Which external system a call goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    /// EC2 (or Eucalyptus).
    Ec2,
    /// The records bucket.
    S3,
    /// The Puppet CA API.
    Ca,
}

/// One call about to reach a fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The system called.
    pub system: System,
    /// The operation, named as the real API names it (`RunInstances`, `PutObject`, `sign`).
    pub operation: &'static str,
    /// What it is about (a certname, an instance id, a key), for traces.
    pub target: String,
}

impl Call {
    /// A call of `operation` on `system` about `target`.
    pub fn new(system: System, operation: &'static str, target: impl Into<String>) -> Self {
        Self {
            system,
            operation,
            target: target.into(),
        }
    }
}

/// How a call that is not answered normally fails, in each system's own terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The service answers 503 / is unreachable: transient.
    Unavailable,
    /// No answer within the call timeout.
    Timeout,
    /// Rate limited (RequestLimitExceeded, SlowDown, 429): transient.
    Throttled,
    /// Credentials or client certificate refused: permanent until reconfigured.
    Denied,
}

/// What happens to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Applied and answered.
    Answer,
    /// Not applied; the caller gets this fault.
    Fail(FaultKind),
    /// Applied, but the answer was lost: the caller sees a timeout.
    Lost,
    /// Applied now; the answer reaches the caller only when [`Gate::deliver`] returns
    /// (a RunInstances answer arriving after a newer describe, a describe's view arriving
    /// after later changes).
    Late,
}

/// Decides each call's fate before the fake applies it.
#[async_trait::async_trait]
pub trait Gate: Send + Sync {
    /// The fate of `call`; may wait first (latency, or a scheduler's decision).
    async fn admit(&self, call: &Call) -> Fate;

    /// For a [`Fate::Late`] call already applied: waits until its answer may go back;
    /// `false` when it is lost on the way (the caller then sees a timeout).
    async fn deliver(&self, _call: &Call) -> bool {
        true
    }
}

#[derive(Default)]
struct FaultState {
    outages: BTreeMap<System, FaultKind>,
    queued: VecDeque<(System, Option<&'static str>, Fate)>,
    latency: BTreeMap<System, Duration>,
    log: Vec<(Call, Fate)>,
}

/// Scripted faults: outages, one-shot fates for the next matching calls, latency; and a
/// log of every call with the fate it got.
#[derive(Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

impl Faults {
    fn with<T>(&self, f: impl FnOnce(&mut FaultState) -> T) -> T {
        f(&mut lock(&self.state))
    }

    /// Every call to `system` fails with `kind` until [`Faults::restore`].
    pub fn outage(&self, system: System, kind: FaultKind) {
        self.with(|s| s.outages.insert(system, kind));
    }

    /// Ends the outage of `system`.
    pub fn restore(&self, system: System) {
        self.with(|s| s.outages.remove(&system));
    }

    /// The next call to `system` (of `operation`, when given) gets `fate`; queued fates
    /// are used in order, before any outage.
    pub fn next(&self, system: System, operation: Option<&'static str>, fate: Fate) {
        self.with(|s| s.queued.push_back((system, operation, fate)));
    }

    /// Every call to `system` waits this long (tokio time) before it is decided.
    pub fn latency(&self, system: System, delay: Duration) {
        self.with(|s| s.latency.insert(system, delay));
    }

    /// Every call so far with its fate, in order.
    pub fn log(&self) -> Vec<(Call, Fate)> {
        self.with(|s| s.log.clone())
    }

    /// How many calls of `operation` reached `system`, whatever their fate.
    pub fn count(&self, system: System, operation: &str) -> usize {
        self.with(|s| {
            s.log
                .iter()
                .filter(|(c, _)| c.system == system && c.operation == operation)
                .count()
        })
    }

    fn decide(&self, call: &Call) -> Fate {
        self.with(|s| {
            let queued = s.queued.iter().position(|(system, op, _)| {
                *system == call.system && op.is_none_or(|op| op == call.operation)
            });
            let fate = match queued.and_then(|i| s.queued.remove(i)) {
                Some((_, _, fate)) => fate,
                None => match s.outages.get(&call.system) {
                    Some(kind) => Fate::Fail(*kind),
                    None => Fate::Answer,
                },
            };
            s.log.push((call.clone(), fate));
            fate
        })
    }
}

#[async_trait::async_trait]
impl Gate for Faults {
    async fn admit(&self, call: &Call) -> Fate {
        let delay = self.with(|s| s.latency.get(&call.system).copied());
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        self.decide(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(system: System, op: &'static str) -> Call {
        Call::new(system, op, "x")
    }

    #[tokio::test]
    async fn queued_fates_come_before_outages_and_match_their_operation() {
        let faults = Faults::default();
        faults.outage(System::Ca, FaultKind::Unavailable);
        faults.next(System::Ca, Some("sign"), Fate::Lost);
        assert_eq!(
            faults.admit(&call(System::Ca, "list")).await,
            Fate::Fail(FaultKind::Unavailable)
        );
        assert_eq!(faults.admit(&call(System::Ca, "sign")).await, Fate::Lost);
        assert_eq!(
            faults.admit(&call(System::Ec2, "RunInstances")).await,
            Fate::Answer
        );
        faults.restore(System::Ca);
        assert_eq!(faults.admit(&call(System::Ca, "sign")).await, Fate::Answer);
        assert_eq!(faults.count(System::Ca, "sign"), 2);
        assert_eq!(faults.log().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_delays_the_decision() {
        let faults = Faults::default();
        faults.latency(System::S3, Duration::from_secs(12));
        let started = tokio::time::Instant::now();
        assert_eq!(
            faults.admit(&call(System::S3, "PutObject")).await,
            Fate::Answer
        );
        assert_eq!(started.elapsed(), Duration::from_secs(12));
    }
}
