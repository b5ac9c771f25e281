//! How a run moves forward: an instance whose needs are met is judged by its `when` and
//! offered, skipped or failed; a successful attempt is judged by its `gate`; a failure for good
//! skips everything downstream of it as "upstream failed"; cancel stops what is held; and the
//! run ends when every instance is terminal. These are `RunMachine` methods that `machine` and
//! `attempts` call after the event was validated: they mutate state and push effects, and
//! never fail.

use std::collections::{BTreeMap, VecDeque};

use super::event::Effect;
use super::ids::{AttemptId, InstanceId, Millis, RunState, StepState};
use super::machine::RunMachine;
use super::rules::{Check, Scope, evaluate};

impl RunMachine {
    /// Records a new state and reports it.
    pub(super) fn change(&mut self, i: usize, state: StepState, message: Option<String>, out: &mut Vec<Effect>) {
        let slot = &mut self.slots[i];
        if state.is_terminal() {
            self.remaining -= 1;
            if state == StepState::Failed {
                self.failed += 1;
            }
        }
        slot.state = state;
        slot.message.clone_from(&message);
        out.push(Effect::StepChanged { instance: InstanceId(i as u32), state, message });
    }

    /// Offers a new attempt of instance `i`.
    pub(super) fn offer(&mut self, i: usize, out: &mut Vec<Effect>) {
        self.slots[i].attempts += 1;
        let attempt = AttemptId { instance: InstanceId(i as u32), number: self.slots[i].attempts };
        self.change(i, StepState::Ready, None, out);
        out.push(Effect::Ready { attempt });
    }

    /// Instances whose needs are all met: each is judged by its `when`, then offered, skipped
    /// (which may in turn release its dependents) or failed.
    pub(super) fn activate(&mut self, start: Vec<u32>, now: Millis, out: &mut Vec<Effect>) {
        let mut queue: VecDeque<u32> = start.into();
        while let Some(i) = queue.pop_front() {
            let i = i as usize;
            match self.judge(i, false) {
                Check::True if self.slots[i].approval.is_some() && !self.slots[i].approved => {
                    self.ask_approval(i, now, out)
                }
                Check::True => self.offer(i, out),
                Check::False(message) => {
                    self.change(i, StepState::Skipped, Some(message), out);
                    queue.extend(self.release(i));
                }
                Check::Error(message) => self.fail_for_good(i, message, out),
            }
        }
    }

    /// Counts instance `i` as satisfied for each dependent; returns those now unblocked.
    fn release(&mut self, i: usize) -> Vec<u32> {
        let mut unblocked = Vec::new();
        for k in 0..self.slots[i].dependents.len() {
            let d = self.slots[i].dependents[k];
            let slot = &mut self.slots[d as usize];
            slot.waiting -= 1;
            if slot.waiting == 0 && slot.state == StepState::Pending {
                unblocked.push(d);
            }
        }
        unblocked
    }

    /// Evaluates the `when` (or, with `gate`, the gate) of instance `i`.
    fn judge(&self, i: usize, gate: bool) -> Check {
        let slot = &self.slots[i];
        let rules = &self.steps[slot.step];
        let (field, expr) = if gate { ("gate", &rules.gate) } else { ("when", &rules.when) };
        let Some(expr) = expr else { return Check::True };
        let upstream = |step: &str| {
            let rules = &self.steps[*self.step_by_name.get(step)?];
            let up = &self.slots[rules.first as usize];
            (rules.count == 1 && up.state.is_success()).then_some(&up.metrics)
        };
        let scope = Scope {
            params: &self.params,
            matrix: &slot.matrix,
            metrics: gate.then_some(&slot.metrics),
            upstream: &upstream,
            explanation: if gate { slot.explanation.as_ref() } else { None },
        };
        evaluate(field, expr, &scope)
    }

    /// The live attempt of `i` succeeded: the gate decides.
    pub(super) fn succeed(&mut self, i: usize, metrics: BTreeMap<String, f64>, now: Millis, out: &mut Vec<Effect>) {
        self.clear_timer(i);
        self.slots[i].metrics = metrics;
        match self.judge(i, true) {
            Check::True => {
                self.change(i, StepState::Succeeded, None, out);
                let unblocked = self.release(i);
                self.activate(unblocked, now, out);
            }
            Check::False(message) | Check::Error(message) => self.fail_for_good(i, message, out),
        }
    }

    /// The ready attempt of `i` is supplied by run `from`: `cached`, and its dependents go on.
    pub(super) fn reuse(
        &mut self,
        i: usize,
        metrics: BTreeMap<String, f64>,
        from: String,
        now: Millis,
        out: &mut Vec<Effect>,
    ) {
        self.clear_timer(i);
        self.slots[i].metrics = metrics;
        self.change(i, StepState::Cached, Some(format!("from run {from}")), out);
        let unblocked = self.release(i);
        self.activate(unblocked, now, out);
    }

