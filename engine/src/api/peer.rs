//! The transport's word on who calls: under mTLS, the worker service takes calls only from a
//! peer that presented a client certificate the server's `--client-ca` verified (the handshake,
//! `crate::tls`, checked the signature; here, that there was one). Checked by the guard
//! (`guard.rs`) before the token: a worker needs both.

use axum::http::Extensions;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// Refuses a call whose connection (its request `extensions`) carried no verified client
/// certificate, when `required`.
pub(crate) fn require_certificate(extensions: &Extensions, required: bool) -> Result<(), Status> {
    let tls = extensions.get::<TlsConnectInfo<TcpConnectInfo>>();
    if !required || tls.and_then(|i| i.peer_certs()).is_some_and(|c| !c.is_empty()) {
        return Ok(());
    }
    let peer = tls
        .and_then(|i| i.get_ref().remote_addr())
        .or_else(|| extensions.get::<TcpConnectInfo>().and_then(|i| i.remote_addr()))
        .map(|a| a.to_string())
        .unwrap_or_else(|| "?".into());
    tracing::warn!(%peer, "a worker call without a client certificate was refused (mTLS: --client-ca)");
    Err(Status::unauthenticated(
        "this server requires workers to present a client certificate signed by its --client-ca: \
         start the worker with --tls-cert and --tls-key",
    ))
}
