//! A gRPC client connection over HTTP/2 (plain or TLS) that sends each call from the caller's
//! own task: the request's HEADERS and its first DATA frame are queued on the connection
//! together, so a unary call leaves in one write and wakes the engine once. tonic's `Channel` puts three task
//! hops in front of every call (its `Buffer` worker, hyper's per-request send task, and a body
//! pipe task that waits for flow-control capacity before the first byte of the message, so the
//! HEADERS and DATA frames go out in two writes from two threads). For a worker whose steps
//! take milliseconds that is a measurable share of each step (BENCHMARKS.md, issue 19).
//!
//! What the channel did and this keeps: a lazy connection (the first call connects), a connect
//! timeout, TCP_NODELAY, HTTP/2 keep-alive pings that drop a connection whose peer stopped
//! answering, a new connection after one fails, the call deadline a request carries
//! (`grpc-timeout`, as [`tonic::Request::set_timeout`] sets it; like tonic's, it bounds the wait
//! for the response headers), and flow control for streaming request bodies (uploads). A call on
//! a connection that broke fails with UNAVAILABLE, which callers retry; the next call connects
//! again. `https://` engines get TLS from rustls with the settings [`crate::tls::ClientTls`]
//! reads (roots, client certificate), ALPN `h2` required, as tonic's channel does.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme, Uri};
use http_body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{HeaderValue, Request, Response};

/// A connection's byte stream: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How a [`Direct`] connection is made and kept.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long connecting (TCP and the HTTP/2 handshake) may take.
    pub connect_timeout: Duration,
    /// How often an HTTP/2 PING goes out, busy or idle; `None`: never.
    pub keep_alive_interval: Option<Duration>,
    /// How long a PING may wait for its answer before the connection counts as dead.
    pub keep_alive_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            connect_timeout: Duration::from_secs(5),
            keep_alive_interval: Some(Duration::from_secs(10)),
            keep_alive_timeout: Duration::from_secs(10),
        }
    }
}

/// The largest first message a call sends before it waits for flow-control capacity: the
/// initial window HTTP/2 guarantees every stream (RFC 9113, 6.9.2).
const EAGER_BYTES: usize = 65_535;
/// hyper's client defaults, which tonic's channel used: a 2 MiB stream window, 5 MiB for the
/// connection, at most 1 MiB queued for sending per stream, 16 KiB frames, and at most 16 KiB
/// of response headers (h2's own default would take 16 MiB from a broken or hostile engine),
/// 100 streams before the engine says how many it takes, and a connection dropped after 1,024
/// streams it had to reset for errors of its own.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const SEND_BUFFER: usize = 1024 * 1024;
const MAX_FRAME: u32 = 16 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const FIRST_MAX_STREAMS: usize = 100;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// A cheap-to-clone handle; clones share the connection.
#[derive(Clone)]
pub struct Direct {
    inner: Arc<Inner>,
}

struct Inner {
    scheme: Scheme,
    /// For `https://`: the TLS settings and the name the server's certificate must carry.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    authority: Authority,
    /// `host:port` to connect to.
    address: String,
    settings: Settings,
    user_agent: HeaderValue,
    /// The current connection, if one was made and has not died.
    live: Mutex<Option<Live>>,
    /// Held while connecting, so concurrent first calls share one connection.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Live {
    send: h2::client::SendRequest<Bytes>,
    /// Set by the connection's task when it ends, and by a call that found it broken.
    dead: Arc<AtomicBool>,
}

impl Live {
    /// The status a call fails with on `e`. A failure of the connection itself (`gone`, an I/O
    /// error, a GOAWAY) marks it dead, so that the next call makes a new one.
    fn failed(&self, e: &h2::Error, gone: bool) -> Status {
        if gone || e.is_io() || e.is_go_away() {
            self.dead.store(true, Ordering::Release);
        }
        h2_status(e)
    }
}

