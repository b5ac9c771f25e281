//! The schedule machine, data-driven: each case is a schedule, its cursor, `now`, what the
//! caller knows of the runs and how the starts went; the expectation is the decisions and the
//! ticks after.

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
