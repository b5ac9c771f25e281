//! Handing attempts to workers and hearing back: `lease` pops the oldest ready attempt that
//! fits the worker, records
//! `Leased` (durable) and answers with an [`Assignment`]; `heartbeat` keeps a worker alive,
//! re-adopts attempts it still runs after an engine restart and returns stop orders; `report`
//! turns a worker's report into a machine event, refused when the attempt is not the live one.
//! Every call names its worker and carries that worker's session secret ([`Engine::authenticate`]),
//! and whatever concerns an attempt (report, heartbeat claim, log or output upload) is accepted
//! only from the worker it was leased to: a worker token does not let one worker speak for
//! another.
//! Placement (`placement`): a worker only gets an attempt its runtimes, labels and free
//! resources cover; what it holds is counted against what it offered at Register and given
//! back when the attempt ends, is lost or the worker is.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::store::EventRecord;
use weir_core::plan::Resolved;
use weir_core::run::{AttemptId, Event, StepState};
use weir_core::spec::{PullPolicy, Resources, Runtime};
use weir_data::artifact::Manifest;

use super::core::{Engine, Held, Live, Staged, State};
use super::error::ApiError;
use weir_core::placement::Usage;

/// What a worker is to do: one attempt of a step instance, with everything it needs to run it.
#[derive(Clone, Debug)]
pub(crate) struct Assignment {
    pub run: String,
    pub attempt: AttemptId,
    pub instance_name: String,
    pub step: String,
    pub pipeline: String,
    pub action: Resolved,
    /// Every value a `run:` script reads (params, matrix, run and step ids).
    pub env: HashMap<String, String>,
    pub image: Option<String>,
    pub runtime: Runtime,
    pub timeout: Option<Duration>,
    /// The outputs of the instances it needs, by the folder they appear in.
    pub inputs: Vec<(String, Manifest)>,
    pub bundle: Option<String>,
    pub outputs: Vec<String>,
    pub resources: Resources,
    pub pull: PullPolicy,
    pub capabilities: Option<Vec<String>>,
    /// The values of the step's `secrets:`, for this worker only (never stored).
    pub secrets: crate::secrets::Revealed,
}

/// What a worker reported.
pub(crate) enum Report {
    Started,
    Succeeded {
        metrics: BTreeMap<String, f64>,
        outputs: Manifest,
    },
    /// `permanent`: no retry can do better (the worker said so).
    Failed {
        reason: String,
        permanent: bool,
    },
    Lost {
        reason: String,
    },
    /// Given back unstarted (held ahead while the worker's slots stayed busy).
    Released {
        reason: String,
    },
}

