//! How the client commands and `weir run` show pipelines, runs and their progress: plain-text
//! tables, human durations and UTC times, the per-event lines of a followed run, the live block
//! redrawn on a terminal, and the closing summary of a run.
//!
//! Pure: every function takes what it shows, the current time included (milliseconds since the
//! Unix epoch), and returns text. Nothing here reads the clock, the terminal or the network, so
//! the tests compare exact strings; callers decide where the text goes and whether to colour it.

pub mod approvals;
pub mod live_metrics;
pub mod tracking;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use weir_engine::api::convert as wire;
use weir_proto::v1::{self, GetRunResponse, PipelineSummary, Run, RunEvent, RunState, StepState, run_event::Kind};

/// Milliseconds since the Unix epoch of a wire timestamp; `None` when unset or before 1970.
pub fn millis(t: Option<&prost_types::Timestamp>) -> Option<u64> {
    weir_engine::api::convert::from_timestamp(t).map(|m| m.0)
}

/// A duration in milliseconds as people read it: `850ms`, `12.3s`, `4m05s`, `1h02m`.
/// Each form truncates, so a value never shows as the next unit's worth (`59.99s` is `59.9s`).
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", ms / 1000, ms % 1000 / 100),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// The time of day in UTC: `12:00:01`.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

/// The date and time in UTC: `2026-11-27 12:00:01`.
pub fn datetime(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map_or_else(|| format!("@{ms}ms"), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// The lowercase name of a step state as the wire carries it (`running`).
pub fn step_state(s: i32) -> &'static str {
    StepState::try_from(s).ok().and_then(wire::from_step_state).map_or("unknown", |s| s.as_str())
}

/// The lowercase name of a run state as the wire carries it (`queued`).
pub fn run_state(s: i32) -> &'static str {
    RunState::try_from(s).ok().and_then(wire::from_run_state).map_or("unknown", |s| s.as_str())
}

/// Whether a run in this state is over.
pub fn run_is_terminal(s: RunState) -> bool {
    matches!(s, RunState::Succeeded | RunState::Failed | RunState::Cancelled)
}

fn step_is_terminal(s: StepState) -> bool {
    matches!(
        s,
        StepState::Succeeded | StepState::Failed | StepState::Skipped | StepState::Cancelled | StepState::Cached
    )
}

/// The first `n` characters of a version hash, for tables.
pub fn short(hash: &str) -> &str {
    hash.char_indices().nth(12).map_or(hash, |(i, _)| &hash[..i])
}

/// ANSI colour, or nothing when `color` is off (NO_COLOR, not a terminal).
fn paint(text: &str, code: &str, color: bool) -> String {
    if color && !code.is_empty() { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
}

fn state_color(state: &str) -> &'static str {
    match state {
        "succeeded" => "32",
        "failed" => "31",
        "running" => "36",
        "skipped" | "cancelled" => "33",
        "cached" => "34",
        "awaiting_approval" => "35",
        _ => "",
    }
}

/// A plain-text table: a header row, columns two spaces apart and as wide as their widest cell,
/// no trailing spaces. Newlines inside a cell become spaces so a row stays one line.
#[derive(Debug, Clone)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|h| h.to_string()).collect()] }
    }

    /// Adds a row; missing cells are empty.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row.into_iter().map(|c| c.replace(['\n', '\r'], " ")).collect());
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `weir pipelines`: NAME VERSION VERSIONS SUBMITTED SCHEDULE.
pub fn pipelines_table(pipelines: &[PipelineSummary]) -> String {
    let mut t = Table::new(&["NAME", "VERSION", "VERSIONS", "SUBMITTED", "SCHEDULE"]);
    for p in pipelines {
        t.push(vec![
            p.name.clone(),
            short(&p.latest_version).to_string(),
            p.version_count.to_string(),
            millis(p.submitted_at.as_ref()).map_or_else(|| "-".into(), datetime),
            if p.schedule.is_empty() { "-".into() } else { p.schedule.clone() },
        ]);
    }
    t.render()
}

/// How long a run or step took, or has been going at `now`; `-` before it started.
fn span(started: Option<&prost_types::Timestamp>, finished: Option<&prost_types::Timestamp>, now: u64) -> String {
    match (millis(started), millis(finished)) {
        (Some(s), Some(f)) => duration(f.saturating_sub(s)),
        (Some(s), None) => duration(now.saturating_sub(s)),
        _ => "-".into(),
    }
}

/// `weir runs`: RUN PIPELINE STATE STEPS CREATED DURATION.
pub fn runs_table(runs: &[Run], now: u64) -> String {
    let mut t = Table::new(&["RUN", "PIPELINE", "STATE", "STEPS", "CREATED", "DURATION"]);
    // Runs the store cannot fully read: marked in the table, explained under it.
    let mut notes = String::new();
    for r in runs {
        let damaged = ["quarantined", "unreadable"].into_iter().find(|w| r.message.starts_with(w));
        if damaged.is_some() {
            let id = if r.run_id.is_empty() { "?" } else { &r.run_id };
            let _ = writeln!(notes, "{id}: {}", r.message);
        }
        t.push(vec![
            if r.run_id.is_empty() { "?".into() } else { r.run_id.clone() },
            r.pipeline.clone(),
            match damaged {
                Some(d) => d.to_string(),
                None if r.steps_awaiting_approval > 0 => format!("{} (awaiting approval)", run_state(r.state)),
                None => run_state(r.state).to_string(),
            },
            format!("{}/{}", r.steps_done, r.steps_total),
            millis(r.created_at.as_ref()).map_or_else(|| "-".into(), datetime),
            span(r.started_at.as_ref(), r.finished_at.as_ref(), now),
        ]);
    }
    if notes.is_empty() {
        return t.render();
    }
    format!("{}\n{notes}help: `weir store check` on the server's data folder says what is readable\n", t.render())
}

