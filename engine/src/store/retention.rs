//! Deleting what retention and `weir runs delete` / `weir pipelines delete` let go, and the
//! mark half of the blob sweep. [`Store::delete_run`] removes every key of one run from every
//! tree keyed by it, in one atomic batch and one flush, so a crash leaves the run whole or gone;
//! [`Store::delete_pipeline`] the pipeline's index, versions, schedule and cache entries.
//! [`Store::referenced_blobs`] lists every digest a record still names (step outputs, cache
//! entries, model versions, pipeline bundles): the blobs the sweep must keep.
//!
//! It decides nothing: which runs may go (finished, not protected by a model version or a
//! cache entry) is the engine's (`server/retention.rs`). Which trees hold keys of a run is
//! [`coverage`], an exhaustive match, so a new tree cannot be added without saying whether a
//! run's deletion must clear it (and the test below fills every tree and checks).

use std::collections::{BTreeMap, HashSet};

use super::append::Batch;
use super::db::{Store, TreeId};
use super::envelope::decode;
use super::records::{PipelineIndex, PipelineVersion, RunRecord};
use super::{CacheEntry, Error, ModelVersionRecord, keys, lineage};
use weir_data::artifact::{Digest, Manifest};

/// How a tree relates to runs, for deleting one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coverage {
    /// Keyed by the run id alone.
    RunKey,
    /// Keys start with `run ·`.
    RunPrefix,
    /// `created_at · run` (`runs_by_time`).
    ByTime,
    /// `digest · run · instance` (lineage).
    DigestRun,
    /// Names no run in its key: kept (a cache entry or model version naming the run protects it).
    NotByRun,
}

fn coverage(t: TreeId) -> Coverage {
    match t {
        TreeId::Runs | TreeId::EventSeq | TreeId::Quarantine => Coverage::RunKey,
        TreeId::Steps | TreeId::Events | TreeId::Logs | TreeId::Artifacts | TreeId::LiveMetrics => Coverage::RunPrefix,
        TreeId::RunsByTime => Coverage::ByTime,
        TreeId::Producers | TreeId::Consumers => Coverage::DigestRun,
        TreeId::Pipelines
        | TreeId::PipelineVersions
        | TreeId::Schedules
        | TreeId::Cache
        | TreeId::Models
        | TreeId::ModelVersions
        | TreeId::ModelEvents
        | TreeId::Workers
        // A notification outlives its run: it is delivered or dead-lettered, then forgotten.
        | TreeId::Outbox
        // What an `on:` trigger fired stays fired when its run is deleted: the file is not new.
        | TreeId::Triggered
        // A step secret belongs to the server, not to a run.
        | TreeId::Secrets => Coverage::NotByRun,
        // Who may call, and what they did, outlive every run.
        | TreeId::Tokens
        | TreeId::Audit => Coverage::NotByRun,
    }
}

/// A stored run as retention weighs it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunAge {
    pub id: String,
    pub record: RunRecord,
}

impl Store {
    /// Every readable run record of `pipeline`, oldest first (by creation time, then id).
    pub fn runs_of(&self, pipeline: &str) -> Result<Vec<RunAge>, Error> {
        self.reading("listing a pipeline's runs", || {
            let mut out = Vec::new();
            for kv in self.tree(TreeId::Runs)?.iter() {
                let (k, v) = kv?;
                let Ok(record) = decode::<RunRecord>(TreeId::Runs.name(), &k, &v) else { continue };
                if record.pipeline == pipeline {
                    out.push(RunAge { id: record.id.clone(), record });
                }
            }
            out.sort_by(|a, b| (a.record.created_at, &a.id).cmp(&(b.record.created_at, &b.id)));
            Ok(out)
        })
    }

