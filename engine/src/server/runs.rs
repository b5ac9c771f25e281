//! Runs as clients see them: starting one, a run's record and steps (from memory while it is
//! live, else the store), listing them a page at a time, why a ready step waits, cancelling,
//! and retrying (the plan is `weir_core::run::plan_retry`). Domain values in and out; the
//! adapter (`crate::api::client`) encodes them.

use std::sync::Arc;

use super::cache::PipelineRef;
use crate::store::{Listed, RunFilter, RunRecord, StepPage, StepRecord, Trigger};
use weir_core::diag::Diagnostic;
use weir_core::plan;
use weir_core::run::{Earlier, Event, InstanceId, RunState, StepState, plan_retry};
use weir_data::artifact::{Entry, Manifest};

use super::core::Engine;
use super::error::ApiError;

/// A retry's new run (none for a dry run), and the instances it runs again and reuses.
pub(crate) type Retried = (Option<String>, Vec<String>, Vec<String>);

/// A run as `weir runs` lists it: its record (none when quarantined without one, or for a
/// stretch of unreadable runs), its steps (for their counts) and what is wrong, if anything.
#[derive(Clone, Debug)]
pub(crate) struct RunListing {
    pub id: String,
    pub record: Option<RunRecord>,
    pub steps: Vec<StepRecord>,
    pub message: String,
}

/// A run's state and progress, for live views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunProgress {
    pub state: RunState,
    pub done: usize,
    pub total: usize,
}

/// Refuses an empty run id as the caller's mistake, before it reaches the store.
pub(crate) fn require_run_id(run_id: &str) -> Result<(), ApiError> {
    if run_id.is_empty() {
        return Err(ApiError::Invalid("run_id is required: give a run id (`weir runs` lists them)".into()));
    }
    Ok(())
}

impl Engine {
    /// Params that do not fit `pipeline`'s declarations: each diagnostic names its param and
    /// points into the pipeline file as stored (version `version`) under the file name it was
    /// submitted as (`pipeline.yaml` when unknown), as `weir plan` renders it, never at a file
    /// called `params`.
    pub(crate) fn params_error(&self, version: &str, pipeline: &str, diags: Vec<Diagnostic>) -> ApiError {
        let stored = self.store.pipeline_version(version).ok().flatten();
        let file = stored.as_ref().and_then(|v| v.file.clone()).unwrap_or_else(|| "pipeline.yaml".to_string());
        let yaml = stored.map(|v| v.yaml).unwrap_or_default();
        tracing::debug!(pipeline, version, "params refused");
        ApiError::diagnostics("invalid params", &file, &yaml, diags)
    }

    /// A run's record and every step record: from memory while it is live, else the store.
    pub(crate) fn load_run(&self, run_id: &str) -> Result<(RunRecord, Vec<StepRecord>, String), ApiError> {
        require_run_id(run_id)?;
        {
            let st = self.lock();
            if let Some(live) = st.runs.get(run_id) {
                let steps = live.steps.clone();
                // A live run stalls while the store cannot write: say why.
                return Ok((live.record.clone(), steps, self.fault().unwrap_or_default()));
            }
        }
        let (record, message) = self.stored_run(run_id)?;
        let steps = self.store.steps(run_id, None, usize::MAX)?.into_iter().map(|(_, s)| s).collect();
        Ok((record, steps, message))
    }

    /// [`Engine::load_run`] for the step records at positions `from..from + size` only, with the
    /// counts of all: a page of a big run costs the page, not a copy or decode of every record.
    pub(crate) fn load_run_page(
        &self,
        run_id: &str,
        from: usize,
        size: usize,
    ) -> Result<(RunRecord, StepPage, String), ApiError> {
        require_run_id(run_id)?;
        {
            let st = self.lock();
            if let Some(live) = st.runs.get(run_id) {
                let all = &live.steps;
                let page = StepPage {
                    steps: all.iter().skip(from).take(size).cloned().collect(),
                    total: all.len(),
                    done: all.iter().filter(|s| s.state.is_terminal()).count(),
                    awaiting_approval: all.iter().filter(|s| s.state == StepState::AwaitingApproval).count(),
                };
                return Ok((live.record.clone(), page, self.fault().unwrap_or_default()));
            }
        }
        let (record, message) = self.stored_run(run_id)?;
        Ok((record, self.store.step_page(run_id, from, size)?, message))
    }

