//! The model registry: versions of named models created by steps with `register:`, aliases
//! that move (every move recorded with time and reason), gated promotion.
//!
//! A fresh success of a step with `register: {model, file, alias?, when?}` creates version
//! `latest + 1` of `model` from its output `file`, in the same batch as the success. With an
//! `alias` and no `when`, the alias moves to it. With `when`, the alias moves only if the
//! expression holds, `metrics.X` being the new version's metric and `current.metrics.X` that
//! of the version the alias holds now (champion/challenger), `explain.*` and
//! `current.explain.*` their explanations (`explain.rs`); an alias that holds nothing yet
//! moves without a comparison. A refusal (false, or an evaluation error) is recorded with the
//! expression and every value it read; the alias stays. Registration never fails the step: a
//! problem is logged and the success stands.
//!
//! The same file registers once: when `model` already has a version whose file has the new
//! output's digest (a retried deploy, a rerun with identical inputs), no version is made and
//! no alias moves; the existing version stands, and the step's log ends with a line saying so
//! (`weir models promote MODEL VERSION --alias A` moves an alias to it). Versions are distinct files, so `latest`
//! never counts the same bytes twice and rollback never lands on a copy of what it left.
//!
//! Rollback undoes the alias's last move that was not itself undone: rolled back twice, an
//! alias walks back two moves; there is nothing to go back to before its first move.
//! Promotions, rollbacks and registrations all run under the engine's state lock, so the
//! read-modify-write of a model's head never interleaves.

use std::collections::BTreeMap;

use crate::store::{AliasEventRecord, Batch, ModelRecord, ModelVersionRecord};
use weir_core::expr::{self, Ref};
use weir_core::run::{InstanceId, Millis, StepState};
use weir_core::spec::NotifyOn;
use weir_data::artifact::Manifest;

use super::core::{Engine, Live};
use super::error::ApiError;
use super::notify::StepCause;

/// A model as `weir models show` shows it: its head (latest version, aliases), every version
/// and every alias move.
#[derive(Clone, Debug)]
pub(crate) struct ModelView {
    pub head: ModelRecord,
    pub versions: Vec<ModelVersionRecord>,
    pub history: Vec<AliasEventRecord>,
}

/// A model version as lineage needs it: where its file came from.
#[derive(Clone, Debug)]
pub(crate) struct ModelRef {
    pub model: String,
    pub version: u64,
    pub digest: String,
    pub run_id: String,
    pub step: String,
}

/// Why `name` cannot name a model or alias, if it cannot: the rule of pipeline names
/// (`[a-z0-9_-]`, at most 63 characters), so anything a `register:` writes is accepted here.
fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    weir_core::spec::check_name(name).map_err(|e| ApiError::Invalid(format!("invalid {what} name {name:?}: {e}")))
}

