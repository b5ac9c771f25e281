//! The schedule machine: what a schedule does with its ticks, as the run machine does for a
//! run's steps. Given a schedule's [`Ticks`] (its cursor, last run, skipped ticks, queue), the
//! instant `now` and what the caller knows of the pipeline's runs ([`Runs`]), it decides which
//! ticks fire, which are found already started, which are skipped (and why: `catchup`,
//! `max_catchup`, `concurrency: forbid`, a pause) and which are queued to run one at a time;
//! the caller performs the starts and cancels and reports how each went, and the machine
//! records the outcome. It reads no clock and no store, so every rule is tested against fixed
//! instants and runs.
//!
//! One pass over the ticks due at `now` is [`Machine::pass`] (the ticks in `(cursor, now]`),
//! [`Pass::candidates`] (the run ids the caller looks up), [`Machine::decide`] (the
//! [`Decision`]s), then [`Machine::settle`] with the outcomes, which moves the cursor to `now`.
//! Ticks waiting in a queue (a one-at-a-time backfill or catch-up) come out one by one from
//! [`Machine::next_queued`] while no scheduled run of the pipeline runs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Missed, missed, next_after, run_id, ticks_between};
use crate::run::Millis;
use crate::spec::{Concurrency, Schedule};

/// What a schedule remembers between passes (stored by the caller with the schedule).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticks {
    /// Every tick at or before this instant has been decided (started, found already started,
    /// or skipped); the next tick to decide is the first one after it.
    pub cursor: Millis,
    /// The last tick that started a run, and that run.
    pub last_tick: Option<Millis>,
    pub last_run: Option<String>,
    pub paused: bool,
    /// Ticks that did not run, newest last; at most [`Ticks::MAX_SKIPPED`] entries.
    pub skipped: Vec<SkippedTicks>,
    /// Ticks running one at a time (`concurrency: forbid` or `replace`): a backfill, or a
    /// catch-up after downtime.
    pub backfill: Option<BackfillQueue>,
}

/// One or more consecutive ticks that did not run, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedTicks {
    pub first: Millis,
    pub last: Millis,
    pub count: u64,
    pub reason: String,
}

/// Ticks waiting to run one at a time (`concurrency: forbid` or `replace`): those after `next`
/// and at or before `to`, of a backfill or of a catch-up after downtime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillQueue {
    pub from: Millis,
    pub to: Millis,
    pub next: Millis,
    /// Missed ticks caught up after downtime (`catchup: true`) rather than a backfill.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catchup: bool,
}

impl Ticks {
    pub const MAX_SKIPPED: usize = 20;

    /// A new schedule's ticks: it fires from `now`, not from the epoch.
    pub fn new(now: DateTime<Utc>) -> Ticks {
        Ticks { cursor: millis(now), ..Ticks::default() }
    }

    /// Records skipped ticks, dropping the oldest entries beyond [`Self::MAX_SKIPPED`].
    pub fn skip(&mut self, entry: SkippedTicks) {
        self.skipped.push(entry);
        let over = self.skipped.len().saturating_sub(Self::MAX_SKIPPED);
        self.skipped.drain(..over);
    }
}

/// What the caller knows of the pipeline's runs when it asks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Runs {
    /// Which of the run ids asked about ([`Pass::candidates`]) exist already.
    pub existing: std::collections::BTreeSet<String>,
    /// The pipeline's scheduled runs that have not finished, in id (tick) order.
    pub running: Vec<String>,
}

/// What the caller must do for one tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Cancel the scheduled runs `cancel` (`concurrency: replace`), then start run `id` for the
    /// tick at `tick`; `backfill` for a run a backfill asked for.
    Start { tick: DateTime<Utc>, id: String, cancel: Vec<String>, backfill: bool },
}

/// How a tick's start went: `Err` carries why it could not start.
pub type Outcome = Result<(), String>;

/// The ticks due at `now`, before anything is decided about them.
#[derive(Clone, Debug)]
pub struct Pass {
    now: DateTime<Utc>,
    missed: Missed,
}

impl Pass {
    /// The run ids the caller must look up (into [`Runs::existing`]) before [`Machine::decide`].
    pub fn candidates(&self, pipeline: &str) -> Vec<String> {
        self.missed.start.iter().chain(self.missed.skipped.first()).map(|t| run_id(pipeline, *t)).collect()
    }
}

/// What [`Machine::decide`] decided, to be [settled](Machine::settle) with the outcomes of its
/// [`Plan::decisions`].
#[derive(Clone, Debug)]
pub struct Plan {
    now: DateTime<Utc>,
    /// The oldest missed tick's run was found started (before a crash): it counts as run.
    found: Option<(DateTime<Utc>, String)>,
    /// The missed ticks skipped, as one entry; recorded before the ticks that run without
    /// `catchup`, after them with it (entries stay in tick order).
    skipped: Option<(SkippedTicks, bool)>,
    verdicts: Vec<(DateTime<Utc>, Verdict)>,
    queue: Option<BackfillQueue>,
    decisions: Vec<Decision>,
}

