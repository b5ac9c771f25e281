//! Metrics: one metric across a pipeline's runs over time as a plot (pick the pipeline, then
//! the step and metric among those its runs reported; each point opens its run), and runs
//! side by side with the rows that differ marked, the rows `weir runs compare` shows. Served
//! at `/plots` and `/compare`, so that `/metrics` stays free for a Prometheus endpoint.

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::auth::Session;
use super::page::{self, run_badge, time};
use super::plot::{self, PlotPoint};
use super::{Web, WebError};
use crate::server::compare::number;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PlotQuery {
    #[serde(default)]
    pub pipeline: String,
    #[serde(default)]
    pub step: String,
    #[serde(default)]
    pub metric: String,
}

pub(crate) async fn plots(
    State(web): State<Web>,
    Extension(session): Extension<Session>,
    Query(q): Query<PlotQuery>,
) -> Result<Response, WebError> {
    let (pipelines, _) = web.engine.pipelines("", 1000)?;
    let names = if q.pipeline.is_empty() { Vec::new() } else { web.engine.metric_names(&q.pipeline)? };
    let mut steps: Vec<&String> = names.iter().map(|(s, _)| s).collect();
    steps.dedup();
    let mut metrics: Vec<&String> =
        names.iter().filter(|(s, _)| q.step.is_empty() || *s == q.step).map(|(_, m)| m).collect();
    metrics.sort();
    metrics.dedup();
    let history = if q.pipeline.is_empty() || q.metric.is_empty() {
        None
    } else {
        Some(web.engine.metric_history(&q.pipeline, &q.metric, &q.step, 0)?)
    };
    let body = html! {
        h1 { "Metrics" }
        form.filters method="get" action="/plots" {
            label { "Pipeline "
                select name="pipeline" {
                    option value="" { "choose…" }
                    @for p in &pipelines { option value=(p.name) selected[p.name == q.pipeline] { (p.name) } }
                }
            }
            label { " Step "
                select name="step" {
                    option value="" { "any" }
                    @for s in &steps { option value=(s) selected[**s == q.step] { (s) } }
                }
            }
            label { " Metric "
                select name="metric" {
                    @for m in &metrics { option value=(m) selected[**m == q.metric] { (m) } }
                }
            }
            button type="submit" { "Plot" }
        }
        @if !q.pipeline.is_empty() && names.is_empty() { p.muted { "No run of " (q.pipeline) " reported metrics yet (a step writes them to metrics.json)." } }
        @if let Some(h) = &history {
            @let points: Vec<PlotPoint> = h.points.iter().map(|p| PlotPoint {
                at: p.at.0,
                value: p.value,
                href: format!("/runs/{}", p.run_id),
                tip: format!("{} = {} · run {} · {}", q.metric, number(p.value), p.run_id, p.step),
            }).collect();
            @let (svg, skipped) = plot::svg(&points);
            section #plot {
                h2 { (q.metric) " of " (q.pipeline) @if !q.step.is_empty() { " / " (q.step) } }
                @if h.points.is_empty() {
                    p.muted { "No run reported " (q.metric) "." @if !h.metrics.is_empty() { " Reported: " (h.metrics.join(", ")) "." } }
                } @else {
                    div.plot { (svg) }
                    @if skipped > 0 { p.notice #skipped { (skipped) " value(s) that are not finite numbers (NaN or infinite) are not plotted." } }
                    table #points {
                        thead { tr { th { "Run" } th { "Step" } th { "Created" } th { "State" } th.num { (q.metric) } } }
                        tbody { @for p in h.points.iter().rev() {
                            tr { td { a.mono href={"/runs/" (p.run_id)} { (p.run_id) } } td { (p.step) @if p.cached { " (cached)" } } td { (time(p.at)) } td { (run_badge(p.run_state)) } td.num { (number(p.value)) } }
                        } }
                    }
                    form method="get" action="/compare" {
                        input type="hidden" name="runs" value=(h.points.iter().rev().take(5).map(|p| p.run_id.as_str()).collect::<Vec<_>>().join(","));
                        button type="submit" { "Compare the latest runs" }
                    }
                }
            }
        }
    };
    Ok(page::layout("Metrics", &session.csrf, "Metrics", body).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CompareQuery {
    #[serde(default)]
    pub runs: String,
}

pub(crate) async fn compare(
    State(web): State<Web>,
    Extension(session): Extension<Session>,
    Query(q): Query<CompareQuery>,
) -> Result<Response, WebError> {
    let ids: Vec<String> = q.runs.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    let rows = web.engine.compare_runs(&ids)?;
    let body = html! {
        h1 { "Compare runs" }
        p.muted { "Rows marked ≠ differ between the runs (a value missing from a run counts); duration is never marked." }
        table #compare {
            thead { tr { th { "" } th { "Field" } @for id in &ids { th { a.mono href={"/runs/" (id)} { (id) } } } } }
            tbody {
                @for r in &rows {
                    tr.differs[r.differs] data-field=(r.label) {
                        td { @if r.differs { span title="differs" { "≠" } } }
                        td { (r.label) }
                        @for c in &r.cells { td.mono { (c.as_deref().unwrap_or("-")) } }
                    }
                }
            }
        }
    };
    Ok(page::layout("Compare runs", &session.csrf, "Metrics", body).into_response())
}
