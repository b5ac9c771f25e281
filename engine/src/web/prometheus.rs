//! `GET /metrics`: the engine's Prometheus metrics (`crate::metrics`) on the UI's port, as
//! OpenMetrics when asked (Prometheus does) and the classic text format otherwise. A
//! scraper has no browser session, so this route sits outside the session guard and checks
//! the client token itself, as `Authorization: Bearer TOKEN` (Prometheus's `authorization:`
//! block with `credentials_file:`); open when the server has no tokens, like the rest.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Web;
use crate::metrics;

pub(crate) async fn serve(State(web): State<Web>, headers: HeaderMap) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !web.auth.open() && !web.auth.token_ok(given.trim()) {
        let hint = "send the client token as `Authorization: Bearer TOKEN` \
                    (Prometheus: `authorization: {credentials_file: FILE}`)\n";
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], hint).into_response();
    }
    let text = web.engine.metrics.render(&web.engine);
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if metrics::wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, metrics::OPENMETRICS)], text).into_response()
    } else {
        ([(header::CONTENT_TYPE, metrics::CLASSIC)], metrics::classic(&text)).into_response()
    }
}
