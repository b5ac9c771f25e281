//! A W3C WebDriver client for the browser tests: Debian's `chromium` driven headless by
//! `chromium-driver` (chromedriver), over the HTTP client in `http.rs`. A dozen endpoints are
//! all the tests use, so this is written out rather than pulling in a WebDriver crate and
//! the TLS stack it brings. Elements are found by CSS selector; waits poll, since a page's
//! script updates it by itself.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::Http;

/// The element key the WebDriver spec defines.
pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium under chromedriver; both stop when this is dropped.
pub struct Browser {
    driver: Child,
    http: Http,
    session: String,
}

/// An element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Element {
    /// Its WebDriver id (to pass it to a script as `{ELEMENT: id}`).
    pub fn id(&self) -> &str {
        &self.0
    }
}

/// Whether the browser tools are installed; under `CI` a missing one fails the test (CI
/// installs them), elsewhere it is skipped with a loud message.
pub fn available() -> bool {
    let found = |bin: &str| Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success());
    let ok = found("chromedriver") && (found("chromium") || Path::new("/usr/bin/chromium").exists());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs chromium and chromedriver (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIPPED: chromium or chromedriver is missing (apt-get install chromium chromium-driver); this browser test did not run"
        );
    }
    ok
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of 1400×900.
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut http = Http::new(&format!("http://127.0.0.1:{port}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                let status = http.get("/status").await;
                if status.status == 200 && status.body.contains("\"ready\":true") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not get ready in 20s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,900", "--lang=en-US"]
            }
        }}});
        let mut b = Browser { driver, http, session: String::new() };
        let created = b.call("POST", "/session", Some(caps)).await;
        b.session = created["sessionId"].as_str().expect("a WebDriver session").to_string();
        b
    }

    async fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let headers: &[(&str, &str)] = if body.is_some() { &[("content-type", "application/json")] } else { &[] };
        let resp = self.http.request(method, path, headers, body).await;
        let v: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
        assert!(resp.status < 400, "WebDriver {method} {path}: {} {}", resp.status, resp.body);
        v["value"].clone()
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&mut self, url: &str) {
        let path = self.at("/url");
        self.call("POST", &path, Some(json!({"url": url}))).await;
    }

    pub async fn url(&mut self) -> String {
        let path = self.at("/url");
        self.call("GET", &path, None).await.as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body; `arguments` as given) and returns its value.
    pub async fn eval(&mut self, script: &str, args: Vec<Value>) -> Value {
        let path = self.at("/execute/sync");
        self.call("POST", &path, Some(json!({"script": script, "args": args}))).await
    }

    /// The elements matching `css` now.
    pub async fn find_all(&mut self, css: &str) -> Vec<Element> {
        let path = self.at("/elements");
        let found = self.call("POST", &path, Some(json!({"using": "css selector", "value": css}))).await;
        found
            .as_array()
            .map(|a| a.iter().filter_map(|e| e[ELEMENT].as_str()).map(|s| Element(s.into())).collect())
            .unwrap_or_default()
    }

    /// The first element matching `css`, waiting up to `limit` for it.
    pub async fn wait_for(&mut self, css: &str, limit: Duration) -> Element {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            if Instant::now() >= deadline {
                let html = self.eval("return document.documentElement.outerHTML", vec![]).await;
                let raw = self
                    .call("POST", &self.at("/elements"), Some(json!({"using": "css selector", "value": css})))
                    .await;
                panic!("no element {css} within {limit:?} on {}: {raw} {html}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `limit` until `script` (a function body returning a boolean) is true.
    pub async fn wait_until(&mut self, script: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.eval(script, vec![]).await == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "{script} was not true within {limit:?} on {}", self.url().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&mut self, e: &Element) {
        let path = self.at(&format!("/element/{}/click", e.0));
        self.call("POST", &path, Some(json!({}))).await;
    }

    /// Types `text` into `e` after clearing it.
    pub async fn fill(&mut self, e: &Element, text: &str) {
        let clear = self.at(&format!("/element/{}/clear", e.0));
        self.call("POST", &clear, Some(json!({}))).await;
        let path = self.at(&format!("/element/{}/value", e.0));
        self.call("POST", &path, Some(json!({"text": text}))).await;
    }

    pub async fn text(&mut self, e: &Element) -> String {
        let path = self.at(&format!("/element/{}/text", e.0));
        self.call("GET", &path, None).await.as_str().unwrap_or_default().to_string()
    }

    pub async fn attribute(&mut self, e: &Element, name: &str) -> Option<String> {
        let path = self.at(&format!("/element/{}/attribute/{name}", e.0));
        self.call("GET", &path, None).await.as_str().map(str::to_string)
    }

    /// Replaces the cookie `name` of the current page's site (HttpOnly ones included, which a
    /// page's script cannot touch).
    pub async fn set_cookie(&mut self, name: &str, value: &str) {
        let del = self.at(&format!("/cookie/{name}"));
        self.call("DELETE", &del, None).await;
        let add = self.at("/cookie");
        self.call("POST", &add, Some(json!({"cookie": {"name": name, "value": value, "path": "/"}}))).await;
    }

    /// The page's text.
    pub async fn page_text(&mut self) -> String {
        self.eval("return document.body.innerText", vec![]).await.as_str().unwrap_or_default().to_string()
    }

    /// A PNG of the window, written to `file`.
    pub async fn screenshot(&mut self, file: &Path) {
        use base64::Engine as _;
        let path = self.at("/screenshot");
        let b64 = self.call("GET", &path, None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap_or_default()).expect("a PNG");
        std::fs::write(file, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; killing the driver then takes nothing with it.
        let path = format!("/session/{}", self.session);
        let host = self.http.host().to_string();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async {
                    let mut http = Http::new(&format!("http://{host}"));
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), http.request("DELETE", &path, &[], None)).await;
                });
            }
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
