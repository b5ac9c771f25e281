//! The pipelines: the list (latest version, last run, schedule) and a pipeline's page: its
//! versions, the YAML with line anchors, its planned graph, a start form built from the typed
//! params (with the CLI's diagnostics beside each field when they do not fit) and the schedule
//! card (next fires in its zone, skipped ticks, pause/resume, backfill after a dry run).

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use weir_core::spec::{Param, ParamType};

use super::auth::{Session, encode};
use super::dag::{self, DagNode};
use super::page::{self, run_badge, time};
use super::{Web, WebError};
use crate::access::Role;
use crate::server::browse::{PipelineDetail, param_of_diagnostics};
use crate::server::cache::PipelineRef;
use crate::server::error::ApiError;
use crate::server::scheduler::{BackfillOutcome, BackfillTick};

pub(crate) async fn list(State(web): State<Web>, Extension(session): Extension<Session>) -> Result<Response, WebError> {
    let (pipelines, _) = web.engine.pipelines("", 1000)?;
    let mut rows = Vec::with_capacity(pipelines.len());
    for p in pipelines {
        let (runs, _) = web.engine.list_runs(&p.name, &[], "", 1, "")?;
        rows.push((p, runs.into_iter().next().and_then(|r| r.record)));
    }
    let body = html! {
        h1 { "Pipelines" }
        @if rows.is_empty() {
            p.muted { "No pipelines yet: submit one with `weir submit DIR`." }
        } @else {
            table #pipelines {
                thead { tr { th { "Pipeline" } th { "Latest version" } th { "Submitted" } th { "Last run" } th { "Schedule" } } }
                tbody {
                    @for (p, last) in &rows {
                        tr data-pipeline=(p.name) {
                            td { a href={"/pipelines/" (encode(&p.name))} { (p.name) } @if !p.description.is_empty() { br; span.muted { (p.description) } } }
                            td.mono { (short(&p.latest_version)) " (" (p.version_count) " versions)" }
                            td { @if let Some(at) = p.submitted_at { (time(at)) } }
                            td { @match last { Some(r) => { a.mono href={"/runs/" (r.id)} { (r.id) } " " (run_badge(r.state)) }, None => { span.muted { "never run" } } } }
                            td.mono { @if p.schedule.is_empty() { span.muted { "none" } } @else { (p.schedule) } }
                        }
                    }
                }
            }
        }
    };
    Ok(page::layout("Pipelines", &session.csrf, "Pipelines", body).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct VersionQuery {
    #[serde(default)]
    pub version: String,
}

/// What the start form and the backfill form had, to show again with their answers.
#[derive(Default)]
struct Forms {
    values: HashMap<String, String>,
    no_cache: bool,
    /// Per param (or `None`: about no one field), the CLI's message.
    errors: Vec<(Option<String>, String)>,
    /// The full rendered diagnostics, as `weir start` prints them.
    rendered: String,
    backfill: Option<(String, String, Vec<BackfillTick>)>,
    notice: String,
}

pub(crate) async fn show(
    State(web): State<Web>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Response, WebError> {
    let detail = web.engine.pipeline_detail(&name, &q.version)?;
    render(&web, &session, &detail, Forms::default(), StatusCode::OK)
}

fn render(web: &Web, session: &Session, d: &PipelineDetail, f: Forms, code: StatusCode) -> Result<Response, WebError> {
    let schedules = web.engine.schedules(&d.name).unwrap_or_default();
    let nodes: Vec<DagNode> = d
        .nodes
        .iter()
        .map(|n| DagNode {
            key: n.name.clone(),
            label: n.name.clone(),
            stage: n.stage.clone(),
            detail: if n.name == n.step { String::new() } else { n.step.clone() },
            ..Default::default()
        })
        .collect();
    let base = format!("/pipelines/{}", encode(&d.name));
    let body = html! {
        h1 { "Pipeline " (d.name) }
        @if let Some(desc) = d.pipeline.description() { p { (desc) } }
        @if !f.notice.is_empty() { p.notice role="status" { (f.notice) } }
        section.versions {
            h2 { "Versions" }
            ul {
                @for (v, at) in &d.versions {
                    li {
                        @if *v == d.version { strong.mono { (short(v)) } " (shown)" }
                        @else { a.mono href={(base) "?version=" (encode(v))} { (short(v)) } }
                        @if let Some(at) = at { " · submitted " (time(*at)) }
                    }
                }
            }
        }
        @if session.may(Role::Operator) { section.start { h2 { "Start a run" } (start_form(session, d, &f, &base)) } }
        section.graph { h2 { "Graph" } div.dag { (dag::svg(&nodes, &d.edges)) } }
        @for s in &schedules { (schedule_card(session, s, &f, &base)) }
        section.source {
            h2 { "pipeline.yaml" }
            table.source {
                tbody {
                    @for (i, line) in d.yaml.lines().enumerate() {
                        tr id={"L" (i + 1)} { td.ln { a href={"#L" (i + 1)} { (i + 1) } } td { code { (line) } } }
                    }
                }
            }
        }
    };
    let mut resp = page::layout(&d.name, &session.csrf, "Pipelines", body).into_response();
    *resp.status_mut() = code;
    Ok(resp)
}

fn start_form(session: &Session, d: &PipelineDetail, f: &Forms, base: &str) -> Markup {
    let general: Vec<&String> = f.errors.iter().filter(|(p, _)| p.is_none()).map(|(_, m)| m).collect();
    html! {
        form.start method="post" action={(base) "/start"} {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="version" value=(d.version);
            @for p in d.pipeline.params() {
                @let errs: Vec<&String> = f.errors.iter().filter(|(n, _)| n.as_deref() == Some(p.name.as_str())).map(|(_, m)| m).collect();
                div.field.invalid[!errs.is_empty()] {
                    label for={"p-" (p.name)} { (p.name) " " span.muted { "(" (p.kind) ")" } }
                    (param_input(p, f.values.get(&p.name)))
                    @if let Some(desc) = &p.description { span.help { (desc) } }
                    @for e in &errs { span.error role="alert" data-param=(p.name) { (e) } }
                }
            }
            @if d.pipeline.params().is_empty() { p.muted { "This pipeline declares no params." } }
            label { input type="checkbox" name="no_cache" value="true" checked[f.no_cache]; " no cache (run every step again)" }
            @for e in &general { p.error role="alert" { (e) } }
            @if !f.rendered.is_empty() { pre.diagnostics { (f.rendered) } }
            button type="submit" { "Start run" }
        }
    }
}

fn param_input(p: &Param, given: Option<&String>) -> Markup {
    let name = format!("p.{}", p.name);
    let id = format!("p-{}", p.name);
    let default = p.default.as_ref().map(|v| v.to_string()).unwrap_or_default();
    let value = given.cloned().unwrap_or_else(|| default.clone());
    if !p.choices.is_empty() {
        return html! {
            select id=(id) name=(name) {
                @if p.default.is_none() { option value="" { "choose…" } }
                @for c in &p.choices { @let c = c.to_string(); option value=(c) selected[c == value] { (c) } }
            }
        };
    }
    match p.kind {
        // The hidden `false` is sent when the box is not ticked; the last value wins.
        ParamType::Bool => html! {
            input type="hidden" name=(name) value="false";
            input id=(id) type="checkbox" name=(name) value="true" checked[value == "true"];
        },
        ParamType::Int | ParamType::Float => html! {
            input id=(id) type="text" inputmode="decimal" name=(name) value=(value) placeholder=(default);
            @if let Some(min) = p.min { span.muted { " min " (min) } }
            @if let Some(max) = p.max { span.muted { " max " (max) } }
        },
        ParamType::String => html! {
            input id=(id) type="text" name=(name) value=(value) placeholder=(default)
                pattern=[p.pattern.as_ref().map(|r| r.as_str().to_string())];
        },
    }
}

fn schedule_card(session: &Session, s: &crate::server::scheduler::ScheduleView, f: &Forms, base: &str) -> Markup {
    let zone = s.schedule.timezone;
    let in_zone = |at: weir_core::run::Millis| {
        chrono::DateTime::from_timestamp_millis(at.0 as i64)
            .map(|t| t.with_timezone(&zone).format("%Y-%m-%d %H:%M %Z").to_string())
            .unwrap_or_default()
    };
    let t = &s.record.ticks;
    html! {
        section.schedule #schedule {
            h2 { "Schedule" }
            p { code { (s.schedule.cron) } " in " (zone.name())
                @if t.paused { " · " strong.paused { "paused" } } @else { " · active" } }
            p { "Next fires: " @for (i, at) in s.next_fires.iter().enumerate() { @if i > 0 { ", " } time.next-fire { (in_zone(*at)) } } }
            p { "Last run: " @match &t.last_run {
                Some(r) => { a.mono href={"/runs/" (r)} { (r) } @if let Some(st) = s.last_run_state { " " (run_badge(st)) } },
                None => { span.muted { "none yet" } } } }
            @if !t.skipped.is_empty() {
                h3 { "Skipped ticks" }
                ul.skipped { @for k in &t.skipped { li { (k.count) " tick(s) " (in_zone(k.first)) " – " (in_zone(k.last)) ": " (k.reason) } } }
            }
            @if s.backfill_left > 0 { p { (s.backfill_left) " backfill tick(s) still to start." } }
            @if session.may(Role::Operator) {
            form method="post" action={(base) "/pause"} {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="paused" value=(if t.paused { "false" } else { "true" });
                button type="submit" { @if t.paused { "Resume" } @else { "Pause" } }
            }
            h3 { "Backfill" }
            @let (from, to) = f.backfill.as_ref().map(|(a, b, _)| (a.clone(), b.clone())).unwrap_or_default();
            form method="post" action={(base) "/backfill"} {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "From " input type="text" name="from" value=(from) placeholder="2026-01-01T00:00:00Z"; }
                label { " to " input type="text" name="to" value=(to) placeholder="2026-01-02T00:00:00Z"; }
                button type="submit" { "Show the ticks" }
            }
            @if let Some((from, to, ticks)) = &f.backfill {
                p #dry-run { (ticks.len()) " tick(s) in this range (dry run, nothing started):" }
                ul.ticks { @for k in ticks { li { time { (in_zone(k.at)) } " → " span.mono { (k.run_id) } " " (outcome(k.outcome)) } } }
                form method="post" action={(base) "/backfill"} {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="from" value=(from);
                    input type="hidden" name="to" value=(to);
                    input type="hidden" name="confirm" value="true";
                    button type="submit" { "Run this backfill" }
                }
            }
            }
        }
    }
}

