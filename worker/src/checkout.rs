//! Per-attempt copies of cached bundles, so that no step can change what another step runs.
//!
//! The bundle cache (`weir_data::bundle::BundleCache`) extracts each bundle once per worker;
//! a process step must not run in that folder, or a step that edits `steps/x.sh` changes every
//! later run of that pipeline version on this worker. [`Checkouts::checkout`] copies the cached
//! folder into the attempt's own folder (`std::io::copy` between files is `copy_file_range`,
//! which reflinks where the filesystem can), and the step runs in the copy. Hard links would not
//! do: a step runs as the worker's uid and could `chmod` a shared inode back and write through
//! it. Creating thousands of files costs seconds on a slow disk (BENCHMARKS.md), so a copy stays
//! in its (reused) attempt folder, with the stamps it had when made: the next checkout of the
//! same bundle into that folder reuses it only if every folder and file still has exactly those
//! stamps (any write, `chmod`, link, added or removed entry changes a ctime or mtime), and
//! otherwise removes it and copies afresh.
//!
//! The cache is also checked for tampering, since anything running as the worker's uid can
//! reach it. The first use of a digest in this worker process makes the cached folder
//! read-only, rebuilds the bundle from it (its BLAKE3 address must be the folder's name, and it
//! must hold no file the bundle does not) and keeps a [`Snapshot`] of every file's and folder's
//! inode, size, mode, mtime and ctime in memory, where steps cannot reach. Every later checkout
//! compares each source against the snapshot before and after copying it: any write, `chmod`,
//! replacement, added or removed file changes a ctime (which no unprivileged process can set
//! back) and is reported as [`Error::Tampered`]; the agent then evicts the cached folder and
//! fetches the bundle again. Docker steps mount the cached folder read-only instead of copying
//! it, and get the same check ([`Checkouts::verify`]).
//!
//! This module touches files only: no network, no engine, no clock.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use weir_data::bundle::{Bundle, BundleLimits};

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cached folder is not what was extracted: evict it and fetch the bundle again.
    #[error("the cached bundle {digest} was changed on this worker ({what}): fetch it again")]
    Tampered { digest: String, what: String },
    #[error("cannot copy the bundle to `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// What a file or folder looked like when the cached bundle was verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mode: m.mode(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Every folder (parents first) and file of a verified cached bundle, by relative path.
#[derive(Debug)]
pub struct Snapshot {
    dirs: Vec<(PathBuf, Stamp)>,
    files: Vec<(PathBuf, Stamp)>,
}

impl Snapshot {
    /// How many files the bundle holds.
    pub fn files(&self) -> usize {
        self.files.len()
    }
}

/// The verified snapshots of this worker process, by bundle digest; see the module docs.
#[derive(Default)]
pub struct Checkouts {
    verified: Mutex<HashMap<String, Arc<Snapshot>>>,
    /// The copies left in attempt folders, by destination: their digest and stamps.
    kept: Mutex<HashMap<PathBuf, Kept>>,
}

/// A copy left in a folder: the digest of its bundle and the stamps of its folders and files.
type Kept = (String, Vec<(PathBuf, Stamp)>);

impl Checkouts {
    pub fn new() -> Checkouts {
        Checkouts::default()
    }

