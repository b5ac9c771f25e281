//! Opening and reopening the database: [`Store::open`] contains a panic inside sled and turns
//! what it cannot read into [`Error::Unopenable`] naming the folder and what to do; `writing`
//! and `reading` wrap every call into sled the same way and remember a write failure sled will
//! not get over by itself (any I/O error: sled refuses every later write until the database
//! is opened again) as the store's [`Store::fault`]; [`Store::reopen`] closes and reopens it
//! once there is room. Typed reads and writes of records live in `db`.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::db::{Store, TreeId};
use super::{Error, guard};

/// The key [`Store::reopen`] writes and removes in sled's default tree to prove writes work.
const PROBE: &[u8] = b"weir-probe";

/// Free bytes [`Store::reopen`] wants before it closes the database: two of sled's segments.
const ROOM: usize = 1 << 20;

/// sled's page cache size.
const CACHE_BYTES: u64 = 32 << 20;

/// How long a reopen waits for the old database's last handles to close (its file lock).
const REOPEN_WAIT: Duration = Duration::from_secs(2);

/// One open sled database and its trees.
pub(super) struct Handle {
    pub(super) db: sled::Db,
    pub(super) trees: Vec<sled::Tree>,
    /// A batch was cut short in this handle: no other is written until a reopen replaces it.
    pub(super) cut: std::sync::atomic::AtomicBool,
}

impl Handle {
    fn open(dir: &Path) -> Result<Handle, Error> {
        // sled's page cache defaults to 1 GiB and grows with every write; the engine reads
        // mostly what it just wrote, so a small cache keeps its memory flat on long runs.
        let db = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES).open().map_err(|e| match e {
            // sled 0.34 reports a held file lock only as this `Io` message.
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                Error::Locked { dir: dir.to_path_buf() }
            }
            e => Error::Sled(e),
        })?;
        let trees = TreeId::ALL.iter().map(|t| db.open_tree(t.name())).collect::<Result<Vec<_>, _>>()?;
        let handle = Handle { db, trees, cut: Default::default() };
        match super::append::replay(&handle)? {
            super::append::Replayed::Nothing => {}
            super::append::Replayed::Completed => {
                tracing::warn!(dir = %dir.display(), "completed a batch of writes a crash had interrupted")
            }
            super::append::Replayed::Damaged(why) => tracing::error!(
                dir = %dir.display(),
                error = why,
                "a batch of writes a crash interrupted cannot be read, so it was not completed: its \
                 runs may hold part of it; kept as `weir-journal-damaged` in the database; run \
                 `weir store check`"
            ),
        }
        Ok(handle)
    }
}

