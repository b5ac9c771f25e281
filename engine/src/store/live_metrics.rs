//! Live metrics: the points a step wrote to `$WEIR_METRICS` while it ran, one key per point
//! under its attempt (`run · instance · attempt · seq`, seq dense from 0), and at seq
//! `u64::MAX` the attempt's [`LiveSummary`] (how many points are kept, how many were refused
//! past the bound, how many lines were malformed, the last value of each series). A batch and
//! its summary land in one transaction and one flush, so the bound holds across concurrent
//! writers and a crash never keeps points the summary does not count. This module only stores;
//! the bound's value and what to tell the step are the engine's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::Error;
use super::db::{Store, TreeId};
use super::envelope::{decode, encode};
use super::keys;
use weir_core::run::{AttemptId, Millis};

/// The seq of an attempt's summary key: after every point.
const SUMMARY: u64 = u64::MAX;

/// One point of a series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LivePoint {
    pub name: String,
    pub value: f64,
    /// The step's own x value (an epoch), when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    pub at: Millis,
}

/// What an attempt's live metrics hold, kept beside its points.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveSummary {
    /// Points stored (their seqs are `0..points`).
    pub points: u64,
    /// Points refused because the attempt had reached the bound.
    pub refused: u64,
    /// Lines of the file that were not a metric point.
    pub malformed: u64,
    /// The last value of each series.
    pub last: BTreeMap<String, f64>,
}

/// What [`Store::append_live_metrics`] kept of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub accepted: u64,
    pub refused: u64,
}

fn key(run: &str, attempt: AttemptId, seq: u64) -> Result<Vec<u8>, Error> {
    keys::log(run, attempt.instance, attempt.number, seq)
}

impl Store {
    /// Appends `points` to `attempt` of `run`, keeping at most `limit` points per attempt (the
    /// rest are counted as refused), and adds `malformed` to its count of bad lines. Flushed
    /// before it returns.
    pub fn append_live_metrics(
        &self,
        run: &str,
        attempt: AttemptId,
        points: &[LivePoint],
        malformed: u64,
        limit: u64,
    ) -> Result<Stored, Error> {
        let summary_key = key(run, attempt, SUMMARY)?;
        let prefix = key(run, attempt, 0)?;
        let prefix = &prefix[..prefix.len() - 8];
        let encoded: Vec<Vec<u8>> =
            points.iter().map(|p| encode(TreeId::LiveMetrics.name(), p)).collect::<Result<_, _>>()?;
        let tree = self.tree(TreeId::LiveMetrics)?;
        let stored = self.writing("writing live metrics", || {
            let stored = tree.transaction(|t: &TransactionalTree| {
                let mut summary: LiveSummary = match t.get(&summary_key)? {
                    Some(b) => decode(TreeId::LiveMetrics.name(), &summary_key, &b)
                        .map_err(ConflictableTransactionError::Abort)?,
                    None => LiveSummary::default(),
                };
                let room = limit.saturating_sub(summary.points) as usize;
                let kept = points.len().min(room);
                for (p, bytes) in points.iter().zip(&encoded).take(kept) {
                    let mut k = prefix.to_vec();
                    k.extend_from_slice(&summary.points.to_be_bytes());
                    t.insert(k, bytes.as_slice())?;
                    summary.points += 1;
                    summary.last.insert(p.name.clone(), p.value);
                }
                let refused = (points.len() - kept) as u64;
                summary.refused += refused;
                summary.malformed += malformed;
                let value =
                    encode(TreeId::LiveMetrics.name(), &summary).map_err(ConflictableTransactionError::Abort)?;
                t.insert(summary_key.as_slice(), value)?;
                Ok::<_, ConflictableTransactionError<Error>>(Stored { accepted: kept as u64, refused })
            })?;
            Ok(stored)
        })?;
        self.flush()?;
        Ok(stored)
    }

    /// The summary of `attempt`'s live metrics; `None` when it wrote none.
    pub fn live_summary(&self, run: &str, attempt: AttemptId) -> Result<Option<LiveSummary>, Error> {
        self.get(TreeId::LiveMetrics, &key(run, attempt, SUMMARY)?)
    }

    /// Every point of `attempt`, in the order written.
    pub fn live_points(&self, run: &str, attempt: AttemptId) -> Result<Vec<LivePoint>, Error> {
        let start = key(run, attempt, 0)?;
        let end = key(run, attempt, SUMMARY)?;
        self.reading("reading live metrics", || {
            let mut out = Vec::new();
            for kv in self.tree(TreeId::LiveMetrics)?.range(start..end) {
                let (k, v) = kv?;
                out.push(decode(TreeId::LiveMetrics.name(), &k, &v)?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::run::InstanceId;

    fn point(name: &str, value: f64, step: Option<u64>) -> LivePoint {
        LivePoint { name: name.into(), value, step, at: Millis(5) }
    }

    fn attempt(instance: u32, number: u32) -> AttemptId {
        AttemptId { instance: InstanceId(instance), number }
    }

    #[test]
    fn points_keep_their_order_per_attempt_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a1 = attempt(1, 1);
        {
            let s = Store::open(dir.path()).unwrap();
            let got = s.append_live_metrics("r", a1, &[point("loss", 0.9, Some(1)), point("acc", 0.5, None)], 2, 10);
            assert_eq!(got.unwrap(), Stored { accepted: 2, refused: 0 });
            s.append_live_metrics("r", a1, &[point("loss", 0.4, Some(2))], 0, 10).unwrap();
            // Another attempt, another instance and a run whose id prefixes this one's stay apart.
            s.append_live_metrics("r", attempt(1, 2), &[point("loss", 7.0, None)], 0, 10).unwrap();
            s.append_live_metrics("r", attempt(0, 1), &[point("loss", 8.0, None)], 0, 10).unwrap();
            s.append_live_metrics("r-2", a1, &[point("loss", 9.0, None)], 0, 10).unwrap();
        }
        let s = crate::store::testkit::reopen(dir.path());
        let points = s.live_points("r", a1).unwrap();
        assert_eq!(points, vec![point("loss", 0.9, Some(1)), point("acc", 0.5, None), point("loss", 0.4, Some(2))]);
        let summary = s.live_summary("r", a1).unwrap().unwrap();
        assert_eq!((summary.points, summary.refused, summary.malformed), (3, 0, 2));
        assert_eq!(summary.last, BTreeMap::from([("acc".to_string(), 0.5), ("loss".to_string(), 0.4)]));
        assert_eq!(s.live_summary("r", attempt(2, 1)).unwrap(), None);
        assert!(s.live_points("r", attempt(2, 1)).unwrap().is_empty());
    }

    #[test]
    fn points_past_the_bound_are_refused_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = attempt(0, 1);
        let batch: Vec<LivePoint> = (0..4).map(|i| point("loss", f64::from(i), Some(i as u64))).collect();
        assert_eq!(s.append_live_metrics("r", a, &batch, 0, 6).unwrap(), Stored { accepted: 4, refused: 0 });
        assert_eq!(s.append_live_metrics("r", a, &batch, 0, 6).unwrap(), Stored { accepted: 2, refused: 2 });
        assert_eq!(s.append_live_metrics("r", a, &batch, 0, 6).unwrap(), Stored { accepted: 0, refused: 4 });
        let summary = s.live_summary("r", a).unwrap().unwrap();
        assert_eq!((summary.points, summary.refused), (6, 6));
        assert_eq!(summary.last["loss"], 1.0, "the last kept point, not the last refused one");
        assert_eq!(s.live_points("r", a).unwrap().len(), 6);
    }
}
