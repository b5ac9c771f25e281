//! The `pipeline` trigger: a pass after some run finished (and the first after a start) reads
//! the newest successful runs of the upstream pipeline and decides each one once (`weir_core::trigger::upstream`: the `when` over the run's
//! metrics and params, and the params it passes on). Only runs that finished after the
//! version with the trigger was submitted count, so submitting a trigger does not fire it on
//! history. Decisions not to fire are remembered in memory only: after a restart they are made
//! again, alike, from the same stored metrics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use weir_core::run::RunState;
use weir_core::spec::PipelineTrigger;
use weir_core::trigger::{Fire, Upstream};

use crate::store::{Listed, RunFilter, Trigger};

use super::super::core::Engine;
use super::super::error::ApiError;

/// How many of the upstream's newest successful runs a pass looks at.
const LOOK_BACK: usize = 50;

/// (pipeline, trigger, upstream run) decided already, and the finished-runs count at each
/// trigger's last complete pass.
#[derive(Default)]
pub(super) struct Decided(HashSet<(String, String, String)>, HashMap<(String, String), u64>);

impl Engine {
    /// One pass of pipeline trigger `name` of `pipeline` (latest version `version`).
    pub(super) async fn fire_upstream(
        self: &Arc<Self>,
        pipeline: &str,
        version: &str,
        name: &str,
        t: &PipelineTrigger,
    ) -> Result<(), ApiError> {
        let finished = self.triggers.finished.load(Ordering::SeqCst);
        let pass = (pipeline.to_string(), name.to_string());
        if self.triggers.upstream.lock().unwrap_or_else(|p| p.into_inner()).1.get(&pass) == Some(&finished) {
            return Ok(()); // no run finished since the last pass
        }
        let since = self.store.pipeline_version(version)?.map(|v| v.submitted_at).unwrap_or_default();
        let filter = RunFilter { pipeline: Some(t.pipeline.clone()), state: Some(RunState::Succeeded) };
        let page = self.store.list_runs(&filter, LOOK_BACK, None)?;
        for listed in page.runs {
            let Listed::Run(up) = listed else { continue };
            let key = (pipeline.to_string(), name.to_string(), up.id.clone());
            if self.triggers.upstream.lock().unwrap_or_else(|p| p.into_inner()).0.contains(&key) {
                continue;
            }
            let decided =
                |e: &Engine| e.triggers.upstream.lock().unwrap_or_else(|p| p.into_inner()).0.insert(key.clone());
            if up.finished_at.is_none_or(|f| f < since) || self.fired(&self.lock(), pipeline, name, &up.id)?.is_some() {
                decided(self);
                continue;
            }
            let steps = self.store.steps(&up.id, None, usize::MAX)?;
            let offer = Upstream {
                steps: steps
                    .into_iter()
                    .map(|(_, s)| (if s.step.is_empty() { s.name } else { s.step }, s.metrics))
                    .collect(),
                params: up
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                    .collect::<BTreeMap<_, _>>(),
            };
            match weir_core::trigger::upstream(t, &offer) {
                Fire::Skip(reason) => {
                    tracing::info!(pipeline, trigger = name, upstream = up.id, reason, "upstream run does not fire");
                }
                Fire::Start(params) => {
                    let why = weir_core::trigger::explain(t, &offer);
                    let trigger = Trigger::Upstream {
                        trigger: name.into(),
                        pipeline: t.pipeline.clone(),
                        run: up.id.clone(),
                        why,
                    };
                    if let Err(e) = self.start_triggered(pipeline, version, trigger, &params) {
                        // Params the declarations refuse stay refused: decided, and said so.
                        if matches!(e, ApiError::Diagnostics { .. } | ApiError::Invalid(_)) {
                            tracing::error!(pipeline, trigger = name, upstream = up.id, error = %e, "upstream run cannot start a run");
                        } else {
                            return Err(e);
                        }
                    }
                }
            }
            decided(self);
        }
        self.triggers.upstream.lock().unwrap_or_else(|p| p.into_inner()).1.insert(pass, finished);
        Ok(())
    }
}