/// The head of `weir status`: the run, its pipeline version, state, progress, params.
pub fn run_header(run: &Run, now: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "run       {}", run.run_id);
    let _ = writeln!(out, "pipeline  {} (version {})", run.pipeline, short(&run.version));
    let state = run_state(run.state);
    let awaiting = match run.steps_awaiting_approval {
        0 => String::new(),
        n => format!(", {n} awaiting approval"),
    };
    let _ = writeln!(out, "state     {state}, {}/{} steps done{awaiting}", run.steps_done, run.steps_total);
    if run.trigger == v1::Trigger::Schedule as i32 {
        // The issue and the docs call a schedule's trigger `cron`. The run carries the tick but
        // not the schedule's zone, so the tick shows in UTC.
        let _ = writeln!(out, "trigger   cron");
        let tick = millis(run.scheduled_time.as_ref()).map_or_else(|| "-".into(), |t| format!("{} UTC", datetime(t)));
        let backfill = if run.backfill { " (backfill)" } else { "" };
        let _ = writeln!(out, "scheduled {tick}{backfill}");
    }
    let kind = match v1::Trigger::try_from(run.trigger) {
        Ok(v1::Trigger::Files) => Some("files"),
        Ok(v1::Trigger::Pipeline) => Some("pipeline"),
        Ok(v1::Trigger::Webhook) => Some("webhook"),
        _ => None,
    };
    if let Some(kind) = kind {
        let _ = writeln!(out, "trigger   {kind} ({})", run.trigger_name);
        let _ = writeln!(out, "why       {}", run.trigger_detail);
    }
    if !run.started_by.is_empty() {
        let _ = writeln!(out, "started   by {}", run.started_by);
    }
    if let Some(c) = millis(run.created_at.as_ref()) {
        let _ = writeln!(out, "created   {}", datetime(c));
    }
    if run.started_at.is_some() {
        let _ = writeln!(out, "duration  {}", span(run.started_at.as_ref(), run.finished_at.as_ref(), now));
    }
    if !run.params.is_empty() {
        let params: BTreeMap<_, _> = run.params.iter().collect();
        let shown: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "params    {}", shown.join(" "));
    }
    if !run.message.is_empty() {
        let _ = writeln!(out, "message   {}", run.message);
    }
    out
}

// ---- schedules ----

/// An instant in a schedule's zone, with the zone's abbreviation and offset:
/// `2026-03-29 03:00:00 CEST (+02:00)`, `2026-11-27 12:00:00 UTC`, `2026-11-27 15:00:00 +03:00`
/// (zones without an abbreviation). A zone this weir does not know shows the instant in UTC.
pub fn zoned(ms: u64, zone: &str) -> String {
    let Some(utc) = chrono::DateTime::from_timestamp_millis(ms as i64) else { return format!("@{ms}ms") };
    let Ok(tz) = zone_of(zone) else { return format!("{} UTC", datetime(ms)) };
    let t = utc.with_timezone(&tz);
    let when = t.format("%Y-%m-%d %H:%M:%S");
    let abbr = t.format("%Z").to_string();
    let offset = t.format("%:z").to_string();
    if abbr.starts_with(['+', '-']) || abbr.is_empty() {
        format!("{when} {offset}")
    } else if offset == "+00:00" && matches!(abbr.as_str(), "UTC" | "GMT") {
        format!("{when} {abbr}")
    } else {
        format!("{when} {abbr} ({offset})")
    }
}

/// The IANA zone named on the wire; empty means UTC (a schedule's default).
fn zone_of(zone: &str) -> Result<chrono_tz::Tz, chrono_tz::ParseError> {
    if zone.is_empty() { Ok(chrono_tz::Tz::UTC) } else { zone.parse() }
}

/// The lowercase name of a schedule's concurrency policy (`forbid`).
pub fn concurrency(c: i32) -> &'static str {
    match v1::Concurrency::try_from(c) {
        Ok(v1::Concurrency::Allow) => "allow",
        Ok(v1::Concurrency::Forbid) => "forbid",
        Ok(v1::Concurrency::Replace) => "replace",
        _ => "-",
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// How many skipped-tick entries a schedule block shows, the most recent ones.
const SKIPPED_SHOWN: usize = 5;

/// Where the values of a schedule block's labelled lines start.
const LABEL: usize = 13;

fn labelled(out: &mut String, label: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        let label = if i == 0 { label } else { "" };
        let _ = writeln!(out, "  {label:<LABEL$}{v}");
    }
}

/// `weir schedules`: one block per schedule, its times in the schedule's own zone.
///
/// ```text
/// nightly: `30 2 * * *` in Europe/Berlin, active
///   version      abababababab
///   concurrency  forbid
///   catchup      on, at most 3 missed ticks
///   next         2026-03-28 02:30:00 CET (+01:00)
///                ...
/// ```
pub fn schedule_block(s: &v1::ScheduleInfo) -> String {
    let mut out = String::new();
    let zone = if s.timezone.is_empty() { "UTC" } else { s.timezone.as_str() };
    let unknown = if zone_of(&s.timezone).is_err() { " (a zone unknown to this weir: times in UTC)" } else { "" };
    let state = if s.paused { "paused: ticks pass without runs" } else { "active" };
    let _ = writeln!(out, "{}: `{}` in {zone}{unknown}, {state}", s.pipeline, s.cron);
    let at = |t: Option<&prost_types::Timestamp>| millis(t).map_or_else(|| "-".into(), |ms| zoned(ms, &s.timezone));
    if !s.version.is_empty() {
        labelled(&mut out, "version", &[short(&s.version).to_string()]);
    }
    labelled(&mut out, "concurrency", &[concurrency(s.concurrency).to_string()]);
    let catchup = match (s.catchup, s.max_catchup) {
        (true, 0) => "on: every missed tick runs".to_string(),
        (true, n) => format!("on, at most {} run after downtime", plural(n.into(), "missed tick", "missed ticks")),
        (false, _) => "off: only the latest missed tick runs".to_string(),
    };
    labelled(&mut out, "catchup", &[catchup]);
    if !s.params.is_empty() {
        let params: BTreeMap<_, _> = s.params.iter().collect();
        let shown: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labelled(&mut out, "params", &[shown.join(" ")]);
    }
    let mut next: Vec<String> = s.next_fires.iter().map(|t| at(Some(t))).collect();
    if next.is_empty() {
        next.push("-".into());
    }
    labelled(&mut out, "next", &next);
    let last = if s.last_run_id.is_empty() {
        "none yet".to_string()
    } else {
        format!("{}: run {} {}", at(s.last_tick.as_ref()), s.last_run_id, run_state(s.last_run_state))
    };
    labelled(&mut out, "last tick", &[last]);
    if !s.skipped.is_empty() {
        let from = s.skipped.len().saturating_sub(SKIPPED_SHOWN);
        let mut lines = Vec::new();
        if from > 0 {
            lines.push(format!("({} not shown)", plural(from as u64, "earlier entry", "earlier entries")));
        }
        for k in &s.skipped[from..] {
            let when = if k.count <= 1 || k.first == k.last {
                at(k.first.as_ref())
            } else {
                format!("{} .. {}", at(k.first.as_ref()), at(k.last.as_ref()))
            };
            let why = if k.reason.is_empty() { String::new() } else { format!(": {}", k.reason) };
            lines.push(format!("{} {when}{why}", plural(k.count.max(1), "tick", "ticks")));
        }
        labelled(&mut out, "skipped", &lines);
    }
    if let Some(b) = &s.backfill {
        let remaining = plural(b.remaining.into(), "tick", "ticks");
        // Missed ticks caught up after downtime wait their turn the same way as a backfill.
        labelled(
            &mut out,
            if b.catchup { "catch-up" } else { "backfill" },
            &[format!("{} .. {}, {remaining} still to start", at(b.from.as_ref()), at(b.to.as_ref()))],
        );
    }
    out
}