impl Engine {
    /// Authenticates `worker` by its session and records that it spoke.
    fn worker_seen<'a>(
        &self,
        st: &'a mut State,
        worker: &str,
        session: &str,
    ) -> Result<&'a mut super::core::Worker, ApiError> {
        self.authenticate(st, worker, session)?;
        let w = st.workers.get_mut(worker).expect("authenticated above");
        w.last_seen = self.clock.instant();
        Ok(w)
    }

    /// Whether `worker`, with `session`, was heard at `since` or later: a call begun at `since`
    /// that fails after the engine counted it as a sign of life says so to the worker
    /// (`weir_proto::HEARD_HEADER`), since the lease clock the worker fences by restarted too.
    pub(crate) fn heard_since(&self, worker: &str, session: &str, since: tokio::time::Instant) -> bool {
        let st = self.lock();
        self.authenticate(&st, worker, session).is_ok() && st.workers.get(worker).is_some_and(|w| w.last_seen >= since)
    }

    /// Authenticates a call that concerns no attempt (downloads).
    pub(crate) fn check_session(&self, worker: &str, session: &str) -> Result<(), ApiError> {
        self.authenticate(&self.lock(), worker, session)
    }

    /// The oldest ready attempt that fits `worker` now (its runtimes, labels and free
    /// resources), if any. Attempts that do not fit stay queued, in order, for other workers.
    /// Not a sign of life: a long-poll calls it again whenever something becomes ready, long
    /// after the worker last spoke.
    pub(crate) fn try_lease(&self, worker: &str) -> Result<Option<Assignment>, ApiError> {
        let mut st = self.lock();
        let (assignment, dirty) = self.lease_locked(&mut st, worker)?;
        drop(st);
        if dirty {
            self.commit()?;
        }
        Ok(assignment)
    }

    /// [`Engine::try_lease`] under the caller's lock, without the commit: returns what was
    /// leased and whether events were applied (a lease, or attempts failed for want of their
    /// secrets), which the caller must commit before it answers anyone.
    fn lease_locked(&self, st: &mut State, worker: &str) -> Result<(Option<Assignment>, bool), ApiError> {
        let Some(w) = st.workers.get(worker) else {
            return Err(ApiError::NotFound(format!(
                "worker {worker} is not registered (lost, or the engine restarted?): register again"
            )));
        };
        if w.offer.capacity > 0 && w.held.len() >= w.offer.capacity as usize {
            return Ok((None, false)); // full, whatever its `free` says
        }
        // Attempts failed here because their secrets cannot be delivered: committed before return.
        let mut failed = false;
        if let Some(a) = self.redeliver(st, worker, &mut failed)? {
            return Ok((Some(a), failed));
        }
        loop {
            let entry = {
                // Disjoint borrows: no copy of the worker's offer per lease.
                let State { ready, workers, .. } = &mut *st;
                let Some(w) = workers.get(worker) else { break };
                let used = w.used();
                ready.pop_fitting(|need| w.offer.fits_now(need, used))
            };
            let Some(entry) = entry else { break };
            let (run, attempt) = (entry.run.clone(), entry.attempt);
            let Some(live) = st.runs.get(&run) else { continue };
            let i = attempt.instance;
            if live.machine.live_attempt(i) != Some(attempt) || live.machine.state(i) != StepState::Ready {
                continue; // withdrawn (cancelled) or superseded
            }
            let names =
                &live.pipeline.steps()[live.plan.graph[petgraph::graph::NodeIndex::new(i.index())].step].secrets;
            let secrets = self.secret_values(names);
            let mut assignment = match assignment(self, live, st.staged.as_ref(), &run, attempt) {
                Ok(a) => a,
                Err(e) => {
                    // Keep it ready for the next lease rather than losing it from the queue.
                    st.ready.requeue(entry);
                    return Err(e);
                }
            };
            self.apply(st, &run, Event::Leased { attempt, worker: worker.to_string() }, None)?;
            match secrets {
                Ok(values) => assignment.secrets = crate::secrets::Revealed(values),
                Err(reason) => {
                    // No retry can do better until someone sets the secret (or the key).
                    tracing::warn!(run, %attempt, reason, "a step's secrets cannot be delivered; the attempt fails");
                    self.apply(st, &run, Event::Failed { attempt, reason, permanent: true }, None)?;
                    failed = true;
                    continue;
                }
            }
            if let Some(w) = st.workers.get_mut(worker) {
                w.held.insert((run.clone(), attempt), Held { since: self.clock.instant(), usage: entry.need.usage });
            }
            tracing::debug!(run, %attempt, worker, step = assignment.instance_name, "leased");
            return Ok((Some(assignment), true));
        }
        Ok((None, failed))
    }

    /// An attempt leased to `worker` by an engine process that died before the worker told
    /// it started (an orphan still `leased`), handed to the same worker identity again, under
    /// the same attempt number. The commonest cause is a lease answer lost with the dying
    /// process: the lease was durable, the worker never saw it, and without this the step
    /// would wait for the orphan deadline (1.35 lease timeouts) to run as a new attempt.
    /// A worker that did get the first answer holds the attempt and ignores the copy (its
    /// lease calls are sequential: the first answer is taken before this one is asked for);
    /// one whose attempt ended keeps holding it until the engine took the outcome, after which
    /// the attempt is no longer `leased`. A `running` orphan is never handed out again: its
    /// process may have run, and only its worker's claim or its deadline decides.
    /// Sets `failed` when it failed an attempt whose secrets cannot be delivered (to commit).
    fn redeliver(&self, st: &mut State, worker: &str, failed: &mut bool) -> Result<Option<Assignment>, ApiError> {
        if st.orphans.is_empty() {
            return Ok(None);
        }
        let Some(w) = st.workers.get(worker) else { return Ok(None) };
        let used = w.used();
        let mut mine: Vec<(String, AttemptId)> = st
            .orphans
            .keys()
            .filter(|(run, attempt)| {
                st.runs.get(run).is_some_and(|l| {
                    let i = attempt.instance;
                    i.index() < l.machine.len()
                        && l.machine.live_attempt(i) == Some(*attempt)
                        && l.machine.state(i) == StepState::Leased
                        && l.machine.worker(i) == Some(worker)
                        && w.offer.fits_now(&l.need(i), used)
                })
            })
            .cloned()
            .collect();
        mine.sort(); // oldest run first (run ids start with their time), then by instance
        let Some((run, attempt)) = mine.into_iter().next() else { return Ok(None) };
        let live = st.runs.get(&run).expect("filtered above");
        let names = &live.pipeline.steps()
            [live.plan.graph[petgraph::graph::NodeIndex::new(attempt.instance.index())].step]
            .secrets;
        let secrets = self.secret_values(names);
        let mut assignment = assignment(self, live, st.staged.as_ref(), &run, attempt)?;
        let usage = live.need(attempt.instance).usage;
        st.orphans.remove(&(run.clone(), attempt));
        match secrets {
            Ok(values) => assignment.secrets = crate::secrets::Revealed(values),
            Err(reason) => {
                tracing::warn!(run, %attempt, reason, "a step's secrets cannot be delivered; the attempt fails");
                self.apply(st, &run, Event::Failed { attempt, reason, permanent: true }, None)?;
                *failed = true;
                return Ok(None);
            }
        }
        if let Some(w) = st.workers.get_mut(worker) {
            w.held.insert((run.clone(), attempt), Held { since: self.clock.instant(), usage });
        }
        tracing::info!(run, %attempt, worker, "handed an attempt leased before a restart to its worker again");
        Ok(Some(assignment))
    }

    /// What `attempt` of `run` uses of a worker, for attempts a worker holds without a lease
    /// from this engine process (re-adopted after a restart).
    fn usage(st: &State, run: &str, attempt: AttemptId) -> Usage {
        st.runs.get(run).map(|l| l.need(attempt.instance).usage).unwrap_or_default()
    }

    /// Long-polls for one attempt, up to `wait`.
    pub(crate) async fn lease(
        &self,
        worker: &str,
        session: &str,
        free: u32,
        wait: Duration,
    ) -> Result<Option<Assignment>, ApiError> {
        if free == 0 {
            let mut st = self.lock();
            self.worker_seen(&mut st, worker, session)?;
            return Ok(None);
        }
        // A worker waiting in a long-poll is alive (see `tick`), but a poll stays open just as
        // well for a worker cut off from the network: so no poll outlasts half the lease
        // timeout, and neither its end nor what it sees meanwhile counts as hearing from the
        // worker. A worker cut off mid-poll is lost a lease timeout after it last spoke.
        let deadline = tokio::time::Instant::now() + wait.min(self.terms.max_wait).min(self.terms.lease_timeout / 2);
        let _polling = Polling::start(self, worker, session)?;
        loop {
            let notified = self.ready_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(a) = self.try_lease(worker)? {
                return Ok(Some(a));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Keeps `worker` alive; returns the attempts it must stop.
    pub(crate) fn heartbeat(
        &self,
        worker: &str,
        session: &str,
        attempts: Vec<(String, AttemptId)>,
    ) -> Result<Vec<(String, AttemptId, String)>, ApiError> {
        let mut st = self.lock();
        self.worker_seen(&mut st, worker, session)?;
        let mut stops = std::mem::take(&mut st.workers.get_mut(worker).expect("seen above").stops);
        let now = self.clock.instant();
        let mut claimed = Vec::new();
        let mut heard = Vec::new();
        for (run, attempt) in &attempts {
            let key = (run.clone(), *attempt);
            if st.workers[worker].held.contains_key(&key) {
                heard.push(key);
                continue;
            }
            let live_run = st.runs.get(run).filter(|l| attempt.instance.index() < l.machine.len());
            let live = live_run.and_then(|l| l.machine.live_attempt(attempt.instance));
            let held = live_run.is_some_and(|l| l.machine.state(attempt.instance).is_held());
            let leased_to = live_run.and_then(|l| l.machine.worker(attempt.instance));
            if live == Some(*attempt) && held && leased_to == Some(worker) {
                // After an engine restart (an orphan), or after this worker registered again:
                // it was leased to this very identity.
                st.orphans.remove(&key);
                heard.push(key.clone());
                claimed.push(key);
            } else if !stops.iter().any(|(r, a, _)| r == run && a == attempt) {
                let reason = if live == Some(*attempt) && held {
                    tracing::warn!(worker, run, %attempt, "a worker claims an attempt leased to another worker");
                    "leased to another worker"
                } else {
                    "not live on the engine"
                };
                stops.push((run.clone(), *attempt, reason.to_string()));
            }
        }
        self.heard(&mut st, &heard);
        let usages: Vec<Usage> = claimed.iter().map(|(run, a)| Engine::usage(&st, run, *a)).collect();
        let w = st.workers.get_mut(worker).expect("seen above");
        for (key, usage) in claimed.into_iter().zip(usages) {
            tracing::info!(worker, run = key.0, attempt = %key.1, "worker re-adopted a running attempt");
            w.held.insert(key, Held { since: now, usage });
        }
        // An attempt this worker should hold but does not mention, long after its lease (a
        // lost lease response), is lost: nothing would ever report on it.
        let listed: std::collections::HashSet<&(String, AttemptId)> = attempts.iter().collect();
        let forgotten: Vec<(String, AttemptId)> = w
            .held
            .iter()
            .filter(|(k, h)| !listed.contains(k) && now.duration_since(h.since) > self.terms.lease_timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &forgotten {
            w.release(key);
        }
        for key in forgotten {
            tracing::warn!(worker, run = key.0, attempt = %key.1, "worker no longer mentions a leased attempt: lost");
            if let Err(e) = self.apply(&mut st, &key.0, Event::Lost { attempt: key.1 }, None) {
                tracing::debug!(error = %e, "forgotten attempt already ended");
            }
        }
        // Stop orders may follow from events not yet durable (a cancel): commit first.
        let dirty = !st.unannounced.is_empty() || !stops.is_empty();
        drop(st);
        if dirty {
            self.commit()?;
        }
        Ok(stops)
    }

    /// Applies a worker's report on `attempt` of `run`; with `lease_next` and an outcome, also
    /// leases the next attempt that fits `worker` now ([`Engine::try_lease`], no waiting) in
    /// the same lock and the same commit: the outcome and the lease become durable in one
    /// flush, before either is answered. In a chain the attempt this outcome made ready goes
    /// straight back to the worker that freed the slot, without a long-poll wake-up, a second
    /// call or a second flush.
    pub(crate) fn report(
        &self,
        worker: &str,
        session: &str,
        run: &str,
        attempt: AttemptId,
        report: Report,
        lease_next: bool,
    ) -> Result<Option<Assignment>, ApiError> {
        // The last value of each live series counts as a metric too (`live_metrics`).
        let report = match report {
            Report::Succeeded { metrics, outputs } => {
                Report::Succeeded { metrics: self.with_live_metrics(run, attempt, metrics)?, outputs }
            }
            report => report,
        };
        let mut st = self.lock();
        self.worker_seen(&mut st, worker, session)?;
        check_holder(&st, worker, run, attempt)?;
        let (event, outputs) = match report {
            Report::Started => (Event::Started { attempt }, None),
            Report::Succeeded { metrics, outputs } => {
                for e in outputs.entries() {
                    if !self.blobs.contains(&e.digest) {
                        return Err(ApiError::Precondition(format!(
                            "output {} ({}) was not uploaded: upload every output before reporting success",
                            e.path, e.digest
                        )));
                    }
                }
                (Event::Succeeded { attempt, metrics }, Some(outputs))
            }
            Report::Failed { reason, permanent } => (Event::Failed { attempt, reason, permanent }, None),
            Report::Lost { reason } => {
                tracing::warn!(worker, run, %attempt, reason, "worker lost an attempt");
                (Event::Lost { attempt }, None)
            }
            Report::Released { reason } => {
                tracing::info!(worker, run, %attempt, reason, "worker gave back an attempt it never started");
                (Event::Released { attempt }, None)
            }
        };
        // What a worker gives back goes to whichever worker asks first, not back to it.
        let lease_next = lease_next && !matches!(event, Event::Released { .. });
        let terminal = !matches!(event, Event::Started { .. });
        // The outcome and the lease it makes are written in one transaction (`Staged`).
        if terminal && lease_next {
            st.staged = Some(Staged::default());
        }
        if let Err(e) = self.apply(&mut st, run, event, outputs.as_ref()) {
            // Staged before the failure (cache hits write what is staged): written anyway.
            let _ = self.write_staged_and_wake(&mut st);
            return Err(self.stale(e));
        }
        let key = (run.to_string(), attempt);
        let usage = Engine::usage(&st, run, attempt);
        if let Some(w) = st.workers.get_mut(worker) {
            if terminal {
                if w.release(&key) {
                    // What it used is free again: a long-poll skipped for want of it may fit now.
                    self.wake_lease_polls(&mut st);
                }
            } else {
                w.held.entry(key).or_insert_with(|| Held { since: self.clock.instant(), usage });
            }
        }
        let next = if terminal && lease_next {
            // The outcome is applied whatever happens here: a lease that cannot be made now
            // leaves the worker to its long-poll.
            match self.lease_locked(&mut st, worker) {
                Ok((next, _)) => next,
                Err(e) => {
                    tracing::debug!(worker, error = %e, "no lease with this report");
                    None
                }
            }
        } else {
            None
        };
        if let Err(e) = self.write_staged_and_wake(&mut st) {
            // Neither the outcome nor the lease was stored; their runs were reloaded from the
            // store. The worker still holds the attempt it reports on (it reports again), and
            // not the one leased here, which is ready again.
            let since = self.clock.instant();
            if let Some(w) = st.workers.get_mut(worker) {
                if let Some(a) = &next {
                    w.held.remove(&(a.run.clone(), a.attempt));
                }
                if terminal {
                    w.held.entry((run.to_string(), attempt)).or_insert(Held { since, usage });
                }
            }
            // Released above, the attempt was not held during the reload: it is this worker's
            // again, not an orphan (see `replay`).
            st.orphans.remove(&(run.to_string(), attempt));
            return Err(e);
        }
        drop(st);
        // `started` is advisory: lost in a crash, the machine still accepts the outcome from
        // `leased`, so it rides along with the next commit instead of paying for a flush.
        if terminal {
            self.commit()?;
        }
        Ok(next)
    }

    /// Writes what a report staged; then, if its events woke the `Lease` long-polls while it
    /// staged, wakes them, but only if anything is left for them (a failed write reloaded runs
    /// and may have queued their attempts again: woken then too).
    fn write_staged_and_wake(&self, st: &mut State) -> Result<(), ApiError> {
        let woke = std::mem::take(&mut st.woke_while_staged);
        let written = self.write_staged(st);
        if woke && (written.is_err() || !st.ready.is_empty()) {
            self.ready_signal.notify_waiters();
        }
        written
    }

    /// Checks that `attempt` of `run` was dispatched (it may since have ended) to `worker`:
    /// logs of any dispatched attempt are kept, but only its own worker may upload them (while
    /// it holds it, or for one of the last attempts it held).
    pub(crate) fn check_dispatched(
        &self,
        worker: &str,
        session: &str,
        run: &str,
        attempt: AttemptId,
    ) -> Result<(), ApiError> {
        let st = self.lock();
        self.authenticate(&st, worker, session)?;
        let key = (run.to_string(), attempt);
        let w = &st.workers[worker];
        let own = w.held.contains_key(&key) || w.recent.contains(&key);
        if let Some(live) = st.runs.get(run) {
            let i = attempt.instance;
            if i.index() >= live.machine.len() || attempt.number > live.machine.attempts(i) {
                return Err(ApiError::Precondition(format!("attempt {attempt} of run {run} was never dispatched")));
            }
            // After an engine restart, the live attempt's worker before it re-adopts it.
            let leased_here = live.machine.live_attempt(i) == Some(attempt) && live.machine.worker(i) == Some(worker);
            if own || leased_here {
                return Ok(());
            }
        } else {
            match self.store.step(run, attempt.instance)? {
                Some(s) if attempt.number > s.attempts => {
                    return Err(ApiError::Precondition(format!("attempt {attempt} of run {run} was never dispatched")));
                }
                Some(_) if own => return Ok(()),
                Some(_) => {}
                None => return Err(ApiError::NotFound(format!("no run {run} with instance {}", attempt.instance))),
            }
        }
        drop(st);
        // An older attempt, or one this engine process did not hand out (it restarted, or the
        // worker was lost and forgot): the run's own record says whom it was leased to.
        if self.leased_to(run, attempt)?.as_deref() == Some(worker) { Ok(()) } else { Err(not_yours(run, attempt)) }
    }

    /// Counts a refusal of a report for an attempt that is no longer live (`/metrics`).
    fn stale(&self, e: ApiError) -> ApiError {
        if matches!(e, ApiError::Precondition(_)) {
            self.metrics.stale_reports.inc();
        }
        e
    }

    /// The worker `attempt` of `run` was leased to, from the run's stored events.
    fn leased_to(&self, run: &str, attempt: AttemptId) -> Result<Option<String>, ApiError> {
        for item in self.store.events(run, 0)? {
            if let (_, EventRecord { event: Event::Leased { attempt: a, worker }, .. }) = item?
                && a == attempt
            {
                return Ok(Some(worker));
            }
        }
        Ok(None)
    }

    /// Checks that `attempt` is the live attempt of `run`, leased to `worker` (for output
    /// uploads).
    pub(crate) fn check_live(
        &self,
        worker: &str,
        session: &str,
        run: &str,
        attempt: AttemptId,
    ) -> Result<(), ApiError> {
        let st = self.lock();
        self.authenticate(&st, worker, session)?;
        check_holder(&st, worker, run, attempt)?;
        let Some(live) = st.runs.get(run) else {
            drop(st);
            return Err(self.not_live(run));
        };
        if attempt.instance.index() >= live.machine.len() {
            return Err(ApiError::NotFound(format!("run {run} has no instance {}", attempt.instance)));
        }
        match live.machine.live_attempt(attempt.instance) {
            Some(a) if a == attempt => Ok(()),
            live_now => Err(self.stale(ApiError::Precondition(format!(
                "attempt {attempt} of run {run} is stale ({})",
                live_now.map_or("no attempt is live".to_string(), |a| format!("the live attempt is {a}"))
            )))),
        }
    }
}

/// Marks a worker as waiting in a long-poll for as long as it lives.
struct Polling<'a> {
    engine: &'a Engine,
    worker: &'a str,
}

impl<'a> Polling<'a> {
    fn start(engine: &'a Engine, worker: &'a str, session: &str) -> Result<Polling<'a>, ApiError> {
        let mut st = engine.lock();
        engine.worker_seen(&mut st, worker, session)?.polling += 1;
        Ok(Polling { engine, worker })
    }
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        let mut st = self.engine.lock();
        if let Some(w) = st.workers.get_mut(self.worker) {
            w.polling = w.polling.saturating_sub(1);
        }
    }
}

