//! The `WeirClient` gRPC service: submit pipelines, start, watch, cancel and retry runs, read
//! their logs and artifacts. Decoding and encoding here; run changes go through
//! [`Engine::apply`], reads go to the store (finished runs) or memory (live ones).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weir_proto::v1;
use weir_proto::v1::weir_client_server::WeirClient;

use crate::store::{Change, Listed, LogCursor, PipelineVersion, RunFilter, RunRecord, StepRecord, Trigger};
use crate::wire;
use weir_core::plan;
use weir_core::run::{Event, InstanceId, RunState, StepState};
use weir_data::artifact::Digest;
use weir_data::bundle::{BundleLimits, is_digest};

use super::bounds::{Bounded, bounded};
use super::core::Engine;
use super::error::ApiError;
use super::transfer::{self, Upload};
use weir_core::placement;

pub struct ClientApi(pub Arc<Engine>);

type Stream<T> = ReceiverStream<Result<T, Status>>;

/// A retry's new run (none for a dry run), and the instances it runs again and reuses.
type Retried = (Option<String>, Vec<String>, Vec<String>);

impl Engine {
    /// The API view of a run record, with step counts.
    fn run_view(&self, record: &RunRecord, steps: &[StepRecord], message: String) -> v1::Run {
        let done = steps.iter().filter(|s| s.state.is_terminal()).count();
        v1::Run {
            run_id: record.id.clone(),
            pipeline: record.pipeline.clone(),
            version: record.version.clone(),
            state: wire::run_state(record.state) as i32,
            params: record
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect(),
            created_at: Some(wire::timestamp(record.created_at)),
            started_at: (record.state != RunState::Queued).then(|| wire::timestamp(record.created_at)),
            finished_at: record.finished_at.map(wire::timestamp),
            message,
            trigger: match record.trigger {
                Trigger::Manual { .. } | Trigger::Retry { .. } => v1::Trigger::Manual,
                Trigger::Schedule { .. } => v1::Trigger::Schedule,
            } as i32,
            steps_total: steps.len() as u32,
            steps_done: done as u32,
            scheduled_time: match record.trigger {
                Trigger::Schedule { at: Some(at), .. } => Some(wire::timestamp(at)),
                _ => None,
            },
            backfill: matches!(record.trigger, Trigger::Schedule { backfill: true, .. }),
            no_cache: record.no_cache,
            retry_of: match &record.trigger {
                Trigger::Retry { of, .. } => of.clone(),
                _ => String::new(),
            },
            retry_from: match &record.trigger {
                Trigger::Retry { from: Some(from), .. } => from.clone(),
                _ => String::new(),
            },
        }
    }