/// Every schedule's block, a blank line apart.
pub fn schedules_list(schedules: &[v1::ScheduleInfo]) -> String {
    schedules.iter().map(schedule_block).collect::<Vec<_>>().join("\n")
}

/// What `weir schedules pause` and `resume` print: the schedule as it now is.
pub fn schedule_change(s: &v1::ScheduleInfo) -> String {
    let next = s.next_fires.first().and_then(|t| millis(Some(t))).map(|ms| zoned(ms, &s.timezone));
    if s.paused {
        let what = next.map_or_else(|| "its ticks".to_string(), |n| format!("the tick at {n} and later ones"));
        format!(
            "schedule {name} paused: {what} pass without runs\n`weir schedules resume {name}` lets it fire again\n",
            name = s.pipeline
        )
    } else {
        let next = next.map_or_else(|| "no next tick".to_string(), |n| format!("next tick {n}"));
        format!("schedule {} firing again: {next}; ticks that passed while it was paused do not run\n", s.pipeline)
    }
}

fn outcome(o: i32, dry_run: bool) -> &'static str {
    match (v1::BackfillOutcome::try_from(o), dry_run) {
        (Ok(v1::BackfillOutcome::Started), false) => "started",
        (Ok(v1::BackfillOutcome::Started), true) => "would start",
        (Ok(v1::BackfillOutcome::Exists), _) => "exists",
        (Ok(v1::BackfillOutcome::Queued), false) => "queued",
        (Ok(v1::BackfillOutcome::Queued), true) => "would queue",
        _ => "unknown",
    }
}

/// `weir backfill`: a line per tick (its time in the schedule's `zone`, as `weir schedules`
/// shows times, its run id, what happened to it), then a summary with what to do next.
pub fn backfill(pipeline: &str, zone: &str, ticks: &[v1::BackfillTick], dry_run: bool) -> String {
    let width = ticks.iter().map(|t| t.run_id.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    let mut counts = [0u64; 4];
    for t in ticks {
        let time = millis(t.time.as_ref()).map_or_else(|| "-".into(), |ms| zoned(ms, zone));
        let _ = writeln!(out, "{time}  {:<width$}  {}", t.run_id, outcome(t.outcome, dry_run));
        let i = match v1::BackfillOutcome::try_from(t.outcome) {
            Ok(v1::BackfillOutcome::Started) => 0,
            Ok(v1::BackfillOutcome::Exists) => 1,
            Ok(v1::BackfillOutcome::Queued) => 2,
            _ => 3,
        };
        counts[i] += 1;
    }
    let [started, exists, queued, unknown] = counts;
    let mut parts = Vec::new();
    if started > 0 {
        parts.push(format!("{started} {}", if dry_run { "would start" } else { "started" }));
    }
    if exists > 0 {
        let had = match (dry_run, exists) {
            (true, 1) => "already has a run",
            (true, _) => "already have a run",
            (false, _) => "already had a run",
        };
        parts.push(format!("{exists} {had}"));
    }
    if queued > 0 {
        parts.push(format!("{queued} {}", if dry_run { "would queue" } else { "queued" }));
    }
    if unknown > 0 {
        parts.push(format!("{unknown} unknown"));
    }
    let next = if dry_run {
        "nothing was created; without --dry-run the backfill creates them".to_string()
    } else {
        format!("follow with `weir runs --pipeline {pipeline}`")
    };
    let _ = writeln!(out, "{}: {}; {next}", plural(ticks.len() as u64, "tick", "ticks"), parts.join(", "));
    out
}

/// Steps that wait because no registered worker could ever run them (the engine's
/// `waiting_reason` and `unplaceable` on a ready step), turned into one progress line per
/// reason when it first shows.
#[derive(Default)]
pub struct Waiting {
    /// Reason to the first step waiting for it and whether workers are registered that can
    /// never run it, as last seen.
    now: BTreeMap<String, (String, bool)>,
}

impl Waiting {
    /// Takes a fresh list of steps; returns lines for the reasons that were not there before.
    pub fn update(&mut self, steps: &[v1::Step], at: u64, color: bool) -> Vec<String> {
        let mut count: BTreeMap<String, (String, usize, bool)> = BTreeMap::new();
        for s in steps {
            if s.state != StepState::Ready as i32 || s.waiting_reason.is_empty() {
                continue;
            }
            let entry = count.entry(s.waiting_reason.clone()).or_insert_with(|| (s.name.clone(), 0, s.unplaceable));
            entry.1 += 1;
        }
        let mut lines = Vec::new();
        for (reason, (name, n, _)) in &count {
            if self.now.contains_key(reason) {
                continue;
            }
            let who = if *n > 1 { format!("{name} (and {} more)", n - 1) } else { name.clone() };
            lines.push(format!("{} {who} {}: {reason}", clock(at), paint("waiting", "33", color)));
        }
        self.now = count.into_iter().map(|(reason, (name, _, unplaceable))| (reason, (name, unplaceable))).collect();
        lines
    }

    /// A step and the reason it waits, when workers are registered and none can ever run it
    /// (not while none has registered yet).
    pub fn stuck(&self) -> Option<(&str, &str)> {
        self.now.iter().find(|(_, (_, unplaceable))| *unplaceable).map(|(r, (s, _))| (s.as_str(), r.as_str()))
    }
}

/// The steps of `weir status`: STEP STATE ATTEMPT DURATION MESSAGE.
pub fn steps_table(steps: &[v1::Step], now: u64) -> String {
    let mut t = Table::new(&["STEP", "STATE", "ATTEMPT", "DURATION", "MESSAGE"]);
    for s in steps {
        let mut state = step_state(s.state).to_string();
        if s.cached && s.state() != StepState::Cached {
            state.push_str(" (cached)");
        }
        t.push(vec![
            s.name.clone(),
            state,
            if s.attempt == 0 { "-".into() } else { s.attempt.to_string() },
            span(s.started_at.as_ref(), s.finished_at.as_ref(), now),
            s.message.clone(),
        ]);
    }
    t.render()
}

/// The closing summary of a followed run: STEP STATE ATTEMPTS DURATION, then one line for the
/// run. Durations come from the recorded start and finish times only, so a step or run without
/// both shows `-`.
pub fn summary(r: &GetRunResponse) -> String {
    let mut t = Table::new(&["STEP", "STATE", "ATTEMPTS", "DURATION"]);
    for s in &r.steps {
        let mut state = step_state(s.state).to_string();
        if s.cached && s.state() != StepState::Cached {
            state.push_str(" (cached)");
        }
        let took = match (millis(s.started_at.as_ref()), millis(s.finished_at.as_ref())) {
            (Some(a), Some(b)) => duration(b.saturating_sub(a)),
            _ => "-".into(),
        };
        t.push(vec![s.name.clone(), state, s.attempt.to_string(), took]);
    }
    let mut out = t.render();
    if let Some(run) = &r.run {
        let _ = write!(out, "run {} {}", run.run_id, run_state(run.state));
        if let (Some(a), Some(b)) = (millis(run.started_at.as_ref()), millis(run.finished_at.as_ref())) {
            let _ = write!(out, " in {}", duration(b.saturating_sub(a)));
        }
        if !run.message.is_empty() {
            let _ = write!(out, ": {}", run.message);
        }
        out.push('\n');
    }
    out
}

#[derive(Debug, Clone)]
struct StepView {
    state: StepState,
    attempt: u32,
    /// When its latest attempt started (leased or running), as the engine recorded it.
    started: Option<u64>,
}

/// Follows a run's events. [`Progress::apply`] turns each event into the line to print when the
/// output is not a terminal (and remembers the step states); [`Progress::frame`] draws, on a
/// terminal, finished lines above a live block of the steps still running, redrawn in place.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    steps: HashMap<String, StepView>,
    /// Instance names in the order they were first seen: the live block's order.
    order: Vec<String>,
    run: Option<RunState>,
    /// Lines of the live block currently on the screen.
    drawn: usize,
}