impl Store {
    /// Waits (up to `within`) until no process holds the database lock of `dir`, and says
    /// whether none does. A dropped `Store` lets go of it only once sled's last background
    /// task closes the file, a moment after the drop: whoever promises that the folder can be
    /// opened again (a server's shutdown) waits here.
    pub fn wait_unlocked(dir: &Path, within: Duration) -> bool {
        let start = Instant::now();
        // Polled from 50 µs up, doubling to 2 ms (sled's threads usually let go at once).
        let mut pause = Duration::from_micros(50);
        loop {
            // sled takes an exclusive flock on `<dir>/db`; so does this probe, released at once.
            let free = match std::fs::File::open(dir.join("db")) {
                Ok(f) => f.try_lock().is_ok(),
                Err(_) => true, // no database file: nothing holds it
            };
            if free || start.elapsed() >= within {
                return free;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// Opens (or creates) the database in `dir`. A database sled cannot read (a truncated or
    /// overwritten file, even one that makes sled panic) is [`Error::Unopenable`], which says
    /// what to do next.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let handle = Self::open_handle(dir)?;
        let store = Store {
            handle: RwLock::new(Some(Arc::new(handle))),
            dir: dir.to_path_buf(),
            fault: Mutex::new(None),
            transactions: Default::default(),
            journal: Mutex::new(()),
            #[cfg(test)]
            fail_next_batch: Default::default(),
            #[cfg(test)]
            cut_batch_after: std::sync::atomic::AtomicUsize::new(usize::MAX),
            #[cfg(test)]
            event_reads: Default::default(),
            pause: RwLock::new(()),
        };
        store.ensure_time_index();
        Ok(store)
    }

    fn open_handle(dir: &Path) -> Result<Handle, Error> {
        let unopenable = |reason: String| Error::Unopenable { dir: dir.to_path_buf(), reason };
        match guard::contain(|| Handle::open(dir)) {
            Ok(Ok(h)) => Ok(h),
            Ok(Err(e @ Error::Locked { .. })) => Err(e),
            Ok(Err(e)) => match guard::classify(e, dir) {
                e @ Error::NoSpace { .. } => Err(e),
                Error::Sled(sled::Error::Io(io)) => Err(Error::Io(io)),
                Error::Sled(sled::Error::Corruption { at, .. }) => Err(unopenable(match at {
                    Some(at) => format!("sled found corrupted data at {at:?} of its log"),
                    None => "sled found corrupted data (its `conf` file or a segment header)".to_string(),
                })),
                Error::Sled(e) => Err(unopenable(e.to_string())),
                e => Err(unopenable(e.to_string())),
            },
            Err(panic) => Err(unopenable(format!("sled panicked reading it ({panic})"))),
        }
    }

    /// The open database; [`Error::Reopening`] while a reopen has not succeeded yet.
    pub(super) fn handle(&self) -> Result<Arc<Handle>, Error> {
        let h = self.handle.read().unwrap_or_else(|p| p.into_inner());
        h.clone().ok_or_else(|| Error::Reopening {
            dir: self.dir.clone(),
            reason: self.fault().unwrap_or_else(|| "a write failed".to_string()),
        })
    }

    /// Why writes fail until [`Store::reopen`], if they do (e.g. "no space left on DIR").
    pub fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The store's error for `e`, met while writing; remembers a failure sled will not get
    /// over by itself (any I/O error: sled refuses every write after one until reopened).
    pub(super) fn write_failed(&self, e: Error) -> Error {
        let e = guard::classify(e, &self.dir);
        if matches!(e, Error::NoSpace { .. } | Error::Sled(sled::Error::Io(_)) | Error::Io(_)) {
            let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
            if fault.is_none() {
                *fault = Some(e.to_string());
            }
        }
        e
    }

    /// Runs a write `f`, containing a panic inside sled and noting a failure that needs a reopen.
    /// Waits while [`Store::paused`] runs. Writes never nest, so the shared hold is never
    /// taken twice by one thread.
    pub(super) fn writing<T>(&self, what: &'static str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let _pause = self.pause.read().unwrap_or_else(|p| p.into_inner());
        match guard::contain(f) {
            Ok(r) => r.map_err(|e| self.write_failed(e)),
            Err(message) => Err(self.write_failed(Error::Panicked { dir: self.dir.clone(), what, message })),
        }
    }

    /// Runs `f` with every write of this store waiting until it returns: what `f` reads of
    /// several trees is one point in time (sled 0.34 has no snapshots). `f` must not write.
    pub fn paused<T>(&self, f: impl FnOnce() -> T) -> T {
        let _pause = self.pause.write().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// Runs a read `f`, containing a panic inside sled.
    pub(super) fn reading<T>(&self, what: &'static str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        match guard::contain(f) {
            Ok(r) => r.map_err(|e| guard::classify(e, &self.dir)),
            Err(message) => Err(Error::Panicked { dir: self.dir.clone(), what, message }),
        }
    }

    /// Closes the database and opens it again, which is how sled gets over a failed write
    /// (a full disk): what was flushed before is kept, what was not is gone, exactly as after
    /// a crash. Then writes and flushes a probe; an error means writes still fail (the disk is
    /// still full) and the fault stays. The caller must reload whatever it holds in memory
    /// that was written since its last successful flush.
    pub fn reopen(&self) -> Result<(), Error> {
        // Closing loses reads until the open succeeds: only close once there is room again.
        self.has_room()?;
        let mut slot = self.handle.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            // sled skips its final flush when it has failed before; contain it all the same.
            let _ = guard::contain(move || drop(old));
        }
        let start = Instant::now();
        let handle = loop {
            match Self::open_handle(&self.dir) {
                // Handles still held elsewhere (an iterator, a write in flight) keep the
                // file lock until they are dropped, which takes moments.
                Err(Error::Locked { .. }) if start.elapsed() < REOPEN_WAIT => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(self.write_failed(e)),
                Ok(h) => break h,
            }
        };
        *slot = Some(Arc::new(handle));
        drop(slot);
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.writing("writing a probe", || {
            let h = self.handle()?;
            h.db.insert(PROBE, &b"probe"[..])?;
            h.db.flush()?;
            h.db.remove(PROBE)?;
            h.db.flush()?;
            Ok(())
        })
    }

    /// Whether [`ROOM`] bytes can be written and synced in the database's folder (then removed).
    fn has_room(&self) -> Result<(), Error> {
        let path = self.dir.join("space-probe");
        let result = std::fs::File::create(&path)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(&vec![0u8; ROOM])?;
                f.sync_all()
            })
            .map_err(|e| guard::classify(Error::Io(e), &self.dir));
        let _ = std::fs::remove_file(&path);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testkit;
    use weir_core::run::{InstanceId, RunState, StepState};

