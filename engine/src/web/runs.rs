//! The runs list: newest first as the store lists them, filtered by pipeline, state and
//! trigger, a page at a time by the store's page token (so it stays fast however many runs
//! are stored), with states kept current by `/events`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use weir_core::run::RunState;

use super::auth::{Session, encode};
use super::page::{self, badge, duration, run_badge, time};
use super::{Web, WebError};
use crate::store::Trigger;

/// Rows per page.
const PAGE: usize = 50;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunsQuery {
    #[serde(default)]
    pub pipeline: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub trigger: String,
    /// The store's page token of the page to show; empty: the first.
    #[serde(default)]
    pub page: String,
}

const STATES: [RunState; 5] =
    [RunState::Queued, RunState::Running, RunState::Succeeded, RunState::Failed, RunState::Cancelled];

pub(crate) async fn list(
    State(web): State<Web>,
    Extension(session): Extension<Session>,
    Query(q): Query<RunsQuery>,
) -> Result<Response, WebError> {
    let states: Vec<RunState> = STATES.iter().copied().filter(|s| s.as_str() == q.state).collect();
    let (runs, next) = web.engine.list_runs(&q.pipeline, &states, &q.trigger, PAGE, &q.page)?;
    let (pipelines, _) = web.engine.pipelines("", 500)?;
    let now = web.engine.clock.now().0;
    let filter = |page: &str| {
        format!(
            "/runs?pipeline={}&state={}&trigger={}&page={}",
            encode(&q.pipeline),
            encode(&q.state),
            encode(&q.trigger),
            encode(page)
        )
    };
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action="/runs" {
            label { "Pipeline"
                select name="pipeline" {
                    option value="" { "any" }
                    @for p in &pipelines { option value=(p.name) selected[p.name == q.pipeline] { (p.name) } }
                }
            }
            label { "State"
                select name="state" {
                    option value="" { "any" }
                    @for s in STATES { option value=(s.as_str()) selected[s.as_str() == q.state] { (s.as_str()) } }
                }
            }
            label { "Trigger"
                select name="trigger" {
                    option value="" { "any" }
                    @for t in Trigger::KINDS { option value=(t) selected[t == q.trigger] { (t) } }
                }
            }
            button type="submit" { "Filter" }
        }
        p #new-runs .notice hidden { span.count { "0" } " new run(s) started. " a href=(filter("")) { "Show them" } }
        @if runs.is_empty() {
            p.muted { "No runs match. Start one from a " a href="/pipelines" { "pipeline" } " or with `weir start NAME`." }
        } @else {
            table #runs data-live-runs data-first=(q.page.is_empty()) {
                thead { tr { th { "Run" } th { "Pipeline" } th { "State" } th { "Trigger" } th { "Started" } th.num { "Duration" } th.num { "Steps done" } } }
                tbody {
                    @for r in &runs {
                        @match &r.record {
                            Some(rec) => {
                                @let done = r.steps.iter().filter(|s| s.state.is_terminal()).count();
                                @let took = rec.finished_at.unwrap_or(weir_core::run::Millis(now)).0.saturating_sub(rec.created_at.0);
                                tr data-run=(rec.id) {
                                    td { a.mono href={"/runs/" (rec.id)} { (rec.id) } @if !r.message.is_empty() { " " span.error { (r.message) } } }
                                    td { a href={"/pipelines/" (rec.pipeline)} { (rec.pipeline) } }
                                    td.state {
                                        (run_badge(rec.state))
                                        @if r.steps.iter().any(|s| s.state == weir_core::run::StepState::AwaitingApproval) {
                                            " " (badge("awaiting_approval"))
                                        }
                                    }
                                    td { (rec.trigger.kind()) }
                                    td { (time(rec.created_at)) }
                                    td.num { (duration(took)) }
                                    td.num.progress { (done) "/" (r.steps.len()) }
                                }
                            }
                            None => {
                                tr { td.mono { (r.id) } td colspan="6" { (badge("failed")) " " span.error { (r.message) } } }
                            }
                        }
                    }
                }
            }
        }
        div.pager {
            @if !q.page.is_empty() { a href=(filter("")) { "← Newest" } }
            @if next.is_empty() { span { "No more runs." } } @else { a href=(filter(&next)) { "Older runs →" } }
        }
    };
    Ok(page::layout("Runs", &session.csrf, "Runs", body).into_response())
}

/// Every run's state changes as they happen, for the runs list: an event `run` with
/// `{"run", "state", "done", "total"}` whenever a run's state or progress moves, and `reload`
/// when this stream fell too far behind to say what changed.
pub(crate) async fn events(State(web): State<Web>) -> impl IntoResponse {
    let mut changes = web.engine.changes.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        let mut sent: HashMap<String, (RunState, usize)> = HashMap::new();
        loop {
            let run = match changes.recv().await {
                Ok(announced) => announced.run,
                Err(RecvError::Lagged(_)) => {
                    if tx.send(Ok(Event::default().event("reload").data("{}"))).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let Ok(p) = web.engine.run_progress(&run) else { continue };
            if sent.get(&run) == Some(&(p.state, p.done)) {
                continue;
            }
            if p.state.is_terminal() {
                sent.remove(&run);
            } else {
                sent.insert(run.clone(), (p.state, p.done));
            }
            let data = serde_json::json!({"run": run, "state": p.state.as_str(), "done": p.done, "total": p.total});
            if tx.send(Ok(Event::default().event("run").data(data.to_string()))).await.is_err() {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
