//! `POST /hooks/PIPELINE`: webhook deliveries for the `webhook` trigger of a pipeline's `on:`.
//! A sender has no browser session, so the route sits outside the session guard and its CSRF
//! check: the HMAC signature with the pipeline's secret is its authentication
//! (`server::triggers::webhook` checks it). Bodies are bounded ([`MAX_BODY`]). Answers are
//! JSON: `{"run_id", "created"}` (201 for a new run, 200 for a retried delivery's), or
//! `{"error"}` with 400 (bad key, payload or param types, with the diagnostics), 401 (bad
//! signature or stale timestamp), 404 (no webhook), 413 (too large).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Web, http_status};
use crate::server::Delivery;
use crate::server::triggers::WebhookError;

/// The largest body a delivery may have.
pub(crate) const MAX_BODY: usize = 256 << 10;

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn json(code: StatusCode, value: serde_json::Value) -> Response {
    (code, axum::Json(value)).into_response()
}

pub(crate) async fn deliver(
    State(web): State<Web>,
    Path(pipeline): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delivery = Delivery {
        pipeline,
        signature: header(&headers, "x-weir-signature"),
        timestamp: header(&headers, "x-weir-timestamp"),
        key: header(&headers, "idempotency-key"),
        body: body.to_vec(),
    };
    let engine = web.engine.clone();
    let done = tokio::task::spawn_blocking(move || engine.deliver_webhook(&delivery)).await;
    match done {
        Ok(Ok((run, created))) => {
            let code = if created { StatusCode::CREATED } else { StatusCode::OK };
            json(code, serde_json::json!({"run_id": run, "created": created}))
        }
        Ok(Err(WebhookError::Refused(why))) => {
            tracing::warn!(reason = %why, "webhook delivery refused");
            json(StatusCode::UNAUTHORIZED, serde_json::json!({"error": why.to_string()}))
        }
        Ok(Err(WebhookError::Api(e))) => {
            let status = crate::api::status::status(e);
            json(http_status(status.code()), serde_json::json!({"error": status.message()}))
        }
        Err(e) => {
            json(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": format!("delivery failed: {e}")}))
        }
    }
}
