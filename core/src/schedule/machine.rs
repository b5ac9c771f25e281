//! The schedule machine: what a schedule does with its ticks, as the run machine does for a
//! run's steps. Given a schedule's [`Ticks`] (its cursor, last run, skipped ticks, queue), the
//! instant `now` and what the caller knows of the pipeline's runs ([`Runs`]), it decides which
//! ticks fire, which are found already started, which are skipped (and why: `catchup`, `max_catchup`,
//! `concurrency: forbid`, a pause) and which are queued to run one at a time; the caller performs
//! the starts and cancels and reports how each went, and the machine records the outcome. It
//! reads no clock and no store, so every rule is tested against fixed instants and runs.
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
mod tests {
    //! Data-driven: each case is a schedule, its cursor, `now`, what the caller knows of the
    //! runs and how the starts went; the expectation is the decisions and the ticks after.

    use super::*;
    use crate::spec::{self, Limits};

    fn schedule(extra: &str) -> Schedule {
        let yaml = format!("name: p\nschedule:\n  cron: \"0 * * * *\"\n{extra}steps:\n  s: {{run: 'true'}}\n");
        let p = spec::load(&yaml, &Limits::default()).unwrap_or_else(|e| panic!("{yaml}: {e:?}"));
        p.schedule().cloned().expect("a schedule")
    }

    fn at(hm: &str) -> DateTime<Utc> {
        format!("2026-11-27T{hm}:00Z").parse().unwrap()
    }

    /// `HH:MM` of a stored instant.
    fn hm(m: Millis) -> String {
        instant(m).format("%H:%M").to_string()
    }

    /// The decisions, then the ticks after settling, one line each.
    fn render(decisions: &[Decision], ticks: &Ticks) -> Vec<String> {
        let mut out: Vec<String> = decisions
            .iter()
            .map(|Decision::Start { tick, id, cancel, .. }| {
                let cancel = if cancel.is_empty() { String::new() } else { format!(" replacing {}", cancel.join(",")) };
                format!("start {} {id}{cancel}", tick.format("%H:%M"))
            })
            .collect();
        out.push(format!("cursor {}", hm(ticks.cursor)));
        if let (Some(t), Some(r)) = (ticks.last_tick, &ticks.last_run) {
            out.push(format!("last {} {r}", hm(t)));
        }
        for k in &ticks.skipped {
            out.push(format!("skipped {}..{} x{}: {}", hm(k.first), hm(k.last), k.count, k.reason));
        }
        if let Some(q) = &ticks.backfill {
            out.push(format!("queue {}..{} catchup={}", hm(q.from), hm(q.to), q.catchup));
        }
        out
    }

