//! OpenTelemetry traces of runs (`--otlp-endpoint`), exported over OTLP/gRPC: one trace per run,
//! a span per step instance and per attempt. Off by default; when off nothing here exists (the
//! engine holds no [`Otel`]) and no span is ever built.
//!
//! Spans are not timed live: each is built from the run's stored records and events once what it
//! covers has ended (an instance reached a terminal state, the run finished), and only after the
//! store batch that recorded that end was flushed ([`Otel::flushed`], called by
//! `Engine::commit`). Trace and span ids derive from the run id, the instance and the attempt
//! number ([`ids`]), so a run that outlives an engine restart keeps one trace, and a worker can
//! be handed its attempt's span as a W3C `traceparent` ([`traceparent`]) at lease time without
//! any state. The run span is the root, step spans its children, attempt spans the steps'
//! children; the worker's phase spans hang under the attempt spans.
//!
//! Building reads the store outside every request path, on this module's own task (each of a
//! live run's events once: it keeps a cursor per run, see [`Seen`]), which also owns the exporter (the OTLP exporter must not be called concurrently). An export that fails
//! is logged (rate-limited) and dropped: traces never hold up a run. Not exported: what ended in
//! the moment between a flush and a crash of the engine.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, Weak};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_core::run::{InstanceId, Millis, RunState, StepState};

use crate::metrics::Metered;
use crate::server::Engine;
use crate::server::run_view::{AttemptView, fold_attempts};
use crate::store::{Change, RunRecord, StepRecord};

