//! Live metrics of steps (`$WEIR_METRICS`): the points a worker uploads while its attempt runs,
//! accepted only from the worker that holds the live attempt (a late batch of a lost attempt is
//! refused like its report), stored and flushed before the answer, at most [`MAX_POINTS`] per
//! attempt with a message for the step's log past that; read back as series for
//! `weir metrics RUN STEP` and the step page; and the last value of each series merged into
//! the metrics of a success (`metrics.json` wins on a clash), so gates, tracking and the
//! registry see them. It decides nothing about runs.

use std::collections::BTreeMap;

use weir_core::run::{AttemptId, InstanceId};

use crate::store::{LivePoint, LiveSummary};

use super::core::Engine;
use super::error::ApiError;

/// The most points one UploadMetrics request carries.
pub(crate) const MAX_BATCH: usize = 1000;
/// The most points kept per attempt; later ones are refused (and counted).
pub(crate) const MAX_POINTS: u64 = 10_000;

/// What an upload kept, and what to tell the step when points were refused.
#[derive(Debug)]
pub(crate) struct Uploaded {
    pub accepted: u64,
    pub refused: u64,
    pub message: Option<String>,
}

/// One attempt's live metrics, as series by name.
#[derive(Debug)]
pub(crate) struct StepMetrics {
    pub instance: String,
    pub attempt: u32,
    pub attempts: u32,
    pub series: BTreeMap<String, Vec<LivePoint>>,
    pub summary: LiveSummary,
    pub limit: u64,
}

impl Engine {
    /// Stores `points` (and a count of `malformed` lines) of `attempt` of `run`, uploaded by
    /// `worker`. Refused (FAILED_PRECONDITION) unless the attempt is live and leased to it.
    pub(crate) fn upload_metrics(
        &self,
        worker: &str,
        session: &str,
        run: &str,
        attempt: AttemptId,
        points: &[LivePoint],
        malformed: u64,
    ) -> Result<Uploaded, ApiError> {
        {
            let st = self.lock();
            self.authenticate(&st, worker, session)?;
            let live = st.runs.get(run).filter(|l| attempt.instance.index() < l.machine.len());
            let holder = live.filter(|l| l.machine.live_attempt(attempt.instance) == Some(attempt));
            match holder.map(|l| l.machine.worker(attempt.instance)) {
                Some(Some(w)) if w == worker => {}
                Some(_) => {
                    return Err(ApiError::Precondition(format!(
                        "attempt {attempt} of run {run} is not leased to this worker"
                    )));
                }
                None => {
                    return Err(ApiError::Precondition(format!(
                        "attempt {attempt} of run {run} is not live: its metrics are no longer taken"
                    )));
                }
            }
        }
        let stored = self.store.append_live_metrics(run, attempt, points, malformed, MAX_POINTS)?;
        let message = (stored.refused > 0).then(|| {
            format!(
                "this attempt reached the bound of {MAX_POINTS} live metric points: {} more were refused; \
                 write fewer points to $WEIR_METRICS (one per epoch, say) or put summaries in metrics.json",
                stored.refused
            )
        });
        if let Some(message) = &message {
            tracing::info!(run, %attempt, refused = stored.refused, "live metric points refused past the bound");
            tracing::debug!(message);
        }
        Ok(Uploaded { accepted: stored.accepted, refused: stored.refused, message })
    }

    /// `metrics` (from `metrics.json`) with the last value of each live series of `attempt`
    /// added where `metrics.json` does not name it: the file wins on a clash.
    pub(crate) fn with_live_metrics(
        &self,
        run: &str,
        attempt: AttemptId,
        metrics: BTreeMap<String, f64>,
    ) -> Result<BTreeMap<String, f64>, ApiError> {
        let Some(summary) = self.store.live_summary(run, attempt)? else { return Ok(metrics) };
        let mut merged = summary.last;
        merged.extend(metrics);
        Ok(merged)
    }

    /// The live metrics of `attempt` (0: the latest) of instance `step` of `run_id`: a full
    /// instance name, or a step's name when it has one instance.
    pub(crate) fn step_metrics(&self, run_id: &str, step: &str, attempt: u32) -> Result<StepMetrics, ApiError> {
        let (_, steps, _) = self.load_run(run_id)?;
        let exact = steps.iter().position(|s| s.name == step);
        let i = match exact {
            Some(i) => i,
            None => {
                let of_step: Vec<usize> = (0..steps.len())
                    .filter(|&i| steps[i].name.strip_prefix(step).is_some_and(|t| t.starts_with('[')))
                    .collect();
                match of_step.as_slice() {
                    [i] => *i,
                    [] => {
                        let names = steps.iter().map(|s| s.name.as_str());
                        let hint = weir_core::diag::did_you_mean(step, names).unwrap_or_default();
                        return Err(ApiError::NotFound(format!("run {run_id} has no step {step}{hint}")));
                    }
                    many => {
                        let names: Vec<&str> = many.iter().map(|&i| steps[i].name.as_str()).collect();
                        return Err(ApiError::Invalid(format!(
                            "step {step} has {} instances; name one: {}",
                            names.len(),
                            names.join(", ")
                        )));
                    }
                }
            }
        };
        let record = &steps[i];
        let attempts = record.attempts;
        let number = if attempt == 0 { attempts } else { attempt };
        if number == 0 || number > attempts {
            return Err(ApiError::NotFound(if attempts == 0 {
                format!("{} of run {run_id} has not run yet", record.name)
            } else {
                format!("{} of run {run_id} has no attempt {number}: it had {attempts}", record.name)
            }));
        }
        let id = AttemptId { instance: InstanceId(i as u32), number };
        let summary = self.store.live_summary(run_id, id)?.unwrap_or_default();
        let mut series: BTreeMap<String, Vec<LivePoint>> = BTreeMap::new();
        for p in self.store.live_points(run_id, id)? {
            series.entry(p.name.clone()).or_default().push(p);
        }
        Ok(StepMetrics { instance: record.name.clone(), attempt: number, attempts, series, summary, limit: MAX_POINTS })
    }
}
