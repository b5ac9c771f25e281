//! The engine loop's state and its one way of changing it: [`Engine::apply`] feeds an event to
//! a run's [`RunMachine`], writes the event, the step records it changed and the run record in
//! one atomic [`Batch`], and performs the effects in memory (queue a ready attempt, order a
//! stop). [`Engine::commit`], called after the state lock is released and before any answer,
//! flushes and then wakes watchers: concurrent calls share one fsync (group commit), and every
//! acknowledged change is durable. A failed write reloads the run from the store, so memory
//! never runs ahead of what was written.
//!
//! On start, [`Engine::recover`] replays every unfinished run's events at their recorded times
//! (effects discarded), re-queues what was ready and keeps what was held as orphans: a worker
//! that still runs one says so in its next heartbeat and keeps it; one nobody claims within the
//! lease timeout is `Lost` and dispatched again. A run whose records do not decode is
//! quarantined; the others carry on.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, broadcast, watch};

use crate::artifact::{self, Manifest};
use crate::plan::{self, Plan};
use crate::run::{AttemptId, Effect, Event, InstanceId, Millis, Rejected, RunMachine, RunState, StepState};
use crate::spec::{Limits, Pipeline};
use crate::store::{Batch, Change, EventRecord, RunRecord, StepRecord, Store, Trigger};
use crate::wire;

use super::error::ApiError;
use super::placement::{Need, Offer, ReadyQueue, Usage};

/// The lease terms the engine gives workers.
#[derive(Clone, Copy, Debug)]
pub struct Terms {
    pub lease_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// The longest a `Lease` long-poll is held.
    pub max_wait: Duration,
}

/// One unfinished run, in memory.
pub(super) struct Live {
    pub record: RunRecord,
    pub machine: RunMachine,
    pub plan: Plan,
    pub pipeline: Arc<Pipeline>,
    pub bundle: Option<String>,
    /// Mirrors the `steps` tree, so a change rewrites one record without reading it.
    pub steps: Vec<StepRecord>,
}

impl Live {
    /// What an attempt of `instance` needs of its worker.
    pub fn need(&self, instance: InstanceId) -> Need {
        let inst = &self.plan.graph[petgraph::graph::NodeIndex::new(instance.index())];
        Need::of(&self.pipeline.steps()[inst.step])
    }
}

/// A registered worker.
pub(super) struct Worker {
    pub name: String,
    pub last_seen: Instant,
    /// What it offered at Register.
    pub offer: Offer,
    /// Attempts it holds, with when it got each and what each uses.
    pub held: HashMap<(String, AttemptId), Held>,
    /// Stop orders for its next heartbeat.
    pub stops: Vec<(String, AttemptId, String)>,
    /// `Lease` long-polls in progress: a worker waiting in one is alive.
    pub polling: u32,
}

/// One attempt a worker holds.
pub(super) struct Held {
    pub since: Instant,
    pub usage: Usage,
}

impl Worker {
    /// What its held attempts use of its offer.
    pub fn used(&self) -> Usage {
        self.held.values().fold(Usage::default(), |sum, h| sum.add(h.usage))
    }
}

#[derive(Default)]
pub(super) struct State {
    pub runs: HashMap<String, Live>,
    pub ready: ReadyQueue,
    pub workers: HashMap<String, Worker>,
    /// Held attempts found on recovery, claimable by a heartbeat until the deadline.
    pub orphans: HashMap<(String, AttemptId), Instant>,
    /// Parsed pipelines and their bundle digests, by version.
    pub pipelines: HashMap<String, (Arc<Pipeline>, Option<String>)>,
    pub next_worker: u64,
    /// `(run, seq)` of events written but not yet announced to watchers: they are announced
    /// by [`Engine::commit`], once durable.
    pub unannounced: Vec<(String, u64)>,
    /// The schedules this engine fires, by pipeline name.
    pub schedules: std::collections::BTreeMap<String, super::scheduler::Sched>,
    /// Unfinished runs out of memory because reloading them met a store that cannot write
    /// (a full disk): [`Engine::tick`] reloads them once it can.
    pub reload: BTreeSet<String>,
    /// When [`Engine::tick`] may next try to reopen a store that cannot write.
    pub heal_at: Option<Instant>,
}

