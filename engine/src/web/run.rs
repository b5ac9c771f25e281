//! A run's page: its header, its DAG (matrix instances of a step grouped into one node that
//! `?expand=STEP` opens, server-side), the table of every instance, the cancel and retry
//! buttons, and `/runs/{id}/events`, which keeps nodes, table and badge current. Data and
//! decisions come from `Engine::run_graph`, `run_view::group_state` and `Engine::retry`.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tokio_stream::wrappers::ReceiverStream;
use weir_core::run::{Millis, RunState, StepState};

use super::auth::{Session, encode};
use super::dag::{self, DagNode};
use super::page::{self, duration, run_badge, step_badge, time};
use super::{Web, WebError};
use crate::access::Role;
use crate::server::run_view::group_state;
use crate::server::runs::step_and_matrix;
use crate::store::{Change, Trigger};

/// `text` as one URL path segment (instance names hold `[`, `=`, `,`).
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A step instance's page.
pub(crate) fn step_href(run: &str, instance: &str) -> String {
    format!("/runs/{}/steps/{}", segment(run), segment(instance))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunQuery {
    /// A step whose matrix instances are drawn one by one.
    #[serde(default)]
    pub expand: String,
}

pub(crate) async fn show(
    State(web): State<Web>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Result<Response, WebError> {
    let g = web.engine.run_graph(&id)?;
    let now = web.engine.clock.now();
    let rec = &g.record;
    // Instances by step, in plan order; a step with a matrix is a group.
    let mut order: Vec<String> = Vec::new();
    let mut members: HashMap<String, Vec<usize>> = HashMap::new();
    let mut grouped: HashSet<String> = HashSet::new();
    for (i, s) in g.steps.iter().enumerate() {
        let (step, matrix) = step_and_matrix(s);
        if !matrix.is_empty() {
            grouped.insert(step.clone());
        }
        members
            .entry(step.clone())
            .or_insert_with(|| {
                order.push(step.clone());
                Vec::new()
            })
            .push(i);
    }
    let mut nodes: Vec<DagNode> = Vec::new();
    let mut node_of = vec![0usize; g.steps.len()];
    for step in &order {
        let ids = &members[step];
        let stage = g.stages.get(ids[0]).filter(|s| !s.is_empty()).cloned();
        if grouped.contains(step) && *step != q.expand {
            let states: Vec<StepState> = ids.iter().map(|&i| g.steps[i].state).collect();
            let (state, detail) = group_state(&states);
            for &i in ids {
                node_of[i] = nodes.len();
            }
            nodes.push(DagNode {
                key: step.clone(),
                label: format!("{step} ×{}", ids.len()),
                stage,
                state: Some(state.as_str().to_string()),
                detail,
                href: Some(format!("/runs/{}?expand={}#dag", segment(&id), encode(step))),
            });
        } else {
            for &i in ids {
                let s = &g.steps[i];
                node_of[i] = nodes.len();
                nodes.push(DagNode {
                    key: s.name.clone(),
                    label: s.name.clone(),
                    stage: stage.clone(),
                    state: Some(s.state.as_str().to_string()),
                    detail: if s.attempts > 1 { format!("attempt {}", s.attempts) } else { String::new() },
                    href: Some(step_href(&id, &s.name)),
                });
            }
        }
    }
    let mut seen = HashSet::new();
    let edges: Vec<(usize, usize)> = g
        .edges
        .iter()
        .map(|&(a, b)| (node_of[a as usize], node_of[b as usize]))
        .filter(|&(a, b)| a != b && seen.insert((a, b)))
        .collect();
    let took = rec.finished_at.unwrap_or(now).0.saturating_sub(rec.created_at.0);
    let live = !rec.state.is_terminal();
    let body = html! {
        h1 { "Run " span.mono { (rec.id) } " " span #run-state { (run_badge(rec.state)) } }
        @if !g.message.is_empty() { p.error role="alert" { (g.message) } }
        dl.kv {
            dt { "Pipeline" } dd { a href={"/pipelines/" (segment(&rec.pipeline))} { (rec.pipeline) } }
            dt { "Version" } dd.mono { (rec.version) }
            dt { "Trigger" } dd { (trigger(&rec.trigger)) }
            dt { "Params" } dd {
                @if rec.params.is_empty() { span.muted { "none" } }
                @for (k, v) in &rec.params { code { (k) "=" (v.as_str().map_or_else(|| v.to_string(), str::to_string)) } " " }
            }
            dt { "Created" } dd { (time(rec.created_at)) }
            dt { "Finished" } dd { @match rec.finished_at { Some(t) => (time(t)), None => span.muted { "not yet" } } }
            dt { "Duration" } dd { (duration(took)) }
            @if rec.no_cache { dt { "Cache" } dd { "off for this run (--no-cache)" } }
        }
        div.actions {
            @if live && session.may(Role::Operator) {
                form method="post" action={"/runs/" (segment(&rec.id)) "/cancel"} data-confirm="Cancel this run?" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Cancel run" }
                }
            }
            @if matches!(rec.state, RunState::Failed | RunState::Cancelled) && session.may(Role::Operator) {
                form method="post" action={"/runs/" (segment(&rec.id)) "/retry"} {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Retry what did not succeed" }
                }
            }
        }
        @if !q.expand.is_empty() { p { "Showing every instance of " code { (q.expand) } ". " a href={"/runs/" (segment(&id)) "#dag"} { "Group them again" } } }
        div #dag .dag data-live-run=[live.then(|| format!("/runs/{}/events", segment(&id)))] {
            (dag::svg(&nodes, &edges))
        }
        h2 { "Steps" }
        table #instances {
            thead { tr { th { "Instance" } th { "State" } th.num { "Attempts" } th { "Worker" } th.num { "Duration" } th { "Message" } } }
            tbody {
                @for s in &g.steps {
                    tr data-instance=(s.name) {
                        td { a.mono href=(step_href(&id, &s.name)) { (s.name) } }
                        td.state { (step_badge(s.state)) }
                        td.num.attempts { (s.attempts) }
                        td { (s.worker.clone().unwrap_or_default()) }
                        td.num { (span(s.started_at, s.finished_at, now)) }
                        td.message { (s.message.clone().unwrap_or_default()) }
                    }
                }
            }
        }
    };
    Ok(page::layout(&format!("Run {id}"), &session.csrf, "Runs", body).into_response())
}

