//! Which events make which notifications: the run machine's effects (`run_failed`,
//! `run_succeeded`, `step_failed`, `gate_refused`), a registration's alias move
//! (`model_promoted`, `model_refused`), a pipeline's `sla:` passing (`sla_missed`, checked on
//! every tick on the engine's clock) and an approval request (`approval_requested`). Each
//! becomes one [`Delivery`] per matching `notify:` entry (the pipeline's, and for a step event
//! the step's own), written into the same [`Batch`] as its cause, so a crash loses neither or
//! both. The delivery id derives from the cause and the entry, so recording the same cause
//! twice rewrites one delivery rather than queueing two. Sending is `outbox`'s.
//!
//! Also the services behind `weir notifications`: list the outbox (pending or dead letters)
//! and re-queue a dead letter.

use weir_core::run::{Effect, Event, InstanceId, Millis, RunState, StepState};
use weir_core::spec::{Notify, NotifyOn};

use crate::notify::{ModelRef, Payload};
use crate::store::{Batch, Delivery, RunRecord};

use super::core::{Engine, Live, State};
use super::error::ApiError;

/// A step's cause of a notification.
pub(crate) struct StepCause<'a> {
    pub instance: InstanceId,
    pub state: StepState,
    pub message: &'a str,
    /// Distinguishes causes of the same event for the same instance (its attempt number).
    pub nonce: u32,
}

/// An approval request, for the approvals feature to send (`Engine::notify_approval_requested`).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct ApprovalRequested<'a> {
    pub instance: InstanceId,
    /// The step's `approval.message`.
    pub message: &'a str,
}

/// What a listing shows of the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub delivery: Delivery,
    /// The receiver as it may be shown: scheme, host and port (its path can hold a secret).
    pub receiver: String,
}

impl Engine {
    /// Queues a notification of `event` into `batch` for every entry of `entries` that wants it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue(
        &self,
        record: &RunRecord,
        entries: &[&Notify],
        event: NotifyOn,
        cause: &str,
        step: Option<String>,
        state: String,
        message: String,
        model: Option<ModelRef>,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<bool, ApiError> {
        let mut queued = false;
        for (n, entry) in entries.iter().enumerate().filter(|(_, e)| e.wants(event)) {
            let run = &record.id;
            let key = format!("{run}\0{event}\0{cause}\0{n}\0{}", entry.target().url());
            let id = format!("d-{}", &blake3::hash(key.as_bytes()).to_hex()[..24]);
            let time = chrono::DateTime::from_timestamp_millis(now.0 as i64).unwrap_or_default();
            let payload = Payload {
                id: id.clone(),
                event,
                time: time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                pipeline: record.pipeline.clone(),
                run_id: run.clone(),
                url: self.notify.public_url.as_deref().map(|base| page_url(base, run, step.as_deref(), model.as_ref())),
                step: step.clone(),
                state: state.clone(),
                message: message.clone(),
                model: model.clone(),
            };
            let body = match entry.target() {
                weir_core::spec::NotifyTarget::Webhook(_) => payload.json(),
                weir_core::spec::NotifyTarget::Slack(_) => payload.slack(),
            };
            batch.put_delivery(&Delivery {
                id,
                event,
                target: entry.target().clone(),
                secret: entry.secret().map(str::to_string),
                pipeline: record.pipeline.clone(),
                run_id: run.clone(),
                body,
                created_at: now,
                attempts: 0,
                next_at: now,
                last_error: None,
                dead: false,
            })?;
            queued = true;
        }
        if queued {
            // The delivery task flushes before it sends, so waking it early is safe.
            self.outbox_wake.notify_one();
        }
        Ok(queued)
    }

    /// The entries a step's event goes to: the pipeline's and the step's own.
    pub(super) fn entries_of(live: &Live, instance: Option<InstanceId>) -> Vec<&Notify> {
        let mut out: Vec<&Notify> = live.pipeline.notify().iter().collect();
        if let Some(i) = instance
            && let Some(inst) = live.plan.graph.node_weight(petgraph::graph::NodeIndex::new(i.index()))
        {
            out.extend(live.pipeline.steps()[inst.step].notify.iter());
        }
        out
    }

