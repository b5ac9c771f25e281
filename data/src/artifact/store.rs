//! [`Store`]: a content-addressed blob store on disk, `root/blobs/ab/cdef...` (the first two hex
//! characters of the digest pick one of 256 folders). A put streams its input through BLAKE3 in
//! 1 MiB chunks into a temporary file in `root/tmp/`, fsyncs it, renames it into place and
//! fsyncs the folder, so a blob that a put reported is complete and durable, and a crash leaves
//! at worst an orphan in `tmp/`. Blobs are read-only and never change once written; concurrent
//! puts of the same content are safe (both renames install identical bytes). The store must not
//! interpret what it stores or keep anything in memory beyond one chunk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Digest, Error};

mod sweep;
pub use sweep::Swept;

/// Bytes read, hashed and written per step of a put or a verify.
pub(super) const CHUNK: usize = 1 << 20;
/// The first read buffer of a put (it grows to [`CHUNK`] while reads fill it).
const FIRST_CHUNK: usize = 64 * 1024;

/// The blob store rooted at a folder of the data folder.
#[derive(Debug, Clone)]
pub struct Store {
    blobs: PathBuf,
    tmp: PathBuf,
    /// The folder whose disk was full at the last failed put, until a put succeeds.
    full: Arc<Mutex<Option<PathBuf>>>,
}

impl Store {
    /// Opens the store at `root`, creating `root/blobs` and `root/tmp` if they are missing.
    pub fn open(root: &Path) -> Result<Store, Error> {
        let store = Store { blobs: root.join("blobs"), tmp: root.join("tmp"), full: Arc::default() };
        for dir in [&store.blobs, &store.tmp] {
            fs::create_dir_all(dir).map_err(Error::io("create folder", dir))?;
        }
        Ok(store)
    }

    /// Where the blob for `digest` lives (or would live).
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_string();
        self.blobs.join(&hex[..2]).join(&hex[2..])
    }

    /// Whether a blob for `digest` is stored. Does not check its content: see [`Store::verify`].
    pub fn contains(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.path_of(digest)).is_ok_and(|m| m.is_file())
    }

    /// Stores the file at `path` (followed if it is a symlink: callers that must refuse symlinks
    /// open the file themselves and use [`Store::put_reader`]). Returns its digest and size.
    pub fn put_file(&self, path: &Path) -> Result<(Digest, u64), Error> {
        let file = File::open(path).map_err(Error::io("open", path))?;
        self.put_reader(file, path)
    }

    /// Stores `bytes`.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, Error> {
        Ok(self.put_reader(bytes, Path::new("<bytes>"))?.0)
    }

    /// Stores everything `reader` yields; `source` names it in errors. Returns the digest and size.
    /// A put that fails for want of space is remembered (see [`Store::full`]) until one succeeds.
    pub fn put_reader(&self, reader: impl Read, source: &Path) -> Result<(Digest, u64), Error> {
        let result = self.put_inner(reader, source);
        let mut full = self.full.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => *full = None,
            Err(Error::Io { path, source, .. }) if crate::is_no_space(source) => {
                *full = Some(path.parent().unwrap_or(path).to_path_buf())
            }
            Err(_) => {}
        }
        result
    }

    /// The folder whose disk was full when the last put failed, until a put succeeds.
    pub fn full(&self) -> Option<PathBuf> {
        self.full.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn put_inner(&self, mut reader: impl Read, source: &Path) -> Result<(Digest, u64), Error> {
        let (mut tmp, tmp_path) = self.temp_file()?;
        // Removes the temporary file on every early return; disarmed once it is renamed away.
        let mut guard = RemoveOnDrop(Some(tmp_path.clone()));
        let mut hasher = blake3::Hasher::new();
        // Small first: most puts (bundles, logs, metrics) are a few KiB, and zeroing a 1 MiB
        // buffer for each was a visible part of a short step's cost (BENCHMARKS.md, issue 19).
        // A read that fills the buffer doubles it, up to CHUNK, for big files.
        let mut buf = vec![0u8; FIRST_CHUNK];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", source)(e)),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(Error::io("write", &tmp_path))?;
            size += n as u64;
            if n == buf.len() && buf.len() < CHUNK {
                buf.resize(buf.len() * 2, 0);
            }
        }
        let digest = Digest::from(hasher.finalize());
        tmp.set_permissions(fs::Permissions::from_mode(0o444)).map_err(Error::io("set permissions of", &tmp_path))?;
        tmp.sync_all().map_err(Error::io("fsync", &tmp_path))?;
        drop(tmp);

        let dest = self.path_of(&digest);
        let fan = dest.parent().expect("a blob path has a parent");
        match fs::create_dir(fan) {
            // A new fan-out folder is an entry of `blobs/`: make that entry durable too.
            Ok(()) => sync_dir(&self.blobs)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create folder", fan)(e)),
        }
        // Deduplicate: a blob of the right size is the same content (blobs are only ever
        // installed complete). One of the wrong size was damaged: replace it.
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == size) {
            // The blob may be old and unreferenced: renew the garbage collector's grace.
            self.touch(&digest)?;
            return Ok((digest, size)); // the guard removes the temporary file
        }
        fs::rename(&tmp_path, &dest).map_err(Error::io("rename into place", &dest))?;
        guard.0 = None;
        sync_dir(fan)?;
        Ok((digest, size))
    }

    /// Opens the blob for `digest` for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, Error> {
        let path = self.path_of(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(*digest),
            _ => Error::io("open", path)(e),
        })
    }

    /// Re-hashes the blob for `digest`; [`Error::Corrupt`] if its content no longer matches.
    pub fn verify(&self, digest: &Digest) -> Result<(), Error> {
        let mut file = self.open_blob(digest)?;
        let mut hasher = blake3::Hasher::new();
        let len = file.metadata().map_or(CHUNK as u64, |m| m.len());
        let mut buf = vec![0u8; CHUNK.min(len as usize).max(1)];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", self.path_of(digest))(e)),
            };
        }
        let actual = Digest::from(hasher.finalize());
        if actual != *digest {
            return Err(Error::Corrupt { digest: *digest, detail: format!("its content hashes to {actual}") });
        }
        Ok(())
    }

    /// A new, exclusively created file in `tmp/`. Names are unique per process (pid and a
    /// counter); `create_new` settles any clash with another process sharing the store.
    fn temp_file(&self) -> Result<(File, PathBuf), Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = self.tmp.join(format!("put-{}-{n}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((file, path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create", path)(e)),
            }
        }
    }
}