/// The `service.name` of the engine's spans.
pub const SERVICE_NAME: &str = "weir-engine";

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to --otlp-endpoint {endpoint}: {reason} (give a gRPC URL such as http://127.0.0.1:4317)")]
pub struct Error {
    endpoint: String,
    reason: String,
}

/// Whether `endpoint` can be exported to: an `http(s)://` URL with a host. Checked before the
/// server opens its data folder.
pub(crate) fn check(endpoint: &str) -> Result<(), Error> {
    let error = |reason: String| Error { endpoint: endpoint.to_string(), reason };
    let uri: tonic::transport::Uri = endpoint.parse().map_err(|e| error(format!("not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(error("not an http:// URL with a host".to_string()));
    }
    Ok(())
}

/// What ended and can be traced now that it is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ended {
    /// An instance reached a terminal state: its span and its attempts' spans.
    Step { run: String, instance: InstanceId },
    /// The run finished: its root span.
    Run { run: String },
}

/// The engine's tracing: a channel to the task that builds and exports spans.
pub(crate) struct Otel {
    tx: Mutex<Option<mpsc::UnboundedSender<Ended>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Otel {
    /// Starts exporting to `endpoint` (OTLP over gRPC) on the current tokio runtime. The
    /// connection is lazy: an endpoint that does not answer costs failed exports, never a start.
    pub(crate) fn start(endpoint: &str, engine: Weak<Engine>) -> Result<Otel, Error> {
        check(endpoint)?;
        let error = |reason: String| Error { endpoint: endpoint.to_string(), reason };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| error(e.to_string()))?;
        exporter.set_resource(&Resource::builder_empty().with_service_name(SERVICE_NAME).build());
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(export_loop(rx, engine, exporter));
        tracing::info!(endpoint, "exporting traces over OTLP");
        Ok(Otel { tx: Mutex::new(Some(tx)), task: Mutex::new(Some(task)) })
    }

    /// Hands what `metered` (the events just flushed) ended to the exporting task.
    pub(crate) fn flushed(&self, metered: &[Metered]) {
        let ended = metered.iter().filter_map(|m| match m {
            Metered::Step { run, instance, state, .. } if state.is_terminal() => {
                Some(Ended::Step { run: run.clone(), instance: *instance })
            }
            Metered::RunFinished { run, .. } => Some(Ended::Run { run: run.clone() }),
            _ => None,
        });
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tx.as_ref() {
            for e in ended {
                let _ = tx.send(e);
            }
        }
    }

    /// Exports what is queued (at most `within`) and stops: at shutdown, so the last run's spans
    /// are not lost when `weir run` exits.
    pub(crate) async fn drain(&self, within: Duration) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task
            && tokio::time::timeout(within, task).await.is_err()
        {
            tracing::warn!("traces still unexported at shutdown were dropped");
        }
    }
}

async fn export_loop(
    mut rx: mpsc::UnboundedReceiver<Ended>,
    engine: Weak<Engine>,
    exporter: opentelemetry_otlp::SpanExporter,
) {
    let (mut batch, mut seen) = (Vec::new(), HashMap::new());
    while rx.recv_many(&mut batch, 512).await > 0 {
        let spans = {
            let Some(engine) = engine.upgrade() else { return };
            spans_of(&engine, std::mem::take(&mut batch), &mut seen)
        };
        if spans.is_empty() {
            continue;
        }
        if let Err(e) = exporter.export(spans).await {
            let message = format!("cannot export traces: {e}");
            if let Some(suppressed) = crate::server::ratelog::admit(&message) {
                tracing::warn!(error = %e, suppressed, "cannot export traces; they are dropped");
            }
        }
    }
}

/// What the exporting task has read of a live run's events: up to which sequence number, and
/// the attempts found so far of the instances not yet traced. Each event is read once, so a big
/// run's spans cost what its events do (a scan per ended step would grow with its square).
#[derive(Default)]
struct Seen {
    after: u64,
    attempts: HashMap<InstanceId, Vec<AttemptView>>,
}

/// The spans of what ended, from the store. A run whose records cannot be read gets none
/// (logged).
fn spans_of(engine: &Engine, ended: Vec<Ended>, seen: &mut HashMap<String, Seen>) -> Vec<SpanData> {
    let mut runs: BTreeMap<String, (BTreeSet<InstanceId>, bool)> = BTreeMap::new();
    for e in ended {
        match e {
            Ended::Step { run, instance } => {
                runs.entry(run).or_default().0.insert(instance);
            }
            Ended::Run { run } => runs.entry(run).or_default().1 = true,
        }
    }
    let mut out = Vec::new();
    for (run, (instances, finished)) in runs {
        let read = spans_of_run(engine, &run, &instances, finished, seen.entry(run.clone()).or_default());
        match read {
            Ok(spans) => out.extend(spans),
            Err(e) => tracing::warn!(run, error = %e, "cannot read what spans are built from; they are not exported"),
        }
        if finished {
            seen.remove(&run);
        }
    }
    out
}

fn spans_of_run(
    engine: &Engine,
    run: &str,
    instances: &BTreeSet<InstanceId>,
    finished: bool,
    seen: &mut Seen,
) -> Result<Vec<SpanData>, crate::server::ApiError> {
    let Some(record) = engine.store.run(run)? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    if !instances.is_empty() {
        for item in engine.store.events(run, seen.after)? {
            let (seq, ev) = item?;
            seen.after = seq;
            let mut touched: BTreeSet<InstanceId> = ev.event.attempt().map(|a| a.instance).into_iter().collect();
            for change in &ev.changes {
                if let Change::Step { instance, .. } = change {
                    touched.insert(InstanceId(*instance));
                }
            }
            for i in touched {
                fold_attempts(seen.attempts.entry(i).or_default(), i, &ev);
            }
        }
        for i in instances {
            let mut found = seen.attempts.remove(i).unwrap_or_default();
            found.sort_by_key(|a| a.number);
            if let Some(step) = engine.store.step(run, *i)? {
                out.extend(step_spans(&record, *i, &step, &found));
            }
        }
    }
    if finished {
        out.extend(run_span(&record));
    }
    Ok(out)
}

/// Deterministic trace and span ids: BLAKE3 of what the span stands for, so the same run gets
/// the same ids in every engine process (and never an all-zero, invalid id).
pub mod ids {
    use opentelemetry::trace::{SpanId, TraceId};
    use weir_core::run::InstanceId;

    fn bytes<const N: usize>(what: &str) -> [u8; N] {
        let hash = blake3::hash(what.as_bytes());
        let mut out = [0u8; N];
        out.copy_from_slice(&hash.as_bytes()[..N]);
        out[N - 1] |= 1; // never all zero
        out
    }

    /// The trace of run `run`.
    pub fn trace(run: &str) -> TraceId {
        TraceId::from_bytes(bytes(&format!("weir trace\0{run}")))
    }

    /// The root span of run `run`.
    pub fn run(run: &str) -> SpanId {
        SpanId::from_bytes(bytes(&format!("weir run\0{run}")))
    }

    /// The span of instance `instance` of run `run`.
    pub fn step(run: &str, instance: InstanceId) -> SpanId {
        SpanId::from_bytes(bytes(&format!("weir step\0{run}\0{}", instance.0)))
    }

    /// The span of attempt `number` of instance `instance` of run `run`.
    pub fn attempt(run: &str, instance: InstanceId, number: u32) -> SpanId {
        SpanId::from_bytes(bytes(&format!("weir attempt\0{run}\0{}\0{number}", instance.0)))
    }
}

/// The W3C `traceparent` of an attempt's span (sampled), which the engine sends a worker with
/// the attempt's lease so the worker's spans join the run's trace.
pub fn traceparent(run: &str, instance: InstanceId, number: u32) -> String {
    format!("00-{}-{}-01", ids::trace(run), ids::attempt(run, instance, number))
}

fn time(at: Millis) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(at.0)
}

