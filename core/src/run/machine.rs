//! [`RunMachine`]: the state of one run and the dispatch of events. It owns copies of what it
//! needs from the pipeline and plan (no borrows), checks every report against the instance's
//! live attempt before touching anything (so a rejected event changes nothing), and hands the
//! real work to `progress`. It never reads the clock, never performs an effect and never
//! awaits: the engine loop does those with the effects it returns.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::expr::{Ref, Value};
use crate::plan::Plan;
use crate::spec::Pipeline;

use super::event::{Effect, Event, Rejected};
use super::ids::{AttemptId, InstanceId, Millis, RunState, StepState};
use super::rules::{MatrixIndex, StepRules, approval_message, matrix_values};

/// One step instance: what it is, and where it stands.
#[derive(Clone, Debug)]
pub(super) struct Slot {
    pub name: String,
    pub step: usize,
    pub matrix: Vec<(String, Value)>,
    /// Instances that need this one, ascending.
    pub dependents: Vec<u32>,
    /// Needs not yet satisfied (succeeded, or skipped by their own `when`).
    pub waiting: u32,
    pub state: StepState,
    /// Number of the current (or last) attempt; 0 before the first.
    pub attempts: u32,
    /// Attempts that failed (counted against `retries`).
    pub failures: u32,
    /// Attempts whose worker was lost.
    pub lost: u32,
    /// Attempts given back unstarted (`Released`).
    pub released: u32,
    pub worker: Option<String>,
    /// The instance's one timer: a backoff while `Pending`, a deadline while held.
    pub timer: Option<Millis>,
    /// Why the instance is where it is (skip or failure reason), for people.
    pub message: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    /// The explanation its `gate` reads (`explain.*`), set by the caller with the outputs of
    /// the attempt that reports success (`RunMachine::explained`), before that report.
    pub explanation: Option<crate::explain::Explanation>,
    /// With `approval:`, the rendered message shown while it awaits a decision.
    pub approval: Option<String>,
    /// Someone approved it in this run: later attempts (retries, lost workers) ask no more.
    pub approved: bool,
}

/// The state machine of one run. See the module documentation for the rules.
#[derive(Clone, Debug)]
pub struct RunMachine {
    pub(super) params: Vec<(String, Value)>,
    pub(super) steps: Vec<StepRules>,
    pub(super) step_by_name: HashMap<String, usize>,
    pub(super) slots: Vec<Slot>,
    /// Due timers as (when, instance); each instance has at most one.
    pub(super) timers: BTreeSet<(Millis, u32)>,
    /// The wake-up last announced with `Effect::WakeAt`.
    pub(super) announced: Option<Millis>,
    pub(super) state: RunState,
    /// Instances not yet terminal, and instances failed.
    pub(super) remaining: usize,
    pub(super) failed: usize,
}

impl RunMachine {
    /// A queued run of `plan`, which must have been planned from `pipeline`.
    pub fn new(pipeline: &Pipeline, plan: &Plan) -> RunMachine {
        let mut steps: Vec<StepRules> = pipeline.steps().iter().map(StepRules::new).collect();
        let matrices: Vec<MatrixIndex> = pipeline.steps().iter().map(MatrixIndex::of).collect();
        let mut slots: Vec<Slot> = plan
            .graph
            .node_indices()
            .map(|n| {
                let inst = &plan.graph[n];
                let rules = &mut steps[inst.step];
                if rules.count == 0 {
                    rules.first = n.index() as u32;
                }
                rules.count += 1;
                Slot {
                    name: inst.name.clone(),
                    step: inst.step,
                    matrix: matrix_values(&matrices[inst.step], &inst.matrix),
                    dependents: Vec::new(),
                    waiting: 0,
                    state: StepState::Pending,
                    attempts: 0,
                    failures: 0,
                    lost: 0,
                    released: 0,
                    worker: None,
                    timer: None,
                    message: None,
                    metrics: BTreeMap::new(),
                    explanation: None,
                    approval: approval_message(&pipeline.steps()[inst.step], inst, plan),
                    approved: false,
                }
            })
            .collect();
        for edge in plan.graph.raw_edges() {
            slots[edge.source().index()].dependents.push(edge.target().index() as u32);
            slots[edge.target().index()].waiting += 1;
        }
        for slot in &mut slots {
            slot.dependents.sort_unstable();
            slot.dependents.dedup();
        }
        RunMachine {
            params: plan.params.iter().map(|(n, v)| (n.to_string(), v.to_expr())).collect(),
            step_by_name: steps.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect(),
            steps,
            remaining: slots.len(),
            slots,
            timers: BTreeSet::new(),
            announced: None,
            state: RunState::Queued,
            failed: 0,
        }
    }