    /// The notifications an applied event's effects call for, into its batch.
    pub(super) fn notify_effects(
        &self,
        live: &Live,
        event: &Event,
        effects: &[Effect],
        batch: &mut Batch,
        now: Millis,
    ) -> Result<(), ApiError> {
        if !live.notifies {
            return Ok(());
        }
        for effect in effects {
            match effect {
                Effect::StepChanged { instance, state: StepState::Failed, message } => {
                    // A success the gate judged false is the gate refusing, not the step failing.
                    let gate = matches!(event, Event::Succeeded { attempt, .. } if attempt.instance == *instance);
                    let kind = if gate { NotifyOn::GateRefused } else { NotifyOn::StepFailed };
                    let cause = StepCause {
                        instance: *instance,
                        state: StepState::Failed,
                        message: message.as_deref().unwrap_or(""),
                        nonce: live.machine.attempts(*instance),
                    };
                    self.notify_step(live, kind, &cause, None, batch, now)?;
                }
                Effect::RunFinished { state } => {
                    let kind = match state {
                        RunState::Succeeded => NotifyOn::RunSucceeded,
                        RunState::Failed => NotifyOn::RunFailed,
                        _ => continue,
                    };
                    let message = run_summary(live, *state);
                    let entries = Self::entries_of(live, None);
                    self.queue(
                        &live.record,
                        &entries,
                        kind,
                        "run",
                        None,
                        state.to_string(),
                        message,
                        None,
                        batch,
                        now,
                    )?;
                }
                Effect::ApprovalRequested { instance, message } => {
                    let request = ApprovalRequested { instance: *instance, message };
                    self.notify_approval_requested(live, &request, batch, now)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Queues a step event's notifications.
    pub(super) fn notify_step(
        &self,
        live: &Live,
        kind: NotifyOn,
        cause: &StepCause<'_>,
        model: Option<ModelRef>,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<bool, ApiError> {
        let entries = Self::entries_of(live, Some(cause.instance));
        let name = live.machine.name(cause.instance).to_string();
        let key = match &model {
            Some(m) => format!("{}\0{}\0{}", m.name, m.version, m.alias),
            None => format!("{}\0{}", cause.instance.0, cause.nonce),
        };
        let state = cause.state.to_string();
        self.queue(&live.record, &entries, kind, &key, Some(name), state, cause.message.to_string(), model, batch, now)
    }

    /// Queues `approval_requested` for a step waiting for a person, in the batch that records
    /// the wait.
    pub(crate) fn notify_approval_requested(
        &self,
        live: &Live,
        request: &ApprovalRequested<'_>,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<bool, ApiError> {
        let cause = StepCause {
            instance: request.instance,
            state: live.machine.state(request.instance),
            message: request.message,
            nonce: live.machine.attempts(request.instance),
        };
        self.notify_step(live, NotifyOn::ApprovalRequested, &cause, None, batch, now)
    }

    /// Queues `sla_missed` for every live run whose pipeline's `sla:` has passed, once: the
    /// run record's `sla_missed_at` is written in the same batch. Called on every tick.
    pub(super) fn check_slas(&self, st: &mut State) {
        let now = self.clock.now();
        let due: Vec<String> = st
            .runs
            .iter()
            .filter(|(_, l)| l.record.sla_missed_at.is_none())
            .filter(|(_, l)| {
                l.pipeline
                    .sla()
                    .is_some_and(|sla| now.0 >= l.record.created_at.0.saturating_add(sla.as_millis() as u64))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for run in due {
            let Some(live) = st.runs.get_mut(&run) else { continue };
            let sla = live.pipeline.sla().unwrap_or_default();
            let mut record = live.record.clone();
            record.sla_missed_at = Some(now);
            let mut batch = Batch::new();
            let message =
                format!("still {} after its sla of {}", record.state, weir_core::spec::units::format_duration(sla));
            let entries = Self::entries_of(live, None);
            let state = record.state.to_string();
            let written = match batch.put_run(&record) {
                Ok(_) => {
                    let r = &live.record;
                    self.queue(r, &entries, NotifyOn::SlaMissed, "sla", None, state, message, None, &mut batch, now)
                }
                Err(e) => Err(e.into()),
            };
            let written = written.and_then(|_| self.store.write_batch(batch).map_err(ApiError::from));
            match written {
                Ok(_) => {
                    tracing::warn!(run, sla = %weir_core::spec::units::format_duration(sla), "run missed its sla");
                    live.record.sla_missed_at = Some(now);
                }
                Err(e) => {
                    if let Some(suppressed) = super::ratelog::admit(&format!("sla {e}")) {
                        tracing::error!(run, error = %e, suppressed, "cannot record a missed sla; trying again");
                    }
                }
            }
        }
    }

    /// The outbox: pending deliveries, or with `dead` the dead letters, oldest first.
    pub(crate) fn list_notifications(&self, dead: bool) -> Result<Vec<Listed>, ApiError> {
        let mut out: Vec<Listed> = self
            .store
            .deliveries()?
            .into_iter()
            .filter(|d| d.dead == dead)
            .map(|d| Listed { receiver: receiver(d.target.url()), delivery: d })
            .collect();
        out.sort_by(|a, b| (a.delivery.created_at, &a.delivery.id).cmp(&(b.delivery.created_at, &b.delivery.id)));
        Ok(out)
    }

    /// Re-queues dead letter `id` for a fresh series of attempts.
    pub(crate) fn retry_notification(&self, id: &str) -> Result<Delivery, ApiError> {
        let Some(mut d) = self.store.delivery(id)? else {
            return Err(ApiError::NotFound(format!(
                "no notification {id} in the outbox (delivered ones are forgotten); `weir notifications --dead` lists \
                 the dead letters"
            )));
        };
        if !d.dead {
            return Err(ApiError::Precondition(format!(
                "notification {id} is not a dead letter: it is still being delivered (attempt {} made)",
                d.attempts
            )));
        }
        d.dead = false;
        d.attempts = 0;
        d.next_at = self.clock.now();
        self.store.put_delivery(&d)?;
        self.outbox_wake.notify_one();
        tracing::info!(delivery = id, "dead letter re-queued");
        Ok(d)
    }
}

/// `http://host:port` of a receiver URL: what logs and listings may show.
pub(crate) fn receiver(url: &str) -> String {
    match weir_core::spec::notify::check_url(url) {
        Ok(r) => format!("http://{}:{}", r.host, r.port),
        Err(_) => "(unusable URL)".to_string(),
    }
}

/// The web page a notification is about under the server's public URL `base`: the model's
/// page for a model event, else the step's, else the run's.
pub(crate) fn page_url(base: &str, run: &str, step: Option<&str>, model: Option<&ModelRef>) -> String {
    let base = base.trim_end_matches('/');
    match (model, step) {
        (Some(m), _) => format!("{base}/models/{}", segment(&m.name)),
        (None, Some(step)) => format!("{base}/runs/{}/steps/{}", segment(run), segment(step)),
        (None, None) => format!("{base}/runs/{}", segment(run)),
    }
}

/// `text` as one percent-encoded path segment.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A run's end in one line: which steps failed.
fn run_summary(live: &Live, state: RunState) -> String {
    let failed: Vec<&str> = live
        .machine
        .instances()
        .filter(|i| live.machine.state(*i) == StepState::Failed)
        .map(|i| live.machine.name(i))
        .collect();
    match (state, failed.is_empty()) {
        (RunState::Failed, false) => format!("run failed: {} failed", failed.join(", ")),
        (s, _) => format!("run {s}"),
    }
}
