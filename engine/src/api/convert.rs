//! Every conversion between the engine's domain types and the `weir.v1` protobuf messages:
//! attempt references, manifests, states, timestamps, diagnostics, and the views the services
//! return (runs, steps, assignments, plans, schedules, models, lineage). One place, so no two
//! handlers can disagree about a field; the worker's side is `worker/src/wire.rs`, and
//! `tests/wire.rs` checks that the two agree. Pure.

mod views;

pub(crate) use views::{pipeline_summary, run_listing};
pub use views::{run, step, waiting};

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use weir_proto::v1;

use crate::server::cache::{Explanation, KeyPart, PipelineRef, PlanTarget, PlannedStep, Verdict};
use crate::server::dispatch::Assignment;
use crate::server::registry::ModelView;
use crate::server::scheduler::{BackfillOutcome, BackfillTick, ScheduleView};
use crate::server::tracking::{Lineage, MetricHistory};
use crate::store::{AliasEventRecord, ModelRecord, ModelVersionRecord};
use weir_core::diag::{Diagnostic, Severity};
use weir_core::plan::Resolved;
use weir_core::run::{AttemptId, InstanceId, Millis, RunState, StepState};
use weir_core::spec::{Concurrency, PullPolicy, Runtime};
use weir_data::artifact::{Digest, Entry, Manifest};

pub use weir_proto::SESSION_HEADER;

/// What was wrong with a message, for an `InvalidArgument` status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct BadField {
    pub field: &'static str,
    pub reason: String,
}

impl BadField {
    pub fn new(field: &'static str, reason: impl Into<String>) -> BadField {
        BadField { field, reason: reason.into() }
    }
}

impl From<BadField> for crate::server::error::ApiError {
    fn from(e: BadField) -> Self {
        crate::server::error::ApiError::Invalid(e.to_string())
    }
}

/// A diagnostic of `file` as the wire carries it.
pub fn diagnostic(file: &str, d: &Diagnostic) -> v1::Diagnostic {
    let span = d.span.unwrap_or_default();
    v1::Diagnostic {
        message: d.message.clone(),
        line: span.line,
        column: span.col,
        end_line: span.end_line,
        end_column: span.end_col,
        label: d.label.clone(),
        help: d.help.clone().unwrap_or_default(),
        notes: d.notes.clone(),
        severity: match d.severity {
            Severity::Error => v1::Severity::Error,
            Severity::Warning => v1::Severity::Warning,
        } as i32,
        related: d
            .related
            .iter()
            .map(|r| v1::RelatedSpan {
                line: r.span.line,
                column: r.span.col,
                end_line: r.span.end_line,
                end_column: r.span.end_col,
                label: r.label.clone(),
            })
            .collect(),
        file: file.to_string(),
    }
}

pub fn attempt_ref(run_id: &str, a: AttemptId) -> v1::AttemptRef {
    v1::AttemptRef {
        run_id: run_id.to_string(),
        attempt: Some(v1::AttemptId { instance: a.instance.0, number: a.number }),
    }
}

/// The run id and attempt of a reference; both must be set.
pub fn from_attempt_ref(r: Option<&v1::AttemptRef>) -> Result<(String, AttemptId), BadField> {
    let r = r.ok_or_else(|| BadField::new("attempt", "is required"))?;
    if r.run_id.is_empty() {
        return Err(BadField::new("attempt.run_id", "is required"));
    }
    let a = r.attempt.as_ref().ok_or_else(|| BadField::new("attempt.attempt", "is required"))?;
    if a.number == 0 {
        return Err(BadField::new("attempt.attempt.number", "attempts are numbered from 1"));
    }
    Ok((r.run_id.clone(), AttemptId { instance: InstanceId(a.instance), number: a.number }))
}

pub fn manifest(m: &Manifest) -> v1::Manifest {
    v1::Manifest {
        files: m
            .entries()
            .iter()
            .map(|e| v1::ManifestEntry {
                path: e.path.clone(),
                digest: e.digest.to_string(),
                size: e.size,
                executable: e.executable,
            })
            .collect(),
    }
}

/// A manifest from the wire, with every name and digest checked.
pub fn from_manifest(m: Option<&v1::Manifest>) -> Result<Manifest, BadField> {
    let Some(m) = m else { return Ok(Manifest::default()) };
    let mut files = Vec::with_capacity(m.files.len());
    for f in &m.files {
        let digest: Digest =
            f.digest.parse().map_err(|e| BadField::new("outputs.files.digest", format!("{}: {e}", f.path)))?;
        files.push(Entry { path: f.path.clone(), digest, size: f.size, executable: f.executable });
    }
    Manifest::new(files).map_err(|e| BadField::new("outputs.files.path", e.to_string()))
}