    /// Makes `dest` a copy of the cached bundle `cached` (named by `digest`): the copy this
    /// value left there if it is provably untouched, a fresh one otherwise (whatever else is at
    /// `dest` is removed first). The copy is the step's to change (files `0644`, or `0755` when
    /// executable); the next checkout into `dest` sees any change and copies again.
    pub fn checkout(&self, digest: &str, cached: &Path, dest: &Path) -> Result<(), Error> {
        let snapshot = self.verify(digest, cached)?;
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner()).remove(dest);
        if let Some((was, stamps)) = kept
            && was == digest
            && untouched(dest, &stamps)
        {
            self.kept.lock().unwrap_or_else(|p| p.into_inner()).insert(dest.to_path_buf(), (was, stamps));
            return Ok(());
        }
        remove_all(dest).map_err(io_error(dest))?;
        copy(digest, &snapshot, cached, dest)?;
        let mut stamps = Vec::with_capacity(snapshot.dirs.len() + snapshot.files.len());
        for (rel, _) in snapshot.dirs.iter().chain(&snapshot.files) {
            let path = dest.join(rel);
            stamps.push((rel.clone(), Stamp::of(&fs::symlink_metadata(&path).map_err(io_error(&path))?)));
        }
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).insert(dest.to_path_buf(), (digest.to_string(), stamps));
        Ok(())
    }

    /// Whether the copy this value left at `dest` can serve a step of `digest` as it is, checked
    /// with no more than a `stat` per entry, few enough to run on an async task: `digest` was
    /// verified before, its bundle holds at most `max` folders and files, and the copy is of
    /// `digest` and untouched. The cached bundle is not looked at: nothing of it reaches a
    /// reused copy (the next fresh copy checks it first, as `checkout` does). False when the
    /// caller must run `checkout` (a first verification, a larger bundle, a copy to make).
    pub fn reuse(&self, digest: &str, dest: &Path, max: usize) -> bool {
        let small = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .is_some_and(|s| s.dirs.len() + s.files.len() <= max);
        if !small {
            return false;
        }
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let Some((was, stamps)) = kept.get(dest) else { return false };
        was == digest && untouched(dest, stamps)
    }

    /// Removes the copy at `dest`, if any (a folder about to serve a step without one).
    pub fn discard(&self, dest: &Path) -> io::Result<()> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).remove(dest);
        remove_all(dest)
    }

    /// Checks the cached bundle against its snapshot (taking one, with a full verification, on
    /// first use), without copying it.
    pub fn verify(&self, digest: &str, cached: &Path) -> Result<Arc<Snapshot>, Error> {
        let known = self.verified.lock().unwrap_or_else(|p| p.into_inner()).get(digest).cloned();
        let snapshot = match known {
            Some(snapshot) => snapshot,
            None => {
                let snapshot = Arc::new(first_verify(digest, cached)?);
                self.verified.lock().unwrap_or_else(|p| p.into_inner()).insert(digest.to_string(), snapshot.clone());
                return Ok(snapshot);
            }
        };
        unchanged(digest, &snapshot, cached)?;
        Ok(snapshot)
    }

    /// Forgets `digest`'s snapshot, after its cached folder was evicted.
    pub fn forget(&self, digest: &str) {
        self.verified.lock().unwrap_or_else(|p| p.into_inner()).remove(digest);
    }
}

/// Removes `path` and everything under it, making folders writable first (a step may have made
/// its copy read-only); nothing there is fine.
fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return fs::remove_file(path),
        Ok(_) => {}
    }
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o755));
        for entry in fs::read_dir(&dir)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    fs::remove_dir_all(path)
}

/// Whether every folder and file of the copy at `dest` still has the stamp taken when it was
/// made.
fn untouched(dest: &Path, stamps: &[(PathBuf, Stamp)]) -> bool {
    stamps.iter().all(|(rel, stamp)| fs::symlink_metadata(dest.join(rel)).is_ok_and(|now| Stamp::of(&now) == *stamp))
}

/// Checks the cached bundle `cached` against its `snapshot`: a `stat` per folder and file.
fn unchanged(digest: &str, snapshot: &Snapshot, cached: &Path) -> Result<(), Error> {
    for (rel, stamp) in snapshot.dirs.iter().chain(&snapshot.files) {
        let path = cached.join(rel);
        let now = fs::symlink_metadata(&path).map_err(|e| tampered(digest, format!("{}: {e}", rel.display())))?;
        if Stamp::of(&now) != *stamp {
            return Err(tampered(digest, format!("`{}` changed", rel.display())));
        }
    }
    Ok(())
}

fn tampered(digest: &str, what: String) -> Error {
    Error::Tampered { digest: digest.to_string(), what }
}

