//! weir's worker: it runs the steps the engine leases to it. [`agent`] is the engine loop
//! (register, lease, heartbeat, report, move logs, inputs, outputs and bundles, reconnect),
//! embedded by the `weir-worker` binary and by `weir run`; [`runtime`] runs one step
//! ([`runtime::Runtime`], implemented by [`runtime::ProcessRuntime`]) and knows nothing about
//! the engine, gRPC or the work folder.

pub mod agent;
pub mod checkout;
pub mod clock;
pub mod gpu;
pub mod metrics;
pub mod otel;
pub mod runtime;
pub mod wire;

pub use agent::{Agent, AgentConfig, AgentError, DEFAULT_HOLD};