    /// Fails `i` with no retry and skips everything downstream of it.
    pub(super) fn fail_for_good(&mut self, i: usize, message: String, out: &mut Vec<Effect>) {
        self.change(i, StepState::Failed, Some(message), out);
        let cause = format!("upstream failed: {}", self.slots[i].name);
        let mut queue: VecDeque<u32> = self.slots[i].dependents.iter().copied().collect();
        while let Some(d) = queue.pop_front() {
            let d = d as usize;
            if self.slots[d].state != StepState::Pending {
                continue; // already skipped through another path
            }
            self.change(d, StepState::Skipped, Some(cause.clone()), out);
            queue.extend(self.slots[d].dependents.iter().copied());
        }
    }

    /// Stops held attempts and cancels every instance not yet terminal.
    pub(super) fn cancel(&mut self, out: &mut Vec<Effect>) {
        for i in 0..self.slots.len() {
            let state = self.slots[i].state;
            if state.is_terminal() {
                continue;
            }
            if state.is_held() {
                let attempt = AttemptId { instance: InstanceId(i as u32), number: self.slots[i].attempts };
                out.push(Effect::Stop { attempt, reason: "run cancelled".into() });
            }
            self.clear_timer(i);
            self.change(i, StepState::Cancelled, None, out);
        }
        self.state = RunState::Cancelled;
        out.push(Effect::RunFinished { state: RunState::Cancelled });
    }

