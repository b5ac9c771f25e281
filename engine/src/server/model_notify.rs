//! Notifications about a model alias outside a step's success: a move or request by hand
//! (`weir models promote`, `rollback`), and a pending move approved, rejected or timed out
//! (`server/protect.rs`). They go to the `notify:` entries of the pipeline whose run made the
//! version (its top-level entries and the registering step's), the same receivers a
//! registration's own `model_promoted` reaches, in the batch that records the move. A version
//! whose run or pipeline can no longer be read notifies nobody and says so in the log: the move
//! itself never fails for a notification.

use weir_core::run::Millis;
use weir_core::spec::{Notify, NotifyOn};

use crate::notify::ModelRef;
use crate::store::{AliasEventRecord, Batch};

use super::core::{Engine, State};
use super::error::ApiError;

impl Engine {
    /// Queues `kind` about `event` of model `model` (its `seq`th event) into `batch`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn notify_alias_event(
        &self,
        st: &mut State,
        kind: NotifyOn,
        model: &str,
        event: &AliasEventRecord,
        message: &str,
        seq: u64,
        batch: &mut Batch,
        now: Millis,
    ) {
        if let Err(e) = self.try_notify_alias_event(st, kind, model, event, message, seq, batch, now) {
            tracing::warn!(model, alias = event.alias, %kind, error = %e, "no notification for this alias event");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn try_notify_alias_event(
        &self,
        st: &mut State,
        kind: NotifyOn,
        model: &str,
        event: &AliasEventRecord,
        message: &str,
        seq: u64,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<bool, ApiError> {
        let version = self
            .store
            .model_version(model, event.to)?
            .ok_or_else(|| ApiError::NotFound(format!("model {model} has no version {}", event.to)))?;
        let record = match st.runs.get(&version.run_id) {
            Some(live) => live.record.clone(),
            None => self
                .store
                .run(&version.run_id)?
                .ok_or_else(|| ApiError::NotFound(format!("run {} is not stored", version.run_id)))?,
        };
        let (pipeline, _) = self.pipeline(st, &record.version)?;
        // The instance `deploy[region=eu]` is of the step `deploy`.
        let step = version.step.split('[').next().unwrap_or_default();
        let mut entries: Vec<&Notify> = pipeline.notify().iter().collect();
        if let Some(s) = pipeline.steps().iter().find(|s| s.name == step) {
            entries.extend(s.notify.iter());
        }
        let key = format!("{model}\0{}\0{}\0event{seq}", event.to, event.alias);
        let target = ModelRef { name: model.to_string(), version: event.to, alias: event.alias.clone() };
        let state = if event.awaiting {
            "awaiting_approval"
        } else if event.refused {
            "refused"
        } else {
            "promoted"
        };
        let step = Some(version.step.clone());
        self.queue(&record, &entries, kind, &key, step, state.into(), message.into(), Some(target), batch, now)
    }
}
