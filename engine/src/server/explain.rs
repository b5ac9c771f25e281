//! Explanations (`explain.json` among a step's outputs, see docs/explainability.md): collected
//! when a step succeeds, read by the step's own `gate` (`core.rs` hands it to the run machine
//! before the success, and again when it replays one), kept with the model version it
//! registers, compared between versions, and read by `register.when` (`explain.*`,
//! `current.explain.*`).
//!
//! The format is `weir_core::explain`'s; this module reads the file from the blob store (its
//! size checked against the manifest before a byte is read), turns every warning into a line of
//! the step's log (stderr, prefixed `weir: explain.json:`) and a `warn` event, and never fails
//! the step: an unreadable or malformed file means no explanation, said once.

use crate::store::{Batch, LogChunk, ModelVersionRecord, Stream};
use weir_core::explain::{self, Explanation, FeatureChange};
use weir_core::expr::{ExplainItem, Value};
use weir_core::run::{AttemptId, InstanceId, Millis};
use weir_data::artifact::Manifest;

use super::core::{Engine, Live};
use super::error::ApiError;

/// Two versions' explanations compared, as `weir models diff` and the model page show them.
#[derive(Clone, Debug)]
pub(crate) struct ExplanationDiff {
    pub model: String,
    pub from: u64,
    pub to: u64,
    pub from_method: String,
    pub to_method: String,
    pub rank_shift: usize,
    pub changes: Vec<FeatureChange>,
}

impl Engine {
    /// The explanation among `outputs`, if the step wrote one, and the warnings its file
    /// raised. Reads at most [`explain::MAX_EXPLAIN_BYTES`].
    pub(crate) fn collect_explanation(&self, outputs: &Manifest) -> (Option<Explanation>, Vec<String>) {
        let Some(entry) = outputs.get(explain::FILE) else { return (None, Vec::new()) };
        if entry.size > explain::MAX_EXPLAIN_BYTES as u64 {
            let warning = format!("explain.json is {} bytes, over the 1 MiB limit: no explanation kept", entry.size);
            return (None, vec![warning]);
        }
        let read = self.blobs.open_blob(&entry.digest).map_err(|e| e.to_string()).and_then(|f| {
            use std::io::Read;
            let mut bytes = Vec::with_capacity(entry.size as usize);
            let limit = explain::MAX_EXPLAIN_BYTES as u64 + 1;
            f.take(limit).read_to_end(&mut bytes).map(|_| bytes).map_err(|e| e.to_string())
        });
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => return (None, vec![format!("explain.json could not be read: {e}: no explanation kept")]),
        };
        let parsed = explain::parse(&bytes);
        (parsed.explanation, parsed.warnings)
    }

    /// For a fresh success: says in the step's log what was wrong with its `explain.json`.
    pub(super) fn check_explanation(
        &self,
        live: &Live,
        instance: InstanceId,
        outputs: &Manifest,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<(), ApiError> {
        let (explanation, warnings) = self.collect_explanation(outputs);
        if warnings.is_empty() {
            return Ok(());
        }
        let (run, step) = (live.record.id.as_str(), live.machine.name(instance));
        for w in &warnings {
            tracing::warn!(run, step, warning = w.as_str(), "explain.json");
        }
        let kept = if explanation.is_some() { "the rest is kept" } else { "the step has no explanation" };
        let mut note = String::new();
        for w in &warnings {
            note.push_str(&format!("weir: explain.json: {w}\n"));
        }
        note.push_str(&format!(
            "weir: explain.json: {} warning(s), {kept}; the step's success stands\n",
            warnings.len()
        ));
        let attempt = AttemptId { instance, number: live.machine.attempts(instance) };
        let chunk = LogChunk { stream: Stream::Stderr, at: now, data: note.into_bytes() };
        batch.put_engine_log(run, attempt, &chunk)?;
        Ok(())
    }

    /// Compares the explanations of versions `from` and `to` of `model`.
    pub(crate) fn diff_explanations(&self, model: &str, from: u64, to: u64) -> Result<ExplanationDiff, ApiError> {
        let view = self.get_model(model)?;
        let find = |n: u64| -> Result<&ModelVersionRecord, ApiError> {
            view.versions.iter().find(|v| v.version == n).ok_or_else(|| {
                ApiError::NotFound(format!(
                    "model {model} has no version {n}: its versions are 1 to {} (`weir models show {model}`)",
                    view.head.latest
                ))
            })
        };
        let explained = |v: &ModelVersionRecord| -> Result<Explanation, ApiError> {
            v.explanation.clone().ok_or_else(|| {
                ApiError::Precondition(format!(
                    "version {} of model {model} has no explanation: its step (run {} step {}) wrote no usable \
                     explain.json among its outputs",
                    v.version, v.run_id, v.step
                ))
            })
        };
        let (a, b) = (explained(find(from)?)?, explained(find(to)?)?);
        let d = explain::diff(&a, &b);
        Ok(ExplanationDiff {
            model: model.to_string(),
            from,
            to,
            from_method: a.method.as_str().to_string(),
            to_method: b.method.as_str().to_string(),
            rank_shift: d.rank_shift,
            changes: d.changes,
        })
    }

    /// The explanation a succeeded step instance wrote, for its page (None without one).
    pub(crate) fn step_explanation(&self, run: &str, instance: InstanceId) -> Result<Option<Explanation>, ApiError> {
        let Some(outputs) = self.store.artifacts(run, instance)? else { return Ok(None) };
        Ok(self.collect_explanation(&outputs).0)
    }
}

/// The value of an `explain.*` reference in `register.when`: `candidate` is the new version's
/// explanation, `champion` that of the version the alias holds.
pub(super) fn lookup(
    current: bool,
    item: &ExplainItem,
    candidate: Option<&Explanation>,
    champion: Option<&Explanation>,
) -> Option<Value> {
    if current { explain::value(item, champion?, None) } else { explain::value(item, candidate?, champion) }
}
