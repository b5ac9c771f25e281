//! The scheduler: fires every stored pipeline's `schedule:` from the engine's periodic tick, in
//! `weir server` only (`weir run` never fires schedules). What to do with each tick (fire,
//! skip, queue, replace, catch up) is decided by the pure [`weir_core::schedule::Machine`];
//! this file is the loop that performs its decisions: it looks up the runs the machine asks
//! about, starts and cancels runs, and stores the record.
//!
//! Exactly once per tick: a tick's run id is derived from the pipeline and the tick
//! ([`schedule::run_id`]), the run is created and made durable first, and only then does the
//! schedule's record move its cursor past the tick. A crash in between fires the tick again
//! after the restart, finds its run, and creates nothing. A wall clock that jumps back does not
//! fire anything until it passes the cursor again; one that jumps forward is downtime, handled
//! by `catchup`.
//!
//! The record (`schedules` tree, [`ScheduleRecord`], the machine's [`Ticks`] inline) holds
//! the cursor (every tick at or before it is decided), the last started tick and run, pause,
//! the recent skipped ticks with their reasons, and a backfill in progress. Re-submitting a pipeline first decides its old
//! schedule's ticks up to now, then switches: an unchanged expression and zone keep the cursor,
//! a changed one fires from now, a removed one is forgotten. No tick is fired twice or lost at
//! the switch.

use chrono::{DateTime, Utc};

use crate::store::{ScheduleRecord, Ticks, Trigger};
use weir_core::run::{Event, Millis, RunState};
use weir_core::schedule::{self, Decision, Machine, Outcome, Runs};
pub(crate) use weir_core::schedule::{instant, millis};
use weir_core::spec::{Concurrency, Pipeline, Schedule};

use super::core::{Engine, State};
use super::error::ApiError;

/// What a backfill did (or, dry, would do) with one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BackfillOutcome {
    /// A run of the tick exists already.
    Exists,
    Started,
    /// Waits in the schedule's backfill queue.
    Queued,
}

/// One tick of a backfill: when, its run id and what became of it.
#[derive(Clone, Debug)]
pub(crate) struct BackfillTick {
    pub at: Millis,
    pub run_id: String,
    pub outcome: BackfillOutcome,
}

/// A schedule as `weir schedules` shows it.
#[derive(Clone, Debug)]
pub(crate) struct ScheduleView {
    pub pipeline: String,
    pub record: ScheduleRecord,
    pub schedule: Schedule,
    /// The next few fire times from now (or from the cursor, if later).
    pub next_fires: Vec<Millis>,
    pub last_run_state: Option<RunState>,
    /// Ticks of the backfill queue still to start.
    pub backfill_left: u32,
}

/// The most ticks one backfill may cover.
pub const MAX_BACKFILL: usize = 1000;

/// One schedule this engine fires.
pub(crate) struct Sched {
    pub record: ScheduleRecord,
    pub schedule: Schedule,
    /// The first tick after the cursor, computed once per cursor move (`None` = not yet).
    next: Option<Option<DateTime<Utc>>>,
}

impl Sched {
    fn new(record: ScheduleRecord, pipeline: &Pipeline) -> Option<Sched> {
        Some(Sched { record, schedule: pipeline.schedule()?.clone(), next: None })
    }

    fn machine(&self) -> Machine<'_> {
        Machine::new(&self.schedule, &self.record.pipeline)
    }

    /// Whether a tick is due at `now` (see [`Machine::due`]).
    fn due(&mut self, now: DateTime<Utc>) -> bool {
        let cursor = instant(self.record.ticks.cursor);
        let next = *self.next.get_or_insert_with(|| schedule::next_after(&self.schedule, cursor));
        self.machine().due(&self.record.ticks, next, now)
    }
}

/// The ids of `pipeline`'s scheduled runs that have not finished, in id (tick) order.
fn running_scheduled(st: &State, pipeline: &str) -> Vec<String> {
    let mut ids: Vec<String> = st
        .runs
        .iter()
        .filter(|(_, l)| l.record.pipeline == pipeline && matches!(l.record.trigger, Trigger::Schedule { .. }))
        .map(|(id, _)| id.clone())
        .collect();
    ids.sort();
    ids
}

