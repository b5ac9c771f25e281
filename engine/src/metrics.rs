//! The engine's Prometheus metrics: what operators graph and alert on without reading code
//! (runs by pipeline and final state, step and queue-wait durations, leases, workers and their
//! free capacity, scheduler lag, store size and flush latency, cache, artifact bytes).
//!
//! Definitions live here so the services carry one small line per event. Names follow the
//! Prometheus conventions: `weir_` prefix, base units (seconds, bytes), `_total` on counters
//! (added by the encoder), histograms for durations. Labels are bounded: a pipeline's name and
//! a final state, never a run id, a step instance or a worker name. Gauges that describe the
//! present (workers, free capacity, store size) are read from the engine at scrape time, so
//! they can never drift from the state they describe.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use weir_core::run::{InstanceId, Millis, RunState, StepState};

type Pipeline = [(&'static str, String); 1];
type PipelineState = [(&'static str, String); 2];

/// Durations from 5 ms to about 6 h (doubling): short steps and long trainings alike.
fn step_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 23))
}

/// Waits and latencies from 0.5 ms to about 30 min.
fn wait_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 22))
}

/// What an event did, counted when it is durable ([`Metrics::settle`]).
#[derive(Debug)]
pub(crate) enum Metered {
    Step { pipeline: String, run: String, instance: InstanceId, state: StepState, started: Option<Millis>, now: Millis },
    RunStarted { pipeline: String, run: String },
    RunFinished { pipeline: String, run: String, state: RunState },
    CacheHit,
    CacheMiss,
}

