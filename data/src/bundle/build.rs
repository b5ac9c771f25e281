//! Building a bundle from a pipeline folder and streaming its archive. [`Bundle::build`] walks
//! the folder in sorted order, applies `.weirignore` and the limits, hashes every file, and
//! computes the bundle's digest by writing the archive into a hasher; [`Bundle::write_to`]
//! then streams the same bytes to any `io::Write` (a file, a gRPC upload) in 64 KiB chunks,
//! reading each file again from disk, so no more than one chunk of content is ever in memory.
//! The folder must stay unchanged between the two: a file whose size or digest differs is a
//! [`Error::Changed`], and a receiver's digest check refuses what was already sent.
//!
//! Symlinks: one that resolves to a regular file inside the folder is stored as a copy of that
//! file (archives hold no links, so extraction never has to follow one); one that points
//! outside the folder, dangles, or names a directory is refused. Sockets, fifos and devices are
//! refused. All of these can be listed in `.weirignore` instead. This module never writes to
//! the folder it bundles.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::ignore::Ignore;
use super::{BundleLimits, Error, FORMAT, Header, MAX_PATH, VERSION};

const CHUNK: usize = 64 * 1024;
/// How many files or folders an over-limit error names.
const SHOWN: usize = 5;

/// One file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the bundle root, `/`-separated.
    pub path: String,
    pub size: u64,
    pub executable: bool,
    /// BLAKE3 of the contents, hex.
    pub digest: String,
}

/// A pipeline folder ready to stream: its file list and the digest of its archive.
#[derive(Debug)]
pub struct Bundle {
    digest: String,
    bytes: u64,
    archive_len: u64,
    entries: Vec<Entry>,
    /// Where each entry's bytes are read from, index for index.
    sources: Vec<PathBuf>,
}

struct Found {
    path: String,
    source: PathBuf,
    size: u64,
    executable: bool,
}

impl Bundle {
    /// Walks `dir` and computes the bundle it makes; see the module docs for what is refused.
    pub fn build(dir: &Path, limits: BundleLimits) -> Result<Bundle, Error> {
        Bundle::build_skipping(dir, limits, None)
    }

    /// [`Bundle::build`], leaving out the folder `skip` when it lies inside `dir` (the data
    /// folder of `weir run --data-dir` placed in the pipeline folder: the engine writes there
    /// while the folder is bundled).
    pub fn build_skipping(dir: &Path, limits: BundleLimits, skip: Option<&Path>) -> Result<Bundle, Error> {
        let root = dir.canonicalize().map_err(Error::io(dir))?;
        let ignore = Ignore::load(&root)?;
        let skip = skip.and_then(|s| s.canonicalize().ok());
        let mut found = Vec::new();
        walk(&root, &root, "", &ignore, limits, skip.as_deref(), &mut found)?;
        found.sort_by(|a, b| a.path.cmp(&b.path));
        check_bytes(found.iter().map(|f| (&f.path, f.size)), limits)?;

        let mut entries = Vec::with_capacity(found.len());
        let mut sources = Vec::with_capacity(found.len());
        for f in found {
            let (size, digest) = hash_file(&f.source, f.size)?;
            entries.push(Entry { path: f.path, size, executable: f.executable, digest });
            sources.push(f.source);
        }
        let bytes = entries.iter().map(|e| e.size).sum();
        let mut bundle = Bundle { digest: String::new(), bytes, archive_len: 0, entries, sources };
        let mut hasher = HashWriter(blake3::Hasher::new());
        bundle.archive_len = bundle.write_to(&mut hasher)?;
        bundle.digest = hasher.0.finalize().to_hex().to_string();
        Ok(bundle)
    }

    /// The content address: BLAKE3 of the archive bytes, 64 lowercase hex digits.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Total bytes of file contents.
    pub fn size(&self) -> u64 {
        self.bytes
    }

    /// Length of the archive [`Bundle::write_to`] produces.
    pub fn archive_len(&self) -> u64 {
        self.archive_len
    }

    /// The files, sorted by path.
    pub fn files(&self) -> &[Entry] {
        &self.entries
    }