fn outcome(o: BackfillOutcome) -> &'static str {
    match o {
        BackfillOutcome::Exists => "(a run exists)",
        BackfillOutcome::Started => "(would start)",
        BackfillOutcome::Queued => "(would queue)",
    }
}

fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

pub(crate) async fn start(
    State(web): State<Web>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let field = |k: &str| form.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let version = field("version");
    let no_cache = field("no_cache") == "true";
    let detail = web.engine.pipeline_detail(&name, &version)?;
    let mut values: HashMap<String, String> = HashMap::new();
    for (k, v) in &form {
        if let Some(p) = k.strip_prefix("p.") {
            values.insert(p.to_string(), v.clone());
        }
    }
    // An empty field means the declared default, as leaving `-p` out does.
    let overrides: Vec<(String, String)> =
        values.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect();
    let target = Some(PipelineRef::Version(detail.version.clone()));
    match web.engine.start_run(target, overrides, no_cache, Some(session.principal.name.clone())).await {
        Ok(id) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
        Err(ApiError::Diagnostics { message, diagnostics, .. }) => {
            let errors = param_of_diagnostics(&detail.pipeline, &diagnostics);
            let f = Forms { values, no_cache, errors, rendered: message, ..Default::default() };
            render(&web, &session, &detail, f, StatusCode::BAD_REQUEST)
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PauseForm {
    pub paused: bool,
}

pub(crate) async fn pause(
    State(web): State<Web>,
    Path(name): Path<String>,
    Form(form): Form<PauseForm>,
) -> Result<Response, WebError> {
    web.engine.pause(&name, form.paused)?;
    Ok(Redirect::to(&format!("/pipelines/{}#schedule", encode(&name))).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct BackfillForm {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub confirm: bool,
}

/// The first submit is a dry run that lists the ticks; the confirm button runs it.
pub(crate) async fn backfill(
    State(web): State<Web>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(form): Form<BackfillForm>,
) -> Result<Response, WebError> {
    let detail = web.engine.pipeline_detail(&name, "")?;
    let ticks = web.engine.request_backfill(&name, &form.from, &form.to, !form.confirm)?;
    let f = if form.confirm {
        let started = ticks.iter().filter(|t| t.outcome != BackfillOutcome::Exists).count();
        Forms { notice: format!("Backfill requested: {started} run(s) started or queued."), ..Default::default() }
    } else {
        Forms { backfill: Some((form.from, form.to, ticks)), ..Default::default() }
    };
    render(&web, &session, &detail, f, StatusCode::OK)
}