    #[test]
    fn a_damaged_database_never_panics_on_open_and_says_what_to_do() {
        let base = tempfile::tempdir().unwrap();
        let orig = base.path().join("orig").join("db");
        testkit::filled(&orig, 1500);
        let len = std::fs::metadata(orig.join("db")).unwrap().len();
        let mut outcomes = Vec::new();
        // Truncated at several offsets, segments (512 KiB each) overwritten at their start, and
        // sled's `conf` overwritten.
        enum Damage {
            Truncate(u64),
            Segment(u64),
            Conf,
        }
        let damage: Vec<Damage> = (1..8u64)
            .map(|k| Damage::Truncate(len * k / 8))
            .chain((0..(len >> 19) + 1).map(Damage::Segment))
            .chain(std::iter::once(Damage::Conf))
            .collect();
        for (n, damage) in damage.iter().enumerate() {
            let db = base.path().join(format!("case-{n}")).join("db");
            testkit::copy(&orig, &db);
            let what = match *damage {
                Damage::Truncate(at) => {
                    std::fs::OpenOptions::new().write(true).open(db.join("db")).unwrap().set_len(at).unwrap();
                    format!("truncated at {at}")
                }
                Damage::Segment(seg) => {
                    testkit::overwrite(&db.join("db"), seg << 19, 4096, 0xee);
                    format!("segment {seg} overwritten")
                }
                Damage::Conf => {
                    std::fs::write(db.join("conf"), "segment_size: x\nuse_compression: false\nversion: 0.34\n")
                        .unwrap();
                    "conf overwritten".to_string()
                }
            };
            match Store::open(&db) {
                Ok(s) => {
                    s.list_runs(&crate::store::RunFilter::default(), 10, None).unwrap();
                    outcomes.push(format!("{what}: opens"));
                }
                Err(e @ Error::Unopenable { .. }) => {
                    let msg = e.to_string();
                    let data = db.parent().unwrap().display().to_string();
                    assert!(msg.contains(&format!("weir store check --data-dir {data}")), "{msg}");
                    assert!(msg.contains("weir store import") && msg.contains(&db.display().to_string()), "{msg}");
                    assert!(!msg.contains("backtrace"), "{msg}");
                    outcomes.push(format!(
                        "{what}: {}",
                        if msg.contains("panicked") { "panic contained" } else { "refused" }
                    ));
                }
                Err(e) => panic!("{what}: {e:?}"),
            }
        }
        let text = outcomes.join("\n");
        // Without containment these cases are panics inside sled (and this test would die).
        assert!(text.contains("panic contained"), "{text}");
        assert!(text.contains("refused"), "{text}");
    }

    #[test]
    fn a_full_disk_is_no_space_naming_the_folder_and_a_reopen_heals_it_keeping_what_was_flushed() {
        let base = tempfile::tempdir().unwrap();
        let mnt = base.path().join("small");
        let Some(_mounted) = testkit::tmpfs(&mnt, "8m") else { return };
        let db = mnt.join("db");
        let s = Store::open(&db).unwrap();
        s.put_run(&testkit::run("r-0", "train", RunState::Succeeded)).unwrap();
        testkit::fill(&mnt.join("filler"));
        let mut written = 0;
        let err = loop {
            let mut b = crate::store::Batch::new();
            for i in 0..50 {
                b.put_step(&format!("r-{written}"), InstanceId(i), &testkit::step("fit", StepState::Ready)).unwrap();
            }
            match s.write_batch(b) {
                Ok(_) => written += 1,
                Err(e) => break e,
            }
            assert!(written < 10_000, "the disk never filled");
        };
        assert!(matches!(&err, Error::NoSpace { dir } if *dir == db), "{err:?}");
        assert!(err.to_string().starts_with(&format!("no space left on {}", db.display())), "{err}");
        assert!(s.fault().is_some_and(|f| f.contains("no space left on")));
        // sled refuses every write from now on, even a small one, until reopened.
        assert!(matches!(s.put_run(&testkit::run("r-x", "t", RunState::Queued)), Err(Error::NoSpace { .. })));
        // Still full: the reopen does not close the database (reads keep working).
        assert!(matches!(s.reopen(), Err(Error::NoSpace { .. })));
        assert_eq!(s.run("r-0").unwrap().unwrap().id, "r-0");

        std::fs::remove_file(mnt.join("filler")).unwrap();
        s.reopen().unwrap();
        assert_eq!(s.fault(), None);
        assert_eq!(s.run("r-0").unwrap().unwrap().id, "r-0", "what was flushed is kept");
        s.put_run(&testkit::run("r-y", "t", RunState::Queued)).unwrap();
        drop(s);
        let again = crate::store::testkit::reopen(&db);
        assert!(again.run("r-y").unwrap().is_some());
        if written > 0 {
            assert_eq!(again.steps(&format!("r-{}", written - 1), None, 100).unwrap().len(), 50);
        }
    }
}
