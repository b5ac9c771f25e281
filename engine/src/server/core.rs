//! The engine loop's state and its one way of changing it: [`Engine::apply`] feeds an event to
//! a run's [`RunMachine`], writes the event, the step records it changed and the run record in
//! one atomic [`Batch`], and performs the effects in memory (queue a ready attempt, order a
//! stop). [`Engine::commit`], called after the state lock is released and before any answer,
//! flushes and then wakes watchers: concurrent calls share one fsync (group commit), and every
//! acknowledged change is durable. A failed write reloads the run from the store, so memory
//! never runs ahead of what was written.
//!
//! On start, [`Engine::recover`] replays every unfinished run's events at their recorded times
//! (effects discarded), re-queues what was ready and keeps what was held as orphans: the worker
//! the attempt was leased to (the same identity, see [`Engine::register`]) says so in its next
//! heartbeat and keeps it; one nobody claims by its deadline is `Lost` and dispatched again.
//! That deadline is durable: a lease timeout after the engine last heard from the worker about
//! the attempt (`StepRecord::heard_at`, refreshed by heartbeats at most every quarter lease
//! timeout), plus that refresh lag, so restarting the engine again and again cannot postpone
//! it. A worker silent that long has stopped the attempt itself (it fences itself when its
//! heartbeats go unanswered for the lease timeout). A run whose records do not decode is
//! quarantined; the others carry on.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::metrics::Metered;
use crate::store::{Batch, Change, EventRecord, RunRecord, StepRecord, Store, Trigger};
use weir_core::plan::{self, Plan};
use weir_core::run::{AttemptId, Effect, Event, InstanceId, Millis, Rejected, RunMachine, RunState, StepState};
use weir_core::spec::{Limits, Pipeline};
use weir_data::artifact::{self, Manifest};

use super::error::ApiError;
use weir_core::placement::{Need, Offer, ReadyQueue, Usage};

/// The lease terms the engine gives workers.
#[derive(Clone, Copy, Debug)]
pub struct Terms {
    pub lease_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// The longest a `Lease` long-poll is held.
    pub max_wait: Duration,
}

/// One unfinished run, in memory.
pub(crate) struct Live {
    pub record: RunRecord,
    pub machine: RunMachine,
    pub plan: Plan,
    pub pipeline: Arc<Pipeline>,
    pub bundle: Option<String>,
    /// Mirrors the `steps` tree, so a change rewrites one record without reading it.
    pub steps: Vec<StepRecord>,
    /// Whether the pipeline or any of its steps has `notify:`, found once: every event asks,
    /// and scanning a 1,000-step pipeline's steps for it was the largest cost of recording
    /// an event (BENCHMARKS.md, issue 19, seventh round).
    pub notifies: bool,
}

impl Live {
    pub fn new(
        record: RunRecord,
        machine: RunMachine,
        plan: Plan,
        pipeline: Arc<Pipeline>,
        bundle: Option<String>,
        steps: Vec<StepRecord>,
    ) -> Live {
        let notifies = !pipeline.notify().is_empty() || pipeline.steps().iter().any(|s| !s.notify.is_empty());
        Live { record, machine, plan, pipeline, bundle, steps, notifies }
    }

    /// What an attempt of `instance` needs of its worker.
    pub fn need(&self, instance: InstanceId) -> Need {
        let inst = &self.plan.graph[petgraph::graph::NodeIndex::new(instance.index())];
        Need::of(&self.pipeline.steps()[inst.step])
    }
}

/// A run planned, started and stored by [`Engine::prepare_run`], not yet live: the start's
/// effects wait for [`Engine::install_run`].
pub(crate) struct Prepared {
    live: Live,
    effects: Vec<Effect>,
    seq: u64,
    hits: Vec<(AttemptId, crate::store::CacheEntry)>,
    metered: Vec<Metered>,
    now: Millis,
}

/// An event fed to a machine and the batch that records it, not yet written.
struct Recorded {
    effects: Vec<Effect>,
    batch: Batch,
    /// What the event changed, for its announcement.
    seen: Arc<Seen>,
    hits: Vec<(AttemptId, crate::store::CacheEntry)>,
    metered: Vec<crate::metrics::Metered>,
}

/// A run id held by a run being prepared, released on drop.
struct Reserved<'a> {
    engine: &'a Engine,
    id: String,
}

