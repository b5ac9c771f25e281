//! The append-only streams and grouped writes: [`Batch`] (several records in one transaction
//! over every tree, flushed once), event appends with a dense per-run seq allocated inside that
//! transaction, and log chunks. Reads page by seq or [`LogCursor`]. Nothing here acknowledges a
//! write before `flush` returns, and no transaction closure has a side effect outside sled.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::db::{Store, TreeId};
use super::envelope::{decode, encode};
use super::handle::Handle;
use super::records::{EventRecord, LogChunk, LogCursor, RunRecord, StepRecord};
use super::{Error, guard, keys};
use weir_core::run::{AttemptId, InstanceId};
use weir_data::artifact::Manifest;

enum Op {
    Put(TreeId, Vec<u8>, Vec<u8>),
    Remove(TreeId, Vec<u8>),
    Event { run: Vec<u8>, prefix: Vec<u8>, value: Vec<u8> },
}

/// Several writes applied atomically (one sled transaction over every tree) and flushed once.
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds the writes of `other` after this batch's own: one transaction for both, in order
    /// (an event of `other` takes the seq after one of the same run here).
    pub fn append(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    /// The artifacts of `run`'s instance `i` this batch writes, if it writes them (the last
    /// write wins, as in the transaction): a reader of a batch not yet written.
    pub fn artifacts(&self, run: &str, i: InstanceId) -> Result<Option<Manifest>, Error> {
        let key = keys::instance(run, i)?;
        for op in self.ops.iter().rev() {
            if let Op::Put(TreeId::Artifacts, k, v) = op
                && *k == key
            {
                return decode(TreeId::Artifacts.name(), k, v).map(Some);
            }
        }
        Ok(None)
    }

    /// The run's record, and its key in the time index (the same key every time a run is
    /// written, since `created_at` never changes, so rewriting it is harmless).
    pub fn put_run(&mut self, run: &RunRecord) -> Result<&mut Batch, Error> {
        let v = encode(TreeId::Runs.name(), run)?;
        self.ops.push(Op::Put(TreeId::Runs, keys::run(&run.id)?, v));
        self.put_time_index(run.created_at.0, &run.id)?;
        Ok(self)
    }

    /// Removes `key` from tree `t` (deleting runs and pipelines: `retention`).
    pub(super) fn remove_raw(&mut self, t: TreeId, key: Vec<u8>) -> &mut Batch {
        self.ops.push(Op::Remove(t, key));
        self
    }

    /// The `runs_by_time` entry of run `id` created at `at`.
    pub(super) fn put_time_index(&mut self, at: u64, id: &str) -> Result<&mut Batch, Error> {
        let v = encode(TreeId::RunsByTime.name(), &())?;
        self.ops.push(Op::Put(TreeId::RunsByTime, keys::by_time(at, id)?, v));
        Ok(self)
    }

    pub fn put_step(&mut self, run: &str, i: InstanceId, step: &StepRecord) -> Result<&mut Batch, Error> {
        let v = encode(TreeId::Steps.name(), step)?;
        self.ops.push(Op::Put(TreeId::Steps, keys::instance(run, i)?, v));
        Ok(self)
    }

    pub fn put_artifacts(&mut self, run: &str, i: InstanceId, m: &Manifest) -> Result<&mut Batch, Error> {
        let v = encode(TreeId::Artifacts.name(), m)?;
        self.ops.push(Op::Put(TreeId::Artifacts, keys::instance(run, i)?, v));
        Ok(self)
    }

    /// Appends an event; its seq is allocated when the batch is written.
    pub fn append_event(&mut self, run: &str, event: &EventRecord) -> Result<&mut Batch, Error> {
        let value = encode(TreeId::Events.name(), event)?;
        self.ops.push(Op::Event { run: keys::run(run)?, prefix: keys::prefix(run)?, value });
        Ok(self)
    }

    /// The engine's own last line in an attempt's log (what it did with the step's outputs),
    /// written with the batch that records the outcome. Its seq is `u64::MAX`, after every
    /// chunk the worker sent for the finished attempt; one such line per attempt.
    pub fn put_engine_log(&mut self, run: &str, attempt: AttemptId, chunk: &LogChunk) -> Result<&mut Batch, Error> {
        let v = encode(TreeId::Logs.name(), chunk)?;
        self.ops.push(Op::Put(TreeId::Logs, keys::log(run, attempt.instance, attempt.number, u64::MAX)?, v));
        Ok(self)
    }

    pub(super) fn put_raw(&mut self, tree: TreeId, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(Op::Put(tree, key, value));
    }
}