impl Plan {
    /// The starts the caller performs, in order; [`Machine::settle`] takes one outcome each.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }
}

#[derive(Clone, Debug)]
enum Verdict {
    Start(String),
    Exists(String),
    Skip(String),
}

/// The rules of one pipeline's schedule.
#[derive(Clone, Copy, Debug)]
pub struct Machine<'a> {
    pub schedule: &'a Schedule,
    pub pipeline: &'a str,
}

impl<'a> Machine<'a> {
    pub fn new(schedule: &'a Schedule, pipeline: &'a str) -> Machine<'a> {
        Machine { schedule, pipeline }
    }

    /// Whether a tick is due at `now`: not paused, and the first tick after the cursor
    /// (`next`, from [`next_after`] on the cursor) has come. A clock that went back fires
    /// nothing until it passes the cursor again.
    pub fn due(&self, ticks: &Ticks, next: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        !ticks.paused && now > instant(ticks.cursor) && next.is_some_and(|n| n <= now)
    }

    /// The ticks in `(cursor, now]`: those to start by `catchup` and `max_catchup`, and the rest.
    pub fn pass(&self, ticks: &Ticks, now: DateTime<Utc>) -> Pass {
        Pass { now, missed: missed(self.schedule, Some(instant(ticks.cursor)), now) }
    }

    /// Decides every tick of `pass`: the oldest missed one found started counts as run; the
    /// ones to start start, are found started, or are skipped by `concurrency`; under forbid
    /// or replace, several missed ticks caught up queue to run one at a time instead.
    pub fn decide(&self, ticks: &Ticks, pass: Pass, runs: &Runs) -> Plan {
        let Pass { now, missed } = pass;
        let sched = self.schedule;
        let mut skipped = missed.skipped;
        let mut found = None;
        if let Some(first) = skipped.first().copied() {
            let id = run_id(self.pipeline, first);
            if runs.existing.contains(&id) {
                skipped.remove(0);
                found = Some((first, id));
            }
        }
        let skipped = (!skipped.is_empty()).then(|| {
            let more = if missed.more { "at least " } else { "" };
            let reason = if sched.catchup {
                format!("{more}more ticks were missed than max_catchup ({}) lets run", sched.max_catchup)
            } else {
                "missed while the server was down or behind; catchup: false runs only the latest".to_string()
            };
            let entry = SkippedTicks {
                first: millis(skipped[0]),
                last: millis(skipped[skipped.len() - 1]),
                count: skipped.len() as u64,
                reason,
            };
            (entry, sched.catchup)
        });
        let mut start = missed.start;
        let mut queue = None;
        if sched.catchup && sched.concurrency != Concurrency::Allow && start.len() > 1 && ticks.backfill.is_none() {
            let (first, last) = (start[0], start[start.len() - 1]);
            queue = Some(BackfillQueue {
                from: millis(first),
                to: millis(last),
                next: Millis(millis(first).0.saturating_sub(1)),
                catchup: true,
            });
            start.clear();
        }
        // The runs started in this pass count as running for the ticks after them.
        let mut running = runs.running.clone();
        let mut verdicts = Vec::new();
        let mut decisions = Vec::new();
        for t in start {
            let id = run_id(self.pipeline, t);
            if runs.existing.contains(&id) {
                verdicts.push((t, Verdict::Exists(id)));
                continue;
            }
            let cancel = match sched.concurrency {
                Concurrency::Forbid if !running.is_empty() => {
                    let reason =
                        format!("concurrency: forbid, and the scheduled run {} was still running", running.join(", "));
                    verdicts.push((t, Verdict::Skip(reason)));
                    continue;
                }
                Concurrency::Replace => std::mem::take(&mut running),
                _ => Vec::new(),
            };
            running.push(id.clone());
            decisions.push(Decision::Start { tick: t, id: id.clone(), cancel, backfill: false });
            verdicts.push((t, Verdict::Start(id)));
        }
        Plan { now, found, skipped, verdicts, queue, decisions }
    }

    /// Records what became of `plan`'s ticks (`outcomes`: one per decision, in order) and
    /// moves the cursor to the pass's `now`.
    pub fn settle(&self, ticks: &mut Ticks, plan: Plan, outcomes: &[Outcome]) {
        let Plan { now, found, skipped, verdicts, queue, .. } = plan;
        if let Some((t, id)) = found {
            ticks.last_tick = Some(millis(t));
            ticks.last_run = Some(id);
        }
        if let Some((entry, false)) = &skipped {
            self.skip(ticks, entry.clone());
        }
        if queue.is_some() {
            ticks.backfill = queue;
        }
        let mut outcomes = outcomes.iter();
        for (t, verdict) in verdicts {
            match verdict {
                Verdict::Start(id) => match outcomes.next() {
                    Some(Err(e)) => self.skip(ticks, one_tick(t, format!("could not start: {e}"))),
                    _ => {
                        ticks.last_tick = Some(millis(t));
                        ticks.last_run = Some(id);
                    }
                },
                Verdict::Exists(id) => {
                    ticks.last_tick = Some(millis(t));
                    ticks.last_run = Some(id);
                }
                Verdict::Skip(reason) => self.skip(ticks, one_tick(t, reason)),
            }
        }
        if let Some((entry, true)) = skipped {
            self.skip(ticks, entry);
        }
        ticks.cursor = millis(now);
    }

    /// The schedule's expression or zone changed: it fires from `now`.
    pub fn changed(&self, ticks: &mut Ticks, now: DateTime<Utc>) {
        ticks.cursor = ticks.cursor.max(millis(now));
    }

    /// Resumes a paused schedule at `now`: the ticks that passed while paused are recorded as
    /// skipped, and it fires from `now`. (Pausing decides the ticks up to now first: the caller
    /// runs a pass before setting `paused`.)
    pub fn resume(&self, ticks: &mut Ticks, now: DateTime<Utc>) {
        ticks.paused = false;
        let from = instant(ticks.cursor) + chrono::Duration::milliseconds(1);
        let (passed, more) = match ticks_between(self.schedule, from, now, super::MAX_COUNTED) {
            Ok(t) => (t, ""),
            Err(_) => (Vec::new(), "at least "),
        };
        if let (Some(first), Some(last)) = (passed.first(), passed.last()) {
            let reason = format!("{more}paused");
            let entry = SkippedTicks { first: millis(*first), last: millis(*last), count: passed.len() as u64, reason };
            self.skip(ticks, entry);
        }
        ticks.cursor = ticks.cursor.max(millis(now));
    }

    /// Queues the ticks `first..=last` (of a backfill, or caught up) to run one at a time.
    pub fn queue(&self, ticks: &mut Ticks, first: DateTime<Utc>, last: DateTime<Utc>, catchup: bool) {
        ticks.backfill = Some(BackfillQueue {
            from: millis(first),
            to: millis(last),
            next: Millis(millis(first).0.saturating_sub(1)),
            catchup,
        });
    }

    /// The next queued tick to start, when the queue has one and no scheduled run of the
    /// pipeline runs (`running`); takes it off the queue, and clears an emptied queue. The
    /// caller checks the run does not exist, starts it and reports with [`Machine::queued`].
    pub fn next_queued(&self, ticks: &mut Ticks, running: bool) -> Option<Decision> {
        let queue = ticks.backfill.clone()?;
        if running {
            return None;
        }
        match next_after(self.schedule, instant(queue.next)).filter(|t| *t <= instant(queue.to)) {
            None => {
                ticks.backfill = None;
                None
            }
            Some(t) => {
                ticks.backfill = Some(BackfillQueue { next: millis(t), ..queue });
                let id = run_id(self.pipeline, t);
                Some(Decision::Start { tick: t, id, cancel: Vec::new(), backfill: !queue.catchup })
            }
        }
    }

    /// Records how a start went: a tick of a queue ([`Machine::next_queued`]) or a backfill.
    /// `None`: its run existed already, which changes nothing.
    pub fn queued(&self, ticks: &mut Ticks, tick: DateTime<Utc>, id: String, outcome: Option<Outcome>) {
        match outcome {
            Some(Ok(())) => {
                ticks.last_tick = Some(millis(tick));
                ticks.last_run = Some(id);
            }
            Some(Err(e)) => self.skip(ticks, one_tick(tick, format!("backfill could not start: {e}"))),
            None => {}
        }
    }

    /// Adds skipped ticks, merged into the newest entry when they directly follow it for the
    /// same reason (a forbidden per-second schedule makes one entry, not one per second).
    fn skip(&self, ticks: &mut Ticks, entry: SkippedTicks) {
        if let Some(last) = ticks.skipped.last_mut()
            && last.reason == entry.reason
            && next_after(self.schedule, instant(last.last)).is_some_and(|n| millis(n) == entry.first)
        {
            last.last = entry.last;
            last.count += entry.count;
            return;
        }
        ticks.skip(entry);
    }
}

fn one_tick(t: DateTime<Utc>, reason: String) -> SkippedTicks {
    SkippedTicks { first: millis(t), last: millis(t), count: 1, reason }
}

/// A stored instant as a UTC time.
pub fn instant(m: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(m.0).unwrap_or(i64::MAX)).unwrap_or_default()
}

/// A UTC time as a stored instant.
pub fn millis(t: DateTime<Utc>) -> Millis {
    Millis(u64::try_from(t.timestamp_millis()).unwrap_or(0))
}

#[cfg(test)]
mod tests;