    /// Applies one event at time `now`. On `Err`, nothing changed.
    pub fn apply(&mut self, event: Event, now: Millis) -> Result<Vec<Effect>, Rejected> {
        let mut out = Vec::new();
        match event {
            Event::Start => {
                match self.state {
                    RunState::Queued => {}
                    RunState::Running => return Err(Rejected::AlreadyStarted),
                    done => return Err(Rejected::Finished(done)),
                }
                self.state = RunState::Running;
                let roots: Vec<u32> =
                    (0..self.slots.len() as u32).filter(|&i| self.slots[i as usize].waiting == 0).collect();
                self.activate(roots, now, &mut out);
            }
            Event::Cancel => {
                if self.state.is_terminal() {
                    return Err(Rejected::Finished(self.state));
                }
                self.cancel(&mut out);
            }
            Event::Tick => {
                if self.state == RunState::Running {
                    self.tick(now, &mut out);
                }
            }
            Event::Leased { attempt, worker } => {
                let i = self.live(attempt, "leased", |s| s == StepState::Ready)?;
                if let Some(timeout) = self.steps[self.slots[i].step].timeout {
                    self.set_timer(i, now.plus(timeout));
                }
                let message = Some(format!("worker {worker}"));
                self.slots[i].worker = Some(worker);
                self.change(i, StepState::Leased, message, &mut out);
            }
            Event::Started { attempt } => {
                let i = self.live(attempt, "started", |s| s == StepState::Leased)?;
                self.change(i, StepState::Running, None, &mut out);
            }
            Event::Succeeded { attempt, metrics } => {
                let i = self.live(attempt, "succeeded", StepState::is_held)?;
                self.succeed(i, metrics, now, &mut out);
            }
            Event::Failed { attempt, reason, permanent } => {
                let i = self.live(attempt, "failed", StepState::is_held)?;
                if permanent {
                    self.fail_permanently(i, reason, &mut out);
                } else {
                    self.fail_attempt(i, reason, now, &mut out);
                }
            }
            Event::Lost { attempt } => {
                let i = self.live(attempt, "lost", StepState::is_held)?;
                self.lose(i, now, &mut out);
            }
            Event::Released { attempt } => {
                let i = self.live(attempt, "released", |s| s == StepState::Leased)?;
                self.give_back(i, now, &mut out);
            }
            Event::Cached { attempt, metrics, from } => {
                let i = self.live(attempt, "cached", |s| s == StepState::Ready)?;
                self.reuse(i, metrics, from, now, &mut out);
            }
            Event::Approved { instance, by: _, comment: _ } => {
                let i = self.deciding(instance)?;
                self.approve(i, &mut out);
            }
            Event::ApprovalRejected { instance, by, comment } => {
                let i = self.deciding(instance)?;
                self.reject(i, &by, &comment, &mut out);
            }
        }
        self.finish_if_done(&mut out);
        self.announce(&mut out);
        Ok(out)
    }

    /// The instance of `attempt` if it is live and its state `fits` the event: the fencing
    /// check every report goes through before anything changes.
    fn live(&self, attempt: AttemptId, event: &'static str, fits: fn(StepState) -> bool) -> Result<usize, Rejected> {
        match self.state {
            RunState::Queued => return Err(Rejected::NotStarted),
            RunState::Running => {}
            done => return Err(Rejected::Finished(done)),
        }
        let i = attempt.instance.index();
        let slot = self.slots.get(i).ok_or(Rejected::UnknownInstance(attempt))?;
        let live = self.live_attempt(attempt.instance);
        if live != Some(attempt) {
            return Err(Rejected::StaleAttempt { attempt, live });
        }
        if !fits(slot.state) {
            return Err(Rejected::InvalidTransition { attempt, state: slot.state, event });
        }
        Ok(i)
    }

