//! A step's approval gate on its page: what was asked and, while it awaits, the approve and
//! reject buttons (a POST with the session's CSRF token, an optional name and comment); after,
//! who decided, when and why. The decision goes through `Engine::approve`, the service the
//! Approve RPC uses, recorded as made by the session's principal. Only roles that may approve
//! (operator, admin) see the buttons.

use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use weir_core::run::StepState;

use super::auth::Session;
use super::page::time;
use super::run::step_href;
use super::{Web, WebError};
use crate::server::approvals::Decide;
use crate::store::StepRecord;

/// The approval block of a step's page; empty for a step that never asked.
pub(crate) fn block(run: &str, instance: &str, step: &StepRecord, session: &Session) -> Markup {
    let Some(a) = &step.approval else { return html! {} };
    let action = format!("{}/approve", step_href(run, instance));
    html! {
        section #approval {
            h2 { "Approval" }
            p { "Asked " (time(a.requested_at)) ": " strong { (a.message) } }
            @if let Some(due) = a.due_at { p.muted { "Times out " (time(due)) } }
            @if let Some(d) = &a.decision {
                p #decision data-approved=(d.approved) {
                    (if d.approved { "Approved" } else { "Rejected" }) " by " (d.by) " at " (time(d.at))
                    @if !d.comment.is_empty() { ": " (d.comment) }
                }
            } @else if step.state == StepState::AwaitingApproval && session.may(crate::access::Role::Operator) {
                form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label { "Your name " input type="text" name="name" maxlength="256"; }
                    label { "Comment " input type="text" name="comment" maxlength="4096"; }
                    button type="submit" name="decision" value="approve" { "Approve" }
                    " "
                    button type="submit" name="decision" value="reject" data-confirm="Reject this step? It fails." { "Reject" }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct DecisionForm {
    #[serde(default)]
    pub decision: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub comment: String,
}

pub(crate) async fn decide(
    State(web): State<Web>,
    Path((id, instance)): Path<(String, String)>,
    axum::Extension(session): axum::Extension<Session>,
    Form(f): Form<DecisionForm>,
) -> Result<Response, WebError> {
    let approve = match f.decision.as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(crate::server::error::ApiError::Invalid(format!(
                "decision must be `approve` or `reject`, not `{other}`"
            ))
            .into());
        }
    };
    let who = &session.principal.name;
    let d = Decide { run_id: &id, step: &instance, approve, comment: &f.comment, name: &f.name, credential: who };
    web.engine.approve(&d)?;
    Ok(Redirect::to(&step_href(&id, &instance)).into_response())
}
