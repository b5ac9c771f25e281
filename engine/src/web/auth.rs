//! Who may use the web UI, and proof that a form was sent by a page of ours.
//!
//! With a client token configured, the login page asks for it once (in a POST body, never a
//! URL) and sets a session cookie: `HttpOnly` (no script reads it), `SameSite=Strict` (no
//! other site's page sends it) and `Path=/`, valid 12 hours. The cookie is `EXPIRY.MAC`, a
//! keyed BLAKE3 of its expiry under a key derived from the token: the server keeps no
//! session table, sessions survive restarts, and replacing the token ends every session at
//! once. Without a token the UI is open, as the API is (the server then listens on loopback
//! only, unless `--insecure`).
//!
//! Every request that is not a GET must carry the CSRF token of its session (a keyed hash of
//! the cookie, or of a per-process secret when open): as the `csrf` field of a form or the
//! `x-weir-csrf` header of a script's request. The check is here, in the middleware, so no
//! handler can forget it. A cross-site `Origin` or `Sec-Fetch-Site` is refused as well.

use axum::body::Body;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::{Web, page};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "weir_session";
/// How long a login lasts.
const SESSION_MS: u64 = 12 * 3600 * 1000;
/// The most a form body may hold (the start form with its params is the largest).
const MAX_FORM: usize = 256 * 1024;

pub(crate) struct Auth {
    /// BLAKE3 of the client token, compared in constant time; `None`: open.
    token: Option<blake3::Hash>,
    /// Signs session cookies and CSRF tokens.
    key: [u8; 32],
    /// Add `Secure` to the cookie (the server speaks TLS).
    pub secure: bool,
}

/// What the middleware learnt of a request, for the handlers (the CSRF token their forms
/// carry).
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub csrf: String,
}

impl Auth {
    pub(crate) fn new(client_token: Option<&str>) -> Result<Auth, String> {
        let key = match client_token {
            Some(t) => blake3::derive_key("weir web session v1", t.as_bytes()),
            None => random_key()?,
        };
        Ok(Auth { token: client_token.map(|t| blake3::hash(t.as_bytes())), key, secure: false })
    }

    pub(crate) fn open(&self) -> bool {
        self.token.is_none()
    }

    /// Whether `given` is the client token (any value when open); constant time.
    pub(crate) fn token_ok(&self, given: &str) -> bool {
        self.token.is_none_or(|t| t == blake3::hash(given.as_bytes()))
    }

    /// A fresh cookie value valid from `now_ms` for a session.
    fn issue(&self, now_ms: u64) -> String {
        let expiry = now_ms + SESSION_MS;
        format!("{expiry}.{}", self.mac(&format!("session:{expiry}")))
    }

    /// Whether `cookie` is a session this server issued and that has not expired.
    fn valid(&self, cookie: &str, now_ms: u64) -> bool {
        let Some((expiry, mac)) = cookie.split_once('.') else { return false };
        let Ok(at) = expiry.parse::<u64>() else { return false };
        let Ok(given) = blake3::Hash::from_hex(mac) else { return false };
        at > now_ms && given == blake3::keyed_hash(&self.key, format!("session:{expiry}").as_bytes())
    }

    fn mac(&self, what: &str) -> String {
        blake3::keyed_hash(&self.key, what.as_bytes()).to_hex().to_string()
    }

    /// The CSRF token for the session `cookie` (empty when open).
    pub(crate) fn csrf(&self, cookie: &str) -> String {
        self.mac(&format!("csrf:{cookie}"))[..32].to_string()
    }

    fn csrf_ok(&self, cookie: &str, given: &str) -> bool {
        let want = blake3::hash(self.csrf(cookie).as_bytes());
        blake3::hash(given.as_bytes()) == want
    }

    fn cookie_header(&self, value: &str, max_age_s: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}");
        HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("weir_session=; Max-Age=0"))
    }
}

fn random_key() -> Result<[u8; 32], String> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| format!("cannot read /dev/urandom for the web UI's key: {e}"))?;
    Ok(key)
}

fn now_ms(web: &Web) -> u64 {
    web.engine.clock.now().0
}

/// The session cookie's value in `headers`, if any.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == COOKIE).then(|| value.to_string())
    })
}

/// A path to come back to after logging in: only a path of ours (`/x`, never `//host`).
fn local_path(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') { next } else { "/runs" }
}

