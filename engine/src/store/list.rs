//! Listing runs a page at a time, in run id order, with a filter. A run whose record no longer
//! decodes, or that was quarantined, is listed as [`Listed::Quarantined`] rather than failing
//! the list: one bad record must never take the server's view of every other run with it.
//! Page tokens are the hex of the last key returned, so they stay valid as runs are added.

use std::ops::Bound;

use super::db::{Store, TreeId};
use super::envelope::decode;
use super::records::RunRecord;
use super::{Error, keys};
use weir_core::run::RunState;

/// Which runs to list; `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub pipeline: Option<String>,
    pub state: Option<RunState>,
}

impl RunFilter {
    fn matches(&self, r: &RunRecord) -> bool {
        self.pipeline.as_ref().is_none_or(|p| *p == r.pipeline) && self.state.is_none_or(|s| s == r.state)
    }
}

/// One entry of a page.
#[derive(Clone, Debug, PartialEq)]
pub enum Listed {
    Run(RunRecord),
    /// Quarantined, or its record does not decode (then `record` is `None` and `reason` says
    /// why). An undecodable record is listed whatever the filter, since it cannot be checked.
    Quarantined {
        id: String,
        reason: String,
        record: Option<RunRecord>,
    },
    /// Records sled cannot read at all (a damaged page): their run ids are unknown. `after`
    /// is the last run read before them, if any.
    Unreadable {
        after: Option<String>,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct RunPage {
    pub runs: Vec<Listed>,
    /// Pass it back to read the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

impl Store {
    /// Up to `page_size` (at least 1) runs matching `filter`, after `page_token`.
    ///
    /// A page of the `runs` tree that sled cannot read (it fails its checksum, or sled panics
    /// on it) stops the forward scan; the scan then reads backwards from the end of the tree
    /// down to the last run it read, so every run outside the damaged page is still listed.
    /// The damaged stretch is one [`Listed::Unreadable`] entry, and the page then holds every
    /// run after it, however many (the page is the last: a next one would meet the damage again).
    pub fn list_runs(&self, filter: &RunFilter, page_size: usize, page_token: Option<&str>) -> Result<RunPage, Error> {
        let start = match page_token {
            Some(t) => Bound::Excluded(keys::from_hex(t).ok_or_else(|| Error::BadPageToken(t.to_string()))?),
            None => Bound::Unbounded,
        };
        let page_size = page_size.max(1);
        let mut runs = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        let tree = self.tree(TreeId::Runs)?;
        let mut iter = tree.range::<Vec<u8>, _>((start.clone(), Bound::Unbounded));
        while runs.len() < page_size {
            let (k, v) = match self.reading("listing runs", || Ok(iter.next().transpose()?)) {
                Ok(Some(kv)) => kv,
                Ok(None) => return Ok(RunPage { runs, next_page_token: None }),
                Err(e) => {
                    let after = last.clone().or(match &start {
                        Bound::Excluded(k) => Some(k.clone()),
                        _ => None,
                    });
                    return self.list_after_damage(filter, runs, after, e);
                }
            };
            runs.extend(self.listed(filter, &k, &v));
            last = Some(k.to_vec());
        }
        let more = !matches!(self.reading("listing runs", || Ok(iter.next().transpose()?)), Ok(None));
        Ok(RunPage { runs, next_page_token: last.filter(|_| more).map(|k| keys::to_hex(&k)) })
    }

    /// The entry for one stored run (`None` when the filter leaves it out).
    fn listed(&self, filter: &RunFilter, k: &[u8], v: &[u8]) -> Option<Listed> {
        let id = String::from_utf8_lossy(k).into_owned();
        let quarantine = match self.get::<String>(TreeId::Quarantine, k) {
            Ok(q) => q,
            Err(e) => Some(e.to_string()),
        };
        match (decode::<RunRecord>(TreeId::Runs.name(), k, v), quarantine) {
            (Ok(r), None) => filter.matches(&r).then_some(Listed::Run(r)),
            (Ok(r), Some(reason)) => filter.matches(&r).then_some(Listed::Quarantined { id, reason, record: Some(r) }),
            (Err(e), q) => Some(Listed::Quarantined { id, reason: q.unwrap_or_else(|| e.to_string()), record: None }),
        }
    }

    /// Finishes a page whose forward scan failed after key `after`: the damaged stretch, then
    /// every run readable backwards from the end of the tree down to `after`, in key order.
    fn list_after_damage(
        &self,
        filter: &RunFilter,
        mut runs: Vec<Listed>,
        after: Option<Vec<u8>>,
        error: Error,
    ) -> Result<RunPage, Error> {
        let lower = after.clone().map_or(Bound::Unbounded, Bound::Excluded);
        let mut tail = Vec::new();
        let tree = self.tree(TreeId::Runs)?;
        let mut back = tree.range::<Vec<u8>, _>((lower, Bound::Unbounded));
        while let Ok(Some((k, v))) = self.reading("listing runs", || Ok(back.next_back().transpose()?)) {
            tail.push((k, v));
        }
        tail.reverse();
        tracing::warn!(
            after = after.as_deref().map(keys::show).unwrap_or_default(),
            error = %error,
            readable_after = tail.len(),
            "a page of the runs tree is unreadable; listing what is around it"
        );
        runs.push(Listed::Unreadable { after: after.as_deref().map(keys::show), reason: error.to_string() });
        // The rest of the tree in this page, whatever the page size: a next page would meet
        // the damaged stretch again, and the rest was read anyway.
        for (k, v) in &tail {
            runs.extend(self.listed(filter, k, v));
        }
        Ok(RunPage { runs, next_page_token: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testkit;

    fn ids(page: &RunPage) -> Vec<String> {
        page.runs
            .iter()
            .map(|l| match l {
                Listed::Run(r) => r.id.clone(),
                Listed::Quarantined { id, .. } => format!("!{id}"),
                Listed::Unreadable { .. } => "?".to_string(),
            })
            .collect()
    }

    #[test]
    fn runs_page_by_token_with_a_filter() {
        let (_dir, s) = testkit::store();
        for (id, pipeline, state) in [
            ("r-1", "train", RunState::Succeeded),
            ("r-2", "eval", RunState::Running),
            ("r-3", "train", RunState::Running),
            ("r-4", "train", RunState::Failed),
            ("r-5", "train", RunState::Running),
        ] {
            s.put_run(&testkit::run(id, pipeline, state)).unwrap();
        }
        let all = RunFilter::default();
        let p1 = s.list_runs(&all, 2, None).unwrap();
        assert_eq!(ids(&p1), ["r-1", "r-2"]);
        let p2 = s.list_runs(&all, 2, p1.next_page_token.as_deref()).unwrap();
        assert_eq!(ids(&p2), ["r-3", "r-4"]);
        let p3 = s.list_runs(&all, 2, p2.next_page_token.as_deref()).unwrap();
        assert_eq!((ids(&p3), p3.next_page_token), (vec!["r-5".to_string()], None));
        let exact = s.list_runs(&all, 5, None).unwrap();
        assert_eq!((exact.runs.len(), exact.next_page_token), (5, None));

        let train_running = RunFilter { pipeline: Some("train".to_string()), state: Some(RunState::Running) };
        let f1 = s.list_runs(&train_running, 1, None).unwrap();
        assert_eq!(ids(&f1), ["r-3"]);
        let f2 = s.list_runs(&train_running, 1, f1.next_page_token.as_deref()).unwrap();
        assert_eq!(ids(&f2), ["r-5"]);
        assert!(matches!(s.list_runs(&all, 2, Some("zz")), Err(Error::BadPageToken(_))));
    }

    #[test]
    fn a_page_sled_cannot_read_is_skipped_and_the_runs_around_it_are_listed() {
        let base = tempfile::tempdir().unwrap();
        let orig = base.path().join("orig");
        testkit::filled(&orig, 1500);
        let len = std::fs::metadata(orig.join("db")).unwrap().len();
        let mut skipped = 0;
        for k in 0..24u64 {
            let dir = base.path().join(format!("case-{k}"));
            testkit::copy(&orig, &dir);
            let s = Store::open(&dir).unwrap();
            // Damage under a running store: pages are read from disk lazily, so a leaf of the
            // runs tree may fail its checksum in the middle of a scan.
            testkit::overwrite(&dir.join("db"), len * k / 24, 8192, 0xa5);
            let page = s.list_runs(&RunFilter::default(), 5000, None).unwrap();
            let listed = ids(&page);
            let mut sorted = listed.clone();
            sorted.sort();
            if listed.contains(&"?".to_string()) {
                let runs: Vec<&String> = listed.iter().filter(|id| *id != "?").collect();
                assert!(runs.windows(2).all(|w| w[0] < w[1]), "case {k}: out of order");
                // A damaged leaf holds a few dozen runs: the rest are listed, on both sides
                // of it. (A damaged index page hides more: then little or nothing is.)
                if runs.len() > 1400 && runs.last().is_some_and(|id| *id == "r-1499") {
                    skipped += 1;
                }
                match page.runs.iter().find(|l| matches!(l, Listed::Unreadable { .. })) {
                    Some(Listed::Unreadable { reason, .. }) => {
                        assert!(reason.contains("corrupted data"), "{reason}")
                    }
                    _ => unreachable!(),
                }
            } else {
                assert_eq!(listed.len(), 1500, "case {k}");
            }
        }
        assert!(skipped > 0, "no damage met a leaf of the runs tree: move the offsets");
    }

    #[test]
    fn a_corrupt_or_quarantined_run_is_listed_as_such_and_the_list_goes_on() {
        let (_dir, s) = testkit::store();
        for id in ["r-1", "r-2", "r-3"] {
            s.put_run(&testkit::run(id, "train", RunState::Running)).unwrap();
        }
        let mut rotten = s.tree(TreeId::Runs).unwrap().get("r-2").unwrap().unwrap().to_vec();
        *rotten.last_mut().unwrap() ^= 0xff;
        s.tree(TreeId::Runs).unwrap().insert("r-2", rotten).unwrap();
        s.quarantine("r-3", "replay failed").unwrap();
        let page = s.list_runs(&RunFilter::default(), 10, None).unwrap();
        assert_eq!(ids(&page), ["r-1", "!r-2", "!r-3"]);
        match &page.runs[1] {
            Listed::Quarantined { reason, record: None, .. } => {
                assert!(reason.contains("checksum mismatch"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&page.runs[2], Listed::Quarantined { reason, record: Some(_), .. } if reason == "replay failed")
        );
        s.quarantine("r-2", "run record does not decode").unwrap();
        let page = s.list_runs(&RunFilter::default(), 10, None).unwrap();
        assert!(matches!(&page.runs[1], Listed::Quarantined { reason, .. } if reason == "run record does not decode"));
        assert_eq!(s.run("r-1").unwrap().unwrap().id, "r-1");
    }
}