impl Engine {
    /// Creates the next version of the model a succeeded step's `register:` names (and moves
    /// its alias when the `when:` gate allows). Problems are logged, never returned: the
    /// step's success must stand.
    pub(crate) fn register_model(
        &self,
        live: &Live,
        instance: InstanceId,
        outputs: &Manifest,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<(), ApiError> {
        let node = petgraph::graph::NodeIndex::new(instance.index());
        let Some(inst) = live.plan.graph.node_weight(node) else { return Ok(()) };
        let Some(reg) = live.pipeline.steps()[inst.step].register.as_ref() else { return Ok(()) };
        let step = live.machine.name(instance);
        let run = live.record.id.as_str();
        // Only fresh successes get here: a step the cache or `weir retry` reuses ends `cached`
        // and never reaches this hook, so its version is not registered twice.
        if let Err(e) = self.registration(live, instance, reg, outputs, batch, now) {
            tracing::error!(run, step, model = reg.model, error = %e, "no model version registered");
        }
        Ok(())
    }

    fn registration(
        &self,
        live: &Live,
        instance: InstanceId,
        reg: &weir_core::spec::Register,
        outputs: &Manifest,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<(), ApiError> {
        let step = live.machine.name(instance).to_string();
        let run = live.record.id.clone();
        let entry = outputs
            .get(&reg.file)
            .ok_or_else(|| ApiError::Precondition(format!("the step reported no output {} to register", reg.file)))?;
        let mut head = self
            .store
            .model(&reg.model)?
            .unwrap_or_else(|| ModelRecord { name: reg.model.clone(), ..Default::default() });
        if head.latest > 0
            && let Some(same) = self.store.model_versions(&reg.model)?.into_iter().find(|v| v.digest == entry.digest)
        {
            let note = format!(
                "weir: {} is already version {} of model {} (registered by run {} step {}): no new version \
                 registered and no alias moved; `weir models promote {} {} --alias ALIAS` moves an alias to it\n",
                reg.file, same.version, reg.model, same.run_id, same.step, reg.model, same.version
            );
            tracing::info!(model = reg.model, version = same.version, run, step, "same digest: no new model version");
            let attempt = weir_core::run::AttemptId { instance, number: live.machine.attempts(instance) };
            let chunk =
                crate::store::LogChunk { stream: crate::store::Stream::Stderr, at: now, data: note.into_bytes() };
            batch.put_engine_log(&run, attempt, &chunk)?;
            return Ok(());
        }
        let candidate = ModelVersionRecord {
            model: reg.model.clone(),
            version: head.latest + 1,
            file: reg.file.clone(),
            digest: entry.digest,
            size: entry.size,
            run_id: run.clone(),
            step: step.clone(),
            metrics: live.machine.metrics(instance).clone(),
            params: live
                .record
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect(),
            created_at: now,
            explanation: self.collect_explanation(outputs).0,
        };
        head.latest = candidate.version;
        head.updated_at = now;
        // Every read (the champion included) happens before the first write into `batch`, so
        // a failed read leaves nothing half-registered in the success's batch.
        let by = format!("registered by run {run} step {step}");
        if let Some(alias) = &reg.alias {
            if let Some(approval) = &reg.approval {
                super::protect::declare(&mut head, alias, approval, format!("run {run} step {step}"), now);
            }
            let from = head.aliases.get(alias).copied();
            let mut event = AliasEventRecord {
                alias: alias.clone(),
                from,
                to: candidate.version,
                at: now,
                reason: by.clone(),
                ..Default::default()
            };
            match (&reg.when, from) {
                (None, _) => {}
                (Some(e), None) => {
                    event.expression = Some(e.source().to_string());
                    event.reason = format!("{by}; {alias} held no version, so `{}` was not evaluated", e.source());
                }
                (Some(e), Some(held)) => {
                    let champion = self.store.model_version(&reg.model, held)?;
                    let params: Vec<(String, expr::Value)> =
                        live.plan.params.iter().map(|(n, v)| (n.to_string(), v.to_expr())).collect();
                    let lookup = |r: &Ref| -> Option<expr::Value> {
                        match r {
                            Ref::Metric(n) => candidate.metrics.get(n).copied().map(expr::Value::Float),
                            Ref::CurrentMetric(n) => champion.as_ref()?.metrics.get(n).copied().map(expr::Value::Float),
                            Ref::Param(n) => params.iter().find(|(p, _)| p == n).map(|(_, v)| v.clone()),
                            Ref::Explain { current, item } => super::explain::lookup(
                                *current,
                                item,
                                candidate.explanation.as_ref(),
                                champion.as_ref().and_then(|c| c.explanation.as_ref()),
                            ),
                            Ref::Matrix(_) | Ref::StepMetric { .. } => None,
                        }
                    };
                    let (verdict, trace) = e.eval_bool_traced(&lookup);
                    event.expression = Some(e.source().to_string());
                    event.compared = trace.iter().map(|(r, v)| (r.to_string(), v.to_string())).collect();
                    let values = show_values(&event.compared);
                    match verdict {
                        Ok(true) => event.reason = format!("{by}; `{}` held: {values}", e.source()),
                        Ok(false) => {
                            event.refused = true;
                            event.reason = format!(
                                "{by}; promotion refused: `{}` is false with {values} (v{held} stays {alias})",
                                e.source()
                            );
                        }
                        Err(err) => {
                            event.refused = true;
                            event.reason = format!(
                                "{by}; promotion refused: `{}` could not be evaluated: {err}{} (v{held} stays {alias})",
                                e.source(),
                                if values.is_empty() { String::new() } else { format!("; read {values}") }
                            );
                        }
                    }
                }
            }
            // Written before the request's events, which name the new version.
            batch.put_model_version(&candidate)?;
            if !event.refused {
                if head.protected.contains_key(alias) {
                    self.request_move(&mut head, &mut event, batch, now)?;
                } else {
                    head.aliases.insert(alias.clone(), candidate.version);
                }
            }
            tracing::info!(
                model = reg.model,
                version = candidate.version,
                alias,
                refused = event.refused,
                awaiting = event.awaiting,
                reason = event.reason,
                "model version registered"
            );
            batch.append_model_event(&mut head, &event)?;
            let (kind, message) = if event.refused {
                (NotifyOn::ModelRefused, event.reason.clone())
            } else if event.awaiting {
                (NotifyOn::ApprovalRequested, super::protect::request_message(&head, &event))
            } else {
                (NotifyOn::ModelPromoted, event.reason.clone())
            };
            let cause = StepCause { instance, state: StepState::Succeeded, message: &message, nonce: 0 };
            let model =
                crate::notify::ModelRef { name: reg.model.clone(), version: candidate.version, alias: alias.clone() };
            self.notify_step(live, kind, &cause, Some(model), batch, now)?;
        } else {
            batch.put_model_version(&candidate)?;
            tracing::info!(model = reg.model, version = candidate.version, run, step, "model version registered");
        }
        batch.put_model(&head)?;
        Ok(())
    }

    /// Resolves `MODEL@ALIAS`, `MODEL@VERSION` or `MODEL` (its latest version).
    pub(crate) fn resolve_model(&self, target: &str) -> Result<ModelRef, ApiError> {
        let v = self.resolve_version(target)?;
        Ok(ModelRef {
            model: v.model,
            version: v.version,
            digest: v.digest.to_string(),
            run_id: v.run_id,
            step: v.step,
        })
    }

    fn resolve_version(&self, target: &str) -> Result<ModelVersionRecord, ApiError> {
        let (name, at) = match target.split_once('@') {
            Some((n, a)) => (n, Some(a)),
            None => (target, None),
        };
        check_name("model", name)?;
        let head = self.head(name)?;
        let version = match at {
            None => head.latest,
            Some(a) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) => {
                a.parse::<u64>().map_err(|_| ApiError::Invalid(format!("version {a} of {name} is out of range")))?
            }
            Some(alias) => {
                check_name("alias", alias)?;
                *head.aliases.get(alias).ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "model {name} has no alias {alias} (it has: {}); use {name}@N for a version",
                        names_or_none(head.aliases.keys())
                    ))
                })?
            }
        };
        self.version(&head, version)
    }

    pub(super) fn head(&self, name: &str) -> Result<ModelRecord, ApiError> {
        self.store.model(name)?.ok_or_else(|| {
            let known =
                self.store.models().map(|m| m.into_iter().map(|m| m.name).collect::<Vec<_>>()).unwrap_or_default();
            let hint = weir_core::diag::did_you_mean(name, known.iter().map(String::as_str))
                .unwrap_or_else(|| "`weir models` lists the registered models".to_string());
            ApiError::NotFound(format!("no model {name} is registered: {hint}"))
        })
    }

    fn version(&self, head: &ModelRecord, version: u64) -> Result<ModelVersionRecord, ApiError> {
        self.store.model_version(&head.name, version)?.ok_or_else(|| {
            ApiError::NotFound(format!(
                "model {} has no version {version}: its versions are 1 to {} (`weir models show {}`)",
                head.name, head.latest, head.name
            ))
        })
    }

    pub(crate) fn list_models(&self) -> Result<Vec<ModelRecord>, ApiError> {
        Ok(self.store.models()?)
    }

    pub(crate) fn get_model(&self, name: &str) -> Result<ModelView, ApiError> {
        check_name("model", name)?;
        let head = self.head(name)?;
        let versions = self.store.model_versions(name)?;
        let history = self.store.model_events(name)?;
        Ok(ModelView { head, versions, history })
    }

    /// Points an alias at a version, by hand (with `dry_run`: says what would move, or why
    /// not, and records nothing). The caller commits before answering.
    pub(crate) fn promote_model(
        &self,
        name: &str,
        alias: &str,
        version: u64,
        reason: &str,
        dry_run: bool,
        by: Option<&str>,
    ) -> Result<AliasEventRecord, ApiError> {
        check_name("model", name)?;
        check_name("alias", alias)?;
        if version == 0 {
            return Err(ApiError::Invalid("versions count from 1: give the version to promote".into()));
        }
        let mut st = self.lock();
        let mut head = self.head(name)?;
        self.version(&head, version)?;
        let reason = with_reason("promoted by hand", reason);
        self.move_alias(&mut st, &mut head, alias, version, reason, false, dry_run, by)
    }

    /// Moves an alias back (see the module doc); with `dry_run`, only says where to. The
    /// caller commits before answering.
    pub(crate) fn rollback_model(
        &self,
        name: &str,
        alias: &str,
        reason: &str,
        dry_run: bool,
        by: Option<&str>,
    ) -> Result<AliasEventRecord, ApiError> {
        check_name("model", name)?;
        check_name("alias", alias)?;
        let mut st = self.lock();
        let mut head = self.head(name)?;
        let Some(&now_at) = head.aliases.get(alias) else {
            return Err(ApiError::NotFound(format!(
                "model {name} has no alias {alias} (it has: {})",
                names_or_none(head.aliases.keys())
            )));
        };
        let events = self.store.model_events(name)?;
        let target = rollback_target(&events, alias).ok_or_else(|| {
            ApiError::Precondition(format!(
                "{alias} of model {name} has nothing to go back to: v{now_at} is the first version it held; \
                 point it elsewhere with `weir models promote {name} VERSION --alias {alias}`"
            ))
        })?;
        self.version(&head, target)?;
        let reason = with_reason("rollback", reason);
        self.move_alias(&mut st, &mut head, alias, target, reason, true, dry_run, by)
    }

    /// The model version `target` (`model`, `model@alias`, `model:version`) names, and the
    /// aliases of its model, for downloading its file.
    pub(crate) fn model_file(&self, target: &str) -> Result<(ModelVersionRecord, BTreeMap<String, u64>), ApiError> {
        let v = self.resolve_version(target)?;
        let aliases = self.store.model(&v.model)?.map(|h| h.aliases).unwrap_or_default();
        Ok((v, aliases))
    }

    /// Records a move of `alias` to `to` and writes it with the head, notifying
    /// `model_promoted`; for a protected alias, records a request awaiting approval instead
    /// (`protect`), notifying `approval_requested`. Durable with the caller's
    /// [`Engine::commit`]. With `dry_run`, the event that would be recorded, unwritten.
    // Each argument is one fact of the move; a struct for them would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    fn move_alias(
        &self,
        st: &mut super::core::State,
        head: &mut ModelRecord,
        alias: &str,
        to: u64,
        reason: String,
        rollback: bool,
        dry_run: bool,
        by: Option<&str>,
    ) -> Result<AliasEventRecord, ApiError> {
        let now = self.clock.now();
        let mut event = AliasEventRecord {
            alias: alias.to_string(),
            from: head.aliases.get(alias).copied(),
            to,
            at: now,
            reason,
            rollback,
            by: by.map(str::to_string),
            ..Default::default()
        };
        let protected = head.protected.contains_key(alias);
        if dry_run {
            if protected {
                event.awaiting = true;
                event.reason = format!("{}; {alias} is protected: the move would await approval", event.reason);
            }
            return Ok(event);
        }
        let mut batch = Batch::new();
        if protected {
            self.request_move(head, &mut event, &mut batch, now)?;
        } else {
            head.aliases.insert(alias.to_string(), to);
        }
        batch.append_model_event(head, &event)?;
        batch.put_model(head)?;
        let (kind, message) = if protected {
            (NotifyOn::ApprovalRequested, super::protect::request_message(head, &event))
        } else {
            (NotifyOn::ModelPromoted, event.reason.clone())
        };
        let seq = head.events;
        self.notify_alias_event(st, kind, &head.name, &event, &message, seq, &mut batch, now);
        // Under the state lock, so no fsync here: the RPC commits (flushes) before it answers.
        self.store.write_batch_unflushed(batch)?;
        tracing::info!(model = head.name, alias, from = ?event.from, to, awaiting = protected, reason = event.reason, "alias moved");
        Ok(event)
    }
}