/// The engine's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    runs_started: Family<Pipeline, Counter>,
    runs_finished: Family<PipelineState, Counter>,
    step_duration: Family<PipelineState, Histogram>,
    queue_wait: Family<Pipeline, Histogram>,
    leases_granted: Counter,
    pub(crate) leases_expired: Counter,
    pub(crate) stale_reports: Counter,
    workers: Gauge,
    free_cpus: Gauge<f64, AtomicU64>,
    free_memory: Gauge,
    free_gpus: Gauge,
    scheduler_lag: Histogram,
    store_size: Gauge,
    flush: Histogram,
    cache_hits: Counter,
    cache_misses: Counter,
    pub(crate) uploaded: Counter,
    pub(crate) downloaded: Counter,
    /// When each ready attempt became ready, until it is leased (or ends): the queue wait.
    ready_since: Mutex<HashMap<(String, InstanceId), Millis>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            runs_started: Family::default(),
            runs_finished: Family::default(),
            step_duration: Family::new_with_constructor(step_buckets),
            queue_wait: Family::new_with_constructor(wait_buckets),
            leases_granted: Counter::default(),
            leases_expired: Counter::default(),
            stale_reports: Counter::default(),
            workers: Gauge::default(),
            free_cpus: Gauge::default(),
            free_memory: Gauge::default(),
            free_gpus: Gauge::default(),
            scheduler_lag: wait_buckets(),
            store_size: Gauge::default(),
            flush: wait_buckets(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            uploaded: Counter::default(),
            downloaded: Counter::default(),
            ready_since: Mutex::default(),
            registry: Registry::default(),
        };
        r.register("weir_runs_started", "Runs started, by pipeline", m.runs_started.clone());
        r.register("weir_runs_finished", "Runs finished, by pipeline and final state", m.runs_finished.clone());
        r.register(
            "weir_step_duration_seconds",
            "Step attempts from lease to final state, by pipeline and final state",
            m.step_duration.clone(),
        );
        r.register(
            "weir_step_queue_wait_seconds",
            "Time a step waited ready before a worker leased it, by pipeline",
            m.queue_wait.clone(),
        );
        r.register("weir_leases_granted", "Attempts leased to workers", m.leases_granted.clone());
        r.register(
            "weir_leases_expired",
            "Attempts lost because their worker fell silent past the lease timeout (or none claimed them after a restart)",
            m.leases_expired.clone(),
        );
        r.register(
            "weir_stale_reports_refused",
            "Worker reports refused because their attempt is no longer the live one",
            m.stale_reports.clone(),
        );
        r.register("weir_workers_connected", "Workers registered and heard from", m.workers.clone());
        r.register("weir_workers_free_cpus", "CPUs offered by connected workers and not in use", m.free_cpus.clone());
        r.register(
            "weir_workers_free_memory_bytes",
            "Memory offered by connected workers and not in use",
            m.free_memory.clone(),
        );
        r.register("weir_workers_free_gpus", "GPUs offered by connected workers and not in use", m.free_gpus.clone());
        r.register(
            "weir_scheduler_lag_seconds",
            "From a schedule's tick time to its run created",
            m.scheduler_lag.clone(),
        );
        r.register("weir_store_size_bytes", "Size of the run database on disk", m.store_size.clone());
        r.register(
            "weir_store_flush_duration_seconds",
            "Store commits (flush to disk before an answer)",
            m.flush.clone(),
        );
        r.register("weir_cache_hits", "Ready steps answered from the step cache", m.cache_hits.clone());
        r.register(
            "weir_cache_misses",
            "Ready steps with caching on that found no usable cache entry",
            m.cache_misses.clone(),
        );
        r.register("weir_artifact_uploaded_bytes", "Bytes of blobs uploaded to the engine", m.uploaded.clone());
        r.register("weir_artifact_downloaded_bytes", "Bytes of blobs downloaded from the engine", m.downloaded.clone());
        Metrics { registry: r, ..m }
    }

    pub(crate) fn run_started(&self, pipeline: &str) {
        self.runs_started.get_or_create(&[("pipeline", pipeline.to_string())]).inc();
    }

    pub(crate) fn run_finished(&self, pipeline: &str, state: RunState) {
        self.runs_finished
            .get_or_create(&[("pipeline", pipeline.to_string()), ("state", state.as_str().to_string())])
            .inc();
    }

    /// A step instance changed state at `now`; `started` is when its attempt was leased.
    pub(crate) fn step_changed(
        &self,
        pipeline: &str,
        run: &str,
        instance: InstanceId,
        state: StepState,
        started: Option<Millis>,
        now: Millis,
    ) {
        let key = (run.to_string(), instance);
        let mut ready = self.ready_since.lock().unwrap_or_else(|p| p.into_inner());
        match state {
            StepState::Ready => {
                ready.insert(key, now);
            }
            StepState::Leased => {
                self.leases_granted.inc();
                if let Some(since) = ready.remove(&key) {
                    let wait = seconds(since, now);
                    self.queue_wait.get_or_create(&[("pipeline", pipeline.to_string())]).observe(wait);
                }
            }
            s if s.is_terminal() => {
                ready.remove(&key);
                if let Some(started) = started {
                    let labels = [("pipeline", pipeline.to_string()), ("state", s.as_str().to_string())];
                    self.step_duration.get_or_create(&labels).observe(seconds(started, now));
                }
            }
            _ => {}
        }
    }

    /// Counts what a stored event did, once it is durable ([`crate::server::Engine::commit`]):
    /// a flush that fails leaves nothing counted that the store may not hold.
    pub(crate) fn settle(&self, items: Vec<Metered>) {
        for item in items {
            match item {
                Metered::Step { pipeline, run, instance, state, started, now } => {
                    self.step_changed(&pipeline, &run, instance, state, started, now);
                }
                Metered::RunStarted { pipeline, run } => {
                    self.run_started(&pipeline);
                    tracing::info!(run, pipeline, "run started");
                }
                Metered::RunFinished { pipeline, run, state } => {
                    self.run_finished(&pipeline, state);
                    tracing::info!(run, pipeline, state = %state, "run finished");
                }
                Metered::CacheHit => {
                    self.cache_hits.inc();
                }
                Metered::CacheMiss => {
                    self.cache_misses.inc();
                }
            }
        }
    }

    pub(crate) fn scheduler_lag(&self, seconds: f64) {
        self.scheduler_lag.observe(seconds.max(0.0));
    }

    pub(crate) fn flushed(&self, seconds: f64) {
        self.flush.observe(seconds);
    }

    /// The exposition text, with the gauges of the present read from `engine` first.
    pub(crate) fn render(&self, engine: &crate::server::Engine) -> String {
        {
            let st = engine.lock();
            let (mut cpus, mut memory, mut gpus) = (0u64, 0u64, 0u64);
            for w in st.workers.values() {
                let (total, used) = (w.offer.total, w.used());
                cpus += total.cpus_milli.saturating_sub(used.cpus_milli);
                memory += total.memory_bytes.saturating_sub(used.memory_bytes);
                gpus += u64::from(total.gpus.saturating_sub(used.gpus));
            }
            self.workers.set(st.workers.len() as i64);
            self.free_cpus.set(cpus as f64 / 1000.0);
            self.free_memory.set(memory as i64);
            self.free_gpus.set(gpus as i64);
        }
        self.store_size.set(folder_size(engine.store.dir()) as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// OpenMetrics text (what prometheus-client writes) as the classic Prometheus text format
/// (0.0.4), for scrapers and tools that do not ask for OpenMetrics (`promtool check metrics`,
/// curl): a counter family is named with its `_total` there, and there is no `# EOF`. The same
/// function is in the worker's `metrics.rs`; keep them alike.
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

fn seconds(from: Millis, to: Millis) -> f64 {
    to.0.saturating_sub(from.0) as f64 / 1000.0
}

/// Bytes of the files under `dir` (sled's database files), without following links.
fn folder_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_wait_and_durations_are_observed_and_named_by_convention() {
        let m = Metrics::new();
        m.run_started("p");
        m.step_changed("p", "r", InstanceId(0), StepState::Ready, None, Millis(1_000));
        m.step_changed("p", "r", InstanceId(0), StepState::Leased, None, Millis(1_500));
        m.step_changed("p", "r", InstanceId(0), StepState::Succeeded, Some(Millis(1_500)), Millis(4_500));
        m.run_finished("p", RunState::Succeeded);
        let mut out = String::new();
        encode(&mut out, &m.registry).unwrap();
        assert!(out.contains("weir_runs_started_total{pipeline=\"p\"} 1"), "{out}");
        assert!(out.contains("weir_runs_finished_total{pipeline=\"p\",state=\"succeeded\"} 1"), "{out}");
        assert!(out.contains("weir_step_queue_wait_seconds_sum{pipeline=\"p\"} 0.5"), "{out}");
        assert!(out.contains("weir_step_duration_seconds_sum{pipeline=\"p\",state=\"succeeded\"} 3.0"), "{out}");
        assert!(out.contains("weir_leases_granted_total 1"), "{out}");
        assert!(m.ready_since.lock().unwrap().is_empty());
        let plain = classic(&out);
        assert!(plain.contains("# TYPE weir_runs_started_total counter\n"), "{plain}");
        assert!(plain.contains("# HELP weir_runs_started_total Runs started"), "{plain}");
        assert!(plain.contains("# TYPE weir_step_duration_seconds histogram\n"), "{plain}");
        assert!(!plain.contains("# EOF"));
    }
}