impl Direct {
    /// A client for the engine at `url`: `http://host:port` in plain text (port 80 when none
    /// is given), or `https://host:port` (443) with `tls`, which an `https://` URL needs
    /// ([`crate::tls::ClientTls::rustls_config`]). Connects at the first call.
    pub fn new(url: &str, settings: Settings, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Direct, String> {
        let uri: Uri =
            url.parse().map_err(|e| format!("`{url}` is not a URL ({e}); expected like http://host:7070"))?;
        let (scheme, default_port) = match uri.scheme_str() {
            Some("http") => (Scheme::HTTP, 80),
            Some("https") => (Scheme::HTTPS, 443),
            _ => return Err(format!("`{url}` is not an http:// or https:// URL")),
        };
        let authority = uri.authority().cloned().ok_or_else(|| format!("`{url}` names no host"))?;
        // Where to connect: the port given, else the scheme's.
        let address = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:{default_port}", authority.host()),
        };
        let tls = match (scheme == Scheme::HTTPS, tls) {
            (true, Some(config)) => {
                let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
                let name = ServerName::try_from(host).map_err(|e| format!("`{url}`: not a server name ({e})"))?;
                Some((config, name))
            }
            (true, None) => return Err(format!("`{url}` is an https:// URL: TLS settings are needed")),
            (false, Some(_)) => return Err(format!("`{url}` is a plain-text http:// URL but TLS settings are given")),
            (false, None) => None,
        };
        Ok(Direct {
            inner: Arc::new(Inner {
                scheme,
                tls,
                authority,
                address,
                settings,
                user_agent: HeaderValue::from_static(concat!("weir/", env!("CARGO_PKG_VERSION"))),
                live: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Sends one call and returns its response, whose body streams as the engine answers.
    pub fn call(
        &self,
        request: Request<Body>,
    ) -> impl Future<Output = Result<Response<Body>, Status>> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let deadline = request.headers().get("grpc-timeout").and_then(grpc_timeout);
            let call = inner.send(request);
            match deadline {
                Some(d) => match tokio::time::timeout(d, call).await {
                    Ok(r) => r,
                    // As tonic's channel answers a call past its deadline.
                    Err(_) => Err(Status::cancelled("Timeout expired")),
                },
                None => call.await,
            }
        }
    }
}

impl Inner {
    async fn send(self: Arc<Self>, request: Request<Body>) -> Result<Response<Body>, Status> {
        let live = self.connection().await?;
        // A handle that cannot become ready belongs to a connection that is gone.
        let mut send = live.send.clone().ready().await.map_err(|e| live.failed(&e, true))?;
        let (mut parts, body) = request.into_parts();
        let mut uri = Uri::builder().scheme(self.scheme.clone()).authority(self.authority.clone());
        if let Some(path) = parts.uri.path_and_query() {
            uri = uri.path_and_query(path.clone());
        }
        parts.uri = uri.build().map_err(|e| Status::internal(format!("request URI: {e}")))?;
        parts.headers.entry(http::header::USER_AGENT).or_insert_with(|| self.user_agent.clone());
        let eos = body.is_end_stream();
        let (response, stream) =
            send.send_request(Request::from_parts(parts, ()), eos).map_err(|e| live.failed(&e, false))?;
        if !eos {
            send_body(body, stream).await?;
        }
        let response = response.await.map_err(|e| live.failed(&e, false))?;
        Ok(response.map(|recv| Body::new(Recv { stream: recv, data_done: false, done: false })))
    }

    /// The live connection, made now if there is none or it died.
    async fn connection(&self) -> Result<Live, Status> {
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let live = tokio::time::timeout(self.settings.connect_timeout, self.connect()).await.map_err(|_| {
            Status::unavailable(format!(
                "cannot connect to {}: no answer within {:?}",
                self.address, self.settings.connect_timeout
            ))
        })??;
        *self.live.lock().expect("connection lock") = Some(live.clone());
        Ok(live)
    }

    fn current(&self) -> Option<Live> {
        self.live.lock().expect("connection lock").as_ref().filter(|l| !l.dead.load(Ordering::Acquire)).cloned()
    }

    async fn connect(&self) -> Result<Live, Status> {
        let address = self.address.as_str();
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| Status::unavailable(format!("cannot connect to {address}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((config, name)) => {
                let tls =
                    tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), tcp).await.map_err(|e| {
                        Status::unavailable(format!("TLS with {address} failed: {}", crate::tls::causes(&e)))
                    })?;
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(Status::unavailable(format!(
                        "TLS with {address}: the server did not agree to HTTP/2 (ALPN h2)"
                    )));
                }
                Box::new(tls)
            }
        };
        let (send, mut connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(SEND_BUFFER)
            .max_frame_size(MAX_FRAME)
            .max_header_list_size(MAX_HEADER_LIST)
            .initial_max_send_streams(FIRST_MAX_STREAMS)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .handshake::<Box<dyn Io>, Bytes>(io)
            .await
            .map_err(|e| Status::unavailable(format!("cannot speak HTTP/2 with {address}: {e}")))?;
        let dead = Arc::new(AtomicBool::new(false));
        let pings = connection.ping_pong();
        let (interval, timeout) = (self.settings.keep_alive_interval, self.settings.keep_alive_timeout);
        let gone = dead.clone();
        let peer = address.to_string();
        tokio::spawn(async move {
            let alive = async {
                let (Some(mut pings), Some(interval)) = (pings, interval) else {
                    return std::future::pending().await;
                };
                loop {
                    tokio::time::sleep(interval).await;
                    match tokio::time::timeout(timeout, pings.ping(h2::Ping::opaque())).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return format!("keep-alive ping failed: {e}"),
                        Err(_) => return format!("no answer to a keep-alive ping within {timeout:?}"),
                    }
                }
            };
            let why = tokio::select! {
                ended = &mut connection => match ended {
                    Ok(()) => "closed".to_string(),
                    Err(e) => e.to_string(),
                },
                why = alive => why,
            };
            gone.store(true, Ordering::Release);
            tracing::debug!(engine = peer, reason = why, "connection to the engine ended");
        });
        Ok(Live { send, dead })
    }
}

