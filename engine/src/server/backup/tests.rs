//! A snapshot holds its blobs against the sweep: a blob that stops being referenced right
//! after the snapshot (its pipeline deleted) and is older than the grace survives a
//! collection until the backup is written, and goes at the next collection after.

use std::time::{Duration, SystemTime};

use weir_core::run::Millis;

use super::super::testkit;
use crate::store::PipelineVersion;

#[test]
fn a_collection_during_a_backup_keeps_the_blobs_the_backup_still_copies() {
    let dir = tempfile::tempdir().unwrap();
    let engine = testkit::engine(dir.path());
    let bundle = engine.blobs.put_bytes(b"the only copy of a bundle").unwrap();
    let version = PipelineVersion {
        name: "train".to_string(),
        yaml: "x: 1\n".to_string(),
        bundle_digest: Some(bundle),
        submitted_at: Millis(3),
        file: None,
    };
    engine.store.put_pipeline_version("h1", &version).unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::open(engine.blobs.path_of(&bundle)).unwrap().set_modified(long_ago).unwrap();

    let snapshot = engine.snapshot().unwrap();
    assert_eq!(snapshot.blobs(), 1);
    // After the snapshot, nothing names the bundle any more, and it is past the grace.
    engine.store.delete_pipeline("train").unwrap();
    let report = engine.collect(false).unwrap();
    assert_eq!(report.swept.blobs, 0, "the held blob is not swept");
    assert!(engine.blobs.contains(&bundle));

    let mut file = Vec::new();
    let trailer = engine.write_backup(snapshot, &mut file, &mut |_| {}).unwrap();
    assert!(trailer.missing.is_empty(), "{:?}", trailer.missing);
    assert_eq!(trailer.blobs, 1);
    let summary = crate::backup::verify(&file[..]).unwrap();
    assert_eq!(summary.trailer, trailer);

    // Written: the hold is gone, and the next collection sweeps the blob.
    assert_eq!(engine.collect(false).unwrap().swept.blobs, 1);
    assert!(!engine.blobs.contains(&bundle));
}

#[test]
fn the_snapshot_is_the_store_as_it_was_when_taken() {
    let dir = tempfile::tempdir().unwrap();
    let engine = testkit::engine(dir.path());
    engine.store.put_run(&crate::store::testkit::run("r-1", "train", weir_core::run::RunState::Running)).unwrap();
    let snapshot = engine.snapshot().unwrap();
    // Written after the snapshot: not in the backup.
    engine.store.put_run(&crate::store::testkit::run("r-2", "train", weir_core::run::RunState::Running)).unwrap();
    let mut file = Vec::new();
    let trailer = engine.write_backup(snapshot, &mut file, &mut |_| {}).unwrap();
    assert_eq!(trailer.records, 1);
    let text = String::from_utf8_lossy(&file);
    assert!(text.contains("\"r-1\"") && !text.contains("\"r-2\""), "{text}");
}
