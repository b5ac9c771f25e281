//! Protected aliases: a model's alias whose moves wait for a person. A `register:` with
//! `approval: {message?, timeout?}` declares its alias protected, recorded on the model's head
//! (`ModelRecord::protected`), so the protection belongs to the model, not to one run or one
//! version of the pipeline: a later pipeline that leaves `approval:` out does not lift it.
//!
//! A move of a protected alias (a registration whose `when:` passed or that has none, `weir
//! models promote`, `weir models rollback`) is not made: it becomes a [`PendingMove`] on the
//! head, written in the same batch as its cause with an `awaiting` history event and an
//! `approval_requested` notification. At most one move per alias waits: a newer request
//! refuses the older one (`superseded by request N`). [`Engine::decide_alias_move`] approves
//! (the alias moves, `model_promoted`) or rejects it (`model_refused`), recording who, when and
//! why; a request with a `timeout` that passes undecided is refused by the tick
//! ([`Engine::expire_alias_moves`]). The step that registered never waits: its run goes on
//! (like MLflow's stage transition requests), the version exists, only the alias waits.
//!
//! Everything here runs under the engine's state lock; callers commit before answering.

use std::sync::atomic::{AtomicU64, Ordering};

use weir_core::run::Millis;
use weir_core::spec::{AliasApproval, NotifyOn};

use crate::store::{AliasEventRecord, Batch, ModelRecord, PendingMove, Protection};

use super::approvals::MAX_COMMENT;
use super::core::{Engine, State};
use super::error::ApiError;

/// When the tick next has a pending move to refuse for its timeout: 0 at the start (the first
/// tick scans the store), `u64::MAX` for none. Read and written under the state lock.
#[derive(Debug, Default)]
pub(crate) struct AliasDue(AtomicU64);

impl AliasDue {
    fn note(&self, due: Option<Millis>) {
        if let Some(d) = due {
            self.0.fetch_min(d.0, Ordering::SeqCst);
        }
    }
}

/// A decision on a pending move.
pub(crate) struct DecideMove<'a> {
    pub model: &'a str,
    /// The alias, or the request's id (`3`, as `weir models show` lists it).
    pub target: &'a str,
    pub approve: bool,
    pub comment: &'a str,
    /// The name the caller gives; may be empty.
    pub name: &'a str,
    /// How the caller proved itself (`client token`).
    pub credential: &'a str,
}

/// Records (or updates) the protection a registration declares for `alias`.
pub(super) fn declare(head: &mut ModelRecord, alias: &str, approval: &AliasApproval, by: String, now: Millis) {
    let timeout_ms = approval.timeout.map(|d| d.as_millis() as u64);
    let same = head.protected.get(alias).is_some_and(|p| p.message == approval.message && p.timeout_ms == timeout_ms);
    if !same {
        tracing::info!(model = head.name, alias, by, "alias protected: its moves wait for approval");
        let p = Protection { message: approval.message.clone(), timeout_ms, declared_by: by, since: now };
        head.protected.insert(alias.to_string(), p);
    }
}

/// What the approver of a request on `alias` is told.
pub(super) fn request_message(head: &ModelRecord, event: &AliasEventRecord) -> String {
    let asked = match head.protected.get(&event.alias).and_then(|p| p.message.clone()) {
        Some(m) => m,
        None => format!("move {} of model {} to v{}?", event.alias, head.name, event.to),
    };
    let id = event.request.unwrap_or(0);
    format!("{asked} ({}); `weir models approve {} {id}` or `--reject`", event.reason, head.name)
}

