//! weir's worker: it runs the steps the engine leases to it. Today this crate holds the step
//! runtimes ([`runtime::Runtime`], implemented by [`runtime::ProcessRuntime`]); the gRPC loop that
//! registers, leases, heartbeats, uploads outputs and reconnects comes with the engine work and
//! builds on them. Nothing here knows about the engine, sled or tonic.

pub mod runtime;
