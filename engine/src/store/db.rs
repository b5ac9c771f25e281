//! [`Store`]: the tree table, and typed put and get of pipelines, runs, steps, artifact
//! manifests and quarantine marks. Every public write flushes before it returns, because sled
//! acknowledges writes before they are durable. Opening, containing sled and reopening after a
//! failed write live in `handle`, appends and batches in `append`, listing runs in `list`,
//! checking and salvage in `check`, export and import in `export`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::envelope::{decode, encode};
use super::handle::Handle;
use super::records::{PipelineIndex, PipelineVersion, RunRecord, ScheduleRecord, StepRecord};
use super::{Error, keys};
use weir_core::run::InstanceId;
use weir_data::artifact::Manifest;

/// The trees of the store, in a fixed order (the order of `Store::trees`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TreeId {
    Pipelines,
    PipelineVersions,
    Runs,
    Steps,
    Events,
    EventSeq,
    Logs,
    Artifacts,
    Quarantine,
    Schedules,
    Cache,
    Models,
    ModelVersions,
    ModelEvents,
    Producers,
    Consumers,
    Workers,
    RunsByTime,
    LiveMetrics,
    Outbox,
    Triggered,
    Secrets,
    Tokens,
    Audit,
}

impl TreeId {
    pub(super) const ALL: [TreeId; 24] = [
        TreeId::Pipelines,
        TreeId::PipelineVersions,
        TreeId::Runs,
        TreeId::Steps,
        TreeId::Events,
        TreeId::EventSeq,
        TreeId::Logs,
        TreeId::Artifacts,
        TreeId::Quarantine,
        TreeId::Schedules,
        TreeId::Cache,
        TreeId::Models,
        TreeId::ModelVersions,
        TreeId::ModelEvents,
        TreeId::Producers,
        TreeId::Consumers,
        TreeId::Workers,
        TreeId::RunsByTime,
        TreeId::LiveMetrics,
        TreeId::Outbox,
        TreeId::Triggered,
        TreeId::Secrets,
        TreeId::Tokens,
        TreeId::Audit,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            TreeId::Pipelines => "pipelines",
            TreeId::PipelineVersions => "pipeline_versions",
            TreeId::Runs => "runs",
            TreeId::Steps => "steps",
            TreeId::Events => "events",
            TreeId::EventSeq => "event_seq",
            TreeId::Logs => "logs",
            TreeId::Artifacts => "artifacts",
            TreeId::Quarantine => "quarantine",
            TreeId::Schedules => "schedules",
            TreeId::Cache => "cache",
            TreeId::Models => "models",
            TreeId::ModelVersions => "model_versions",
            TreeId::ModelEvents => "model_events",
            TreeId::Producers => "producers",
            TreeId::Consumers => "consumers",
            TreeId::Workers => "workers",
            TreeId::RunsByTime => "runs_by_time",
            TreeId::LiveMetrics => "live_metrics",
            TreeId::Outbox => "outbox",
            TreeId::Triggered => "triggered",
            TreeId::Secrets => "secrets",
            TreeId::Tokens => "tokens",
            TreeId::Audit => "audit",
        }
    }

    pub(super) fn from_name(name: &str) -> Option<TreeId> {
        TreeId::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The engine's database. One per data folder and process: a second open fails with
/// [`Error::Locked`].
///
/// A write that fails on I/O (a full disk) leaves sled refusing every later write until the
/// database is opened again: the store then says so in [`Store::fault`], and
/// [`Store::reopen`] closes and reopens it, keeping what was flushed.
/// A page of a run's step records and the counts of all of them ([`Store::step_page`]).
#[derive(Debug, Default)]
pub struct StepPage {
    /// The records at the requested positions.
    pub steps: Vec<StepRecord>,
    pub total: usize,
    /// Steps in a terminal state.
    pub done: usize,
    pub awaiting_approval: usize,
}

pub struct Store {
    pub(super) handle: RwLock<Option<Arc<Handle>>>,
    pub(super) dir: PathBuf,
    /// Why writes fail until a reopen, when they do.
    pub(super) fault: Mutex<Option<String>>,
    /// Held shared by every write, exclusively by [`Store::paused`] (a backup's snapshot).
    pub(super) pause: RwLock<()>,
    /// How many batches were written ([`Store::transactions`]).
    pub(super) transactions: std::sync::atomic::AtomicU64,
    /// Held while a batch is written: one batch at a time through the journal.
    pub(super) journal: Mutex<()>,
    /// Fails the next batch write, once: a fault a real disk gives only at random.
    #[cfg(test)]
    pub(crate) fail_next_batch: std::sync::atomic::AtomicBool,
    /// Stops a batch, as a crash would, after this many of its writes (`usize::MAX`: never).
    #[cfg(test)]
    pub(crate) cut_batch_after: std::sync::atomic::AtomicUsize,
    /// How many times a run's events were read ([`Store::events`]): what a watcher costs.
    #[cfg(test)]
    pub(crate) event_reads: std::sync::atomic::AtomicUsize,
}

impl Store {
    /// The folder the database lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many batches this value wrote: what a call costs in atomic writes.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn tree(&self, t: TreeId) -> Result<sled::Tree, Error> {
        Ok(self.handle()?.trees[t as usize].clone())
    }

    /// Whether no tree holds a record (a fresh folder, fit to import into).
    pub fn is_empty(&self) -> Result<bool, Error> {
        self.reading("reading", || {
            let h = self.handle()?;
            Ok(h.trees.iter().all(|t| t.is_empty()))
        })
    }

    /// Makes every write so far durable. Public writes call it themselves.
    pub fn flush(&self) -> Result<(), Error> {
        self.writing("flushing", || {
            self.handle()?.db.flush()?;
            Ok(())
        })
    }

    pub(super) fn put<T: Serialize>(&self, t: TreeId, key: Vec<u8>, value: &T) -> Result<(), Error> {
        let value = encode(t.name(), value)?;
        self.writing("writing", || {
            self.tree(t)?.insert(key, value)?;
            Ok(())
        })?;
        self.flush()
    }

    pub(super) fn get<T: DeserializeOwned>(&self, t: TreeId, key: &[u8]) -> Result<Option<T>, Error> {
        let bytes = self.reading("reading", || Ok(self.tree(t)?.get(key)?))?;
        bytes.map(|v| decode(t.name(), key, &v)).transpose()
    }

    /// Records a pipeline version under its content hash and makes it the name's latest.
    /// Submitting the same version again only moves `latest`.
    pub fn put_pipeline_version(&self, hash: &str, version: &PipelineVersion) -> Result<(), Error> {
        let value = encode(TreeId::PipelineVersions.name(), version)?;
        let (p, v) = (self.tree(TreeId::Pipelines)?, self.tree(TreeId::PipelineVersions)?);
        use sled::Transactional;
        self.writing("writing a pipeline", || {
            Ok((&p, &v).transaction(|(p, v)| {
                let name = version.name.as_bytes();
                let mut index: PipelineIndex = match p.get(name)? {
                    Some(bytes) => decode(TreeId::Pipelines.name(), name, &bytes).map_err(super::append::abort)?,
                    None => PipelineIndex::default(),
                };
                if !index.versions.iter().any(|h| h == hash) {
                    index.versions.push(hash.to_string());
                }
                index.latest = hash.to_string();
                p.insert(name, encode(TreeId::Pipelines.name(), &index).map_err(super::append::abort)?)?;
                v.insert(hash.as_bytes(), value.clone())?;
                Ok(())
            })?)
        })?;
        self.flush()
    }

    pub fn pipeline(&self, name: &str) -> Result<Option<PipelineIndex>, Error> {
        self.get(TreeId::Pipelines, name.as_bytes())
    }

    /// Every pipeline name with its index, in name order.
    pub fn pipelines(&self) -> Result<Vec<(String, PipelineIndex)>, Error> {
        self.reading("listing pipelines", || {
            let mut out = Vec::new();
            for kv in self.tree(TreeId::Pipelines)?.iter() {
                let (k, v) = kv?;
                out.push((String::from_utf8_lossy(&k).into_owned(), decode(TreeId::Pipelines.name(), &k, &v)?));
            }
            Ok(out)
        })
    }

    pub fn pipeline_version(&self, hash: &str) -> Result<Option<PipelineVersion>, Error> {
        self.get(TreeId::PipelineVersions, hash.as_bytes())
    }

    /// Writes the run's record and its entry in the time index, in one atomic batch.
    pub fn put_run(&self, run: &RunRecord) -> Result<(), Error> {
        let mut b = super::Batch::new();
        b.put_run(run)?;
        self.write_batch(b).map(drop)
    }

    /// The run's record; [`Error::Corrupt`] if it does not decode (then [`Store::quarantine`] it).
    pub fn run(&self, id: &str) -> Result<Option<RunRecord>, Error> {
        self.get(TreeId::Runs, &keys::run(id)?)
    }

    pub fn put_step(&self, run: &str, i: InstanceId, step: &StepRecord) -> Result<(), Error> {
        self.put(TreeId::Steps, keys::instance(run, i)?, step)
    }

    pub fn step(&self, run: &str, i: InstanceId) -> Result<Option<StepRecord>, Error> {
        self.get(TreeId::Steps, &keys::instance(run, i)?)
    }

    /// Up to `limit` step instances of `run` after instance `after`, in instance order.
    pub fn steps(
        &self,
        run: &str,
        after: Option<InstanceId>,
        limit: usize,
    ) -> Result<Vec<(InstanceId, StepRecord)>, Error> {
        let start = match after {
            Some(i) => keys::instance(run, InstanceId(i.0.saturating_add(1)))?,
            None => keys::prefix(run)?,
        };
        if after.is_some_and(|i| i.0 == u32::MAX) {
            return Ok(Vec::new());
        }
        let prefix = keys::prefix(run)?;
        self.reading("reading steps", || {
            let mut out = Vec::new();
            for kv in self.tree(TreeId::Steps)?.range(start..).take(limit) {
                let (k, v) = kv?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let i = InstanceId(keys::tail_u32(&k, 0).unwrap_or_default());
                out.push((i, decode(TreeId::Steps.name(), &k, &v)?));
            }
            Ok(out)
        })
    }

    /// The step records of `run` from position `from` (at most `size`), with the count and
    /// states of all of them: only the page is decoded in full, the rest for its state alone
    /// (a page of a 10,000-step run used to decode all 10,000 records).
    pub fn step_page(&self, run: &str, from: usize, size: usize) -> Result<StepPage, Error> {
        /// The state of a step record, its other fields skipped unparsed.
        #[derive(serde::Deserialize)]
        struct StateOnly {
            state: weir_core::run::StepState,
        }
        let prefix = keys::prefix(run)?;
        self.reading("reading steps", || {
            let mut page = StepPage::default();
            for kv in self.tree(TreeId::Steps)?.scan_prefix(&prefix) {
                let (k, v) = kv?;
                let n = page.total;
                let state = if n >= from && n - from < size {
                    let step: StepRecord = decode(TreeId::Steps.name(), &k, &v)?;
                    let state = step.state;
                    page.steps.push(step);
                    state
                } else {
                    decode::<StateOnly>(TreeId::Steps.name(), &k, &v)?.state
                };
                page.total += 1;
                page.done += usize::from(state.is_terminal());
                page.awaiting_approval += usize::from(state == weir_core::run::StepState::AwaitingApproval);
            }
            Ok(page)
        })
    }

    pub fn put_artifacts(&self, run: &str, i: InstanceId, m: &Manifest) -> Result<(), Error> {
        self.put(TreeId::Artifacts, keys::instance(run, i)?, m)
    }

    pub fn artifacts(&self, run: &str, i: InstanceId) -> Result<Option<Manifest>, Error> {
        self.get(TreeId::Artifacts, &keys::instance(run, i)?)
    }

    /// Marks `run` quarantined with `reason`, whether or not its record still decodes.
    pub fn quarantine(&self, run: &str, reason: &str) -> Result<(), Error> {
        self.put(TreeId::Quarantine, keys::run(run)?, &reason)
    }

    /// Why `run` was quarantined, if it was.
    pub fn quarantined(&self, run: &str) -> Result<Option<String>, Error> {
        self.get(TreeId::Quarantine, &keys::run(run)?)
    }

    /// Records (replaces) the schedule of `record.pipeline`.
    pub fn put_schedule(&self, record: &ScheduleRecord) -> Result<(), Error> {
        self.put(TreeId::Schedules, record.pipeline.as_bytes().to_vec(), record)
    }

    /// Forgets the schedule of `pipeline` (its pipeline's latest version has none).
    pub fn remove_schedule(&self, pipeline: &str) -> Result<(), Error> {
        self.writing("removing a schedule", || {
            self.tree(TreeId::Schedules)?.remove(pipeline.as_bytes())?;
            Ok(())
        })?;
        self.flush()
    }

    /// Every stored schedule, by pipeline name.
    pub fn schedules(&self) -> Result<Vec<ScheduleRecord>, Error> {
        self.reading("listing schedules", || {
            let mut out = Vec::new();
            for kv in self.tree(TreeId::Schedules)?.iter() {
                let (k, v) = kv?;
                out.push(decode(TreeId::Schedules.name(), &k, &v)?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testkit;
    use weir_core::run::{Millis, RunState, StepState};
    use weir_data::artifact::{Digest, Entry};

    #[test]
    fn a_step_page_decodes_its_records_and_counts_every_state() {
        let (_dir, s) = testkit::store();
        let states = [StepState::Succeeded, StepState::Failed, StepState::AwaitingApproval, StepState::Running];
        for (i, state) in states.iter().enumerate() {
            let mut step = testkit::step(&format!("s{i}"), *state);
            step.message = Some(format!("message {i}"));
            s.put_step("r-1", InstanceId(i as u32), &step).unwrap();
        }
        s.put_step("r-10", InstanceId(0), &testkit::step("other run", StepState::Succeeded)).unwrap();
        let all: Vec<StepRecord> = s.steps("r-1", None, usize::MAX).unwrap().into_iter().map(|(_, s)| s).collect();
        for (from, size) in [(0, 10), (1, 2), (3, 5), (4, 1), (0, 0)] {
            let page = s.step_page("r-1", from, size).unwrap();
            let want: Vec<StepRecord> = all.iter().skip(from).take(size).cloned().collect();
            assert_eq!(page.steps, want, "from {from}, size {size}: the same records, decoded in full");
            assert_eq!((page.total, page.done, page.awaiting_approval), (4, 2, 1), "from {from}, size {size}");
        }
        // A record that does not read back fails the page wherever it is, as a full read does.
        let key = keys::instance("r-1", InstanceId(3)).unwrap();
        let mut rotten = s.tree(TreeId::Steps).unwrap().get(&key).unwrap().unwrap().to_vec();
        *rotten.last_mut().unwrap() ^= 0x20;
        s.tree(TreeId::Steps).unwrap().insert(key, rotten).unwrap();
        assert!(matches!(s.step_page("r-1", 0, 1), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn every_record_kind_round_trips_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let version = PipelineVersion {
            name: "train".to_string(),
            yaml: "name: train\n".to_string(),
            bundle_digest: Some(Digest::of(b"bundle")),
            submitted_at: Millis(7),
            file: None,
        };
        let manifest = Manifest::new(vec![Entry {
            path: "model.bin".to_string(),
            digest: Digest::of(b"weights"),
            size: 7,
            executable: false,
        }])
        .unwrap();
        let run = testkit::run("r-1", "train", RunState::Running);
        let step = testkit::step("fit", StepState::Running);
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.dir(), dir.path());
            s.put_pipeline_version("h1", &version).unwrap();
            s.put_pipeline_version("h2", &version).unwrap();
            s.put_pipeline_version("h1", &version).unwrap();
            s.put_run(&run).unwrap();
            s.put_step("r-1", InstanceId(4), &step).unwrap();
            s.put_artifacts("r-1", InstanceId(4), &manifest).unwrap();
            s.quarantine("r-9", "replay rejected event 3").unwrap();
        }
        let s = testkit::reopen(dir.path());
        let index = s.pipeline("train").unwrap().unwrap();
        assert_eq!((index.latest.as_str(), index.versions), ("h1", vec!["h1".to_string(), "h2".to_string()]));
        assert_eq!(s.pipeline_version("h2").unwrap(), Some(version));
        assert_eq!(s.run("r-1").unwrap(), Some(run));
        assert_eq!(s.step("r-1", InstanceId(4)).unwrap(), Some(step));
        assert_eq!(s.artifacts("r-1", InstanceId(4)).unwrap(), Some(manifest));
        assert_eq!(s.quarantined("r-9").unwrap().as_deref(), Some("replay rejected event 3"));
        assert_eq!((s.run("r-2").unwrap(), s.pipeline("other").unwrap()), (None, None));
        assert_eq!(s.step("r-1", InstanceId(5)).unwrap(), None);
        assert!(matches!(
            s.put_step("", InstanceId(0), &testkit::step("x", StepState::Ready)),
            Err(Error::BadRunId(_))
        ));
    }

    #[test]
    fn steps_are_one_key_each_and_page_in_instance_order() {
        let (_dir, s) = testkit::store();
        for i in [2u32, 0, 300, 1] {
            s.put_step("r-1", InstanceId(i), &testkit::step(&format!("s{i}"), StepState::Pending)).unwrap();
        }
        s.put_step("r-10", InstanceId(0), &testkit::step("other run", StepState::Pending)).unwrap();
        let ids = |v: Vec<(InstanceId, StepRecord)>| v.into_iter().map(|(i, _)| i.0).collect::<Vec<_>>();
        assert_eq!(ids(s.steps("r-1", None, 3).unwrap()), [0, 1, 2]);
        assert_eq!(ids(s.steps("r-1", Some(InstanceId(2)), 3).unwrap()), [300]);
        assert_eq!(ids(s.steps("r-1", Some(InstanceId(300)), 3).unwrap()), Vec::<u32>::new());
        assert_eq!(ids(s.steps("r-1", Some(InstanceId(u32::MAX)), 3).unwrap()), Vec::<u32>::new());
    }

    #[test]
    fn a_corrupt_run_is_a_typed_error_and_the_others_stay_readable() {
        let (_dir, s) = testkit::store();
        s.put_run(&testkit::run("r-1", "train", RunState::Queued)).unwrap();
        s.put_run(&testkit::run("r-2", "train", RunState::Queued)).unwrap();
        s.tree(TreeId::Runs).unwrap().insert("r-1", &b"\x00\x01garbage"[..]).unwrap();
        s.put_step("r-2", InstanceId(0), &testkit::step("fit", StepState::Ready)).unwrap();
        s.tree(TreeId::Steps)
            .unwrap()
            .insert(crate::store::keys::instance("r-2", InstanceId(1)).unwrap(), &b"xx"[..])
            .unwrap();
        match s.run("r-1") {
            Err(Error::Corrupt { tree: "runs", key, reason }) => {
                assert_eq!((key.as_str(), reason.starts_with("truncated")), ("r-1", true))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.steps("r-2", None, 10), Err(Error::Corrupt { tree: "steps", .. })));
        assert_eq!(s.step("r-2", InstanceId(0)).unwrap().unwrap().name, "fit");
        s.quarantine("r-1", "run record does not decode").unwrap();
        assert_eq!(s.run("r-2").unwrap().unwrap().id, "r-2");
        assert!(s.quarantined("r-1").unwrap().is_some());
    }

    #[test]
    fn a_second_open_of_the_same_folder_fails_fast_and_says_what_to_do() {
        let (dir, _first) = testkit::store();
        let err = Store::open(dir.path()).err().expect("the second open must fail");
        assert!(matches!(&err, Error::Locked { dir: d } if d == dir.path()), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("another weir engine is using the data folder") && msg.contains("--data-dir"), "{msg}");
    }
}
