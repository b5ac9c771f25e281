//! `--otlp-endpoint URL` (or `WEIR_OTLP_ENDPOINT`), the one flag that turns on OpenTelemetry
//! traces for `weir server`, `weir run` and `weir ui` (the engine's spans, `weir_engine::otel`)
//! and for the worker those two embed (its phase spans, `weir_worker::otel`). Off when unset or
//! empty: no exporter is built and no span either.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;
use weir_worker::otel::Tracer;
use weir_worker::{Agent, AgentError};

#[derive(Args, Clone, Debug, Default)]
pub struct OtlpArgs {
    /// Export OpenTelemetry traces over OTLP/gRPC to URL, e.g. http://127.0.0.1:4317 (an
    /// OpenTelemetry Collector, Jaeger, Tempo): a trace per run with a span per step and per
    /// attempt (service `weir-engine`), and the worker's phases under each attempt (service
    /// `weir-worker`). Off when unset. See docs/observability.md.
    #[arg(long = "otlp-endpoint", value_name = "URL", env = "WEIR_OTLP_ENDPOINT")]
    endpoint: Option<String>,
}

impl OtlpArgs {
    /// The endpoint, when tracing is on.
    pub fn endpoint(&self) -> Option<String> {
        self.endpoint.clone().filter(|e| !e.trim().is_empty())
    }

    /// The embedded worker's tracer, when tracing is on (needs the tokio runtime).
    pub fn worker_tracer(&self) -> Result<Option<Arc<Tracer>>, weir_worker::otel::Error> {
        self.endpoint().map(|e| Tracer::start(&e)).transpose()
    }
}

/// Runs `agent` until `stop`, traced by `tracer` when given, then exports its last spans.
pub async fn run_agent(agent: Agent, tracer: Option<Arc<Tracer>>, stop: CancellationToken) -> Result<(), AgentError> {
    let agent = match &tracer {
        Some(t) => agent.traced(t.clone()),
        None => agent,
    };
    let ran = agent.run(stop).await;
    if let Some(t) = tracer {
        t.drain(Duration::from_secs(5)).await;
    }
    ran
}
