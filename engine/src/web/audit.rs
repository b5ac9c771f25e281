//! The web UI's mutations in the audit log, as the gRPC guard records the API's: every form
//! POST but logging out, with the session's principal, the action its path names, the path as
//! the target, and the outcome (`ok` for a 2xx or a redirect, else `http_NNN`), written and
//! flushed before the answer leaves. Refused POSTs (a role too low) are recorded too.

use axum::http::{Method, StatusCode};

use super::Web;
use crate::access::Principal;
use crate::store::AuditRecord;

/// The audit action of a web request, `None` for reads and logging out.
pub(crate) fn action(method: &Method, path: &str) -> Option<&'static str> {
    if method == Method::GET || method == Method::HEAD || path == "/logout" || path == "/login" {
        return None;
    }
    Some(match path.rsplit('/').next().unwrap_or_default() {
        "cancel" => "cancel",
        "retry" => "retry",
        "approve" => "approve",
        "start" => "start",
        "pause" => "schedule.pause",
        "backfill" => "schedule.backfill",
        "promote" => "promote",
        "rollback" => "rollback",
        _ => "web.post",
    })
}

pub(crate) async fn record(web: &Web, who: &Principal, action: &'static str, path: &str, status: StatusCode) {
    let outcome = if status.is_success() || status.is_redirection() {
        "ok".to_string()
    } else {
        format!("http_{}", status.as_u16())
    };
    let entry = AuditRecord {
        id: 0,
        at: web.engine.clock.now(),
        who: who.name.clone(),
        role: who.role.name().to_string(),
        action: action.to_string(),
        target: format!("web {path}"),
        outcome,
        method: format!("POST {path}"),
    };
    tracing::info!(who = %entry.who, action, target = %entry.target, outcome = %entry.outcome, "audit");
    let engine = web.engine.clone();
    match tokio::task::spawn_blocking(move || engine.store.append_audit(&entry)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, action, "cannot write the audit entry"),
        Err(e) => tracing::error!(error = %e, action, "cannot write the audit entry"),
    }
}
