//! The escape hatch: [`Store::export`] writes every record of every tree as one JSON line
//! (`{"tree", "key" (hex), "value" (the decoded payload)}`; a record that does not decode is
//! kept byte for byte as `{"tree", "key", "raw" (hex), "corrupt" (why)}`), and
//! [`Store::import`] loads such a dump into a store, re-enveloping values at today's format
//! version. It is how data leaves sled if sled ever will not reopen, or for a format change.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::append::Batch;
use super::check::Damage;
use super::db::{Store, TreeId};
use super::envelope::{decode, encode};
use super::{Error, keys};

/// What [`Store::export`] wrote.
#[derive(Debug, Default)]
pub struct Exported {
    pub records: usize,
    /// Stretches sled could not read: their records are not in the dump.
    pub damaged: Vec<Damage>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    tree: String,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    corrupt: Option<String>,
}

impl Store {
    /// Writes every record sled can still read as JSON lines, tree by tree in key order (past
    /// a damaged page, see [`Store::salvage`]); returns how many, and the stretches it could
    /// not read.
    pub fn export(&self, out: &mut impl Write) -> Result<Exported, Error> {
        let mut exported = Exported::default();
        // The time index is derived from the runs: import writes it again.
        for t in TreeId::ALL.into_iter().filter(|t| *t != TreeId::RunsByTime) {
            let damaged = self.salvage(t, |k, v| {
                let mut line =
                    Line { tree: t.name().to_string(), key: keys::to_hex(k), value: None, raw: None, corrupt: None };
                match decode::<serde_json::Value>(t.name(), k, v) {
                    Ok(value) => line.value = Some(value),
                    Err(e) => {
                        line.raw = Some(keys::to_hex(v));
                        line.corrupt = Some(e.to_string());
                    }
                }
                serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                exported.records += 1;
                Ok(())
            })?;
            exported.damaged.extend(damaged);
        }
        out.flush()?;
        Ok(exported)
    }

    /// Loads an [`export`](Store::export) dump in one atomic batch and one flush; returns how
    /// many records. Keys already present are overwritten. Every run loaded gets its entry in
    /// the time index; index lines (an export never holds them) are skipped.
    pub fn import(&self, input: impl BufRead) -> Result<usize, Error> {
        let mut batch = Batch::new();
        let mut n = 0;
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| Error::Import { line: i + 1, reason };
            let l: Line = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            let t = TreeId::from_name(&l.tree).ok_or_else(|| bad(format!("unknown tree {:?}", l.tree)))?;
            let key = keys::from_hex(&l.key).ok_or_else(|| bad("key is not hex".to_string()))?;
            let value = match (l.value, l.raw) {
                (Some(v), None) => encode(t.name(), &v)?,
                (None, Some(raw)) => keys::from_hex(&raw).ok_or_else(|| bad("raw is not hex".to_string()))?,
                _ => return Err(bad("a line holds exactly one of `value` and `raw`".to_string())),
            };
            if t == TreeId::RunsByTime {
                continue;
            }
            if t == TreeId::Runs {
                let id = String::from_utf8(key.clone()).map_err(|_| bad("a run id is not UTF-8".to_string()))?;
                batch
                    .put_time_index(super::time_index::indexed_at(&key, &value), &id)
                    .map_err(|e| bad(e.to_string()))?;
            }
            batch.put_raw(t, key, value);
            n += 1;
        }
        self.write_batch(batch)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{EventRecord, LogChunk, PipelineVersion, Stream};
    use crate::store::testkit;
    use weir_core::run::{AttemptId, Event, InstanceId, Millis, RunState, StepState};

    #[test]
    fn export_then_import_into_a_fresh_store_keeps_every_record_even_a_corrupt_one() {
        let (_dir, s) = testkit::store();
        let version = PipelineVersion {
            name: "train".to_string(),
            yaml: "x: 1\n".to_string(),
            bundle_digest: None,
            submitted_at: Millis(3),
            file: None,
        };
        s.put_pipeline_version("h1", &version).unwrap();
        s.put_run(&testkit::run("r-1", "train", RunState::Running)).unwrap();
        s.put_run(&testkit::run("r-2", "train", RunState::Running)).unwrap();
        s.put_step("r-1", InstanceId(0), &testkit::step("fit", StepState::Running)).unwrap();
        s.append_event("r-1", &EventRecord { now: Millis(1), event: Event::Start, changes: Vec::new() }).unwrap();
        let attempt = AttemptId { instance: InstanceId(0), number: 1 };
        s.append_log("r-1", attempt, &LogChunk { stream: Stream::Stderr, at: Millis(2), data: vec![0xff, b'\n'] })
            .unwrap();
        s.tree(TreeId::Runs).unwrap().insert("r-2", &b"torn"[..]).unwrap();
        s.quarantine("r-2", "torn").unwrap();

        let mut dump = Vec::new();
        let n = s.export(&mut dump).unwrap().records;
        assert_eq!(n, 9, "{}", String::from_utf8_lossy(&dump));
        let (_dir2, fresh) = testkit::store();
        assert_eq!(fresh.import(&dump[..]).unwrap(), n);
        let mut again = Vec::new();
        fresh.export(&mut again).unwrap();
        assert_eq!(String::from_utf8_lossy(&again), String::from_utf8_lossy(&dump));
        assert_eq!(fresh.pipeline_version("h1").unwrap(), Some(version));
        assert!(matches!(fresh.run("r-2"), Err(Error::Corrupt { .. })));
        assert_eq!(
            fresh
                .append_event("r-1", &EventRecord { now: Millis(5), event: Event::Tick, changes: Vec::new() })
                .unwrap(),
            2
        );
        assert_eq!(fresh.logs("r-1", InstanceId(0), None, 10).unwrap()[0].1.data, [0xff, b'\n']);
        // The time index is not in the dump, and the import wrote it: both runs are listed,
        // the torn one (no known creation time) last.
        assert!(!String::from_utf8_lossy(&again).contains("runs_by_time"));
        assert!(fresh.check().unwrap().index.is_empty());
        let listed: Vec<String> = fresh
            .list_runs(&crate::store::RunFilter::default(), 10, None)
            .unwrap()
            .runs
            .into_iter()
            .map(|l| match l {
                crate::store::Listed::Run(r) => r.id,
                crate::store::Listed::Quarantined { id, .. } => format!("!{id}"),
                crate::store::Listed::Unreadable { .. } => "?".to_string(),
            })
            .collect();
        assert_eq!(listed, ["r-1", "!r-2"]);
    }

    #[test]
    fn import_names_the_bad_line() {
        let (_dir, s) = testkit::store();
        for (input, expect) in [
            ("{\"tree\":\"runs\",\"key\":\"72\",\"value\":1}\nnot json\n", "import line 2"),
            ("{\"tree\":\"nope\",\"key\":\"72\",\"value\":1}\n", "unknown tree"),
            ("{\"tree\":\"runs\",\"key\":\"7\",\"value\":1}\n", "key is not hex"),
            ("{\"tree\":\"runs\",\"key\":\"72\"}\n", "exactly one of"),
        ] {
            let err = s.import(input.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expect), "{err:?} lacks {expect:?}");
        }
        assert!(s.run("r").unwrap().is_none(), "a failed import writes nothing");
    }
}