/// Sends a request body: what is ready now goes out with the HEADERS frame (a unary call's one
/// message, up to the window every stream starts with); the rest, if any, streams from a task
/// of its own that waits for flow-control capacity before each frame, as hyper's client does.
async fn send_body(mut body: Body, mut stream: h2::SendStream<Bytes>) -> Result<(), Status> {
    let mut held: Option<Bytes> = None;
    let mut sent = 0usize;
    loop {
        if sent >= EAGER_BYTES {
            break;
        }
        let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        match polled {
            Poll::Pending => break,
            Poll::Ready(None) => {
                return send_data(&mut stream, held.take().unwrap_or_default(), true);
            }
            Poll::Ready(Some(Err(status))) => {
                stream.send_reset(h2::Reason::CANCEL);
                return Err(status);
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    sent += data.len();
                    if let Some(previous) = held.replace(data) {
                        send_data(&mut stream, previous, false)?;
                    }
                }
                Err(frame) => {
                    if let Some(previous) = held.take() {
                        send_data(&mut stream, previous, false)?;
                    }
                    if let Ok(trailers) = frame.into_trailers() {
                        return stream.send_trailers(trailers).map_err(|e| h2_status(&e));
                    }
                }
            },
        }
    }
    if let Some(previous) = held.take() {
        send_data(&mut stream, previous, false)?;
    }
    tokio::spawn(async move {
        if let Err(status) = stream_rest(body, &mut stream).await {
            tracing::debug!(error = %status, "request body not sent");
            stream.send_reset(h2::Reason::CANCEL);
        }
    });
    Ok(())
}

async fn stream_rest(mut body: Body, stream: &mut h2::SendStream<Bytes>) -> Result<(), Status> {
    loop {
        // At least a byte of capacity before each frame: the frame may exceed it (h2 queues the
        // rest), so what waits in memory is at most one frame.
        stream.reserve_capacity(1);
        while stream.capacity() == 0 {
            match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(h2_status(&e)),
                None => return Err(Status::cancelled("the engine closed the request stream")),
            }
        }
        match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => return send_data(stream, Bytes::new(), true),
            Some(Err(status)) => return Err(status),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => send_data(stream, data, false)?,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return stream.send_trailers(trailers).map_err(|e| h2_status(&e));
                    }
                }
            },
        }
    }
}

fn send_data(stream: &mut h2::SendStream<Bytes>, data: Bytes, end: bool) -> Result<(), Status> {
    stream.send_data(data, end).map_err(|e| h2_status(&e))
}

