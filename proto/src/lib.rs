//! weir's gRPC API: the prost messages and tonic clients and servers generated from
//! `proto/weir/v1/*.proto` (package `weir.v1`), and the encoded descriptor set that server
//! reflection serves.
//!
//! Two services share one port: [`v1::weir_client_server::WeirClient`] for people and programs
//! (submit pipelines, start, follow and inspect runs) and [`v1::weir_worker_server::WeirWorker`]
//! for workers (register, lease, heartbeat, report, move logs, artifacts and bundles). Beside the
//! generated code it holds only what both ends of a call must agree on and that no domain type
//! owns: the metadata names ([`SESSION_HEADER`], [`HEARD_HEADER`]) and the token files that say who may call
//! (`auth`). It never carries engine logic or converts to engine types; that mapping lives in the
//! engine's `api/` adapter and the worker's agent, next to the code that owns the domain types.

pub mod auth;
pub mod direct;
pub mod tls;
pub mod transport;

/// The metadata entry that carries a worker's session secret on every call after Register.
pub const SESSION_HEADER: &str = "x-weir-session";

/// The metadata entry the engine puts on an error answer to a worker's call after Register
/// (Lease, Heartbeat, Report) when it heard the worker during that call: the engine counted the
/// call as a sign of life (the worker's lease clock restarted) even though it could not do what
/// was asked (its store cannot write, say). The worker then counts the call as contact too and
/// does not fence its steps while the engine still holds them as its.
pub const HEARD_HEADER: &str = "x-weir-heard";

/// Package `weir.v1`: messages, and for each service a `*_client` and a `*_server` module.
pub mod v1 {
    tonic::include_proto!("weir.v1");
}

/// The encoded `FileDescriptorSet` of every weir `.proto` file and the well-known types they
/// import, with comments, for `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("weir_descriptor");
