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

#[cfg(test)]
mod tests {
    //! A gate on `explain.*` against a real store: judged on the explain.json among the
    //! reported outputs, and judged alike when a restarted engine replays the success.

    use weir_core::run::{AttemptId, Event};
    use weir_data::artifact::{Digest, Entry};

    use super::*;
    use crate::server::testkit::engine;
    use crate::store::{PipelineVersion, Trigger};

    const YAML: &str = r#"name: gated
steps:
  train:
    run: "true"
    outputs: [explain.json]
    gate: "explain.top != 'customer_id' && explain.rank.income == 1"
  after:
    needs: [train]
    run: "true"
"#;

    /// Starts a run and reports `train` succeeded with an explain.json of `json`.
    fn run_with(e: &Engine, json: &str) -> String {
        let parsed = weir_core::spec::load(YAML, &Default::default()).unwrap();
        let version = parsed.hash().to_string();
        let record = PipelineVersion {
            name: "gated".into(),
            yaml: YAML.into(),
            bundle_digest: None,
            submitted_at: e.clock.now(),
            file: None,
        };
        e.store.put_pipeline_version(&version, &record).unwrap();
        let digest = e.blobs.put_bytes(json.as_bytes()).unwrap();
        let outputs = Manifest::new(vec![Entry {
            path: "explain.json".into(),
            digest,
            size: json.len() as u64,
            executable: false,
        }])
        .unwrap();
        assert_eq!(digest, Digest::of(json.as_bytes()));
        let mut st = e.lock();
        let id = e.create_run(&mut st, &version, &[], Trigger::Manual { user: None }, false, None).unwrap();
        let attempt = AttemptId { instance: InstanceId(0), number: 1 };
        e.apply(&mut st, &id, Event::Leased { attempt, worker: "w".into() }, None).unwrap();
        let metrics = Default::default();
        e.apply(&mut st, &id, Event::Succeeded { attempt, metrics }, Some(&outputs)).unwrap();
        drop(st);
        e.commit().unwrap();
        id
    }

    /// Train's state and message as stored.
    fn train(e: &Engine, run: &str) -> (weir_core::run::StepState, Option<String>) {
        let steps = e.store.steps(run, None, usize::MAX).unwrap();
        let (_, step) = steps.into_iter().find(|(i, _)| *i == InstanceId(0)).expect("train's record");
        (step.state, step.message)
    }

    #[test]
    fn a_gate_reads_the_reported_explanation_and_a_replay_reads_it_again() {
        use weir_core::run::StepState;
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        let good = run_with(&e, r#"{"method": "gain", "importances": {"income": 0.5, "customer_id": 0.1}}"#);
        assert_eq!(train(&e, &good).0, StepState::Succeeded);
        let leaky = run_with(&e, r#"{"method": "gain", "importances": {"customer_id": 0.9, "income": 0.5}}"#);
        let (state, message) = train(&e, &leaky);
        assert_eq!(state, StepState::Failed);
        let message = message.unwrap_or_default();
        assert!(message.contains("is false: explain.top = 'customer_id'"), "{message}");

        // The good run is unfinished (`after` is ready): a restarted engine replays train's
        // success, whose gate reads the stored explain.json again and still holds.
        drop(e);
        let e = engine(dir.path());
        e.recover(&crate::server::Resume::All).unwrap();
        assert_eq!(train(&e, &good).0, StepState::Succeeded, "the replayed gate judged alike");
        let st = e.lock();
        let after = st.runs.get(&good).unwrap().machine.state(InstanceId(1));
        assert_eq!(after, StepState::Ready);
    }
}