    /// A run's stored record, and the note that it is quarantined if it is.
    fn stored_run(&self, run_id: &str) -> Result<(RunRecord, String), ApiError> {
        let quarantined = self.store.quarantined(run_id)?;
        let record = match self.store.run(run_id) {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(ApiError::NotFound(format!(
                    "no run {run_id}: `weir runs` lists the runs this server knows"
                )));
            }
            Err(e @ crate::store::Error::Corrupt { .. }) => {
                return Err(ApiError::DataLoss {
                    what: format!(
                        "run {run_id} is quarantined: its record does not read back (`weir store check` says more)"
                    ),
                    detail: e.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        Ok((record, quarantined.map(|q| format!("quarantined: {q}")).unwrap_or_default()))
    }

    /// Starts a run of `target` with `overrides` and returns its id. Plans outside the state
    /// lock (and off the async threads): a huge run costs its caller the time it takes, not
    /// everyone else.
    pub(crate) async fn start_run(
        self: &Arc<Self>,
        target: Option<PipelineRef>,
        overrides: Vec<(String, String)>,
        no_cache: bool,
        by: Option<String>,
    ) -> Result<String, ApiError> {
        let version = match target {
            Some(PipelineRef::Name(name)) => self.store.pipeline(&name)?.ok_or_else(|| self.no_pipeline(&name))?.latest,
            Some(PipelineRef::Version(v)) => v,
            None => return Err(ApiError::Invalid("pipeline: give a name or a version".into())),
        };
        let (pipeline, bundle) = self.pipeline(&mut self.lock(), &version)?;
        let planner = self.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let trigger = Trigger::Manual { user: by };
            planner.prepare_run(pipeline, bundle, &version, &overrides, trigger, no_cache, None)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("planning the run failed: {e}")))??;
        let run_id = self.install_run(&mut self.lock(), prepared)?;
        self.commit()?;
        tracing::info!(run = run_id, "run started");
        Ok(run_id)
    }

    /// At most `size` runs matching `pipeline` (empty: any), `states` (empty: any) and
    /// `trigger` (a [`Trigger::kind`]; empty: any), from `token` (a store page token), and the
    /// token to continue from (empty: no more).
    pub(crate) fn list_runs(
        &self,
        pipeline: &str,
        states: &[RunState],
        trigger: &str,
        size: usize,
        token: &str,
    ) -> Result<(Vec<RunListing>, String), ApiError> {
        if !trigger.is_empty() && !Trigger::KINDS.contains(&trigger) {
            return Err(ApiError::Invalid(format!("trigger {trigger:?} is not one of {}", Trigger::KINDS.join(", "))));
        }
        let filter = RunFilter {
            pipeline: (!pipeline.is_empty()).then(|| pipeline.to_string()),
            state: if states.len() == 1 { Some(states[0]) } else { None },
        };
        let first_page = token.is_empty();
        let mut token = (!token.is_empty()).then(|| token.to_string());
        let mut runs = Vec::new();
        let listing = |id: String, record: Option<RunRecord>, steps: Vec<StepRecord>, message: String| RunListing {
            id,
            record,
            steps,
            message,
        };
        loop {
            let page = self.store.list_runs(&filter, size - runs.len(), token.as_deref())?;
            for listed in page.runs {
                let (record, message) = match listed {
                    Listed::Run(r) => (r, String::new()),
                    Listed::Quarantined { record: Some(r), reason, .. } => (r, format!("quarantined: {reason}")),
                    Listed::Quarantined { id, reason, record: None } => {
                        runs.push(listing(id, None, Vec::new(), format!("quarantined: {reason}")));
                        continue;
                    }
                    Listed::Unreadable { after, reason } => {
                        let after = after.map(|a| format!(" after run {a}")).unwrap_or_default();
                        let message = format!("unreadable runs{after} (`weir store check` says which): {reason}");
                        runs.push(listing(String::new(), None, Vec::new(), message));
                        continue;
                    }
                };
                if states.len() > 1 && !states.contains(&record.state) {
                    continue;
                }
                if !trigger.is_empty() && record.trigger.kind() != trigger {
                    continue;
                }
                // Live runs answer from memory: step counts without a scan.
                let (record, steps) = {
                    let st = self.lock();
                    match st.runs.get(&record.id) {
                        Some(live) => (live.record.clone(), live.steps.clone()),
                        None => {
                            drop(st);
                            match self.store.steps(&record.id, None, usize::MAX) {
                                Ok(steps) => (record, steps.into_iter().map(|(_, s)| s).collect()),
                                // A step record that does not decode marks its run, not the list.
                                Err(e) => {
                                    let message = format!("quarantined: {e}");
                                    runs.push(listing(record.id.clone(), Some(record), Vec::new(), message));
                                    continue;
                                }
                            }
                        }
                    }
                };
                runs.push(listing(record.id.clone(), Some(record), steps, message));
            }
            match page.next_page_token {
                Some(t) if runs.len() < size => token = Some(t),
                Some(t) => return Ok((runs, t)),
                None if runs.is_empty() && first_page => return self.no_runs_of(pipeline),
                None => return Ok((runs, String::new())),
            }
        }
    }

    /// No run matched: an empty list, unless the filter names a pipeline that is not stored,
    /// which is a mistyped name more often than a pipeline without runs (`did you mean`).
    fn no_runs_of(&self, pipeline: &str) -> Result<(Vec<RunListing>, String), ApiError> {
        if !pipeline.is_empty() && self.store.pipeline(pipeline)?.is_none() {
            return Err(self.no_pipeline(pipeline));
        }
        Ok((Vec::new(), String::new()))
    }

    /// Run `run_id`'s state and how many of its step instances have finished, of how many:
    /// from memory while it is live (no step scan), else the store.
    pub(crate) fn run_progress(&self, run_id: &str) -> Result<RunProgress, ApiError> {
        let count = |steps: &[StepRecord]| steps.iter().filter(|s| s.state.is_terminal()).count();
        {
            let st = self.lock();
            if let Some(live) = st.runs.get(run_id) {
                return Ok(RunProgress { state: live.record.state, done: count(&live.steps), total: live.steps.len() });
            }
        }
        let (record, steps, _) = self.load_run(run_id)?;
        Ok(RunProgress { state: record.state, done: count(&steps), total: steps.len() })
    }

    /// Cancels run `run_id` (`reason` is logged), durably.
    pub(crate) fn cancel(&self, run_id: &str, reason: &str) -> Result<(), ApiError> {
        require_run_id(run_id)?;
        {
            let mut st = self.lock();
            self.apply(&mut st, run_id, Event::Cancel, None)?;
        }
        self.commit()?;
        tracing::info!(run = run_id, reason, "run cancelled");
        Ok(())
    }

    /// The instances of `run_id` whose logs `weir logs` asks for: those of step (or instance)
    /// `step`, or all when it is empty, by index and name.
    pub(crate) fn log_instances(&self, run_id: &str, step: &str) -> Result<Vec<(InstanceId, String)>, ApiError> {
        let (_, steps, _) = self.load_run(run_id)?;
        let chosen: Vec<(InstanceId, String)> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                step.is_empty() || s.name == step || s.name.strip_prefix(step).is_some_and(|t| t.starts_with('['))
            })
            .map(|(i, s)| (InstanceId(i as u32), s.name.clone()))
            .collect();
        if chosen.is_empty() {
            let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
            let hint = weir_core::diag::did_you_mean(step, names.iter().copied()).unwrap_or_default();
            return Err(ApiError::NotFound(format!("run {run_id} has no step {step}{hint}")));
        }
        Ok(chosen)
    }

    /// The output file `path` of instance `instance` (a full instance name) of `run_id`.
    pub(crate) fn output(&self, run_id: &str, instance: &str, path: &str) -> Result<Entry, ApiError> {
        let (_, steps, _) = self.load_run(run_id)?;
        let i = steps
            .iter()
            .position(|s| s.name == instance)
            .ok_or_else(|| ApiError::NotFound(format!("run {run_id} has no step instance {instance}")))?;
        let manifest = self
            .store
            .artifacts(run_id, InstanceId(i as u32))?
            .ok_or_else(|| ApiError::NotFound(format!("{instance} of run {run_id} stored no outputs")))?;
        let entry = manifest.get(path).ok_or_else(|| {
            let names: Vec<&str> = manifest.entries().iter().map(|e| e.path.as_str()).collect();
            ApiError::NotFound(format!("{instance} has no output {path} (it has: {})", names.join(", ")))
        })?;
        Ok(entry.clone())
    }

    /// The stage of each step of `run`'s pipeline that has one, by step name: found once for a
    /// page of step views (a search of the pipeline per step made a 1,000-step run's GetRun
    /// quadratic).
    pub(crate) fn stages(&self, run: &RunRecord) -> std::collections::HashMap<String, String> {
        let mut st = self.lock();
        let Ok((pipeline, _)) = self.pipeline(&mut st, &run.version) else { return Default::default() };
        pipeline.steps().iter().filter_map(|s| Some((s.name.clone(), s.stage.clone()?))).collect()
    }

    /// What a step view shows beyond its record: the stage its step belongs to (empty: none;
    /// `stages` from [`Engine::stages`]) and, once it succeeded, its outputs.
    pub(crate) fn step_extras(
        &self,
        run: &RunRecord,
        i: InstanceId,
        s: &StepRecord,
        stages: &std::collections::HashMap<String, String>,
    ) -> Result<(String, Option<Manifest>), ApiError> {
        let stage = if stages.is_empty() {
            String::new()
        } else {
            stages.get(&step_and_matrix(s).0).cloned().unwrap_or_default()
        };
        let outputs = if s.state.is_success() { self.store.artifacts(&run.id, i)? } else { None };
        Ok((stage, outputs))
    }

    /// Starts a new run of `of`'s version and params. Without `from`: reuses every instance
    /// that succeeded in `of` (its outputs and metrics) and runs the rest; `of` must have
    /// failed or been cancelled. With `from` (a step name): runs that step's instances and
    /// everything downstream of them, and reuses every other instance that succeeded in `of`,
    /// whatever `of`'s state (it must be finished). Reused instances end `cached`, from `of`.
    /// With `dry_run` nothing is created. Returns the new run (unless dry) and the instance
    /// names that run again and that are reused, in plan order.
    pub(crate) fn retry(&self, of: &str, from: Option<&str>, dry_run: bool) -> Result<Retried, ApiError> {
        let (old, old_steps, _) = self.load_run(of)?;
        match (old.state, from) {
            (RunState::Succeeded, None) => {
                return Err(ApiError::Precondition(format!(
                    "run {of} succeeded: nothing to retry; start a new run, or re-run part of it with `weir retry {of} --from STEP`"
                )));
            }
            (s, _) if !s.is_terminal() && !self.lock().runs.contains_key(of) => return Err(self.not_live(of)),
            (s, _) if !s.is_terminal() => {
                return Err(ApiError::Precondition(format!(
                    "run {of} is still {s}: cancel it first (`weir cancel {of}`)"
                )));
            }
            _ => {}
        }
        let overrides: Vec<(String, String)> = old
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect();
        let (pipeline, _) = self.pipeline(&mut self.lock(), &old.version)?;
        if let Some(step) = from
            && pipeline.step(step).is_none()
        {
            let names: Vec<&str> = pipeline.steps().iter().map(|s| s.name.as_str()).collect();
            let hint =
                weir_core::diag::did_you_mean(step, names.iter().copied()).map(|m| format!("{m} ")).unwrap_or_default();
            return Err(ApiError::NotFound(format!(
                "pipeline {} has no step {step}: {hint}its steps are {}",
                pipeline.name(),
                names.join(", ")
            )));
        }
        let params = plan::resolve_params(&pipeline, &overrides)
            .map_err(|diags| self.params_error(&old.version, pipeline.name(), diags))?;
        let plan = plan::plan(&pipeline, &params, of);
        let earlier: Vec<Earlier> =
            old_steps.iter().map(|s| Earlier { name: &s.name, succeeded: s.state.is_success() }).collect();
        let retry = plan_retry(&pipeline, &plan, &earlier, from);
        if dry_run {
            return Ok((None, retry.rerun, retry.reused));
        }
        let trigger = Trigger::Retry { of: of.to_string(), from: from.map(str::to_string) };
        let bundle = self.pipeline(&mut self.lock(), &old.version)?.1;
        let prepared =
            self.prepare_run(pipeline.clone(), bundle, &old.version, &overrides, trigger, old.no_cache, None)?;
        let mut st = self.lock();
        let run_id = self.install_run(&mut st, prepared)?;
        for &n in &plan.order {
            let i = InstanceId(n.index() as u32);
            if !retry.reuses(i) {
                continue;
            }
            let Some(live) = st.runs.get(&run_id) else { break };
            if live.machine.state(i) != StepState::Ready {
                continue; // the cache supplied it already, or a `when` skipped it this time
            }
            let attempt = live.machine.live_attempt(i).expect("a ready instance has a live attempt");
            let outputs = self.store.artifacts(of, i)?.unwrap_or_default();
            let metrics = old_steps[n.index()].metrics.clone();
            self.apply(&mut st, &run_id, Event::Cached { attempt, metrics, from: of.to_string() }, Some(&outputs))?;
        }
        drop(st);
        self.commit()?;
        Ok((Some(run_id), retry.rerun, retry.reused))
    }
}

/// The step an instance belongs to and its matrix values: as stored, or, for a record from
/// before they were stored, split from its name (`train[l2=0.0,features=linear]`; wrong for
/// values that hold `,` or `=`, which is why they are stored now).
pub(crate) fn step_and_matrix(s: &StepRecord) -> (String, Vec<(String, String)>) {
    if !s.step.is_empty() {
        return (s.step.clone(), s.matrix.clone());
    }
    match s.name.split_once('[') {
        None => (s.name.clone(), Vec::new()),
        Some((step, rest)) => {
            let cells = rest.strip_suffix(']').unwrap_or(rest);
            let matrix = cells
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (step.to_string(), matrix)
        }
    }
}

pub(crate) fn has_more(engine: &Engine, run: &str, last: u64) -> bool {
    engine.store.events(run, last).map(|mut it| it.next().is_some()).unwrap_or(false)
}