impl Engine {
    /// Loads the stored schedules and brings them in line with every pipeline's latest version
    /// (a pipeline submitted while no scheduling engine ran gets its schedule now). Ticks
    /// missed while the server was down are decided here, by `catchup`. Called once, after
    /// [`Engine::recover`] and before serving.
    pub(crate) fn start_schedules(&self, now: DateTime<Utc>) -> Result<usize, ApiError> {
        let mut st = self.lock();
        for record in self.store.schedules()? {
            let name = record.pipeline.clone();
            match self.pipeline(&mut st, &record.version) {
                Ok((p, _)) => match Sched::new(record, &p) {
                    Some(s) => {
                        st.schedules.insert(name, s);
                    }
                    None => tracing::warn!(pipeline = name, "stored schedule's version has no schedule; dropped"),
                },
                Err(e) => tracing::error!(pipeline = name, error = %e, "schedule not loaded"),
            }
        }
        for (name, index) in self.store.pipelines()? {
            if let Err(e) = self.sync_schedule(&mut st, &name, &index.latest, now) {
                tracing::error!(pipeline = name, error = %e, "cannot install the pipeline's schedule");
            }
        }
        let n = st.schedules.len();
        drop(st);
        self.commit()?;
        Ok(n)
    }

    /// Makes `pipeline`'s schedule that of `version`, just submitted as its latest: the old
    /// schedule's ticks up to `now` are decided first; an unchanged expression and zone keep
    /// the cursor, a changed one fires from `now`, none removes the schedule.
    pub(crate) fn sync_schedule(
        &self,
        st: &mut State,
        pipeline: &str,
        version: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let (parsed, _) = self.pipeline(st, version)?;
        if st.schedules.contains_key(pipeline) {
            self.fire_due(st, pipeline, now)?;
        }
        let old = st.schedules.get(pipeline).map(|s| s.record.clone());
        let Some(new) = parsed.schedule() else {
            if old.is_some() {
                self.store.remove_schedule(pipeline)?;
                st.schedules.remove(pipeline);
                tracing::info!(pipeline, "schedule removed: the latest version has none");
            }
            return Ok(());
        };
        let zone = new.timezone.to_string();
        let record = match old {
            Some(mut r) => {
                if r.cron != new.cron || r.timezone != zone {
                    Machine::new(new, pipeline).changed(&mut r.ticks, now);
                    tracing::info!(pipeline, cron = new.cron, zone, "schedule changed; it fires from now");
                }
                r.version = version.to_string();
                r.cron.clone_from(&new.cron);
                r.timezone = zone;
                r
            }
            None => {
                tracing::info!(pipeline, cron = new.cron, zone, "schedule installed");
                ScheduleRecord {
                    pipeline: pipeline.to_string(),
                    version: version.to_string(),
                    cron: new.cron.clone(),
                    timezone: zone,
                    ticks: Ticks::new(now),
                }
            }
        };
        if st.schedules.get(pipeline).is_some_and(|s| s.record == record) {
            return Ok(());
        }
        self.store.put_schedule(&record)?;
        if let Some(s) = Sched::new(record, &parsed) {
            st.schedules.insert(pipeline.to_string(), s);
        }
        Ok(())
    }

    /// Fires what is due at `now` in every schedule, and moves backfills on. Called from the
    /// engine's tick with the clock's calendar.
    pub(crate) fn fire_schedules(&self, st: &mut State, now: DateTime<Utc>) {
        // Most passes find nothing due: only schedules with work are named (and cloned).
        let names: Vec<String> = st
            .schedules
            .iter_mut()
            .filter_map(|(name, s)| (s.due(now) || s.record.ticks.backfill.is_some()).then(|| name.clone()))
            .collect();
        for name in names {
            if let Err(e) = self.fire_due(st, &name, now) {
                tracing::error!(pipeline = name, error = %e, "cannot fire the schedule; retrying at the next tick");
            }
            if let Err(e) = self.advance_backfill(st, &name) {
                tracing::error!(pipeline = name, error = %e, "cannot move the backfill on");
            }
        }
    }

    /// Whether run `id` exists, live or stored.
    fn run_exists(&self, st: &State, id: &str) -> Result<bool, ApiError> {
        Ok(st.runs.contains_key(id) || self.store.run(id)?.is_some())
    }

