//! A backup of a running engine (`weir backup`, the `WeirAdmin.Backup` RPC): a snapshot of the
//! store's records at one instant and the blobs they name, written as `crate::backup`'s file.
//!
//! Consistency: sled 0.34 has no snapshot reads, and a tree-by-tree export while runs go on
//! could hold a step's outputs without its run's event that produced them. So the records are
//! read with every store write paused ([`Store::paused`](crate::store::Store::paused): writes
//! take a shared lock, the snapshot the exclusive one) and spooled to an unnamed temporary file
//! in the data folder; the referenced blobs are listed under the same pause. Writes wait only
//! for that spooling, not for the blobs' copy; runs in flight go on (a report waits, then
//! lands after the snapshot, and a restore resumes the run from what the snapshot holds).
//!
//! GC: before the pause ends, every blob the snapshot names is held ([`BlobHolds`]) until the
//! backup is written or abandoned; the sweep (`retention.rs`) keeps held blobs, so a run deleted
//! right after the snapshot cannot lose a blob the backup still has to copy.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

use weir_data::artifact::Digest;

use super::core::Engine;
use super::error::ApiError;
use crate::backup::{self, Header, Progress, Trailer};

/// Blobs that running backups still have to copy, with how many backups hold each.
#[derive(Debug, Default)]
pub(crate) struct BlobHolds(Mutex<HashMap<Digest, u32>>);

impl BlobHolds {
    /// Whether a backup holds `digest`.
    pub(crate) fn holds(&self, digest: &Digest) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).contains_key(digest)
    }

    fn hold(self: &Arc<Self>, digests: &[Digest]) -> Hold {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for d in digests {
            *held.entry(*d).or_default() += 1;
        }
        Hold { holds: self.clone(), digests: digests.to_vec() }
    }
}

/// Released on drop: the backup is written or gone.
pub(crate) struct Hold {
    holds: Arc<BlobHolds>,
    digests: Vec<Digest>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.holds.0.lock().unwrap_or_else(|p| p.into_inner());
        for d in &self.digests {
            if let Some(n) = held.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    held.remove(d);
                }
            }
        }
    }
}

/// The records of one instant and the blobs they name, held against the sweep.
pub(crate) struct Snapshot {
    header: Header,
    records: File,
    record_bytes: u64,
    record_count: u64,
    digests: Vec<Digest>,
    _hold: Hold,
}

impl Snapshot {
    /// How many blobs it names.
    #[cfg(test)]
    pub(crate) fn blobs(&self) -> usize {
        self.digests.len()
    }
}

impl Engine {
    /// Reads every record and the blobs they name with the store's writes paused, and holds
    /// those blobs against the sweep. Blocking: call it from `spawn_blocking`.
    pub(crate) fn snapshot(&self) -> Result<Snapshot, ApiError> {
        let folder = self.store.dir().parent().unwrap_or(self.store.dir()).to_path_buf();
        let spool = tempfile_in(&folder)?;
        let now = self.clock.now();
        let (spool, exported, mut digests, hold) = self.store.paused(|| -> Result<_, ApiError> {
            let mut out = BufWriter::new(spool);
            let exported = self.store.export(&mut out)?;
            let spool = out.into_inner().map_err(|e| ApiError::Internal(format!("spool the records: {e}")))?;
            let mut digests: Vec<Digest> = self.store.referenced_blobs()?.into_iter().collect();
            digests.sort_by_key(|d| *d.as_bytes());
            let hold = self.holds.hold(&digests);
            Ok((spool, exported, digests, hold))
        })?;
        for d in &exported.damaged {
            tracing::warn!(tree = d.tree, reason = %d.reason, "the backup leaves out records sled cannot read");
        }
        digests.dedup();
        let mut records = spool;
        let record_bytes = records.seek(SeekFrom::End(0)).map_err(io("measure the records"))?;
        records.seek(SeekFrom::Start(0)).map_err(io("rewind the records"))?;
        tracing::info!(records = exported.records, blobs = digests.len(), "backup snapshot taken");
        Ok(Snapshot {
            header: Header::new(now),
            records,
            record_bytes,
            record_count: exported.records as u64,
            digests,
            _hold: hold,
        })
    }

    /// Writes `snapshot` as a backup file to `out`, then releases its hold. Blocking.
    pub(crate) fn write_backup(
        &self,
        mut snapshot: Snapshot,
        out: impl Write,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Trailer, ApiError> {
        let contents = backup::Contents {
            header: snapshot.header.clone(),
            records: &mut snapshot.records,
            record_bytes: snapshot.record_bytes,
            record_count: snapshot.record_count,
            blobs: &self.blobs,
            digests: &snapshot.digests,
        };
        let trailer = backup::write(out, contents, progress).map_err(|e| match e {
            backup::Error::Artifact(e) => ApiError::Artifact(e),
            backup::Error::Damaged { section, reason, .. } => {
                ApiError::DataLoss { what: format!("{section} is damaged"), detail: reason }
            }
            e => ApiError::Internal(format!("backup: {e}")),
        })?;
        tracing::info!(records = trailer.records, blobs = trailer.blobs, bytes = trailer.blob_bytes, "backup written");
        Ok(trailer)
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> ApiError {
    move |e| ApiError::Internal(format!("{what}: {e}"))
}

/// A file in `dir` whose name is removed as soon as it is open: it goes with its handle, and
/// only a crash in between leaves a `backup-spool-*` behind.
fn tempfile_in(dir: &std::path::Path) -> Result<File, ApiError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!("backup-spool-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| ApiError::Internal(format!("create a temporary file in {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

#[cfg(test)]
mod tests {
    // A snapshot holds its blobs against the sweep: a blob that stops being referenced right
    // after the snapshot (its pipeline deleted) and is older than the grace survives a
    // collection until the backup is written, and goes at the next collection after.

    use std::time::{Duration, SystemTime};

    use super::super::testkit;

    #[test]
    fn a_collection_during_a_backup_keeps_the_blobs_the_backup_still_copies() {
        let dir = tempfile::tempdir().unwrap();
        let engine = testkit::engine(dir.path());
        let bundle = engine.blobs.put_bytes(b"the only copy of a bundle").unwrap();
        crate::store::testkit::train_with_bundle(&engine.store, bundle);
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
    fn an_abandoned_backup_releases_its_hold() {
        let dir = tempfile::tempdir().unwrap();
        let engine = testkit::engine(dir.path());
        let bundle = engine.blobs.put_bytes(b"a bundle").unwrap();
        crate::store::testkit::train_with_bundle(&engine.store, bundle);
        let (first, second) = (engine.snapshot().unwrap(), engine.snapshot().unwrap());
        assert!(engine.holds.holds(&bundle));
        drop(first);
        assert!(engine.holds.holds(&bundle), "the other backup still holds it");
        drop(second);
        assert!(!engine.holds.holds(&bundle));
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
}