/// The engine: state, store and the signals between them.
pub struct Engine {
    pub(super) store: Store,
    pub(super) blobs: artifact::Store,
    pub(super) state: Mutex<State>,
    pub(super) terms: Terms,
    /// Wakes `Lease` long-polls when something became ready.
    pub(super) ready_signal: Notify,
    /// `(run, last event seq)` after every applied event, for `WatchRun`.
    pub(super) changes: broadcast::Sender<(String, u64)>,
    /// Bumped after every stored log batch, for `StreamLogs --follow`.
    pub(super) logs: watch::Sender<u64>,
    pub(super) limits: Limits,
    /// Whether this engine fires schedules (`weir server`) or ignores them (`weir run`).
    pub(super) scheduling: bool,
}

impl Engine {
    pub(super) fn new(store: Store, blobs: artifact::Store, terms: Terms) -> Engine {
        let (changes, _) = broadcast::channel(1024);
        let (logs, _) = watch::channel(0);
        Engine {
            store,
            blobs,
            state: Mutex::new(State { next_worker: wire::now().0, ..State::default() }),
            terms,
            ready_signal: Notify::new(),
            changes,
            logs,
            limits: Limits::default(),
            scheduling: false,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves state that may be half-updated; the store is
        // the truth, so carry on with what memory holds rather than poisoning every call.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The parsed pipeline of a stored version and its bundle digest, parsed once per version
    /// (GetRun asks for every step's stage: reading the stored YAML each time cost more than
    /// the rest of the call).
    pub(super) fn pipeline(&self, st: &mut State, version: &str) -> Result<(Arc<Pipeline>, Option<String>), ApiError> {
        if let Some(cached) = st.pipelines.get(version) {
            return Ok(cached.clone());
        }
        let stored = self
            .store
            .pipeline_version(version)?
            .ok_or_else(|| ApiError::NotFound(format!("pipeline version {version} is not stored")))?;
        let parsed = crate::spec::load(&stored.yaml, &self.limits).map_err(|d| {
            ApiError::Internal(format!(
                "stored pipeline version {version} no longer validates ({} problems); resubmit it",
                d.len()
            ))
        })?;
        let entry = (Arc::new(parsed), stored.bundle_digest.map(|d| d.to_string()));
        st.pipelines.insert(version.to_string(), entry.clone());
        Ok(entry)
    }

    /// Creates a run of `version` with the param overrides `overrides` (text form) and starts
    /// it, as run `id` when given (the caller checked no run has it), else a fresh id.
    pub(super) fn create_run(
        &self,
        st: &mut State,
        version: &str,
        overrides: &[(String, String)],
        trigger: Trigger,
        no_cache: bool,
        id: Option<String>,
    ) -> Result<String, ApiError> {
        let (pipeline, bundle) = self.pipeline(st, version)?;
        let params = plan::resolve_params(&pipeline, overrides)
            .map_err(|diags| ApiError::diagnostics("invalid params", "params", "", diags))?;
        let now = wire::now();
        let run_id = match id {
            Some(id) => id,
            None => self.new_run_id(pipeline.name(), now)?,
        };
        let plan = plan::plan(&pipeline, &params, &run_id);
        let machine = RunMachine::new(&pipeline, &plan);
        let record = RunRecord {
            id: run_id.clone(),
            pipeline: pipeline.name().to_string(),
            version: version.to_string(),
            params: params.iter().map(|(n, v)| (n.to_string(), serde_json::Value::String(v.to_string()))).collect(),
            state: RunState::Queued,
            created_at: now,
            finished_at: None,
            trigger,
            no_cache,
        };
        let steps: Vec<StepRecord> = machine
            .instances()
            .map(|i| StepRecord { name: machine.name(i).to_string(), ..StepRecord::default() })
            .collect();
        let mut batch = Batch::new();
        batch.put_run(&record)?;
        for (i, s) in steps.iter().enumerate() {
            batch.put_step(&run_id, InstanceId(i as u32), s)?;
        }
        self.store.write_batch(batch)?;
        let live = Live { record, machine, plan, pipeline, bundle, steps };
        st.runs.insert(run_id.clone(), live);
        self.apply(st, &run_id, Event::Start, None)?;
        Ok(run_id)
    }

    /// `pipeline-YYYYMMDD-HHMMSS-xxxx`: sortable by time, readable, unique in this store.
    fn new_run_id(&self, pipeline: &str, now: Millis) -> Result<String, ApiError> {
        let when = chrono::DateTime::from_timestamp_millis(now.0 as i64).unwrap_or_default();
        let stamp = when.format("%Y%m%d-%H%M%S");
        for salt in 0u64.. {
            let h = blake3::hash(format!("{pipeline}{}{salt}", now.0).as_bytes());
            let id = format!("{pipeline}-{stamp}-{}", &h.to_hex()[..4]);
            if self.store.run(&id)?.is_none() {
                return Ok(id);
            }
        }
        unreachable!("an unbounded range ends only by returning")
    }

    /// Applies `event` to live run `run_id`: written, then effects performed in memory. Nothing
    /// may be acknowledged until [`Engine::commit`] made it durable. Effects need no flush
    /// first: a ready attempt is only handed out by a lease, whose own commit covers this
    /// write, and sled's log is ordered, so a crash loses a suffix of events, never a middle.
    pub(super) fn apply(
        &self,
        st: &mut State,
        run_id: &str,
        event: Event,
        outputs: Option<&Manifest>,
    ) -> Result<Vec<Effect>, ApiError> {
        let now = wire::now();
        self.apply_at(st, run_id, event, outputs, now)
    }

    pub(super) fn apply_at(
        &self,
        st: &mut State,
        run_id: &str,
        event: Event,
        outputs: Option<&Manifest>,
        now: Millis,
    ) -> Result<Vec<Effect>, ApiError> {
        if st.reload.contains(run_id) {
            return Err(self.not_reloaded(run_id));
        }
        let Some(live) = st.runs.get_mut(run_id) else {
            return Err(self.not_live(run_id));
        };
        let effects = live.machine.apply(event.clone(), now).map_err(|r| rejected(run_id, r))?;
        let mut batch = Batch::new();
        let mut changes = Vec::new();
        let mut touched = BTreeSet::new();
        let mut run_changed = matches!(event, Event::Start);
        if let (Event::Succeeded { attempt, .. } | Event::Cached { attempt, .. }, Some(m)) = (&event, outputs) {
            batch.put_artifacts(run_id, attempt.instance, m)?;
        }
        for effect in &effects {
            match effect {
                Effect::StepChanged { instance, state, message } => {
                    let step = &mut live.steps[instance.index()];
                    step.state = *state;
                    step.attempts = live.machine.attempts(*instance);
                    step.message.clone_from(message);
                    step.worker = live.machine.worker(*instance).map(str::to_string);
                    match state {
                        StepState::Leased => {
                            step.started_at = Some(now);
                            step.finished_at = None;
                        }
                        StepState::Succeeded => step.metrics = live.machine.metrics(*instance).clone(),
                        StepState::Cached => {
                            step.metrics = live.machine.metrics(*instance).clone();
                            if let Event::Cached { from, .. } = &event {
                                step.cached_from = Some(from.clone());
                            }
                        }
                        _ => {}
                    }
                    if state.is_terminal() {
                        step.finished_at = Some(now);
                    }
                    touched.insert(*instance);
                    changes.push(Change::Step {
                        instance: instance.0,
                        state: *state,
                        attempt: step.attempts,
                        message: message.clone(),
                    });
                }
                Effect::RunFinished { state } => {
                    live.record.state = *state;
                    live.record.finished_at = Some(now);
                    run_changed = true;
                    changes.push(Change::Run { state: *state });
                }
                Effect::Ready { .. } | Effect::Stop { .. } | Effect::WakeAt { .. } => {}
            }
        }
        let current = match (&event, outputs) {
            (Event::Succeeded { attempt, .. } | Event::Cached { attempt, .. }, Some(m)) => Some((attempt.instance, m)),
            _ => None,
        };
        let hits = self.cache_lookups(live, &effects, current, &mut touched, now);
        if let (Event::Succeeded { attempt, .. }, Some(m)) = (&event, outputs)
            && live.steps[attempt.instance.index()].state == StepState::Succeeded
        {
            self.on_succeeded(live, attempt.instance, m, &mut batch, now)?;
        }
        if let (Event::Cached { attempt, .. }, Some(m)) = (&event, outputs)
            && live.steps[attempt.instance.index()].state == StepState::Cached
        {
            // Its outputs are a copy of an earlier run's: index them under this run as well, so
            // lineage walks this run's own chain and `--down` sees what it took.
            self.record_lineage(live, attempt.instance, m, &mut batch, now)?;
        }
        if matches!(event, Event::Start) {
            live.record.state = live.machine.run_state();
            changes.push(Change::Run { state: live.record.state });
        }
        for i in &touched {
            batch.put_step(run_id, *i, &live.steps[i.index()])?;
        }
        if run_changed {
            batch.put_run(&live.record)?;
        }
        batch.append_event(run_id, &EventRecord { now, event, changes })?;
        let seq = match self.store.write_batch_unflushed(batch) {
            Ok(seqs) => seqs.last().copied().unwrap_or_default(),
            Err(e) => {
                let e = ApiError::from(e);
                if let Some(suppressed) = super::ratelog::admit(&e.to_string()) {
                    tracing::error!(run = run_id, error = %e, suppressed, "cannot store an event; reloading the run from the store");
                }
                st.runs.remove(run_id);
                st.ready.remove_run(run_id);
                self.recover_run(st, run_id);
                return Err(e);
            }
        };
        if hits.is_empty() {
            self.perform(st, run_id, &effects);
        } else {
            // A ready attempt the cache supplies is never offered to a worker.
            let offered =
                |e: &&Effect| !matches!(e, Effect::Ready { attempt } if hits.iter().any(|(a, _)| a == attempt));
            let performed: Vec<Effect> = effects.iter().filter(offered).cloned().collect();
            self.perform(st, run_id, &performed);
        }
        st.unannounced.push((run_id.to_string(), seq));
        for (attempt, entry) in hits {
            let event = Event::Cached { attempt, metrics: entry.metrics, from: entry.run };
            if let Err(e) = self.apply_at(st, run_id, event, Some(&entry.outputs), now) {
                // The attempt is still ready (or the run was reloaded, which re-queues it).
                tracing::warn!(run = run_id, error = %e, "cannot record a cache hit; the step runs");
                let ready = st.runs.get(run_id).is_some_and(|l| l.machine.state(attempt.instance) == StepState::Ready);
                if ready {
                    self.perform(st, run_id, &[Effect::Ready { attempt }]);
                }
            }
        }
        Ok(effects)
    }

    /// Makes every event applied so far durable, then announces them to watchers. Call it after
    /// releasing the state lock and before acknowledging anything: concurrent callers share
    /// one flush (group commit), so the lock is never held across an fsync.
    pub(super) fn commit(&self) -> Result<(), ApiError> {
        self.store.flush()?;
        let announced = std::mem::take(&mut self.lock().unannounced);
        for change in announced {
            let _ = self.changes.send(change);
        }
        Ok(())
    }

    /// Carries out effects after their event is durable.
    fn perform(&self, st: &mut State, run_id: &str, effects: &[Effect]) {
        let mut woke = false;
        let mut finished = false;
        for effect in effects {
            match effect {
                Effect::Ready { attempt } => {
                    let need = st.runs.get(run_id).map(|l| l.need(attempt.instance)).unwrap_or_default();
                    st.ready.push_back(need, run_id.to_string(), *attempt);
                    woke = true;
                }
                Effect::Stop { attempt, reason } => {
                    let key = (run_id.to_string(), *attempt);
                    st.orphans.remove(&key);
                    for w in st.workers.values_mut() {
                        if w.held.remove(&key).is_some() {
                            w.stops.push((run_id.to_string(), *attempt, reason.clone()));
                            woke = true; // its resources are free for what waits
                        }
                    }
                }
                Effect::StepChanged { instance, state, .. } if !state.is_held() => {
                    // Whatever held it no longer does (a report, a loss, a cancel).
                    let live_attempt = st.runs.get(run_id).map(|l| l.machine.attempts(*instance)).unwrap_or(0);
                    if *state != StepState::Ready {
                        let key = (run_id.to_string(), AttemptId { instance: *instance, number: live_attempt });
                        for w in st.workers.values_mut() {
                            woke |= w.held.remove(&key).is_some();
                        }
                        st.orphans.remove(&key);
                    }
                }
                Effect::RunFinished { .. } => finished = true,
                Effect::StepChanged { .. } | Effect::WakeAt { .. } => {}
            }
        }
        if finished {
            st.runs.remove(run_id);
            st.ready.remove_run(run_id);
        }
        if woke {
            self.ready_signal.notify_waiters();
        }
    }

    /// Why a run is not live: unknown, or finished.
    pub(super) fn not_live(&self, run_id: &str) -> ApiError {
        match self.store.run(run_id) {
            Ok(Some(r)) => ApiError::Precondition(format!("run {run_id} already finished as {}", r.state)),
            Ok(None) => ApiError::NotFound(format!("no run {run_id}")),
            Err(e) => e.into(),
        }
    }

    /// Reloads every unfinished run from the store. Called once, before serving.
    pub(super) fn recover(&self) -> Result<usize, ApiError> {
        let mut st = self.lock();
        let mut token = None;
        let mut ids = Vec::new();
        loop {
            let page = self.store.list_runs(&Default::default(), 500, token.as_deref())?;
            for listed in page.runs {
                match listed {
                    crate::store::Listed::Run(r) if !r.state.is_terminal() => ids.push(r.id),
                    crate::store::Listed::Run(_) => {}
                    crate::store::Listed::Quarantined { id, reason, record } => {
                        tracing::warn!(run = id, reason, "run is quarantined; not resumed");
                        // A record that no longer decodes quarantines its run for good.
                        if record.is_none()
                            && matches!(self.store.quarantined(&id), Ok(None))
                            && let Err(e) = self.store.quarantine(&id, &reason)
                        {
                            tracing::error!(run = id, error = %e, "cannot quarantine run");
                        }
                    }
                    crate::store::Listed::Unreadable { after, reason } => {
                        tracing::error!(
                            after,
                            reason,
                            "runs in a damaged part of the store are not resumed: run `weir store check`"
                        )
                    }
                }
            }
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let mut resumed = 0;
        for id in &ids {
            if self.recover_run(&mut st, id) {
                resumed += 1;
            }
        }
        drop(st);
        self.commit()?;
        Ok(resumed)
    }

    /// Rebuilds one run by replaying its events; quarantines it when that fails.
    pub(super) fn recover_run(&self, st: &mut State, run_id: &str) -> bool {
        match self.replay(st, run_id) {
            Ok(()) => {
                st.reload.remove(run_id);
                true
            }
            // The store cannot write (a full disk): the run is fine, only out of memory until
            // the store heals; `tick` reloads it then. Never quarantine it for that.
            Err(e) if super::heal::is_fault(&e) => {
                st.runs.remove(run_id);
                st.ready.remove_run(run_id);
                st.reload.insert(run_id.to_string());
                if let Some(suppressed) = super::ratelog::admit(&format!("reload {e}")) {
                    tracing::warn!(run = run_id, error = %e, suppressed, "run waits for the store to heal");
                }
                false
            }
            Err(e) => {
                let reason = format!("cannot resume: {e}");
                tracing::error!(run = run_id, reason, "quarantining run");
                if let Err(e) = self.store.quarantine(run_id, &reason) {
                    tracing::error!(run = run_id, error = %e, "cannot quarantine run");
                }
                false
            }
        }
    }

    fn replay(&self, st: &mut State, run_id: &str) -> Result<(), ApiError> {
        let record = self.store.run(run_id)?.ok_or_else(|| ApiError::NotFound(format!("no run {run_id}")))?;
        let (pipeline, bundle) = self.pipeline(st, &record.version)?;
        let overrides: Vec<(String, String)> = record
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect();
        let params = plan::resolve_params(&pipeline, &overrides)
            .map_err(|d| ApiError::Internal(format!("stored params no longer resolve ({} problems)", d.len())))?;
        let plan = plan::plan(&pipeline, &params, run_id);
        let mut machine = RunMachine::new(&pipeline, &plan);
        let mut started = false;
        for item in self.store.events(run_id, 0)? {
            let (seq, ev) = item?;
            started |= matches!(ev.event, Event::Start);
            machine
                .apply(ev.event, ev.now)
                .map_err(|r| ApiError::Internal(format!("event {seq} does not replay: {r}")))?;
        }
        let mut steps = vec![StepRecord::default(); machine.len()];
        for (i, s) in self.store.steps(run_id, None, usize::MAX)? {
            if let Some(slot) = steps.get_mut(i.index()) {
                *slot = s;
            }
        }
        for i in machine.instances() {
            if steps[i.index()].name.is_empty() {
                steps[i.index()].name = machine.name(i).to_string();
            }
        }
        let deadline = Instant::now() + self.terms.lease_timeout;
        for i in machine.instances() {
            let Some(attempt) = machine.live_attempt(i) else { continue };
            match machine.state(i) {
                StepState::Ready => {
                    let step = &pipeline.steps()[plan.graph[petgraph::graph::NodeIndex::new(i.index())].step];
                    st.ready.push_back(Need::of(step), run_id.to_string(), attempt)
                }
                s if s.is_held() => {
                    st.orphans.insert((run_id.to_string(), attempt), deadline);
                }
                _ => {}
            }
        }
        let finished = machine.run_state().is_terminal();
        let live = Live { record, machine, plan, pipeline, bundle, steps };
        st.runs.insert(run_id.to_string(), live);
        if !started {
            self.apply(st, run_id, Event::Start, None)?;
        } else if finished {
            // Crashed after the last event but before the run record said so.
            let live = st.runs.remove(run_id).expect("inserted above");
            let mut record = live.record;
            record.state = live.machine.run_state();
            self.store.put_run(&record)?;
        }
        tracing::info!(run = run_id, "resumed run");
        self.ready_signal.notify_waiters();
        Ok(())
    }

    /// Fires what is due: lost workers, unclaimed orphans, run timers. Called periodically.
    pub(super) fn tick(&self) {
        let mut st = self.lock();
        self.heal(&mut st);
        let now = Instant::now();
        let lost: Vec<String> = st
            .workers
            .iter()
            .filter(|(_, w)| w.polling == 0 && now.duration_since(w.last_seen) > self.terms.lease_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        let mut losses = Vec::new();
        for id in lost {
            if let Some(w) = st.workers.remove(&id) {
                tracing::warn!(
                    worker = id,
                    name = w.name,
                    held = w.held.len(),
                    "worker lost: silent past its lease timeout"
                );
                losses.extend(w.held.into_keys());
            }
        }
        let unclaimed: Vec<(String, AttemptId)> =
            st.orphans.iter().filter(|(_, deadline)| now >= **deadline).map(|(k, _)| k.clone()).collect();
        for key in unclaimed {
            st.orphans.remove(&key);
            tracing::warn!(run = key.0, attempt = %key.1, "no worker claimed the attempt after a restart");
            losses.push(key);
        }
        for (run, attempt) in losses {
            if let Err(e) = self.apply(&mut st, &run, Event::Lost { attempt }, None) {
                tracing::debug!(run, %attempt, error = %e, "lost attempt already ended");
            }
        }
        let at = wire::now();
        let due: Vec<String> = st
            .runs
            .iter()
            .filter(|(_, l)| l.machine.next_wakeup().is_some_and(|w| w <= at))
            .map(|(id, _)| id.clone())
            .collect();
        for run in due {
            if let Err(e) = self.apply(&mut st, &run, Event::Tick, None)
                && let Some(suppressed) = super::ratelog::admit(&format!("tick {e}"))
            {
                tracing::error!(run, error = %e, suppressed, "timer tick failed");
            }
        }
        if self.scheduling {
            self.fire_schedules(&mut st, chrono::Utc::now());
        }
        let dirty = !st.unannounced.is_empty();
        drop(st);
        if dirty
            && let Err(e) = self.commit()
            && let Some(suppressed) = super::ratelog::admit(&format!("commit {e}"))
        {
            tracing::error!(error = %e, suppressed, "cannot make timer events durable");
        }
    }

    /// Registers a worker offering `offer` and returns its id.
    pub(super) fn register(&self, name: &str, offer: Offer) -> String {
        let mut st = self.lock();
        st.next_worker += 1;
        let clean: String =
            name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).take(40).collect();
        let id = format!("{}-{:x}", if clean.is_empty() { "worker" } else { &clean }, st.next_worker);
        st.workers.insert(
            id.clone(),
            Worker {
                name: name.to_string(),
                last_seen: Instant::now(),
                offer,
                held: HashMap::new(),
                stops: Vec::new(),
                polling: 0,
            },
        );
        tracing::info!(worker = id, "worker registered");
        // Attempts no worker could run so far may fit this one.
        self.ready_signal.notify_waiters();
        id
    }

    /// The content-addressed blob store (outputs and bundles).
    pub(super) fn blobs(&self) -> &artifact::Store {
        &self.blobs
    }
}

fn rejected(run_id: &str, r: Rejected) -> ApiError {
    match r {
        Rejected::UnknownInstance(_) => ApiError::NotFound(format!("run {run_id}: {r}")),
        _ => ApiError::Precondition(format!("run {run_id}: {r}")),
    }
}