impl Progress {
    /// Starts from known step states, instance name to state (from a GetRun, say).
    pub fn new(states: impl IntoIterator<Item = (String, StepState)>) -> Progress {
        let mut p = Progress::default();
        for (name, state) in states {
            p.set(&name, state, 0, None);
        }
        p
    }

    /// Starts from a fetched run: its state and every step's state, attempt and start time.
    #[cfg_attr(not(test), expect(dead_code, reason = "for `weir run`, wired to Progress in a later change"))]
    pub fn from_run(r: &GetRunResponse) -> Progress {
        let mut p = Progress::default();
        for s in &r.steps {
            let state = StepState::try_from(s.state).unwrap_or(StepState::Unspecified);
            p.set(&s.name, state, s.attempt, millis(s.started_at.as_ref()));
        }
        p.run = r.run.as_ref().and_then(|run| RunState::try_from(run.state).ok());
        p
    }

    fn set(&mut self, name: &str, state: StepState, attempt: u32, started: Option<u64>) {
        match self.steps.get_mut(name) {
            Some(v) => {
                v.state = state;
                v.attempt = attempt.max(v.attempt);
                if started.is_some() {
                    v.started = started;
                }
            }
            None => {
                self.order.push(name.to_string());
                self.steps.insert(name.to_string(), StepView { state, attempt, started });
            }
        }
    }

    #[cfg_attr(not(test), expect(dead_code, reason = "for `weir run`, wired to Progress in a later change"))]
    /// The run's latest known state.
    pub fn run_state(&self) -> Option<RunState> {
        self.run
    }

    /// Whether the run has reached a terminal state.
    #[cfg_attr(not(test), expect(dead_code, reason = "for `weir run`, wired to Progress in a later change"))]
    pub fn finished(&self) -> bool {
        self.run.is_some_and(run_is_terminal)
    }

    #[cfg_attr(not(test), expect(dead_code, reason = "for `weir run`, wired to Progress in a later change"))]
    /// The state of one step instance, if known.
    pub fn step(&self, name: &str) -> Option<StepState> {
        self.steps.get(name).map(|v| v.state)
    }

    /// Records an event and returns the line it deserves, without a newline: `12:00:01
    /// train[l2=0.0] running (attempt 1)`, `... succeeded in 1.2s`, `... failed: exit code 2`.
    /// Steps becoming pending, ready or leased print nothing unless a retry is announced.
    /// `color` paints the state word.
    pub fn apply(&mut self, e: &RunEvent, color: bool) -> Option<String> {
        let at = millis(e.time.as_ref());
        let time = at.map_or_else(|| "--:--:--".into(), clock);
        match e.kind.as_ref()? {
            Kind::Step(s) => {
                let state = StepState::try_from(s.state).unwrap_or(StepState::Unspecified);
                let started = match state {
                    StepState::Leased | StepState::Running => at,
                    _ => None,
                };
                // A retry resets the start; the engine reports a fresh lease or start for it.
                let earlier = self.steps.get(&s.name).and_then(|v| v.started);
                self.set(&s.name, state, s.attempt, started);
                let word = step_state(s.state);
                let colored = paint(word, state_color(word), color);
                let why = if s.message.is_empty() { String::new() } else { format!(": {}", s.message) };
                let text = match state {
                    StepState::Running => format!("{colored} (attempt {})", s.attempt.max(1)),
                    StepState::Succeeded => match (earlier, at) {
                        (Some(a), Some(b)) => format!("{colored} in {}", duration(b.saturating_sub(a))),
                        _ => colored,
                    },
                    StepState::Failed | StepState::Skipped | StepState::Cancelled | StepState::Cached => {
                        format!("{colored}{why}")
                    }
                    StepState::Pending if s.attempt > 0 && !s.message.is_empty() => {
                        format!("{} after attempt {}{why}", paint("will retry", "33", color), s.attempt)
                    }
                    _ => return None,
                };
                Some(format!("{time} {} {text}", s.name))
            }
            Kind::Run(r) => {
                let state = RunState::try_from(r.state).unwrap_or(RunState::Unspecified);
                self.run = Some(state);
                let word = run_state(r.state);
                let why = if r.message.is_empty() { String::new() } else { format!(": {}", r.message) };
                Some(format!("{time} run {}{why}", paint(word, state_color(word), color)))
            }
        }
    }

    /// The live block's lines at `now`: one per leased or running step with its elapsed time,
    /// then a count of finished steps. Each line is cut to `width` characters.
    pub fn live_lines(&self, now: u64, width: usize, color: bool) -> Vec<String> {
        let mut lines = Vec::new();
        let mut done = 0;
        for name in &self.order {
            let v = &self.steps[name];
            if step_is_terminal(v.state) {
                done += 1;
            }
            if !matches!(v.state, StepState::Leased | StepState::Running) {
                continue;
            }
            let elapsed = v.started.map_or_else(String::new, |s| format!(" {}", duration(now.saturating_sub(s))));
            let word = step_state(v.state as i32);
            let attempt = if v.attempt > 1 { format!(" (attempt {})", v.attempt) } else { String::new() };
            let plain = format!("  {name} {word}{elapsed}{attempt}");
            lines.push(cut(&plain, width, |s| s.replacen(word, &paint(word, state_color(word), color), 1)));
        }
        lines.push(cut(&format!("  {done}/{} steps done", self.order.len()), width, |s| s.to_string()));
        lines
    }