    /// A run's record and every step record: from memory while it is live, else the store.
    fn load_run(&self, run_id: &str) -> Result<(RunRecord, Vec<StepRecord>, String), ApiError> {
        {
            let st = self.lock();
            if let Some(live) = st.runs.get(run_id) {
                let steps = live.steps.clone();
                // A live run stalls while the store cannot write: say why.
                return Ok((live.record.clone(), steps, self.fault().unwrap_or_default()));
            }
        }
        let quarantined = self.store.quarantined(run_id)?;
        let record = match self.store.run(run_id) {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(ApiError::NotFound(format!(
                    "no run {run_id}: `weir runs` lists the runs this server knows"
                )));
            }
            Err(e) => return Err(ApiError::Precondition(format!("run {run_id} is quarantined: {e}"))),
        };
        let steps = self.store.steps(run_id, None, usize::MAX)?.into_iter().map(|(_, s)| s).collect();
        let message = quarantined.map(|q| format!("quarantined: {q}")).unwrap_or_default();
        Ok((record, steps, message))
    }

    fn step_view(&self, run: &RunRecord, i: InstanceId, s: &StepRecord) -> Result<v1::Step, ApiError> {
        let (step, matrix) = split_instance(&s.name);
        let stage = {
            let mut st = self.lock();
            self.pipeline(&mut st, &run.version)
                .ok()
                .and_then(|(p, _)| p.step(step).and_then(|s| s.stage.clone()))
                .unwrap_or_default()
        };
        let outputs = if s.state.is_success() { self.store.artifacts(&run.id, i)? } else { None };
        Ok(v1::Step {
            instance: i.0,
            name: s.name.clone(),
            step: step.to_string(),
            stage,
            state: wire::step_state(s.state) as i32,
            attempt: s.attempts,
            worker_id: s.worker.clone().unwrap_or_default(),
            started_at: s.started_at.map(wire::timestamp),
            finished_at: s.finished_at.map(wire::timestamp),
            message: s.message.clone().unwrap_or_default(),
            metrics: s.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            outputs: outputs.as_ref().map(wire::manifest),
            matrix,
            cached: s.state == StepState::Cached,
            cached_from: s.cached_from.clone().unwrap_or_default(),
            cache_key: s.cache.as_ref().map(|c| c.key.clone()).unwrap_or_default(),
            // Filled by GetRun from `Engine::waiting`, for ready steps only.
            waiting_reason: String::new(),
            unplaceable: false,
        })
    }

    /// Starts a new run of `of`'s version and params. Without `from`: reuses every instance
    /// that succeeded in `of` (its outputs and metrics) and runs the rest; `of` must have
    /// failed or been cancelled. With `from` (a step name): runs that step's instances and
    /// everything downstream of them, and reuses every other instance that succeeded in `of`,
    /// whatever `of`'s state (it must be finished). Reused instances end `cached`, from `of`.
    /// With `dry_run` nothing is created. Returns the new run (unless dry) and the instance
    /// names that run again and that are reused, in plan order.
    fn retry(&self, of: &str, from: Option<&str>, dry_run: bool) -> Result<Retried, ApiError> {
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
            .map_err(|diags| ApiError::diagnostics("invalid params", "params", "", diags))?;
        let plan = plan::plan(&pipeline, &params, of);
        // With `from`: the step's instances and everything reachable from them run again.
        let mut again = vec![from.is_none(); plan.graph.node_count()];
        if let Some(step) = from {
            let mut stack: Vec<petgraph::graph::NodeIndex> =
                plan.graph.node_indices().filter(|n| pipeline.steps()[plan.graph[*n].step].name == step).collect();
            while let Some(n) = stack.pop() {
                if !std::mem::replace(&mut again[n.index()], true) {
                    stack.extend(plan.graph.neighbors_directed(n, petgraph::Direction::Outgoing));
                }
            }
        }
        let reusable = |n: petgraph::graph::NodeIndex| {
            let old_step = old_steps.get(n.index());
            let reuse = old_step.is_some_and(|s| s.state.is_success() && s.name == plan.graph[n].name);
            reuse && (from.is_none() || !again[n.index()])
        };
        let (mut rerun, mut reused) = (Vec::new(), Vec::new());
        for &n in &plan.order {
            let name = plan.graph[n].name.clone();
            if reusable(n) { reused.push(name) } else { rerun.push(name) }
        }
        if dry_run {
            return Ok((None, rerun, reused));
        }
        let trigger = Trigger::Retry { of: of.to_string(), from: from.map(str::to_string) };
        let bundle = self.pipeline(&mut self.lock(), &old.version)?.1;
        let prepared =
            self.prepare_run(pipeline.clone(), bundle, &old.version, &overrides, trigger, old.no_cache, None)?;
        let mut st = self.lock();
        let run_id = self.install_run(&mut st, prepared)?;
        for &n in &plan.order {
            if !reusable(n) {
                continue;
            }
            let i = InstanceId(n.index() as u32);
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
        Ok((Some(run_id), rerun, reused))
    }
}

/// The answer to a submission (`validated_only`: nothing was stored).
fn submitted(
    pipeline: &weir_core::spec::Pipeline,
    version: String,
    created: bool,
    validated_only: bool,
) -> v1::SubmitPipelineResponse {
    v1::SubmitPipelineResponse {
        name: pipeline.name().to_string(),
        version,
        created,
        warnings: Vec::new(),
        steps: pipeline.steps().len() as u32,
        instances: pipeline.instance_count() as u32,
        validated_only,
    }
}