pub fn timestamp(at: Millis) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: (at.0 / 1000) as i64, nanos: ((at.0 % 1000) * 1_000_000) as i32 }
}

pub fn from_timestamp(t: Option<&prost_types::Timestamp>) -> Option<Millis> {
    let t = t?;
    let ms = t.seconds.checked_mul(1000)?.checked_add(i64::from(t.nanos) / 1_000_000)?;
    u64::try_from(ms).ok().map(Millis)
}

pub fn system_time(at: SystemTime) -> prost_types::Timestamp {
    timestamp(crate::time::millis(at))
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// A wire duration; negative or unset is `None`.
pub fn from_duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    let d = d?;
    if d.seconds < 0 || d.nanos < 0 {
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

pub fn step_state(s: StepState) -> v1::StepState {
    match s {
        StepState::Pending => v1::StepState::Pending,
        StepState::Ready => v1::StepState::Ready,
        StepState::Leased => v1::StepState::Leased,
        StepState::Running => v1::StepState::Running,
        StepState::Succeeded => v1::StepState::Succeeded,
        StepState::Failed => v1::StepState::Failed,
        StepState::Skipped => v1::StepState::Skipped,
        StepState::Cancelled => v1::StepState::Cancelled,
        StepState::Cached => v1::StepState::Cached,
    }
}

pub fn from_step_state(s: v1::StepState) -> Option<StepState> {
    Some(match s {
        v1::StepState::Unspecified => return None,
        v1::StepState::Pending => StepState::Pending,
        v1::StepState::Ready => StepState::Ready,
        v1::StepState::Leased => StepState::Leased,
        v1::StepState::Running => StepState::Running,
        v1::StepState::Succeeded => StepState::Succeeded,
        v1::StepState::Failed => StepState::Failed,
        v1::StepState::Skipped => StepState::Skipped,
        v1::StepState::Cancelled => StepState::Cancelled,
        v1::StepState::Cached => StepState::Cached,
    })
}

pub fn run_state(s: RunState) -> v1::RunState {
    match s {
        RunState::Queued => v1::RunState::Queued,
        RunState::Running => v1::RunState::Running,
        RunState::Succeeded => v1::RunState::Succeeded,
        RunState::Failed => v1::RunState::Failed,
        RunState::Cancelled => v1::RunState::Cancelled,
    }
}

pub fn from_run_state(s: v1::RunState) -> Option<RunState> {
    Some(match s {
        v1::RunState::Unspecified => return None,
        v1::RunState::Queued => RunState::Queued,
        v1::RunState::Running => RunState::Running,
        v1::RunState::Succeeded => RunState::Succeeded,
        v1::RunState::Failed => RunState::Failed,
        v1::RunState::Cancelled => RunState::Cancelled,
    })
}

/// Metrics as the wire carries them (a map of doubles), keeping only finite numbers.
pub fn from_metrics(m: &std::collections::HashMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter().filter(|(_, v)| v.is_finite()).map(|(k, v)| (k.clone(), *v)).collect()
}

/// A schedule view as `ListSchedules` and pause/resume answer.
pub(crate) fn schedule(v: ScheduleView) -> v1::ScheduleInfo {
    let r = v.record;
    let t = &r.ticks;
    let backfill = t.backfill.as_ref().map(|q| v1::BackfillProgress {
        from: Some(timestamp(q.from)),
        to: Some(timestamp(q.to)),
        remaining: v.backfill_left,
        catchup: q.catchup,
    });
    v1::ScheduleInfo {
        pipeline: v.pipeline,
        version: r.version.clone(),
        cron: r.cron.clone(),
        timezone: r.timezone.clone(),
        catchup: v.schedule.catchup,
        max_catchup: v.schedule.max_catchup,
        concurrency: match v.schedule.concurrency {
            Concurrency::Allow => v1::Concurrency::Allow,
            Concurrency::Forbid => v1::Concurrency::Forbid,
            Concurrency::Replace => v1::Concurrency::Replace,
        } as i32,
        paused: t.paused,
        next_fires: v.next_fires.into_iter().map(timestamp).collect(),
        last_tick: t.last_tick.map(timestamp),
        last_run_id: t.last_run.clone().unwrap_or_default(),
        last_run_state: v.last_run_state.map_or(v1::RunState::Unspecified, run_state) as i32,
        skipped: t
            .skipped
            .iter()
            .map(|k| v1::SkippedTicks {
                first: Some(timestamp(k.first)),
                last: Some(timestamp(k.last)),
                count: k.count,
                reason: k.reason.clone(),
            })
            .collect(),
        backfill,
        params: v.schedule.params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
    }
}

pub(crate) fn backfill_tick(t: BackfillTick) -> v1::BackfillTick {
    let outcome = match t.outcome {
        BackfillOutcome::Exists => v1::BackfillOutcome::Exists,
        BackfillOutcome::Started => v1::BackfillOutcome::Started,
        BackfillOutcome::Queued => v1::BackfillOutcome::Queued,
    };
    v1::BackfillTick { time: Some(timestamp(t.at)), run_id: t.run_id, outcome: outcome as i32 }
}

/// A lease's answer.
pub(crate) fn assignment(a: Assignment) -> v1::Assignment {
    let action = match a.action {
        Resolved::Run(script) => v1::action::Kind::Script(script),
        Resolved::Command(argv) => v1::action::Kind::Command(v1::Argv { args: argv }),
    };
    v1::Assignment {
        attempt: Some(attempt_ref(&a.run, a.attempt)),
        instance_name: a.instance_name,
        step: a.step,
        pipeline: a.pipeline,
        action: Some(v1::Action { kind: Some(action) }),
        env: a.env,
        image: a.image.unwrap_or_default(),
        runtime: match a.runtime {
            Runtime::Process => v1::Runtime::Process,
            Runtime::Docker => v1::Runtime::Docker,
        } as i32,
        timeout: a.timeout.map(duration),
        inputs: a.inputs.iter().map(|(dir, m)| v1::Input { dir: dir.clone(), manifest: Some(manifest(m)) }).collect(),
        bundle_digest: a.bundle.unwrap_or_default(),
        outputs: a.outputs,
        resources: Some(v1::Resources {
            cpus_milli: a.resources.cpus_milli.map_or(0, u64::from),
            memory_bytes: a.resources.memory_bytes.unwrap_or(0),
            gpus: a.resources.gpus,
        }),
        pull_policy: match a.pull {
            PullPolicy::IfNotPresent => v1::PullPolicy::IfNotPresent,
            PullPolicy::Always => v1::PullPolicy::Always,
            PullPolicy::Never => v1::PullPolicy::Never,
        } as i32,
        capabilities: a.capabilities.map(|names| v1::Capabilities { names }),
    }
}

pub fn verdict(v: Verdict) -> v1::CacheVerdict {
    match v {
        Verdict::NotCacheable => v1::CacheVerdict::NotCacheable,
        Verdict::Unknown => v1::CacheVerdict::Unknown,
        Verdict::Hit => v1::CacheVerdict::Hit,
        Verdict::Miss => v1::CacheVerdict::Miss,
    }
}

pub fn planned_step(p: PlannedStep) -> v1::PlannedStep {
    v1::PlannedStep {
        name: p.name,
        step: p.step,
        cache: verdict(p.verdict) as i32,
        reason: p.reason,
        cache_key: p.cache_key,
        cached_from: p.cached_from,
    }
}

fn key_part(k: KeyPart) -> v1::CacheKeyPart {
    v1::CacheKeyPart { part: k.part, value: k.value, closest: k.closest }
}

pub(crate) fn explanation(e: Explanation) -> v1::ExplainCacheResponse {
    v1::ExplainCacheResponse {
        name: e.name,
        verdict: verdict(e.verdict) as i32,
        message: e.message,
        cache_key: e.cache_key,
        parts: e.parts.into_iter().map(key_part).collect(),
        closest_run: e.closest_run,
        differences: e.differences.into_iter().map(key_part).collect(),
    }
}

/// The pipeline a `StartRun` names.
pub(crate) fn start_target(p: Option<v1::start_run_request::Pipeline>) -> Option<PipelineRef> {
    p.map(|p| match p {
        v1::start_run_request::Pipeline::Name(n) => PipelineRef::Name(n),
        v1::start_run_request::Pipeline::Version(v) => PipelineRef::Version(v),
    })
}

/// The pipeline a `PlanRun` names.
pub(crate) fn plan_target(p: Option<v1::plan_run_request::Pipeline>) -> Option<PlanTarget> {
    p.map(|p| match p {
        v1::plan_run_request::Pipeline::Name(n) => PlanTarget::Stored(PipelineRef::Name(n)),
        v1::plan_run_request::Pipeline::Version(v) => PlanTarget::Stored(PipelineRef::Version(v)),
        v1::plan_run_request::Pipeline::Source(f) => {
            PlanTarget::File { yaml: f.yaml, file_name: f.file_name, bundle_digest: f.bundle_digest }
        }
    })
}

pub(crate) fn model_summary(m: ModelRecord) -> v1::ModelSummary {
    v1::ModelSummary {
        name: m.name,
        latest_version: m.latest,
        updated_at: Some(timestamp(m.updated_at)),
        aliases: m.aliases.into_iter().collect(),
    }
}

pub(crate) fn model(m: ModelView) -> v1::GetModelResponse {
    let aliases = &m.head.aliases;
    v1::GetModelResponse {
        versions: m.versions.into_iter().map(|v| model_version(v, aliases)).collect(),
        history: m.history.iter().map(alias_event).collect(),
        aliases: aliases.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        name: m.head.name,
    }
}

/// A model version, with the aliases (of `aliases`, its model's) that point at it.
pub(crate) fn model_version(v: ModelVersionRecord, aliases: &BTreeMap<String, u64>) -> v1::ModelVersion {
    v1::ModelVersion {
        aliases: aliases.iter().filter(|(_, n)| **n == v.version).map(|(a, _)| a.clone()).collect(),
        model: v.model,
        version: v.version,
        digest: v.digest.to_string(),
        file: v.file,
        size: v.size,
        run_id: v.run_id,
        step: v.step,
        metrics: v.metrics.into_iter().collect(),
        params: v.params.into_iter().collect(),
        created_at: Some(timestamp(v.created_at)),
    }
}

pub(crate) fn alias_event(e: &AliasEventRecord) -> v1::AliasEvent {
    v1::AliasEvent {
        alias: e.alias.clone(),
        from_version: e.from.unwrap_or(0),
        to_version: e.to,
        time: Some(timestamp(e.at)),
        reason: e.reason.clone(),
        refused: e.refused,
        expression: e.expression.clone().unwrap_or_default(),
        compared: e.compared.iter().cloned().collect(),
        rollback: e.rollback,
    }
}

pub(crate) fn metric_history(h: MetricHistory) -> v1::MetricHistoryResponse {
    v1::MetricHistoryResponse {
        points: h
            .points
            .into_iter()
            .map(|p| v1::MetricPoint {
                run_id: p.run_id,
                step: p.step,
                time: Some(timestamp(p.at)),
                value: p.value,
                run_state: run_state(p.run_state) as i32,
                cached: p.cached,
            })
            .collect(),
        metrics: h.metrics,
    }
}

pub(crate) fn lineage(l: Lineage) -> v1::GetLineageResponse {
    v1::GetLineageResponse {
        digest: l.digest,
        nodes: l
            .nodes
            .into_iter()
            .map(|n| v1::LineageNode {
                digest: n.digest,
                path: n.path,
                size: n.size,
                run_id: n.run_id,
                step: n.step,
                produced_at: n.produced_at.map(timestamp),
                depth: n.depth,
                links: n.links,
            })
            .collect(),
        truncated: l.truncated.is_some(),
        truncated_reason: l.truncated.unwrap_or_default(),
        model: l.model.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_refs_and_manifests_round_trip() {
        let a = AttemptId { instance: InstanceId(7), number: 2 };
        assert_eq!(from_attempt_ref(Some(&attempt_ref("r1", a))), Ok(("r1".to_string(), a)));
        assert_eq!(from_attempt_ref(None).unwrap_err().field, "attempt");
        let zero = v1::AttemptRef { run_id: "r".into(), attempt: Some(v1::AttemptId { instance: 0, number: 0 }) };
        assert_eq!(from_attempt_ref(Some(&zero)).unwrap_err().field, "attempt.attempt.number");

        let m =
            Manifest::new(vec![Entry { path: "a/b.txt".into(), digest: Digest::of(b"x"), size: 1, executable: true }])
                .unwrap();
        assert_eq!(from_manifest(Some(&manifest(&m))).unwrap(), m);
        let mut evil = manifest(&m);
        evil.files[0].path = "../escape".into();
        assert_eq!(from_manifest(Some(&evil)).unwrap_err().field, "outputs.files.path");
        evil.files[0].path = "ok".into();
        evil.files[0].digest = "zz".into();
        assert_eq!(from_manifest(Some(&evil)).unwrap_err().field, "outputs.files.digest");
    }

    #[test]
    fn times_round_trip_at_millisecond_precision() {
        let t = Millis(1_700_000_000_123);
        assert_eq!(from_timestamp(Some(&timestamp(t))), Some(t));
        assert_eq!(from_duration(Some(&duration(Duration::from_millis(1500)))), Some(Duration::from_millis(1500)));
        assert_eq!(from_duration(Some(&prost_types::Duration { seconds: -1, nanos: 0 })), None);
    }
}
