//! The gRPC adapter: the `WeirClient` (`client`), `WeirWorker` (`worker`), `WeirAdmin`
//! (`admin`: backups) and `WeirAccess` (`access`: tokens, the audit log) services, with
//! health checking and reflection beside them on one router, all behind the guard (`guard`:
//! bearer token to principal, the role table, the audit log; `audit_target` what an entry
//! says a request was about).
//! Each handler checks its request's bounds (`bounds`), decodes it (`convert`), calls the
//! engine's services in domain terms, and encodes the answer; every error becomes a status in
//! one place (`status`). Blob streams are `transfer`'s. Decisions about runs, leases,
//! schedules, the cache and the registry are never made here: they are in `crate::server` and
//! `weir-core`.

mod access;
mod admin;
mod audit_target;
pub(crate) mod bounds;
mod client;
/// Public for `benches/floor.rs`, which serves as `weir server` does.
pub mod coalesce;
pub mod convert;
mod guard;
mod lazy;
mod live_metrics;
mod peer;
mod secrets;
pub mod status;
pub mod tls;
pub(crate) mod transfer;
mod worker;

/// Token files (`weir server --token-file`), read where the wire's credentials are defined.
pub use weir_proto::auth as tokens;

use std::sync::Arc;

use tonic::service::Routes;
use weir_proto::v1::weir_access_server::WeirAccessServer;
use weir_proto::v1::weir_admin_server::WeirAdminServer;
use weir_proto::v1::weir_client_server::WeirClientServer;
use weir_proto::v1::weir_secrets_server::WeirSecretsServer;
use weir_proto::v1::weir_worker_server::WeirWorkerServer;

pub(crate) use audit_target::AuditNote;
use audit_target::Methods;

use crate::access::Access;
use crate::server::Engine;

/// The services for `engine` with health and reflection, as routes the server merges with the
/// web UI's (one port, told apart by path), every one behind the guard (`guard.rs`): the
/// caller's token and role for each method as `access` says, and the audit log; under mTLS (`worker_cert`) worker calls
/// need a verified client certificate first (`peer.rs`).
pub(crate) async fn routes(engine: Arc<Engine>, access: Arc<Access>, worker_cert: bool) -> Routes {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<WeirClientServer<client::ClientApi>>().await;
    health.set_serving::<WeirWorkerServer<worker::WorkerApi>>().await;
    health.set_serving::<WeirAdminServer<admin::AdminApi>>().await;
    health.set_serving::<WeirSecretsServer<secrets::SecretsApi>>().await;
    health.set_serving::<WeirAccessServer<access::AccessApi>>().await;
    // Built at the first reflection call (`lazy`); the descriptor sets are compiled in, so the
    // build cannot fail but for a broken build (the tests call both versions).
    let reflection = lazy::Lazy::new(|| reflection_builder().build_v1().expect(BUILT));
    let reflection_alpha = lazy::Lazy::new(|| reflection_builder().build_v1alpha().expect(BUILT));
    // Decoding the method table takes about a millisecond: off the path to serving.
    let methods = Arc::new(std::sync::OnceLock::new());
    let warm = methods.clone();
    tokio::task::spawn_blocking(move || {
        warm.get_or_init(Methods::load);
    });
    let guard = Arc::new(guard::Guard {
        access: access.clone(),
        engine: engine.clone(),
        methods: methods.clone(),
        worker_cert,
    });
    let router = Routes::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(WeirClientServer::new(client::ClientApi(engine.clone())))
        .add_service(WeirAdminServer::new(admin::AdminApi(engine.clone())))
        .add_service(WeirSecretsServer::new(secrets::SecretsApi(engine.clone())))
        .add_service(WeirAccessServer::new(access::AccessApi { engine: engine.clone(), access }))
        .add_service(WeirWorkerServer::new(worker::WorkerApi(engine)))
        .clone()
        .routes()
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard));
    Routes::from(router)
}

const BUILT: &str = "the compiled-in descriptor sets make a reflection service";

/// Reflection over weir's services and health's.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weir_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