/// Refuses `attempt` of `run` to `worker` when it is the live attempt of a live run but was
/// leased to another worker. Anything else (a stale attempt, a finished run) is left to the
/// run machine and the callers, which refuse it with FAILED_PRECONDITION.
fn check_holder(st: &State, worker: &str, run: &str, attempt: AttemptId) -> Result<(), ApiError> {
    let Some(live) = st.runs.get(run) else { return Ok(()) };
    if attempt.instance.index() >= live.machine.len() || live.machine.live_attempt(attempt.instance) != Some(attempt) {
        return Ok(());
    }
    match live.machine.worker(attempt.instance) {
        Some(holder) if holder != worker => {
            tracing::warn!(worker, run, %attempt, "a worker spoke for an attempt leased to another worker");
            Err(not_yours(run, attempt))
        }
        _ => Ok(()),
    }
}

/// A refusal like a stale attempt's (the worker drops the call and goes on), not an
/// authentication failure: a worker's own edge cases must never stop it.
fn not_yours(run: &str, attempt: AttemptId) -> ApiError {
    ApiError::Precondition(format!("attempt {attempt} of run {run} is not leased to this worker"))
}

/// The folder under `WEIR_INPUTS` for the outputs of instance `name`: the step name, and for a
/// matrix instance `step/<its matrix values>` with anything outside `[A-Za-z0-9._=,+-]` made `_`.
pub fn input_dir(name: &str) -> String {
    match name.split_once('[') {
        None => name.to_string(),
        Some((step, rest)) => {
            let cells = rest.strip_suffix(']').unwrap_or(rest);
            let safe: String = cells
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || "._=,+-".contains(c) { c } else { '_' })
                .collect();
            let safe = if safe.chars().all(|c| c == '.') { format!("_{safe}") } else { safe };
            format!("{step}/{safe}")
        }
    }
}