/// A ready step's waiting reason in its view: the structured fields, and `waiting: <reason>`
/// in its message as before them (older clients and `weir status`'s MESSAGE column read it).
fn waiting_view(view: &mut v1::Step, w: &placement::Waiting) {
    // The run moved on between the two looks: only a step still ready waits.
    if view.state != v1::StepState::Ready as i32 {
        return;
    }
    view.message = format!("waiting: {}", w.reason);
    view.waiting_reason.clone_from(&w.reason);
    view.unplaceable = w.unplaceable;
}

/// `train[l2=0.0,features=linear]` -> (`train`, {l2: 0.0, features: linear}); best effort for
/// values holding `,` or `=`.
fn split_instance(name: &str) -> (&str, std::collections::HashMap<String, String>) {
    match name.split_once('[') {
        None => (name, Default::default()),
        Some((step, rest)) => {
            let cells = rest.strip_suffix(']').unwrap_or(rest);
            let matrix = cells
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (step, matrix)
        }
    }
}

fn page_size(requested: u32, default: usize, max: usize) -> usize {
    if requested == 0 { default } else { (requested as usize).min(max) }
}

#[tonic::async_trait]
impl WeirClient for ClientApi {
    async fn submit_pipeline(
        &self,
        req: Request<Streaming<v1::SubmitPipelineRequest>>,
    ) -> Result<Response<v1::SubmitPipelineResponse>, Status> {
        let engine = &self.0;
        let mut stream = req.into_inner();
        let header = match stream.message().await?.and_then(|m| m.part) {
            Some(v1::submit_pipeline_request::Part::Header(h)) => h,
            _ => return Err(ApiError::Invalid("the first message of a submission must be its header".into()).into()),
        };
        header.check()?;
        let pipeline = engine.check_pipeline(&header.yaml, &header.file_name)?;
        let limits = BundleLimits::default();
        let bundle = if header.bundle_digest.is_empty() && header.bundle_size == 0 {
            None
        } else {
            if !is_digest(&header.bundle_digest) {
                return Err(ApiError::Invalid(format!(
                    "bundle_digest {:?} is not a BLAKE3 hex digest",
                    header.bundle_digest
                ))
                .into());
            }
            if header.bundle_size > limits.max_archive_len() {
                return Err(ApiError::Invalid(format!(
                    "the bundle is {} bytes; at most {} are accepted (list large files in .weirignore)",
                    header.bundle_size,
                    limits.max_archive_len()
                ))
                .into());
            }
            let expected: Digest =
                header.bundle_digest.parse().map_err(|e| ApiError::Invalid(format!("bundle_digest: {e}")))?;
            let mut upload = None;
            while let Some(msg) = stream.message().await? {
                match msg.part {
                    Some(v1::submit_pipeline_request::Part::BundleChunk(_)) if header.validate_only => {
                        return Err(
                            ApiError::Invalid("a validate-only submission carries no bundle chunks".into()).into()
                        );
                    }
                    Some(v1::submit_pipeline_request::Part::BundleChunk(bytes)) => {
                        let up = upload.get_or_insert_with(|| {
                            Upload::start(engine, format!("bundle of {}", pipeline.name()), header.bundle_size)
                        });
                        up.push(bytes).await?;
                    }
                    _ => return Err(ApiError::Invalid("only bundle chunks may follow the header".into()).into()),
                }
            }
            match upload {
                Some(up) => {
                    let (got, size) = up.finish().await?;
                    if got != expected || size != header.bundle_size {
                        return Err(ApiError::Invalid(format!(
                            "the bundle arrived as {size} bytes hashing to {got}; the header said {} bytes, {expected}",
                            header.bundle_size
                        ))
                        .into());
                    }
                }
                // Validating only: the bytes are not needed, and nothing is stored.
                None if header.validate_only || engine.blobs().contains(&expected) => {}
                None => {
                    return Err(ApiError::Invalid(format!("bundle {expected} is not stored: send its bytes")).into());
                }
            }
            Some(expected)
        };
        let version = super::pipelines::version_of(&pipeline, bundle.as_ref());
        let created = engine.store.pipeline_version(&version).map_err(ApiError::from)?.is_none();
        if header.validate_only {
            tracing::debug!(pipeline = pipeline.name(), version, created, "pipeline validated, not stored");
            return Ok(Response::new(submitted(&pipeline, version, created, true)));
        }
        let record = PipelineVersion {
            name: pipeline.name().to_string(),
            yaml: header.yaml.clone(),
            bundle_digest: bundle,
            submitted_at: wire::now(),
        };
        engine.store.put_pipeline_version(&version, &record).map_err(ApiError::from)?;
        if engine.scheduling {
            {
                let mut st = engine.lock();
                engine.sync_schedule(&mut st, pipeline.name(), &version, chrono::Utc::now())?;
            }
            engine.commit()?;
        }
        tracing::info!(pipeline = pipeline.name(), version, created, "pipeline submitted");
        Ok(Response::new(submitted(&pipeline, version, created, false)))
    }