    /// Performs one pass of the schedule machine over the ticks of `pipeline` in (cursor, now]:
    /// looks up the runs it asks about, performs its starts (and replacements), records the
    /// outcome and stores the record.
    fn fire_due(&self, st: &mut State, pipeline: &str, now: DateTime<Utc>) -> Result<(), ApiError> {
        let Some(s) = st.schedules.get_mut(pipeline) else { return Ok(()) };
        if !s.due(now) {
            return Ok(());
        }
        let (sched, mut record) = (s.schedule.clone(), s.record.clone());
        let machine = Machine::new(&sched, pipeline);
        let pass = machine.pass(&record.ticks, now);
        let mut runs = Runs { running: running_scheduled(st, pipeline), ..Runs::default() };
        for id in pass.candidates(pipeline) {
            if self.run_exists(st, &id)? {
                runs.existing.insert(id);
            }
        }
        let plan = machine.decide(&record.ticks, pass, &runs);
        let mut outcomes: Vec<Outcome> = Vec::new();
        for Decision::Start { tick, id, cancel, backfill } in plan.decisions() {
            for r in cancel {
                match self.apply(st, r, Event::Cancel, None) {
                    Ok(_) => tracing::info!(run = r, by = id, "scheduled run cancelled: replaced by the next tick"),
                    Err(e) => tracing::warn!(run = r, error = %e, "cannot cancel the run being replaced"),
                }
            }
            let started = self.start_tick(st, &record.version, &sched, *tick, id, *backfill);
            if let Err(e) = &started {
                tracing::error!(pipeline, tick = %tick, error = %e, "cannot start the tick's run");
            }
            outcomes.push(started.map_err(|e| e.to_string()));
        }
        let skipped_before = record.ticks.skipped.last().cloned();
        machine.settle(&mut record.ticks, plan, &outcomes);
        if let Some(last) = record.ticks.skipped.last()
            && Some(last) != skipped_before.as_ref()
        {
            tracing::warn!(pipeline, count = last.count, reason = last.reason, "ticks skipped");
        }
        // Flushes every write before it too: the runs just created are durable before the
        // cursor says their ticks are done.
        self.store.put_schedule(&record)?;
        if let Some(s) = st.schedules.get_mut(pipeline) {
            s.record = record;
            s.next = None;
        }
        Ok(())
    }

    /// Creates the run `id` of tick `t` (the machine decided it starts).
    fn start_tick(
        &self,
        st: &mut State,
        version: &str,
        sched: &Schedule,
        t: DateTime<Utc>,
        id: &str,
        backfill: bool,
    ) -> Result<(), ApiError> {
        let overrides: Vec<(String, String)> = sched.params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        let trigger = Trigger::Schedule { schedule: sched.cron.clone(), at: Some(millis(t)), backfill };
        self.create_run(st, version, &overrides, trigger, false, Some(id.to_string()))?;
        if !backfill {
            self.metrics.scheduler_lag((self.clock.calendar() - t).num_milliseconds() as f64 / 1000.0);
        }
        tracing::info!(run = id, tick = %t, backfill, "scheduled run started");
        Ok(())
    }

    /// Starts the next ticks of a one-at-a-time backfill while no scheduled run of the
    /// pipeline runs; returns the runs it started.
    fn advance_backfill(&self, st: &mut State, pipeline: &str) -> Result<Vec<String>, ApiError> {
        let mut started = Vec::new();
        while let Some(s) = st.schedules.get(pipeline) {
            if s.record.ticks.backfill.is_none() {
                break;
            }
            let (sched, mut record) = (s.schedule.clone(), s.record.clone());
            let machine = Machine::new(&sched, pipeline);
            let running = !running_scheduled(st, pipeline).is_empty();
            let catchup = record.ticks.backfill.as_ref().is_some_and(|q| q.catchup);
            match machine.next_queued(&mut record.ticks, running) {
                None if running => break,
                None => tracing::info!(pipeline, catchup, "ticks waiting their turn all started"),
                Some(Decision::Start { tick, id, backfill, .. }) => {
                    let outcome = if self.run_exists(st, &id)? {
                        None
                    } else {
                        let r = self.start_tick(st, &record.version, &sched, tick, &id, backfill);
                        if let Err(e) = &r {
                            tracing::error!(pipeline, tick = %tick, error = %e, "cannot start a backfill run");
                        } else {
                            started.push(id.clone());
                        }
                        Some(r.map_err(|e| e.to_string()))
                    };
                    machine.queued(&mut record.ticks, tick, id, outcome);
                }
            }
            self.store.put_schedule(&record)?;
            if let Some(s) = st.schedules.get_mut(pipeline) {
                s.record = record;
            }
        }
        Ok(started)
    }

    /// Pauses or resumes `pipeline`'s schedule. Ticks up to now are decided before a pause; a
    /// resume fires from now, and records the ticks that passed while paused as skipped.
    pub(crate) fn set_paused(
        &self,
        st: &mut State,
        pipeline: &str,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let Some(s) = st.schedules.get(pipeline) else { return Err(self.no_schedule(pipeline)) };
        if s.record.ticks.paused == paused {
            return Ok(());
        }
        if paused {
            self.fire_due(st, pipeline, now)?;
        }
        let Some(s) = st.schedules.get_mut(pipeline) else { return Err(self.no_schedule(pipeline)) };
        let mut record = s.record.clone();
        if paused {
            record.ticks.paused = true;
        } else {
            s.machine().resume(&mut record.ticks, now);
        }
        self.store.put_schedule(&record)?;
        s.record = record;
        s.next = None;
        tracing::info!(pipeline, paused, "schedule {}", if paused { "paused" } else { "resumed" });
        Ok(())
    }

