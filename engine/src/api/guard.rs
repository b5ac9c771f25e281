//! The gRPC guard: an axum middleware in front of every gRPC service. It reads the bearer
//! token, asks [`Access`] for the caller's [`Principal`] and whether its role may call the
//! method (the table in `access::table`, keyed by the request's path; a method not there is
//! refused), puts the principal in the request's extensions for the handlers, and for a
//! mutating method writes an audit entry (who, when, what, outcome) to the store, flushed,
//! before the answer leaves. Refusals of mutating methods are recorded too. Health checking and
//! reflection pass untouched. It decides nothing else: the rules are `access`'s.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tonic::{Code, Status};

use super::audit_target::{AuditNote, Methods};
use crate::access::{Access, Principal, Refusal, table};
use crate::server::core::Engine;
use crate::store::AuditRecord;

/// The most a unary request may hold for the guard to read its target (tonic's own limit).
const MAX_UNARY: usize = 4 * 1024 * 1024 + 5;

/// What the guard needs.
pub(crate) struct Guard {
    pub access: Arc<Access>,
    pub engine: Arc<Engine>,
    /// Decoded from the compiled descriptors on a blocking thread at start (`super::routes`),
    /// so that it does not delay serving; [`Guard::methods`] waits for it if need be.
    pub methods: Arc<OnceLock<Methods>>,
    /// Under mTLS: worker calls need a verified client certificate (`peer.rs`).
    pub worker_cert: bool,
}

impl Guard {
    fn methods(&self) -> &Methods {
        self.methods.get_or_init(Methods::load)
    }
}

/// The bearer token of `req`, if any.
fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get("authorization")?.to_str().ok()?;
    v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(str::trim)
}

pub(crate) async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let method = req.uri().path().to_string();
    if table::public(&method) {
        return next.run(req).await;
    }
    if method.starts_with("/weir.v1.WeirWorker/")
        && let Err(status) = super::peer::require_certificate(req.extensions(), g.worker_cert)
    {
        return status.into_http();
    }
    let action = table::rule(&method).and_then(|r| r.action);
    let principal = match g.access.check(&method, bearer(&req)) {
        Ok(p) => p,
        Err(refusal) => {
            let status = match &refusal {
                Refusal::NoToken | Refusal::BadToken => Status::unauthenticated(refusal.to_string()),
                Refusal::Role { .. } | Refusal::Unlisted(_) => Status::permission_denied(refusal.to_string()),
            };
            if let (Some(action), Refusal::Role { name, role, .. }) = (action, &refusal) {
                let who = Principal { name: name.clone(), role: *role };
                record(&g, &who, action, &method, String::new(), "permission_denied").await;
            }
            tracing::info!(%method, %refusal, "call refused");
            return status.into_http();
        }
    };
    let Some(action) = action else {
        let mut req = req;
        req.extensions_mut().insert(principal);
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let note = AuditNote::default();
    parts.extensions.insert(principal.clone());
    parts.extensions.insert(note.clone());
    let (body, target) = if g.methods().client_streaming(&method) {
        (body, String::new())
    } else {
        match axum::body::to_bytes(body, MAX_UNARY).await {
            Ok(bytes) => {
                let target = g.methods().target(&method, &bytes);
                (Body::from(bytes), target)
            }
            Err(_) => return Status::resource_exhausted("the request is too large").into_http(),
        }
    };
    let response = next.run(Request::from_parts(parts, body)).await;
    let outcome = outcome(&response);
    let target = note.joined(target);
    record(&g, &principal, action, &method, target, &outcome).await;
    response
}

/// `ok`, or the snake_case name of the status code an answer carries in its headers (an error
/// before any message: tonic's trailers-only answer).
fn outcome(response: &Response) -> String {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
        .unwrap_or(Code::Ok);
    code_name(code)
}

/// `PermissionDenied` as `permission_denied`; `Ok` as `ok`.
pub(crate) fn code_name(code: Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Writes the audit entry, flushed, before the caller hears the answer. A store that cannot
/// write is logged (the mutation's own write would have failed the same way).
async fn record(g: &Guard, who: &Principal, action: &str, method: &str, target: String, outcome: &str) {
    let entry = AuditRecord {
        id: 0,
        at: g.engine.clock.now(),
        who: who.name.clone(),
        role: who.role.name().to_string(),
        action: action.to_string(),
        target,
        outcome: outcome.to_string(),
        method: method.to_string(),
    };
    tracing::info!(who = %entry.who, role = %entry.role, action, target = %entry.target, outcome, "audit");
    let engine = g.engine.clone();
    let written = tokio::task::spawn_blocking(move || engine.store.append_audit(&entry)).await;
    match written {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, action, "cannot write the audit entry"),
        Err(e) => tracing::error!(error = %e, action, "cannot write the audit entry"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_read_as_snake_case() {
        assert_eq!(super::code_name(tonic::Code::Ok), "ok");
        assert_eq!(super::code_name(tonic::Code::PermissionDenied), "permission_denied");
        assert_eq!(super::code_name(tonic::Code::NotFound), "not_found");
    }
}