/// From `start` to `end` (or now), or nothing when it never started.
pub(crate) fn span(start: Option<Millis>, end: Option<Millis>, now: Millis) -> String {
    start.map(|s| duration(end.unwrap_or(now).0.saturating_sub(s.0))).unwrap_or_default()
}

fn trigger(t: &Trigger) -> Markup {
    html! {
        @match t {
            Trigger::Manual { user } => { "manual" @if let Some(u) = user { " by " (u) } }
            Trigger::Schedule { schedule, at, backfill } => {
                (if *backfill { "backfill" } else { "cron" }) " " code { (schedule) }
                @if let Some(at) = at { " tick " (time(*at)) }
            }
            Trigger::Retry { of, from } => {
                "retry of " a.mono href={"/runs/" (segment(of))} { (of) }
                @if let Some(f) = from { " from " code { (f) } }
            }
            Trigger::Files { trigger, files } => {
                "new data (" code { (trigger) } ")"
                @for f in files { br; code { (f.path) } " " (f.size) " bytes, blake3 " span.mono { (f.digest) } }
            }
            Trigger::Upstream { trigger, pipeline, run, why } => {
                "after run " a.mono href={"/runs/" (segment(run))} { (run) } " of " (pipeline) " (" code { (trigger) } ")"
                @if !why.is_empty() { ": " code { (why) } }
            }
            Trigger::Webhook { trigger, key } => {
                "webhook (" code { (trigger) } "), delivery " code { (key) }
            }
        }
    }
}

/// What the live stream of a run page knows of its steps, to draw each change.
struct Drawn {
    states: Vec<StepState>,
    /// Each instance's step, and whether the step is a matrix (drawn as one node).
    parts: Vec<(String, bool)>,
    names: Vec<String>,
}

impl Drawn {
    /// Sends the events that draw `changes`: whether one of them ended the run, or `None` once
    /// the page has gone.
    async fn send(
        &mut self,
        tx: &tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
        changes: &[Change],
    ) -> Option<bool> {
        let mut ended = false;
        for change in changes {
            let (event, end) = self.event(change);
            ended |= end;
            if let Some(event) = event
                && tx.send(Ok(event)).await.is_err()
            {
                return None;
            }
        }
        Some(ended)
    }

    /// The SSE event that draws `change` (`None` for an instance the page does not know), and
    /// whether it ends the run.
    fn event(&mut self, change: &Change) -> (Option<Event>, bool) {
        let send = |ev: &str, data: serde_json::Value| Event::default().event(ev).data(data.to_string());
        match change {
            Change::Step { instance, state, attempt, message } => {
                let i = *instance as usize;
                let Some(slot) = self.states.get_mut(i) else { return (None, false) };
                *slot = *state;
                let (step, grouped) = &self.parts[i];
                let group = grouped.then(|| {
                    let of: Vec<StepState> = self
                        .parts
                        .iter()
                        .zip(&self.states)
                        .filter(|((s, _), _)| s == step)
                        .map(|(_, st)| *st)
                        .collect();
                    let (state, detail) = group_state(&of);
                    serde_json::json!({"key": step, "state": state.as_str(), "detail": detail})
                });
                let data = serde_json::json!({"instance": self.names[i], "step": step, "state": state.as_str(),
                    "attempt": attempt, "message": message.as_deref().unwrap_or_default(), "group": group});
                (Some(send("step", data)), false)
            }
            Change::Run { state } => {
                (Some(send("run", serde_json::json!({"state": state.as_str()}))), state.is_terminal())
            }
        }
    }
}

