//! Every conversion between the engine's domain types and the `weir.v1` protobuf messages.
//! Here the shared pieces: attempt references, manifests, states, timestamps, diagnostics;
//! `views.rs` the run, step and pipeline views; `answers.rs` what the other services answer
//! (assignments, plans, schedules, models, lineage), `explain.rs` model explanations. One place, so no two handlers can
//! disagree about a field; the worker's side is `worker/src/wire.rs`, and `tests/wire.rs`
//! checks that the two agree. Pure.

mod answers;
mod explain;
mod views;

pub(crate) use answers::{
    alias_event, assignment, backfill_tick, explanation, lineage, metric_history, model, model_summary, model_version,
    notification, plan_target, schedule, start_target,
};
pub use answers::{planned_step, verdict};
pub(crate) use explain::{explanation_diff, model_explanation};
pub(crate) use views::{pipeline_summary, run_listing, worker_info};
pub use views::{run, run_counted, step, waiting};

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use weir_proto::v1;

use weir_core::diag::{Diagnostic, Severity};
use weir_core::run::{AttemptId, InstanceId, Millis, RunState, StepState};
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
        StepState::AwaitingApproval => v1::StepState::AwaitingApproval,
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
        v1::StepState::AwaitingApproval => StepState::AwaitingApproval,
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