    async fn list_pipelines(
        &self,
        req: Request<v1::ListPipelinesRequest>,
    ) -> Result<Response<v1::ListPipelinesResponse>, Status> {
        let r = bounded(req)?;
        let engine = &self.0;
        let size = page_size(r.page_size, 100, 1000);
        let all = engine.store.pipelines().map_err(ApiError::from)?;
        let mut out = Vec::new();
        let mut next = String::new();
        for (name, index) in all.into_iter().filter(|(n, _)| r.page_token.is_empty() || *n > r.page_token) {
            if out.len() == size {
                next = out.last().map(|p: &v1::PipelineSummary| p.name.clone()).unwrap_or_default();
                break;
            }
            let stored = engine.store.pipeline_version(&index.latest).map_err(ApiError::from)?;
            let parsed = {
                let mut st = engine.lock();
                engine.pipeline(&mut st, &index.latest).ok().map(|(p, _)| p)
            };
            out.push(v1::PipelineSummary {
                name,
                description: parsed.as_ref().and_then(|p| p.description().map(str::to_string)).unwrap_or_default(),
                latest_version: index.latest.clone(),
                submitted_at: stored.map(|s| wire::timestamp(s.submitted_at)),
                version_count: index.versions.len() as u32,
                schedule: parsed.as_ref().and_then(|p| p.schedule().map(|s| s.cron.clone())).unwrap_or_default(),
            });
        }
        Ok(Response::new(v1::ListPipelinesResponse { pipelines: out, next_page_token: next }))
    }