impl Engine {
    /// Turns `event`, a move of a protected alias, into a request awaiting approval: the head
    /// gets the pending move (an older one for the same alias is refused as superseded, its
    /// event appended to `batch` first) and `event` says it awaits. The caller appends `event`
    /// and writes the head.
    pub(super) fn request_move(
        &self,
        head: &mut ModelRecord,
        event: &mut AliasEventRecord,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<(), ApiError> {
        head.requests += 1;
        let id = head.requests;
        if let Some(i) = head.pending.iter().position(|p| p.alias == event.alias) {
            let old = head.pending.remove(i);
            let superseded = AliasEventRecord {
                refused: true,
                reason: format!("request {} superseded by request {id}: {}", old.id, old.reason),
                decided_by: Some("superseded".into()),
                ..closing(&old, head, now)
            };
            batch.append_model_event(head, &superseded)?;
        }
        let due_at =
            head.protected.get(&event.alias).and_then(|p| p.timeout_ms).map(|ms| Millis(now.0.saturating_add(ms)));
        event.awaiting = true;
        event.request = Some(id);
        event.reason = format!("{}; {} is protected: awaiting approval (request {id})", event.reason, event.alias);
        head.pending.push(PendingMove {
            id,
            alias: event.alias.clone(),
            from: event.from,
            to: event.to,
            requested_at: now,
            reason: event.reason.clone(),
            rollback: event.rollback,
            due_at,
            expression: event.expression.clone(),
            compared: event.compared.clone(),
        });
        self.alias_due.note(due_at);
        tracing::info!(
            model = head.name,
            alias = event.alias,
            to = event.to,
            request = id,
            "alias move awaits approval"
        );
        Ok(())
    }

    /// Approves or rejects a pending move; the event recorded. The caller commits before
    /// answering.
    pub(crate) fn decide_alias_move(&self, d: &DecideMove<'_>) -> Result<AliasEventRecord, ApiError> {
        weir_core::spec::check_name(d.model)
            .map_err(|e| ApiError::Invalid(format!("invalid model name {:?}: {e}", d.model)))?;
        if d.target.is_empty() {
            return Err(ApiError::Invalid("name the alias or the request id to decide".into()));
        }
        if d.comment.len() > MAX_COMMENT || d.name.len() > MAX_COMMENT {
            return Err(ApiError::Invalid(format!("the comment and the name may be at most {MAX_COMMENT} bytes")));
        }
        let name = d.name.trim();
        let by = if name.is_empty() { d.credential.to_string() } else { format!("{name} ({})", d.credential) };
        let mut st = self.lock();
        let mut head = self.head(d.model)?;
        let by_id = d.target.parse::<u64>().ok();
        let found = head.pending.iter().position(|p| p.alias == d.target || Some(p.id) == by_id);
        let Some(i) = found else {
            let waiting: Vec<String> = head.pending.iter().map(|p| format!("{} ({})", p.id, p.alias)).collect();
            let hint = if waiting.is_empty() {
                "no move of it awaits approval".to_string()
            } else {
                format!("awaiting approval: {}", waiting.join(", "))
            };
            return Err(ApiError::NotFound(format!("model {} has no pending move {}: {hint}", d.model, d.target)));
        };
        let p = head.pending.remove(i);
        let now = self.clock.now();
        let comment = d.comment.trim();
        let why = if comment.is_empty() { String::new() } else { format!(": {comment}") };
        let mut event = AliasEventRecord {
            decided_by: Some(by.clone()),
            comment: (!comment.is_empty()).then(|| comment.to_string()),
            ..closing(&p, &head, now)
        };
        if d.approve {
            event.reason = format!("{}; approved by {by}{why}", p.reason);
            head.aliases.insert(p.alias.clone(), p.to);
        } else {
            event.refused = true;
            let stays = match event.from {
                Some(v) => format!("v{v} stays {}", p.alias),
                None => format!("{} still holds no version", p.alias),
            };
            event.reason = format!("{}; rejected by {by}{why} ({stays})", p.reason);
        }
        self.close_request(&mut st, &mut head, &event, now)?;
        tracing::info!(
            model = d.model,
            alias = p.alias,
            request = p.id,
            approved = d.approve,
            by,
            "alias move decided"
        );
        Ok(event)
    }

    /// Writes a decided (or expired) request's event and the head, with its notification.
    fn close_request(
        &self,
        st: &mut State,
        head: &mut ModelRecord,
        event: &AliasEventRecord,
        now: Millis,
    ) -> Result<(), ApiError> {
        let mut batch = Batch::new();
        batch.append_model_event(head, event)?;
        batch.put_model(head)?;
        let kind = if event.refused { NotifyOn::ModelRefused } else { NotifyOn::ModelPromoted };
        let seq = head.events;
        self.notify_alias_event(st, kind, &head.name, event, &event.reason, seq, &mut batch, now);
        self.store.write_batch_unflushed(batch)?;
        Ok(())
    }

    /// Refuses every pending move whose timeout passed. Called on every tick; reads the store
    /// only when a deadline is due (or once after a start).
    pub(super) fn expire_alias_moves(&self, st: &mut State) {
        let now = self.clock.now();
        if self.alias_due.0.load(Ordering::SeqCst) > now.0 {
            return;
        }
        let heads = match self.store.models() {
            Ok(h) => h,
            Err(e) => {
                if let Some(suppressed) = super::ratelog::admit(&format!("alias timeouts {e}")) {
                    tracing::error!(error = %e, suppressed, "cannot read models to time out alias moves");
                }
                return;
            }
        };
        let mut next = None;
        let mut expired = false;
        for mut head in heads {
            let (due, waiting): (Vec<PendingMove>, Vec<PendingMove>) =
                head.pending.drain(..).partition(|p| p.due_at.is_some_and(|d| d <= now));
            head.pending = waiting;
            for p in &head.pending {
                next = p.due_at.map(|d| next.map_or(d, |n: Millis| n.min(d))).or(next);
            }
            for p in due {
                let waited = weir_core::spec::units::format_duration(std::time::Duration::from_millis(
                    now.0.saturating_sub(p.requested_at.0),
                ));
                let event = AliasEventRecord {
                    refused: true,
                    reason: format!("{}; refused: no decision within its timeout (waited {waited})", p.reason),
                    decided_by: Some("timeout".into()),
                    ..closing(&p, &head, now)
                };
                expired = true;
                if let Err(e) = self.close_request(st, &mut head, &event, now) {
                    tracing::error!(model = head.name, request = p.id, error = %e, "cannot time out an alias move");
                    next = Some(now);
                } else {
                    tracing::warn!(model = head.name, alias = p.alias, request = p.id, "alias move timed out");
                }
            }
        }
        if expired && let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "cannot flush alias move timeouts");
        }
        self.alias_due.0.store(next.map_or(u64::MAX, |n: Millis| n.0), Ordering::SeqCst);
    }
}