/// A response body: the DATA frames as they arrive (their flow-control capacity given back at
/// once), then the trailers that carry the gRPC status.
struct Recv {
    stream: h2::RecvStream,
    data_done: bool,
    done: bool,
}

impl http_body::Body for Recv {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.data_done {
            match ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(h2_status(&e))));
                }
                None => self.data_done = true,
            }
        }
        self.done = true;
        match ready!(self.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(h2_status(&e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// The status a call ends with when HTTP/2 fails under it; as tonic maps them, with a broken or
/// refused connection UNAVAILABLE (retried by callers).
fn h2_status(e: &h2::Error) -> Status {
    if e.is_io() || e.is_go_away() {
        return Status::unavailable(format!("connection to the engine lost: {e}"));
    }
    match e.reason() {
        Some(h2::Reason::REFUSED_STREAM) => Status::unavailable(format!("h2 protocol error: {e}")),
        Some(h2::Reason::CANCEL) => Status::cancelled(format!("h2 protocol error: {e}")),
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Status::resource_exhausted(format!("h2 protocol error: {e}")),
        Some(h2::Reason::INADEQUATE_SECURITY) => Status::permission_denied(format!("h2 protocol error: {e}")),
        Some(_) => Status::internal(format!("h2 protocol error: {e}")),
        None => Status::unknown(format!("h2 error: {e}")),
    }
}

/// A `grpc-timeout` value (`30S`, `250m`, up to 8 digits and a unit, as gRPC over HTTP/2 says).
fn grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        let t = |s: &'static str| grpc_timeout(&HeaderValue::from_static(s));
        assert_eq!(t("30S"), Some(Duration::from_secs(30)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("30000000u"), Some(Duration::from_secs(30)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "10", "10x", "123456789S", "-1S", "1.5S"] {
            assert_eq!(grpc_timeout(&HeaderValue::from_str(bad).unwrap()), None, "{bad}");
        }
    }

    /// A broken or hostile engine cannot make a worker hold more than 16 KiB of response
    /// headers (h2's own limit would be 16 MiB); within the bound, answers pass as sent.
    #[tokio::test]
    async fn response_headers_past_16_kib_are_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::handshake(socket).await.unwrap();
            while let Some(Ok((request, mut respond))) = conn.accept().await {
                let padding = if request.uri().path() == "/big" { "a".repeat(32 * 1024) } else { "small".into() };
                let response = http::Response::builder().status(200).header("x-padding", padding).body(()).unwrap();
                let _ = respond.send_response(response, true);
            }
        });
        let direct = Direct::new(&url, Settings::default(), None).unwrap();
        let call = |path: &str| direct.call(Request::builder().uri(path).body(Body::empty()).unwrap());
        let small = call("/small").await.expect("headers within the bound");
        assert_eq!(small.headers()["x-padding"], "small");
        let refused = call("/big").await;
        assert!(refused.is_err(), "32 KiB of headers were taken: {:?}", refused.map(|r| r.headers().len()));
    }

    #[test]
    fn urls_and_tls_settings_go_together() {
        let address = |url| Direct::new(url, Settings::default(), None).map(|d| d.inner.address.clone());
        assert_eq!(address("http://127.0.0.1:7070").as_deref(), Ok("127.0.0.1:7070"));
        assert_eq!(address("http://weir.internal").as_deref(), Ok("weir.internal:80"));
        assert_eq!(address("http://[::1]:7070/").as_deref(), Ok("[::1]:7070"));
        for bad in ["https://127.0.0.1:7070", "127.0.0.1:7070", "not a url", "/path"] {
            assert!(Direct::new(bad, Settings::default(), None).is_err(), "{bad}");
        }
        let tls = crate::tls::ClientTls::default().rustls_config().expect("the system's roots");
        let https = |url| Direct::new(url, Settings::default(), Some(tls.clone())).map(|d| d.inner.address.clone());
        assert_eq!(https("https://weir.internal").as_deref(), Ok("weir.internal:443"));
        assert_eq!(https("https://[::1]:7070").as_deref(), Ok("[::1]:7070"));
        assert!(https("http://127.0.0.1:7070").is_err(), "TLS settings with a plain-text URL");
    }
}