    /// Creates the runs of `pipeline`'s ticks in `[from, to]` (texts as `weir backfill` takes
    /// them; `to` is capped at `now`), or with `dry_run` says what would happen.
    pub(crate) fn backfill(
        &self,
        st: &mut State,
        pipeline: &str,
        from: &str,
        to: &str,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<BackfillTick>, ApiError> {
        if !dry_run {
            // A queue whose runs have all ended is cleared by the next scheduler pass; do it
            // now, so a backfill asked for right after the last one finished is not refused.
            self.advance_backfill(st, pipeline)?;
        }
        let Some(s) = st.schedules.get(pipeline) else { return Err(self.no_schedule(pipeline)) };
        let (sched, mut record) = (s.schedule.clone(), s.record.clone());
        let machine = Machine::new(&sched, pipeline);
        let zone = sched.timezone;
        let from = schedule::parse_instant(from, zone, false).map_err(|e| ApiError::Invalid(format!("from: {e}")))?;
        let to = schedule::parse_instant(to, zone, true).map_err(|e| ApiError::Invalid(format!("to: {e}")))?.min(now);
        if from > to {
            return Err(ApiError::Invalid(format!(
                "from ({from}) is after to ({to}, or now when to is later): give a range in the past"
            )));
        }
        if let Some(q) = &record.ticks.backfill {
            return Err(ApiError::Precondition(format!(
                "{} of {pipeline} from {} to {} is still running one tick at a time; wait for it \
                 (`weir schedules` shows what is left)",
                if q.catchup { "a catch-up" } else { "a backfill" },
                instant(q.from),
                instant(q.to)
            )));
        }
        let ticks = schedule::ticks_between(&sched, from, to, MAX_BACKFILL).map_err(|_| {
            ApiError::Invalid(format!(
                "more than {MAX_BACKFILL} ticks of {} fall between {from} and {to}: backfill a narrower range",
                sched.cron
            ))
        })?;
        let ids: Vec<String> = ticks.iter().map(|t| schedule::run_id(pipeline, *t)).collect();
        let mut exists = Vec::with_capacity(ids.len());
        for id in &ids {
            exists.push(self.run_exists(st, id)?);
        }
        let mut started: Vec<String> = Vec::new();
        let one_at_a_time = sched.concurrency != Concurrency::Allow;
        if dry_run {
            let idle = running_scheduled(st, pipeline).is_empty();
            let fresh = ids.iter().zip(&exists).filter(|(_, e)| !**e).map(|(id, _)| id.clone());
            started = if one_at_a_time { fresh.take(usize::from(idle)).collect() } else { fresh.collect() };
        } else if one_at_a_time {
            if let (Some(first), Some(last)) = (ticks.first(), ticks.last()) {
                machine.queue(&mut record.ticks, *first, *last, false);
                self.store.put_schedule(&record)?;
                if let Some(s) = st.schedules.get_mut(pipeline) {
                    s.record = record;
                }
                started = self.advance_backfill(st, pipeline)?;
            }
        } else {
            for ((t, id), done) in ticks.iter().zip(&ids).zip(&exists) {
                if *done {
                    continue;
                }
                self.start_tick(st, &record.version, &sched, *t, id, true)?;
                machine.queued(&mut record.ticks, *t, id.clone(), Some(Ok(())));
                started.push(id.clone());
            }
            self.store.put_schedule(&record)?;
            if let Some(s) = st.schedules.get_mut(pipeline) {
                s.record = record;
            }
        }
        tracing::info!(pipeline, ticks = ticks.len(), started = started.len(), dry_run, "backfill");
        Ok(ticks
            .iter()
            .zip(ids)
            .zip(exists)
            .map(|((t, id), done)| {
                let outcome = if done {
                    BackfillOutcome::Exists
                } else if started.contains(&id) {
                    BackfillOutcome::Started
                } else {
                    BackfillOutcome::Queued
                };
                BackfillTick { at: millis(*t), run_id: id, outcome }
            })
            .collect())
    }

    pub(crate) fn no_schedule(&self, pipeline: &str) -> ApiError {
        match self.store.pipeline(pipeline) {
            Ok(Some(_)) if !self.scheduling => ApiError::Precondition(format!(
                "this engine does not fire schedules (`weir run`); use a `weir server` for {pipeline}'s schedule"
            )),
            Ok(Some(_)) => ApiError::NotFound(format!(
                "pipeline {pipeline} has no schedule: add `schedule:` to it and submit it again"
            )),
            Ok(None) => self.no_pipeline(pipeline),
            Err(e) => e.into(),
        }
    }

    /// The schedules asked for (`pipeline` empty: all), by pipeline name.
    pub(crate) fn schedule_views(&self, pipeline: &str, now: DateTime<Utc>) -> Result<Vec<ScheduleView>, ApiError> {
        let st = self.lock();
        if !pipeline.is_empty() && !st.schedules.contains_key(pipeline) {
            return Err(self.no_schedule(pipeline));
        }
        let mut out = Vec::new();
        for (name, s) in st.schedules.iter().filter(|(n, _)| pipeline.is_empty() || *n == pipeline) {
            let t = &s.record.ticks;
            let last_run_state = match &t.last_run {
                Some(id) => match st.runs.get(id) {
                    Some(live) => Some(live.record.state),
                    None => self.store.run(id).ok().flatten().map(|rec| rec.state),
                },
                None => None,
            };
            let backfill_left = t.backfill.as_ref().map_or(0, |q| {
                let after = instant(q.next) + chrono::Duration::milliseconds(1);
                schedule::ticks_between(&s.schedule, after, instant(q.to), MAX_BACKFILL).map_or(0, |t| t.len()) as u32
            });
            out.push(ScheduleView {
                pipeline: name.clone(),
                record: s.record.clone(),
                schedule: s.schedule.clone(),
                next_fires: schedule::next_fires(&s.schedule, now.max(instant(t.cursor)), 3)
                    .into_iter()
                    .map(millis)
                    .collect(),
                last_run_state,
                backfill_left,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    //! The scheduler against a real store in a temporary folder and instants passed in, so
    //! downtime, restarts and clocks that jump are exact. No worker runs: scheduled runs stay
    //! running, which is what the concurrency rules need.

    use super::*;
    use crate::store::PipelineVersion;
    use weir_core::run::RunState;

    /// An engine that fires schedules, on `dir`'s store.
    fn engine(dir: &std::path::Path) -> Engine {
        let mut e = crate::server::testkit::engine(dir);
        e.scheduling = true;
        e
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Stores `yaml` as the latest version of its pipeline and syncs its schedule at `now`.
    fn submit(e: &Engine, yaml: &str, now: &str) -> String {
        let parsed = weir_core::spec::load(yaml, &Default::default()).unwrap();
        let version = parsed.hash().to_string();
        let record = PipelineVersion {
            name: parsed.name().to_string(),
            yaml: yaml.to_string(),
            bundle_digest: None,
            submitted_at: e.clock.now(),
            file: None,
        };
        e.store.put_pipeline_version(&version, &record).unwrap();
        let mut st = e.lock();
        e.sync_schedule(&mut st, parsed.name(), &version, t(now)).unwrap();
        version
    }

    fn yaml(cron: &str, extra: &str) -> String {
        format!("name: p\nparams: {{rows: 1}}\nschedule:\n  cron: \"{cron}\"\n{extra}steps:\n  s: {{run: 'true'}}\n")
    }

    fn fire(e: &Engine, now: &str) {
        let mut st = e.lock();
        e.fire_schedules(&mut st, t(now));
    }

    /// Every run of `p`, by id, with its state.
    fn runs(e: &Engine) -> Vec<(String, RunState)> {
        let page = e.store.list_runs(&Default::default(), 1000, None).unwrap();
        let mut runs: Vec<_> = page
            .runs
            .into_iter()
            .filter_map(|l| match l {
                crate::store::Listed::Run(r) => Some((r.id, r.state)),
                _ => None,
            })
            .collect();
        runs.sort_by(|a, b| a.0.cmp(&b.0));
        runs
    }

    fn ids(e: &Engine) -> Vec<String> {
        runs(e).into_iter().map(|(id, _)| id).collect()
    }

    fn record(e: &Engine) -> ScheduleRecord {
        e.store.schedules().unwrap().pop().expect("a stored schedule")
    }

    fn ticks(e: &Engine) -> Ticks {
        record(e).ticks
    }

    #[test]
    fn a_tick_fires_once_and_a_clock_going_back_fires_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        submit(&e, &yaml("0 * * * *", "  params: {rows: 7}\n  concurrency: allow\n"), "2026-11-27T10:30:00Z");
        fire(&e, "2026-11-27T10:59:59Z");
        assert!(ids(&e).is_empty());
        fire(&e, "2026-11-27T11:00:00.200Z");
        fire(&e, "2026-11-27T11:00:01Z");
        assert_eq!(ids(&e), ["p-20261127-110000-cron"]);
        let run = e.store.run("p-20261127-110000-cron").unwrap().unwrap();
        assert_eq!(
            run.trigger,
            Trigger::Schedule {
                schedule: "0 * * * *".into(),
                at: Some(millis(t("2026-11-27T11:00:00Z"))),
                backfill: false
            }
        );
        // The clock jumps back an hour and a half, then forward again: 11:00 is not fired again.
        fire(&e, "2026-11-27T09:30:00Z");
        fire(&e, "2026-11-27T10:00:00.500Z");
        fire(&e, "2026-11-27T11:00:00.500Z");
        assert_eq!(ids(&e).len(), 1);
        fire(&e, "2026-11-27T12:00:00.100Z");
        assert_eq!(ids(&e), ["p-20261127-110000-cron", "p-20261127-120000-cron"]);
        let r = ticks(&e);
        assert_eq!(r.last_run.as_deref(), Some("p-20261127-120000-cron"));
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    }

    /// Down from 10:30 to 15:10 with an hourly schedule: ticks 11:00 to 15:00 were missed.
    fn restart_after_downtime(extra: &str) -> (Vec<String>, Ticks) {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = engine(dir.path());
            submit(&e, &yaml("0 * * * *", extra), "2026-11-27T10:00:00Z");
            fire(&e, "2026-11-27T10:30:00Z");
        }
        let e = engine(dir.path());
        e.start_schedules(t("2026-11-27T15:10:00Z")).unwrap();
        (ids(&e), ticks(&e))
    }

    #[test]
    fn after_downtime_catchup_false_starts_only_the_latest_tick() {
        let (ids, r) = restart_after_downtime("");
        assert_eq!(ids, ["p-20261127-150000-cron"]);
        assert_eq!(r.skipped.len(), 1);
        let s = &r.skipped[0];
        assert_eq!(
            (s.count, s.first, s.last),
            (4, millis(t("2026-11-27T11:00:00Z")), millis(t("2026-11-27T14:00:00Z")))
        );
        assert!(s.reason.contains("catchup: false"), "{}", s.reason);
    }

    #[test]
    fn after_downtime_catchup_true_starts_missed_ticks_oldest_first_up_to_max_catchup() {
        let (ids, r) = restart_after_downtime("  catchup: true\n  max_catchup: 3\n  concurrency: allow\n");
        assert_eq!(ids, ["p-20261127-110000-cron", "p-20261127-120000-cron", "p-20261127-130000-cron"]);
        let s = &r.skipped[0];
        assert_eq!((s.count, s.first), (2, millis(t("2026-11-27T14:00:00Z"))));
        assert!(s.reason.contains("max_catchup (3)"), "{}", s.reason);
        assert_eq!(r.last_run.as_deref(), Some("p-20261127-130000-cron"));
    }

    #[test]
    fn catching_up_under_forbid_runs_the_missed_ticks_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = engine(dir.path());
            submit(&e, &yaml("0 * * * *", "  catchup: true\n"), "2026-11-27T10:00:00Z");
        }
        let e = engine(dir.path());
        e.start_schedules(t("2026-11-27T13:10:00Z")).unwrap();
        let q = ticks(&e).backfill.expect("a catch-up queue");
        assert!(q.catchup);
        for (n, id) in ["p-20261127-110000-cron", "p-20261127-120000-cron", "p-20261127-130000-cron"].iter().enumerate()
        {
            fire(&e, "2026-11-27T13:10:01Z");
            assert_eq!(ids(&e).len(), n + 1, "one at a time: {:?}", runs(&e));
            let run = e.store.run(id).unwrap().unwrap();
            assert!(matches!(run.trigger, Trigger::Schedule { backfill: false, .. }));
            e.apply(&mut e.lock(), id, Event::Cancel, None).unwrap();
        }
        fire(&e, "2026-11-27T13:10:02Z");
        assert_eq!(ticks(&e).backfill, None);
        assert!(ticks(&e).skipped.is_empty());
    }

    #[test]
    fn a_crash_after_the_run_but_before_the_cursor_never_doubles_the_tick() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        submit(&e, &yaml("0 * * * *", ""), "2026-11-27T10:30:00Z");
        // The run of 11:00 was created, then the engine died before the cursor moved.
        {
            let mut st = e.lock();
            let s = st.schedules["p"].schedule.clone();
            let version = st.schedules["p"].record.version.clone();
            let tick = t("2026-11-27T11:00:00Z");
            e.start_tick(&mut st, &version, &s, tick, &schedule::run_id("p", tick), false).unwrap();
        }
        assert_eq!(ticks(&e).cursor, millis(t("2026-11-27T10:30:00Z")));
        drop(e);
        let e = engine(dir.path());
        e.start_schedules(t("2026-11-27T11:00:05Z")).unwrap();
        assert_eq!(ids(&e), ["p-20261127-110000-cron"]);
        // Down until 13:10 instead: 11:00 had its run, so only 12:00 is listed as skipped.
        drop(e);
        let e = engine(dir.path());
        let back = Ticks { cursor: millis(t("2026-11-27T10:30:00Z")), ..ticks(&e) };
        e.store.put_schedule(&ScheduleRecord { ticks: back, ..record(&e) }).unwrap();
        e.start_schedules(t("2026-11-27T13:10:00Z")).unwrap();
        assert_eq!(ids(&e), ["p-20261127-110000-cron", "p-20261127-130000-cron"]);
        let r = ticks(&e);
        assert_eq!(r.skipped.len(), 1);
        assert_eq!((r.skipped[0].count, r.skipped[0].first), (1, millis(t("2026-11-27T12:00:00Z"))));
    }

    #[test]
    fn forbid_skips_ticks_while_the_previous_run_runs_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        submit(&e, &yaml("* * * * * *", "  concurrency: forbid\n"), "2026-11-27T10:00:00Z");
        for s in 1..=4 {
            fire(&e, &format!("2026-11-27T10:00:0{s}.100Z"));
        }
        assert_eq!(ids(&e), ["p-20261127-100001-cron"]);
        let r = ticks(&e);
        assert_eq!(r.skipped.len(), 1, "consecutive skips for one reason are one entry: {:?}", r.skipped);
        assert_eq!(r.skipped[0].count, 3);
        assert!(r.skipped[0].reason.contains("forbid") && r.skipped[0].reason.contains("p-20261127-100001-cron"));
        // Once it finished, the next tick runs.
        {
            let mut st = e.lock();
            e.apply(&mut st, "p-20261127-100001-cron", Event::Cancel, None).unwrap();
        }
        fire(&e, "2026-11-27T10:00:05.100Z");
        assert_eq!(ids(&e).last().unwrap(), "p-20261127-100005-cron");
    }