fn assignment(
    engine: &Engine,
    live: &Live,
    staged: Option<&Staged>,
    run: &str,
    attempt: AttemptId,
) -> Result<Assignment, ApiError> {
    let node = petgraph::graph::NodeIndex::new(attempt.instance.index());
    let inst = &live.plan.graph[node];
    let step = &live.pipeline.steps()[inst.step];
    // A `run:` script reads every value from here, never from its text.
    let mut env: HashMap<String, String> = live.plan.values_env(node).into_iter().collect();
    env.insert("WEIR_RUN_ID".into(), run.to_string());
    env.insert("WEIR_PIPELINE".into(), live.pipeline.name().to_string());
    env.insert("WEIR_STEP".into(), step.name.clone());
    env.insert("WEIR_INSTANCE".into(), inst.name.clone());
    env.insert("WEIR_ATTEMPT".into(), attempt.number.to_string());
    if let crate::store::Trigger::Schedule { at: Some(at), .. } = &live.record.trigger {
        let tick = super::scheduler::instant(*at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        env.insert("WEIR_SCHEDULED_TIME".into(), tick);
    }
    if let Some((trigger, _)) = live.record.trigger.fired() {
        env.insert("WEIR_TRIGGER".into(), trigger.to_string());
    }
    if let crate::store::Trigger::Upstream { run, .. } = &live.record.trigger {
        env.insert("WEIR_TRIGGER_RUN".into(), run.clone());
    }
    // The run's input dataset: its trigger's files, or those of the upstream run (or retried
    // run) it came from. Paths on the engine's host, one a line (names holding a newline are
    // never taken).
    let files = engine.input_dataset(&live.record)?;
    if !files.is_empty() {
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let digests: Vec<String> = files.iter().map(|f| f.digest.to_string()).collect();
        env.insert("WEIR_TRIGGER_FILES".into(), paths.join("\n"));
        env.insert("WEIR_TRIGGER_DIGESTS".into(), digests.join("\n"));
    }
    let mut inputs = Vec::new();
    let mut needs: Vec<_> = live.plan.graph.neighbors_directed(node, petgraph::Direction::Incoming).collect();
    needs.sort_unstable();
    for need in needs {
        let need_id = weir_core::run::InstanceId(need.index() as u32);
        if !live.machine.state(need_id).is_success() {
            continue; // skipped by its `when`: no outputs
        }
        // Staged when the outcome that made this attempt ready is in the same call (`report`).
        let manifest = engine.artifacts_of(staged, run, need_id)?.unwrap_or_default();
        if manifest.entries().is_empty() {
            continue; // nothing to show: no folder (and no work for the worker)
        }
        inputs.push((input_dir(&live.plan.graph[need].name), manifest));
    }
    Ok(Assignment {
        run: run.to_string(),
        attempt,
        instance_name: inst.name.clone(),
        step: step.name.clone(),
        pipeline: live.pipeline.name().to_string(),
        action: inst.action.clone(),
        env,
        image: inst.image.clone(),
        runtime: step.runtime,
        timeout: step.timeout,
        inputs,
        bundle: live.bundle.clone(),
        outputs: step.outputs.clone(),
        resources: step.resources,
        pull: step.pull,
        capabilities: step.capabilities.clone(),
        secrets: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::input_dir;

    #[test]
    fn matrix_instances_get_one_safe_folder_each() {
        assert_eq!(input_dir("ingest"), "ingest");
        assert_eq!(input_dir("train[l2=0.0,features=linear]"), "train/l2=0.0,features=linear");
        assert_eq!(input_dir("t[url=s3://b/k]"), "t/url=s3___b_k");
        assert_eq!(input_dir("t[..]"), "t/_..");
        for name in ["t[a=../../x]", "t[/etc]", "t[x y]"] {
            let dir = input_dir(name);
            assert!(weir_data::relpath::check(&dir).is_ok(), "{dir}");
        }
    }
}
