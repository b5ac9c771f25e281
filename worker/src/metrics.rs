//! The worker's Prometheus metrics, served by `weir-worker --metrics ADDR` (`serve`): running
//! attempts, container start and image pull times, how steps ended, OOM kills. One set per
//! process (a worker process is one agent), so the runtime and the agent record into it
//! without threading a handle through every call. Names follow the Prometheus conventions
//! (`weir_worker_` prefix, seconds, `_total` counters added by the encoder); the only label,
//! a step's exit reason, takes a handful of fixed values.

use std::net::SocketAddr;
use std::sync::LazyLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runtime::Outcome;

pub struct Metrics {
    registry: Registry,
    running: Gauge,
    container_start: Histogram,
    image_pull: Histogram,
    exits: Family<[(&'static str, &'static str); 1], Counter>,
    oom_kills: Counter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut r = Registry::default();
    let m = Metrics {
        registry: Registry::default(),
        running: Gauge::default(),
        container_start: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
        image_pull: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
        exits: Family::default(),
        oom_kills: Counter::default(),
    };
    r.register("weir_worker_running_attempts", "Attempts this worker is running", m.running.clone());
    r.register(
        "weir_worker_container_start_seconds",
        "From creating a step's container to its start (image already present)",
        m.container_start.clone(),
    );
    r.register("weir_worker_image_pull_seconds", "Image pulls, successful or not", m.image_pull.clone());
    r.register(
        "weir_worker_step_exits",
        "Steps that ended, by reason: exit_zero, exit_nonzero, signal, timeout, cancelled, oom",
        m.exits.clone(),
    );
    r.register("weir_worker_oom_kills", "Steps the out-of-memory killer ended", m.oom_kills.clone());
    Metrics { registry: r, ..m }
});

/// Counts a running attempt for as long as it lives.
pub struct Running(());

impl Running {
    pub fn start() -> Running {
        METRICS.running.inc();
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        METRICS.running.dec();
    }
}

pub fn container_started(seconds: f64) {
    METRICS.container_start.observe(seconds);
}

pub fn image_pulled(seconds: f64) {
    METRICS.image_pull.observe(seconds);
}

/// A step ran to `outcome`.
pub fn exited(outcome: &Outcome) {
    let reason = match outcome {
        Outcome::Exited(0) => "exit_zero",
        Outcome::Exited(_) => "exit_nonzero",
        Outcome::Signalled(_) => "signal",
        Outcome::TimedOut => "timeout",
        Outcome::Cancelled => "cancelled",
        Outcome::OutOfMemory => {
            METRICS.oom_kills.inc();
            "oom"
        }
    };
    METRICS.exits.get_or_create(&[("reason", reason)]).inc();
}

/// The exposition text (OpenMetrics).
pub fn render() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &METRICS.registry);
    out
}

/// OpenMetrics text (what prometheus-client writes) as the classic Prometheus text format
/// (0.0.4), for scrapers and tools that do not ask for OpenMetrics (`promtool check metrics`,
/// curl): a counter family is named with its `_total` there, and there is no `# EOF`. The same
/// function is in the engine's `metrics.rs`; keep them alike.
pub fn classic(open: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        open.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines().filter(|l| *l != "# EOF") {
        let meta = ["# HELP ", "# TYPE "].into_iter().find(|p| line.starts_with(p));
        match meta {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) { "_total" } else { "" };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Whether a scraper's `Accept` header asks for OpenMetrics (Prometheus does).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The content types of the two formats.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` on `addr` until the process ends; the bound address (port 0 picks
/// one). Open like a node exporter: bind it to an address only your Prometheus reaches.
pub async fn serve(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    use axum::http::header::{ACCEPT, CONTENT_TYPE};
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            let text = render();
            if wants_openmetrics(headers.get(ACCEPT).and_then(|v| v.to_str().ok())) {
                ([(CONTENT_TYPE, OPENMETRICS)], text)
            } else {
                ([(CONTENT_TYPE, CLASSIC)], classic(&text))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_and_running_attempts_are_counted() {
        let running = Running::start();
        exited(&Outcome::OutOfMemory);
        let text = render();
        assert!(text.contains("weir_worker_running_attempts 1"), "{text}");
        assert!(text.contains("weir_worker_step_exits_total{reason=\"oom\"} 1"), "{text}");
        assert!(text.contains("weir_worker_oom_kills_total 1"), "{text}");
        drop(running);
        assert!(render().contains("weir_worker_running_attempts 0"));
    }
}