    struct Case {
        name: &'static str,
        extra: &'static str,
        cursor: &'static str,
        now: &'static str,
        existing: &'static [&'static str],
        running: &'static [&'static str],
        failed: &'static [usize],
        want: &'static [&'static str],
    }

    const CASES: &[Case] = &[
        Case {
            name: "nothing due before the next tick",
            extra: "",
            cursor: "10:00",
            now: "10:59",
            existing: &[],
            running: &[],
            failed: &[],
            want: &["cursor 10:59"],
        },
        Case {
            name: "a due tick starts",
            extra: "",
            cursor: "10:30",
            now: "11:00",
            existing: &[],
            running: &[],
            failed: &[],
            want: &["start 11:00 p-20261127-110000-cron", "cursor 11:00", "last 11:00 p-20261127-110000-cron"],
        },
        Case {
            name: "catchup false: only the latest after downtime, the rest skipped",
            extra: "",
            cursor: "10:30",
            now: "13:10",
            existing: &[],
            running: &[],
            failed: &[],
            want: &[
                "start 13:00 p-20261127-130000-cron",
                "cursor 13:10",
                "last 13:00 p-20261127-130000-cron",
                "skipped 11:00..12:00 x2: missed while the server was down or behind; catchup: false runs only the latest",
            ],
        },
        Case {
            name: "catchup true under allow: every missed tick up to max_catchup, oldest first",
            extra: "  catchup: true\n  max_catchup: 2\n  concurrency: allow\n",
            cursor: "10:30",
            now: "13:10",
            existing: &[],
            running: &[],
            failed: &[],
            want: &[
                "start 11:00 p-20261127-110000-cron",
                "start 12:00 p-20261127-120000-cron",
                "cursor 13:10",
                "last 12:00 p-20261127-120000-cron",
                "skipped 13:00..13:00 x1: more ticks were missed than max_catchup (2) lets run",
            ],
        },
        Case {
            name: "catchup true under forbid: the missed ticks queue to run one at a time",
            extra: "  catchup: true\n",
            cursor: "10:30",
            now: "13:10",
            existing: &[],
            running: &[],
            failed: &[],
            want: &["cursor 13:10", "queue 11:00..13:00 catchup=true"],
        },
        Case {
            name: "forbid skips a tick while a scheduled run runs, and says which",
            extra: "",
            cursor: "10:30",
            now: "11:00",
            existing: &[],
            running: &["p-20261127-100000-cron"],
            failed: &[],
            want: &[
                "cursor 11:00",
                "skipped 11:00..11:00 x1: concurrency: forbid, and the scheduled run p-20261127-100000-cron was still running",
            ],
        },
        Case {
            name: "replace cancels the running run and starts the tick",
            extra: "  concurrency: replace\n",
            cursor: "10:30",
            now: "11:00",
            existing: &[],
            running: &["p-20261127-100000-cron"],
            failed: &[],
            want: &[
                "start 11:00 p-20261127-110000-cron replacing p-20261127-100000-cron",
                "cursor 11:00",
                "last 11:00 p-20261127-110000-cron",
            ],
        },
        Case {
            name: "allow runs side by side",
            extra: "  concurrency: allow\n",
            cursor: "10:30",
            now: "11:00",
            existing: &[],
            running: &["p-20261127-100000-cron"],
            failed: &[],
            want: &["start 11:00 p-20261127-110000-cron", "cursor 11:00", "last 11:00 p-20261127-110000-cron"],
        },
        Case {
            name: "a tick whose run exists (started before a crash) is not started again",
            extra: "",
            cursor: "10:30",
            now: "11:00",
            existing: &["p-20261127-110000-cron"],
            running: &["p-20261127-110000-cron"],
            failed: &[],
            want: &["cursor 11:00", "last 11:00 p-20261127-110000-cron"],
        },
        Case {
            name: "the oldest missed tick found started is not listed as skipped",
            extra: "",
            cursor: "10:30",
            now: "13:10",
            existing: &["p-20261127-110000-cron"],
            running: &[],
            failed: &[],
            want: &[
                "start 13:00 p-20261127-130000-cron",
                "cursor 13:10",
                "last 13:00 p-20261127-130000-cron",
                "skipped 12:00..12:00 x1: missed while the server was down or behind; catchup: false runs only the latest",
            ],
        },
        Case {
            name: "a start that fails is recorded as a skipped tick with why",
            extra: "",
            cursor: "10:30",
            now: "11:00",
            existing: &[],
            running: &[],
            failed: &[0],
            want: &[
                "start 11:00 p-20261127-110000-cron",
                "cursor 11:00",
                "skipped 11:00..11:00 x1: could not start: disk full",
            ],
        },
    ];

    #[test]
    fn each_pass_decides_every_due_tick() {
        for case in CASES {
            let sched = schedule(case.extra);
            let m = Machine::new(&sched, "p");
            let mut ticks = Ticks::new(at(case.cursor));
            let now = at(case.now);
            let pass = m.pass(&ticks, now);
            let runs = Runs {
                existing: case.existing.iter().map(|s| s.to_string()).collect(),
                running: case.running.iter().map(|s| s.to_string()).collect(),
            };
            let plan = m.decide(&ticks, pass, &runs);
            let decisions = plan.decisions().to_vec();
            let outcomes: Vec<Outcome> = (0..decisions.len())
                .map(|i| if case.failed.contains(&i) { Err("disk full".into()) } else { Ok(()) })
                .collect();
            m.settle(&mut ticks, plan, &outcomes);
            assert_eq!(render(&decisions, &ticks), case.want, "{}", case.name);
        }
    }

    #[test]
    fn due_only_past_the_cursor_and_the_next_tick_and_never_while_paused() {
        let sched = schedule("");
        let m = Machine::new(&sched, "p");
        let mut ticks = Ticks::new(at("10:30"));
        let next = next_after(&sched, at("10:30"));
        assert!(!m.due(&ticks, next, at("10:59")));
        assert!(m.due(&ticks, next, at("11:00")));
        assert!(!m.due(&ticks, next, at("10:00")), "a clock gone back fires nothing");
        ticks.paused = true;
        assert!(!m.due(&ticks, next, at("12:00")));
    }

    #[test]
    fn a_queue_hands_out_one_tick_at_a_time_while_nothing_runs() {
        let sched = schedule("  catchup: true\n");
        let m = Machine::new(&sched, "p");
        let mut ticks = Ticks::new(at("10:30"));
        m.queue(&mut ticks, at("11:00"), at("12:00"), true);
        assert_eq!(m.next_queued(&mut ticks, true), None, "a scheduled run runs: wait");
        let Some(Decision::Start { tick, id, backfill, .. }) = m.next_queued(&mut ticks, false) else { panic!() };
        assert_eq!((tick, id.as_str(), backfill), (at("11:00"), "p-20261127-110000-cron", false));
        m.queued(&mut ticks, tick, id, Some(Ok(())));
        let Some(Decision::Start { tick, id, .. }) = m.next_queued(&mut ticks, false) else { panic!() };
        assert_eq!(tick, at("12:00"));
        m.queued(&mut ticks, tick, id, Some(Err("no room".into())));
        assert_eq!(m.next_queued(&mut ticks, false), None, "the queue is done");
        assert_eq!(ticks.backfill, None);
        assert_eq!(
            render(&[], &ticks)[1..],
            ["last 11:00 p-20261127-110000-cron", "skipped 12:00..12:00 x1: backfill could not start: no room"]
        );
    }

    #[test]
    fn a_resume_records_the_paused_ticks_as_skipped_and_fires_from_now() {
        let sched = schedule("");
        let m = Machine::new(&sched, "p");
        let mut ticks = Ticks { paused: true, ..Ticks::new(at("10:30")) };
        m.resume(&mut ticks, at("13:10"));
        assert!(!ticks.paused);
        assert_eq!(render(&[], &ticks), ["cursor 13:10", "skipped 11:00..13:00 x3: paused"]);
        // A changed expression fires from now too, never from an older cursor.
        m.changed(&mut ticks, at("12:00"));
        assert_eq!(hm(ticks.cursor), "13:10");
    }

    #[test]
    fn consecutive_skips_for_one_reason_merge_and_the_list_is_capped() {
        let sched = schedule("");
        let m = Machine::new(&sched, "p");
        let mut ticks = Ticks::new(at("00:00"));
        m.skip(&mut ticks, one_tick(at("01:00"), "x".into()));
        m.skip(&mut ticks, one_tick(at("02:00"), "x".into()));
        assert_eq!(ticks.skipped.len(), 1, "merged: {:?}", ticks.skipped);
        assert_eq!(ticks.skipped[0].count, 2);
        for h in 0..30 {
            ticks.skip(SkippedTicks { first: Millis(h), last: Millis(h), count: 1, reason: format!("r{h}") });
        }
        assert_eq!(ticks.skipped.len(), Ticks::MAX_SKIPPED);
        assert_eq!(ticks.skipped.last().unwrap().reason, "r29", "the newest are kept");
    }
}
