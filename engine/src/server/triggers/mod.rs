//! The `on:` triggers of every stored pipeline's latest version, fired by `weir server` (never
//! by `weir run`): `files` (`files.rs`, a polling scan of a folder on the engine's host),
//! `pipeline` (`upstream.rs`, another pipeline's successful runs) and `webhook`
//! (`webhook.rs`, a signed POST the web adapter hands over). What fires, and with which
//! params, is decided in `weir_core::trigger`; this module performs it.
//!
//! Exactly once, as schedules do it: a triggered run's id is derived from the pipeline, the
//! trigger and the key it fired for (a file's digest, an upstream run id, an idempotency key:
//! [`weir_core::trigger::run_id`]), and the run's creation writes the `triggered` record of
//! that key in the same batch. A crash before that write is flushed leaves nothing, and the
//! key fires again after the restart; one after finds the record (or the run) and creates
//! nothing. The record outlives the run, so retention deleting the run does not make an old
//! file new again.

mod dataset;
mod files;
mod upstream;
mod webhook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::store::Trigger;

use super::core::{Engine, State};
use super::error::ApiError;

pub(crate) use dataset::{reads_trigger_files, takes_dataset};
pub(crate) use webhook::WebhookError;
pub use webhook::{Delivery, MAX_KEY_LEN, Secrets, SecretsError};

/// What the engine's triggers remember between passes. Nothing here is needed for
/// correctness after a restart: it saves rereading and rehashing.
#[derive(Default)]
pub(crate) struct Triggers {
    files: Mutex<files::Watched>,
    upstream: Mutex<upstream::Decided>,
    /// Bumped whenever a run finishes: `pipeline` triggers list the upstream's runs (a scan of
    /// the run index) only when it moved since their last pass.
    pub(crate) finished: std::sync::atomic::AtomicU64,
    /// The webhook secrets by pipeline (`weir server --webhook-secrets`).
    pub(crate) secrets: Secrets,
    /// A test hook: where the files trigger stops (see [`Pause`]).
    pause: Option<Pause>,
}

impl Triggers {
    pub(crate) fn new(secrets: Secrets) -> Triggers {
        Triggers { secrets, pause: Pause::from_env(), ..Triggers::default() }
    }
}

/// For the kill -9 tests only (`WEIR_TEST_TRIGGER_PAUSE=noticed:FILE` or `started:FILE`):
/// once a files trigger has noticed a settled file (before its run exists), or has started its
/// run (after the flush), the engine writes the run id to FILE and stops firing triggers, so a
/// test can kill it exactly there.
#[derive(Clone, Debug)]
struct Pause {
    after_start: bool,
    marker: PathBuf,
}

impl Pause {
    fn from_env() -> Option<Pause> {
        let v = std::env::var("WEIR_TEST_TRIGGER_PAUSE").ok()?;
        let (when, path) = v.split_once(':')?;
        Some(Pause { after_start: when == "started", marker: PathBuf::from(path) })
    }
}

impl Engine {
    /// Stops here forever when the test hook says so (see [`Pause`]).
    async fn pause_point(&self, after_start: bool, run: &str) {
        let Some(p) = &self.triggers.pause else { return };
        if p.after_start != after_start {
            return;
        }
        tracing::warn!(run, after_start, "test hook: triggers paused");
        let _ = std::fs::write(&p.marker, run);
        std::future::pending::<()>().await;
    }

    /// Every stored pipeline's latest version with `on:` triggers: (name, version).
    fn triggered_pipelines(&self) -> Result<Vec<(String, String, Arc<weir_core::spec::Pipeline>)>, ApiError> {
        let mut out = Vec::new();
        for (name, index) in self.store.pipelines()? {
            let parsed = self.pipeline(&mut self.lock(), &index.latest);
            match parsed {
                Ok((p, _)) if !p.triggers().is_empty() => out.push((name, index.latest, p)),
                Ok(_) => {}
                Err(e) => tracing::debug!(pipeline = name, error = %e, "pipeline not read for triggers"),
            }
        }
        Ok(out)
    }

    /// Whether trigger `trigger` of `pipeline` fired for `key` already (its record, or the
    /// derived run for stores written before the record).
    fn fired(&self, st: &State, pipeline: &str, trigger: &str, key: &str) -> Result<Option<String>, ApiError> {
        if let Some(f) = self.store.triggered(pipeline, trigger, key)? {
            return Ok(Some(f.run));
        }
        let id = weir_core::trigger::run_id(pipeline, trigger, key);
        let exists = st.runs.contains_key(&id) || self.store.run(&id)?.is_some();
        Ok(exists.then_some(id))
    }

    /// Starts the run of `version` that `trigger` fired for `key` with `overrides`, unless it
    /// fired for that key already; returns the run id and whether it was created now. The
    /// check and the creation are one step under the state lock.
    fn start_triggered(
        &self,
        pipeline: &str,
        version: &str,
        trigger: Trigger,
        overrides: &[(String, String)],
    ) -> Result<(String, bool), ApiError> {
        let Some((name, key)) = trigger.fired() else {
            return Err(ApiError::Internal("not a triggered run".into()));
        };
        let mut st = self.lock();
        if let Some(run) = self.fired(&st, pipeline, name, &key)? {
            return Ok((run, false));
        }
        let id = weir_core::trigger::run_id(pipeline, name, &key);
        let describe = trigger.describe();
        let run = self.create_run(&mut st, version, overrides, trigger, false, Some(id))?;
        drop(st);
        self.commit()?;
        tracing::info!(run, pipeline, why = describe, "triggered run started");
        Ok((run, true))
    }

    /// One pass over every trigger but webhooks: files settled since the last pass, upstream
    /// runs that succeeded. Errors are logged per trigger; the next pass tries again.
    pub(crate) async fn fire_triggers(self: &Arc<Self>) {
        let pipelines = match self.triggered_pipelines() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot list pipelines for their triggers");
                return;
            }
        };
        let mut live: BTreeMap<(String, String), ()> = BTreeMap::new();
        for (name, version, p) in pipelines {
            for t in p.triggers() {
                live.insert((name.clone(), t.name.clone()), ());
                let done = match &t.kind {
                    weir_core::spec::TriggerKind::Files(f) => self.fire_files(&name, &version, &t.name, f).await,
                    weir_core::spec::TriggerKind::Pipeline(u) => self.fire_upstream(&name, &version, &t.name, u).await,
                    weir_core::spec::TriggerKind::Webhook(_) => Ok(()),
                };
                if let Err(e) = done
                    && let Some(suppressed) = super::ratelog::admit(&format!("trigger {name} {} {e}", t.name))
                {
                    tracing::error!(pipeline = name, trigger = t.name, error = %e, suppressed, "trigger pass failed");
                }
            }
        }
        // Forget what removed triggers watched.
        self.triggers.files.lock().unwrap_or_else(|p| p.into_inner()).retain(|k| live.contains_key(k));
    }
}