    /// Writes the archive to `out` in chunks and returns its length. Fails with
    /// [`Error::Changed`] if a file no longer matches what [`Bundle::build`] saw.
    pub fn write_to<W: Write + ?Sized>(&self, out: &mut W) -> Result<u64, Error> {
        let header =
            Header { format: FORMAT.into(), version: VERSION, files: self.entries.len() as u64, bytes: self.bytes };
        let mut written = write_line(out, &header)?;
        let mut buf = vec![0; CHUNK];
        for (entry, source) in self.entries.iter().zip(&self.sources) {
            written += write_line(out, &super::EntryLine::from(entry))?;
            let mut file = fs::File::open(source).map_err(Error::io(source))?;
            let mut hasher = blake3::Hasher::new();
            let mut left = entry.size;
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = read_some(&mut file, &mut buf[..want], source)?;
                if n == 0 {
                    return Err(Error::Changed { path: source.clone() });
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(Error::Stream)?;
                left -= n as u64;
            }
            if read_some(&mut file, &mut buf[..1], source)? != 0 || hasher.finalize().to_hex().as_str() != entry.digest
            {
                return Err(Error::Changed { path: source.clone() });
            }
            written += entry.size;
        }
        out.flush().map_err(Error::Stream)?;
        Ok(written)
    }
}

impl From<&Entry> for super::EntryLine {
    fn from(e: &Entry) -> Self {
        super::EntryLine { path: e.path.clone(), size: e.size, exec: e.executable, blake3: e.digest.clone() }
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    ignore: &Ignore,
    limits: BundleLimits,
    skip: Option<&Path>,
    found: &mut Vec<Found>,
) -> Result<(), Error> {
    let mut children = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        children.push((entry.file_name(), entry.path()));
    }
    children.sort();
    for (name, path) in children {
        if skip == Some(path.as_path()) {
            continue;
        }
        let lossy = name.to_string_lossy();
        let rel = if prefix.is_empty() { lossy.into_owned() } else { format!("{prefix}/{lossy}") };
        let meta = fs::symlink_metadata(&path).map_err(Error::io(&path))?;
        let kind = meta.file_type();
        // A symlink to a directory is one for `dir/` patterns, so they can leave it out.
        let target_meta = if kind.is_symlink() { fs::metadata(&path).ok() } else { None };
        if ignore.is_ignored(&rel, kind.is_dir() || target_meta.as_ref().is_some_and(|m| m.is_dir())) {
            continue;
        }
        if name.to_str().is_none() {
            return Err(Error::NonUtf8 { path });
        }
        let (source, meta) = if kind.is_dir() {
            walk(root, &path, &rel, ignore, limits, skip, found)?;
            continue;
        } else if kind.is_symlink() {
            let Ok(target) = fs::canonicalize(&path) else {
                return Err(Error::Unsupported { path, kind: "a dangling symlink" });
            };
            if !target.starts_with(root) {
                return Err(Error::SymlinkOutside { path, target });
            }
            match target_meta {
                Some(m) if m.is_file() => (target, m),
                Some(m) if m.is_dir() => return Err(Error::Unsupported { path, kind: "a symlink to a directory" }),
                _ => return Err(Error::Unsupported { path, kind: "a symlink to a special file" }),
            }
        } else if kind.is_file() {
            (path, meta)
        } else {
            return Err(Error::Unsupported { path, kind: "a special file (socket, fifo or device)" });
        };
        if rel.len() > MAX_PATH {
            return Err(Error::Unsupported { path: source, kind: "a path longer than 4096 bytes" });
        }
        let executable = meta.permissions().mode() & 0o111 != 0;
        found.push(Found { path: rel, source, size: meta.len(), executable });
        if found.len() as u64 > limits.max_files {
            return Err(Error::TooManyFiles { limit: limits.max_files, busiest: busiest(found) });
        }
    }
    Ok(())
}

fn check_bytes<'a>(files: impl Iterator<Item = (&'a String, u64)> + Clone, limits: BundleLimits) -> Result<(), Error> {
    let reached: u64 = files.clone().map(|(_, size)| size).sum();
    if reached <= limits.max_bytes {
        return Ok(());
    }
    let mut biggest: Vec<(String, u64)> = files.map(|(path, size)| (path.clone(), size)).collect();
    biggest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    biggest.truncate(SHOWN);
    Err(Error::TooLarge { limit: limits.max_bytes, reached, biggest })
}

/// The top-level folders (or `.` for the root) holding the most files so far.
fn busiest(found: &[Found]) -> Vec<(String, u64)> {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for f in found {
        let top = f.path.split_once('/').map_or(".", |(top, _)| top);
        *counts.entry(top.to_string()).or_default() += 1;
    }
    let mut list: Vec<(String, u64)> = counts.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(SHOWN);
    list
}

/// Size and digest of `path`, which the walk saw at `walked` bytes. A file that grew since is
/// [`Error::Changed`] once it passes that size: read no further, since a file written while
/// it is read (a log in the pipeline folder) may grow as fast as it is read, or faster.
fn hash_file(path: &Path, walked: u64) -> Result<(u64, String), Error> {
    let file = fs::File::open(path).map_err(Error::io(path))?;
    let mut hasher = blake3::Hasher::new();
    let size =
        io::copy(&mut file.take(walked.saturating_add(1)), &mut HashWriter(&mut hasher)).map_err(Error::io(path))?;
    if size > walked {
        return Err(Error::Changed { path: path.to_path_buf() });
    }
    Ok((size, hasher.finalize().to_hex().to_string()))
}

