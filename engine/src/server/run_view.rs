//! What a run's page and a step's page show beyond the records, as domain values: the run's
//! instance graph (the `needs` edges between instances, each instance's stage), the state a
//! group of matrix instances shows, one instance's attempts derived from the run's stored
//! events, and a step's gate. The web UI renders these; it decides nothing itself.

use std::collections::BTreeMap;

use petgraph::visit::EdgeRef;
use weir_core::plan;
use weir_core::run::{Event, InstanceId, Millis, StepState};
use weir_data::artifact::Manifest;

use super::core::Engine;
use super::error::ApiError;
use super::runs::step_and_matrix;
use crate::store::{Change, LogChunk, LogCursor, RunRecord, StepRecord};

/// A run with its instances and how they depend on each other.
#[derive(Clone, Debug)]
pub(crate) struct RunGraph {
    pub record: RunRecord,
    /// Every instance, by index.
    pub steps: Vec<StepRecord>,
    /// What is wrong with the run, if anything (quarantine, a store that cannot write).
    pub message: String,
    /// Each instance's stage (empty: none), by index.
    pub stages: Vec<String>,
    /// `(dependency, dependent)` instance indices: the plan's `needs` edges.
    pub edges: Vec<(u32, u32)>,
}

/// One attempt of an instance, as its run's events tell it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AttemptView {
    pub number: u32,
    pub worker: Option<String>,
    pub leased_at: Option<Millis>,
    pub started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    /// How it ended (a step state: `succeeded`, `failed`, `cancelled`, `cached`, …), or how
    /// it stands while it runs (`leased`, `running`).
    pub outcome: String,
    /// Why: the worker's exit reason, a timeout, a gate's verdict, the run it was reused from.
    pub reason: String,
}

/// A step's `gate` and what is stored of its verdict.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GateView {
    pub expression: String,
    /// `passed`, `failed` (with the values compared, as the run machine wrote them),
    /// `not evaluated` (the instance did not succeed, or was reused from another run).
    pub verdict: String,
    pub detail: String,
}

/// Everything a step page shows of one instance.
#[derive(Clone, Debug)]
pub(crate) struct StepView {
    pub record: RunRecord,
    pub index: InstanceId,
    pub step: StepRecord,
    pub step_name: String,
    pub matrix: Vec<(String, String)>,
    pub stage: String,
    pub gate: Option<GateView>,
    pub outputs: Option<Manifest>,
    pub attempts: Vec<AttemptView>,
}

