//! A small HTTP/1.1 client for the web UI's tests: real requests over loopback to a real
//! server, one connection per request (`Connection: close`), a session cookie kept like a
//! browser keeps it, and the page's CSRF token read back from its `<meta name="csrf">`.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A response: status, headers (names lowercased) and body as text.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The CSRF token of this page.
    pub fn csrf(&self) -> Option<String> {
        let at = self.body.find("name=\"csrf\" content=\"")? + "name=\"csrf\" content=\"".len();
        Some(self.body[at..].split('"').next()?.to_string())
    }
}

/// A browser-like client for one server: `base` is `http://host:port`.
pub struct Http {
    host: String,
    /// The session cookie (`weir_session=...`), once the server set one.
    pub cookie: Option<String>,
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http { host: base.trim_start_matches("http://").trim_end_matches('/').to_string(), cookie: None }
    }

    /// `host:port`.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, &[], None).await
    }

    /// POSTs a urlencoded form.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
        let body = serde_urlencoded::to_string(form).unwrap();
        self.request("POST", path, &[("content-type", "application/x-www-form-urlencoded")], Some(body)).await
    }

    /// Logs in with `token` and keeps the session cookie.
    pub async fn login(&mut self, token: &str) -> Resp {
        self.post("/login", &[("token", token), ("next", "/runs")]).await
    }

    pub async fn request(&mut self, method: &str, path: &str, extra: &[(&str, &str)], body: Option<String>) -> Resp {
        let mut stream = TcpStream::connect(&self.host).await.expect("connect to the web UI");
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.host);
        if let Some(c) = &self.cookie {
            head.push_str(&format!("Cookie: {c}\r\n"));
        }
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or_default();
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let raw = tokio::time::timeout(Duration::from_secs(60), read_response(&mut stream))
            .await
            .expect("the server answers within 60s");
        let resp = parse(&raw);
        if let Some(set) = resp.header("set-cookie") {
            let pair = set.split(';').next().unwrap_or_default().to_string();
            self.cookie = if pair.ends_with('=') { None } else { Some(pair) };
        }
        resp
    }

    /// The first `n` events (`(event, data)`) of a Server-Sent Events stream at `path`,
    /// waiting at most `limit` for them; `then` runs once the stream is open (to cause them).
    pub async fn events<F: std::future::Future<Output = ()>>(
        &mut self,
        path: &str,
        limit: Duration,
        mut until: impl FnMut(&str, &str) -> bool,
        then: F,
    ) -> Vec<(String, String)> {
        let mut stream = TcpStream::connect(&self.host).await.expect("connect to the web UI");
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n", self.host);
        if let Some(c) = &self.cookie {
            head.push_str(&format!("Cookie: {c}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        // The status line and headers.
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        then.await;
        let mut got = Vec::new();
        let (mut event, mut data) = (String::new(), String::new());
        let _ = tokio::time::timeout(limit, async {
            loop {
                line.clear();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let l = line.trim_end();
                // Chunked transfer: chunk sizes are lines of hex alone; skip them.
                if let Some(v) = l.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = l.strip_prefix("data:") {
                    data = v.trim().to_string();
                } else if l.is_empty() && !data.is_empty() {
                    let done = until(&event, &data);
                    got.push((std::mem::take(&mut event), std::mem::take(&mut data)));
                    if done {
                        return;
                    }
                }
            }
        })
        .await;
        got
    }
}

/// One response: to its Content-Length, to the end of its chunks, or to EOF (servers that
/// keep the connection open despite `Connection: close`, as chromedriver does, are covered).
async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return raw;
        }
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let body = raw.len() - end - 4;
        let length =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
        if let Some(length) = length {
            if body >= length {
                return raw;
            }
        } else if head.contains("transfer-encoding: chunked") && raw.ends_with(b"0\r\n\r\n") {
            return raw;
        }
    }
}

/// One request written as it is (`head`, ending in a blank line) on any stream (a TLS one in
/// `tls.rs`), and its response read to its end.
pub async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S, head: &str) -> Resp {
    stream.write_all(head.as_bytes()).await.unwrap();
    let raw = tokio::time::timeout(Duration::from_secs(60), read_response(stream))
        .await
        .expect("the server answers within 60s");
    parse(&raw)
}

fn parse(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Resp { status, headers, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