impl<'a> Reserved<'a> {
    fn new(engine: &'a Engine, id: String) -> Reserved<'a> {
        engine.preparing.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone());
        Reserved { engine, id }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.engine.preparing.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// A registered worker.
pub(crate) struct Worker {
    pub name: String,
    /// BLAKE3 of its session secret (`blake3::Hash` compares in constant time).
    pub session: blake3::Hash,
    pub last_seen: Instant,
    /// What it offered at Register.
    pub offer: Offer,
    /// Attempts it holds, with when it got each and what each uses.
    pub held: HashMap<(String, AttemptId), Held>,
    /// Stop orders for its next heartbeat.
    pub stops: Vec<(String, AttemptId, String)>,
    /// `Lease` long-polls in progress: a worker waiting in one is alive.
    pub polling: u32,
    /// Attempts it held that have ended, newest last (at most [`RECENT`]): their trailing
    /// logs are still its to upload.
    pub recent: std::collections::VecDeque<(String, AttemptId)>,
}

/// How many ended attempts a worker may still upload logs for.
pub(crate) const RECENT: usize = 256;

/// Step records per store batch when a run starts ([`Engine::prepare_run`]).
const STEP_CHUNK: usize = 256;

/// One attempt a worker holds.
pub(crate) struct Held {
    pub since: Instant,
    pub usage: Usage,
}

impl Worker {
    /// What its held attempts use of its offer.
    pub fn used(&self) -> Usage {
        self.held.values().fold(Usage::default(), |sum, h| sum.plus(h.usage))
    }

    /// Stops holding `key`, remembering it for trailing log uploads. Whether it held it.
    pub fn release(&mut self, key: &(String, AttemptId)) -> bool {
        let held = self.held.remove(key).is_some();
        if held {
            if self.recent.len() >= RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(key.clone());
        }
        held
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub runs: HashMap<String, Live>,
    pub ready: ReadyQueue,
    pub workers: HashMap<String, Worker>,
    /// Every worker identity handed out (this process or before, from the store): id to the
    /// BLAKE3 of its session secret, so a worker can register again under its id.
    pub identities: HashMap<String, blake3::Hash>,
    /// Held attempts found on recovery, claimable by their worker's heartbeat until the
    /// deadline.
    pub orphans: HashMap<(String, AttemptId), Instant>,
    /// Parsed pipelines and their bundle digests, by version, the most recently used
    /// [`Parsed::CAPACITY`] of them.
    pub pipelines: Parsed,
    pub next_worker: u64,
    /// Events written but not yet announced to watchers: they are announced by
    /// [`Engine::commit`], once durable.
    pub unannounced: Vec<Announcement>,
    /// What those events count on `/metrics`, settled by [`Engine::commit`] with them.
    pub unmetered: Vec<crate::metrics::Metered>,
    /// The schedules this engine fires, by pipeline name.
    pub schedules: std::collections::BTreeMap<String, super::scheduler::Sched>,
    /// Unfinished runs out of memory because reloading them met a store that cannot write
    /// (a full disk): [`Engine::tick`] reloads them once it can.
    pub reload: BTreeSet<String>,
    /// When [`Engine::tick`] may next try to reopen a store that cannot write.
    pub heal_at: Option<Instant>,
    /// Events applied but not yet written, while a caller stages (see [`Staged`]).
    pub staged: Option<Staged>,
    /// Something became ready (or free) while a report staged: its caller wakes the `Lease`
    /// long-polls once it has leased for itself, and only if something is left for them.
    pub woke_while_staged: bool,
}

/// The batches of events applied while a caller of [`Engine::apply`] stages them, written in
/// one sled transaction by [`Engine::write_staged`] instead of one each. A sled transaction
/// writes its log twice (a batch marker, then its records), each a `pwrite` and a
/// `sync_file_range` on an I/O thread, so a report that also leases the next attempt costs
/// two such writes fewer. Only `Engine::report` stages, and only between reads that do not
/// need what it staged: the lease reads upstream artifacts through [`Engine::artifacts_of`],
/// which looks here first, and an event with cache hits (whose records read the store) writes
/// what is staged and ends the staging. Nothing staged is acknowledged before
/// [`Engine::commit`], as before.
#[derive(Default)]
pub(crate) struct Staged {
    batch: Batch,
    /// The run of each staged event and what the event changed, in order (one event per
    /// batch).
    runs: Vec<(String, Arc<Seen>)>,
}

/// What [`Engine::changes`] carries once an applied event is durable.
#[derive(Clone, Debug)]
pub(crate) struct Announcement {
    pub run: String,
    /// The event's seq in its run (1, 2, …).
    pub seq: u64,
    /// When it happened and what it changed, so that a watcher that has seen every event
    /// before it needs no read of the store; `None` for the events of a batch of several (a
    /// run's start), which watchers read from the store.
    pub event: Option<Arc<Seen>>,
}

/// Waits on `changes` for the next announcement of `run` after seq `last`: that event with its
/// changes when it is the very next one and carries them, so a watcher needs no read of the
/// store; `None` when the watcher must read the store instead (a gap, a batch of several, a lag,
/// the engine gone). `WatchRun` and the run page's live stream both follow a run this way.
pub(crate) async fn next_announced(
    changes: &mut broadcast::Receiver<Announcement>,
    run: &str,
    last: u64,
) -> Option<(u64, Arc<Seen>)> {
    loop {
        match changes.recv().await {
            Ok(a) if a.run == run && a.seq > last => {
                return a.event.filter(|_| a.seq == last + 1).map(|seen| (a.seq, seen));
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// The visible part of a stored event ([`EventRecord`] without the event itself).
#[derive(Debug)]
pub(crate) struct Seen {
    pub now: Millis,
    pub changes: Vec<Change>,
}

/// The engine: state, store and the signals between them.
pub struct Engine {
    pub(crate) store: Store,
    pub(crate) blobs: artifact::Store,
    pub(crate) state: Mutex<State>,
    /// Ids of runs being prepared outside the state lock (see [`Engine::prepare_run`]).
    preparing: Mutex<std::collections::HashSet<String>>,
    pub(crate) terms: Terms,
    /// Where every time the engine reads comes from.
    pub(crate) clock: Clock,
    /// Wakes `Lease` long-polls when something became ready.
    pub(crate) ready_signal: Notify,
    /// Every applied event once durable, for `WatchRun` and the web UI's live pages.
    pub(crate) changes: broadcast::Sender<Announcement>,
    /// Bumped after every stored log batch, for `StreamLogs --follow`.
    pub(crate) logs: watch::Sender<u64>,
    pub(crate) limits: Limits,
    /// Whether this engine fires schedules (`weir server`) or ignores them (`weir run`).
    pub(crate) scheduling: bool,
    /// What `/metrics` shows (`crate::metrics`).
    pub(crate) metrics: crate::metrics::Metrics,
    /// Trace export (`crate::otel`), set at start with `--otlp-endpoint`; unset costs nothing.
    pub(crate) otel: std::sync::OnceLock<crate::otel::Otel>,
    /// Retention and blob sweeps (`retention`).
    pub(crate) collector: super::retention::Collector,
    /// Notification delivery terms and signing secrets (`crate::notify`).
    pub(crate) notify: crate::notify::NotifyConfig,
    /// Wakes the delivery task (`outbox`) when a notification was queued.
    pub(crate) outbox_wake: Notify,
    /// Blobs running backups still have to copy: the sweep keeps them (`backup`).
    pub(crate) holds: Arc<super::backup::BlobHolds>,
    /// What `on:` triggers remember between passes, and the webhook secrets.
    pub(crate) triggers: super::triggers::Triggers,
    /// When a pending alias move next times out (`protect`).
    pub(crate) alias_due: super::protect::AliasDue,
    /// The key step secrets are sealed with, and whether they may travel in plaintext.
    pub(crate) secrets: super::secrets::ServerSecrets,
}

impl Engine {
    pub(crate) fn new(store: Store, blobs: artifact::Store, terms: Terms, clock: Clock) -> Engine {
        let (changes, _) = broadcast::channel(1024);
        let (logs, _) = watch::channel(0);
        Engine {
            store,
            blobs,
            state: Mutex::new(State { next_worker: clock.now().0, ..State::default() }),
            preparing: Mutex::default(),
            terms,
            clock,
            ready_signal: Notify::new(),
            changes,
            logs,
            limits: Limits::default(),
            scheduling: false,
            metrics: crate::metrics::Metrics::new(),
            otel: std::sync::OnceLock::new(),
            collector: Default::default(),
            notify: Default::default(),
            outbox_wake: Notify::new(),
            holds: Default::default(),
            triggers: Default::default(),
            alias_due: Default::default(),
            secrets: Default::default(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves state that may be half-updated; the store is
        // the truth, so carry on with what memory holds rather than poisoning every call.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The parsed pipeline of a stored version and its bundle digest, parsed once per version
    /// (GetRun asks for every step's stage: reading the stored YAML each time cost more than
    /// the rest of the call).
    pub(crate) fn pipeline(&self, st: &mut State, version: &str) -> Result<(Arc<Pipeline>, Option<String>), ApiError> {
        if let Some(cached) = st.pipelines.get(version) {
            return Ok(cached);
        }
        let stored = self
            .store
            .pipeline_version(version)?
            .ok_or_else(|| ApiError::NotFound(format!("pipeline version {version} is not stored")))?;
        let parsed = weir_core::spec::load(&stored.yaml, &self.limits).map_err(|d| {
            ApiError::Precondition(format!(
                "stored pipeline version {version} no longer validates ({} problems); resubmit it",
                d.len()
            ))
        })?;
        let entry = (Arc::new(parsed), stored.bundle_digest.map(|d| d.to_string()));
        st.pipelines.insert(version.to_string(), entry.clone());
        Ok(entry)
    }

    /// Creates a run of `version` with the param overrides `overrides` (text form) and starts
    /// it, as run `id` when given (the caller checked no run has it), else a fresh id. Plans
    /// under the caller's lock: for runs a caller already holds the lock for (schedules, tests);
    /// StartRun and RetryRun plan first with [`Engine::prepare_run`] and lock only to install.
    pub(crate) fn create_run(
        &self,
        st: &mut State,
        version: &str,
        overrides: &[(String, String)],
        trigger: Trigger,
        no_cache: bool,
        id: Option<String>,
    ) -> Result<String, ApiError> {
        let (pipeline, bundle) = self.pipeline(st, version)?;
        let prepared = self.prepare_run(pipeline, bundle, version, overrides, trigger, no_cache, id)?;
        self.install_run(st, prepared)
    }

    /// Resolves params, plans, builds the run machine and writes the run and step records
    /// (unflushed: the start's commit covers them; a crash before it leaves a queued run that
    /// recovery starts): everything a run costs that grows with its size, done without the
    /// state lock, so a 100,000-instance run does not stall every other call while it plans.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prepare_run(
        &self,
        pipeline: Arc<Pipeline>,
        bundle: Option<String>,
        version: &str,
        overrides: &[(String, String)],
        trigger: Trigger,
        no_cache: bool,
        id: Option<String>,
    ) -> Result<Prepared, ApiError> {
        let params = plan::resolve_params(&pipeline, overrides)
            .map_err(|diags| self.params_error(version, pipeline.name(), diags))?;
        let now = self.clock.now();
        let reserved = match id {
            Some(id) => Reserved::new(self, id),
            None => self.new_run_id(pipeline.name(), now)?,
        };
        let run_id = reserved.id.clone();
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
            sla_missed_at: None,
        };
        let steps: Vec<StepRecord> = machine
            .instances()
            .map(|i| {
                let inst = &plan.graph[petgraph::graph::NodeIndex::new(i.index())];
                let (step, matrix) = (pipeline.steps()[inst.step].name.clone(), inst.matrix.clone());
                StepRecord { name: machine.name(i).to_string(), step, matrix, ..StepRecord::default() }
            })
            .collect();
        let mut live = Live::new(record, machine, plan, pipeline, bundle, steps);
        // The start, recorded here too: with every instance a root, it rewrites every step.
        let now = self.clock.now();
        let Recorded { effects, batch, hits, metered, .. } =
            self.record(&mut live, &run_id, Event::Start, None, now)?;
        // Every step record, STEP_CHUNK to a transaction, before the run's own batch (which
        // rewrites those the start touched): sled frees the tree nodes a write replaces only
        // once no transaction that began before it is still open, so 10,000 records in one
        // transaction kept every node version they made resident at once (~15 MB, the peak of a
        // large fan-out's memory). Unflushed like the rest and ordered before the run record
        // in sled's log: a crash between them leaves step records under an id that has no run
        // record, which no reader reaches and `new_run_id` never hands out again. The last
        // chunk goes first in the run's own transaction (every chunk of a run of up to
        // STEP_CHUNK instances): a transaction is two synced log writes.
        let chunks = live.steps.len().div_ceil(STEP_CHUNK);
        let mut last = Batch::new();
        for (n, chunk) in live.steps.chunks(STEP_CHUNK).enumerate() {
            let mut steps = Batch::new();
            for (j, s) in chunk.iter().enumerate() {
                steps.put_step(&run_id, InstanceId((n * STEP_CHUNK + j) as u32), s)?;
            }
            if n + 1 == chunks {
                last = steps;
            } else {
                self.store.write_batch_unflushed(steps)?;
            }
        }
        last.append(batch);
        let mut batch = last;
        batch.put_run(&live.record)?;
        // A triggered run and the trigger's note that it fired are one write: exactly once.
        if let Some((trigger, fired_for)) = live.record.trigger.fired() {
            let fired = crate::store::Fired { run: run_id.clone(), at: now };
            batch.put_triggered(&live.record.pipeline, trigger, &fired_for, &fired)?;
        }
        let seq = self.store.write_batch_unflushed(batch)?.last().copied().unwrap_or_default();
        drop(reserved); // the stored record now keeps the id taken
        Ok(Prepared { live, effects, seq, hits, metered, now })
    }

    /// Makes a prepared run live and performs its start's effects (queue the ready
    /// attempts): cheap, under the state lock.
    pub(crate) fn install_run(&self, st: &mut State, prepared: Prepared) -> Result<String, ApiError> {
        let Prepared { live, effects, seq, hits, metered, now } = prepared;
        let run_id = live.record.id.clone();
        st.runs.insert(run_id.clone(), live);
        st.unmetered.extend(metered);
        self.performed(st, &run_id, &effects, Some((seq, None)), hits, now);
        Ok(run_id)
    }

    /// `pipeline-YYYYMMDD-HHMMSS-xxxx`: sortable by time, readable, unique in this store and
    /// among the runs being prepared at the same time (held until the guard drops).
    fn new_run_id(&self, pipeline: &str, now: Millis) -> Result<Reserved<'_>, ApiError> {
        let when = chrono::DateTime::from_timestamp_millis(now.0 as i64).unwrap_or_default();
        let stamp = when.format("%Y%m%d-%H%M%S");
        for salt in 0u64.. {
            let h = blake3::hash(format!("{pipeline}{}{salt}", now.0).as_bytes());
            let id = format!("{pipeline}-{stamp}-{}", &h.to_hex()[..4]);
            if !self.preparing.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone()) {
                continue; // another call is preparing a run with this id
            }
            let reserved = Reserved { engine: self, id };
            // Step records without a run record are what a crash in `prepare_run` leaves.
            if self.store.run(&reserved.id)?.is_none() && self.store.steps(&reserved.id, None, 1)?.is_empty() {
                return Ok(reserved);
            }
        }
        unreachable!("an unbounded range ends only by returning")
    }

    /// Applies `event` to live run `run_id`: written, then effects performed in memory. Nothing
    /// may be acknowledged until [`Engine::commit`] made it durable. Effects need no flush
    /// first: a ready attempt is only handed out by a lease, whose own commit covers this
    /// write, and sled's log is ordered, so a crash loses a suffix of events, never a middle.
    pub(crate) fn apply(
        &self,
        st: &mut State,
        run_id: &str,
        event: Event,
        outputs: Option<&Manifest>,
    ) -> Result<Vec<Effect>, ApiError> {
        let now = self.clock.now();
        self.apply_at(st, run_id, event, outputs, now)
    }

    pub(crate) fn apply_at(
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
        let Recorded { effects, batch, seen, hits, metered } = self.record(live, run_id, event, outputs, now)?;
        if let Some(staged) = st.staged.as_mut() {
            staged.batch.append(batch);
            staged.runs.push((run_id.to_string(), seen));
            st.unmetered.extend(metered);
            if !hits.is_empty() {
                // The cache hits apply events whose records read the store: it must hold
                // everything before them. Announced by `write_staged`.
                self.write_staged(st)?;
            }
            self.performed(st, run_id, &effects, None, hits, now);
            return Ok(effects);
        }
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
        st.unmetered.extend(metered);
        self.performed(st, run_id, &effects, Some((seq, Some(seen))), hits, now);
        Ok(effects)
    }

    /// Writes what [`Engine::apply`] staged (see [`Staged`]) in one transaction, unflushed like
    /// every applied event, and queues their announcements; ends the staging. A write that
    /// fails reloads every run it held from the store, as a failed event write does.
    pub(crate) fn write_staged(&self, st: &mut State) -> Result<(), ApiError> {
        let Some(Staged { batch, runs }) = st.staged.take() else { return Ok(()) };
        if runs.is_empty() {
            return Ok(());
        }
        match self.store.write_batch_unflushed(batch) {
            Ok(seqs) => {
                debug_assert_eq!(seqs.len(), runs.len(), "one event per staged batch");
                st.unannounced.extend(runs.into_iter().zip(seqs).map(|((run, seen), seq)| Announcement {
                    run,
                    seq,
                    event: Some(seen),
                }));
                Ok(())
            }
            Err(e) => {
                let e = ApiError::from(e);
                if let Some(suppressed) = super::ratelog::admit(&e.to_string()) {
                    tracing::error!(error = %e, suppressed, "cannot store events; reloading their runs from the store");
                }
                let mut runs: Vec<String> = runs.into_iter().map(|(run, _)| run).collect();
                runs.sort_unstable();
                runs.dedup();
                for run_id in &runs {
                    st.runs.remove(run_id);
                    st.ready.remove_run(run_id);
                    self.recover_run(st, run_id);
                }
                Err(e)
            }
        }
    }

    /// The artifacts of `run`'s instance `i`: staged (not yet written, [`Staged`]) or stored.
    pub(crate) fn artifacts_of(
        &self,
        staged: Option<&Staged>,
        run: &str,
        i: InstanceId,
    ) -> Result<Option<Manifest>, ApiError> {
        if let Some(m) = staged.map(|s| s.batch.artifacts(run, i)).transpose()?.flatten() {
            return Ok(Some(m));
        }
        Ok(self.store.artifacts(run, i)?)
    }

    /// After an event's batch is written (or staged): performs its effects (a ready attempt the
    /// cache supplies is never offered to a worker), queues the announcement of `written` (its
    /// seq, and what it changed unless it was one of several; a staged event has none yet:
    /// `write_staged` announces it), applies the cache hits.
    fn performed(
        &self,
        st: &mut State,
        run_id: &str,
        effects: &[Effect],
        written: Option<(u64, Option<Arc<Seen>>)>,
        hits: Vec<(AttemptId, crate::store::CacheEntry)>,
        now: Millis,
    ) {
        if hits.is_empty() {
            self.perform(st, run_id, effects);
        } else {
            let offered =
                |e: &&Effect| !matches!(e, Effect::Ready { attempt } if hits.iter().any(|(a, _)| a == attempt));
            let performed: Vec<Effect> = effects.iter().filter(offered).cloned().collect();
            self.perform(st, run_id, &performed);
        }
        if let Some((seq, event)) = written {
            st.unannounced.push(Announcement { run: run_id.to_string(), seq, event });
        }
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
    }

    /// Feeds `event` to `live`'s machine and builds the batch that records it (the event with
    /// its visible changes, touched step records, the run record, cache, registry and lineage
    /// writes), without writing it. Needs no state lock: `prepare_run` records a new run's
    /// start with it before the run is live.
    fn record(
        &self,
        live: &mut Live,
        run_id: &str,
        event: Event,
        outputs: Option<&Manifest>,
        now: Millis,
    ) -> Result<Recorded, ApiError> {
        // A gate that reads `explain.*` judges the explain.json among the reported outputs.
        if let (Event::Succeeded { attempt, .. }, Some(m)) = (&event, outputs)
            && live.machine.live_attempt(attempt.instance) == Some(*attempt)
            && live.machine.gate_reads_explanation(attempt.instance)
        {
            live.machine.explained(attempt.instance, self.collect_explanation(m).0);
        }
        let effects = live.machine.apply(event.clone(), now).map_err(|r| rejected(run_id, r))?;
        let mut batch = Batch::new();
        let mut changes = Vec::new();
        let mut touched = BTreeSet::new();
        let mut run_changed = matches!(event, Event::Start);
        let mut metered = Vec::new();
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
                            step.heard_at = Some(now);
                            step.finished_at = None;
                        }
                        StepState::Running => step.heard_at = Some(now),
                        StepState::AwaitingApproval => {
                            let inst = &live.plan.graph[petgraph::graph::NodeIndex::new(instance.index())];
                            let timeout = live.pipeline.steps()[inst.step].approval.as_ref().and_then(|a| a.timeout);
                            step.approval = Some(crate::store::ApprovalRecord {
                                message: message.clone().unwrap_or_default(),
                                requested_at: now,
                                due_at: timeout.map(|t| now.plus(t)),
                                decision: None,
                            });
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
                    metered.push(Metered::Step {
                        pipeline: live.pipeline.name().to_string(),
                        run: run_id.to_string(),
                        instance: *instance,
                        state: *state,
                        started: step.started_at,
                        now,
                    });
                    touched.insert(*instance);
                    changes.push(Change::Step {
                        instance: instance.0,
                        state: *state,
                        attempt: step.attempts,
                        message: message.clone(),
                    });
                }
                Effect::RunFinished { state } => {
                    let (pipeline, run) = (live.pipeline.name().to_string(), run_id.to_string());
                    metered.push(Metered::RunFinished { pipeline, run, state: *state });
                    live.record.state = *state;
                    live.record.finished_at = Some(now);
                    run_changed = true;
                    changes.push(Change::Run { state: *state });
                }
                Effect::Ready { .. }
                | Effect::Stop { .. }
                | Effect::WakeAt { .. }
                | Effect::ApprovalRequested { .. } => {}
            }
        }
        if let Event::Approved { instance, by, comment } | Event::ApprovalRejected { instance, by, comment } = &event
            && let Some(approval) = live.steps[instance.index()].approval.as_mut()
        {
            let approved = matches!(event, Event::Approved { .. });
            approval.decision =
                Some(crate::store::Decision { approved, by: by.clone(), at: now, comment: comment.clone() });
            touched.insert(*instance);
        }
        let current = match (&event, outputs) {
            (Event::Succeeded { attempt, .. } | Event::Cached { attempt, .. }, Some(m)) => Some((attempt.instance, m)),
            _ => None,
        };
        let hits = self.cache_lookups(live, &effects, current, &mut touched, &mut metered, now);
        let ended = match (&event, outputs) {
            (Event::Succeeded { attempt, .. }, Some(m)) => Some((attempt.instance, m, StepState::Succeeded)),
            (Event::Cached { attempt, .. }, Some(m)) => Some((attempt.instance, m, StepState::Cached)),
            _ => None,
        };
        if let Some((instance, outputs, state)) = ended
            && live.steps[instance.index()].state == state
        {
            let cached = state == StepState::Cached;
            let success = super::mlops::Success { live, instance, outputs, now, cached };
            self.on_succeeded(&success, &mut batch)?;
        }
        if matches!(event, Event::Start) {
            metered.push(Metered::RunStarted { pipeline: live.pipeline.name().to_string(), run: run_id.to_string() });
            live.record.state = live.machine.run_state();
            changes.push(Change::Run { state: live.record.state });
        }
        self.notify_effects(live, &event, &effects, &mut batch, now)?;
        for i in &touched {
            batch.put_step(run_id, *i, &live.steps[i.index()])?;
        }
        if run_changed {
            batch.put_run(&live.record)?;
        }
        let record = EventRecord { now, event, changes };
        batch.append_event(run_id, &record)?;
        let seen = Arc::new(Seen { now, changes: record.changes });
        Ok(Recorded { effects, batch, seen, hits, metered })
    }

    /// Makes every event applied so far durable, then announces them to watchers. Call it after
    /// releasing the state lock and before acknowledging anything: concurrent callers share
    /// one flush (group commit), so the lock is never held across an fsync.
    pub(crate) fn commit(&self) -> Result<(), ApiError> {
        let began = self.clock.instant();
        self.store.flush()?;
        self.metrics.flushed(self.clock.instant().duration_since(began).as_secs_f64());
        let (announced, metered) = {
            let mut st = self.lock();
            (std::mem::take(&mut st.unannounced), std::mem::take(&mut st.unmetered))
        };
        if let Some(otel) = self.otel.get() {
            otel.flushed(&metered);
        }
        self.metrics.settle(metered);
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
                        if w.release(&key) {
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
                            woke |= w.release(&key);
                        }
                        st.orphans.remove(&key);
                    }
                }
                Effect::RunFinished { .. } => finished = true,
                Effect::ApprovalRequested { instance, message } => {
                    // Its notification went into the event's batch (`notify_effects`); the log
                    // says how to decide.
                    let step = st.runs.get(run_id).map(|l| l.machine.name(*instance).to_string()).unwrap_or_default();
                    tracing::info!(run = run_id, step, message, "approval requested: `weir approve {run_id} {step}`");
                }
                Effect::StepChanged { .. } | Effect::WakeAt { .. } => {}
            }
        }
        if finished {
            // `pipeline` triggers scan for successful upstream runs only after one finished.
            self.triggers.finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            st.runs.remove(run_id);
            st.ready.remove_run(run_id);
        }
        if woke {
            self.wake_lease_polls(st);
        }
    }

    /// Wakes the `Lease` long-polls: something is ready, or resources are free. While a report
    /// stages, not yet: the report may lease the very attempt itself (`lease_next`, a chain's
    /// next step), and a long-poll woken for it would only find the queue empty, having cost a
    /// wake-up of the other runtime thread and a wait for the state lock.
    pub(crate) fn wake_lease_polls(&self, st: &mut State) {
        if st.staged.is_some() {
            st.woke_while_staged = true;
        } else {
            self.ready_signal.notify_waiters();
        }
    }

    /// Why a run is not live: unknown, or finished.
    pub(crate) fn not_live(&self, run_id: &str) -> ApiError {
        match self.store.run(run_id) {
            // Left unfinished by a process that stopped, and not resumed by this one.
            Ok(Some(r)) if !r.state.is_terminal() => ApiError::Precondition(format!(
                "run {run_id} is not running here: it was interrupted (the process running it stopped) and has not \
                 been resumed; `weir resume {run_id}` finishes it"
            )),
            Ok(Some(r)) => ApiError::Precondition(format!("run {run_id} already finished as {}", r.state)),
            Ok(None) => ApiError::NotFound(format!("no run {run_id}")),
            Err(e) => e.into(),
        }
    }

    /// Reloads the unfinished runs that `resume` includes from the store. Called once, before
    /// serving.
    pub(crate) fn recover(&self, resume: &super::Resume) -> Result<usize, ApiError> {
        let mut st = self.lock();
        for w in self.store.workers()? {
            match blake3::Hash::from_hex(&w.session_hash) {
                Ok(hash) => {
                    st.identities.insert(w.id, hash);
                }
                Err(_) => tracing::warn!(worker = w.id, "skipping a worker identity with a malformed hash"),
            }
        }
        let mut token = None;
        let mut ids = Vec::new();
        loop {
            let page = self.store.list_runs(&Default::default(), 500, token.as_deref())?;
            for listed in page.runs {
                match listed {
                    crate::store::Listed::Run(r) if !r.state.is_terminal() && resume.includes(&r.id) => ids.push(r.id),
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
        // Listed newest first; resumed oldest first, so older runs' steps queue first again.
        ids.reverse();
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
    pub(crate) fn recover_run(&self, st: &mut State, run_id: &str) -> bool {
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
            // As `record` did: the gate of a replayed success reads the same stored outputs.
            if let Event::Succeeded { attempt, .. } = &ev.event
                && machine.gate_reads_explanation(attempt.instance)
            {
                let outputs = self.store.artifacts(run_id, attempt.instance)?;
                machine.explained(attempt.instance, outputs.and_then(|m| self.collect_explanation(&m).0));
            }
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
        let (instant_now, wall_now) = (self.clock.instant(), self.clock.now());
        for i in machine.instances() {
            let Some(attempt) = machine.live_attempt(i) else { continue };
            match machine.state(i) {
                StepState::Ready => {
                    let step = &pipeline.steps()[plan.graph[petgraph::graph::NodeIndex::new(i.index())].step];
                    st.ready.push_back(Need::of(step), run_id.to_string(), attempt)
                }
                s if s.is_held() => {
                    // Held by the worker it is leased to, registered with this engine process:
                    // a reload after a failed write, not a restart. The worker still has it and
                    // its heartbeats keep it; as an orphan it would get a deadline from the
                    // stored `heard_at`, which the failing store could not refresh, be declared
                    // lost and run twice.
                    let key = (run_id.to_string(), attempt);
                    let holder = machine.worker(i).and_then(|w| st.workers.get(w));
                    if holder.is_some_and(|w| w.held.contains_key(&key)) {
                        continue;
                    }
                    let step = &steps[i.index()];
                    let heard = step.heard_at.max(step.started_at).unwrap_or(wall_now);
                    let due = orphan_deadline(heard, wall_now, self.terms.lease_timeout);
                    st.orphans.insert((run_id.to_string(), attempt), instant_now + due);
                }
                _ => {}
            }
        }
        let finished = machine.run_state().is_terminal();
        let live = Live::new(record, machine, plan, pipeline, bundle, steps);
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
    pub(crate) fn tick(&self) {
        let mut st = self.lock();
        self.heal(&mut st);
        // The machine's clock follows a wall clock that was set (or a host back from suspend)
        // only while no run has a timer armed on it: an armed timeout never fires early.
        if self.clock.drifted()
            && st.runs.values().all(|l| l.machine.next_wakeup().is_none())
            && let Some(by) = self.clock.resync()
        {
            tracing::info!(ms = by, "the wall clock moved; the engine's clock follows it");
        }
        let now = self.clock.instant();
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
        self.metrics.leases_expired.inc_by(losses.len() as u64);
        for (run, attempt) in losses {
            tracing::info!(run, %attempt, "lease expired: the attempt runs again");
            if let Err(e) = self.apply(&mut st, &run, Event::Lost { attempt }, None) {
                tracing::debug!(run, %attempt, error = %e, "lost attempt already ended");
            }
        }
        let at = self.clock.now();
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
            self.fire_schedules(&mut st, self.clock.calendar());
        }
        self.check_slas(&mut st);
        self.expire_alias_moves(&mut st);
        let dirty = !st.unannounced.is_empty();
        drop(st);
        if dirty
            && let Err(e) = self.commit()
            && let Some(suppressed) = super::ratelog::admit(&format!("commit {e}"))
        {
            tracing::error!(error = %e, suppressed, "cannot make timer events durable");
        }
    }

    /// Registers a worker offering `offer`; returns its id and session secret. A worker that
    /// names a previous id with that id's secret keeps the id (and what is leased to it: after
    /// an engine restart, its orphans); anything else gets a fresh identity, stored (flushed)
    /// before the secret is handed out. Only the secret's hash is kept.
    pub(crate) fn register(
        &self,
        name: &str,
        offer: Offer,
        previous: Option<(&str, &str)>,
    ) -> Result<(String, String), ApiError> {
        let proven = previous.filter(|(id, secret)| {
            let st = self.lock();
            st.identities.get(*id).is_some_and(|hash| *hash == blake3::hash(secret.as_bytes()))
        });
        let (id, secret) = match proven {
            Some((id, secret)) => (id.to_string(), secret.to_string()),
            None => {
                let secret = new_secret()?;
                let id = {
                    let mut st = self.lock();
                    st.next_worker += 1;
                    let clean: String = name
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                        .take(40)
                        .collect();
                    format!("{}-{:x}", if clean.is_empty() { "worker" } else { &clean }, st.next_worker)
                };
                let hash = blake3::hash(secret.as_bytes());
                let record = crate::store::WorkerRecord {
                    id: id.clone(),
                    name: name.to_string(),
                    session_hash: hash.to_hex().to_string(),
                    registered_at: self.clock.now(),
                };
                self.store.put_worker(&record)?;
                self.lock().identities.insert(id.clone(), hash);
                (id, secret)
            }
        };
        let mut st = self.lock();
        // Registering again keeps what the engine knows it holds (a worker that thought itself
        // forgotten, or raced its own re-registration).
        let (held, stops, recent) = match st.workers.remove(&id) {
            Some(old) => (old.held, old.stops, old.recent),
            None => Default::default(),
        };
        st.workers.insert(
            id.clone(),
            Worker {
                name: name.to_string(),
                session: blake3::hash(secret.as_bytes()),
                last_seen: self.clock.instant(),
                offer,
                held,
                stops,
                polling: 0,
                recent,
            },
        );
        tracing::info!(worker = id, name, again = proven.is_some(), "worker joined");
        // Attempts no worker could run so far may fit this one.
        self.ready_signal.notify_waiters();
        Ok((id, secret))
    }

    /// Records that the engine heard from the holding worker about each of `attempts` now:
    /// rewrites a step record whose stored `heard_at` is older than [`heard_refresh`] (not
    /// flushed: sled writes it within a second, and the orphan deadline allows for that lag).
    pub(crate) fn heard(&self, st: &mut State, attempts: &[(String, AttemptId)]) {
        let now = self.clock.now();
        let refresh = heard_refresh(self.terms.lease_timeout).as_millis() as u64;
        let mut batch = Batch::new();
        let mut any = false;
        for (run, attempt) in attempts {
            let Some(live) = st.runs.get_mut(run) else { continue };
            let Some(step) = live.steps.get_mut(attempt.instance.index()) else { continue };
            if live.machine.live_attempt(attempt.instance) != Some(*attempt)
                || step.heard_at.is_some_and(|h| now.0.saturating_sub(h.0) < refresh)
            {
                continue;
            }
            step.heard_at = Some(now);
            if batch.put_step(run, attempt.instance, step).is_ok() {
                any = true;
            }
        }
        if any && let Err(e) = self.store.write_batch_unflushed(batch) {
            tracing::warn!(error = %e, "cannot record when workers were last heard from");
        }
    }

    /// Checks that `secret` is the session of registered worker `worker`: NOT_FOUND for an id
    /// this engine process does not have registered (register again), PERMISSION_DENIED for a
    /// secret that does not match (a worker speaking for another).
    pub(crate) fn authenticate(&self, st: &State, worker: &str, secret: &str) -> Result<(), ApiError> {
        match st.workers.get(worker) {
            Some(w) if w.session == blake3::hash(secret.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::Denied(format!("the session does not belong to worker {worker}"))),
            None => Err(ApiError::NotFound(format!(
                "worker {worker} is not registered (lost, or the engine restarted?): register again"
            ))),
        }
    }

    /// The content-addressed blob store (outputs and bundles).
    pub(crate) fn blobs(&self) -> &artifact::Store {
        &self.blobs
    }
}

/// A new session secret: 32 bytes from the kernel's generator, as hex.
fn new_secret() -> Result<String, ApiError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ApiError::Internal(format!("cannot read /dev/urandom for a session secret: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How long after `wall_now` an orphan found on recovery may still be claimed: a lease
/// timeout after the engine last heard of it (`heard`), plus the most the stored `heard`
/// can lag behind the truth (heartbeats refresh it every quarter lease timeout, and sled
/// writes it within a second). Depends on stored times only, so restarts cannot push it back.
pub(crate) fn orphan_deadline(heard: Millis, wall_now: Millis, lease_timeout: Duration) -> Duration {
    let lag = lease_timeout / 4 + Duration::from_secs(1);
    let due = Duration::from_millis(heard.0).saturating_add(lease_timeout).saturating_add(lag);
    due.saturating_sub(Duration::from_millis(wall_now.0))
}

/// How stale the stored `heard_at` of a held attempt may get before a heartbeat rewrites it.
pub(crate) fn heard_refresh(lease_timeout: Duration) -> Duration {
    lease_timeout / 4
}

fn rejected(run_id: &str, r: Rejected) -> ApiError {
    match r {
        Rejected::UnknownInstance(_) => ApiError::NotFound(format!("run {run_id}: {r}")),
        _ => ApiError::Precondition(format!("run {run_id}: {r}")),
    }
}

/// A parsed pipeline version and its bundle digest.
pub(crate) type ParsedVersion = (Arc<Pipeline>, Option<String>);

/// The engine's parsed pipeline versions, bounded: a flood of distinct submissions (each is
/// cached as it is stored) must not grow the engine without end. Past [`Parsed::CAPACITY`]
/// versions the least recently used goes; a live run holds its own `Arc`, so eviction only
/// means a later parse of the stored text.
#[derive(Default)]
pub(crate) struct Parsed {
    entries: HashMap<String, (ParsedVersion, u64)>,
    /// Bumped on every use: the entry with the smallest stamp is the least recently used.
    clock: u64,
}

impl Parsed {
    pub(crate) const CAPACITY: usize = 256;

    pub(crate) fn get(&mut self, version: &str) -> Option<ParsedVersion> {
        self.clock += 1;
        let (entry, used) = self.entries.get_mut(version)?;
        *used = self.clock;
        Some(entry.clone())
    }

    pub(crate) fn insert(&mut self, version: String, entry: ParsedVersion) {
        self.clock += 1;
        if self.entries.len() >= Self::CAPACITY && !self.entries.contains_key(&version) {
            // A scan of at most CAPACITY entries, only when a new version arrives at the bound.
            if let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(v, _)| v.clone()) {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(version, (entry, self.clock));
    }

    /// Forgets every version of the pipeline `name` (it was deleted).
    pub(crate) fn forget_pipeline(&mut self, name: &str) {
        self.entries.retain(|_, ((p, _), _)| p.name() != name);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Parsed;
    use crate::server::testkit;
    use crate::store::PipelineVersion;
    use weir_core::run::Millis;

    #[test]
    fn the_parsed_pipeline_cache_keeps_the_most_recently_used_versions_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let e = testkit::engine(dir.path());
        let total = Parsed::CAPACITY + 44;
        for n in 0..total {
            let yaml = format!("name: p{n}\nsteps:\n  a: {{run: echo {n}}}\n");
            let version = PipelineVersion {
                name: format!("p{n}"),
                yaml,
                bundle_digest: None,
                submitted_at: Millis(1),
                file: None,
            };
            e.store.put_pipeline_version(&format!("v{n}"), &version).unwrap();
            e.pipeline(&mut e.lock(), &format!("v{n}")).unwrap();
            // v0 is used all along, so it is never the least recently used.
            e.pipeline(&mut e.lock(), "v0").unwrap();
        }
        let mut st = e.lock();
        assert_eq!(st.pipelines.len(), Parsed::CAPACITY);
        assert!(st.pipelines.get("v0").is_some(), "the version in use stayed");
        assert!(st.pipelines.get("v1").is_none(), "the least recently used went");
        assert!(st.pipelines.get(&format!("v{}", total - 1)).is_some());
        // What went is parsed again from the store when asked for.
        let (again, _) = e.pipeline(&mut st, "v1").unwrap();
        assert_eq!(again.name(), "p1");
        assert_eq!(st.pipelines.len(), Parsed::CAPACITY);
    }
}
