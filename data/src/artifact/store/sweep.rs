//! The sweep half of garbage collection: [`Store::sweep`] removes every blob the caller does
//! not keep and that was last written before a cutoff, and temporary files of puts older than
//! it. The cutoff is the grace that makes the sweep safe while runs are in flight: a blob just
//! uploaded (or just found already stored by a put, which touches it) is younger than the
//! grace whether or not a record names it yet. What to keep is the engine's mark; this module
//! only walks the folders, and never removes anything but regular files it would store.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use super::super::{Digest, Error};
use super::Store;

/// What a sweep removed (or, dry, would remove).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub blobs: u64,
    pub bytes: u64,
    /// Temporary files of puts that never finished (a crash mid-upload).
    pub temp_files: u64,
}

impl Store {
    /// Removes (unless `dry_run`) each blob for which `keep` is false and that was last written
    /// before `cutoff`, and each temporary file older than `cutoff`. A file that vanishes
    /// meanwhile is skipped; names that are not blobs are left alone.
    pub fn sweep(&self, keep: impl Fn(&Digest) -> bool, cutoff: SystemTime, dry_run: bool) -> Result<Swept, Error> {
        let mut out = Swept::default();
        for fan in read_dir(&self.blobs)? {
            let Some(prefix) = fan.file_name().to_str().map(str::to_string) else { continue };
            if prefix.len() != 2 || !fan.path().is_dir() {
                continue;
            }
            for blob in read_dir(&fan.path())? {
                let Some(rest) = blob.file_name().to_str().map(str::to_string) else { continue };
                let Ok(digest) = format!("{prefix}{rest}").parse::<Digest>() else { continue };
                let Ok(meta) = blob.metadata() else { continue };
                if !meta.is_file() || keep(&digest) || !older(&meta, cutoff) {
                    continue;
                }
                if !dry_run && !remove(&blob.path())? {
                    continue;
                }
                out.blobs += 1;
                out.bytes += meta.len();
            }
        }
        for tmp in read_dir(&self.tmp)? {
            let Ok(meta) = tmp.metadata() else { continue };
            if meta.is_file() && older(&meta, cutoff) && (dry_run || remove(&tmp.path())?) {
                out.temp_files += 1;
            }
        }
        Ok(out)
    }

    /// Every blob with its size and when it was last written or touched, least recent first
    /// (a worker's cache evicts in this order).
    pub fn blobs_by_age(&self) -> Result<Vec<(Digest, u64, SystemTime)>, Error> {
        let mut out = Vec::new();
        for fan in read_dir(&self.blobs)? {
            let Some(prefix) = fan.file_name().to_str().map(str::to_string) else { continue };
            if prefix.len() != 2 || !fan.path().is_dir() {
                continue;
            }
            for blob in read_dir(&fan.path())? {
                let Some(rest) = blob.file_name().to_str().map(str::to_string) else { continue };
                let Ok(digest) = format!("{prefix}{rest}").parse::<Digest>() else { continue };
                let Ok(meta) = blob.metadata() else { continue };
                if meta.is_file() {
                    out.push((digest, meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
                }
            }
        }
        out.sort_by_key(|(d, _, at)| (*at, *d.as_bytes()));
        Ok(out)
    }

    /// Removes the blob for `digest`; false when it was not stored.
    pub fn remove_blob(&self, digest: &Digest) -> Result<bool, Error> {
        remove(&self.path_of(digest))
    }

    /// Marks the blob for `digest` as just written or used: a sweep's grace covers it, and a
    /// worker's cache evicts it last. A put that finds its content already stored calls it,
    /// since the blob may be old and unreferenced until the caller's record names it.
    pub fn touch(&self, digest: &Digest) -> Result<(), Error> {
        let path = self.path_of(digest);
        let file = fs::File::open(&path).map_err(Error::io("open", &path))?;
        file.set_modified(SystemTime::now()).map_err(Error::io("touch", &path))
    }
}

fn older(meta: &fs::Metadata, cutoff: SystemTime) -> bool {
    meta.modified().is_ok_and(|m| m < cutoff)
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, Error> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter_map(Result::ok).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("list", dir)(e)),
    }
}

/// Removes `path`; false when it was already gone.
fn remove(path: &Path) -> Result<bool, Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_sweep_removes_old_unkept_blobs_and_keeps_new_or_kept_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (kept, old, new) =
            (store.put_bytes(b"kept").unwrap(), store.put_bytes(b"old").unwrap(), store.put_bytes(b"new").unwrap());
        let long_ago = SystemTime::now() - Duration::from_secs(7200);
        for d in [&kept, &old] {
            fs::File::open(store.path_of(d)).unwrap().set_modified(long_ago).unwrap();
        }
        fs::write(dir.path().join("tmp").join("put-crashed"), b"partial").unwrap();
        fs::File::open(dir.path().join("tmp").join("put-crashed")).unwrap().set_modified(long_ago).unwrap();
        let cutoff = SystemTime::now() - Duration::from_secs(3600);
        let dry = store.sweep(|d| *d == kept, cutoff, true).unwrap();
        assert_eq!(dry, Swept { blobs: 1, bytes: 3, temp_files: 1 });
        assert!(store.contains(&old), "a dry run removes nothing");
        assert_eq!(store.sweep(|d| *d == kept, cutoff, false).unwrap(), dry);
        assert!(!store.contains(&old) && store.contains(&kept) && store.contains(&new));
        assert_eq!(store.sweep(|d| *d == kept, cutoff, false).unwrap(), Swept::default());
    }

    #[test]
    fn putting_content_already_stored_renews_its_grace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.put_bytes(b"again").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(7200);
        fs::File::open(store.path_of(&d)).unwrap().set_modified(long_ago).unwrap();
        store.put_bytes(b"again").unwrap();
        let cutoff = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(store.sweep(|_| false, cutoff, false).unwrap().blobs, 0);
        assert!(store.contains(&d));
    }
}
