//! The model registry: the models, and a model's page with its versions, its aliases and
//! their whole history (refused promotions with the values their gate compared), promote and
//! rollback forms whose first submit shows what the registry would do (its dry run) before a
//! confirm button does it, and a version's lineage back to the ingested data as a graph whose
//! nodes open their runs and steps; the newest explanation's importance bars and its
//! comparison with the explained version before it (`explain.rs`).

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::{Session, encode};
use super::dag::{self, DagNode};
use super::page::{self, time};
use super::{Web, WebError};
use crate::server::tracking::Lineage;
use crate::store::AliasEventRecord;

pub(crate) async fn list(State(web): State<Web>, Extension(session): Extension<Session>) -> Result<Response, WebError> {
    let models = web.engine.list_models()?;
    let body = html! {
        h1 { "Models" }
        @if models.is_empty() {
            p.muted { "No models yet: a step with `register: {model: NAME, file: OUTPUT}` creates one when it succeeds." }
        } @else {
            table #models {
                thead { tr { th { "Model" } th.num { "Latest" } th { "Aliases" } th { "Updated" } } }
                tbody {
                    @for m in &models {
                        tr data-model=(m.name) {
                            td { a href={"/models/" (encode(&m.name))} { (m.name) } }
                            td.num { "v" (m.latest) }
                            td { @for (a, v) in &m.aliases { span.alias { (a) " → v" (v) } " " } }
                            td { (time(m.updated_at)) }
                        }
                    }
                }
            }
        }
    };
    Ok(page::layout("Models", &session.csrf, "Models", body).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ModelQuery {
    /// The version whose lineage to draw (0: the latest).
    #[serde(default)]
    pub lineage: u64,
}

pub(crate) async fn show(
    State(web): State<Web>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Query(q): Query<ModelQuery>,
) -> Result<Response, WebError> {
    render(&web, &session, &name, q.lineage, None)
}

/// A move the registry would make, shown with its confirm form.
struct Preview {
    event: AliasEventRecord,
    action: &'static str,
    reason: String,
}

fn render(
    web: &Web,
    session: &Session,
    name: &str,
    lineage_of: u64,
    preview: Option<Preview>,
) -> Result<Response, WebError> {
    let m = web.engine.get_model(name)?;
    let base = format!("/models/{}", encode(name));
    let chosen = if lineage_of == 0 { m.head.latest } else { lineage_of };
    // What a gRPC client would be told, never an internal error's details.
    let lineage = web
        .engine
        .lineage(&format!("{name}@{chosen}"), false, 0)
        .map_err(|e| crate::api::status::status(e).message().to_string());
    // The newest explained version's bars, compared with the explained version before it.
    let explained: Vec<(u64, &weir_core::explain::Explanation)> =
        m.versions.iter().filter_map(|v| Some((v.version, v.explanation.as_ref()?))).collect();
    let comparison = match explained.as_slice() {
        [.., (a, _), (b, _)] => web.engine.diff_explanations(name, *a, *b).ok(),
        _ => None,
    };
    let body = html! {
        h1 { "Model " (name) }
        @if let Some(p) = &preview { (preview_card(session, &base, p)) }
        section.aliases {
            h2 { "Aliases" }
            @if m.head.aliases.is_empty() { p.muted { "No aliases yet." } }
            ul { @for (a, v) in &m.head.aliases { li data-alias=(a) { strong { (a) } " → v" (v) } } }
        }
        section.versions {
            h2 { "Versions" }
            table #versions {
                thead { tr { th.num { "Version" } th { "File" } th { "Digest" } th { "Run" } th { "Step" } th { "Metrics" } th { "Registered" } th { "Lineage" } } }
                tbody {
                    @for v in m.versions.iter().rev() {
                        tr data-version=(v.version) {
                            td.num { "v" (v.version) }
                            td.mono { (v.file) }
                            td.mono title=(v.digest.to_string()) { (v.digest.to_string().get(..12).unwrap_or_default()) }
                            td { a.mono href={"/runs/" (v.run_id)} { (v.run_id) } }
                            td { a href={"/runs/" (v.run_id) "/steps/" (encode(&v.step))} { (v.step) } }
                            td.mono { @for (k, x) in &v.metrics { (k) "=" (x) " " } }
                            td { (time(v.created_at)) }
                            td { a href={(base) "?lineage=" (v.version) "#lineage"} { "lineage" } }
                        }
                    }
                }
            }
        }
        @if let Some((version, e)) = explained.last() {
            section #explanation {
                h2 { "Explanation of v" (version) }
                (super::explain::bars(e))
                @if let Some(d) = &comparison {
                    h3 { "Compared with v" (d.from) }
                    (super::explain::comparison(d))
                }
            }
        }
        section.history {
            h2 { "Alias history" }
            table #history {
                thead { tr { th { "When" } th { "Alias" } th { "Move" } th { "Outcome" } th { "By" } th { "Reason" } th { "Gate" } } }
                tbody {
                    @for e in m.history.iter().rev() {
                        tr.refused[e.refused] {
                            td { (time(e.at)) }
                            td { (e.alias) }
                            td { (from_to(e)) }
                            td { @if e.refused { span.badge.st-failed { "✗ refused" } } @else if e.rollback { "↶ rolled back" } @else { "✓ moved" } }
                            td { (e.by.as_deref().unwrap_or("-")) }
                            td { (e.reason) }
                            td.mono {
                                @if let Some(x) = &e.expression { code { (x) } br; }
                                @for (r, v) in &e.compared { span.compared { (r) " = " (v) } br; }
                            }
                        }
                    }
                }
            }
        }
        @if session.may(crate::access::Role::Admin) { section.actions {
            h2 { "Promote" }
            form method="post" action={(base) "/promote"} {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "Version " select name="version" { @for v in m.versions.iter().rev() { option value=(v.version) { "v" (v.version) } } } }
                label { " alias " input type="text" name="alias" required placeholder="production"; }
                label { " reason " input type="text" name="reason"; }
                button type="submit" { "Check" }
            }
            h2 { "Roll back" }
            form method="post" action={(base) "/rollback"} {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "Alias " select name="alias" { @for a in m.head.aliases.keys() { option value=(a) { (a) } } } }
                label { " reason " input type="text" name="reason"; }
                button type="submit" { "Check" }
            }
        } }
        section #lineage {
            h2 { "Lineage of v" (chosen) }
            @match &lineage {
                Ok(l) => { (lineage_graph(l)) @if let Some(t) = &l.truncated { p.muted { (t) } } }
                Err(e) => { p.muted { "No lineage: " (e) } }
            }
        }
    };
    Ok(page::layout(name, &session.csrf, "Models", body).into_response())
}