/// Makes a folder's entries (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("fsync folder", dir))
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};
    use std::sync::Arc;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn read_blob(store: &Store, d: &Digest) -> Vec<u8> {
        let mut out = Vec::new();
        store.open_blob(d).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    fn tmp_is_empty(dir: &Path) -> bool {
        fs::read_dir(dir.join("tmp")).unwrap().next().is_none()
    }

    #[test]
    fn round_trip_and_layout() {
        let (dir, store) = store();
        let src = dir.path().join("model.json");
        fs::write(&src, b"{\"w\": [1, 2]}").unwrap();
        let (d, size) = store.put_file(&src).unwrap();
        assert_eq!((d, size), (Digest::of(b"{\"w\": [1, 2]}"), 13));
        let hex = d.to_string();
        assert_eq!(store.path_of(&d), dir.path().join("blobs").join(&hex[..2]).join(&hex[2..]));
        assert!(store.contains(&d));
        assert_eq!(read_blob(&store, &d), b"{\"w\": [1, 2]}");
        assert!(fs::metadata(store.path_of(&d)).unwrap().permissions().readonly());
        store.verify(&d).unwrap();
        assert!(tmp_is_empty(dir.path()));
        // The empty blob is a blob like any other.
        let empty = store.put_bytes(b"").unwrap();
        assert_eq!(read_blob(&store, &empty), b"");
    }

    #[test]
    fn same_content_is_stored_once() {
        let (dir, store) = store();
        let a = store.put_bytes(b"same").unwrap();
        let src = dir.path().join("copy");
        fs::write(&src, b"same").unwrap();
        assert_eq!(store.put_file(&src).unwrap(), (a, 4));
        let fan = store.path_of(&a).parent().unwrap().to_path_buf();
        assert_eq!(fs::read_dir(fan).unwrap().count(), 1);
        assert!(tmp_is_empty(dir.path()));
    }

    #[test]
    fn missing_blob_is_not_found() {
        let (_dir, store) = store();
        let d = Digest::of(b"never stored");
        assert!(!store.contains(&d));
        assert!(matches!(store.open_blob(&d), Err(Error::NotFound(x)) if x == d));
        assert!(matches!(store.verify(&d), Err(Error::NotFound(_))));
    }

    #[test]
    fn verify_detects_corruption_and_a_put_repairs_a_truncated_blob() {
        let (_dir, store) = store();
        let d = store.put_bytes(b"precious weights").unwrap();
        let path = store.path_of(&d);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut f = OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(b"P").unwrap(); // same size, one byte flipped
        drop(f);
        let err = store.verify(&d).unwrap_err();
        assert!(matches!(err, Error::Corrupt { digest, .. } if digest == d), "{err}");
        assert!(err.to_string().starts_with(&format!("blob {d} is corrupt: its content hashes to ")), "{err}");

        fs::write(&path, b"prec").unwrap(); // truncated: a put of the content replaces it
        assert_eq!(store.put_bytes(b"precious weights").unwrap(), d);
        store.verify(&d).unwrap();
    }

    #[test]
    fn concurrent_puts_of_the_same_content() {
        let (dir, store) = store();
        let store = Arc::new(store);
        let content: Arc<Vec<u8>> = Arc::new((0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (store, content) = (store.clone(), content.clone());
                std::thread::spawn(move || store.put_bytes(&content).unwrap())
            })
            .collect();
        let digests: Vec<Digest> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(digests.iter().all(|d| *d == Digest::of(&content)));
        store.verify(&digests[0]).unwrap();
        assert!(tmp_is_empty(dir.path()));
    }

    #[test]
    fn large_file_is_streamed() {
        // 48 MiB: a sparse hole, then data, so the file costs little disk and its hashing spans
        // many chunks, including a short last one.
        let (dir, store) = store();
        let src = dir.path().join("big.bin");
        let mut f = File::create(&src).unwrap();
        f.set_len(48 << 20).unwrap();
        f.seek(SeekFrom::Start((48 << 20) - 1000)).unwrap();
        f.write_all(&[7u8; 1000]).unwrap();
        f.write_all(b"tail").unwrap();
        drop(f);
        let (d, size) = store.put_file(&src).unwrap();
        assert_eq!(size, (48 << 20) + 4);
        let mut expect = blake3::Hasher::new();
        expect.update_reader(File::open(&src).unwrap()).unwrap();
        assert_eq!(d, Digest::from(expect.finalize()));
        store.verify(&d).unwrap();
    }

    #[test]
    fn put_of_a_missing_file_names_it() {
        let (dir, store) = store();
        let err = store.put_file(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().starts_with("cannot open `"), "{err}");
        assert!(tmp_is_empty(dir.path()));
    }
}