/// The state a group of instances of one step shows, and its counts per state
/// (`3 succeeded, 1 running`): failed over running over waiting over done.
pub(crate) fn group_state(states: &[StepState]) -> (StepState, String) {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for s in states {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    let has = |s: StepState| states.contains(&s);
    let shown = [
        StepState::Failed,
        StepState::Running,
        StepState::Leased,
        StepState::Ready,
        StepState::Pending,
        StepState::Cancelled,
        StepState::Succeeded,
        StepState::Cached,
        StepState::Skipped,
    ]
    .into_iter()
    .find(|s| has(*s))
    .unwrap_or(StepState::Pending);
    let detail = counts.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ");
    (shown, detail)
}

impl Engine {
    /// Run `run_id` with its instance graph. The edges come from the live plan, or, for a
    /// finished run, from planning its stored version and params again (the plan depends on
    /// nothing else): no per-step store reads beyond the one scan of its step records.
    pub(crate) fn run_graph(&self, run_id: &str) -> Result<RunGraph, ApiError> {
        let (record, steps, message) = self.load_run(run_id)?;
        let from_plan = |plan: &plan::Plan, pipeline: &weir_core::spec::Pipeline| {
            let stages = (0..plan.graph.node_count())
                .map(|n| {
                    let step = plan.graph[petgraph::graph::NodeIndex::new(n)].step;
                    pipeline.steps()[step].stage.clone().unwrap_or_default()
                })
                .collect::<Vec<_>>();
            let edges = plan
                .graph
                .edge_references()
                .map(|e| (e.source().index() as u32, e.target().index() as u32))
                .collect::<Vec<_>>();
            (stages, edges)
        };
        let live = {
            let st = self.lock();
            st.runs.get(run_id).map(|live| from_plan(&live.plan, &live.pipeline))
        };
        let (stages, edges) = match live {
            Some(x) => x,
            None => {
                let (pipeline, _) = self.pipeline(&mut self.lock(), &record.version)?;
                let overrides: Vec<(String, String)> = record
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                    .collect();
                let params = plan::resolve_params(&pipeline, &overrides)
                    .map_err(|diags| self.params_error(&record.version, pipeline.name(), diags))?;
                let plan = plan::plan(&pipeline, &params, run_id);
                if plan.graph.node_count() != steps.len() {
                    // Planned again, it does not match what was stored: show no edges rather
                    // than wrong ones.
                    (vec![String::new(); steps.len()], Vec::new())
                } else {
                    from_plan(&plan, &pipeline)
                }
            }
        };
        Ok(RunGraph { record, steps, message, stages, edges })
    }

    /// Instance `instance` (its full name) of run `run_id`: its record, attempts, outputs and
    /// gate.
    pub(crate) fn step_view(&self, run_id: &str, instance: &str) -> Result<StepView, ApiError> {
        let (record, steps, _) = self.load_run(run_id)?;
        let i = steps.iter().position(|s| s.name == instance).ok_or_else(|| {
            let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
            let hint = weir_core::diag::did_you_mean(instance, names.iter().copied()).unwrap_or_default();
            ApiError::NotFound(format!("run {run_id} has no step instance {instance}{hint}"))
        })?;
        let index = InstanceId(i as u32);
        let step = steps[i].clone();
        let (step_name, matrix) = step_and_matrix(&step);
        let (stage, outputs) = self.step_extras(&record, index, &step, &self.stages(&record))?;
        let gate = {
            let (pipeline, _) = self.pipeline(&mut self.lock(), &record.version)?;
            pipeline.step(&step_name).and_then(|s| s.gate.as_ref()).map(|g| g.source().to_string())
        };
        let attempts = self.attempts(run_id, index)?;
        let gate = gate.map(|expression| {
            let failed = step.message.as_deref().filter(|m| m.starts_with("gate "));
            let (verdict, detail) = match (step.state, failed) {
                (_, Some(m)) => ("failed", m.to_string()),
                (StepState::Succeeded, None) => ("passed", "true over this attempt's metrics".to_string()),
                (StepState::Cached, None) => {
                    ("not evaluated", "reused: the supplying attempt passed it over the same metrics".to_string())
                }
                _ => ("not evaluated", "the step has not succeeded".to_string()),
            };
            GateView { expression, verdict: verdict.to_string(), detail }
        });
        Ok(StepView { record, index, step, step_name, matrix, stage, gate, outputs, attempts })
    }

    /// The attempts of instance `i` of `run_id`, oldest first, from the run's stored events.
    pub(crate) fn attempts(&self, run_id: &str, i: InstanceId) -> Result<Vec<AttemptView>, ApiError> {
        let mut out: Vec<AttemptView> = Vec::new();
        for item in self.store.events(run_id, 0)? {
            let (_, ev) = item?;
            fold_attempts(&mut out, i, &ev);
        }
        out.sort_by_key(|a| a.number);
        Ok(out)
    }

    /// Up to `limit` log chunks of instance `i` of `run_id` after `after` (every attempt, in
    /// order), and whether the run has finished (so nothing more will come).
    pub(crate) fn log_page(
        &self,
        run_id: &str,
        i: InstanceId,
        after: Option<LogCursor>,
        limit: usize,
    ) -> Result<(Vec<(LogCursor, LogChunk)>, bool), ApiError> {
        let finished = {
            let st = self.lock();
            st.runs.get(run_id).and_then(|live| live.steps.get(i.index()).map(|s| s.state.is_terminal()))
        };
        let finished = match finished {
            Some(f) => f,
            None => self.store.step(run_id, i)?.is_none_or(|s| s.state.is_terminal()),
        };
        Ok((self.store.logs(run_id, i, after, limit)?, finished))
    }
}

/// Folds one stored event of a run into `out`, the attempts of instance `i` so far (in any
/// order; sort by number when done).
pub(crate) fn fold_attempts(out: &mut Vec<AttemptView>, i: InstanceId, ev: &crate::store::EventRecord) {
    fn slot(out: &mut Vec<AttemptView>, number: u32) -> &mut AttemptView {
        match out.iter().position(|a| a.number == number) {
            Some(k) => &mut out[k],
            None => {
                out.push(AttemptView { number, ..Default::default() });
                out.last_mut().expect("just pushed")
            }
        }
    }
    if let Some(a) = ev.event.attempt().filter(|a| a.instance == i) {
        let at = slot(out, a.number);
        match &ev.event {
            Event::Leased { worker, .. } => {
                at.worker = Some(worker.clone());
                at.leased_at = Some(ev.now);
                at.outcome = "leased".into();
            }
            Event::Started { .. } => {
                at.started_at = Some(ev.now);
                at.outcome = "running".into();
            }
            Event::Succeeded { .. } => {
                at.ended_at = Some(ev.now);
                at.outcome = "succeeded".into();
            }
            Event::Failed { reason, .. } => {
                at.ended_at = Some(ev.now);
                at.outcome = "failed".into();
                at.reason.clone_from(reason);
            }
            Event::Lost { .. } => {
                at.ended_at = Some(ev.now);
                at.outcome = "failed".into();
                at.reason = "its worker was lost (silent past its lease timeout)".into();
            }
            Event::Released { .. } => {
                at.ended_at = Some(ev.now);
                at.outcome = "released".into();
                at.reason = "given back unstarted by its worker, whose slots stayed busy".into();
            }
            Event::Cached { from, .. } => {
                at.ended_at = Some(ev.now);
                at.outcome = "cached".into();
                at.reason = format!("outputs reused from run {from}");
            }
            _ => {}
        }
    }
    // What the machine made of it: a gate's verdict, a timeout, a cancel.
    for change in &ev.changes {
        let Change::Step { instance, state, attempt, message } = change else { continue };
        if *instance != i.0 || *attempt == 0 {
            continue;
        }
        let leased = matches!(state, StepState::Ready | StepState::Pending);
        if leased {
            // A retry is scheduled: the message says why the previous attempt ended.
            if let (Some(m), Some(prev)) = (message, out.iter_mut().find(|a| a.number + 1 == *attempt))
                && prev.reason.is_empty()
            {
                prev.reason.clone_from(m);
            }
            continue;
        }
        let at = slot(out, *attempt);
        if state.is_terminal() {
            at.outcome = state.as_str().to_string();
            at.ended_at.get_or_insert(ev.now);
            if let Some(m) = message {
                at.reason.clone_from(m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_shows_its_most_urgent_state_and_counts_every_state() {
        use StepState::*;
        assert_eq!(group_state(&[Succeeded, Running, Succeeded]), (Running, "1 running, 2 succeeded".to_string()));
        assert_eq!(group_state(&[Succeeded, Failed, Running]).0, Failed);
        assert_eq!(group_state(&[Succeeded, Cached]).0, Succeeded);
        assert_eq!(group_state(&[]).0, Pending);
    }
}
