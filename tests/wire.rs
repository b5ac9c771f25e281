//! The engine's conversions (`weir_engine::api::convert`) and the worker's own
//! (`weir_worker::wire`, kept apart so the worker links no engine) agree on every message both
//! sides build or read: what one side writes, the other reads back unchanged.

use std::time::{Duration, UNIX_EPOCH};

use weir_core::run::{AttemptId, InstanceId};
use weir_data::artifact::{Digest, Entry, Manifest};
use weir_engine::api::convert as engine;
use weir_worker::wire as worker;

fn manifest() -> Manifest {
    Manifest::new(vec![
        Entry { path: "model/weights.bin".into(), digest: Digest::of(b"w"), size: 1, executable: false },
        Entry { path: "run.sh".into(), digest: Digest::of(b"#!/bin/sh"), size: 9, executable: true },
    ])
    .unwrap()
}

#[test]
fn manifests_cross_both_ways() {
    let m = manifest();
    assert_eq!(worker::from_manifest(Some(&engine::manifest(&m))).unwrap(), m, "engine writes, worker reads");
    assert_eq!(engine::from_manifest(Some(&worker::manifest(&m))).unwrap(), m, "worker writes, engine reads");
    assert_eq!(engine::manifest(&m), worker::manifest(&m));
}

#[test]
fn attempt_references_cross_both_ways() {
    let a = AttemptId { instance: InstanceId(7), number: 3 };
    let wire = engine::attempt_ref("r-1", a);
    assert_eq!(worker::from_attempt_ref(Some(&wire)).unwrap(), ("r-1".to_string(), 7, 3));
    let mut zero = wire.clone();
    zero.attempt.as_mut().unwrap().number = 0;
    assert_eq!(
        engine::from_attempt_ref(Some(&zero)).unwrap_err().field,
        worker::from_attempt_ref(Some(&zero)).unwrap_err().field,
        "both refuse an attempt numbered 0 the same way"
    );
}

#[test]
fn times_and_durations_agree() {
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    assert_eq!(engine::system_time(at), worker::system_time(at));
    let d = Duration::from_millis(2500);
    assert_eq!(engine::duration(d), worker::duration(d));
    assert_eq!(worker::from_duration(Some(&engine::duration(d))), Some(d));
    assert_eq!(engine::from_duration(Some(&worker::duration(d))), Some(d));
}