fn from_to(e: &AliasEventRecord) -> String {
    match e.from {
        Some(f) => format!("v{f} → v{}", e.to),
        None => format!("(new) → v{}", e.to),
    }
}

fn preview_card(session: &Session, base: &str, p: &Preview) -> Markup {
    html! {
        section.preview #preview role="status" {
            h2 { "Check: " (p.action) }
            p { "The registry would move " strong { (p.event.alias) } " " (from_to(&p.event)) " (" (p.event.reason) "). Nothing is recorded yet." }
            form method="post" action={(base) "/" (p.action)} {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="alias" value=(p.event.alias);
                input type="hidden" name="version" value=(p.event.to);
                input type="hidden" name="reason" value=(p.reason);
                input type="hidden" name="confirm" value="true";
                button type="submit" { "Confirm " (p.action) }
            }
        }
    }
}

/// Artifacts, the steps that made them and their runs, each step and run linked to its page.
fn lineage_graph(l: &Lineage) -> Markup {
    let mut nodes: Vec<DagNode> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut edges = Vec::new();
    let mut add = |key: String, node: DagNode, nodes: &mut Vec<DagNode>| -> usize {
        *index.entry(key).or_insert_with(|| {
            nodes.push(node);
            nodes.len() - 1
        })
    };
    for n in &l.nodes {
        let short = n.digest.get(..12).unwrap_or(&n.digest).to_string();
        let a = add(
            format!("a:{}", n.digest),
            DagNode { key: format!("artifact:{short}"), label: n.path.clone(), detail: short, ..Default::default() },
            &mut nodes,
        );
        if n.run_id.is_empty() {
            continue;
        }
        let step_href = format!("/runs/{}/steps/{}", n.run_id, encode(&n.step));
        let s = add(
            format!("s:{}:{}", n.run_id, n.step),
            DagNode {
                key: format!("step:{}:{}", n.run_id, n.step),
                label: n.step.clone(),
                detail: "step".into(),
                href: Some(step_href),
                ..Default::default()
            },
            &mut nodes,
        );
        let r = add(
            format!("r:{}", n.run_id),
            DagNode {
                key: format!("run:{}", n.run_id),
                label: n.run_id.clone(),
                detail: "run".into(),
                href: Some(format!("/runs/{}", n.run_id)),
                ..Default::default()
            },
            &mut nodes,
        );
        edges.push((r, s));
        edges.push((s, a));
    }
    // Inputs go into the step that made each artifact.
    for n in &l.nodes {
        let Some(&s) = index.get(&format!("s:{}:{}", n.run_id, n.step)) else { continue };
        for link in &n.links {
            if let Some(&input) = index.get(&format!("a:{link}")) {
                edges.push((input, s));
            }
        }
    }
    edges.sort_unstable();
    edges.dedup();
    html! { div.dag { (dag::svg(&nodes, &edges)) } }
}

#[derive(Debug, Deserialize)]
pub(crate) struct MoveForm {
    #[serde(default)]
    pub alias: String,
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub confirm: bool,
}

/// First submit: the registry's dry run shown with a confirm button; confirmed: the move.
pub(crate) async fn promote(
    State(web): State<Web>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(f): Form<MoveForm>,
) -> Result<Response, WebError> {
    let event =
        web.engine.promote_model(&name, &f.alias, f.version, &f.reason, !f.confirm, Some(&session.principal.name))?;
    if f.confirm {
        web.engine.commit()?;
        return Ok(Redirect::to(&format!("/models/{}", encode(&name))).into_response());
    }
    render(&web, &session, &name, 0, Some(Preview { event, action: "promote", reason: f.reason }))
}

pub(crate) async fn rollback(
    State(web): State<Web>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(f): Form<MoveForm>,
) -> Result<Response, WebError> {
    let event = web.engine.rollback_model(&name, &f.alias, &f.reason, !f.confirm, Some(&session.principal.name))?;
    if f.confirm {
        web.engine.commit()?;
        return Ok(Redirect::to(&format!("/models/{}", encode(&name))).into_response());
    }
    render(&web, &session, &name, 0, Some(Preview { event, action: "rollback", reason: f.reason }))
}
