//! The append-only streams and grouped writes: [`Batch`] (several records written atomically
//! through a journal entry, flushed once), event appends with a dense per-run seq allocated as
//! the batch is written, and log chunks. Reads page by seq or [`LogCursor`]. Nothing here acknowledges a
//! write before `flush` returns.

use sled::transaction::ConflictableTransactionError;

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

/// Several writes applied atomically (whole or not at all, across trees) and flushed once.
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds the writes of `other` after this batch's own: one atomic write for both, in order
    /// (an event of `other` takes the seq after one of the same run here).
    pub fn append(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    /// The artifacts of `run`'s instance `i` this batch writes, if it writes them (the last
    /// write wins, as when it is written): a reader of a batch not yet written.
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
        #[cfg(test)]
        self.event_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

    /// Applies every write of `batch` atomically, flushes once, and returns the seqs of the
    /// events it appended, in order.
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
        self.writing("writing a batch", || self.transact(&h, &batch))
    }

    /// Writes `batch` atomically without a sled transaction, which costs three times a plain
    /// write (sled seals a transaction's reservation into a log buffer of its own, so it is
    /// two or three synced log writes where a plain insert is one; BENCHMARKS.md, fifth and
    /// sixth rounds). The batch, its event seqs resolved, is first written whole as one value
    /// under [`JOURNAL`] in sled's default tree (a single insert, which sled logs atomically),
    /// then applied to its trees and the journal entry removed. sled recovers a prefix of its
    /// log, so after a crash the trees hold the batch whole, or not at all with no journal
    /// entry either, or in part with the entry still there, which [`replay`] then applies again
    /// when the database is opened (each write is a plain put or remove of a whole value, so
    /// applying it twice changes nothing). The entry is removed before anyone else writes, so
    /// a replay can never overwrite a later write. One batch at a time (`Store::journal`): the
    /// event counters are read and advanced here, and there is one journal key.
    fn transact(&self, h: &Handle, batch: &Batch) -> Result<Vec<u64>, Error> {
        if batch.ops.is_empty() {
            return Ok(Vec::new());
        }
        let _one = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        if h.cut.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Reopening { dir: self.dir.clone(), reason: CUT.to_string() });
        }
        let mut seqs = Vec::new();
        // The last seq of each run this batch appends to (a batch touches a run or two).
        let mut counters: Vec<(&[u8], u64)> = Vec::new();
        let mut writes: Vec<Write<'_>> = Vec::with_capacity(batch.ops.len() + 2);
        for op in &batch.ops {
            match op {
                Op::Put(t, k, v) => writes.push((*t, k.as_slice().into(), Some(v.as_slice()))),
                Op::Remove(t, k) => writes.push((*t, k.as_slice().into(), None)),
                Op::Event { run, prefix, value } => {
                    let at = match counters.iter().position(|(r, _)| *r == run.as_slice()) {
                        Some(at) => at,
                        None => {
                            let last: u64 = match h.trees[TreeId::EventSeq as usize].get(run)? {
                                Some(b) => decode(TreeId::EventSeq.name(), run, &b)?,
                                None => 0,
                            };
                            counters.push((run.as_slice(), last));
                            counters.len() - 1
                        }
                    };
                    counters[at].1 += 1;
                    let seq = counters[at].1;
                    let mut key = prefix.clone();
                    key.extend_from_slice(&seq.to_be_bytes());
                    writes.push((TreeId::Events, key.into(), Some(value.as_slice())));
                    seqs.push(seq);
                }
            }
        }
        let counted: Vec<(&[u8], Vec<u8>)> = counters
            .iter()
            .map(|(run, seq)| Ok((*run, encode(TreeId::EventSeq.name(), seq)?)))
            .collect::<Result<_, Error>>()?;
        for (run, seq) in &counted {
            writes.push((TreeId::EventSeq, (*run).into(), Some(seq.as_slice())));
        }
        let journaled = writes.len() > 1;
        if journaled {
            h.db.insert(JOURNAL, journal::encode(&writes))?;
        }
        let applied = (|| {
            for (n, (t, k, v)) in writes.iter().enumerate() {
                #[cfg(test)]
                if self.cut_batch_after.load(std::sync::atomic::Ordering::Relaxed) == n {
                    return Err(Error::Io(std::io::Error::other("injected: a crash in the middle of a batch")));
                }
                let _ = n;
                apply(h, *t, k, *v)?;
            }
            if journaled {
                h.db.remove(JOURNAL)?;
            }
            Ok(())
        })();
        if let Err(e) = applied {
            // The trees hold part of the batch, or all of it with its journal entry still there
            // (a later write's replay would undo what came after). No batch is written and the
            // store counts as failed until it is reopened, which completes this one from the
            // journal (or finds none, if the entry never reached the disk): the engine reopens
            // a failed store before it reloads anything from it (`Engine::heal`).
            h.cut.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
            if fault.is_none() {
                *fault = Some(format!("{CUT} ({e})"));
            }
            return Err(e);
        }
        Ok(seqs)
    }
}

