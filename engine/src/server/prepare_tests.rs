//! Starting a run plans it without the engine's state lock (issue 12, item 11): a 100,000
//! instance run is resolved, planned and stored while another call holds the lock, so the
//! cost of a huge run falls on its caller and not on every other RPC; and two runs prepared at
//! once never get the same id.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use super::testkit;
use crate::store::{PipelineVersion, Trigger};
use weir_core::run::{InstanceId, Millis};

/// 100,000 instances within the default limits: ten steps with a 100 x 100 matrix each.
fn huge() -> String {
    let values: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    let values = values.join(", ");
    let mut yaml = String::from("name: huge\nsteps:\n");
    for s in 0..10 {
        yaml.push_str(&format!("  s{s}:\n    run: echo\n    matrix: {{a: [{values}], b: [{values}]}}\n"));
    }
    yaml
}

#[test]
fn a_huge_run_is_planned_and_stored_while_another_call_holds_the_state_lock() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(testkit::engine(dir.path()));
    let version =
        PipelineVersion { name: "huge".into(), yaml: huge(), bundle_digest: None, submitted_at: Millis(1), file: None };
    e.store.put_pipeline_version("v1", &version).unwrap();
    let (pipeline, bundle) = e.pipeline(&mut e.lock(), "v1").unwrap();

    let held = e.lock(); // another call holds the state lock all along
    let planner = e.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let trigger = Trigger::Manual { user: None };
        let _ = tx.send(planner.prepare_run(pipeline, bundle, "v1", &[], trigger, false, None));
    });
    let prepared = rx
        .recv_timeout(Duration::from_secs(600))
        .expect("planning waited for the state lock")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(held);

    let id = e.install_run(&mut e.lock(), prepared).unwrap();
    e.commit().unwrap();
    assert_eq!(e.lock().runs[&id].machine.len(), 100_000);
    let last = e.store.step(&id, InstanceId(99_999)).unwrap().expect("every step record stored");
    assert_eq!(last.state, weir_core::run::StepState::Ready, "started: the roots are ready");
}

#[test]
fn runs_prepared_at_once_get_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(testkit::engine(dir.path()));
    let yaml = "name: tiny\nsteps:\n  a: {run: echo}\n".to_string();
    let version =
        PipelineVersion { name: "tiny".into(), yaml, bundle_digest: None, submitted_at: Millis(1), file: None };
    e.store.put_pipeline_version("v1", &version).unwrap();
    let (pipeline, _) = e.pipeline(&mut e.lock(), "v1").unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (e, pipeline) = (e.clone(), pipeline.clone());
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for _ in 0..25 {
                    let trigger = Trigger::Manual { user: None };
                    let p = e.prepare_run(pipeline.clone(), None, "v1", &[], trigger, false, None).unwrap();
                    ids.push(e.install_run(&mut e.lock(), p).unwrap());
                }
                ids
            })
        })
        .collect();
    let mut ids: Vec<String> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200, "every run has its own id");
}

// Paused: the test clock moves with tokio's time, so both starts see the same instant.
#[tokio::test(start_paused = true)]
async fn an_id_whose_step_records_a_crash_left_behind_is_never_handed_out_again() {
    // What a crash between a start's step records and its run record leaves: step records
    // under an id with no run. A run started at the same instant must take another id, or it
    // would list the orphans among its own steps.
    let clock = crate::clock::Clock::at(Millis(1_780_000_000_000));
    let yaml = "name: tiny\nsteps:\n  a: {run: echo}\n".to_string();
    let version =
        PipelineVersion { name: "tiny".into(), yaml, bundle_digest: None, submitted_at: Millis(1), file: None };
    let start = |dir: &std::path::Path, orphan: Option<&str>| {
        let e = testkit::engine_on(dir, clock.clone());
        e.store.put_pipeline_version("v1", &version).unwrap();
        if let Some(id) = orphan {
            let left = crate::store::StepRecord { name: "z".into(), step: "z".into(), ..Default::default() };
            e.store.put_step(id, InstanceId(7), &left).unwrap();
        }
        let (pipeline, _) = e.pipeline(&mut e.lock(), "v1").unwrap();
        let trigger = Trigger::Manual { user: None };
        let p = e.prepare_run(pipeline, None, "v1", &[], trigger, false, None).unwrap();
        let id = e.install_run(&mut e.lock(), p).unwrap();
        e.commit().unwrap();
        let steps = e.store.steps(&id, None, usize::MAX).unwrap();
        (id, steps.len())
    };
    let (first, _) = start(tempfile::tempdir().unwrap().path(), None);
    let (second, steps) = start(tempfile::tempdir().unwrap().path(), Some(&first));
    assert_ne!(second, first, "the same clock gives the same first choice; the orphans rule it out");
    assert_eq!(steps, 1, "only its own step");
}

/// A run of up to STEP_CHUNK instances is stored in one transaction (its step records, its
/// start and its run record); a bigger one in a transaction per further chunk of step records.
#[test]
fn a_small_run_starts_in_one_transaction_and_a_big_one_in_one_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine(dir.path());
    let before = e.store.transactions();
    let run =
        testkit::start_run(&e, "name: two\nsteps:\n  a: {run: 'true'}\n  b: {run: 'true', needs: [a]}\n", Millis(1));
    assert_eq!(e.store.transactions() - before, 1);
    assert_eq!(e.store.steps(&run, None, 10).unwrap().len(), 2);
    assert!(e.store.run(&run).unwrap().is_some());
    // 600 instances: two chunks of 256 on their own, the last 88 with the run.
    let values: Vec<String> = (0..600).map(|i| i.to_string()).collect();
    let yaml = format!("name: wide\nsteps:\n  w:\n    run: 'true'\n    matrix: {{i: [{}]}}\n", values.join(", "));
    let parsed = weir_core::spec::load(&yaml, &Default::default()).unwrap();
    let version =
        PipelineVersion { name: parsed.name().into(), yaml, bundle_digest: None, submitted_at: Millis(2), file: None };
    e.store.put_pipeline_version("v2", &version).unwrap();
    let before = e.store.transactions();
    let run = e.create_run(&mut e.lock(), "v2", &[], Trigger::Manual { user: None }, false, None).unwrap();
    assert_eq!(e.store.transactions() - before, 3);
    assert_eq!(e.store.steps(&run, None, 1000).unwrap().len(), 600);
}