/// Makes `cached` read-only, checks that it holds exactly the bundle `digest`, and snapshots it.
fn first_verify(digest: &str, cached: &Path) -> Result<Snapshot, Error> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    walk(digest, cached, Path::new(""), &mut dirs, &mut files)?;
    // Read-only before the stamps are taken (chmod changes ctimes): nothing writes there by
    // mistake, and the worker's own eviction makes folders writable again first.
    for rel in files.iter().chain(dirs.iter().rev()) {
        let path = cached.join(rel);
        let meta = fs::symlink_metadata(&path).map_err(io_error(&path))?;
        let mode = if meta.is_dir() || meta.mode() & 0o111 != 0 { 0o555 } else { 0o444 };
        if meta.mode() & 0o7777 != mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_error(&path))?;
        }
    }
    let stamp = |rel: &PathBuf| -> Result<(PathBuf, Stamp), Error> {
        let path = cached.join(rel);
        Ok((rel.clone(), Stamp::of(&fs::symlink_metadata(&path).map_err(io_error(&path))?)))
    };
    let dirs = dirs.iter().map(stamp).collect::<Result<Vec<_>, _>>()?;
    let files = files.iter().map(stamp).collect::<Result<Vec<_>, _>>()?;

    let rebuilt = Bundle::build(cached, BundleLimits::default())
        .map_err(|e| tampered(digest, format!("it no longer makes a bundle: {e}")))?;
    if rebuilt.digest() != digest {
        return Err(tampered(digest, format!("its content hashes to {}", rebuilt.digest())));
    }
    // A file the bundle's ignore rules leave out does not change the digest: refuse those too.
    if rebuilt.files().len() != files.len() {
        let kept: std::collections::HashSet<&str> = rebuilt.files().iter().map(|e| e.path.as_str()).collect();
        let extra = files.iter().find(|(rel, _)| !rel.to_str().is_some_and(|r| kept.contains(r)));
        let what =
            extra.map_or_else(|| "files are missing".to_string(), |(rel, _)| format!("`{}` was added", rel.display()));
        return Err(tampered(digest, what));
    }
    // Checked after the stamps were taken: a change while it was rebuilt shows up next time.
    Ok(Snapshot { dirs, files })
}

/// Lists folders (parents first) and regular files under `root/rel`; anything else is tampering
/// (an extracted bundle holds nothing but folders and regular files).
fn walk(digest: &str, root: &Path, rel: &Path, dirs: &mut Vec<PathBuf>, files: &mut Vec<PathBuf>) -> Result<(), Error> {
    let dir = root.join(rel);
    dirs.push(rel.to_path_buf());
    let mut entries: Vec<_> =
        fs::read_dir(&dir).map_err(io_error(&dir))?.collect::<Result<_, _>>().map_err(io_error(&dir))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let child = rel.join(entry.file_name());
        let kind = entry.file_type().map_err(io_error(&entry.path()))?;
        if kind.is_dir() {
            walk(digest, root, &child, dirs, files)?;
        } else if kind.is_file() {
            files.push(child);
        } else {
            return Err(tampered(digest, format!("`{}` is not a regular file", child.display())));
        }
    }
    Ok(())
}