    async fn start_run(&self, req: Request<v1::StartRunRequest>) -> Result<Response<v1::StartRunResponse>, Status> {
        let r = bounded(req)?;
        let engine = &self.0;
        let version = match r.pipeline {
            Some(v1::start_run_request::Pipeline::Name(name)) => {
                engine
                    .store
                    .pipeline(&name)
                    .map_err(ApiError::from)?
                    .ok_or_else(|| {
                        ApiError::NotFound(format!("no pipeline {name}: submit it first with `weir submit DIR`"))
                    })?
                    .latest
            }
            Some(v1::start_run_request::Pipeline::Version(v)) => v,
            None => return Err(ApiError::Invalid("pipeline: give a name or a version".into()).into()),
        };
        let overrides: Vec<(String, String)> = r.params.into_iter().collect::<BTreeMap<_, _>>().into_iter().collect();
        // Plan outside the state lock (and off the async threads): a huge run costs its caller
        // the time it takes, not everyone else.
        let (pipeline, bundle) = engine.pipeline(&mut engine.lock(), &version)?;
        let planner = engine.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let trigger = Trigger::Manual { user: None };
            planner.prepare_run(pipeline, bundle, &version, &overrides, trigger, r.no_cache, None)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("planning the run failed: {e}")))??;
        let run_id = engine.install_run(&mut engine.lock(), prepared)?;
        engine.commit()?;
        let (record, steps, message) = engine.load_run(&run_id)?;
        tracing::info!(run = run_id, "run started");
        Ok(Response::new(v1::StartRunResponse { run: Some(engine.run_view(&record, &steps, message)) }))
    }

    async fn get_run(&self, req: Request<v1::GetRunRequest>) -> Result<Response<v1::GetRunResponse>, Status> {
        let r = bounded(req)?;
        let engine = &self.0;
        let (record, steps, message) = engine.load_run(&r.run_id)?;
        let from: usize = if r.step_page_token.is_empty() {
            0
        } else {
            r.step_page_token
                .parse()
                .map_err(|_| ApiError::Invalid("step_page_token was not issued by this server".into()))?
        };
        let size = page_size(r.step_page_size, 1000, 10_000);
        let waiting = engine.waiting(&r.run_id);
        let mut views = Vec::new();
        for (i, s) in steps.iter().enumerate().skip(from).take(size) {
            let mut view = engine.step_view(&record, InstanceId(i as u32), s)?;
            if let Some(w) = waiting.get(&InstanceId(i as u32)) {
                waiting_view(&mut view, w);
            }
            views.push(view);
        }
        let next = if from + size < steps.len() { (from + size).to_string() } else { String::new() };
        Ok(Response::new(v1::GetRunResponse {
            run: Some(engine.run_view(&record, &steps, message)),
            steps: views,
            next_step_page_token: next,
        }))
    }

    async fn list_runs(&self, req: Request<v1::ListRunsRequest>) -> Result<Response<v1::ListRunsResponse>, Status> {
        let r = bounded(req)?;
        let engine = &self.0;
        let states: Vec<RunState> = r.states().filter_map(wire::from_run_state).collect();
        let filter = RunFilter {
            pipeline: (!r.pipeline.is_empty()).then(|| r.pipeline.clone()),
            state: if states.len() == 1 { Some(states[0]) } else { None },
        };
        let size = page_size(r.page_size, 50, 1000);
        let mut token = (!r.page_token.is_empty()).then(|| r.page_token.clone());
        let mut runs = Vec::new();
        let mut next = String::new();
        loop {
            let page = engine.store.list_runs(&filter, size - runs.len(), token.as_deref()).map_err(ApiError::from)?;
            for listed in page.runs {
                let (record, message) = match listed {
                    Listed::Run(r) => (r, String::new()),
                    Listed::Quarantined { record: Some(r), reason, .. } => (r, format!("quarantined: {reason}")),
                    Listed::Quarantined { id, reason, record: None } => {
                        runs.push(v1::Run {
                            run_id: id,
                            message: format!("quarantined: {reason}"),
                            ..Default::default()
                        });
                        continue;
                    }
                    Listed::Unreadable { after, reason } => {
                        let after = after.map(|a| format!(" after run {a}")).unwrap_or_default();
                        runs.push(v1::Run {
                            message: format!("unreadable runs{after} (`weir store check` says which): {reason}"),
                            ..Default::default()
                        });
                        continue;
                    }
                };
                if states.len() > 1 && !states.contains(&record.state) {
                    continue;
                }
                // Live runs answer from memory: step counts without a scan.
                let (record, steps) = {
                    let st = engine.lock();
                    match st.runs.get(&record.id) {
                        Some(live) => (live.record.clone(), live.steps.clone()),
                        None => {
                            drop(st);
                            match engine.store.steps(&record.id, None, usize::MAX) {
                                Ok(steps) => (record, steps.into_iter().map(|(_, s)| s).collect()),
                                // A step record that does not decode marks its run, not the list.
                                Err(e) => {
                                    let message = format!("quarantined: {e}");
                                    runs.push(engine.run_view(&record, &[], message));
                                    continue;
                                }
                            }
                        }
                    }
                };
                runs.push(engine.run_view(&record, &steps, message));
            }
            match page.next_page_token {
                Some(t) if runs.len() < size => token = Some(t),
                Some(t) => {
                    next = t;
                    break;
                }
                None => break,
            }
        }
        Ok(Response::new(v1::ListRunsResponse { runs, next_page_token: next }))
    }

    type WatchRunStream = Stream<v1::RunEvent>;

    async fn watch_run(&self, req: Request<v1::WatchRunRequest>) -> Result<Response<Self::WatchRunStream>, Status> {
        let r = bounded(req)?;
        let engine = self.0.clone();
        let mut changes = engine.changes.subscribe();
        let (_, steps, _) = engine.load_run(&r.run_id)?;
        let names: Vec<String> = steps.into_iter().map(|s| s.name).collect();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut last = r.after_seq;
            loop {
                let mut ended = false;
                let events = match engine.store.events(&r.run_id, last) {
                    Ok(it) => it,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                        return;
                    }
                };
                for item in events {
                    let (seq, ev) = match item {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                            return;
                        }
                    };
                    last = seq;
                    for change in ev.changes {
                        let kind = match change {
                            Change::Step { instance, state, attempt, message } => {
                                v1::run_event::Kind::Step(v1::StepChanged {
                                    instance,
                                    name: names.get(instance as usize).cloned().unwrap_or_default(),
                                    state: wire::step_state(state) as i32,
                                    attempt,
                                    message: message.unwrap_or_default(),
                                })
                            }
                            Change::Run { state } => {
                                ended |= state.is_terminal();
                                v1::run_event::Kind::Run(v1::RunChanged {
                                    state: wire::run_state(state) as i32,
                                    message: String::new(),
                                })
                            }
                        };
                        let event = v1::RunEvent { seq, time: Some(wire::timestamp(ev.now)), kind: Some(kind) };
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
                if ended {
                    return;
                }
                if engine.store.run(&r.run_id).ok().flatten().is_some_and(|rec| rec.state.is_terminal()) {
                    // Finished before this watcher saw the change (or a replayed finish).
                    if !has_more(&engine, &r.run_id, last) {
                        return;
                    }
                    continue;
                }
                // Wait for a change of this run; a lag or a quiet minute re-reads the store.
                let wait = async {
                    loop {
                        match changes.recv().await {
                            Ok((run, seq)) if run == r.run_id && seq > last => return,
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Lagged(_)) => return,
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                };
                tokio::select! {
                    _ = wait => {}
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn cancel_run(&self, req: Request<v1::CancelRunRequest>) -> Result<Response<v1::CancelRunResponse>, Status> {
        let r = bounded(req)?;
        let engine = &self.0;
        {
            let mut st = engine.lock();
            engine.apply(&mut st, &r.run_id, Event::Cancel, None)?;
        }
        engine.commit()?;
        tracing::info!(run = r.run_id, reason = r.reason, "run cancelled");
        let (record, steps, message) = engine.load_run(&r.run_id)?;
        Ok(Response::new(v1::CancelRunResponse { run: Some(engine.run_view(&record, &steps, message)) }))
    }

    async fn retry_run(&self, req: Request<v1::RetryRunRequest>) -> Result<Response<v1::RetryRunResponse>, Status> {
        let r = bounded(req)?;
        let engine = &self.0;
        let from = (!r.from_step.is_empty()).then_some(r.from_step.as_str());
        let (run_id, rerun, reused) = engine.retry(&r.run_id, from, r.dry_run)?;
        let run = match run_id {
            Some(run_id) => {
                tracing::info!(run = run_id, of = r.run_id, from, "retry started");
                let (record, steps, message) = engine.load_run(&run_id)?;
                Some(engine.run_view(&record, &steps, message))
            }
            None => None,
        };
        Ok(Response::new(v1::RetryRunResponse { run, rerun, reused }))
    }

    type StreamLogsStream = Stream<v1::LogChunk>;

    async fn stream_logs(
        &self,
        req: Request<v1::StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        let r = bounded(req)?;
        let engine = self.0.clone();
        let (_, steps, _) = engine.load_run(&r.run_id)?;
        let chosen: Vec<(InstanceId, String)> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                r.step.is_empty()
                    || s.name == r.step
                    || s.name.strip_prefix(&r.step).is_some_and(|t| t.starts_with('['))
            })
            .map(|(i, s)| (InstanceId(i as u32), s.name.clone()))
            .collect();
        if chosen.is_empty() {
            let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
            let hint = weir_core::diag::did_you_mean(&r.step, names.iter().copied()).unwrap_or_default();
            return Err(ApiError::NotFound(format!("run {} has no step {}{hint}", r.run_id, r.step)).into());
        }
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut cursors: Vec<Option<LogCursor>> = vec![None; chosen.len()];
            let mut logs = engine.logs.subscribe();
            loop {
                logs.borrow_and_update();
                let finished = engine.store.run(&r.run_id).ok().flatten().is_none_or(|rec| rec.state.is_terminal());
                let mut any = false;
                for (k, (i, name)) in chosen.iter().enumerate() {
                    loop {
                        let batch = match engine.store.logs(&r.run_id, *i, cursors[k], 512) {
                            Ok(b) => b,
                            Err(e) => {
                                let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                                return;
                            }
                        };
                        if batch.is_empty() {
                            break;
                        }
                        any = true;
                        for (cursor, chunk) in batch {
                            cursors[k] = Some(cursor);
                            if r.attempt != 0 && cursor.attempt != r.attempt {
                                continue;
                            }
                            let out = v1::LogChunk {
                                time: Some(wire::timestamp(chunk.at)),
                                stream: match chunk.stream {
                                    crate::store::Stream::Stdout => v1::LogStream::Stdout,
                                    crate::store::Stream::Stderr => v1::LogStream::Stderr,
                                } as i32,
                                data: chunk.data,
                                instance_name: name.clone(),
                                attempt: cursor.attempt,
                            };
                            if tx.send(Ok(out)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                if !r.follow || (finished && !any) {
                    return;
                }
                tokio::select! {
                    _ = logs.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type GetArtifactStream = Stream<v1::GetArtifactResponse>;

    async fn get_artifact(
        &self,
        req: Request<v1::GetArtifactRequest>,
    ) -> Result<Response<Self::GetArtifactStream>, Status> {
        let r = bounded(req)?;
        let engine = &self.0;
        let (_, steps, _) = engine.load_run(&r.run_id)?;
        let i = steps
            .iter()
            .position(|s| s.name == r.step)
            .ok_or_else(|| ApiError::NotFound(format!("run {} has no step instance {}", r.run_id, r.step)))?;
        let manifest = engine
            .store
            .artifacts(&r.run_id, InstanceId(i as u32))
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("{} of run {} stored no outputs", r.step, r.run_id)))?;
        let entry = manifest
            .get(&r.path)
            .ok_or_else(|| {
                let names: Vec<&str> = manifest.entries().iter().map(|e| e.path.as_str()).collect();
                ApiError::NotFound(format!("{} has no output {} (it has: {})", r.step, r.path, names.join(", ")))
            })?
            .clone();
        let mut chunks = transfer::download(engine, entry.digest, 0)?;
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let head = v1::GetArtifactResponse {
                part: Some(v1::get_artifact_response::Part::Entry(v1::ManifestEntry {
                    path: entry.path.clone(),
                    digest: entry.digest.to_string(),
                    size: entry.size,
                    executable: entry.executable,
                })),
            };
            if tx.send(Ok(head)).await.is_err() {
                return;
            }
            use tokio_stream::StreamExt;
            while let Some(c) = chunks.next().await {
                let msg =
                    c.map(|c| v1::GetArtifactResponse { part: Some(v1::get_artifact_response::Part::Chunk(c.data)) });
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_schedules(
        &self,
        req: Request<v1::ListSchedulesRequest>,
    ) -> Result<Response<v1::ListSchedulesResponse>, Status> {
        let r = bounded(req)?;
        let schedules = self.0.schedule_views(&r.pipeline, chrono::Utc::now())?;
        Ok(Response::new(v1::ListSchedulesResponse { schedules }))
    }

    async fn pause_schedule(
        &self,
        req: Request<v1::PauseScheduleRequest>,
    ) -> Result<Response<v1::PauseScheduleResponse>, Status> {
        let schedule = self.0.pause(&bounded(req)?.pipeline, true)?;
        Ok(Response::new(v1::PauseScheduleResponse { schedule: Some(schedule) }))
    }

    async fn resume_schedule(
        &self,
        req: Request<v1::ResumeScheduleRequest>,
    ) -> Result<Response<v1::ResumeScheduleResponse>, Status> {
        let schedule = self.0.pause(&bounded(req)?.pipeline, false)?;
        Ok(Response::new(v1::ResumeScheduleResponse { schedule: Some(schedule) }))
    }

    async fn backfill(&self, req: Request<v1::BackfillRequest>) -> Result<Response<v1::BackfillResponse>, Status> {
        let r = bounded(req)?;
        let engine = &self.0;
        let ticks = {
            let mut st = engine.lock();
            engine.backfill(&mut st, &r.pipeline, &r.from, &r.to, r.dry_run, chrono::Utc::now())?
        };
        engine.commit()?;
        Ok(Response::new(v1::BackfillResponse { ticks }))
    }

    // Step caching: server/cache.rs.

    async fn plan_run(&self, req: Request<v1::PlanRunRequest>) -> Result<Response<v1::PlanRunResponse>, Status> {
        Ok(Response::new(self.0.plan_run(bounded(req)?)?))
    }

    async fn explain_cache(
        &self,
        req: Request<v1::ExplainCacheRequest>,
    ) -> Result<Response<v1::ExplainCacheResponse>, Status> {
        Ok(Response::new(self.0.explain_cache(bounded(req)?)?))
    }

    // Tracking and lineage: server/tracking.rs.

    async fn metric_history(
        &self,
        req: Request<v1::MetricHistoryRequest>,
    ) -> Result<Response<v1::MetricHistoryResponse>, Status> {
        Ok(Response::new(self.0.metric_history(bounded(req)?)?))
    }

    async fn get_lineage(
        &self,
        req: Request<v1::GetLineageRequest>,
    ) -> Result<Response<v1::GetLineageResponse>, Status> {
        Ok(Response::new(self.0.lineage(bounded(req)?)?))
    }

    // The model registry: server/registry.rs.

    async fn list_models(
        &self,
        req: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        Ok(Response::new(self.0.list_models(bounded(req)?)?))
    }

    async fn get_model(&self, req: Request<v1::GetModelRequest>) -> Result<Response<v1::GetModelResponse>, Status> {
        Ok(Response::new(self.0.get_model(bounded(req)?)?))
    }

    async fn promote_model(
        &self,
        req: Request<v1::PromoteModelRequest>,
    ) -> Result<Response<v1::PromoteModelResponse>, Status> {
        let answer = self.0.promote_model(bounded(req)?)?;
        self.0.commit()?;
        Ok(Response::new(answer))
    }

    async fn rollback_model(
        &self,
        req: Request<v1::RollbackModelRequest>,
    ) -> Result<Response<v1::RollbackModelResponse>, Status> {
        let answer = self.0.rollback_model(bounded(req)?)?;
        self.0.commit()?;
        Ok(Response::new(answer))
    }

    type GetModelArtifactStream = Stream<v1::GetModelArtifactResponse>;

    async fn get_model_artifact(
        &self,
        req: Request<v1::GetModelArtifactRequest>,
    ) -> Result<Response<Self::GetModelArtifactStream>, Status> {
        Ok(Response::new(super::registry::model_artifact(&self.0, bounded(req)?)?))
    }
}

impl Engine {
    /// Pauses (or resumes) a schedule and answers with its view.
    fn pause(&self, pipeline: &str, paused: bool) -> Result<v1::ScheduleInfo, ApiError> {
        {
            let mut st = self.lock();
            self.set_paused(&mut st, pipeline, paused, chrono::Utc::now())?;
        }
        self.commit()?;
        let mut views = self.schedule_views(pipeline, chrono::Utc::now())?;
        views.pop().ok_or_else(|| self.no_schedule(pipeline))
    }
}

fn has_more(engine: &Engine, run: &str, last: u64) -> bool {
    engine.store.events(run, last).map(|mut it| it.next().is_some()).unwrap_or(false)
}