    /// What to write to a terminal: erase the live block drawn last, print `above` (finished
    /// lines, each without a newline) where it was, and draw the block again below them.
    pub fn frame(&mut self, above: &[String], now: u64, width: usize, color: bool) -> String {
        let mut out = self.erase();
        for line in above {
            out.push_str(line);
            out.push('\n');
        }
        let lines = self.live_lines(now, width, color);
        for line in &lines {
            out.push_str(line);
            out.push('\n');
        }
        self.drawn = lines.len();
        out
    }

    /// Erases the live block, leaving the cursor where it began.
    pub fn erase(&mut self) -> String {
        let n = std::mem::take(&mut self.drawn);
        // Cursor up to the first line of the block, then clear to the end of the screen.
        if n == 0 { String::new() } else { format!("\x1b[{n}F\x1b[J") }
    }
}

/// `text` cut to `width` characters, then `style`d (styling after the cut keeps escape codes
/// out of the count).
fn cut(text: &str, width: usize, style: impl Fn(&str) -> String) -> String {
    if text.chars().count() <= width {
        return style(text);
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    style(&format!("{kept}…"))
}

/// Prefixes each line of interleaved log streams with `[instance] `, holding a partial line
/// until its end arrives, so two steps' output never mix within a line.
#[derive(Debug, Default)]
pub struct LinePrefixer {
    partial: BTreeMap<String, Vec<u8>>,
}

impl LinePrefixer {
    /// The complete lines `data` finishes for `name`, each prefixed.
    pub fn push(&mut self, name: &str, data: &[u8]) -> Vec<u8> {
        let buf = self.partial.entry(name.to_string()).or_default();
        buf.extend_from_slice(data);
        let Some(last) = buf.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
        let rest = buf.split_off(last + 1);
        let whole = std::mem::replace(buf, rest);
        prefix_lines(name, &whole)
    }

    /// Every held partial line, prefixed and ended with a newline.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, mut buf) in std::mem::take(&mut self.partial) {
            if !buf.is_empty() {
                buf.push(b'\n');
                out.extend(prefix_lines(&name, &buf));
            }
        }
        out
    }
}