/// Copies the snapshot's folders and files from `cached` to `dest`, checking every source
/// before and after it is read.
fn copy(digest: &str, snapshot: &Snapshot, cached: &Path, dest: &Path) -> Result<(), Error> {
    for (rel, _) in &snapshot.dirs {
        let path = dest.join(rel);
        // `dest` itself must not exist: a leftover would mix with the bundle.
        fs::DirBuilder::new().mode(0o755).create(&path).map_err(io_error(&path))?;
    }
    for (rel, stamp) in &snapshot.files {
        let from = cached.join(rel);
        let to = dest.join(rel);
        // No following a symlink, no blocking on a FIFO put in a file's place: either shows up
        // as a changed stamp (or a failed open) instead of hanging or reading elsewhere.
        let mut src = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&from)
            .map_err(|e| tampered(digest, format!("{}: {e}", rel.display())))?;
        let check = |src: &fs::File| -> Result<(), Error> {
            let now = src.metadata().map_err(io_error(&from))?;
            if Stamp::of(&now) == *stamp {
                Ok(())
            } else {
                Err(tampered(digest, format!("`{}` changed", rel.display())))
            }
        };
        check(&src)?;
        let mode = if stamp.mode & 0o111 != 0 { 0o755 } else { 0o644 };
        let mut out =
            fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&to).map_err(io_error(&to))?;
        let copied = io::copy(&mut src, &mut out).map_err(io_error(&to))?;
        // A write during the copy changes the ctime: what was copied is what was verified.
        check(&src)?;
        if copied != stamp.size {
            return Err(tampered(digest, format!("`{}` changed size", rel.display())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(files: &[(&str, &str, bool)]) -> (tempfile::TempDir, PathBuf, String) {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        for (path, text, exec) in files {
            let p = src.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, text).unwrap();
            if *exec {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let bundle = Bundle::build(&src, BundleLimits::default()).unwrap();
        let digest = bundle.digest().to_string();
        let mut bytes = Vec::new();
        bundle.write_to(&mut bytes).unwrap();
        let cached = root.path().join(&digest);
        weir_data::bundle::extract(&bytes[..], &digest, &cached, BundleLimits::default()).unwrap();
        (root, cached, digest)
    }

    const FILES: &[(&str, &str, bool)] = &[
        ("pipeline.yaml", "name: x\n", false),
        ("steps/a.sh", "echo a\n", true),
        ("steps/lib/u.py", "X = 1\n", false),
    ];

    #[test]
    fn copies_are_private_and_the_cache_read_only() {
        let (root, cached, digest) = bundle(FILES);
        let c = Checkouts::new();
        let one = root.path().join("one");
        c.checkout(&digest, &cached, &one).unwrap();
        assert_eq!(fs::read_to_string(one.join("steps/a.sh")).unwrap(), "echo a\n");
        assert_eq!(fs::metadata(one.join("steps/a.sh")).unwrap().mode() & 0o777, 0o755);
        assert_eq!(fs::metadata(one.join("pipeline.yaml")).unwrap().mode() & 0o777, 0o644);
        assert_eq!(fs::metadata(cached.join("steps/a.sh")).unwrap().mode() & 0o777, 0o555);
        assert_eq!(fs::metadata(cached.join("steps")).unwrap().mode() & 0o777, 0o555);
        // An untouched copy is reused as it is (same inodes).
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        let before = ino(&one.join("steps/a.sh"));
        c.checkout(&digest, &cached, &one).unwrap();
        assert_eq!(ino(&one.join("steps/a.sh")), before, "reused");
        // The step edits its copy; the next checkout into the same folder sees the original,
        // and so does one into another folder.
        fs::write(one.join("steps/a.sh"), "echo poisoned\n").unwrap();
        let two = root.path().join("two");
        c.checkout(&digest, &cached, &two).unwrap();
        assert_eq!(fs::read_to_string(two.join("steps/a.sh")).unwrap(), "echo a\n");
        c.checkout(&digest, &cached, &one).unwrap();
        assert_eq!(fs::read_to_string(one.join("steps/a.sh")).unwrap(), "echo a\n");
        // Any change at all: an added file (even read-only folders), a chmod, a hard link.
        let changes: [&dyn Fn(&Path); 3] = [
            &|d| {
                fs::write(d.join("steps/lib/extra.py"), "").unwrap();
                fs::set_permissions(d.join("steps/lib"), fs::Permissions::from_mode(0o555)).unwrap();
            },
            &|d| fs::set_permissions(d.join("pipeline.yaml"), fs::Permissions::from_mode(0o600)).unwrap(),
            &|d| fs::hard_link(d.join("pipeline.yaml"), d.join("../link")).unwrap(),
        ];
        for change in changes {
            change(&one);
            c.checkout(&digest, &cached, &one).unwrap();
            assert!(!one.join("steps/lib/extra.py").exists());
            assert_eq!(fs::metadata(one.join("pipeline.yaml")).unwrap().mode() & 0o777, 0o644);
            assert_eq!(fs::metadata(one.join("pipeline.yaml")).unwrap().nlink(), 1, "a fresh copy");
        }
        c.discard(&one).unwrap();
        assert!(!one.exists());
    }

    #[test]
    fn tampering_is_detected() {
        let check = |name: &str, tamper: &dyn Fn(&Path)| {
            let (root, cached, digest) = bundle(FILES);
            let c = Checkouts::new();
            c.checkout(&digest, &cached, &root.path().join("first")).unwrap();
            // As a step of the worker's uid could: make it writable again and write.
            let dirs = ["", "steps", "steps/lib"];
            for d in dirs {
                fs::set_permissions(cached.join(d), fs::Permissions::from_mode(0o755)).unwrap();
            }
            tamper(&cached);
            let err = c.checkout(&digest, &cached, &root.path().join("second")).unwrap_err();
            assert!(matches!(err, Error::Tampered { .. }), "{name}: {err}");
            // A fresh worker process re-verifies the content and refuses it too.
            let err = Checkouts::new().verify(&digest, &cached).unwrap_err();
            assert!(matches!(err, Error::Tampered { .. }), "{name} (fresh): {err}");
        };
        let rewrite = |p: &Path| {
            fs::set_permissions(p.join("steps/a.sh"), fs::Permissions::from_mode(0o755)).unwrap();
            fs::write(p.join("steps/a.sh"), "echo evil\n").unwrap();
        };
        check("rewritten", &rewrite);
        check("replaced", &|p: &Path| {
            fs::remove_file(p.join("steps/a.sh")).unwrap();
            fs::write(p.join("steps/a.sh"), "echo a\n").unwrap();
        });
        check("added", &|p: &Path| fs::write(p.join("steps/lib/evil.py"), "import os\n").unwrap());
        check("a fifo", &|p: &Path| {
            fs::remove_file(p.join("steps/a.sh")).unwrap();
            let path = std::ffi::CString::new(p.join("steps/a.sh").into_os_string().into_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
        });
        check("a symlink", &|p: &Path| {
            fs::remove_file(p.join("steps/a.sh")).unwrap();
            std::os::unix::fs::symlink("/etc/hostname", p.join("steps/a.sh")).unwrap();
        });
        check("removed", &|p: &Path| fs::remove_file(p.join("steps/lib/u.py")).unwrap());
        // What a power loss can leave of an unsynced extraction (the cache does not fsync):
        // a file whose data never reached the disk.
        check("emptied", &|p: &Path| {
            fs::set_permissions(p.join("steps/a.sh"), fs::Permissions::from_mode(0o755)).unwrap();
            fs::File::create(p.join("steps/a.sh")).unwrap();
        });
    }

    #[test]
    fn reuse_takes_only_an_untouched_copy_of_a_small_verified_bundle() {
        let (root, cached, digest) = bundle(FILES);
        let c = Checkouts::new();
        let one = root.path().join("one");
        // Nothing verified, nothing kept: the caller must check out.
        assert!(!c.reuse(&digest, &one, 64));
        c.checkout(&digest, &cached, &one).unwrap();
        assert!(c.reuse(&digest, &one, 64));
        // Five entries (two folders, three files): more than `max` is not small.
        assert!(!c.reuse(&digest, &one, 4));
        // No copy kept in another folder, nor one of another digest.
        assert!(!c.reuse(&digest, &root.path().join("two"), 64));
        let (_other_root, other, other_digest) = bundle(&FILES[..1]);
        c.checkout(&other_digest, &other, &root.path().join("two")).unwrap();
        assert!(!c.reuse(&digest, &root.path().join("two"), 64));
        // A copy the step changed needs a fresh one: not reused, and `checkout` makes it.
        let changes: [&dyn Fn(&Path); 3] = [
            &|d| fs::write(d.join("steps/a.sh"), "echo poisoned\n").unwrap(),
            &|d| fs::write(d.join("steps/new.sh"), "x").unwrap(),
            &|d| fs::remove_file(d.join("pipeline.yaml")).unwrap(),
        ];
        for change in changes {
            change(&one);
            assert!(!c.reuse(&digest, &one, 64));
            c.checkout(&digest, &cached, &one).unwrap();
            assert_eq!(fs::read_to_string(one.join("steps/a.sh")).unwrap(), "echo a\n");
            assert!(!one.join("steps/new.sh").exists());
            assert!(c.reuse(&digest, &one, 64));
        }
        // A changed cache does not reach an untouched copy; a fresh copy refuses it, as
        // `checkout` always did.
        fs::set_permissions(cached.join("steps"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(cached.join("steps/evil.sh"), "x").unwrap();
        assert!(c.reuse(&digest, &one, 64));
        let err = c.checkout(&digest, &cached, &root.path().join("three")).unwrap_err();
        assert!(matches!(err, Error::Tampered { .. }), "{err}");
    }

    #[test]
    fn an_added_ignored_file_is_tampering() {
        let (_root, cached, digest) = bundle(FILES);
        fs::set_permissions(&cached, fs::Permissions::from_mode(0o755)).unwrap();
        // `.git` is left out of bundles by default: the digest alone would not see it.
        fs::create_dir(cached.join(".git")).unwrap();
        fs::write(cached.join(".git/x"), "y").unwrap();
        let err = Checkouts::new().verify(&digest, &cached).unwrap_err();
        assert!(err.to_string().contains("was added"), "{err}");
    }
}
