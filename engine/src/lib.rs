//! weir's engine: the core services that keep runs going (`server`: runs, dispatch, the
//! scheduler, cache, registry, tracking) over the sled state store (`store`), and the gRPC
//! adapter that serves them (`api`: the only place that names a proto type), and the backup file
//! (`backup`). What a pipeline means and what
//! happens to a run is decided in `weir-core`; artifacts and bundles are `weir-data`'s.

// A `Diagnostic` is ~150 bytes and only ever travels on the error path, where it is built
// once per problem; boxing it would cost clarity and buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod access;
pub mod api;
pub mod backup;
pub mod clock;
pub mod metrics;
pub mod notify;
pub mod otel;
pub mod secrets;
pub mod server;
pub mod signing;
pub mod store;
pub mod time;
/// The server's TLS (`api::tls`: it reads PEM files with the wire's helpers, so it lives in the adapter).
pub use api::tls;
mod web;
