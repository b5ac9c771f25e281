//! The gRPC adapter: the `WeirClient` (`client`), `WeirWorker` (`worker`) and `WeirAdmin`
//! (`admin`: backups, behind the client token) services, with
//! health checking and reflection beside them on one router, and the bearer-token interceptor.
//! Each handler checks its request's bounds (`bounds`), decodes it (`convert`), calls the
//! engine's services in domain terms, and encodes the answer; every error becomes a status in
//! one place (`status`). Blob streams are `transfer`'s. Decisions about runs, leases,
//! schedules, the cache and the registry are never made here: they are in `crate::server` and
//! `weir-core`.

mod admin;
pub(crate) mod bounds;
mod client;
pub mod convert;
mod live_metrics;
mod peer;
pub mod status;
pub mod tls;
pub(crate) mod transfer;
mod worker;

/// Token files (`weir server --token-file`), read where the wire's credentials are defined.
pub use weir_proto::auth as tokens;

use std::sync::Arc;

use tonic::service::{Interceptor, Routes};
use tonic::{Request, Status};
use weir_proto::v1::weir_admin_server::WeirAdminServer;
use weir_proto::v1::weir_client_server::WeirClientServer;
use weir_proto::v1::weir_worker_server::WeirWorkerServer;

use crate::server::Engine;

/// Both services for `engine`, behind their tokens (none: open), with health and reflection,
/// as routes the server merges with the web UI's (one port, told apart by path).
pub(crate) async fn routes(
    engine: Arc<Engine>,
    client_token: Option<&str>,
    worker_token: Option<&str>,
    worker_cert: bool,
) -> Result<Routes, String> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<WeirClientServer<client::ClientApi>>().await;
    health.set_serving::<WeirWorkerServer<worker::WorkerApi>>().await;
    health.set_serving::<WeirAdminServer<admin::AdminApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weir_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weir_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| format!("reflection: {e}"))?;
    let client =
        WeirClientServer::with_interceptor(client::ClientApi(engine.clone()), Bearer::new(client_token, "client"));
    // The operator's calls (backup) take the client token too.
    let admin = WeirAdminServer::with_interceptor(admin::AdminApi(engine.clone()), Bearer::new(client_token, "client"));
    let mut bearer = Bearer::new(worker_token, "worker");
    // Under mTLS a worker's every call comes with a verified client certificate, checked before
    // its token (transport first); the handshake already refused a certificate the CA did not sign.
    let worker = WeirWorkerServer::with_interceptor(worker::WorkerApi(engine), move |req: Request<()>| {
        peer::require_certificate(&req, worker_cert)?;
        bearer.call(req)
    });
    Ok(Routes::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(client)
        .add_service(admin)
        .add_service(worker)
        .clone()
        .routes())
}

/// Checks `authorization: Bearer <token>` against one expected token, in constant time.
#[derive(Clone)]
struct Bearer {
    /// BLAKE3 of the expected token: comparing hashes makes the check independent of where
    /// the first differing byte is and of the token's length (`blake3::Hash` compares in
    /// constant time).
    expected: Option<blake3::Hash>,
    who: &'static str,
}

impl Bearer {
    fn new(token: Option<&str>, who: &'static str) -> Bearer {
        Bearer { expected: token.map(|t| blake3::hash(t.as_bytes())), who }
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = self.expected else { return Ok(req) };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        match given {
            Some(token) if blake3::hash(token.trim().as_bytes()) == expected => Ok(req),
            Some(_) => Err(Status::unauthenticated(format!("the {} token is not valid", self.who))),
            None => Err(Status::unauthenticated(format!(
                "a {} token is required: send `authorization: Bearer <token>`",
                self.who
            ))),
        }
    }
}