    /// The index of `instance` if the run is running and it awaits approval: the check an
    /// approval or rejection passes before anything changes.
    fn deciding(&self, instance: InstanceId) -> Result<usize, Rejected> {
        match self.state {
            RunState::Queued => return Err(Rejected::NotStarted),
            RunState::Running => {}
            done => return Err(Rejected::Finished(done)),
        }
        let slot = self.slots.get(instance.index()).ok_or(Rejected::NoInstance(instance))?;
        if slot.state != StepState::AwaitingApproval {
            return Err(Rejected::NotAwaitingApproval { instance, state: slot.state });
        }
        Ok(instance.index())
    }

    /// Sends `WakeAt` when the earliest timer moved since the last announcement.
    fn announce(&mut self, out: &mut Vec<Effect>) {
        let next = self.next_wakeup();
        if next != self.announced {
            if let Some(at) = next {
                out.push(Effect::WakeAt { at });
            }
            self.announced = next;
        }
    }

    pub fn run_state(&self) -> RunState {
        self.state
    }

    /// The earliest pending timer: send a `Tick` then.
    pub fn next_wakeup(&self) -> Option<Millis> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Number of instances in the run.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every instance, in plan node order.
    pub fn instances(&self) -> impl Iterator<Item = InstanceId> + use<> {
        (0..self.slots.len() as u32).map(InstanceId)
    }

    /// The instance called `name` (`train[lr=0.1]`).
    pub fn find(&self, name: &str) -> Option<InstanceId> {
        self.slots.iter().position(|s| s.name == name).map(|i| InstanceId(i as u32))
    }

    // The accessors below panic on an id that is not from this run, like slice indexing.

    pub fn name(&self, id: InstanceId) -> &str {
        &self.slots[id.index()].name
    }

    pub fn state(&self, id: InstanceId) -> StepState {
        self.slots[id.index()].state
    }

    /// Attempts made so far (lost and failed ones included).
    pub fn attempts(&self, id: InstanceId) -> u32 {
        self.slots[id.index()].attempts
    }

    /// Why the instance is skipped or failed, or why it is waiting for a retry.
    pub fn message(&self, id: InstanceId) -> Option<&str> {
        self.slots[id.index()].message.as_deref()
    }

    /// The rendered `approval.message` of an instance with `approval:`.
    pub fn approval_message(&self, id: InstanceId) -> Option<&str> {
        self.slots[id.index()].approval.as_deref()
    }

    /// The worker holding (or that last held) the instance.
    pub fn worker(&self, id: InstanceId) -> Option<&str> {
        self.slots[id.index()].worker.as_deref()
    }

    /// The metrics of the last successful report.
    pub fn metrics(&self, id: InstanceId) -> &BTreeMap<String, f64> {
        &self.slots[id.index()].metrics
    }

    /// Whether the `gate` of `id` reads its explanation (`explain.*`): then the caller hands
    /// it over with [`RunMachine::explained`] before applying a success.
    pub fn gate_reads_explanation(&self, id: InstanceId) -> bool {
        let rules = &self.steps[self.slots[id.index()].step];
        rules.gate.as_ref().is_some_and(|g| g.refs().iter().any(|r| matches!(r.reference, Ref::Explain { .. })))
    }

    /// The explanation (from the `explain.json` among the outputs) that the `gate` of `id`
    /// reads when its success is applied next. Not an event: the caller sets it again from the
    /// stored outputs when it replays the success, so a replay judges the gate alike.
    pub fn explained(&mut self, id: InstanceId, explanation: Option<crate::explain::Explanation>) {
        if let Some(slot) = self.slots.get_mut(id.index()) {
            slot.explanation = explanation;
        }
    }

    /// The attempt reports are accepted for: the current one while ready, leased or running.
    pub fn live_attempt(&self, id: InstanceId) -> Option<AttemptId> {
        let slot = self.slots.get(id.index())?;
        matches!(slot.state, StepState::Ready | StepState::Leased | StepState::Running)
            .then_some(AttemptId { instance: id, number: slot.attempts })
    }
}

#[cfg(test)]
mod tests {
    use crate::run::testkit::Driver;

    const CHAIN: &str = "name: c
steps:
  a:
    run: 'true'
  b:
    needs: [a]
    run: 'true'
";

    #[test]
    fn a_chain_runs_in_order_and_succeeds() {
        let mut d = Driver::new(CHAIN);
        d.check("start", &["a -> ready", "ready a.1"]);
        d.check("leased a.1 w1", &["a -> leased: worker w1"]);
        d.check("started a.1", &["a -> running"]);
        d.check("succeeded a.1", &["a -> succeeded", "b -> ready", "ready b.1"]);
        d.check("ok b.1", &["b -> leased: worker w", "b -> running", "b -> succeeded", "run succeeded"]);
        assert_eq!(d.states(), "a=succeeded/1 b=succeeded/1");
    }

