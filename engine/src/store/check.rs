//! Reading a damaged store for what is left: [`Store::salvage`] walks one tree and hands every
//! record sled can still read to a visitor, getting past a page sled cannot read (checksum
//! failure, or a panic inside sled) by reading the rest of the tree backwards from its end;
//! [`Store::check`] counts what is readable in every tree, lists the records that fail their
//! envelope, and names the runs they belong to. `weir store check` prints the report and
//! `export` uses the same walk. Nothing here writes.

use std::collections::BTreeSet;
use std::ops::Bound;

use serde::Serialize;

use super::Error;
use super::db::{Store, TreeId};
use super::envelope::decode;
use super::keys;

/// A stretch of a tree sled could not read: the keys in it are unknown.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Damage {
    pub tree: &'static str,
    /// The last key read before it, if any.
    pub after: Option<String>,
    /// The first key read after it (reading backwards from the end), if any.
    pub before: Option<String>,
    pub reason: String,
}

/// One record sled read whose envelope or JSON is bad.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BadRecord {
    pub tree: &'static str,
    pub key: String,
    /// The run the record belongs to, for trees keyed by run.
    pub run: Option<String>,
    pub reason: String,
}

/// What one tree holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TreeCount {
    pub tree: &'static str,
    /// Records that decode.
    pub readable: usize,
    /// Records read but failing their checksum or decoding (listed in [`Report::bad`]).
    pub bad: usize,
}

/// What [`Store::check`] found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub trees: Vec<TreeCount>,
    pub bad: Vec<BadRecord>,
    pub damaged: Vec<Damage>,
    /// Runs marked quarantined, with why.
    pub quarantined: Vec<(String, String)>,
    /// Where the `runs_by_time` index disagrees with the `runs` tree (`time_index`): listings
    /// then miss or misplace those runs until the engine rebuilds it.
    pub index: Vec<String>,
}

impl Report {
    /// Nothing unreadable.
    pub fn is_clean(&self) -> bool {
        self.bad.is_empty() && self.damaged.is_empty() && self.index.is_empty()
    }

    /// The runs some unreadable record belongs to, in order.
    pub fn affected_runs(&self) -> BTreeSet<String> {
        self.bad.iter().filter_map(|b| b.run.clone()).collect()
    }

    /// How many records of `tree` decode.
    pub fn readable(&self, tree: &str) -> usize {
        self.trees.iter().find(|t| t.tree == tree).map_or(0, |t| t.readable)
    }
}

/// The run a key of `t` belongs to, for trees keyed by run.
fn run_of(t: TreeId, key: &[u8]) -> Option<String> {
    let rest = match t {
        TreeId::Runs
        | TreeId::Steps
        | TreeId::Events
        | TreeId::EventSeq
        | TreeId::Logs
        | TreeId::Artifacts
        | TreeId::Quarantine
        | TreeId::LiveMetrics => key,
        // digest (32 bytes) · run · instance
        TreeId::Producers | TreeId::Consumers => key.get(32..)?,
        _ => return None,
    };
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    (end > 0).then(|| String::from_utf8_lossy(&rest[..end]).into_owned())
}

impl Store {
    /// Hands every record of `t` that sled can read to `visit`, in key order; returns the
    /// stretches it could not read (at most one per tree: past a damaged page, the rest is read
    /// backwards from the end, and a second damaged page ends that too).
    pub(super) fn salvage(
        &self,
        t: TreeId,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
    ) -> Result<Vec<Damage>, Error> {
        let tree = self.tree(t)?;
        let mut iter = tree.iter();
        let mut last: Option<Vec<u8>> = None;
        let error = loop {
            match self.reading("reading the store", || Ok(iter.next().transpose()?)) {
                Ok(Some((k, v))) => {
                    visit(&k, &v)?;
                    last = Some(k.to_vec());
                }
                Ok(None) => return Ok(Vec::new()),
                Err(e) => break e,
            }
        };
        let lower = last.clone().map_or(Bound::Unbounded, Bound::Excluded);
        let mut back = tree.range::<Vec<u8>, _>((lower, Bound::Unbounded));
        let mut tail = Vec::new();
        while let Ok(Some(kv)) = self.reading("reading the store", || Ok(back.next_back().transpose()?)) {
            tail.push(kv);
        }
        tail.reverse();
        let damage = Damage {
            tree: t.name(),
            after: last.as_deref().map(keys::show),
            before: tail.first().map(|(k, _)| keys::show(k)),
            reason: error.to_string(),
        };
        for (k, v) in &tail {
            visit(k, v)?;
        }
        Ok(vec![damage])
    }

