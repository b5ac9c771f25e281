//! The `runs_by_time` index: one key `created_at (u64 BE) · run id` per run, so the newest runs
//! are a short backwards scan however many runs are stored (`list`). It is derived data: every
//! write of a run record writes its key in the same transaction ([`Batch::put_run`]); a store
//! written before the index existed gets it built on open (a marker in sled's default tree says
//! it was); [`Store::export`] leaves it out and [`Store::import`] writes it for every run it
//! loads; [`Store::check`] compares it with the `runs` tree.
//!
//! A run record that does not decode has no known creation time: it is indexed at time 0, so it
//! still appears (quarantined) at the oldest end of a listing instead of vanishing.

use std::collections::BTreeSet;

use super::append::Batch;
use super::db::{Store, TreeId};
use super::envelope::decode;
use super::records::RunRecord;
use super::{Error, keys};

/// Set in sled's default tree once the index covers every run record.
const BUILT: &[u8] = b"index:runs_by_time:v1";

/// The creation time a stored run record is indexed at: its `created_at`, or 0 when it does
/// not decode.
pub(super) fn indexed_at(key: &[u8], value: &[u8]) -> u64 {
    decode::<RunRecord>(TreeId::Runs.name(), key, value).map_or(0, |r| r.created_at.0)
}

/// At most this many index problems are named in a report.
const SHOWN: usize = 20;

/// How the index and the `runs` tree differ.
#[derive(Default)]
struct Diff {
    /// Runs without an entry, with the time to index them at.
    missing: Vec<(u64, String)>,
    /// Entries with no run record at that time.
    stray: Vec<Vec<u8>>,
}

impl Store {
    /// Builds the index when this database has never had it (a store from before it). Called
    /// on open; a failure leaves the store usable (the listing then misses the unindexed runs)
    /// and is retried on the next open.
    pub(super) fn ensure_time_index(&self) {
        let built = self.reading("reading the index marker", || Ok(self.handle()?.db.get(BUILT)?.is_some()));
        if matches!(built, Ok(true)) {
            return;
        }
        match self.rebuild_time_index() {
            Ok(n) if n > 0 => tracing::info!(runs = n, "built the runs-by-time index"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot build the runs-by-time index; retried on the next start"),
        }
    }

    /// Compares the index with every readable run record (past damaged pages, as `salvage`
    /// reads). A record that does not decode matches an entry at any time: it was indexed
    /// when it still decoded.
    fn time_index_diff(&self) -> Result<Diff, Error> {
        let mut want: std::collections::BTreeMap<Vec<u8>, Option<u64>> = Default::default();
        self.salvage(TreeId::Runs, |k, v| {
            let at = decode::<RunRecord>(TreeId::Runs.name(), k, v).ok().map(|r| r.created_at.0);
            want.insert(k.to_vec(), at);
            Ok(())
        })?;
        let mut seen = BTreeSet::new();
        let mut diff = Diff::default();
        self.salvage(TreeId::RunsByTime, |k, _| {
            match keys::split_by_time(k) {
                Some((at, id)) if want.get(id).is_some_and(|w| w.is_none_or(|w| w == at)) => {
                    seen.insert(id.to_vec());
                }
                _ => diff.stray.push(k.to_vec()),
            }
            Ok(())
        })?;
        for (id, at) in want {
            if !seen.contains(&id) {
                diff.missing.push((at.unwrap_or(0), String::from_utf8_lossy(&id).into_owned()));
            }
        }
        diff.missing.sort();
        Ok(diff)
    }

    /// Writes the index entry of every run that lacks one, removes entries whose run is gone
    /// or filed under another time, marks the index built, and returns how many entries it
    /// had to add.
    pub fn rebuild_time_index(&self) -> Result<usize, Error> {
        let diff = self.time_index_diff()?;
        let mut batch = Batch::new();
        for (at, id) in &diff.missing {
            batch.put_time_index(*at, id)?;
        }
        self.write_batch(batch)?;
        self.writing("writing the index", || {
            let h = self.handle()?;
            for k in &diff.stray {
                h.trees[TreeId::RunsByTime as usize].remove(k.as_slice())?;
            }
            h.db.insert(BUILT, &b"1"[..])?;
            Ok(())
        })?;
        self.flush()?;
        Ok(diff.missing.len())
    }

    /// What is wrong with the index against the `runs` tree: runs it misses or files under
    /// another time, and entries for runs that are not stored. Empty when it agrees.
    pub(super) fn time_index_problems(&self) -> Result<Vec<String>, Error> {
        let diff = self.time_index_diff()?;
        let missing = diff.missing.iter().map(|(at, id)| format!("run {id} (created at {at} ms) is missing from it"));
        let stray = diff.stray.iter().map(|k| {
            let (at, id) = keys::split_by_time(k).unwrap_or_default();
            format!("entry for run {} at {at} ms has no matching run record", keys::show(id))
        });
        // A damaged `runs` tree makes every entry of its lost runs stray: say how many, not each.
        let mut all: Vec<String> = missing.chain(stray).collect();
        if all.len() > SHOWN {
            let more = all.len() - SHOWN;
            all.truncate(SHOWN);
            all.push(format!("and {more} more"));
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RunFilter, testkit};
    use weir_core::run::{Millis, RunState};

    fn newest(s: &Store) -> Vec<String> {
        s.list_runs(&RunFilter::default(), 100, None)
            .unwrap()
            .runs
            .into_iter()
            .map(|l| match l {
                crate::store::Listed::Run(r) => r.id,
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_store_written_without_the_index_gets_it_on_open_and_check_sees_a_broken_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            for (id, at) in [("r-a", 30), ("r-b", 10), ("r-c", 20)] {
                s.put_run(&RunRecord { created_at: Millis(at), ..testkit::run(id, "train", RunState::Succeeded) })
                    .unwrap();
            }
            assert!(s.time_index_problems().unwrap().is_empty());
            // As a store from before the index: no entries, no marker.
            let h = s.handle().unwrap();
            h.trees[TreeId::RunsByTime as usize].clear().unwrap();
            h.db.remove(BUILT).unwrap();
            s.flush().unwrap();
            let problems = s.time_index_problems().unwrap();
            assert_eq!(problems.len(), 3, "{problems:?}");
            assert!(problems[0].contains("run r-b (created at 10 ms) is missing"), "{problems:?}");
            let report = s.check().unwrap();
            assert!(!report.is_clean() && report.index.len() == 3, "{report:?}");
        }
        let s = testkit::reopen(dir.path());
        assert_eq!(newest(&s), ["r-a", "r-c", "r-b"]);
        assert!(s.check().unwrap().is_clean());
        // A stray entry (a run that is not stored) is reported, and a rebuild drops it.
        s.handle().unwrap().trees[TreeId::RunsByTime as usize]
            .insert(keys::by_time(5, "gone").unwrap(), vec![])
            .unwrap();
        assert!(s.time_index_problems().unwrap()[0].contains("entry for run gone at 5 ms"));
        assert_eq!(s.rebuild_time_index().unwrap(), 0);
        assert!(s.time_index_problems().unwrap().is_empty());
    }
}