    #[test]
    fn reports_out_of_order_or_out_of_time_are_refused_and_change_nothing() {
        let mut d = Driver::new(CHAIN);
        d.check("leased a.1 w1", &["rejected: the run has not started"]);
        d.check("start", &["a -> ready", "ready a.1"]);
        d.check("start", &["rejected: the run has already started"]);
        d.check("started a.1", &["rejected: `started` does not apply to attempt #0.1, which is ready"]);
        d.check("succeeded a.1", &["rejected: `succeeded` does not apply to attempt #0.1, which is ready"]);
        d.check("leased a.2 w1", &["rejected: attempt #0.2 is stale (the live attempt is #0.1)"]);
        d.check("leased b.1 w1", &["rejected: attempt #1.1 is stale (no attempt of that instance is live)"]);
        d.check("ok a.1", &["a -> leased: worker w", "a -> running", "a -> succeeded", "b -> ready", "ready b.1"]);
        d.check("succeeded a.1", &["rejected: attempt #0.1 is stale (no attempt of that instance is live)"]);
        assert_eq!(d.states(), "a=succeeded/1 b=ready/1");
        d.check("cancel", &["b -> cancelled", "run cancelled"]);
        d.check("cancel", &["rejected: the run already finished as cancelled"]);
        d.check("succeeded b.1", &["rejected: the run already finished as cancelled"]);
    }

    #[test]
    fn matrix_fans_out_and_the_fan_in_waits_for_every_instance() {
        let mut d = Driver::new(
            "name: m
steps:
  prep:
    run: 'true'
  train:
    needs: [prep]
    matrix: {lr: [1, 2], n: [3, 4]}
    run: 'true'
  pick:
    needs: [train]
    run: 'true'
",
        );
        d.send("start");
        let fan_out = d.send("ok prep.1");
        let ready: Vec<&String> = fan_out.iter().filter(|e| e.starts_with("ready")).collect();
        assert_eq!(
            ready,
            [
                "ready train[lr=1,n=3].1",
                "ready train[lr=1,n=4].1",
                "ready train[lr=2,n=3].1",
                "ready train[lr=2,n=4].1"
            ]
        );
        for name in ["train[lr=1,n=3]", "train[lr=2,n=4]", "train[lr=1,n=4]"] {
            let effects = d.send(&format!("ok {name}.1"));
            assert!(!effects.iter().any(|e| e.contains("pick")), "{effects:?}");
        }
        assert_eq!(d.state("pick"), "pending/0");
        let last = d.send("ok train[lr=2,n=3].1");
        assert!(last.contains(&"ready pick.1".to_string()), "{last:?}");
        d.check("ok pick.1", &["pick -> leased: worker w", "pick -> running", "pick -> succeeded", "run succeeded"]);
    }

    #[test]
    fn cancel_stops_held_attempts_and_cancels_everything_left() {
        let mut d = Driver::new(
            "name: x
steps:
  a:
    run: 'true'
  b:
    run: 'true'
    retries: {limit: 1, backoff: 5s}
  c:
    run: 'true'
  d:
    needs: [a, b, c]
    run: 'true'
  e:
    run: 'true'
",
        );
        d.send("start");
        d.send("leased a.1 w1");
        d.send("leased b.1 w1");
        d.send("failed b.1 exit code 1");
        d.send("ok e.1");
        d.check(
            "cancel",
            &[
                "stop a.1: run cancelled",
                "a -> cancelled",
                "b -> cancelled",
                "c -> cancelled",
                "d -> cancelled",
                "run cancelled",
            ],
        );
        assert_eq!(d.states(), "a=cancelled/1 b=cancelled/1 c=cancelled/1 d=cancelled/0 e=succeeded/1");
        assert_eq!(d.machine.next_wakeup(), None, "the backoff timer is gone");
        d.check("tick 60000", &[]);
    }

    #[test]
    fn a_queued_run_can_be_cancelled() {
        let mut d = Driver::new(CHAIN);
        d.check("cancel", &["a -> cancelled", "b -> cancelled", "run cancelled"]);
        d.check("start", &["rejected: the run already finished as cancelled"]);
    }
}