    /// Removes every key of run `id` from every tree keyed by it, in one atomic batch, flushed.
    /// Whether the run may go is the caller's decision. Returns whether it had a record.
    pub fn delete_run(&self, id: &str) -> Result<bool, Error> {
        let run_key = keys::run(id)?;
        let prefix = keys::prefix(id)?;
        let record: Option<Vec<u8>> =
            self.reading("reading a run", || Ok(self.tree(TreeId::Runs)?.get(&run_key)?.map(|v| v.to_vec())))?;
        let created = record.as_ref().map_or(0, |v| super::time_index::indexed_at(&run_key, v));
        let mut b = Batch::new();
        for t in TreeId::ALL {
            match coverage(t) {
                Coverage::RunKey => {
                    b.remove_raw(t, run_key.clone());
                }
                Coverage::RunPrefix => {
                    for k in self.keys_with_prefix(t, &prefix)? {
                        b.remove_raw(t, k);
                    }
                }
                Coverage::ByTime => {
                    b.remove_raw(t, keys::by_time(created, id)?);
                    b.remove_raw(t, keys::by_time(0, id)?);
                }
                Coverage::DigestRun => {
                    let tree = self.tree(t)?;
                    let found = self.reading("scanning lineage", || {
                        let mut found = Vec::new();
                        for k in tree.iter().keys() {
                            let k = k?;
                            if lineage::split(&k).is_some_and(|(run, _)| run == id) {
                                found.push(k.to_vec());
                            }
                        }
                        Ok(found)
                    })?;
                    for k in found {
                        b.remove_raw(t, k);
                    }
                }
                Coverage::NotByRun => {}
            }
        }
        self.write_batch(b)?;
        Ok(record.is_some())
    }

    fn keys_with_prefix(&self, t: TreeId, prefix: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        self.reading("scanning keys", || {
            let mut out = Vec::new();
            for k in self.tree(t)?.scan_prefix(prefix).keys() {
                out.push(k?.to_vec());
            }
            Ok(out)
        })
    }

    /// Removes pipeline `name`: its index, every version it lists, its schedule and its cache
    /// entries, in one atomic batch, flushed. Its runs must have been deleted first. Returns
    /// whether it existed.
    pub fn delete_pipeline(&self, name: &str) -> Result<bool, Error> {
        let Some(index) = self.get::<PipelineIndex>(TreeId::Pipelines, name.as_bytes())? else {
            return Ok(false);
        };
        let mut b = Batch::new();
        b.remove_raw(TreeId::Pipelines, name.as_bytes().to_vec());
        for hash in &index.versions {
            // A version's hash covers its name, but check: never remove another pipeline's.
            let version: Option<PipelineVersion> = self.pipeline_version(hash).ok().flatten();
            if version.is_none_or(|v| v.name == name) {
                b.remove_raw(TreeId::PipelineVersions, hash.as_bytes().to_vec());
            }
        }
        b.remove_raw(TreeId::Schedules, name.as_bytes().to_vec());
        for k in self.keys_with_prefix(TreeId::Triggered, &keys::prefix(name)?)? {
            b.remove_raw(TreeId::Triggered, k);
        }
        for k in self.keys_with_prefix(TreeId::Cache, &keys::prefix(name)?)? {
            b.remove_raw(TreeId::Cache, k);
        }
        self.write_batch(b)?;
        Ok(true)
    }

    /// Every cache entry, with the pipeline it belongs to.
    pub fn all_cache_entries(&self) -> Result<Vec<(String, CacheEntry)>, Error> {
        self.reading("listing cache entries", || {
            let mut out = Vec::new();
            for kv in self.tree(TreeId::Cache)?.iter() {
                let (k, v) = kv?;
                let pipeline = k.split(|b| *b == 0).next().unwrap_or_default();
                let pipeline = String::from_utf8_lossy(pipeline).into_owned();
                out.push((pipeline, decode(TreeId::Cache.name(), &k, &v)?));
            }
            Ok(out)
        })
    }

    /// Every version of every model.
    pub fn all_model_versions(&self) -> Result<Vec<ModelVersionRecord>, Error> {
        self.reading("listing model versions", || {
            let mut out = Vec::new();
            for kv in self.tree(TreeId::ModelVersions)?.iter() {
                let (k, v) = kv?;
                out.push(decode(TreeId::ModelVersions.name(), &k, &v)?);
            }
            Ok(out)
        })
    }

