//! Who may use the web UI, and proof that a form was sent by a page of ours.
//!
//! With tokens configured, the login page asks for one once (in a POST body, never a URL)
//! and sets a session cookie: `HttpOnly` (no script reads it), `SameSite=Strict` (no other
//! site's page sends it) and `Path=/`, valid 12 hours. The cookie is `EXPIRY|ROLE|NAME|MAC`, a
//! keyed BLAKE3 of the rest under a key derived from the configured tokens: the server keeps
//! no session table and sessions survive restarts. Every request checks that NAME still holds
//! a live token with ROLE (`crate::access`), so revoking a token ends its sessions at once, and
//! that the role may do what is asked (`needs`: the same split as the gRPC role table); pages
//! show only the buttons the role may use ([`Session::may`]). Worker tokens cannot log in. Without a token the UI is open, as the API is (the server then listens on loopback
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

use std::sync::Arc;

use super::{Web, page};
use crate::access::{Access, Principal, Role};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "weir_session";
/// How long a login lasts.
const SESSION_MS: u64 = 12 * 3600 * 1000;
/// The most a form body may hold (the start form with its params is the largest).
const MAX_FORM: usize = 256 * 1024;

pub(crate) struct Auth {
    /// Who holds which token, live: a revoked token ends its sessions at once.
    access: Arc<Access>,
    /// Signs session cookies and CSRF tokens.
    key: [u8; 32],
    /// Add `Secure` to the cookie (the server speaks TLS).
    pub secure: bool,
}

/// What the middleware learnt of a request, for the handlers: the CSRF token their forms
/// carry, and who is logged in (pages show only the buttons their role may use).
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub csrf: String,
    pub principal: Principal,
}

impl Session {
    /// Whether the logged-in role may do what `need` may.
    pub(crate) fn may(&self, need: Role) -> bool {
        self.principal.role.covers(need)
    }
}

impl Auth {
    /// `key_material`: the server's configured tokens (sessions then survive restarts and end
    /// when the tokens change); none: a random key.
    pub(crate) fn new(access: Arc<Access>, key_material: Option<&str>) -> Result<Auth, String> {
        let key = match key_material {
            Some(t) => blake3::derive_key("weir web session v2", t.as_bytes()),
            None => random_key()?,
        };
        Ok(Auth { access, key, secure: false })
    }

    pub(crate) fn open(&self) -> bool {
        self.access.open()
    }

    /// Whether `given` is a live token of a person (not a worker); constant time.
    pub(crate) fn token_ok(&self, given: &str) -> bool {
        self.access.principal(given).is_some_and(|p| p.role != Role::Worker)
    }

    /// A fresh cookie value valid from `now_ms` for a session of `who`: `EXPIRY|ROLE|NAME|MAC`.
    fn issue(&self, who: &Principal, now_ms: u64) -> String {
        let expiry = now_ms + SESSION_MS;
        let body = format!("{expiry}|{}|{}", who.role.name(), who.name);
        format!("{body}|{}", self.mac(&format!("session:{body}")))
    }