fn read_some(file: &mut fs::File, buf: &mut [u8], path: &Path) -> Result<usize, Error> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map_err(Error::io(path)),
        }
    }
}

fn write_line<W: Write + ?Sized, T: serde::Serialize>(out: &mut W, value: &T) -> Result<u64, Error> {
    let mut line = serde_json::to_vec(value).map_err(|e| Error::Stream(e.into()))?;
    line.push(b'\n');
    out.write_all(&line).map_err(Error::Stream)?;
    Ok(line.len() as u64)
}

/// An `io::Write` that only hashes.
struct HashWriter<H>(H);

impl<H: std::borrow::BorrowMut<blake3::Hasher>> Write for HashWriter<H> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;

    /// Creates `files` (`path`, contents, executable) under `dir`.
    pub fn populate(dir: &Path, files: &[(&str, &str, bool)]) {
        for &(path, contents, exec) in files {
            let path = dir.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, contents).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 })).unwrap();
        }
    }

    pub const PIPELINE: &[(&str, &str, bool)] = &[
        ("pipeline.yaml", "name: churn\n", false),
        ("steps/train.py", "print('train')\n", true),
        ("steps/lib/util.py", "X = 1\n", false),
        ("data/small.csv", "a,b\n1,2\n", false),
    ];

    #[test]
    fn a_file_that_grew_since_the_walk_is_read_no_further_than_its_walked_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.log");
        fs::write(&path, "0123456789").unwrap();
        assert!(matches!(hash_file(&path, 5), Err(Error::Changed { .. })));
        let (size, digest) = hash_file(&path, 10).unwrap();
        assert_eq!((size, digest), (10, blake3::hash(b"0123456789").to_hex().to_string()));
        // Shrunk since the walk: what is there now (the archive's own check catches a change
        // after this read).
        assert_eq!(hash_file(&path, 20).unwrap().0, 10);
    }

    fn build(dir: &Path) -> Result<Bundle, Error> {
        Bundle::build(dir, BundleLimits::default())
    }

    #[test]
    fn a_data_folder_inside_the_pipeline_folder_stays_out() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("pipeline.yaml"), "x").unwrap();
        fs::create_dir_all(dir.path().join("data/db")).unwrap();
        fs::write(dir.path().join("data/db/conf"), "y").unwrap();
        let limits = BundleLimits::default();
        let skipped = Bundle::build_skipping(dir.path(), limits, Some(&dir.path().join("data"))).unwrap();
        assert_eq!(paths(&skipped), ["pipeline.yaml"]);
        assert_eq!(paths(&Bundle::build(dir.path(), limits).unwrap()), ["data/db/conf", "pipeline.yaml"]);
    }

    fn paths(b: &Bundle) -> Vec<&str> {
        b.files().iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn same_content_same_digest() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        populate(a.path(), PIPELINE);
        populate(b.path(), &PIPELINE.iter().rev().copied().collect::<Vec<_>>());
        let old = fs::File::options().write(true).open(b.path().join("pipeline.yaml")).unwrap();
        old.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        let (ba, bb) = (build(a.path()).unwrap(), build(b.path()).unwrap());
        assert_eq!(ba.digest(), bb.digest());
        assert_eq!(ba.digest(), build(a.path()).unwrap().digest());
        assert_eq!(paths(&ba), ["data/small.csv", "pipeline.yaml", "steps/lib/util.py", "steps/train.py"]);
        assert!(ba.files()[3].executable && !ba.files()[2].executable);

        fs::write(b.path().join("data/small.csv"), "changed").unwrap();
        assert_ne!(ba.digest(), build(b.path()).unwrap().digest());
        fs::set_permissions(a.path().join("pipeline.yaml"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(ba.digest(), build(a.path()).unwrap().digest(), "the exec bit is content");
    }

    #[test]
    fn archive_bytes_hash_to_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path(), &[("a.txt", "hello", false)]);
        let bundle = build(dir.path()).unwrap();
        let mut out = Vec::new();
        assert_eq!(bundle.write_to(&mut out).unwrap(), out.len() as u64);
        assert_eq!(out.len() as u64, bundle.archive_len());
        assert_eq!(blake3::hash(&out).to_hex().as_str(), bundle.digest());
        let expected = format!(
            "{{\"format\":\"weir-bundle\",\"version\":1,\"files\":1,\"bytes\":5}}\n\
             {{\"path\":\"a.txt\",\"size\":5,\"exec\":false,\"blake3\":\"{}\"}}\nhello",
            blake3::hash(b"hello").to_hex()
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert!(super::super::is_digest(bundle.digest()));
    }

    #[test]
    fn weirignore_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path(), PIPELINE);
        populate(
            dir.path(),
            &[
                (".weirignore", "data/\n*.log\n!keep.log\n", false),
                ("run.log", "x", false),
                ("keep.log", "x", false),
                (".git/HEAD", "ref", false),
                ("steps/__pycache__/util.cpython-312.pyc", "x", false),
                ("target/debug/x", "x", false),
            ],
        );
        let bundle = build(dir.path()).unwrap();
        assert_eq!(paths(&bundle), [".weirignore", "keep.log", "pipeline.yaml", "steps/lib/util.py", "steps/train.py"]);
    }

    #[test]
    fn limits_name_the_limit_and_the_culprits() {
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path(), PIPELINE);
        populate(dir.path(), &[("data/big.bin", &"x".repeat(5000), false)]);
        let err = Bundle::build(dir.path(), BundleLimits { max_bytes: 4096, max_files: 100 }).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::TooLarge { limit: 4096, reached, .. } if reached > 5000), "{msg}");
        assert!(
            msg.contains("4096 B") && msg.contains("data/big.bin (5000 B)") && msg.contains(".weirignore"),
            "{msg}"
        );

        let err = Bundle::build(dir.path(), BundleLimits { max_bytes: 1 << 20, max_files: 3 }).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::TooManyFiles { limit: 3, .. }), "{msg}");
        assert!(msg.contains("more than 3 files") && msg.contains("data (2)") && msg.contains(".weirignore"), "{msg}");

        let exact = Bundle::build(dir.path(), BundleLimits { max_bytes: 1 << 20, max_files: 5 }).unwrap();
        assert_eq!(exact.files().len(), 5);
    }

    #[test]
    fn symlinks() {
        let outside = tempfile::tempdir().unwrap();
        populate(outside.path(), &[("secret", "s", false)]);
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path(), PIPELINE);

        symlink("steps/train.py", dir.path().join("train-link.py")).unwrap();
        let bundle = build(dir.path()).unwrap();
        let link = bundle.files().iter().find(|e| e.path == "train-link.py").unwrap();
        assert_eq!(link.digest, blake3::hash(b"print('train')\n").to_hex().as_str());
        assert!(link.executable);

        let cases: &[(&str, PathBuf, &str)] = &[
            ("out", outside.path().join("secret"), "outside"),
            ("out-rel", PathBuf::from("../../../../../../../../etc/passwd"), "outside"),
            ("dir-link", PathBuf::from("steps"), "directory"),
            ("dangling", PathBuf::from("nope"), "dangling"),
        ];
        for (name, target, expect) in cases {
            symlink(target, dir.path().join(name)).unwrap();
            let msg = build(dir.path()).unwrap_err().to_string();
            assert!(msg.contains(expect) && msg.contains(name), "{name}: {msg}");
            fs::write(dir.path().join(".weirignore"), name).unwrap();
            build(dir.path()).unwrap();
            fs::remove_file(dir.path().join(name)).unwrap();
        }
    }

    #[test]
    fn special_files_and_names_refused() {
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path(), PIPELINE);
        let bad = dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xff.txt"));
        fs::write(&bad, "x").unwrap();
        assert!(matches!(build(dir.path()), Err(Error::NonUtf8 { path }) if path == bad));
        fs::write(dir.path().join(".weirignore"), "bad*.txt").unwrap();
        build(dir.path()).unwrap();

        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("agent.sock")).unwrap();
        let err = build(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }) && err.to_string().contains("agent.sock"), "{err}");
        fs::write(dir.path().join(".weirignore"), "bad*.txt\n*.sock").unwrap();
        build(dir.path()).unwrap();
    }

    #[test]
    fn a_change_after_build_fails_the_write() {
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path(), PIPELINE);
        let bundle = build(dir.path()).unwrap();
        for contents in ["X = 2\n", "X = 10\n", "X\n"] {
            fs::write(dir.path().join("steps/lib/util.py"), contents).unwrap();
            let err = bundle.write_to(&mut io::sink()).unwrap_err();
            assert!(matches!(err, Error::Changed { .. }), "{contents:?}: {err}");
        }
    }

    #[test]
    fn empty_folder() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = build(dir.path()).unwrap();
        assert!(bundle.files().is_empty());
        assert_eq!(bundle.size(), 0);
    }
}