    /// Every blob digest a record names: step outputs, cache entries' outputs, model versions
    /// and pipeline bundles. A record that does not decode fails the call, so a sweep never
    /// runs on a partial mark.
    pub fn referenced_blobs(&self) -> Result<HashSet<Digest>, Error> {
        self.referenced_blobs_without(&HashSet::new())
    }

    /// [`Store::referenced_blobs`] as if the runs `gone` were deleted (a dry run's mark).
    pub fn referenced_blobs_without(&self, gone: &HashSet<String>) -> Result<HashSet<Digest>, Error> {
        let mut out = HashSet::new();
        let mut add = |m: &Manifest| out.extend(m.entries().iter().map(|e| e.digest));
        self.reading("marking referenced blobs", || {
            for kv in self.tree(TreeId::Artifacts)?.iter() {
                let (k, v) = kv?;
                // `run · instance u32`: the run is all but the last five bytes.
                let run = k.len().checked_sub(5).map(|cut| String::from_utf8_lossy(&k[..cut]));
                if run.is_some_and(|r| gone.contains(r.as_ref())) {
                    continue;
                }
                add(&decode::<Manifest>(TreeId::Artifacts.name(), &k, &v)?);
            }
            Ok(())
        })?;
        for (_, entry) in self.all_cache_entries()? {
            add(&entry.outputs);
        }
        for v in self.all_model_versions()? {
            out.insert(v.digest);
        }
        self.reading("marking pipeline bundles", || {
            for kv in self.tree(TreeId::PipelineVersions)?.iter() {
                let (k, v) = kv?;
                let version: PipelineVersion = decode(TreeId::PipelineVersions.name(), &k, &v)?;
                out.extend(version.bundle_digest);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// How many keys each tree holds (for tests and `weir gc`'s report).
    pub fn tree_sizes(&self) -> Result<BTreeMap<&'static str, usize>, Error> {
        self.reading("counting keys", || {
            let mut out = BTreeMap::new();
            for t in TreeId::ALL {
                out.insert(t.name(), self.tree(t)?.len());
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{CacheKey, EventRecord, LogChunk, Stream};
    use crate::store::{Consumed, Produced, testkit};
    use weir_core::run::{AttemptId, Event, InstanceId, Millis, RunState, StepState};
    use weir_data::artifact::Entry;

    fn manifest(bytes: &[u8]) -> Manifest {
        Manifest::new(vec![Entry { path: "out.bin".into(), digest: Digest::of(bytes), size: 1, executable: false }])
            .unwrap()
    }

    /// Writes a record of `run` into every tree that can hold one, through the store's own
    /// writers (so a new per-run writer shows up as a key this test did not expect).
    fn fill(s: &Store, run: &str) {
        let i = InstanceId(0);
        s.put_run(&testkit::run(run, "train", RunState::Succeeded)).unwrap();
        s.put_step(run, i, &testkit::step("fit", StepState::Succeeded)).unwrap();
        s.put_artifacts(run, i, &manifest(run.as_bytes())).unwrap();
        s.append_event(run, &EventRecord { now: Millis(1), event: Event::Cancel, changes: vec![] }).unwrap();
        let chunk = LogChunk { stream: Stream::Stdout, at: Millis(1), data: b"hi\n".to_vec() };
        s.append_log(run, AttemptId { instance: i, number: 1 }, &chunk).unwrap();
        let point =
            super::super::live_metrics::LivePoint { name: "loss".into(), value: 0.5, step: Some(1), at: Millis(1) };
        s.append_live_metrics(run, AttemptId { instance: i, number: 1 }, &[point], 0, 10).unwrap();
        s.quarantine(run, "test").unwrap();
        let d = Digest::of(run.as_bytes());
        let mut b = Batch::new();
        let p = Produced { path: "out.bin".into(), size: 1, at: Millis(1), step: "fit".into(), needs: vec![] };
        b.put_produced(&d, run, i, &p).unwrap();
        let c = Consumed { path: "out.bin".into(), step: "fit".into(), from: 0, at: Millis(1) };
        b.put_consumed(&d, run, i, &c).unwrap();
        s.write_batch(b).unwrap();
    }

    #[test]
    fn deleting_a_run_clears_every_tree_keyed_by_it_and_nothing_else() {
        let (_dir, s) = testkit::store();
        fill(&s, "r-1");
        fill(&s, "r-10");
        let mut b = Batch::new();
        let entry = CacheEntry {
            key: CacheKey { key: "aa".into(), parts: Default::default() },
            run: "r-1".into(),
            instance: 0,
            name: "fit".into(),
            outputs: manifest(b"cached"),
            metrics: Default::default(),
            created_at: Millis(1),
        };
        b.put_cache_entry("train", "fit", &entry).unwrap();
        s.write_batch(b).unwrap();
        let before = s.tree_sizes().unwrap();
        assert!(s.delete_run("r-1").unwrap());
        assert!(!s.delete_run("r-1").unwrap(), "a second delete finds nothing");
        // No key of any tree names r-1 as a run any more, except the ones that protect it.
        let h = s.handle().unwrap();
        for t in TreeId::ALL {
            for k in h.trees[t as usize].iter().keys() {
                let k = k.unwrap();
                let names_r1 = k.windows(4).any(|w| w == b"r-1\0") || k.ends_with(b"r-1") || *k == *b"r-1";
                assert!(!names_r1 || coverage(t) == Coverage::NotByRun, "{} still holds {}", t.name(), keys::show(&k));
            }
        }
        let after = s.tree_sizes().unwrap();
        for t in TreeId::ALL {
            let (b, a) = (before[t.name()], after[t.name()]);
            match coverage(t) {
                Coverage::NotByRun => assert_eq!(a, b, "{} must not change", t.name()),
                _ => assert!(b == 0 || a < b, "{} was not cleared ({b} -> {a})", t.name()),
            }
            // Every per-run tree held keys of both runs: r-10's remain.
            if coverage(t) != Coverage::NotByRun {
                assert!(a > 0, "{} lost r-10's keys", t.name());
            }
        }
        assert!(s.run("r-10").unwrap().is_some());
        assert_eq!(s.steps("r-10", None, 10).unwrap().len(), 1);
        assert!(s.check().unwrap().is_clean());
    }

    #[test]
    fn every_per_run_tree_is_filled_by_the_fixture() {
        // Guards the test above: a tree keyed by run that `fill` does not write would pass it
        // vacuously.
        let (_dir, s) = testkit::store();
        fill(&s, "r-1");
        let sizes = s.tree_sizes().unwrap();
        for t in TreeId::ALL.into_iter().filter(|t| coverage(*t) != Coverage::NotByRun) {
            assert!(sizes[t.name()] > 0, "fill writes nothing to {}", t.name());
        }
    }

    #[test]
    fn deleting_a_pipeline_removes_its_versions_schedule_and_cache_and_the_mark_sees_what_is_left() {
        let (_dir, s) = testkit::store();
        let version = |name: &str, bundle: &[u8]| PipelineVersion {
            name: name.into(),
            yaml: format!("name: {name}\n"),
            bundle_digest: Some(Digest::of(bundle)),
            submitted_at: Millis(1),
            file: None,
        };
        s.put_pipeline_version("h1", &version("train", b"b1")).unwrap();
        s.put_pipeline_version("h2", &version("train", b"b2")).unwrap();
        s.put_pipeline_version("h3", &version("other", b"b3")).unwrap();
        fill(&s, "r-1");
        let marked = s.referenced_blobs().unwrap();
        for d in [&b"b1"[..], b"b2", b"b3", b"r-1"] {
            assert!(marked.contains(&Digest::of(d)));
        }
        let without = s.referenced_blobs_without(&HashSet::from(["r-1".to_string()])).unwrap();
        assert!(!without.contains(&Digest::of(b"r-1")) && without.contains(&Digest::of(b"b1")));
        assert!(s.delete_pipeline("train").unwrap());
        assert!(!s.delete_pipeline("train").unwrap());
        assert!(s.pipeline("train").unwrap().is_none());
        assert!(s.pipeline_version("h1").unwrap().is_none());
        assert!(s.pipeline_version("h3").unwrap().is_some());
        s.delete_run("r-1").unwrap();
        let marked = s.referenced_blobs().unwrap();
        assert_eq!(marked, HashSet::from([Digest::of(b"b3")]));
    }
}