/// Why a store refuses batches after one was cut short ([`Store::transact`]).
const CUT: &str = "a batch of writes was cut short; reopening the store completes it";

/// One write of a batch, its event seqs resolved: a put (with the value) or a remove.
type Write<'a> = (TreeId, std::borrow::Cow<'a, [u8]>, Option<&'a [u8]>);

/// The key of the batch being applied, in sled's default tree ([`Store::transact`]).
pub(super) const JOURNAL: &[u8] = b"weir-journal";

fn apply(h: &Handle, t: TreeId, key: &[u8], value: Option<&[u8]>) -> Result<(), Error> {
    let tree = &h.trees[t as usize];
    match value {
        Some(v) => tree.insert(key, v)?,
        None => tree.remove(key)?,
    };
    Ok(())
}

/// Where [`replay`] keeps a journal entry it cannot read, as evidence.
pub(super) const JOURNAL_DAMAGED: &[u8] = b"weir-journal-damaged";

/// What [`replay`] found in the journal.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Replayed {
    Nothing,
    /// A batch a crash interrupted, now applied whole and durable.
    Completed,
    /// An entry that does not decode (a newer format, a bug): kept under
    /// [`JOURNAL_DAMAGED`] and not applied, so the store still opens; the batch it held may
    /// be in the trees in part, as a damaged record is (quarantine and `weir store check`).
    Damaged(String),
}

/// Applies the batch a crash interrupted, if the journal holds one, and makes it durable:
/// called as the database is opened, before anyone reads it.
pub(super) fn replay(h: &Handle) -> Result<Replayed, Error> {
    let Some(entry) = h.db.get(JOURNAL)? else { return Ok(Replayed::Nothing) };
    let found = match journal::decode(&entry) {
        Ok(writes) => {
            for (t, k, v) in &writes {
                apply(h, *t, k, v.as_deref())?;
            }
            Replayed::Completed
        }
        Err(e) => {
            h.db.insert(JOURNAL_DAMAGED, entry)?;
            Replayed::Damaged(e.to_string())
        }
    };
    h.db.remove(JOURNAL)?;
    h.db.flush()?;
    Ok(found)
}

/// The journal entry: a format byte, the number of writes (u32 BE), then each write as `[tree u8][1 put | 0 remove]
/// [key length u32 BE][key]` and, for a put, `[value length u32 BE][value]`. sled checks
/// what it logs; the decoder still refuses anything out of shape rather than guess.
mod journal {
    use super::{Error, TreeId, Write};

    const FORMAT: u8 = 1;

    type Owned = (TreeId, Vec<u8>, Option<Vec<u8>>);

