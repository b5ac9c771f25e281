//! A run's input dataset: the files a `files` trigger started it for; for a run a `pipeline`
//! trigger started, its upstream run's input dataset; for a retry, the retried run's. So new
//! data that reached a drift monitor and, through its result, a retrain is the retrain's input
//! too: its steps get it as `WEIR_TRIGGER_FILES` (`dispatch.rs`), the cache keys of steps that
//! read it cover its digests (`cache.rs`), and lineage walks from the retrain's root steps to
//! it and down from it (`tracking.rs`). Read from the run records each time: nothing is copied.

use std::collections::HashSet;

use weir_core::spec::{Action, Pipeline, Step};
use weir_core::template::Template;

use crate::store::{RunRecord, Trigger, TriggerFile};

use super::super::core::Engine;
use super::super::error::ApiError;

/// The most runs followed up a chain of `pipeline` triggers and retries.
const MAX_HOPS: usize = 32;

/// Whether `step`'s command, script or env names `WEIR_TRIGGER_FILES` or `WEIR_TRIGGER_DIGESTS`.
pub(crate) fn reads_trigger_files(step: &Step) -> bool {
    let mut templates: Vec<&Template> = match &step.action {
        Action::Run(t) => vec![t],
        Action::Command(argv) => argv.iter().collect(),
    };
    templates.extend(step.env.iter().map(|(_, t)| t));
    templates.iter().any(|t| t.source().contains("WEIR_TRIGGER_FILES") || t.source().contains("WEIR_TRIGGER_DIGESTS"))
}

/// Whether an instance of `step` (a root of its run's graph, or not) takes the run's input
/// dataset, for lineage: a step that names the trigger variables does; when no step of the
/// pipeline names them (a script reads its environment itself), the root steps do.
pub(crate) fn takes_dataset(pipeline: &Pipeline, step: &Step, root: bool) -> bool {
    reads_trigger_files(step) || (root && !pipeline.steps().iter().any(reads_trigger_files))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::spec::{Limits, load};

    #[test]
    fn the_steps_that_name_the_trigger_files_take_them_else_the_roots() {
        let p = load(
            "name: m\nsteps:\n  reference:\n    run: fetch\n  drift:\n    needs: [reference]\n    \
             run: check \"$WEIR_TRIGGER_FILES\"\n  other:\n    needs: [drift]\n    env: {D: \"$WEIR_TRIGGER_DIGESTS\"}\n    run: x\n",
            &Limits::default(),
        )
        .unwrap();
        let took: Vec<bool> = p.steps().iter().map(|s| takes_dataset(&p, s, s.name == "reference")).collect();
        assert_eq!(took, [false, true, true]);
        let p =
            load("name: m\nsteps:\n  a:\n    run: x\n  b:\n    needs: [a]\n    run: y\n", &Limits::default()).unwrap();
        let took: Vec<bool> = p.steps().iter().map(|s| takes_dataset(&p, s, s.name == "a")).collect();
        assert_eq!(took, [true, false], "no step names them: the roots take them");
    }
}