fn span(
    run: &str,
    id: SpanId,
    parent: SpanId,
    name: String,
    (start, end): (Millis, Millis),
    attributes: Vec<KeyValue>,
    status: Status,
) -> SpanData {
    SpanData {
        span_context: SpanContext::new(ids::trace(run), id, TraceFlags::SAMPLED, false, TraceState::NONE),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Owned(name),
        start_time: time(start),
        end_time: time(end.max(start)),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: InstrumentationScope::builder("weir-engine").build(),
    }
}

/// The run's root span, once it finished.
fn run_span(r: &RunRecord) -> Option<SpanData> {
    let end = r.finished_at?;
    let mut attributes = vec![
        KeyValue::new("cicd.pipeline.name", r.pipeline.clone()),
        KeyValue::new("cicd.pipeline.run.id", r.id.clone()),
        KeyValue::new("cicd.pipeline.result", run_result(r.state)),
        KeyValue::new("weir.run.state", r.state.as_str()),
        KeyValue::new("weir.pipeline.version", r.version.clone()),
    ];
    let status = if r.state == RunState::Failed {
        attributes.push(KeyValue::new("error.type", "run_failed"));
        Status::error("a step failed")
    } else {
        Status::Unset
    };
    let name = format!("run {}", r.pipeline);
    Some(span(&r.id, ids::run(&r.id), SpanId::INVALID, name, (r.created_at, end), attributes, status))
}

/// An ended instance's span and its attempts' spans.
fn step_spans(r: &RunRecord, i: InstanceId, s: &StepRecord, attempts: &[AttemptView]) -> Vec<SpanData> {
    let Some(end) = s.finished_at else { return Vec::new() };
    let step_name = if s.step.is_empty() { s.name.clone() } else { s.step.clone() };
    let base = |extra: Vec<KeyValue>| {
        let mut kv = vec![
            KeyValue::new("cicd.pipeline.name", r.pipeline.clone()),
            KeyValue::new("cicd.pipeline.run.id", r.id.clone()),
            KeyValue::new("cicd.pipeline.task.name", step_name.clone()),
            KeyValue::new("weir.step.instance", s.name.clone()),
        ];
        kv.extend(extra);
        kv
    };
    let start = attempts.iter().filter_map(|a| a.leased_at.or(a.ended_at)).min().unwrap_or(end);
    let mut step_attrs = base(vec![
        KeyValue::new("cicd.pipeline.task.run.result", step_result(s.state)),
        KeyValue::new("weir.outcome", s.state.as_str()),
        KeyValue::new("weir.attempts", i64::from(s.attempts)),
    ]);
    let status = if s.state == StepState::Failed {
        let message = s.message.clone().unwrap_or_default();
        step_attrs.push(KeyValue::new("error.type", error_type(&message)));
        Status::error(message)
    } else {
        Status::Unset
    };
    if let Some(m) = &s.message {
        step_attrs.push(KeyValue::new("weir.message", m.clone()));
    }
    let step_id = ids::step(&r.id, i);
    let mut out =
        vec![span(&r.id, step_id, ids::run(&r.id), format!("step {step_name}"), (start, end), step_attrs, status)];
    for a in attempts {
        let Some(start) = a.leased_at.or(a.ended_at) else { continue };
        let end = a.ended_at.unwrap_or(end);
        let mut kv = base(vec![
            KeyValue::new("cicd.pipeline.task.run.id", format!("{}/{}#{}", r.id, s.name, a.number)),
            KeyValue::new("weir.attempt", i64::from(a.number)),
            KeyValue::new("weir.outcome", a.outcome.clone()),
        ]);
        if let Some(w) = &a.worker {
            kv.push(KeyValue::new("cicd.worker.id", w.clone()));
        }
        if let Some(code) = exit_code(&a.reason) {
            kv.push(KeyValue::new("process.exit.code", i64::from(code)));
        }
        if !a.reason.is_empty() {
            kv.push(KeyValue::new("weir.reason", a.reason.clone()));
        }
        let status = if a.outcome == "failed" {
            kv.push(KeyValue::new("error.type", error_type(&a.reason)));
            Status::error(a.reason.clone())
        } else {
            Status::Unset
        };
        let id = ids::attempt(&r.id, i, a.number);
        out.push(span(&r.id, id, step_id, format!("attempt {step_name}"), (start, end), kv, status));
    }
    out
}