    pub(super) fn encode(writes: &[Write<'_>]) -> Vec<u8> {
        let len = writes.iter().map(|(_, k, v)| 10 + k.len() + v.map_or(0, <[u8]>::len)).sum::<usize>();
        let mut out = Vec::with_capacity(5 + len);
        out.push(FORMAT);
        out.extend_from_slice(&(writes.len() as u32).to_be_bytes());
        for (t, k, v) in writes {
            out.push(*t as u8);
            out.push(u8::from(v.is_some()));
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k);
            if let Some(v) = v {
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Vec<Owned>, Error> {
        let corrupt = |reason: &str| Error::Corrupt {
            tree: "journal",
            key: String::from_utf8_lossy(super::JOURNAL).into_owned(),
            reason: reason.to_string(),
        };
        let mut rest = match bytes.split_first() {
            Some((&FORMAT, rest)) => rest,
            Some((v, _)) => return Err(corrupt(&format!("journal format {v}, this build reads {FORMAT}"))),
            None => return Err(corrupt("empty")),
        };
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, tail) = (rest.len() >= n).then(|| rest.split_at(n))?;
            *rest = tail;
            Some(head)
        }
        fn sized<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
            let n = u32::from_be_bytes(take(rest, 4)?.try_into().ok()?) as usize;
            take(rest, n)
        }
        let count = take(&mut rest, 4).ok_or_else(|| corrupt("cut short"))?;
        let count = u32::from_be_bytes(count.try_into().expect("4 bytes")) as usize;
        let mut out = Vec::with_capacity(count.min(1 << 16));
        while !rest.is_empty() {
            let head = take(&mut rest, 2).ok_or_else(|| corrupt("a write is cut short"))?;
            let t = *TreeId::ALL.get(usize::from(head[0])).ok_or_else(|| corrupt("a write names no tree"))?;
            let key = sized(&mut rest).ok_or_else(|| corrupt("a key is cut short"))?.to_vec();
            let value = match head[1] {
                0 => None,
                1 => Some(sized(&mut rest).ok_or_else(|| corrupt("a value is cut short"))?.to_vec()),
                _ => return Err(corrupt("a write is neither a put nor a remove")),
            };
            out.push((t, key, value));
        }
        if out.len() != count || count == 0 {
            return Err(corrupt(&format!("{} writes where it says {count}", out.len())));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::StepRecord;
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
        assert_eq!(s.write_batch(Batch::new()).unwrap(), Vec::<u64>::new());
    }

    /// A crash between a batch's first and last write leaves its journal entry, from which
    /// the next open completes it; a batch is never seen in part after a restart.
    #[test]
    fn a_batch_cut_short_by_a_crash_is_completed_when_the_store_is_opened_again() {
        let (dir, s) = testkit::store();
        s.append_event("r-1", &ev(1, Event::Start)).unwrap();
        s.put_step("r-1", InstanceId(0), &testkit::step("fit", StepState::Leased)).unwrap();
        let batch = || {
            let mut b = Batch::new();
            b.put_step("r-1", InstanceId(0), &testkit::step("fit", StepState::Succeeded))
                .unwrap()
                .append_event("r-1", &ev(2, Event::Tick))
                .unwrap()
                .put_run(&testkit::run("r-1", "train", RunState::Succeeded))
                .unwrap()
                .remove_raw(TreeId::Steps, keys::instance("r-1", InstanceId(9)).unwrap());
            b
        };
        // Cut after one write, as a crash would: the step record is written, the event not.
        s.cut_batch_after.store(1, std::sync::atomic::Ordering::Relaxed);
        assert!(s.write_batch(batch()).is_err());
        s.cut_batch_after.store(usize::MAX, std::sync::atomic::Ordering::Relaxed);
        // Until it is reopened the store takes no batch: one would replace the journal entry.
        assert!(s.fault().is_some_and(|f| f.contains("cut short")));
        assert!(matches!(s.write_batch(batch()), Err(Error::Reopening { .. })));
        s.flush().unwrap();
        assert_eq!(s.step("r-1", InstanceId(0)).unwrap().unwrap().state, StepState::Succeeded);
        assert_eq!(seqs(&s, "r-1", 0), [1], "the event is not written yet");
        assert!(s.handle().unwrap().db.get(JOURNAL).unwrap().is_some());
        drop(s);
        let s = testkit::reopen(dir.path());
        assert!(s.handle().unwrap().db.get(JOURNAL).unwrap().is_none(), "the journal is emptied");
        assert_eq!(seqs(&s, "r-1", 0), [1, 2]);
        assert_eq!(s.run("r-1").unwrap().unwrap().state, RunState::Succeeded);
        assert_eq!(s.append_event("r-1", &ev(3, Event::Cancel)).unwrap(), 3, "the counter came with the batch");
        // The same cut, then the reopen by which the engine heals a failed store.
        s.cut_batch_after.store(2, std::sync::atomic::Ordering::Relaxed);
        assert!(s.write_batch(batch()).is_err());
        s.cut_batch_after.store(usize::MAX, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(seqs(&s, "r-1", 0), [1, 2, 3, 4], "the event is written, its counter not");
        s.reopen().unwrap();
        assert_eq!(s.fault(), None);
        assert!(s.handle().unwrap().db.get(JOURNAL).unwrap().is_none());
        assert_eq!(s.append_event("r-1", &ev(5, Event::Cancel)).unwrap(), 5, "the counter was completed");
        // Whole batches leave no journal entry behind to replay over later writes.
        s.write_batch(batch()).unwrap();
        assert!(s.handle().unwrap().db.get(JOURNAL).unwrap().is_none());
        s.put_step("r-1", InstanceId(0), &testkit::step("fit", StepState::Ready)).unwrap();
        drop(s);
        let s = testkit::reopen(dir.path());
        assert_eq!(s.step("r-1", InstanceId(0)).unwrap().unwrap().state, StepState::Ready);
    }

    /// Set to a folder, [`batch_writer_killed_by_the_campaign`] writes batches into it until
    /// killed.
    const WRITER: &str = "WEIR_TEST_BATCH_WRITER";

    /// Batch `n` of the campaign: instance 0's record, an event, and instance 1's record with
    /// 16 KiB of message (so sled's log buffers fill and are written out in mid-batch), all
    /// saying `n`; a batch seen in part breaks their agreement.
    fn campaign_batch(n: u32) -> Batch {
        let mut b = Batch::new();
        let big =
            StepRecord { attempts: n, message: Some("x".repeat(16 << 10)), ..testkit::step("b", StepState::Running) };
        b.put_step("r-1", InstanceId(0), &StepRecord { attempts: n, ..testkit::step("a", StepState::Running) })
            .unwrap()
            .append_event("r-1", &ev(u64::from(n), Event::Tick))
            .unwrap()
            .put_step("r-1", InstanceId(1), &big)
            .unwrap();
        b
    }

    /// The child process of [`kill_9_in_the_middle_of_batches_never_leaves_one_in_part`]: a
    /// no-op in a normal test run.
    #[test]
    fn batch_writer_killed_by_the_campaign() {
        let Some(dir) = std::env::var_os(WRITER) else { return };
        let s = std::sync::Arc::new(Store::open(std::path::Path::new(&dir)).unwrap());
        let mut n = s.step("r-1", InstanceId(0)).unwrap().map_or(0, |r| r.attempts);
        // Another writer's flushes, as the engine's threads make them: sled's log is written out
        // while a batch is being applied, not only at its end.
        let other = s.clone();
        std::thread::spawn(move || {
            loop {
                other.flush().unwrap();
            }
        });
        loop {
            n += 1;
            s.write_batch(campaign_batch(n)).unwrap();
        }
    }

    /// A real process writing batches, killed with SIGKILL at 25 points: after each, the
    /// store opens with every batch whole (the two records and the event count agree) and
    /// the batches acknowledged before the kill are all there.
    #[test]
    fn kill_9_in_the_middle_of_batches_never_leaves_one_in_part() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = 0u32;
        let mut mid_batch = 0;
        for k in 0..25u64 {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["store::append::tests::batch_writer_killed_by_the_campaign", "--exact", "--nocapture"])
                .env(WRITER, dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // 20 to 200 ms in, spread by a fixed sequence (no randomness to reproduce).
            std::thread::sleep(std::time::Duration::from_millis(20 + (k * 37) % 181));
            child.kill().unwrap();
            child.wait().unwrap();
            // Whether the kill came between a batch's journal entry and its last write.
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            mid_batch += usize::from(db.get(JOURNAL).unwrap().is_some());
            drop(db);
            let s = testkit::reopen(dir.path());
            let a = s.step("r-1", InstanceId(0)).unwrap().map_or(0, |r| r.attempts);
            let b = s.step("r-1", InstanceId(1)).unwrap().map_or(0, |r| r.attempts);
            let events = seqs(&s, "r-1", 0);
            assert_eq!(a, b, "kill {k}: the two records of one batch disagree");
            assert_eq!(events.len() as u32, a, "kill {k}: {} events for {a} batches", events.len());
            assert!(a >= seen, "kill {k}: {a} batches after {seen} were seen");
            seen = a;
        }
        eprintln!("{seen} batches; {mid_batch} of 25 kills came in the middle of one");
        assert!(seen > 25, "the writer wrote {seen} batches in 25 lives");
    }

    /// A journal entry this build cannot read does not keep the store closed: it is kept aside
    /// as evidence, said, and not applied.
    #[test]
    fn an_unreadable_journal_entry_is_kept_aside_and_the_store_still_opens() {
        let (dir, s) = testkit::store();
        s.put_step("r-1", InstanceId(0), &testkit::step("fit", StepState::Leased)).unwrap();
        s.handle().unwrap().db.insert(JOURNAL, &[9u8, 0, 0][..]).unwrap();
        drop(s);
        let s = testkit::reopen(dir.path());
        let h = s.handle().unwrap();
        assert!(h.db.get(JOURNAL).unwrap().is_none());
        assert_eq!(h.db.get(JOURNAL_DAMAGED).unwrap().as_deref(), Some(&[9u8, 0, 0][..]));
        assert_eq!(s.step("r-1", InstanceId(0)).unwrap().unwrap().state, StepState::Leased);
        assert_eq!(replay(&h).unwrap(), Replayed::Nothing);
        h.db.insert(JOURNAL, &[1u8][..]).unwrap();
        assert!(matches!(replay(&h).unwrap(), Replayed::Damaged(why) if why.contains("journal")));
    }

    #[test]
    fn a_journal_entry_out_of_shape_is_refused_not_guessed() {
        let w: Vec<Write<'_>> = vec![
            (TreeId::Steps, b"k".as_slice().into(), Some(b"v".as_slice())),
            (TreeId::Runs, b"r".as_slice().into(), None),
        ];
        let bytes = journal::encode(&w);
        let back = journal::decode(&bytes).unwrap();
        assert_eq!(
            back,
            vec![(TreeId::Steps, b"k".to_vec(), Some(b"v".to_vec())), (TreeId::Runs, b"r".to_vec(), None)]
        );
        for cut in 1..bytes.len() {
            assert!(journal::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(journal::decode(&[]).is_err());
        assert!(journal::decode(&[9]).is_err());
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