fn prefix_lines(name: &str, whole: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(whole.len() + 16);
    for line in whole.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(format!("[{name}] ").as_bytes());
        out.extend_from_slice(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::{RunChanged, StepChanged};

    const T0: u64 = 1_795_780_801_000; // 2026-11-27 12:00:01 UTC

    fn ts(ms: u64) -> Option<prost_types::Timestamp> {
        Some(weir_engine::api::convert::timestamp(weir_core::run::Millis(ms)))
    }

    fn step_event(at: u64, name: &str, state: StepState, attempt: u32, message: &str) -> RunEvent {
        RunEvent {
            seq: 0,
            time: ts(at),
            kind: Some(Kind::Step(StepChanged {
                instance: 0,
                name: name.into(),
                state: state as i32,
                attempt,
                message: message.into(),
            })),
        }
    }

    fn run_event(at: u64, state: RunState, message: &str) -> RunEvent {
        RunEvent {
            seq: 0,
            time: ts(at),
            kind: Some(Kind::Run(RunChanged { state: state as i32, message: message.into() })),
        }
    }

    #[test]
    fn durations_read_like_people_say_them() {
        for (ms, want) in [
            (0, "0ms"),
            (850, "850ms"),
            (999, "999ms"),
            (1_000, "1.0s"),
            (12_345, "12.3s"),
            (59_999, "59.9s"),
            (60_000, "1m00s"),
            (245_000, "4m05s"),
            (3_599_999, "59m59s"),
            (3_600_000, "1h00m"),
            (3_720_000, "1h02m"),
            (100 * 3_600_000, "100h00m"),
        ] {
            assert_eq!(duration(ms), want, "{ms} ms");
        }
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(clock(T0), "12:00:01");
        assert_eq!(datetime(T0), "2026-11-27 12:00:01");
        assert_eq!(datetime(0), "1970-01-01 00:00:00");
        assert_eq!(datetime(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(datetime(1_709_251_199_000), "2024-02-29 23:59:59");
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut t = Table::new(&["NAME", "STATE", "MESSAGE"]);
        t.push(vec!["train[lr=0.1]".into(), "failed".into(), "exit code 2\nsee logs".into()]);
        t.push(vec!["a".into(), "succeeded".into(), String::new()]);
        t.push(vec!["ü".into()]);
        assert_eq!(
            t.render(),
            "NAME           STATE      MESSAGE\n\
             train[lr=0.1]  failed     exit code 2 see logs\n\
             a              succeeded\n\
             ü\n"
        );
    }

    fn sample_run() -> GetRunResponse {
        let run = Run {
            run_id: "r-7".into(),
            pipeline: "churn".into(),
            version: "0123456789abcdef0123".into(),
            state: RunState::Failed as i32,
            params: [("rows".to_string(), "500".to_string()), ("a".to_string(), "x".to_string())].into(),
            created_at: ts(T0 - 1_000),
            started_at: ts(T0),
            finished_at: ts(T0 + 245_000),
            message: "step train failed".into(),
            trigger: v1::Trigger::Manual as i32,
            steps_total: 3,
            steps_done: 3,
            ..Run::default()
        };
        let step = |name: &str, state: StepState, attempt, took: Option<u64>, message: &str, cached| v1::Step {
            name: name.into(),
            step: name.into(),
            state: state as i32,
            attempt,
            started_at: took.and(ts(T0)),
            finished_at: took.and_then(|t| ts(T0 + t)),
            message: message.into(),
            cached,
            ..Default::default()
        };
        GetRunResponse {
            run: Some(run),
            steps: vec![
                step("ingest", StepState::Succeeded, 1, Some(850), "", true),
                step("train[lr=0.1]", StepState::Failed, 2, Some(12_345), "exit code 2", false),
                step("report", StepState::Skipped, 0, None, "a needed step did not succeed", false),
            ],
            next_step_page_token: String::new(),
        }
    }

    #[test]
    fn summary_table_uses_recorded_times() {
        assert_eq!(
            summary(&sample_run()),
            "STEP           STATE               ATTEMPTS  DURATION\n\
             ingest         succeeded (cached)  1         850ms\n\
             train[lr=0.1]  failed              2         12.3s\n\
             report         skipped             0         -\n\
             run r-7 failed in 4m05s: step train failed\n"
        );
    }

    #[test]
    fn status_shows_header_and_steps() {
        let r = sample_run();
        assert_eq!(
            run_header(r.run.as_ref().unwrap(), T0 + 999_999),
            "run       r-7\n\
             pipeline  churn (version 0123456789ab)\n\
             state     failed, 3/3 steps done\n\
             created   2026-11-27 12:00:00\n\
             duration  4m05s\n\
             params    a=x rows=500\n\
             message   step train failed\n"
        );
        let mut steps = r.steps.clone();
        steps[1].finished_at = None; // still running at `now`
        assert_eq!(
            steps_table(&steps, T0 + 3_720_000),
            "STEP           STATE               ATTEMPT  DURATION  MESSAGE\n\
             ingest         succeeded (cached)  1        850ms\n\
             train[lr=0.1]  failed              2        1h02m     exit code 2\n\
             report         skipped             -        -         a needed step did not succeed\n"
        );
        assert_eq!(
            runs_table(&[r.run.clone().unwrap()], T0),
            "RUN  PIPELINE  STATE   STEPS  CREATED              DURATION\n\
             r-7  churn     failed  3/3    2026-11-27 12:00:00  4m05s\n"
        );
    }

    #[test]
    fn pipelines_table_shortens_versions() {
        let p = PipelineSummary {
            name: "churn".into(),
            description: String::new(),
            latest_version: "abcdef0123456789".into(),
            submitted_at: ts(T0),
            version_count: 3,
            schedule: "0 3 * * *".into(),
        };
        let q = PipelineSummary { name: "x".into(), latest_version: "ff".into(), version_count: 1, ..p.clone() };
        let q = PipelineSummary { schedule: String::new(), submitted_at: None, ..q };
        assert_eq!(
            pipelines_table(&[p, q]),
            "NAME   VERSION       VERSIONS  SUBMITTED            SCHEDULE\n\
             churn  abcdef012345  3         2026-11-27 12:00:01  0 3 * * *\n\
             x      ff            1         -                    -\n"
        );
    }

    #[test]
    fn events_print_one_plain_line_each() {
        let name = "train[l2=0.0,features=linear]";
        let mut p = Progress::new([(name.to_string(), StepState::Pending)]);
        let events = [
            (step_event(T0 - 500, name, StepState::Ready, 0, ""), None),
            (step_event(T0 - 100, name, StepState::Leased, 1, ""), None),
            (
                step_event(T0, name, StepState::Running, 1, ""),
                Some("12:00:01 train[l2=0.0,features=linear] running (attempt 1)"),
            ),
            (
                step_event(T0 + 2_000, name, StepState::Pending, 1, "exit code 1"),
                Some("12:00:03 train[l2=0.0,features=linear] will retry after attempt 1: exit code 1"),
            ),
            (
                step_event(T0 + 3_000, name, StepState::Running, 2, ""),
                Some("12:00:04 train[l2=0.0,features=linear] running (attempt 2)"),
            ),
            (
                step_event(T0 + 4_200, name, StepState::Succeeded, 2, ""),
                Some("12:00:05 train[l2=0.0,features=linear] succeeded in 1.2s"),
            ),
            (
                step_event(T0 + 5_000, "eval", StepState::Failed, 1, "exit code 2"),
                Some("12:00:06 eval failed: exit code 2"),
            ),
            (
                step_event(T0 + 5_000, "report", StepState::Skipped, 0, "eval failed"),
                Some("12:00:06 report skipped: eval failed"),
            ),
            (
                run_event(T0 + 6_000, RunState::Failed, "step eval failed"),
                Some("12:00:07 run failed: step eval failed"),
            ),
        ];
        for (e, want) in events {
            assert!(!p.finished());
            assert_eq!(p.apply(&e, false).as_deref(), want);
        }
        assert!(p.finished());
        assert_eq!(p.run_state(), Some(RunState::Failed));
        assert_eq!(p.step(name), Some(StepState::Succeeded));
        let colored = p.apply(&step_event(T0, "eval", StepState::Failed, 1, ""), true).unwrap();
        assert_eq!(colored, "12:00:01 eval \x1b[31mfailed\x1b[0m");
    }

    #[test]
    fn live_block_shows_running_steps_and_redraws_in_place() {
        let mut p = Progress::new([("a".to_string(), StepState::Pending), ("b".to_string(), StepState::Pending)]);
        let line = p.apply(&step_event(T0, "a", StepState::Running, 1, ""), false);
        assert_eq!(p.live_lines(T0 + 12_300, 80, false), ["  a running 12.3s", "  0/2 steps done"]);
        let first = p.frame(&[], T0 + 1_000, 80, false);
        assert_eq!(first, "  a running 1.0s\n  0/2 steps done\n");
        let done = p.apply(&step_event(T0 + 2_000, "a", StepState::Succeeded, 1, ""), false).unwrap();
        assert_eq!(line.as_deref(), Some("12:00:01 a running (attempt 1)"));
        let second = p.frame(&[done], T0 + 2_000, 80, false);
        assert_eq!(second, "\x1b[2F\x1b[J12:00:03 a succeeded in 2.0s\n  1/2 steps done\n");
        assert_eq!(p.erase(), "\x1b[1F\x1b[J");
        assert_eq!(p.erase(), "");
        p.apply(&step_event(T0, "b", StepState::Running, 3, ""), false);
        assert_eq!(p.live_lines(T0 + 500, 12, false), ["  b running…", "  1/2 steps…"]);
        assert_eq!(p.live_lines(T0 + 500, 80, true)[0], "  b \x1b[36mrunning\x1b[0m 500ms (attempt 3)");
    }

    #[test]
    fn progress_starts_from_a_fetched_run() {
        let mut r = sample_run();
        r.steps[1].state = StepState::Running as i32;
        r.steps[1].finished_at = None;
        r.run.as_mut().unwrap().state = RunState::Running as i32;
        let p = Progress::from_run(&r);
        assert!(!p.finished());
        assert_eq!(
            p.live_lines(T0 + 60_000, 80, false),
            ["  train[lr=0.1] running 1m00s (attempt 2)", "  2/3 steps done"]
        );
    }

    #[test]
    fn log_lines_get_their_step_as_prefix() {
        let mut l = LinePrefixer::default();
        assert_eq!(l.push("a", b"one\ntw"), b"[a] one\n");
        assert_eq!(l.push("b", b"x\ny\n"), b"[b] x\n[b] y\n");
        assert_eq!(l.push("a", b"o\nthr"), b"[a] two\n");
        assert_eq!(l.push("b", b"z"), b"");
        assert_eq!(l.finish(), b"[a] thr\n[b] z\n");
        assert_eq!(l.finish(), b"");
    }

    #[test]
    fn waiting_reasons_show_once_per_reason_and_name_the_stuck_step() {
        let step = |name: &str, state: StepState, reason: &str, unplaceable: bool| v1::Step {
            name: name.into(),
            state: state as i32,
            waiting_reason: reason.into(),
            unplaceable,
            ..Default::default()
        };
        let mut w = Waiting::default();
        let none = [step("a", StepState::Ready, "no worker is registered", false)];
        assert_eq!(w.update(&none, 0, false), ["00:00:00 a waiting: no worker is registered"]);
        assert_eq!(w.stuck(), None, "a worker may still register");
        let gpus = [
            step("a", StepState::Ready, "no worker offers gpus=1", true),
            step("b", StepState::Ready, "no worker offers gpus=1", true),
            step("c", StepState::Failed, "not a ready step", true),
            step("d", StepState::Ready, "", false),
            // The message is for people: text that looks like a reason is not one.
            v1::Step {
                name: "e".into(),
                state: StepState::Ready as i32,
                message: "waiting: text".into(),
                ..Default::default()
            },
        ];
        assert_eq!(w.update(&gpus, 0, false), ["00:00:00 a (and 1 more) waiting: no worker offers gpus=1"]);
        assert_eq!(w.update(&gpus, 0, false), Vec::<String>::new(), "shown once");
        assert_eq!(w.stuck(), Some(("a", "no worker offers gpus=1")));
        assert_eq!(w.update(&[], 0, false), Vec::<String>::new());
        assert_eq!(w.stuck(), None);
    }

    /// Milliseconds since the epoch of an RFC 3339 instant.
    fn at(rfc: &str) -> u64 {
        chrono::DateTime::parse_from_rfc3339(rfc).unwrap().timestamp_millis() as u64
    }

    fn tsr(rfc: &str) -> Option<prost_types::Timestamp> {
        ts(at(rfc))
    }

    fn skipped(first: &str, last: &str, count: u64, reason: &str) -> v1::SkippedTicks {
        v1::SkippedTicks { first: tsr(first), last: tsr(last), count, reason: reason.into() }
    }

    /// `30 2 * * *` in Berlin around the spring change: 02:30 does not exist on 2026-03-29, so
    /// that tick fires at 03:00 CEST (the engine's rule), an hour after the day before in UTC.
    fn berlin() -> v1::ScheduleInfo {
        v1::ScheduleInfo {
            pipeline: "nightly".into(),
            version: "0123456789abcdef0123".into(),
            cron: "30 2 * * *".into(),
            timezone: "Europe/Berlin".into(),
            catchup: true,
            max_catchup: 3,
            concurrency: v1::Concurrency::Forbid as i32,
            paused: false,
            next_fires: vec![
                tsr("2026-03-28T01:30:00Z").unwrap(),
                tsr("2026-03-29T01:00:00Z").unwrap(),
                tsr("2026-03-30T00:30:00Z").unwrap(),
            ],
            last_tick: tsr("2026-03-27T01:30:00Z"),
            last_run_id: "nightly-20260327T0130Z".into(),
            last_run_state: RunState::Succeeded as i32,
            skipped: vec![
                skipped("2026-03-20T01:30:00Z", "2026-03-22T01:30:00Z", 3, "missed while the server was down"),
                skipped(
                    "2026-03-25T01:30:00Z",
                    "2026-03-25T01:30:00Z",
                    1,
                    "forbid: run nightly-20260324T0130Z was still running",
                ),
            ],
            backfill: Some(v1::BackfillProgress {
                from: tsr("2026-02-28T23:00:00Z"),
                to: tsr("2026-03-10T22:59:59Z"),
                remaining: 4,
                catchup: false,
            }),
            params: [("rows".to_string(), "500".to_string()), ("day".to_string(), "today".to_string())].into(),
        }
    }

    #[test]
    fn zoned_times_follow_the_zones_rules_across_dst() {
        // Spring forward in Berlin: 02:00 CET becomes 03:00 CEST on 2026-03-29.
        assert_eq!(zoned(at("2026-03-29T00:59:59Z"), "Europe/Berlin"), "2026-03-29 01:59:59 CET (+01:00)");
        assert_eq!(zoned(at("2026-03-29T01:00:00Z"), "Europe/Berlin"), "2026-03-29 03:00:00 CEST (+02:00)");
        // Fall back on 2026-10-25: 02:30 happens twice, told apart by the abbreviation.
        assert_eq!(zoned(at("2026-10-25T00:30:00Z"), "Europe/Berlin"), "2026-10-25 02:30:00 CEST (+02:00)");
        assert_eq!(zoned(at("2026-10-25T01:30:00Z"), "Europe/Berlin"), "2026-10-25 02:30:00 CET (+01:00)");
        assert_eq!(zoned(at("2026-11-27T12:00:00Z"), "America/New_York"), "2026-11-27 07:00:00 EST (-05:00)");
        assert_eq!(zoned(at("2026-11-27T12:00:00Z"), "UTC"), "2026-11-27 12:00:00 UTC");
        assert_eq!(zoned(at("2026-11-27T12:00:00Z"), ""), "2026-11-27 12:00:00 UTC");
        assert_eq!(zoned(at("2026-11-27T12:00:00Z"), "Europe/London"), "2026-11-27 12:00:00 GMT");
        // A zone without an abbreviation shows its offset once.
        assert_eq!(zoned(at("2026-11-27T12:00:00Z"), "Europe/Istanbul"), "2026-11-27 15:00:00 +03:00");
        assert_eq!(zoned(at("2026-11-27T12:00:00Z"), "Mars/Olympus"), "2026-11-27 12:00:00 UTC");
    }

    #[test]
    fn a_schedule_block_shows_times_in_its_zone() {
        assert_eq!(
            schedule_block(&berlin()),
            "nightly: `30 2 * * *` in Europe/Berlin, active\n\
             \x20 version      0123456789ab\n\
             \x20 concurrency  forbid\n\
             \x20 catchup      on, at most 3 missed ticks run after downtime\n\
             \x20 params       day=today rows=500\n\
             \x20 next         2026-03-28 02:30:00 CET (+01:00)\n\
             \x20              2026-03-29 03:00:00 CEST (+02:00)\n\
             \x20              2026-03-30 02:30:00 CEST (+02:00)\n\
             \x20 last tick    2026-03-27 02:30:00 CET (+01:00): run nightly-20260327T0130Z succeeded\n\
             \x20 skipped      3 ticks 2026-03-20 02:30:00 CET (+01:00) .. 2026-03-22 02:30:00 CET (+01:00): \
             missed while the server was down\n\
             \x20              1 tick 2026-03-25 02:30:00 CET (+01:00): forbid: run nightly-20260324T0130Z was \
             still running\n\
             \x20 backfill     2026-03-01 00:00:00 CET (+01:00) .. 2026-03-10 23:59:59 CET (+01:00), 4 ticks \
             still to start\n"
        );
    }

    #[test]
    fn a_new_paused_schedule_says_so_and_lists_only_recent_skips() {
        let mut s = v1::ScheduleInfo {
            pipeline: "hourly".into(),
            cron: "0 * * * *".into(),
            concurrency: v1::Concurrency::Allow as i32,
            paused: true,
            next_fires: vec![tsr("2026-11-27T13:00:00Z").unwrap()],
            ..Default::default()
        };
        for i in 0..7 {
            let t = format!("2026-11-27T0{i}:00:00Z");
            s.skipped.push(skipped(&t, &t, 1, &format!("paused ({i})")));
        }
        assert_eq!(
            schedule_block(&s),
            "hourly: `0 * * * *` in UTC, paused: ticks pass without runs\n\
             \x20 concurrency  allow\n\
             \x20 catchup      off: only the latest missed tick runs\n\
             \x20 next         2026-11-27 13:00:00 UTC\n\
             \x20 last tick    none yet\n\
             \x20 skipped      (2 earlier entries not shown)\n\
             \x20              1 tick 2026-11-27 02:00:00 UTC: paused (2)\n\
             \x20              1 tick 2026-11-27 03:00:00 UTC: paused (3)\n\
             \x20              1 tick 2026-11-27 04:00:00 UTC: paused (4)\n\
             \x20              1 tick 2026-11-27 05:00:00 UTC: paused (5)\n\
             \x20              1 tick 2026-11-27 06:00:00 UTC: paused (6)\n"
        );
        let list = schedules_list(&[berlin(), s.clone()]);
        assert!(list.starts_with("nightly: "), "{list}");
        assert!(list.contains("still to start\n\nhourly: "), "a blank line between blocks: {list}");
        assert_eq!(
            schedule_change(&s),
            "schedule hourly paused: the tick at 2026-11-27 13:00:00 UTC and later ones pass without runs\n\
             `weir schedules resume hourly` lets it fire again\n"
        );
        assert_eq!(
            schedule_change(&berlin()),
            "schedule nightly firing again: next tick 2026-03-28 02:30:00 CET (+01:00); ticks that passed while it \
             was paused do not run\n"
        );
    }

    fn tick(rfc: &str, run: &str, outcome: v1::BackfillOutcome) -> v1::BackfillTick {
        v1::BackfillTick { time: tsr(rfc), run_id: run.into(), outcome: outcome as i32 }
    }

    #[test]
    fn backfill_prints_a_line_per_tick_and_a_summary() {
        use v1::BackfillOutcome::*;
        let ticks = [
            tick("2026-11-01T02:00:00Z", "demo-1", Started),
            tick("2026-11-02T02:00:00Z", "demo-22", Exists),
            tick("2026-11-03T02:00:00Z", "demo-3", Queued),
            tick("2026-11-04T02:00:00Z", "demo-4", Queued),
            tick("2026-11-05T02:00:00Z", "demo-5", Started),
        ];
        assert_eq!(
            backfill("demo", "UTC", &ticks, false),
            "2026-11-01 02:00:00 UTC  demo-1   started\n\
             2026-11-02 02:00:00 UTC  demo-22  exists\n\
             2026-11-03 02:00:00 UTC  demo-3   queued\n\
             2026-11-04 02:00:00 UTC  demo-4   queued\n\
             2026-11-05 02:00:00 UTC  demo-5   started\n\
             5 ticks: 2 started, 1 already had a run, 2 queued; follow with `weir runs --pipeline demo`\n"
        );
        assert_eq!(
            backfill("demo", "UTC", &ticks, true),
            "2026-11-01 02:00:00 UTC  demo-1   would start\n\
             2026-11-02 02:00:00 UTC  demo-22  exists\n\
             2026-11-03 02:00:00 UTC  demo-3   would queue\n\
             2026-11-04 02:00:00 UTC  demo-4   would queue\n\
             2026-11-05 02:00:00 UTC  demo-5   would start\n\
             5 ticks: 2 would start, 1 already has a run, 2 would queue; nothing was created; without --dry-run \
             the backfill creates them\n"
        );
        assert_eq!(
            backfill("demo", "", &ticks[1..2], false),
            "2026-11-02 02:00:00 UTC  demo-22  exists\n1 tick: 1 already had a run; follow with `weir runs --pipeline demo`\n"
        );
        // In the schedule's zone, as `weir schedules` shows its next fires.
        assert!(
            backfill("demo", "Europe/Berlin", &ticks[..1], false)
                .starts_with("2026-11-01 03:00:00 CET (+01:00)  demo-1"),
        );
    }

    #[test]
    fn status_of_a_scheduled_run_shows_its_tick() {
        let mut run = sample_run().run.unwrap();
        run.trigger = v1::Trigger::Schedule as i32;
        run.scheduled_time = tsr("2026-11-27T02:00:00Z");
        run.backfill = true;
        run.params.clear();
        run.message.clear();
        assert_eq!(
            run_header(&run, T0),
            "run       r-7\n\
             pipeline  churn (version 0123456789ab)\n\
             state     failed, 3/3 steps done\n\
             trigger   cron\n\
             scheduled 2026-11-27 02:00:00 UTC (backfill)\n\
             created   2026-11-27 12:00:00\n\
             duration  4m05s\n"
        );
        run.backfill = false;
        assert!(run_header(&run, T0).contains("\nscheduled 2026-11-27 02:00:00 UTC\ncreated"));
    }

    #[test]
    fn status_of_a_triggered_run_says_which_trigger_and_why() {
        let mut run = sample_run().run.unwrap();
        run.trigger = v1::Trigger::Files as i32;
        run.trigger_name = "files-2".into();
        run.trigger_detail = "files-2: new data /in/a.csv (8 bytes, blake3 ab12)".into();
        assert!(
            run_header(&run, T0).contains(
                "\ntrigger   files (files-2)\nwhy       files-2: new data /in/a.csv (8 bytes, blake3 ab12)\ncreated"
            ),
            "{}",
            run_header(&run, T0)
        );
        run.trigger = v1::Trigger::Manual as i32;
        assert!(!run_header(&run, T0).contains("trigger"));
    }
}
