//! One HTTP/1.1 POST to a notification receiver over plain TCP (hyper's client connection, no
//! pool, no TLS: `weir_core::spec::notify::check_url` refuses https), bounded by a timeout for
//! the whole exchange. It reports the status or what went wrong in words that name the
//! receiver's host and port only: a receiver's path can hold a secret (a Slack webhook's
//! does), so no URL reaches a log.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// What one attempt got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// An answer with this status.
    Status(u16),
    /// No answer: why.
    Failed(String),
}

/// POSTs `body` to `url` with `headers` (and `content-type: application/json`).
pub async fn post(url: &str, headers: &[(&str, String)], body: String, timeout: Duration) -> Sent {
    let target = match weir_core::spec::notify::check_url(url) {
        Ok(t) => t,
        Err(e) => return Sent::Failed(format!("the receiver's URL is not usable: expected {e}")),
    };
    let host = target.host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = target.port;
    let authority = if port == 80 { target.host.to_string() } else { format!("{}:{port}", target.host) };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("no HTTP from {host}:{port}: {e}"))?;
        let driver = tokio::spawn(conn);
        let mut req = hyper::Request::post(target.path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("weir/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| format!("cannot build the request: {e}"))?;
        let answer = sender.send_request(req).await.map_err(|e| format!("{host}:{port} did not answer: {e}"))?;
        let status = answer.status().as_u16();
        // Read (and drop) the answer's body so the exchange ends cleanly.
        let _ = answer.into_body().collect().await;
        driver.abort();
        Ok::<u16, String>(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(status)) => Sent::Status(status),
        Ok(Err(e)) => Sent::Failed(e),
        Err(_) => Sent::Failed(format!("{host}:{port} did not answer within {}s", timeout.as_secs_f64())),
    }
}
