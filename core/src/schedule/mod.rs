//! When a pipeline's `schedule:` fires, as pure functions of the schedule and instants passed in:
//! the next fire times, which ticks were missed during downtime and which of them to start
//! (`catchup`, `max_catchup`), and the run id of a tick. No clock is read here; the engine's
//! scheduler (issue 5) asks with its own `now`, so every rule is tested against fixed instants.
//!
//! Ticks are computed in the schedule's IANA zone and returned in UTC. Daylight saving, in the
//! zone's local time:
//! - a time that does not exist (spring forward: 02:30 on the night clocks jump from 02:00 to
//!   03:00) fires once, at the next valid instant (03:00 local);
//! - a time that exists twice (fall back: 02:30 on the night clocks go from 03:00 back to 02:00)
//!   fires once, at its first occurrence.
//!
//! A tick's run id is derived from the pipeline and the tick's instant alone, so a scheduler that
//! crashes after starting a run and fires the same tick again gets the same id and finds the run.
//!
//! What a schedule does with its ticks (fire, skip, queue, replace, catch up) is the pure
//! [`Machine`] in `machine.rs`; the engine's scheduler only performs its decisions.

use chrono::{DateTime, TimeZone, Utc};

use crate::spec::Schedule;

mod machine;
pub use machine::{BackfillQueue, Decision, Machine, Outcome, Pass, Plan, Runs, SkippedTicks, Ticks, instant, millis};

/// The most missed ticks counted after downtime; beyond it they are reported as "more".
pub const MAX_COUNTED: usize = 100_000;

/// The next `n` fire instants strictly after `after`.
pub fn next_fires(schedule: &Schedule, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(n);
    let mut t = after;
    while out.len() < n {
        match next_after(schedule, t) {
            Some(next) => {
                out.push(next);
                t = next;
            }
            None => break,
        }
    }
    out
}

/// The first fire instant strictly after `t`, if any.
pub fn next_after(schedule: &Schedule, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = schedule.timezone.from_utc_datetime(&t.naive_utc());
    schedule.parsed.find_next_occurrence(&local, false).ok().map(|n| n.with_timezone(&Utc))
}

/// What to do about the ticks in `(last, now]` after downtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Missed {
    /// The ticks to start, oldest first.
    pub start: Vec<DateTime<Utc>>,
    /// The ticks not started, oldest first (at most [`MAX_COUNTED`] of them listed).
    pub skipped: Vec<DateTime<Utc>>,
    /// Whether more ticks were missed than [`MAX_COUNTED`] (none of the rest is listed).
    pub more: bool,
}

