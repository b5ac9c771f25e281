//! The worker-side bundle cache: one extracted folder per bundle digest under a root folder,
//! fetched and extracted at most once. [`BundleCache::get_or_fetch`] takes a per-digest lock
//! (`.<digest>.lock`, an OS file lock, so it holds across threads and processes), fetches into
//! a temporary file capped at the largest archive the limits allow, and extracts with
//! [`extract_with`], which verifies the digest and renames the folder into place only when complete.
//! A folder named by a digest therefore always holds exactly that bundle (in an
//! [`BundleCache::unsynced`] cache, until a power loss: see [`Durability::Unsynced`]). Leftovers of a crashed
//! fetch are swept by the next fetch of the same digest, under its lock; lock files stay (they
//! are empty, and removing them would race with waiters). Nothing here evicts old bundles yet.

use std::fs;
use std::io::{self, BufReader, BufWriter, Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BundleLimits, Durability, Error, extract_with, is_digest};

/// Extracted bundles by digest; see the module docs.
#[derive(Clone, Debug)]
pub struct BundleCache {
    root: PathBuf,
    limits: BundleLimits,
    durability: Durability,
}

impl BundleCache {
    /// Opens (creating if needed) the cache at `root`, with the default limits.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(Error::io(&root))?;
        Ok(Self { root, limits: BundleLimits::default(), durability: Durability::Synced })
    }

    /// Extracts without fsyncing ([`Durability::Unsynced`]): for a reader that re-checks every
    /// bundle it finds here after a restart.
    pub fn unsynced(mut self) -> Self {
        self.durability = Durability::Unsynced;
        self
    }

    /// The limits fetched archives must respect.
    pub fn with_limits(mut self, limits: BundleLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The extracted folder of `digest` when it is already here: one `stat`, no lock and no
    /// fetch (what [`BundleCache::get_or_fetch`] looks at first), cheap enough for an async task.
    pub fn cached(&self, digest: &str) -> Option<PathBuf> {
        if !is_digest(digest) {
            return None;
        }
        let dir = self.root.join(digest);
        dir.is_dir().then_some(dir)
    }

    /// The extracted folder of `digest`, calling `fetch` to write the archive only when no
    /// earlier call (in any thread or process sharing the root) already did.
    pub fn get_or_fetch(
        &self,
        digest: &str,
        fetch: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<PathBuf, Error> {
        if !is_digest(digest) {
            return Err(Error::BadDigest(digest.to_string()));
        }
        let dir = self.root.join(digest);
        if dir.is_dir() {
            return Ok(dir);
        }
        let lock_path = self.root.join(format!(".{digest}.lock"));
        let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path);
        let lock = lock.map_err(Error::io(&lock_path))?;
        lock.lock().map_err(Error::io(&lock_path))?;
        if dir.is_dir() {
            return Ok(dir);
        }
        self.sweep(digest)?;

        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = TempFile(self.root.join(format!(".{digest}.fetch-{}-{n}", std::process::id())));
        let file = fs::OpenOptions::new().read(true).write(true).create_new(true).open(&temp.0);
        let file = file.map_err(Error::io(&temp.0))?;
        let cap = self.limits.max_archive_len();
        let mut sink = Capped { inner: BufWriter::new(&file), left: cap };
        let fetched = fetch(&mut sink).and_then(|()| sink.flush());
        drop(sink);
        fetched.map_err(|source| Error::Fetch { digest: digest.to_string(), source })?;

        let mut file = file;
        file.rewind().map_err(Error::io(&temp.0))?;
        extract_with(BufReader::new(file), digest, &dir, self.limits, self.durability)?;
        Ok(dir)
    }

    /// Removes what a crashed fetch of `digest` left; the caller holds the digest's lock.
    fn sweep(&self, digest: &str) -> Result<(), Error> {
        let (partial, fetching) = (format!(".{digest}.partial-"), format!(".{digest}.fetch-"));
        for entry in fs::read_dir(&self.root).map_err(Error::io(&self.root))? {
            let entry = entry.map_err(Error::io(&self.root))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&partial) {
                let _ = fs::remove_dir_all(entry.path());
            } else if name.starts_with(&fetching) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// Refuses writes past `left` bytes, so a hostile server cannot fill the disk.
struct Capped<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::other("the bundle is larger than the limits allow"));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Bundle;
    use super::super::build::tests::{PIPELINE, populate};
    use super::*;
    use std::path::Path;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Barrier};

    fn bundle() -> (tempfile::TempDir, Bundle) {
        let src = tempfile::tempdir().unwrap();
        populate(src.path(), PIPELINE);
        let bundle = Bundle::build(src.path(), BundleLimits::default()).unwrap();
        (src, bundle)
    }

    fn visible(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn fetches_once() {
        let (_src, bundle) = bundle();
        let root = tempfile::tempdir().unwrap();
        let cache = BundleCache::open(root.path().join("bundles")).unwrap();
        let fetches = AtomicUsize::new(0);
        let fetch = |w: &mut dyn Write| {
            fetches.fetch_add(1, Ordering::SeqCst);
            bundle.write_to(w).map(drop).map_err(io::Error::other)
        };
        assert_eq!(cache.cached(bundle.digest()), None, "not fetched yet");
        let first = cache.get_or_fetch(bundle.digest(), fetch).unwrap();
        let second = cache.get_or_fetch(bundle.digest(), fetch).unwrap();
        assert_eq!(first, second);
        assert_eq!(cache.cached(bundle.digest()), Some(first.clone()));
        assert_eq!(cache.cached("../../etc"), None, "not a digest");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(fs::read_to_string(first.join("pipeline.yaml")).unwrap(), "name: churn\n");
        assert_eq!(visible(&root.path().join("bundles")), [bundle.digest()]);
    }

    #[test]
    fn concurrent_callers_fetch_once() {
        let (_src, bundle) = bundle();
        let bundle = Arc::new(bundle);
        let root = tempfile::tempdir().unwrap();
        let cache = BundleCache::open(root.path()).unwrap();
        let fetches = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (cache, bundle, fetches, barrier) =
                    (cache.clone(), bundle.clone(), fetches.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    cache
                        .get_or_fetch(bundle.digest(), |w| {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            bundle.write_to(w).map(drop).map_err(io::Error::other)
                        })
                        .unwrap()
                })
            })
            .collect();
        let dirs: Vec<PathBuf> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(dirs.iter().all(|d| *d == dirs[0]));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(visible(root.path()), [bundle.digest()]);
    }

    #[test]
    fn failed_or_wrong_fetches_cache_nothing() {
        let (_src, bundle) = bundle();
        let root = tempfile::tempdir().unwrap();
        let cache =
            BundleCache::open(root.path()).unwrap().with_limits(BundleLimits { max_bytes: 1000, max_files: 10 });
        let digest = bundle.digest();

        let err =
            cache.get_or_fetch(digest, |w| w.write_all(b"partial").and(Err(io::Error::other("reset")))).unwrap_err();
        assert!(matches!(err, Error::Fetch { .. }) && err.to_string().contains("reset"), "{err}");
        let err = cache.get_or_fetch(digest, |w| w.write_all(b"not a bundle\n")).unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{err}");
        let err = cache
            .get_or_fetch(digest, |w| {
                loop {
                    w.write_all(&[0; 4096])?
                }
            })
            .unwrap_err();
        assert!(err.to_string().contains("larger than the limits allow"), "{err}");
        assert!(visible(root.path()).is_empty(), "{:?}", visible(root.path()));

        let calls = AtomicUsize::new(0);
        let err = cache
            .get_or_fetch("../../x", |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(err, Error::BadDigest(_)) && calls.load(Ordering::SeqCst) == 0, "{err}");

        let dir = cache.get_or_fetch(digest, |w| bundle.write_to(w).map(drop).map_err(io::Error::other)).unwrap();
        assert_eq!(fs::read_to_string(dir.join("steps/lib/util.py")).unwrap(), "X = 1\n");
    }

    #[test]
    fn a_crashed_fetch_is_swept() {
        let (_src, bundle) = bundle();
        let root = tempfile::tempdir().unwrap();
        let digest = bundle.digest();
        fs::create_dir(root.path().join(format!(".{digest}.partial-1-0"))).unwrap();
        fs::write(root.path().join(format!(".{digest}.fetch-1-0")), "junk").unwrap();
        let cache = BundleCache::open(root.path()).unwrap();
        cache.get_or_fetch(digest, |w| bundle.write_to(w).map(drop).map_err(io::Error::other)).unwrap();
        assert_eq!(visible(root.path()), [digest]);
    }
}