/// The run's changes as they happen: `step` with `{"instance", "step", "state", "attempt",
/// "message", "group"}` (`group`: `{"key", "state", "detail"}` for a step drawn as one node)
/// for each step change, `run` with `{"state"}`, and `end` once the run has finished. Starts
/// from the run's first event, so nothing between the page and the stream is missed. As
/// `WatchRun` does, the event right after the last one drawn comes from its announcement,
/// which carries its changes: a page open on a busy run reads the store only at its start, on
/// a gap or a lag, and after a quiet minute.
pub(crate) async fn events(State(web): State<Web>, Path(id): Path<String>) -> Result<Response, WebError> {
    let engine = web.engine.clone();
    let mut changes = engine.changes.subscribe();
    let (_, steps, _) = engine.load_run(&id)?;
    let states: Vec<StepState> = steps.iter().map(|s| s.state).collect();
    let parts: Vec<(String, bool)> = steps
        .iter()
        .map(|s| {
            let (step, matrix) = step_and_matrix(s);
            (step, !matrix.is_empty())
        })
        .collect();
    let names: Vec<String> = steps.into_iter().map(|s| s.name).collect();
    let mut drawn = Drawn { states, parts, names };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(256);
    tokio::spawn(async move {
        let mut last = 0;
        let mut next: Option<(u64, std::sync::Arc<crate::server::core::Seen>)> = None;
        loop {
            let mut ended = false;
            if let Some((seq, seen)) = next.take() {
                last = seq;
                let Some(end) = drawn.send(&tx, &seen.changes).await else { return };
                ended = end;
            } else {
                let Ok(events) = engine.store.events(&id, last) else { return };
                for item in events {
                    let Ok((seq, ev)) = item else { return };
                    last = seq;
                    let Some(end) = drawn.send(&tx, &ev.changes).await else { return };
                    ended |= end;
                }
                // Finished before this page saw the change (or a replayed finish).
                ended = ended
                    || (engine.store.run(&id).ok().flatten().is_some_and(|r| r.state.is_terminal())
                        && !crate::server::runs::has_more(&engine, &id, last));
            }
            if ended {
                let _ = tx.send(Ok(Event::default().event("end").data("{}"))).await;
                return;
            }
            let wait = crate::server::core::next_announced(&mut changes, &id, last);
            tokio::select! {
                got = wait => next = got,
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    let sse = Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    Ok(sse.into_response())
}

pub(crate) async fn cancel(State(web): State<Web>, Path(id): Path<String>) -> Result<Response, WebError> {
    web.engine.cancel(&id, "cancelled from the web UI")?;
    Ok(Redirect::to(&format!("/runs/{}", segment(&id))).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RetryForm {
    /// A step to re-run with everything downstream of it; empty: what did not succeed.
    #[serde(default)]
    pub from: String,
}

/// The dry run of "retry from this step": what would run again and what would be reused,
/// and the button that does it.
pub(crate) async fn retry_plan(
    State(web): State<Web>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(f): Query<RetryForm>,
) -> Result<Response, WebError> {
    let from = (!f.from.is_empty()).then_some(f.from.as_str());
    let (_, rerun, reused) = web.engine.retry(&id, from, true)?;
    let body = html! {
        h1 { "Retry run " span.mono { (id) } @if let Some(f) = from { " from " code { (f) } } }
        p { "Nothing has started yet. This is what the retry would do:" }
        div.cards {
            div.card { h2 { "Runs again (" (rerun.len()) ")" } ul #rerun { @for n in &rerun { li.mono { (n) } } } }
            div.card { h2 { "Reused from this run (" (reused.len()) ")" } ul #reused { @for n in &reused { li.mono { (n) } } } }
        }
        form method="post" action={"/runs/" (segment(&id)) "/retry"} {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="from" value=(f.from);
            button type="submit" { "Start the retry" }
            " " a href={"/runs/" (segment(&id))} { "Back to the run" }
        }
    };
    Ok(page::layout(&format!("Retry {id}"), &session.csrf, "Runs", body).into_response())
}

pub(crate) async fn retry(
    State(web): State<Web>,
    Path(id): Path<String>,
    Form(f): Form<RetryForm>,
) -> Result<Response, WebError> {
    let from = (!f.from.is_empty()).then_some(f.from.as_str());
    let (new, _, _) = web.engine.retry(&id, from, false)?;
    let to = new.map(|n| format!("/runs/{}", segment(&n))).unwrap_or_else(|| format!("/runs/{}", segment(&id)));
    Ok(Redirect::to(&to).into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    use http_body_util::BodyExt as _;

    use super::*;
    use crate::server::dispatch::Report;
    use crate::server::testkit;
    use crate::store::TriggerFile;

    /// The `(event, data)` pairs of SSE text.
    fn sse(text: &str) -> Vec<(String, serde_json::Value)> {
        text.split("\n\n")
            .filter_map(|block| {
                let event = block.lines().find_map(|l| l.strip_prefix("event: "))?;
                let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
                Some((event.to_string(), serde_json::from_str(data).unwrap()))
            })
            .collect()
    }

    /// A page open on a running chain draws every change of its steps and its end from the
    /// announcements, which carry them: the run's events are read from the store once, as the
    /// stream starts, where before they were read again at each announcement.
    #[tokio::test]
    async fn the_live_stream_draws_announced_changes_without_reading_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let e = Arc::new(testkit::engine(dir.path()));
        let yaml =
            "name: chain\nsteps:\n  a: {run: 'true'}\n  b: {run: 'true', needs: [a]}\n  c: {run: 'true', needs: [b]}\n";
        let run = testkit::start_run(&e, yaml, Millis(1));
        let (worker, session) = testkit::register(&e);
        let access = Arc::new(crate::access::Access::load(&[], &e.store).unwrap());
        let web = Web { engine: e.clone(), auth: Arc::new(super::super::auth::Auth::new(access, None).unwrap()) };
        let Ok(response) = events(State(web), Path(run.clone())).await else { panic!("no stream") };
        let mut body = response.into_body();
        let mut text = String::new();
        let read = async |body: &mut axum::body::Body| {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.expect("a frame in 10 s");
            String::from_utf8(frame.expect("the stream goes on").unwrap().into_data().unwrap().to_vec()).unwrap()
        };
        text.push_str(&read(&mut body).await); // the stream has read the run so far
        let reads = e.store.event_reads.load(Relaxed);

        let ok = || Report::Succeeded { metrics: Default::default(), outputs: Default::default() };
        let mut attempt = e.try_lease(&worker).unwrap().expect("a is ready").attempt;
        for _ in 0..2 {
            attempt = e.report(&worker, &session, &run, attempt, ok(), true).unwrap().expect("the next step").attempt;
        }
        assert!(e.report(&worker, &session, &run, attempt, ok(), true).unwrap().is_none());
        while !text.contains("event: end") {
            text.push_str(&read(&mut body).await);
        }
        let events = sse(&text);
        for step in ["a", "b", "c"] {
            let drawn: Vec<&str> = events
                .iter()
                .filter(|(ev, d)| ev == "step" && d["instance"] == step)
                .map(|(_, d)| d["state"].as_str().unwrap())
                .collect();
            assert!(drawn.ends_with(&["leased", "succeeded"]), "{step}: {drawn:?}\n{text}");
        }
        assert!(events.iter().any(|(ev, d)| ev == "run" && d["state"] == "succeeded"), "{text}");
        assert_eq!(e.store.event_reads.load(Relaxed), reads, "no read of the store after the start:\n{text}");
    }

    #[test]
    fn the_trigger_line_says_what_started_the_run_escaped() {
        let digest = weir_data::artifact::Digest::of(b"x,y\n");
        let files = Trigger::Files {
            trigger: "files".into(),
            files: vec![TriggerFile { path: "/in/<a>.csv".into(), size: 4, digest }],
        };
        let html = trigger(&files).into_string();
        assert!(html.contains("/in/&lt;a&gt;.csv") && html.contains(&digest.to_string()), "{html}");
        let up = Trigger::Upstream {
            trigger: "pipeline".into(),
            pipeline: "monitor".into(),
            run: "monitor-1".into(),
            why: "metrics.psi > 0.2 (metrics.psi=0.5)".into(),
        };
        let html = trigger(&up).into_string();
        assert!(html.contains("href=\"/runs/monitor-1\"") && html.contains("metrics.psi=0.5"), "{html}");
        let hook = trigger(&Trigger::Webhook { trigger: "webhook".into(), key: "d-1".into() }).into_string();
        assert!(hook.contains("webhook") && hook.contains("d-1"), "{hook}");
    }
}