/// The semantic conventions' `cicd.pipeline.result` of a run.
fn run_result(state: RunState) -> &'static str {
    match state {
        RunState::Succeeded => "success",
        RunState::Failed => "failure",
        RunState::Cancelled => "cancellation",
        RunState::Queued | RunState::Running => "error",
    }
}

/// The semantic conventions' `cicd.pipeline.task.run.result` of an instance.
fn step_result(state: StepState) -> &'static str {
    match state {
        StepState::Succeeded | StepState::Cached => "success",
        StepState::Failed => "failure",
        StepState::Cancelled => "cancellation",
        StepState::Skipped => "skip",
        _ => "error",
    }
}

/// The exit code in a worker's failure reason (`exit code 3`).
fn exit_code(reason: &str) -> Option<i32> {
    reason.strip_prefix("exit code ")?.split_whitespace().next()?.parse().ok()
}

/// A low-cardinality `error.type` for a failure reason, as the worker and the run machine word
/// them.
fn error_type(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.starts_with("exit code") {
        "exit_code"
    } else if r.contains("worker was lost") || r.contains("self-fencing") || r.contains("shut down") {
        "worker_lost"
    } else if r.contains("timed out") || r.contains("timeout") {
        "timeout"
    } else if r.starts_with("killed by signal") {
        "signal"
    } else if r.starts_with("out of memory") {
        "out_of_memory"
    } else if r.starts_with("gate ") {
        "gate"
    } else if r.contains("upstream") {
        "upstream_failed"
    } else {
        "_OTHER"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exporting task's cursor: spans built batch by batch as steps end (each event read
    /// once) equal those built in one go from the whole history, as after a restart.
    #[test]
    fn spans_built_batch_by_batch_equal_those_built_at_once() {
        use crate::server::dispatch::Report;
        use weir_core::placement::{Offer, Usage};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("db")).unwrap();
        let blobs = weir_data::artifact::Store::open(&dir.path().join("artifacts")).unwrap();
        let terms = crate::server::Terms {
            lease_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            max_wait: Duration::from_secs(1),
        };
        let e = Engine::new(store, blobs, terms, crate::clock::Clock::at(Millis(1_799_999_200_000)));
        let yaml = "name: p\nsteps:\n  a:\n    run: 'true'\n  b:\n    needs: [a]\n    run: 'false'\n";
        let version = crate::store::PipelineVersion {
            name: "p".into(),
            yaml: yaml.into(),
            bundle_digest: None,
            submitted_at: Millis(1_799_999_200_000),
            file: None,
        };
        e.store.put_pipeline_version("v1", &version).unwrap();
        let run =
            e.create_run(&mut e.lock(), "v1", &[], crate::store::Trigger::Manual { user: None }, false, None).unwrap();
        e.commit().unwrap();
        let total = Usage { cpus_milli: 4000, memory_bytes: 1 << 30, gpus: 0 };
        let offer = Offer {
            labels: Default::default(),
            total,
            runtimes: vec![weir_core::spec::Runtime::Process],
            capacity: 0,
            ahead: 0,
        };
        let (worker, session) = e.register("w", offer, None).unwrap();
        let step = |report: Report| {
            let a = e.try_lease(&worker).unwrap().expect("an attempt is ready");
            e.commit().unwrap();
            e.report(&worker, &session, &run, a.attempt, Report::Started, false).unwrap();
            e.report(&worker, &session, &run, a.attempt, report, false).unwrap();
            a.attempt.instance
        };
        let mut seen = HashMap::new();
        let a = step(Report::Succeeded { metrics: Default::default(), outputs: Default::default() });
        let first = spans_of(&e, vec![Ended::Step { run: run.clone(), instance: a }], &mut seen);
        let b = step(Report::Failed { reason: "exit code 1".into(), permanent: false });
        let ended = vec![Ended::Step { run: run.clone(), instance: b }, Ended::Run { run: run.clone() }];
        let second = spans_of(&e, ended.clone(), &mut seen);
        assert!(seen.is_empty(), "a finished run's cursor is dropped");
        let at_once =
            spans_of(&e, [vec![Ended::Step { run: run.clone(), instance: a }], ended].concat(), &mut HashMap::new());
        let show = |spans: &[SpanData]| {
            let mut v: Vec<String> = spans
                .iter()
                .map(|s| format!("{} {:?} {:?} {:?}", s.name, s.span_context.span_id(), s.attributes, s.status))
                .collect();
            v.sort();
            v
        };
        assert_eq!(first.len(), 2, "step a and its attempt");
        assert_eq!(second.len(), 3, "step b, its attempt and the run");
        assert_eq!(show(&[first, second].concat()), show(&at_once));
        assert!(
            at_once
                .iter()
                .any(|s| s.name == "attempt b"
                    && s.attributes.contains(&KeyValue::new("cicd.worker.id", worker.clone())))
        );
    }

    #[test]
    fn ids_are_stable_distinct_and_valid() {
        assert_eq!(ids::trace("r1"), ids::trace("r1"));
        assert_ne!(ids::trace("r1"), ids::trace("r2"));
        let spans = [ids::run("r1"), ids::step("r1", InstanceId(0)), ids::attempt("r1", InstanceId(0), 1)];
        assert!(spans.iter().all(|s| *s != SpanId::INVALID));
        assert_ne!(spans[0], spans[1]);
        assert_ne!(spans[1], spans[2]);
        assert_ne!(ids::attempt("r1", InstanceId(0), 1), ids::attempt("r1", InstanceId(0), 2));
    }

    #[test]
    fn traceparent_is_w3c() {
        let tp = traceparent("r1", InstanceId(2), 1);
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!((parts[0], parts[1].len(), parts[2].len(), parts[3]), ("00", 32, 16, "01"));
        assert_eq!(parts[1], ids::trace("r1").to_string());
        assert_eq!(parts[2], ids::attempt("r1", InstanceId(2), 1).to_string());
    }

    #[test]
    fn failure_reasons() {
        let check = |reason: &str, code: Option<i32>, kind: &str| {
            assert_eq!((exit_code(reason), error_type(reason)), (code, kind), "{reason}");
        };
        check("exit code 3", Some(3), "exit_code");
        check("exit code -1", Some(-1), "exit_code");
        check("timed out after 5s", None, "timeout");
        check("killed by signal 9 (SIGKILL)", None, "signal");
        check("its worker was lost (silent past its lease timeout)", None, "worker_lost");
        check("something else", None, "_OTHER");
    }

    #[test]
    fn a_failed_step_and_its_attempts() {
        let run = RunRecord {
            id: "r".into(),
            pipeline: "p".into(),
            version: "v".into(),
            params: Default::default(),
            state: RunState::Failed,
            created_at: Millis(1_000),
            finished_at: Some(Millis(9_000)),
            trigger: crate::store::Trigger::Manual { user: None },
            no_cache: false,
            sla_missed_at: None,
        };
        let step = StepRecord {
            name: "train".into(),
            step: "train".into(),
            state: StepState::Failed,
            attempts: 2,
            message: Some("exit code 2".into()),
            finished_at: Some(Millis(5_000)),
            ..StepRecord::default()
        };
        let attempt = |number, at: u64, reason: &str| AttemptView {
            number,
            worker: Some("w1".into()),
            leased_at: Some(Millis(at)),
            started_at: Some(Millis(at + 10)),
            ended_at: Some(Millis(at + 100)),
            outcome: "failed".into(),
            reason: reason.into(),
        };
        let spans = step_spans(
            &run,
            InstanceId(0),
            &step,
            &[attempt(1, 2_000, "exit code 1"), attempt(2, 4_000, "exit code 2")],
        );
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[0].parent_span_id, ids::run("r"));
        assert_eq!(spans[0].start_time, time(Millis(2_000)));
        assert!(matches!(&spans[0].status, Status::Error { description } if description == "exit code 2"));
        for (k, s) in spans[1..].iter().enumerate() {
            assert_eq!(s.parent_span_id, ids::step("r", InstanceId(0)));
            assert_eq!(s.span_context.span_id(), ids::attempt("r", InstanceId(0), k as u32 + 1));
            assert!(s.attributes.contains(&KeyValue::new("process.exit.code", k as i64 + 1)));
            assert!(s.attributes.contains(&KeyValue::new("cicd.worker.id", "w1")));
        }
        let root = run_span(&run).expect("finished");
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        assert!(root.attributes.contains(&KeyValue::new("cicd.pipeline.result", "failure")));
    }
}