type Abort = ConflictableTransactionError<Error>;

pub(super) fn abort(e: Error) -> Abort {
    ConflictableTransactionError::Abort(e)
}

impl Store {
    /// Appends one event to `run` and returns its seq (1, 2, … per run), once durable.
    pub fn append_event(&self, run: &str, event: &EventRecord) -> Result<u64, Error> {
        let mut b = Batch::new();
        b.append_event(run, event)?;
        Ok(self.write_batch(b)?.pop().unwrap_or_default())
    }

    /// The events of `run` with seq greater than `after_seq`, in seq order, read lazily.
    pub fn events(
        &self,
        run: &str,
        after_seq: u64,
    ) -> Result<impl Iterator<Item = Result<(u64, EventRecord), Error>> + use<>, Error> {
        let prefix = keys::prefix(run)?;
        let tree = self.tree(TreeId::Events)?;
        let iter = match after_seq.checked_add(1) {
            Some(next) => tree.range(keys::event(run, next)?..),
            None => tree.range(prefix.clone()..prefix.clone()),
        };
        let dir = self.dir().to_path_buf();
        let mut iter = iter.take_while(move |kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)));
        // Each step of the scan may read a page from disk: a panic there ends the scan with
        // an error instead of unwinding through the caller.
        let mut broken = false;
        Ok(std::iter::from_fn(move || {
            if broken {
                return None;
            }
            let next = match guard::contain(|| iter.next()) {
                Ok(next) => next,
                Err(message) => {
                    broken = true;
                    return Some(Err(Error::Panicked { dir: dir.clone(), what: "reading events", message }));
                }
            };
            next.map(|kv| {
                let (k, v) = kv?;
                Ok((keys::tail_u64(&k, 0).unwrap_or_default(), decode(TreeId::Events.name(), &k, &v)?))
            })
        }))
    }

    /// Appends one log chunk of `attempt` and returns where it sits, once durable.
    pub fn append_log(&self, run: &str, attempt: AttemptId, chunk: &LogChunk) -> Result<LogCursor, Error> {
        let seq = self.writing("allocating a log seq", || Ok(self.handle()?.db.generate_id()?))?;
        self.put(TreeId::Logs, keys::log(run, attempt.instance, attempt.number, seq)?, chunk)?;
        Ok(LogCursor { attempt: attempt.number, seq })
    }

    /// Appends several log chunks of `attempt` in order with one flush, once durable.
    pub fn append_logs(&self, run: &str, attempt: AttemptId, chunks: &[LogChunk]) -> Result<(), Error> {
        self.writing("writing logs", || {
            let h = self.handle()?;
            let mut batch = sled::Batch::default();
            for chunk in chunks {
                let seq = h.db.generate_id()?;
                batch.insert(
                    keys::log(run, attempt.instance, attempt.number, seq)?,
                    encode(TreeId::Logs.name(), chunk)?,
                );
            }
            h.trees[TreeId::Logs as usize].apply_batch(batch)?;
            Ok(())
        })?;
        self.flush()
    }

    /// Up to `limit` log chunks of one instance (every attempt, in order) after `after`.
    pub fn logs(
        &self,
        run: &str,
        i: InstanceId,
        after: Option<LogCursor>,
        limit: usize,
    ) -> Result<Vec<(LogCursor, LogChunk)>, Error> {
        let prefix = keys::instance(run, i)?;
        let mut start = match after {
            Some(c) => keys::log(run, i, c.attempt, c.seq)?,
            None => prefix.clone(),
        };
        if after.is_some() {
            start.push(0); // the least key after the cursor itself
        }
        self.reading("reading logs", || {
            let mut out = Vec::new();
            for kv in self.tree(TreeId::Logs)?.range(start..).take(limit) {
                let (k, v) = kv?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let cursor = LogCursor {
                    attempt: keys::tail_u32(&k, 8).unwrap_or_default(),
                    seq: keys::tail_u64(&k, 0).unwrap_or_default(),
                };
                out.push((cursor, decode(TreeId::Logs.name(), &k, &v)?));
            }
            Ok(out)
        })
    }

    /// Applies every write of `batch` in one transaction, flushes once, and returns the seqs
    /// of the events it appended, in order. The closure may run more than once; it has no
    /// side effects outside the transaction.
    pub fn write_batch(&self, batch: Batch) -> Result<Vec<u64>, Error> {
        let seqs = self.write_batch_unflushed(batch)?;
        self.flush()?;
        Ok(seqs)
    }

    /// [`Store::write_batch`] without the flush: atomic, and durable with the next flush of
    /// anything. Only for records whose loss in a crash is harmless (the engine's `started`
    /// reports); never acknowledge anything else written this way.
    pub fn write_batch_unflushed(&self, batch: Batch) -> Result<Vec<u64>, Error> {
        let h = self.handle()?;
        #[cfg(test)]
        if self.fail_next_batch.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Io(std::io::Error::other("injected: the batch was not written")));
        }
        self.transactions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.writing("writing a batch", || Self::transact(&h, &batch))
    }

    /// One sled transaction over the trees `batch` writes, and only those: sled sets up and
    /// commits every tree a transaction names, and a step's outcome touches 4 of the 24.
    fn transact(h: &Handle, batch: &Batch) -> Result<Vec<u64>, Error> {
        if batch.ops.is_empty() {
            return Ok(Vec::new()); // sled's transaction over no tree would index its first
        }
        const NONE: usize = usize::MAX;
        let mut at = [NONE; TreeId::ALL.len()];
        let mut named: Vec<sled::Tree> = Vec::new();
        let mut name = |t: TreeId| {
            if at[t as usize] == NONE {
                at[t as usize] = named.len();
                named.push(h.trees[t as usize].clone());
            }
        };
        for op in &batch.ops {
            match op {
                Op::Put(t, ..) | Op::Remove(t, _) => name(*t),
                Op::Event { .. } => {
                    name(TreeId::EventSeq);
                    name(TreeId::Events);
                }
            }
        }
        let seqs = named.as_slice().transaction(|trees: &Vec<TransactionalTree>| {
            let tree = |t: TreeId| &trees[at[t as usize]];
            let mut seqs = Vec::new();
            for op in &batch.ops {
                match op {
                    Op::Put(t, k, v) => {
                        tree(*t).insert(k.as_slice(), v.as_slice())?;
                    }
                    Op::Remove(t, k) => {
                        tree(*t).remove(k.as_slice())?;
                    }
                    Op::Event { run, prefix, value } => {
                        let counters = tree(TreeId::EventSeq);
                        let last: u64 = match counters.get(run)? {
                            Some(b) => decode(TreeId::EventSeq.name(), run, &b).map_err(abort)?,
                            None => 0,
                        };
                        let seq = last + 1;
                        counters.insert(run.as_slice(), encode(TreeId::EventSeq.name(), &seq).map_err(abort)?)?;
                        let mut key = prefix.clone();
                        key.extend_from_slice(&seq.to_be_bytes());
                        tree(TreeId::Events).insert(key, value.as_slice())?;
                        seqs.push(seq);
                    }
                }
            }
            Ok::<_, Abort>(seqs)
        })?;
        Ok(seqs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Stream, testkit};
    use weir_core::run::{Event, Millis, RunState, StepState};

    fn ev(now: u64, event: Event) -> EventRecord {
        EventRecord { now: Millis(now), event, changes: Vec::new() }
    }

    fn seqs(s: &Store, run: &str, after: u64) -> Vec<u64> {
        s.events(run, after).unwrap().map(|e| e.unwrap().0).collect()
    }

    #[test]
    fn event_seqs_are_dense_per_run_ordered_and_page_after_a_seq() {
        let (_dir, s) = testkit::store();
        for n in 1..=300u64 {
            assert_eq!(s.append_event("r-1", &ev(n, Event::Tick)).unwrap(), n);
        }
        assert_eq!(s.append_event("r-10", &ev(1, Event::Start)).unwrap(), 1);
        assert_eq!(s.append_event("r-1", &ev(301, Event::Cancel)).unwrap(), 301);
        assert_eq!(seqs(&s, "r-1", 0), (1..=301).collect::<Vec<_>>());
        assert_eq!(seqs(&s, "r-1", 255), (256..=301).collect::<Vec<_>>());
        assert_eq!(seqs(&s, "r-1", 301), Vec::<u64>::new());
        assert_eq!(seqs(&s, "r-1", u64::MAX), Vec::<u64>::new());
        assert_eq!(seqs(&s, "r-10", 0), [1]);
        assert_eq!(seqs(&s, "nope", 0), Vec::<u64>::new());
        let last = s.events("r-1", 300).unwrap().next().unwrap().unwrap();
        assert_eq!(last, (301, ev(301, Event::Cancel)));
    }

    #[test]
    fn a_batch_lands_whole_with_its_event_seqs() {
        let (_dir, s) = testkit::store();
        s.append_event("r-1", &ev(1, Event::Start)).unwrap();
        let mut b = Batch::new();
        b.put_run(&testkit::run("r-1", "train", RunState::Running))
            .unwrap()
            .put_step("r-1", InstanceId(0), &testkit::step("fit", StepState::Running))
            .unwrap()
            .put_artifacts("r-1", InstanceId(0), &Manifest::default())
            .unwrap()
            .append_event("r-1", &ev(2, Event::Tick))
            .unwrap()
            .append_event("r-2", &ev(2, Event::Start))
            .unwrap()
            .append_event("r-1", &ev(3, Event::Cancel))
            .unwrap();
        assert_eq!(s.write_batch(b).unwrap(), [2, 1, 3]);
        assert_eq!(seqs(&s, "r-1", 0), [1, 2, 3]);
        assert_eq!(s.step("r-1", InstanceId(0)).unwrap().unwrap().state, StepState::Running);
        assert_eq!(s.artifacts("r-1", InstanceId(0)).unwrap(), Some(Manifest::default()));
        assert!(s.run("r-1").unwrap().is_some());
        assert!(Batch::new().append_event("a\0b", &ev(1, Event::Tick)).is_err());
        // A transaction names only the trees its batch writes: an empty one names none.
        assert_eq!(s.write_batch(Batch::new()).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn a_corrupt_event_counter_aborts_the_whole_batch() {
        let (_dir, s) = testkit::store();
        s.tree(TreeId::EventSeq).unwrap().insert("r-1", &b"junk"[..]).unwrap();
        let mut b = Batch::new();
        b.put_run(&testkit::run("r-1", "train", RunState::Running))
            .unwrap()
            .append_event("r-1", &ev(1, Event::Start))
            .unwrap();
        assert!(matches!(s.write_batch(b), Err(Error::Corrupt { tree: "event_seq", .. })));
        assert_eq!(s.run("r-1").unwrap(), None);
    }

    #[test]
    fn logs_page_by_cursor_across_attempts_of_one_instance() {
        let (_dir, s) = testkit::store();
        let chunk = |text: &str| LogChunk { stream: Stream::Stdout, at: Millis(1), data: text.as_bytes().to_vec() };
        let a1 = AttemptId { instance: InstanceId(2), number: 1 };
        let a2 = AttemptId { instance: InstanceId(2), number: 2 };
        s.append_log("r-1", a2, &chunk("second attempt")).unwrap();
        for text in ["a", "b", "c"] {
            s.append_log("r-1", a1, &chunk(text)).unwrap();
        }
        s.append_log("r-1", AttemptId { instance: InstanceId(3), number: 1 }, &chunk("other step")).unwrap();
        let text = |v: &[(LogCursor, LogChunk)]| {
            v.iter().map(|(_, c)| String::from_utf8(c.data.clone()).unwrap()).collect::<Vec<_>>()
        };
        let first = s.logs("r-1", InstanceId(2), None, 2).unwrap();
        assert_eq!(text(&first), ["a", "b"]);
        let rest = s.logs("r-1", InstanceId(2), Some(first[1].0), 10).unwrap();
        assert_eq!(text(&rest), ["c", "second attempt"]);
        assert_eq!(rest[1].0.attempt, 2);
        assert!(s.logs("r-1", InstanceId(2), Some(rest[1].0), 10).unwrap().is_empty());
    }
}
