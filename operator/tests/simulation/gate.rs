//! The scheduler's gate: every call to a fake parks here until the seeded schedule
//! decides its fate, so any interleaving of concurrent reconciles can be produced.

use std::sync::{Arc, Mutex};

use puppet_conductor::fakes::{Call, Fate, FaultKind, Gate};
use tokio::sync::oneshot;

/// A call waiting for its fate.
pub struct Parked {
    /// Order of arrival (stable for replay).
    pub seq: u64,
    /// What was called.
    pub call: Call,
    /// The tokio task that made it (to attribute it to a reconcile).
    pub task: Option<tokio::task::Id>,
    /// An answer on its way back (the call was applied with [`Fate::Late`]).
    pub delivery: bool,
    answer: oneshot::Sender<Fate>,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    parked: Vec<Parked>,
    /// When set, calls are answered at once (setup and the agents' own side).
    open: bool,
}

/// Parks calls; the scheduler lists and releases them.
#[derive(Clone, Default)]
pub struct SchedGate {
    state: Arc<Mutex<State>>,
}

impl SchedGate {
    /// Calls are answered at once while `open` (used while setting a world up).
    pub fn set_open(&self, open: bool) {
        self.state.lock().unwrap().open = open;
    }

    /// The calls parked now, by arrival.
    pub fn parked(&self) -> Vec<(u64, Call, Option<tokio::task::Id>)> {
        let s = self.state.lock().unwrap();
        s.parked
            .iter()
            .map(|p| (p.seq, p.call.clone(), p.task))
            .collect()
    }

    /// Whether parked entry `seq` is a late answer on its way back.
    pub fn is_delivery(&self, seq: u64) -> bool {
        let s = self.state.lock().unwrap();
        s.parked.iter().any(|p| p.seq == seq && p.delivery)
    }

    fn park(&self, call: &Call, delivery: bool) -> Option<oneshot::Receiver<Fate>> {
        let mut s = self.state.lock().unwrap();
        // Calls from outside any task are the world's own (an agent's ENC run).
        if s.open || tokio::task::try_id().is_none() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let seq = s.next_seq;
        s.next_seq += 1;
        s.parked.push(Parked {
            seq,
            call: call.clone(),
            task: tokio::task::try_id(),
            delivery,
            answer: tx,
        });
        Some(rx)
    }

    /// Releases parked call `seq` with `fate`; false when it is gone (its task ended).
    pub fn release(&self, seq: u64, fate: Fate) -> bool {
        let mut s = self.state.lock().unwrap();
        let Some(i) = s.parked.iter().position(|p| p.seq == seq) else {
            return false;
        };
        let parked = s.parked.remove(i);
        parked.answer.send(fate).is_ok()
    }

    /// Drops every parked call (their tasks were aborted by a crash).
    pub fn drain(&self) -> Vec<Parked> {
        std::mem::take(&mut self.state.lock().unwrap().parked)
    }

    /// Forgets parked calls whose task is gone.
    pub fn prune(&self) {
        self.state
            .lock()
            .unwrap()
            .parked
            .retain(|p| !p.answer.is_closed());
    }
}

#[async_trait::async_trait]
impl Gate for SchedGate {
    async fn admit(&self, call: &Call) -> Fate {
        let Some(rx) = self.park(call, false) else {
            return Fate::Answer;
        };
        // A dropped sender means the scheduler crashed the operator: the call never landed.
        rx.await.unwrap_or(Fate::Fail(FaultKind::Timeout))
    }

    async fn deliver(&self, call: &Call) -> bool {
        let Some(rx) = self.park(call, true) else {
            return true;
        };
        // Applied already: anything but an answer (a crash included) loses it.
        matches!(rx.await, Ok(Fate::Answer))
    }
}
