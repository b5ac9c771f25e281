//! Fixtures for the store's tests: a fresh database in a temporary folder and small records.
//! Test-only; nothing here is compiled into the engine.

use std::collections::BTreeMap;

use super::{RunRecord, StepRecord, Store, Trigger};
use crate::run::{Millis, RunState, StepState};

/// A store in a new temporary folder; keep the folder alive as long as the store.
pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

pub fn run(id: &str, pipeline: &str, state: RunState) -> RunRecord {
    RunRecord {
        id: id.to_string(),
        pipeline: pipeline.to_string(),
        version: "v-hash".to_string(),
        params: BTreeMap::from([("lr".to_string(), serde_json::json!(0.1))]),
        state,
        created_at: Millis(1_000),
        finished_at: state.is_terminal().then_some(Millis(2_000)),
        trigger: Trigger::Manual { user: Some("ada".to_string()) },
        no_cache: false,
    }
}

pub fn step(name: &str, state: StepState) -> StepRecord {
    StepRecord { name: name.to_string(), state, attempts: 1, ..StepRecord::default() }
}
