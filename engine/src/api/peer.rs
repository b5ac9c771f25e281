//! The transport's word on who calls: under mTLS, the worker service takes calls only from a
//! peer that presented a client certificate the server's `--client-ca` verified (the handshake,
//! `crate::tls`, checked the signature; here, that there was one). Separate from the tokens
//! (`Bearer`): a worker needs both.

use tonic::{Request, Status};

/// Refuses `req` when `required` and its connection carried no verified client certificate.
pub(crate) fn require_certificate(req: &Request<()>, required: bool) -> Result<(), Status> {
    if !required || req.peer_certs().is_some_and(|c| !c.is_empty()) {
        return Ok(());
    }
    let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_else(|| "?".into());
    tracing::warn!(%peer, "a worker call without a client certificate was refused (mTLS: --client-ca)");
    Err(Status::unauthenticated(
        "this server requires workers to present a client certificate signed by its --client-ca: \
         start the worker with --tls-cert and --tls-key",
    ))
}
