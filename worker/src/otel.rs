//! The worker's OpenTelemetry spans (`--otlp-endpoint`): the phases of an attempt (fetch
//! bundle, materialize inputs, run, collect outputs, upload outputs), exported over OTLP/gRPC as
//! children of the attempt's span in the run's trace. The engine hands that span over with the
//! lease, as a W3C `traceparent` in the answer's gRPC metadata ([`Tracer::begin`]); an attempt
//! that came without one (tracing off on the engine) is not traced here either.
//!
//! Off by default: with no [`Tracer`] every hook here is a `None` check. Phases are timed by
//! guards ([`phase`]) that record when dropped, so a phase cut short by an error still ends
//! where it stopped; the attempt's spans are exported once its outcome is known ([`finish`]),
//! the last phase carrying a failure's error status. Exports run on this module's own task;
//! one that fails is logged and dropped: tracing never holds up a step. Not traced: containers
//! resumed after a worker restart (their lease's `traceparent` is gone with the old process).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::agent::Key;

/// The `service.name` of the worker's spans.
pub const SERVICE_NAME: &str = "weir-worker";

/// A part of an attempt, one span each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    FetchBundle,
    MaterializeInputs,
    Run,
    CollectOutputs,
    UploadOutputs,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::FetchBundle => "fetch bundle",
            Phase::MaterializeInputs => "materialize inputs",
            Phase::Run => "run",
            Phase::CollectOutputs => "collect outputs",
            Phase::UploadOutputs => "upload outputs",
        }
    }
}

/// How a traced attempt ended, as its report says (the agent converts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    Succeeded,
    Failed {
        reason: String,
        exit_code: Option<i32>,
    },
    /// Given back (the worker stopped, fenced itself): no outcome of the step's own.
    Lost {
        reason: String,
    },
    /// Given back to the engine unstarted (held ahead too long): not a failure.
    Released,
    /// No report: the engine no longer wanted the attempt.
    Unreported,
}

/// What the engine's assignment says of the attempt, for the phases' attributes.
pub(crate) struct Attempt<'a> {
    pub pipeline: &'a str,
    pub step: &'a str,
    pub instance: &'a str,
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to --otlp-endpoint {endpoint}: {reason} (give a gRPC URL such as http://127.0.0.1:4317)")]
pub struct Error {
    endpoint: String,
    reason: String,
}

/// An attempt being traced: its parent (the engine's attempt span) and the phases so far.
struct Open {
    trace: TraceId,
    parent: SpanId,
    attributes: Vec<KeyValue>,
    phases: Vec<(Phase, SystemTime, SystemTime)>,
}

/// The worker's tracing: attempts being traced and the exporting task.
pub struct Tracer {
    open: Mutex<HashMap<Key, Open>>,
    tx: Mutex<Option<mpsc::UnboundedSender<Vec<SpanData>>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").finish_non_exhaustive()
    }
}

impl Tracer {
    /// Starts exporting to `endpoint` (OTLP over gRPC) on the current tokio runtime; the
    /// connection is lazy.
    pub fn start(endpoint: &str) -> Result<Arc<Tracer>, Error> {
        let error = |reason: String| Error { endpoint: endpoint.to_string(), reason };
        let uri: tonic::transport::Uri = endpoint.parse().map_err(|e| error(format!("not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(error("not an http:// URL with a host".to_string()));
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| error(e.to_string()))?;
        exporter.set_resource(&Resource::builder_empty().with_service_name(SERVICE_NAME).build());
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<SpanData>>();
        let task = tokio::spawn(async move {
            let mut batches = Vec::new();
            // A collector that is down fails every export: one line per minute, with a count.
            let (mut warned, mut failed) = (None::<tokio::time::Instant>, 0u64);
            while rx.recv_many(&mut batches, 64).await > 0 {
                let spans: Vec<SpanData> = batches.drain(..).flatten().collect();
                if let Err(e) = exporter.export(spans).await {
                    failed += 1;
                    let now = crate::clock::instant();
                    if warned.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(60)) {
                        tracing::warn!(error = %e, failed, "cannot export traces; they are dropped");
                        (warned, failed) = (Some(now), 0);
                    }
                }
            }
        });
        tracing::info!(endpoint, "exporting traces over OTLP");
        Ok(Arc::new(Tracer { open: Mutex::default(), tx: Mutex::new(Some(tx)), task: Mutex::new(Some(task)) }))
    }

    /// Starts tracing attempt `key` under the span `traceparent` names (ignored when it is not a
    /// valid W3C `traceparent`).
    pub(crate) fn begin(&self, key: &Key, traceparent: &str, a: Attempt<'_>) {
        let Some((trace, parent)) = parse_traceparent(traceparent) else {
            tracing::debug!(attempt = %key, "ignoring an invalid traceparent");
            return;
        };
        let attributes = vec![
            KeyValue::new("cicd.pipeline.name", a.pipeline.to_string()),
            KeyValue::new("cicd.pipeline.run.id", key.run_id.clone()),
            KeyValue::new("cicd.pipeline.task.name", a.step.to_string()),
            KeyValue::new("weir.step.instance", a.instance.to_string()),
            KeyValue::new("weir.attempt", i64::from(key.number)),
        ];
        let open = Open { trace, parent, attributes, phases: Vec::new() };
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), open);
    }

    fn record(&self, key: &Key, phase: Phase, from: SystemTime, to: SystemTime) {
        if let Some(open) = self.open.lock().unwrap_or_else(|p| p.into_inner()).get_mut(key) {
            open.phases.push((phase, from, to));
        }
    }

    /// Exports what is queued (at most `within`) and stops, at the worker's shutdown.
    pub async fn drain(&self, within: Duration) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task
            && tokio::time::timeout(within, task).await.is_err()
        {
            tracing::warn!("traces still unexported at shutdown were dropped");
        }
    }
}