    /// Who `cookie` is a session of, if this server issued it, it has not expired and its
    /// token is still live with the same role.
    fn valid(&self, cookie: &str, now_ms: u64) -> Option<Principal> {
        let (body, mac) = cookie.rsplit_once('|')?;
        let mut parts = body.splitn(3, '|');
        let (expiry, role, name) = (parts.next()?, parts.next()?, parts.next()?);
        let at = expiry.parse::<u64>().ok()?;
        let given = blake3::Hash::from_hex(mac).ok()?;
        let role = Role::parse(role)?;
        let signed = given == blake3::keyed_hash(&self.key, format!("session:{body}").as_bytes());
        (signed && at > now_ms && self.access.is_live(name, role)).then(|| Principal { name: name.to_string(), role })
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
    let principal =
        if auth.open() { Some(Principal::anonymous(Role::Admin)) } else { auth.valid(&cookie, now_ms(&web)) };
    let Some(principal) = principal else {
        let wants_html = req.method() == Method::GET
            && req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_none_or(|a| a.contains("text/html"));
        if wants_html {
            let next = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/runs");
            let to = format!("/login?next={}", encode(next));
            return Redirect::to(&to).into_response();
        }
        return (StatusCode::UNAUTHORIZED, "log in first: /login").into_response();
    };
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
    let need = needs(&parts.method, parts.uri.path());
    if !principal.role.covers(need) {
        tracing::info!(who = %principal.name, role = %principal.role, path = parts.uri.path(), "web request refused");
        let why = format!("`{}` ({}) may not do this: it needs the {need} role", principal.name, principal.role);
        if let Some(action) = super::audit::action(&parts.method, parts.uri.path()) {
            super::audit::record(&web, &principal, action, parts.uri.path(), StatusCode::FORBIDDEN).await;
        }
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    let action = super::audit::action(&parts.method, parts.uri.path());
    let path = parts.uri.path().to_string();
    parts.extensions.insert(Session { csrf: auth.csrf(&session_key), principal: principal.clone() });
    let response = next.run(Request::from_parts(parts, body)).await;
    if let Some(action) = action {
        super::audit::record(&web, &principal, action, &path, response.status()).await;
    }
    response
}

/// The least role a web request needs, as the gRPC method it calls would: reading needs
/// `viewer`; what operators do to runs and schedules `operator`; registry moves and anything
/// not listed `admin`.
fn needs(method: &Method, path: &str) -> Role {
    if method == Method::GET || method == Method::HEAD || path == "/logout" {
        return Role::Viewer;
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    match last {
        "cancel" | "retry" | "approve" | "start" | "pause" | "resume" | "backfill" => Role::Operator,
        _ => Role::Admin,
    }
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
            @if q.failed { p.error role="alert" { "That token is not valid. Use your own token (from the server's token file or `weir tokens create`); a worker's token cannot log in." } }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
            p.hint { "Your token: a `NAME:ROLE=` or the `client=` line of the server's token file, or one made with `weir tokens create`. It is sent once, in this form; the browser then keeps a session cookie, which ends when the token is revoked." }
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
    if web.auth.open() {
        return Redirect::to(&next).into_response();
    }
    let who = web.auth.access.principal(f.token.trim()).filter(|p| p.role != Role::Worker);
    let Some(who) = who else {
        tracing::warn!("web login refused: the token is not valid (or is a worker's)");
        // Slows guessing; tokens off loopback are 32+ characters anyway.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let to = format!("/login?failed=true&next={}", encode(&next));
        return Redirect::to(&to).into_response();
    };
    tracing::info!(who = %who.name, role = %who.role, "web login");
    let value = web.auth.issue(&who, now_ms(&web));
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
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let grants = [crate::access::Grant { name: "client".into(), role: Role::Admin, token: "c".into() }];
        let access = Arc::new(Access::load(&grants, &store).unwrap());
        let t = access.create(&store, "vic", "viewer", "client", weir_core::run::Millis(0)).unwrap();
        let a = Auth::new(access.clone(), Some("a-token-long-enough-for-anything-1")).unwrap();
        let vic = access.principal(&t).unwrap();
        let c = a.issue(&vic, 1000);
        assert_eq!(a.valid(&c, 1001), Some(vic.clone()));
        assert_eq!(a.valid(&c, 1000 + SESSION_MS), None, "expired");
        let forged = c.replacen("|viewer|", "|admin|", 1);
        assert_eq!(a.valid(&forged, 1001), None, "a role raised under the old MAC");
        let b = Auth::new(access.clone(), Some("another-token-long-enough-for-all-2")).unwrap();
        assert_eq!(b.valid(&c, 1001), None, "new tokens end old sessions");
        assert!(a.valid("garbage", 1).is_none() && a.valid("1|viewer|x|zz", 0).is_none());
        assert!(a.csrf_ok(&c, &a.csrf(&c)));
        assert!(!a.csrf_ok(&c, &a.csrf("other")));
        assert!(!a.csrf_ok(&c, ""));
        access.revoke(&store, "vic").unwrap();
        assert_eq!(a.valid(&c, 1001), None, "revoking the token ends the session");
    }

    #[test]
    fn web_requests_need_the_roles_their_rpcs_need() {
        assert_eq!(needs(&Method::GET, "/runs/x"), Role::Viewer);
        assert_eq!(needs(&Method::POST, "/logout"), Role::Viewer);
        assert_eq!(needs(&Method::POST, "/runs/x/cancel"), Role::Operator);
        assert_eq!(needs(&Method::POST, "/runs/x/steps/0/approve"), Role::Operator);
        assert_eq!(needs(&Method::POST, "/models/m/promote"), Role::Admin);
        assert_eq!(needs(&Method::POST, "/anything/new"), Role::Admin);
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