    /// Reads every record of every tree and reports what is readable and what is not.
    pub fn check(&self) -> Result<Report, Error> {
        let mut report = Report::default();
        for t in TreeId::ALL {
            let mut count = TreeCount { tree: t.name(), readable: 0, bad: 0 };
            let mut bad = Vec::new();
            let mut quarantined = Vec::new();
            let damaged = self.salvage(t, |k, v| {
                let decoded = match t {
                    // Every other tree's payload is JSON of its record type; the generic value
                    // checks the envelope and the JSON, which is what can rot.
                    TreeId::Quarantine => decode::<String>(t.name(), k, v).map(|reason| {
                        quarantined.push((String::from_utf8_lossy(k).into_owned(), reason));
                    }),
                    _ => decode::<serde_json::Value>(t.name(), k, v).map(drop),
                };
                match decoded {
                    Ok(()) => count.readable += 1,
                    Err(e) => {
                        count.bad += 1;
                        let reason = match e {
                            Error::Corrupt { reason, .. } => reason,
                            e => e.to_string(),
                        };
                        bad.push(BadRecord { tree: t.name(), key: keys::show(k), run: run_of(t, k), reason });
                    }
                }
                Ok(())
            })?;
            report.trees.push(count);
            report.bad.extend(bad);
            report.damaged.extend(damaged);
            report.quarantined.extend(quarantined);
        }
        report.index = self.time_index_problems()?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testkit;
    use weir_core::run::{InstanceId, RunState, StepState};

    #[test]
    fn a_clean_store_reports_its_counts_and_a_rotten_record_names_its_run() {
        let (_dir, s) = testkit::store();
        for id in ["r-1", "r-2"] {
            s.put_run(&testkit::run(id, "train", RunState::Running)).unwrap();
            s.put_step(id, InstanceId(0), &testkit::step("fit", StepState::Ready)).unwrap();
        }
        let clean = s.check().unwrap();
        assert!(clean.is_clean(), "{clean:?}");
        assert_eq!((clean.readable("runs"), clean.readable("steps")), (2, 2));

        let key = keys::instance("r-2", InstanceId(0)).unwrap();
        let mut rotten = s.tree(TreeId::Steps).unwrap().get(&key).unwrap().unwrap().to_vec();
        *rotten.last_mut().unwrap() ^= 0x20;
        s.tree(TreeId::Steps).unwrap().insert(key, rotten).unwrap();
        let report = s.check().unwrap();
        assert!(!report.is_clean());
        assert_eq!(report.readable("steps"), 1);
        assert_eq!(report.affected_runs().into_iter().collect::<Vec<_>>(), ["r-2"]);
        assert_eq!(report.bad[0].reason, "checksum mismatch");
    }

    #[test]
    fn a_page_sled_cannot_read_is_reported_and_the_rest_of_its_tree_is_still_read() {
        let base = tempfile::tempdir().unwrap();
        let orig = base.path().join("orig");
        testkit::filled(&orig, 1500);
        let len = std::fs::metadata(orig.join("db")).unwrap().len();
        let mut salvaged = 0;
        for k in 0..24u64 {
            // Two copies damaged alike, one walked by check, the other by export: on one store
            // the second walk would read what sled cached during the first, not the disk.
            let damaged = |name: &str| {
                let dir = base.path().join(format!("case-{k}-{name}"));
                testkit::copy(&orig, &dir);
                let s = Store::open(&dir).unwrap();
                testkit::overwrite(&dir.join("db"), len * k / 24, 8192, 0xa5);
                s
            };
            // Both walks meet the damage in the same trees. (The export leaves the derived time
            // index out.) Not compared: the key after which each met it. Under load the two
            // copies' walks sometimes stopped at different keys of the same tree (seen twice in
            // seven full runs after the live-metrics tree was added, never alone), and once (on
            // 2026-12-07, under a parallel test run) in different trees: which pages sled holds
            // in memory when the damage lands depends on its background threads. A walk that
            // differs is a fault only if it differs again on fresh copies: the race does not
            // repeat, a walk that reads differently does.
            let met = |d: &[Damage]| {
                let mut trees = d.iter().filter(|d| d.tree != "runs_by_time").map(|d| d.tree).collect::<Vec<_>>();
                trees.dedup();
                trees
            };
            let mut tries = 0;
            let report = loop {
                tries += 1;
                let report = damaged(&format!("check{tries}")).check().unwrap();
                let mut exported = Vec::new();
                let export = damaged(&format!("export{tries}")).export(&mut exported).unwrap();
                if met(&export.damaged) == met(&report.damaged) || tries == 3 {
                    assert_eq!(met(&export.damaged), met(&report.damaged), "case {k}: export and check walk alike");
                    break report;
                }
            };
            if report.damaged.iter().any(|d| d.tree == "runs") {
                assert!(!report.is_clean());
                if report.readable("runs") > 1400 {
                    salvaged += 1;
                }
            }
        }
        assert!(salvaged > 0, "no damage met a leaf of the runs tree: move the offsets");
    }
}