/// Times `phase` of attempt `key` until the guard drops; nothing when tracing is off.
pub(crate) fn phase(tracer: &Option<Arc<Tracer>>, key: &Key, phase: Phase) -> Option<PhaseGuard> {
    let tracer = tracer.as_ref()?;
    Some(PhaseGuard { tracer: tracer.clone(), key: key.clone(), phase, from: crate::clock::wall() })
}

/// Records its phase from its creation to its drop.
pub(crate) struct PhaseGuard {
    tracer: Arc<Tracer>,
    key: Key,
    phase: Phase,
    from: SystemTime,
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        self.tracer.record(&self.key, self.phase, self.from, crate::clock::wall());
    }
}

/// Ends the tracing of attempt `key` with the report it ends with (`None`: it ended without
/// one) and exports its phase spans.
pub(crate) fn finish(tracer: &Option<Arc<Tracer>>, key: &Key, ended: Ended) {
    let Some(tracer) = tracer else { return };
    let Some(open) = tracer.open.lock().unwrap_or_else(|p| p.into_inner()).remove(key) else { return };
    let spans = spans(key, open, &ended);
    if let Some(tx) = tracer.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        let _ = tx.send(spans);
    }
}

fn spans(key: &Key, open: Open, ended: &Ended) -> Vec<SpanData> {
    let last = open.phases.len().saturating_sub(1);
    let (exit_code, failure) = match ended {
        Ended::Succeeded => (Some(0), None),
        Ended::Failed { reason, exit_code } => (*exit_code, Some(reason.clone())),
        Ended::Lost { reason } => (None, Some(reason.clone())),
        Ended::Released | Ended::Unreported => (None, None),
    };
    open.phases
        .iter()
        .enumerate()
        .map(|(k, &(phase, from, to))| {
            let mut attributes = open.attributes.clone();
            if phase == Phase::Run
                && let Some(code) = exit_code
            {
                attributes.push(KeyValue::new("process.exit.code", i64::from(code)));
            }
            let status = match &failure {
                Some(reason) if k == last => {
                    attributes
                        .push(KeyValue::new("error.type", if exit_code.is_some() { "exit_code" } else { "_OTHER" }));
                    Status::error(reason.clone())
                }
                _ => Status::Unset,
            };
            let id = span_id(open.parent, key, k, phase);
            SpanData {
                span_context: SpanContext::new(open.trace, id, TraceFlags::SAMPLED, false, TraceState::NONE),
                parent_span_id: open.parent,
                parent_span_is_remote: true,
                span_kind: SpanKind::Internal,
                name: Cow::Borrowed(phase.name()),
                start_time: from,
                end_time: to.max(from),
                attributes,
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status,
                instrumentation_scope: InstrumentationScope::builder("weir-worker").build(),
            }
        })
        .collect()
}

/// A phase's span id: BLAKE3 of its parent, the attempt and its place among the phases.
fn span_id(parent: SpanId, key: &Key, k: usize, phase: Phase) -> SpanId {
    let hash = blake3::hash(format!("weir phase\0{parent}\0{key}\0{k}\0{}", phase.name()).as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    bytes[7] |= 1;
    SpanId::from_bytes(bytes)
}

/// The trace and parent span of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn parse_traceparent(s: &str) -> Option<(TraceId, SpanId)> {
    let mut parts = s.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
    let span = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
    Some((trace, span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let (t, s) = parse_traceparent(good).expect("valid");
        assert_eq!(t.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(s.to_string(), "b7ad6b7169203331");
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_last_phase_carries_a_failure() {
        let key = Key { run_id: "r".into(), instance: 0, number: 1 };
        let (trace, parent) =
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").expect("valid");
        let at = SystemTime::UNIX_EPOCH;
        let open = Open {
            trace,
            parent,
            attributes: Vec::new(),
            phases: vec![(Phase::FetchBundle, at, at), (Phase::Run, at, at + Duration::from_secs(1))],
        };
        let failed = Ended::Failed { reason: "exit code 3".into(), exit_code: Some(3) };
        let spans = spans(&key, open, &failed);
        assert_eq!(spans.len(), 2);
        assert!(spans.iter().all(|s| s.parent_span_id == parent && s.span_context.trace_id() == trace));
        assert_ne!(spans[0].span_context.span_id(), spans[1].span_context.span_id());
        assert_eq!(spans[0].status, Status::Unset);
        assert_eq!(spans[1].status, Status::error("exit code 3"));
        assert!(spans[1].attributes.contains(&KeyValue::new("process.exit.code", 3_i64)));
    }
}
