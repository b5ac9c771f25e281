//! The workers connected now, as `weir workers`, the `ListWorkers` RPC and the web UI's
//! workers page show them: what each offered, what its attempts leave free, what it holds and
//! when the engine last heard from it. Read from memory under the state lock; no store reads.

use std::collections::BTreeMap;

use weir_core::placement::Usage;
use weir_core::run::{Millis, StepState};
use weir_core::spec::Runtime;

use super::core::Engine;

/// One connected worker.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WorkerView {
    /// Its id (the name it gave, made unique), as step records name it.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub runtimes: Vec<&'static str>,
    pub total: Usage,
    pub free: Usage,
    pub capacity: u32,
    /// Of `capacity`, how many it holds ahead of its running steps.
    pub ahead: u32,
    pub attempts: Vec<HeldView>,
    pub last_heard: Millis,
    /// Waiting in a Lease call now.
    pub polling: bool,
}

/// An attempt a worker holds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HeldView {
    pub run: String,
    pub step: String,
    pub attempt: u32,
    pub since: Millis,
    /// Its step has started (the worker said so); else it is leased: held ahead or prepared.
    pub running: bool,
}

impl Engine {
    /// Every connected worker, by name; each one's attempts by run and step.
    pub(crate) fn workers(&self) -> Vec<WorkerView> {
        let (instant, wall) = (self.clock.instant(), self.clock.now());
        // A monotonic instant as wall time: `now` less how long ago it was.
        let at =
            |then: tokio::time::Instant| Millis(wall.0.saturating_sub(instant.duration_since(then).as_millis() as u64));
        let st = self.lock();
        let mut out: Vec<WorkerView> = st
            .workers
            .iter()
            .map(|(id, w)| {
                let mut attempts: Vec<HeldView> = w
                    .held
                    .iter()
                    .map(|((run, attempt), held)| {
                        let live = st.runs.get(run);
                        HeldView {
                            run: run.clone(),
                            step: live
                                .and_then(|live| live.steps.get(attempt.instance.index()))
                                .map(|s| s.name.clone())
                                .unwrap_or_else(|| format!("#{}", attempt.instance.index())),
                            attempt: attempt.number,
                            since: at(held.since),
                            running: live.is_some_and(|live| {
                                attempt.instance.index() < live.machine.len()
                                    && live.machine.live_attempt(attempt.instance) == Some(*attempt)
                                    && live.machine.state(attempt.instance) == StepState::Running
                            }),
                        }
                    })
                    .collect();
                attempts.sort_by(|a, b| (&a.run, &a.step).cmp(&(&b.run, &b.step)));
                WorkerView {
                    name: id.clone(),
                    labels: w.offer.labels.clone(),
                    runtimes: w
                        .offer
                        .runtimes
                        .iter()
                        .map(|r| match r {
                            Runtime::Process => "process",
                            Runtime::Docker => "docker",
                        })
                        .collect(),
                    total: w.offer.total,
                    free: w.offer.total.minus(w.used()),
                    capacity: w.offer.capacity,
                    ahead: w.offer.ahead,
                    attempts,
                    last_heard: at(w.last_seen),
                    polling: w.polling > 0,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