    #[test]
    fn replace_cancels_the_previous_run_and_starts_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        submit(&e, &yaml("* * * * * *", "  concurrency: replace\n"), "2026-11-27T10:00:00Z");
        fire(&e, "2026-11-27T10:00:01.100Z");
        fire(&e, "2026-11-27T10:00:02.100Z");
        fire(&e, "2026-11-27T10:00:03.100Z");
        let states: Vec<RunState> = runs(&e).into_iter().map(|(_, s)| s).collect();
        assert_eq!(states, [RunState::Cancelled, RunState::Cancelled, RunState::Running]);
    }

    #[test]
    fn allow_runs_ticks_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        submit(&e, &yaml("* * * * * *", "  concurrency: allow\n"), "2026-11-27T10:00:00Z");
        fire(&e, "2026-11-27T10:00:01.100Z");
        fire(&e, "2026-11-27T10:00:02.100Z");
        let states: Vec<RunState> = runs(&e).into_iter().map(|(_, s)| s).collect();
        assert_eq!(states, [RunState::Running, RunState::Running]);
    }

    #[test]
    fn resubmitting_keeps_changes_or_removes_the_schedule_without_doubling_or_losing_ticks() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        submit(&e, &yaml("0 * * * *", "  concurrency: allow\n"), "2026-11-27T10:30:00Z");
        // Unchanged expression, new version (a param added), submitted just after 11:00 before
        // the scheduler's pass: 11:00 runs exactly once, from the sync.
        submit(&e, &yaml("0 * * * *", "  params: {rows: 2}\n  concurrency: allow\n"), "2026-11-27T11:00:00.050Z");
        fire(&e, "2026-11-27T11:00:00.100Z");
        assert_eq!(ids(&e), ["p-20261127-110000-cron"]);
        // Changed to every 15 minutes at 11:20: 11:15 is in the past and does not run; 11:30 does.
        submit(&e, &yaml("*/15 * * * *", "  concurrency: allow\n"), "2026-11-27T11:20:00Z");
        fire(&e, "2026-11-27T11:30:00.100Z");
        assert_eq!(ids(&e), ["p-20261127-110000-cron", "p-20261127-113000-cron"]);
        // Removed: nothing fires any more, and the record is gone.
        let removed = "name: p\nsteps:\n  s: {run: 'true'}\n";
        submit(&e, removed, "2026-11-27T11:40:00Z");
        fire(&e, "2026-11-27T12:00:00.100Z");
        assert_eq!(ids(&e).len(), 2);
        assert!(e.store.schedules().unwrap().is_empty());
    }

    #[test]
    fn paused_ticks_do_not_run_and_are_recorded_as_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        submit(&e, &yaml("0 * * * *", ""), "2026-11-27T10:30:00Z");
        e.set_paused(&mut e.lock(), "p", true, t("2026-11-27T10:40:00Z")).unwrap();
        fire(&e, "2026-11-27T12:00:00.100Z");
        assert!(ids(&e).is_empty());
        e.set_paused(&mut e.lock(), "p", false, t("2026-11-27T12:30:00Z")).unwrap();
        fire(&e, "2026-11-27T12:40:00Z");
        assert!(ids(&e).is_empty());
        fire(&e, "2026-11-27T13:00:00.100Z");
        assert_eq!(ids(&e), ["p-20261127-130000-cron"]);
        let r = ticks(&e);
        assert_eq!((r.skipped[0].count, r.skipped[0].reason.as_str()), (2, "paused"));
        assert!(matches!(
            e.set_paused(&mut e.lock(), "nope", true, t("2026-11-27T13:00:00Z")),
            Err(ApiError::NotFound(_))
        ));
    }

    fn outcomes(ticks: &[BackfillTick]) -> Vec<(String, BackfillOutcome)> {
        ticks.iter().map(|t| (t.run_id.clone(), t.outcome)).collect()
    }

    #[test]
    fn backfill_with_allow_starts_every_tick_once() {
        use BackfillOutcome::{Exists, Started};
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        submit(&e, &yaml("0 0 * * *", "  timezone: Europe/Berlin\n  concurrency: allow\n"), "2026-11-27T10:00:00Z");
        let now = t("2026-11-27T10:00:00Z");
        let dry = e.backfill(&mut e.lock(), "p", "2026-11-01", "2026-11-03", true, now).unwrap();
        assert!(ids(&e).is_empty(), "a dry run creates nothing");
        let got = e.backfill(&mut e.lock(), "p", "2026-11-01", "2026-11-03", false, now).unwrap();
        assert_eq!(outcomes(&dry), outcomes(&got));
        // Midnight in Berlin (UTC+1 in November) is 23:00 UTC the day before.
        assert_eq!(
            outcomes(&got),
            [
                ("p-20261031-230000-cron".to_string(), Started),
                ("p-20261101-230000-cron".to_string(), Started),
                ("p-20261102-230000-cron".to_string(), Started)
            ]
        );
        let run = e.store.run("p-20261031-230000-cron").unwrap().unwrap();
        assert!(matches!(run.trigger, Trigger::Schedule { backfill: true, .. }));
        let again = e.backfill(&mut e.lock(), "p", "2026-11-02", "2026-11-04T00:00", false, now).unwrap();
        assert_eq!(
            outcomes(&again),
            [
                ("p-20261101-230000-cron".to_string(), Exists),
                ("p-20261102-230000-cron".to_string(), Exists),
                ("p-20261103-230000-cron".to_string(), Started)
            ]
        );
        let err = e.backfill(&mut e.lock(), "p", "2020-01-01", "2026-11-01", false, now).unwrap_err();
        assert!(err.to_string().contains("narrower range"), "{err}");
        let err = e.backfill(&mut e.lock(), "p", "2026-11-05", "2026-11-01", false, now).unwrap_err();
        assert!(err.to_string().contains("after"), "{err}");
    }

    #[test]
    fn backfill_with_forbid_runs_one_tick_at_a_time() {
        use BackfillOutcome::{Queued, Started};
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        submit(&e, &yaml("0 0 * * *", "  concurrency: forbid\n"), "2026-11-27T10:00:00Z");
        let now = t("2026-11-27T10:00:00Z");
        let got = e.backfill(&mut e.lock(), "p", "2026-11-01", "2026-11-03", false, now).unwrap();
        let o: Vec<_> = outcomes(&got).into_iter().map(|(_, o)| o).collect();
        assert_eq!(o, [Started, Queued, Queued]);
        let err = e.backfill(&mut e.lock(), "p", "2026-11-05", "2026-11-06", false, now).unwrap_err();
        assert!(matches!(err, ApiError::Precondition(_)), "{err}");
        for (n, id) in ["p-20261101-000000-cron", "p-20261102-000000-cron", "p-20261103-000000-cron"].iter().enumerate()
        {
            fire(&e, "2026-11-27T10:00:01Z");
            assert_eq!(ids(&e).len(), n + 1, "one at a time: {:?}", runs(&e));
            let mut st = e.lock();
            e.apply(&mut st, id, Event::Cancel, None).unwrap();
        }
        // The last run ended and no scheduler pass has run since: a new backfill is still
        // accepted, because a queue with nothing left to start is no longer in the way.
        let got = e.backfill(&mut e.lock(), "p", "2026-11-05", "2026-11-05", false, now).unwrap();
        assert_eq!(outcomes(&got).into_iter().map(|(_, o)| o).collect::<Vec<_>>(), [Started]);
        assert_eq!(ids(&e).len(), 4);
        e.apply(&mut e.lock(), "p-20261105-000000-cron", Event::Cancel, None).unwrap();
        fire(&e, "2026-11-27T10:00:02Z");
        assert_eq!(ids(&e).len(), 4);
        assert_eq!(ticks(&e).backfill, None, "finished");
    }
}