/// Lets a request through with its [`Session`], or sends it to log in (pages) or refuses it
/// (scripts, event streams, forms without their CSRF token).
pub(crate) async fn require(State(web): State<Web>, req: Request, next: Next) -> Response {
    let auth = &web.auth;
    let cookie = cookie(req.headers()).unwrap_or_default();
    if !auth.open() && !auth.valid(&cookie, now_ms(&web)) {
        let wants_html = req.method() == Method::GET
            && req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_none_or(|a| a.contains("text/html"));
        if wants_html {
            let next = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/runs");
            let to = format!("/login?next={}", encode(next));
            return Redirect::to(&to).into_response();
        }
        return (StatusCode::UNAUTHORIZED, "log in first: /login").into_response();
    }
    let session_key = if auth.open() { String::new() } else { cookie };
    let (mut parts, mut body) = req.into_parts();
    // Not a GET: prove the request came from one of our pages.
    if parts.method != Method::GET && parts.method != Method::HEAD {
        if let Err(why) = same_origin(&parts.headers) {
            return (StatusCode::FORBIDDEN, why).into_response();
        }
        let header_token = parts.headers.get("x-weir-csrf").and_then(|v| v.to_str().ok()).map(str::to_string);
        let given = match header_token {
            Some(t) => t,
            None => {
                let bytes = match axum::body::to_bytes(std::mem::take(&mut body), MAX_FORM).await {
                    Ok(b) => b,
                    Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response(),
                };
                let token = form_urlencoded_field(&bytes, "csrf").unwrap_or_default();
                body = Body::from(bytes);
                token
            }
        };
        if !auth.csrf_ok(&session_key, &given) {
            return (
                StatusCode::FORBIDDEN,
                "this form is stale or came from another site: reload the page and try again",
            )
                .into_response();
        }
    }
    parts.extensions.insert(Session { csrf: auth.csrf(&session_key) });
    next.run(Request::from_parts(parts, body)).await
}

/// Refuses a request another site's page sent (when the browser says so).
fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return Err("refused: this request came from another site");
    }
    if let (Some(origin), Some(host)) = (get("origin"), get("host")) {
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
        if origin != "null" && origin_host != host {
            return Err("refused: this request came from another origin");
        }
    }
    Ok(())
}

/// The value of `field` in a urlencoded body.
fn form_urlencoded_field(body: &[u8], field: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    pairs.into_iter().find(|(k, _)| k == field).map(|(_, v)| v)
}

/// `text` percent-encoded for a query value.
pub(crate) fn encode(text: &str) -> String {
    serde_urlencoded::to_string([("v", text)]).map(|s| s[2..].to_string()).unwrap_or_default()
}

#[derive(Deserialize)]
pub(crate) struct NextQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    failed: bool,
}

/// The login form (straight on to the UI when it is open).
pub(crate) async fn login_page(State(web): State<Web>, Query(q): Query<NextQuery>) -> Response {
    let next = local_path(&q.next).to_string();
    if web.auth.open() {
        return Redirect::to(&next).into_response();
    }
    let body = html! {
        section.login {
            h1 { "Log in to weir" }
            @if q.failed { p.error role="alert" { "That token is not valid. Use the client token of this server's token file." } }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Client token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
            p.hint { "The token is the `client` line of the server's token file. It is sent once, in this form; the browser then keeps a session cookie." }
        }
    };
    page::bare("Log in", body).into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// Checks the token and starts a session. The token is never logged or echoed.
pub(crate) async fn login(State(web): State<Web>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    if let Err(why) = same_origin(&headers) {
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    let next = local_path(&f.next).to_string();
    let Some(expected) = web.auth.token else { return Redirect::to(&next).into_response() };
    if blake3::hash(f.token.trim().as_bytes()) != expected {
        tracing::warn!("web login refused: the token is not valid");
        // Slows guessing; tokens off loopback are 32+ characters anyway.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let to = format!("/login?failed=true&next={}", encode(&next));
        return Redirect::to(&to).into_response();
    }
    let value = web.auth.issue(now_ms(&web));
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, web.auth.cookie_header(&value, SESSION_MS / 1000));
    resp
}

/// Ends the session in this browser.
pub(crate) async fn logout(State(web): State<Web>) -> Response {
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, web.auth.cookie_header("", 0));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_signed_expire_and_die_with_the_token() {
        let a = Auth::new(Some("a-token-long-enough-for-anything-1")).unwrap();
        let c = a.issue(1000);
        assert!(a.valid(&c, 1001));
        assert!(!a.valid(&c, 1000 + SESSION_MS), "expired");
        let forged = format!("{}.{}", 1000 + SESSION_MS * 100, c.split_once('.').unwrap().1);
        assert!(!a.valid(&forged, 1001), "a later expiry with the old MAC");
        let b = Auth::new(Some("another-token-long-enough-for-all-2")).unwrap();
        assert!(!b.valid(&c, 1001), "a new token ends old sessions");
        assert!(!a.valid("garbage", 1) && !a.valid("1.zz", 0));
        assert!(a.csrf_ok(&c, &a.csrf(&c)));
        assert!(!a.csrf_ok(&c, &a.csrf("other")));
        assert!(!a.csrf_ok(&c, ""));
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path("/runs/x?y=1"), "/runs/x?y=1");
        for bad in ["//evil.example", "https://evil.example", "/\\evil", ""] {
            assert_eq!(local_path(bad), "/runs", "{bad}");
        }
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:7070"));
        h.insert("origin", HeaderValue::from_static("http://127.0.0.1:7070"));
        assert!(same_origin(&h).is_ok());
        h.insert("origin", HeaderValue::from_static("http://evil.example"));
        assert!(same_origin(&h).is_err());
        h.remove("origin");
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_origin(&h).is_err());
    }
}