/// Where a rollback of `alias` goes: its moves (refusals aside) form a stack, each rollback
/// popping the move it undid; the answer is where the top move came from.
fn rollback_target(events: &[AliasEventRecord], alias: &str) -> Option<u64> {
    let mut stack: Vec<Option<u64>> = Vec::new();
    for e in events.iter().filter(|e| e.alias == alias && !e.refused && !e.awaiting) {
        if e.rollback {
            stack.pop();
        } else {
            stack.push(e.from);
        }
    }
    stack.pop().flatten()
}

fn with_reason(what: &str, reason: &str) -> String {
    match reason.trim() {
        "" => what.to_string(),
        r => format!("{what}: {r}"),
    }
}

fn names_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() { "none".to_string() } else { names.join(", ") }
}

/// `metrics.rmse = 0.9, current.metrics.rmse = 0.3`.
fn show_values(compared: &[(String, String)]) -> String {
    compared.iter().map(|(r, v)| format!("{r} = {v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
pub(super) mod tests {
    //! The registry against a real store in a temporary folder: runs are created and driven
    //! through the engine's own `apply_at` (lease, success with metrics and outputs), so
    //! registration rides the success's batch exactly as it does under a worker.

    use super::*;
    use crate::api::convert;
    use crate::store::{PipelineVersion, Trigger};
    use tonic::Status;
    use weir_core::run::{AttemptId, Event};
    use weir_data::artifact::{Digest, Entry};
    use weir_proto::v1;

    const YAML: &str = r#"name: reg
params: {rmse: 0.5}
steps:
  train:
    run: "true"
    outputs: [model.json, metrics.json]
    register: {model: churn, file: model.json, alias: production, when: "metrics.rmse < current.metrics.rmse"}
  plain:
    run: "true"
    outputs: [model.json]
    register: {model: plain, file: model.json, alias: staging}
"#;

    use crate::server::testkit::engine;

    /// Runs the pipeline with `rmse` and reports both steps succeeded with that metric.
    fn run(e: &Engine, rmse: f64) -> String {
        run_with(e, rmse, BTreeMap::from([("rmse".to_string(), rmse)]))
    }

    /// Runs the pipeline with param `rmse`; both steps succeed reporting `metrics`.
    fn run_with(e: &Engine, rmse: f64, metrics: BTreeMap<String, f64>) -> String {
        run_yaml(e, YAML, rmse, metrics)
    }

    /// [`run_with`] for another version of the pipeline.
    pub(crate) fn run_yaml(e: &Engine, yaml: &str, rmse: f64, metrics: BTreeMap<String, f64>) -> String {
        let parsed = weir_core::spec::load(yaml, &Default::default()).unwrap();
        let version = parsed.hash().to_string();
        let record = PipelineVersion {
            name: "reg".into(),
            yaml: yaml.into(),
            bundle_digest: None,
            submitted_at: e.clock.now(),
            file: None,
        };
        e.store.put_pipeline_version(&version, &record).unwrap();
        let mut st = e.lock();
        let params = [("rmse".to_string(), rmse.to_string())];
        let id = e.create_run(&mut st, &version, &params, Trigger::Manual { user: None }, false, None).unwrap();
        for i in 0..2 {
            let attempt = AttemptId { instance: InstanceId(i), number: 1 };
            let bytes = format!("{{\"rmse\": {rmse}, \"step\": {i}}}");
            let m = Manifest::new(vec![Entry {
                path: "model.json".into(),
                digest: Digest::of(bytes.as_bytes()),
                size: bytes.len() as u64,
                executable: false,
            }])
            .unwrap();
            e.apply(&mut st, &id, Event::Leased { attempt, worker: "w".into() }, None).unwrap();
            let metrics = metrics.clone();
            e.apply(&mut st, &id, Event::Succeeded { attempt, metrics }, Some(&m)).unwrap();
        }
        drop(st);
        e.commit().unwrap();
        id
    }

    #[test]
    fn an_alias_move_notifies_model_promoted_and_a_refusal_model_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        let yaml = YAML.replace(
            "steps:\n",
            "notify:\n  - {on: [model_promoted, model_refused], webhook: \"http://127.0.0.1:9/m\"}\nsteps:\n",
        );
        let metrics = |rmse: f64| BTreeMap::from([("rmse".to_string(), rmse)]);
        run_yaml(&e, &yaml, 0.5, metrics(0.5)); // v1 of both models: both aliases move
        run_yaml(&e, &yaml, 0.9, metrics(0.9)); // churn v2 is worse: refused; plain moves
        let mut got: Vec<(String, String, u64)> = e
            .store
            .deliveries()
            .unwrap()
            .into_iter()
            .map(|d| {
                let b: serde_json::Value = serde_json::from_str(&d.body).unwrap();
                let model = (b["model"]["name"].as_str().unwrap().to_string(), b["model"]["version"].as_u64().unwrap());
                (d.event.to_string(), model.0, model.1)
            })
            .collect();
        got.sort();
        let want = [
            ("model_promoted", "churn", 1),
            ("model_promoted", "plain", 1),
            ("model_promoted", "plain", 2),
            ("model_refused", "churn", 2),
        ]
        .map(|(e, m, v)| (e.to_string(), m.to_string(), v));
        assert_eq!(got, want);
    }

    #[test]
    fn a_gate_that_cannot_be_evaluated_refuses_and_says_what_was_missing() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        run(&e, 0.5);
        let run2 = run_with(&e, 0.1, BTreeMap::from([("auc".to_string(), 0.9)]));
        let m = model(&e, "churn");
        assert_eq!((m.versions.len(), m.aliases.get("production")), (2, Some(&1)));
        let refused = &m.history[1];
        assert!(refused.refused);
        assert!(refused.reason.starts_with(&format!("registered by run {run2} step train; promotion refused")));
        assert!(
            refused.reason.contains("could not be evaluated") && refused.reason.contains("metrics.rmse"),
            "{}",
            refused.reason
        );
    }

    #[test]
    fn a_success_reused_as_cached_registers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        let first = run(&e, 0.5);
        let parsed = weir_core::spec::load(YAML, &Default::default()).unwrap();
        let mut st = e.lock();
        let params = [("rmse".to_string(), "0.5".to_string())];
        let id = e
            .create_run(&mut st, parsed.hash(), &params, Trigger::Retry { of: first.clone(), from: None }, false, None)
            .unwrap();
        let attempt = AttemptId { instance: InstanceId(1), number: 1 };
        let outputs = e.store.artifacts(&first, InstanceId(1)).unwrap().unwrap();
        let metrics = BTreeMap::new();
        e.apply(&mut st, &id, Event::Cached { attempt, metrics, from: first.clone() }, Some(&outputs)).unwrap();
        drop(st);
        assert_eq!(model(&e, "plain").versions.len(), 1);
    }

    fn model(e: &Engine, name: &str) -> v1::GetModelResponse {
        convert::model(e.get_model(name).unwrap())
    }

    #[test]
    fn versions_count_from_one_and_a_plain_alias_follows_every_registration() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        let runs: Vec<String> = [0.5, 0.3, 0.9].iter().map(|r| run(&e, *r)).collect();
        let m = model(&e, "plain");
        assert_eq!(m.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(m.aliases.get("staging"), Some(&3));
        assert_eq!(m.versions[1].run_id, runs[1]);
        assert_eq!(m.versions[1].step, "plain");
        assert_eq!(m.versions[1].params.get("rmse").map(String::as_str), Some("0.3"));
        assert_eq!(m.versions[2].aliases, ["staging"]);
        let moves: Vec<(u64, u64, bool)> =
            m.history.iter().map(|h| (h.from_version, h.to_version, h.refused)).collect();
        assert_eq!(moves, [(0, 1, false), (1, 2, false), (2, 3, false)]);
        assert_eq!(m.history[2].reason, format!("registered by run {} step plain", runs[2]));
        let listed = e.list_models().unwrap();
        assert_eq!(
            listed.iter().map(|m| (m.name.as_str(), m.latest)).collect::<Vec<_>>(),
            [("churn", 3), ("plain", 3)]
        );
    }

    #[test]
    fn the_gate_moves_the_alias_only_for_a_better_candidate_and_records_what_it_compared() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        run(&e, 0.5);
        let m = model(&e, "churn");
        assert_eq!(m.aliases.get("production"), Some(&1));
        assert!(m.history[0].reason.contains("production held no version"), "{}", m.history[0].reason);

        run(&e, 0.3); // better: accepted
        let m = model(&e, "churn");
        assert_eq!(m.aliases.get("production"), Some(&2));
        let accepted = &m.history[1];
        assert!(!accepted.refused);
        assert!(accepted.reason.contains("metrics.rmse = 0.3, current.metrics.rmse = 0.5"), "{}", accepted.reason);

        run(&e, 0.9); // worse: refused, alias unchanged
        let m = model(&e, "churn");
        assert_eq!(m.versions.len(), 3, "the version is registered even when its promotion is refused");
        assert_eq!(m.aliases.get("production"), Some(&2));
        let refused = &m.history[2];
        assert!(refused.refused);
        assert_eq!((refused.from_version, refused.to_version), (2, 3));
        assert!(
            refused.reason.contains(
                "`metrics.rmse < current.metrics.rmse` is false with metrics.rmse = 0.9, current.metrics.rmse = 0.3"
            ),
            "{}",
            refused.reason
        );
        let stored = e.store.model_events("churn").unwrap();
        assert_eq!(
            stored[2].compared,
            [("metrics.rmse".into(), "0.9".into()), ("current.metrics.rmse".into(), "0.3".into())]
        );
        assert_eq!(e.resolve_model("churn@production").unwrap().version, 2);
        assert_eq!(e.resolve_model("churn").unwrap().version, 3);
        assert_eq!(e.resolve_model("churn@1").unwrap().run_id, m.versions[0].run_id);
    }

    #[test]
    fn promote_and_rollback_walk_the_alias_and_unknown_targets_say_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        for r in [0.5, 0.3, 0.9] {
            run(&e, r);
        }
        let promote = |version: u64, reason: &str| {
            e.promote_model("churn", "production", version, reason, false, None).map(|ev| convert::alias_event(&ev))
        };
        let rollback = || e.rollback_model("churn", "production", "", false, None).map(|ev| convert::alias_event(&ev));
        let ev = promote(3, "load test passed").unwrap();
        assert_eq!((ev.from_version, ev.to_version, ev.reason.as_str()), (2, 3, "promoted by hand: load test passed"));
        let ev = rollback().unwrap();
        assert_eq!((ev.from_version, ev.to_version, ev.reason.as_str()), (3, 2, "rollback"));
        assert_eq!(model(&e, "churn").aliases.get("production"), Some(&2));
        let ev = rollback().unwrap();
        assert_eq!((ev.from_version, ev.to_version), (2, 1), "a second rollback undoes the move before");
        let err = rollback().unwrap_err();
        assert!(matches!(&err, ApiError::Precondition(m) if m.contains("nothing to go back to")), "{err:?}");
        assert_eq!(Status::from(err).code(), tonic::Code::FailedPrecondition);

        let err = promote(9, "").unwrap_err();
        assert!(matches!(&err, ApiError::NotFound(m) if m.contains("versions are 1 to 3")), "{err:?}");
        let err = e.promote_model("chrun", "x", 1, "", false, None).unwrap_err();
        assert!(matches!(&err, ApiError::NotFound(m) if m.contains("did you mean `churn`?")), "{err:?}");
        let err = e.get_model("Bad Name").unwrap_err();
        assert!(matches!(&err, ApiError::Invalid(m) if m.contains("lowercase letters")), "{err:?}");
        assert!(
            matches!(e.resolve_model("churn@canary"), Err(ApiError::NotFound(m)) if m.contains("it has: production"))
        );
        assert_eq!(model(&e, "churn").history.len(), 3 + 3);

        e.commit().unwrap();
        drop(e);
        let e = engine(dir.path());
        let m = model(&e, "churn");
        assert_eq!((m.aliases.get("production"), m.history.len(), m.versions.len()), (Some(&1), 6, 3));
    }
}
