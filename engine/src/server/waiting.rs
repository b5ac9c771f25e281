//! Why the ready steps of a live run wait: for each, whether any registered worker could ever
//! run it ([`placement::waiting_reason`] over the offers of the workers registered now). Derived
//! whenever asked and never stored, so it follows workers as they come and go. Returns domain
//! values ([`Waiting`]); the API adapter writes them into its answer, and nothing here decides
//! what a client shows.

use std::collections::{BTreeMap, HashMap};

use weir_core::placement::{self, Waiting};
use weir_core::run::{InstanceId, StepState};

use super::core::Engine;

impl Engine {
    /// Why each ready instance of run `run_id` waits, for those that no registered worker could
    /// ever run; empty when the run is not live here (a finished run has nothing ready).
    pub fn waiting(&self, run_id: &str) -> BTreeMap<InstanceId, Waiting> {
        let st = self.lock();
        let Some(live) = st.runs.get(run_id) else { return BTreeMap::new() };
        // Instances of one step share their need: judge each step once.
        let mut by_step: HashMap<usize, Option<Waiting>> = HashMap::new();
        let mut out = BTreeMap::new();
        for (i, s) in live.steps.iter().enumerate() {
            if s.state != StepState::Ready {
                continue;
            }
            let instance = InstanceId(i as u32);
            let step = live.plan.graph[petgraph::graph::NodeIndex::new(i)].step;
            let waiting = by_step.entry(step).or_insert_with(|| {
                placement::waiting_reason(&live.need(instance), st.workers.values().map(|w| &w.offer))
            });
            if let Some(w) = waiting {
                out.insert(instance, w.clone());
            }
        }
        out
    }
}
