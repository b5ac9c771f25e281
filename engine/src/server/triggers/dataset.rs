//! A run's input dataset: the files a `files` trigger started it for; for a run a `pipeline`
//! trigger started, its upstream run's input dataset; for a retry, the retried run's. So new
//! data that reached a drift monitor and, through its result, a retrain is the retrain's input
//! too: its steps get it as `WEIR_TRIGGER_FILES` (`dispatch.rs`), the cache keys of steps that
//! read it cover its digests (`cache.rs`), and lineage walks from the retrain's root steps to
//! it and down from it (`tracking.rs`). Read from the run records each time: nothing is copied.

use std::collections::HashSet;

use crate::store::{RunRecord, Trigger, TriggerFile};

use super::super::core::Engine;
use super::super::error::ApiError;

/// The most runs followed up a chain of `pipeline` triggers and retries.
const MAX_HOPS: usize = 32;

impl Engine {
    /// The input dataset of `record`'s run (see the module); empty when none was followed to
    /// files (a manual, cron or webhook run at the chain's start, or an upstream run deleted).
    pub(crate) fn input_dataset(&self, record: &RunRecord) -> Result<Vec<TriggerFile>, ApiError> {
        let mut seen = HashSet::from([record.id.clone()]);
        let mut next = match &record.trigger {
            Trigger::Files { files, .. } => return Ok(files.clone()),
            Trigger::Upstream { run, .. } | Trigger::Retry { of: run, .. } => run.clone(),
            _ => return Ok(Vec::new()),
        };
        for _ in 0..MAX_HOPS {
            if !seen.insert(next.clone()) {
                break;
            }
            let Some(up) = self.store.run(&next)? else { break };
            next = match up.trigger {
                Trigger::Files { files, .. } => return Ok(files),
                Trigger::Upstream { run, .. } | Trigger::Retry { of: run, .. } => run,
                _ => break,
            };
        }
        Ok(Vec::new())
    }
}
