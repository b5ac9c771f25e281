//! The server's TLS: one acceptor over the engine's one listener, so gRPC, the web UI, `/metrics`
//! and `/hooks` all speak it (tonic's own acceptor offers only h2 in ALPN, which a browser would
//! not get its HTTP/1.1 pages through). ALPN offers `h2` and `http/1.1`; the handshakes run on
//! their own tasks so a slow or silent peer never holds up the accept loop, and each finished
//! stream goes to tonic, which puts the peer's certificates into every request's extensions
//! (`Request::peer_certs`: the worker service's check, `crate::api`).
//!
//! mTLS (`client_ca`): a client certificate is verified against the CA when one is presented.
//! Unless `client_cert_required`, the handshake also lets through a peer without one (the
//! `weir` CLI and browsers have none); the worker service then refuses every call from such a
//! peer before it runs. With `client_cert_required`, the handshake itself refuses it.
//!
//! A peer that speaks plain text to this port is told so and closed: an HTTP/2 client gets a
//! GOAWAY `INADEQUATE_SECURITY`, an HTTP/1.1 one a `400` that says to use `https://`; the server
//! logs a warning naming the peer address.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;
use tonic::transport::server::TcpIncoming;
use weir_proto::tls::{TlsError, read_certs, read_key};

/// The longest a peer may take to finish its handshake (or its first bytes).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// rustls over ring, as every weir client uses it too.
pub use weir_proto::tls::ring_provider;

/// The server's TLS settings, checked and built when made.
#[derive(Clone)]
pub struct TlsConfig {
    rustls: Arc<rustls::ServerConfig>,
    /// Client certificates are verified against a CA (`--client-ca`).
    pub mtls: bool,
    /// ... and required in the handshake of every connection (`--client-ca-required`).
    pub client_cert_required: bool,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("mtls", &self.mtls)
            .field("client_cert_required", &self.client_cert_required)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads the certificate chain and key (`--tls-cert`, `--tls-key`) and, for mTLS, the CA
    /// that signs client certificates (`--client-ca`).
    pub fn from_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        required: bool,
    ) -> Result<TlsConfig, TlsError> {
        let (_, chain) = read_certs("--tls-cert", cert)?;
        let (_, key_der) = read_key("--tls-key", key)?;
        let provider = Arc::new(ring_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Usage(format!("TLS: {e}")))?;
        let builder = match client_ca {
            Some(ca) => {
                let (_, cas) = read_certs("--client-ca", ca)?;
                let mut roots = rustls::RootCertStore::empty();
                for c in cas {
                    roots.add(c).map_err(|e| TlsError::Invalid {
                        flag: "--client-ca",
                        path: ca.into(),
                        what: format!("not a usable CA certificate ({e})"),
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
                let verifier = if required { verifier } else { verifier.allow_unauthenticated() };
                let verifier = verifier.build().map_err(|e| TlsError::Invalid {
                    flag: "--client-ca",
                    path: ca.into(),
                    what: format!("cannot verify client certificates with it ({e})"),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None if required => {
                return Err(TlsError::Usage(
                    "--client-ca-required needs --client-ca, the CA of the client certificates".into(),
                ));
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key_der).map_err(|e| TlsError::Invalid {
            flag: "--tls-key",
            path: key.into(),
            what: format!("does not go with the certificate of --tls-cert {} ({e})", cert.display()),
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsConfig { rustls: Arc::new(config), mtls: client_ca.is_some(), client_cert_required: required })
    }
}

/// The TLS streams of the connections `tcp` accepts, for `serve_with_incoming`. Ends when the
/// server stops taking them (the receiver is dropped), which closes the listener.
pub(crate) fn incoming(
    mut tcp: TcpIncoming,
    config: &TlsConfig,
) -> impl tokio_stream::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + use<> {
    let acceptor = TlsAcceptor::from(config.rustls.clone());
    let (tx, rx) = mpsc::channel::<TlsStream<TcpStream>>(64);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = tcp.next() => next,
                () = tx.closed() => break,
            };
            match next {
                None => break,
                Some(Ok(stream)) => {
                    let (tx, acceptor) = (tx.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        if let Some(tls) = handshake(stream, acceptor).await {
                            let _ = tx.send(tls).await;
                        }
                    });
                }
                Some(Err(e)) => {
                    // Out of file descriptors and the like: say so, and do not spin on it.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)
}

/// A TLS handshake on `stream`, or a plain-text peer told to use TLS; `None` when it failed
/// (logged with the peer's address and rustls's reason).
async fn handshake(stream: TcpStream, acceptor: TlsAcceptor) -> Option<TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok()?;
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    // Every TLS connection opens with a handshake record (content type 22).
    if first[0] != 0x16 {
        refuse_plain_text(stream, peer).await;
        return None;
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "TLS handshake refused");
            None
        }
        Err(_) => {
            tracing::warn!(%peer, "TLS handshake not finished within 10s; closed");
            None
        }
    }
}

const PLAIN_TEXT_REFUSAL: &str = "this weir server speaks TLS only: use an https:// URL";

/// Tells a peer that spoke plain text to use TLS, in its own protocol, and closes.
async fn refuse_plain_text(mut stream: TcpStream, peer: SocketAddr) {
    tracing::warn!(%peer, "a plain-text connection to this TLS server was refused: the client must use an https:// URL");
    let mut head = [0u8; 24];
    let n = stream.peek(&mut head).await.unwrap_or(0);
    let answer = if head[..n].starts_with(b"PRI * HTTP/2.0") { h2_goaway() } else { http1_400() };
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
    // Read what the peer sent until it closes: closing with unread bytes would reset the
    // connection and could discard the answer before the peer reads it.
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut total = 0usize;
        while let Ok(n) = stream.read(&mut sink).await {
            total += n;
            if n == 0 || total > 1 << 16 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// An empty SETTINGS frame (a server's first frame) and a GOAWAY with INADEQUATE_SECURITY (0xc)
/// and the refusal as its debug data.
fn h2_goaway() -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    let debug = PLAIN_TEXT_REFUSAL.as_bytes();
    let len = 8 + debug.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0xc]);
    out.extend_from_slice(debug);
    out
}

fn http1_400() -> Vec<u8> {
    let body = format!("{PLAIN_TEXT_REFUSAL}\n");
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