/// The ticks due in `(last, now]`: with `catchup: false` only the latest starts and the others
/// are skipped; with `catchup: true` every one starts, oldest first, up to `max_catchup`, and the
/// rest are skipped. `last = None` (a new schedule) starts nothing: a schedule fires from when it
/// is submitted, not from the epoch.
pub fn missed(schedule: &Schedule, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Missed {
    let Some(last) = last else { return Missed::default() };
    let mut due = Vec::new();
    let mut more = false;
    let mut t = last;
    while let Some(next) = next_after(schedule, t).filter(|n| *n <= now) {
        if due.len() == MAX_COUNTED {
            more = true;
            break;
        }
        due.push(next);
        t = next;
    }
    if !schedule.catchup {
        // Only the latest: found directly, so a per-second schedule after a month down does
        // not decide by walking millions of ticks.
        let latest = if more { latest_at_or_before(schedule, now) } else { due.pop() };
        return Missed { start: latest.into_iter().collect(), skipped: due, more };
    }
    let keep = (schedule.max_catchup as usize).min(due.len());
    let skipped = due.split_off(keep);
    Missed { start: due, skipped, more }
}

/// The latest fire instant at or before `t`.
fn latest_at_or_before(schedule: &Schedule, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = schedule.timezone.from_utc_datetime(&t.naive_utc());
    schedule.parsed.find_previous_occurrence(&local, true).ok().map(|p| p.with_timezone(&Utc))
}

/// The run id of the tick at `at`: `<pipeline>-<YYYYMMDD-HHMMSS>-cron` in UTC (second
/// resolution, as schedules are). The same tick always gets the same id, which never collides
/// with a manual run's (those end in four hex digits).
pub fn run_id(pipeline: &str, at: DateTime<Utc>) -> String {
    format!("{pipeline}-{}-cron", at.format("%Y%m%d-%H%M%S"))
}

/// The fire instants in `[from, to]`, oldest first; `Err(n)` when there are more than `cap`
/// (then `n` is `cap + 1`: counting stops there).
pub fn ticks_between(
    schedule: &Schedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cap: usize,
) -> Result<Vec<DateTime<Utc>>, usize> {
    let mut out = Vec::new();
    let mut t = from - chrono::Duration::milliseconds(1);
    while let Some(next) = next_after(schedule, t).filter(|n| *n <= to) {
        if out.len() == cap {
            return Err(cap + 1);
        }
        out.push(next);
        t = next;
    }
    Ok(out)
}

/// Reads an instant as people type it for `weir backfill`: RFC 3339 with an offset
/// (`2026-11-01T06:00:00Z`), or a local date and time in `zone` (`2026-11-01T06:00`,
/// `2026-11-01 06:00:00`), or a local date alone: its first instant, or with `end_of_day` its
/// last millisecond. A local time that falls in a daylight-saving gap is refused; one that
/// exists twice means its first occurrence.
pub fn parse_instant(text: &str, zone: chrono_tz::Tz, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    use chrono::{NaiveDate, NaiveDateTime};
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| (t, false))
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(|d| {
                let start = d.and_hms_opt(0, 0, 0).expect("midnight exists");
                if end_of_day { (start + chrono::Duration::days(1), true) } else { (start, false) }
            })
        });
    let Some((naive, before)) = local else {
        return Err(format!(
            "{text:?} is not a time: give RFC 3339 (2026-11-01T06:00:00Z) or a local date or date and time in {zone} \
             (2026-11-01, 2026-11-01T06:00)"
        ));
    };
    let at = zone
        .from_local_datetime(&naive)
        .earliest()
        .ok_or_else(|| format!("{text} does not exist in {zone}: the clocks skip it (daylight saving)"))?
        .with_timezone(&Utc);
    Ok(if before { at - chrono::Duration::milliseconds(1) } else { at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{self, Limits};

    #[test]
    fn instants_are_read_as_rfc3339_or_local_to_the_zone() {
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let p = |t, end| parse_instant(t, berlin, end).map(|t| t.to_rfc3339());
        assert_eq!(p("2026-11-01T06:00:00Z", false).unwrap(), "2026-11-01T06:00:00+00:00");
        assert_eq!(p("2026-11-01T06:00", false).unwrap(), "2026-11-01T05:00:00+00:00");
        assert_eq!(p("2026-07-01 06:00:30", false).unwrap(), "2026-07-01T04:00:30+00:00");
        assert_eq!(p("2026-11-01", false).unwrap(), "2026-10-31T23:00:00+00:00");
        assert_eq!(p("2026-11-01", true).unwrap(), "2026-11-01T22:59:59.999+00:00");
        assert!(p("2026-03-29T02:30", false).unwrap_err().contains("does not exist in Europe/Berlin"));
        assert!(p("yesterday", false).unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn ticks_between_is_inclusive_and_capped() {
        let s = schedule("0 0 * * *", "Europe/Berlin", "");
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let from = parse_instant("2026-11-01", berlin, false).unwrap();
        let to = parse_instant("2026-11-03", berlin, true).unwrap();
        let got: Vec<String> = ticks_between(&s, from, to, 10).unwrap().iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(got, ["2026-10-31T23:00:00+00:00", "2026-11-01T23:00:00+00:00", "2026-11-02T23:00:00+00:00"]);
        assert_eq!(ticks_between(&s, from, to, 2), Err(3));
        assert_eq!(ticks_between(&s, to, from, 2), Ok(vec![]));
    }

    fn schedule(cron: &str, zone: &str, extra: &str) -> Schedule {
        let yaml = format!(
            "name: p\nschedule:\n  cron: \"{cron}\"\n  timezone: {zone}\n{extra}steps:\n  s: {{run: 'true'}}\n"
        );
        let p = spec::load(&yaml, &Limits::default()).unwrap_or_else(|e| panic!("{yaml}: {e:?}"));
        p.schedule().cloned().expect("a schedule")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(s: &Schedule, after: &str, n: usize) -> Vec<String> {
        next_fires(s, utc(after), n).iter().map(|t| t.to_rfc3339()).collect()
    }

    #[test]
    fn berlin_spring_forward_fires_once_at_the_next_valid_instant() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that night.
        let s = schedule("30 2 * * *", "Europe/Berlin", "");
        assert_eq!(
            fires(&s, "2026-03-27T12:00:00Z", 4),
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // 03:00 CEST, the next valid instant, once
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
                "2026-03-31T00:30:00+00:00",
            ]
        );
    }

    #[test]
    fn berlin_fall_back_fires_an_ambiguous_time_once() {
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        let s = schedule("30 2 * * *", "Europe/Berlin", "");
        assert_eq!(
            fires(&s, "2026-10-23T12:00:00Z", 3),
            ["2026-10-24T00:30:00+00:00", "2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
        // Asked from between the two passes, the repeat does not fire either.
        assert_eq!(fires(&s, "2026-10-25T00:45:00Z", 1), ["2026-10-26T01:30:00+00:00"]);
    }

    #[test]
    fn new_york_transitions() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT. 2026-11-01: 02:00 EDT goes back to 01:00 EST.
        let s = schedule("30 2 * * *", "America/New_York", "");
        assert_eq!(
            fires(&s, "2026-03-07T12:00:00Z", 3),
            ["2026-03-08T07:00:00+00:00", "2026-03-09T06:30:00+00:00", "2026-03-10T06:30:00+00:00"]
        );
        let s = schedule("30 1 * * *", "America/New_York", "");
        assert_eq!(
            fires(&s, "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"] // 01:30 EDT once, then EST
        );
    }

    #[test]
    fn month_ends_and_29_february() {
        let s = schedule("0 0 31 * *", "UTC", "");
        assert_eq!(
            fires(&s, "2026-01-31T12:00:00Z", 3),
            ["2026-03-31T00:00:00+00:00", "2026-05-31T00:00:00+00:00", "2026-07-31T00:00:00+00:00"]
        );
        let s = schedule("0 12 L * *", "UTC", "");
        assert_eq!(fires(&s, "2028-01-31T13:00:00Z", 2), ["2028-02-29T12:00:00+00:00", "2028-03-31T12:00:00+00:00"]);
        let s = schedule("0 0 29 2 *", "UTC", "");
        assert_eq!(fires(&s, "2026-11-27T00:00:00Z", 2), ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]);
    }

    #[test]
    fn missed_ticks_follow_catchup() {
        let hourly = schedule("0 * * * *", "UTC", "  catchup: false\n");
        let m = missed(&hourly, Some(utc("2026-11-27T00:00:00Z")), utc("2026-11-27T05:30:00Z"));
        assert_eq!(m.start, [utc("2026-11-27T05:00:00Z")]);
        assert_eq!(m.skipped.len(), 4);
        assert!(!m.more);

        let catchup = schedule("0 * * * *", "UTC", "  catchup: true\n  max_catchup: 3\n");
        let m = missed(&catchup, Some(utc("2026-11-27T00:00:00Z")), utc("2026-11-27T05:30:00Z"));
        assert_eq!(m.start, [utc("2026-11-27T01:00:00Z"), utc("2026-11-27T02:00:00Z"), utc("2026-11-27T03:00:00Z")]);
        assert_eq!(m.skipped, [utc("2026-11-27T04:00:00Z"), utc("2026-11-27T05:00:00Z")]);

        // Nothing missed, and a new schedule starts nothing.
        assert_eq!(missed(&catchup, Some(utc("2026-11-27T05:00:00Z")), utc("2026-11-27T05:30:00Z")), Missed::default());
        assert_eq!(missed(&catchup, None, utc("2026-11-27T05:30:00Z")), Missed::default());
    }

    #[test]
    fn a_long_downtime_of_a_per_second_schedule_is_bounded() {
        let s = schedule("* * * * * *", "UTC", "  catchup: false\n");
        let m = missed(&s, Some(utc("2026-10-01T00:00:00Z")), utc("2026-11-27T00:00:00Z"));
        assert!(m.more);
        assert_eq!(m.skipped.len(), MAX_COUNTED);
        assert_eq!(m.start, [utc("2026-11-27T00:00:00Z")]);
    }

    #[test]
    fn a_tick_s_run_id_is_the_same_every_time() {
        let at = utc("2026-11-27T03:00:00Z");
        assert_eq!(run_id("ml-retrain", at), "ml-retrain-20261127-030000-cron");
        assert_eq!(run_id("ml-retrain", at), run_id("ml-retrain", utc("2026-11-27T03:00:00Z")));
        assert_ne!(run_id("ml-retrain", at), run_id("ml-retrain", utc("2026-11-27T03:00:01Z")));
    }
}