    /// Ends a running run whose instances are all terminal.
    pub(super) fn finish_if_done(&mut self, out: &mut Vec<Effect>) {
        if self.state == RunState::Running && self.remaining == 0 {
            self.state = if self.failed > 0 { RunState::Failed } else { RunState::Succeeded };
            out.push(Effect::RunFinished { state: self.state });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::run::testkit::Driver;
    use crate::run::{AttemptId, Effect, Event, Millis, RunState};

    #[test]
    fn a_cached_step_satisfies_its_dependents_with_its_metrics_and_no_gate_or_worker() {
        const YAML: &str = "name: c
steps:
  a:
    run: 'true'
    outputs: [metrics.json]
    gate: metrics.rmse < 0.5
    cache: true
  b:
    needs: [a]
    when: steps.a.metrics.rmse < 0.5
    run: 'true'
";
        let mut d = Driver::new(YAML);
        d.check("start", &["a -> ready", "ready a.1"]);
        d.check("leased a.1 w", &["a -> leased: worker w"]);
        d.check("cached a.1 r0", &["rejected: `cached` does not apply to attempt #0.1, which is leased"]);
        let mut d = Driver::new(YAML);
        d.check("start", &["a -> ready", "ready a.1"]);
        d.check("cached a.1 r0 rmse=0.2", &["a -> cached: from run r0", "b -> ready", "ready b.1"]);
        assert_eq!(d.machine.metrics(d.machine.find("a").unwrap())["rmse"], 0.2, "b's `when` read them");
        d.check("ok b.1", &["b -> leased: worker w", "b -> running", "b -> succeeded", "run succeeded"]);
    }

    #[test]
    fn a_failure_skips_its_dependents_while_independent_branches_finish() {
        let mut d = Driver::new(
            "name: f
steps:
  a:
    run: 'true'
  b:
    needs: [a]
    run: 'true'
  c:
    needs: [b]
    run: 'true'
  x:
    run: 'true'
  y:
    needs: [x]
    run: 'true'
",
        );
        d.check("start", &["a -> ready", "ready a.1", "x -> ready", "ready x.1"]);
        d.send("leased x.1 w2");
        d.send("leased a.1 w1");
        d.check(
            "failed a.1 exit code 2",
            &["a -> failed: exit code 2", "b -> skipped: upstream failed: a", "c -> skipped: upstream failed: a"],
        );
        assert_eq!(d.machine.run_state(), crate::run::RunState::Running, "x is still running");
        d.check("started x.1", &["x -> running"]);
        d.check("succeeded x.1", &["x -> succeeded", "y -> ready", "ready y.1"]);
        d.check("ok y.1", &["y -> leased: worker w", "y -> running", "y -> succeeded", "run failed"]);
        assert_eq!(d.states(), "a=failed/1 b=skipped/0 c=skipped/0 x=succeeded/1 y=succeeded/1");
    }

    #[test]
    fn when_false_skips_and_the_skip_satisfies_dependents() {
        let yaml = "name: w
params:
  deploy: false
steps:
  train:
    run: 'true'
    outputs: [metrics.json]
  deploy:
    needs: [train]
    when: params.deploy
    run: 'true'
  notify:
    needs: [deploy]
    run: 'true'
  publish:
    needs: [train]
    when: steps.train.metrics.acc > 0.9
    run: 'true'
";
        let mut d = Driver::new(yaml);
        d.send("start");
        d.check(
            "ok train.1 acc=0.95",
            &[
                "train -> leased: worker w",
                "train -> running",
                "train -> succeeded",
                "deploy -> skipped: when `params.deploy` is false: params.deploy = false",
                "publish -> ready",
                "ready publish.1",
                "notify -> ready",
                "ready notify.1",
            ],
        );
        d.send("ok publish.1");
        d.check(
            "ok notify.1",
            &["notify -> leased: worker w", "notify -> running", "notify -> succeeded", "run succeeded"],
        );

        let mut d = Driver::with_params(yaml, &[("deploy", "true")]);
        d.send("start");
        let effects = d.send("ok train.1 acc=0.5");
        assert!(effects.contains(&"ready deploy.1".to_string()), "{effects:?}");
        assert!(
            effects.contains(
                &"publish -> skipped: when `steps.train.metrics.acc > 0.9` is false: steps.train.metrics.acc = 0.5"
                    .to_string()
            ),
            "{effects:?}"
        );
    }

    #[test]
    fn when_that_cannot_be_evaluated_fails_the_step_without_retry() {
        let mut d = Driver::new(
            "name: w
steps:
  train:
    run: 'true'
    outputs: [metrics.json]
  deploy:
    needs: [train]
    when: steps.train.metrics.f1 > 0.5
    retries: 3
    run: 'true'
",
        );
        d.send("start");
        let effects = d.send("ok train.1 acc=0.9");
        assert_eq!(
            effects[3..],
            [
                "deploy -> failed: when `steps.train.metrics.f1 > 0.5` cannot be evaluated: steps.train.metrics.f1 is not set",
                "run failed"
            ]
        );
    }

    #[test]
    fn when_on_a_matrix_skips_instances_and_the_fan_in_still_runs() {
        let mut d = Driver::new(
            "name: m
steps:
  train:
    matrix: {lr: [0.1, 1.0]}
    when: matrix.lr < 0.5
    run: 'true'
  pick:
    needs: [train]
    run: 'true'
",
        );
        d.check(
            "start",
            &[
                "train[lr=0.1] -> ready",
                "ready train[lr=0.1].1",
                "train[lr=1.0] -> skipped: when `matrix.lr < 0.5` is false: matrix.lr = 1.0",
            ],
        );
        let effects = d.send("ok train[lr=0.1].1");
        assert_eq!(effects[3..], ["pick -> ready", "ready pick.1"]);
    }

    #[test]
    fn a_false_gate_fails_with_the_values_it_saw_and_never_retries() {
        let yaml = "name: g
params:
  max_rmse: 0.5
steps:
  train:
    run: 'true'
    outputs: [metrics.json]
    gate: metrics.rmse < params.max_rmse
    retries: 2
  deploy:
    needs: [train]
    run: 'true'
";
        let mut d = Driver::new(yaml);
        d.send("start");
        d.check(
            "ok train.1 rmse=0.71",
            &[
                "train -> leased: worker w",
                "train -> running",
                "train -> failed: gate `metrics.rmse < params.max_rmse` is false: metrics.rmse = 0.71, params.max_rmse = 0.5",
                "deploy -> skipped: upstream failed: train",
                "run failed",
            ],
        );
        let train = d.machine.find("train").unwrap();
        assert_eq!((d.machine.attempts(train), d.machine.metrics(train).get("rmse")), (1, Some(&0.71)));

        let mut d = Driver::new(yaml);
        d.send("start");
        let effects = d.send("ok train.1 loss=1");
        assert_eq!(
            effects[2],
            "train -> failed: gate `metrics.rmse < params.max_rmse` cannot be evaluated: metrics.rmse is not set"
        );

        let mut d = Driver::with_params(yaml, &[("max_rmse", "1")]);
        d.send("start");
        assert_eq!(d.send("ok train.1 rmse=0.71")[2..], ["train -> succeeded", "deploy -> ready", "ready deploy.1"]);
    }

    #[test]
    fn a_wide_fan_out_and_fan_in_settles() {
        // 1 -> 10,000 -> 1, with reports straight from `leased` (a step too quick for its start
        // report), counting the effects so nothing is offered twice.
        let values: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let yaml = format!(
            "name: wide\nsteps:\n  a:\n    run: 'true'\n  t:\n    needs: [a]\n    matrix: {{x: [{v}], y: [{v}]}}\n    run: 'true'\n  z:\n    needs: [t]\n    run: 'true'\n",
            v = values.join(", ")
        );
        let mut d = Driver::new(&yaml);
        let m = &mut d.machine;
        let (mut offered, mut finished) = (Vec::new(), None);
        let mut settle = |effects: Vec<Effect>, offered: &mut Vec<AttemptId>| {
            for e in effects {
                match e {
                    Effect::Ready { attempt } => offered.push(attempt),
                    Effect::RunFinished { state } => finished = Some(state),
                    _ => {}
                }
            }
        };
        settle(m.apply(Event::Start, Millis(0)).unwrap(), &mut offered);
        let mut done = 0;
        while let Some(attempt) = offered.pop() {
            let worker = "w".to_string();
            m.apply(Event::Leased { attempt, worker }, Millis(1)).unwrap();
            let effects = m.apply(Event::Succeeded { attempt, metrics: BTreeMap::new() }, Millis(2)).unwrap();
            settle(effects, &mut offered);
            done += 1;
        }
        assert_eq!((done, m.len(), finished), (10_002, 10_002, Some(RunState::Succeeded)));
        assert!(m.instances().all(|i| m.attempts(i) == 1));
    }
}