/// The event that closes request `p`: the alias's move from where it is now.
fn closing(p: &PendingMove, head: &ModelRecord, now: Millis) -> AliasEventRecord {
    AliasEventRecord {
        alias: p.alias.clone(),
        from: head.aliases.get(&p.alias).copied(),
        to: p.to,
        at: now,
        reason: p.reason.clone(),
        refused: false,
        rollback: p.rollback,
        expression: p.expression.clone(),
        compared: p.compared.clone(),
        awaiting: false,
        request: Some(p.id),
        decided_by: None,
        comment: None,
        by: None,
    }
}

#[cfg(test)]
mod tests {
    //! Protection against a real store, runs driven through the engine's own `apply` (the
    //! registry tests' `run_yaml`), time moved by hand on a test clock.

    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::server::registry::tests::run_yaml;
    use crate::server::testkit::engine_on;

    const YAML: &str = r#"name: reg
params: {rmse: 0.5}
notify:
  - {on: [approval_requested, model_promoted, model_refused], webhook: "http://127.0.0.1:9/m"}
steps:
  train:
    run: "true"
    outputs: [model.json]
    register: {model: churn, file: model.json, alias: production, approval: {timeout: 1h}}
  plain:
    run: "true"
    outputs: [model.json]
    register: {model: plain, file: model.json, alias: staging}
"#;

    fn events(e: &Engine) -> Vec<(String, String, u64)> {
        let mut got: Vec<(String, String, u64)> = e
            .store
            .deliveries()
            .unwrap()
            .into_iter()
            .map(|d| {
                let b: serde_json::Value = serde_json::from_str(&d.body).unwrap();
                (
                    d.event.to_string(),
                    b["model"]["name"].as_str().unwrap().into(),
                    b["model"]["version"].as_u64().unwrap(),
                )
            })
            .collect();
        got.sort();
        got
    }

    #[test]
    fn a_request_times_out_refused_and_protection_outlives_a_pipeline_that_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine_on(dir.path(), Clock::at(Millis(1_800_000_000_000)));
        let metrics = || BTreeMap::from([("rmse".to_string(), 0.5)]);
        run_yaml(&e, YAML, 0.5, metrics());
        let churn = e.store.model("churn").unwrap().unwrap();
        assert_eq!((churn.aliases.get("production"), churn.pending.len()), (None, 1));
        assert_eq!(e.store.model("plain").unwrap().unwrap().aliases.get("staging"), Some(&1), "unprotected: moved");
        e.tick();
        assert_eq!(e.store.model("churn").unwrap().unwrap().pending.len(), 1, "not due yet");

        e.clock.advance(Duration::from_secs(3601));
        e.tick();
        let churn = e.store.model("churn").unwrap().unwrap();
        assert!(churn.pending.is_empty());
        let last = e.store.model_events("churn").unwrap().pop().unwrap();
        assert!(last.refused && last.decided_by.as_deref() == Some("timeout"), "{last:?}");
        assert!(last.reason.contains("no decision within its timeout"), "{}", last.reason);
        assert_eq!(
            events(&e),
            [("approval_requested", "churn", 1), ("model_promoted", "plain", 1), ("model_refused", "churn", 1)]
                .map(|(a, b, c)| (a.to_string(), b.to_string(), c))
        );

        // A pipeline without `approval:` does not lift the protection the model holds.
        let unprotected = YAML.replace(", approval: {timeout: 1h}", "");
        run_yaml(&e, &unprotected, 0.4, metrics());
        let churn = e.store.model("churn").unwrap().unwrap();
        assert_eq!((churn.aliases.get("production"), churn.pending.len()), (None, 1));
        assert_eq!(churn.pending[0].due_at.map(|d| d.0 > e.clock.now().0), Some(true));
        // A manual promotion of the same alias supersedes the waiting request.
        e.promote_model("churn", "production", 1, "", false, None).unwrap();
        let churn = e.store.model("churn").unwrap().unwrap();
        assert_eq!(churn.pending.iter().map(|p| (p.id, p.to)).collect::<Vec<_>>(), [(3, 1)]);
        let superseded = &e.store.model_events("churn").unwrap()[3];
        assert!(superseded.refused && superseded.reason.starts_with("request 2 superseded by request 3"));
    }
}
