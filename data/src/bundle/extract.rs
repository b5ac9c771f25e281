//! Extracting an archive, trusting nothing in it. [`extract`] reads the archive once as a
//! stream, hashing every byte, and writes the files into a fresh staging folder beside `dest`
//! (`.<name>.partial-<pid>-<n>`). Only when the whole archive has been read, every entry checked,
//! the digest matched and every file and folder fsynced is the staging folder renamed to
//! `dest`; on any failure it is removed, so `dest` either appears complete or not at all.
//!
//! Refused, before the bytes concerned reach the disk: a header or entry line longer than 32 KiB,
//! unknown fields, a header declaring more files or bytes than the [`BundleLimits`], entries
//! whose sizes add up to more than the header declared, paths that are absolute, empty, longer
//! than 4096 bytes, or have empty, `.` or `..` segments, paths out of order or repeated, and more
//! folders than `max_files + 256`. Refused after: a file whose contents do not match its
//! digest, truncated input, bytes after the last entry, and a wrong archive digest. Files are
//! created with `O_EXCL` in a folder no one else writes and no link is ever created, so no
//! entry can reach outside the staging folder. It must never follow anything the archive names.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BundleLimits, EntryLine, Error, FORMAT, Header, MAX_LINE, VERSION, is_digest};

const CHUNK: usize = 64 * 1024;
/// Folders an archive may create beyond `max_files`.
const EXTRA_DIRS: u64 = 256;

/// Reads the archive from `reader`, checks it against `expected_digest` and `limits`, and
/// materialises it as the new folder `dest` (which must not exist; its parent must).
pub fn extract(reader: impl Read, expected_digest: &str, dest: &Path, limits: BundleLimits) -> Result<(), Error> {
    extract_with(reader, expected_digest, dest, limits, Durability::Synced)
}

/// Whether [`extract_with`] fsyncs what it wrote before and after the rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every file and folder, then the parent: after a power loss `dest` is complete or absent.
    Synced,
    /// None: after a process crash `dest` is still complete or absent (the rename comes last and
    /// the page cache survives), but after a power loss it may name files the disk never got.
    /// Only for a cache whose reader re-checks what it finds (the worker's bundle cache re-hashes
    /// a bundle at each process's first use of it).
    Unsynced,
}

/// [`extract`], choosing whether the result is fsynced.
pub fn extract_with(
    reader: impl Read,
    expected_digest: &str,
    dest: &Path,
    limits: BundleLimits,
    durability: Durability,
) -> Result<(), Error> {
    let synced = durability == Durability::Synced;
    if !is_digest(expected_digest) {
        return Err(Error::BadDigest(expected_digest.to_string()));
    }
    if dest.symlink_metadata().is_ok() {
        return Err(Error::Exists { path: dest.to_path_buf() });
    }
    let staging = Staging::create(dest)?;
    let mut input = BufReader::with_capacity(CHUNK, HashReader { inner: reader, hasher: blake3::Hasher::new() });
    let dirs = unpack(&mut input, &staging.path, limits, synced)?;
    let mut probe = [0u8; 1];
    if input.read(&mut probe).map_err(Error::Stream)? != 0 {
        return Err(Error::Malformed("data after the last entry".into()));
    }
    let actual = input.get_ref().hasher.finalize().to_hex().to_string();
    if actual != expected_digest {
        return Err(Error::DigestMismatch { expected: expected_digest.to_string(), actual });
    }
    // Deepest first, so each folder's entries are durable before the folder above names it.
    let mut dirs: Vec<PathBuf> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    if synced {
        for dir in dirs.iter().chain([&staging.path]) {
            sync_dir(dir)?;
        }
    }
    fs::rename(&staging.path, dest).map_err(|e| match dest.symlink_metadata() {
        Ok(_) => Error::Exists { path: dest.to_path_buf() },
        Err(_) => Error::Io { path: dest.to_path_buf(), source: e },
    })?;
    staging.keep();
    if synced { sync_dir(parent_of(dest)) } else { Ok(()) }
}

/// Writes every entry under `root`; returns the folders it created.
fn unpack(
    input: &mut impl BufRead,
    root: &Path,
    limits: BundleLimits,
    synced: bool,
) -> Result<BTreeSet<PathBuf>, Error> {
    let header: Header = read_line(input)?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(Error::Malformed(format!("unknown format {} version {}", header.format, header.version)));
    }
    if header.files > limits.max_files {
        return Err(Error::OverLimit { what: "files", declared: header.files, limit: limits.max_files });
    }
    if header.bytes > limits.max_bytes {
        return Err(Error::OverLimit { what: "bytes", declared: header.bytes, limit: limits.max_bytes });
    }
    let max_dirs = limits.max_files.saturating_add(EXTRA_DIRS);
    let mut dirs = BTreeSet::new();
    let mut previous: Option<String> = None;
    let mut total = 0u64;
    let mut buf = vec![0; CHUNK];
    for _ in 0..header.files {
        let entry: EntryLine = read_line(input)?;
        check_path(&entry.path)?;
        if let Some(prev) = &previous {
            if entry.path == *prev {
                return Err(Error::UnsafePath { path: entry.path, reason: "duplicate path" });
            }
            if entry.path < *prev {
                return Err(Error::Malformed(format!("entry `{}` out of order", entry.path)));
            }
        }
        if !is_digest(&entry.blake3) {
            return Err(Error::Malformed(format!("entry `{}` has no valid digest", entry.path)));
        }
        total = total.saturating_add(entry.size);
        if total > header.bytes {
            return Err(Error::Malformed(format!("entries exceed the declared {} bytes", header.bytes)));
        }
        let target = root.join(&entry.path);
        let mut parent = target.parent().unwrap_or(root);
        let mut fresh = Vec::new();
        while parent != root && !dirs.contains(parent) {
            fresh.push(parent.to_path_buf());
            parent = parent.parent().unwrap_or(root);
        }
        for dir in fresh.into_iter().rev() {
            if dirs.len() as u64 >= max_dirs {
                return Err(Error::OverLimit {
                    what: "folders",
                    declared: max_dirs.saturating_add(1),
                    limit: max_dirs,
                });
            }
            fs::create_dir(&dir).map_err(|e| match e.kind() {
                // Only an earlier file entry can be in the way: the staging folder is ours.
                io::ErrorKind::AlreadyExists => {
                    Error::UnsafePath { path: entry.path.clone(), reason: "a file and a folder share a name" }
                }
                _ => Error::Io { path: dir.clone(), source: e },
            })?;
            dirs.insert(dir);
        }
        write_file(input, &target, &entry, &mut buf, synced)?;
        previous = Some(entry.path);
    }
    if total != header.bytes {
        return Err(Error::Malformed(format!("entries hold {total} bytes, the header declared {}", header.bytes)));
    }
    Ok(dirs)
}

fn write_file(
    input: &mut impl Read,
    target: &Path,
    entry: &EntryLine,
    buf: &mut [u8],
    synced: bool,
) -> Result<(), Error> {
    let mut file =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(target).map_err(Error::io(target))?;
    let mut hasher = blake3::Hasher::new();
    let mut left = entry.size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match input.read(&mut buf[..want]) {
            Ok(0) => return Err(Error::Truncated),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Stream(e)),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(Error::io(target))?;
        left -= n as u64;
    }
    if hasher.finalize().to_hex().as_str() != entry.blake3 {
        return Err(Error::Malformed(format!("contents of `{}` do not match their digest", entry.path)));
    }
    let mode = if entry.exec { 0o755 } else { 0o644 };
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(Error::io(target))?;
    if synced { file.sync_all().map_err(Error::io(target)) } else { Ok(()) }
}

/// Reads one newline-terminated JSON line of at most [`MAX_LINE`] bytes.
fn read_line<T: serde::de::DeserializeOwned>(input: &mut impl BufRead) -> Result<T, Error> {
    let mut line = Vec::new();
    input.take(MAX_LINE).read_until(b'\n', &mut line).map_err(Error::Stream)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() as u64 == MAX_LINE {
            Error::Malformed(format!("line longer than {MAX_LINE} bytes"))
        } else {
            Error::Truncated
        });
    }
    serde_json::from_slice(&line).map_err(|e| Error::Malformed(e.to_string()))
}

fn check_path(path: &str) -> Result<(), Error> {
    crate::relpath::check(path).map_err(|why| Error::UnsafePath { path: path.to_string(), reason: why.describe() })
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))
}

/// The staging folder beside the destination, removed on drop unless kept.
struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Staging {
    fn create(dest: &Path) -> Result<Staging, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = dest.file_name().ok_or_else(|| Error::Io {
            path: dest.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "destination has no file name"),
        })?;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut staged = std::ffi::OsString::from(".");
            staged.push(name);
            staged.push(format!(".partial-{}-{n}", std::process::id()));
            let path = parent_of(dest).join(staged);
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Staging { path, keep: false }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::Io { path, source: e }),
            }
        }
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Hashes every byte read through it.
struct HashReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Bundle;
    use super::super::build::tests::{PIPELINE, populate};
    use super::*;

    /// Every file under `dir`: (relative path, contents, executable), sorted.
    fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, bool)> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>, bool)>) {
            for e in fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_string();
                    let exec = fs::metadata(&path).unwrap().permissions().mode() & 0o111 != 0;
                    out.push((rel, fs::read(&path).unwrap(), exec));
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn round_trip() {
        let src = tempfile::tempdir().unwrap();
        populate(src.path(), PIPELINE);
        populate(src.path(), &[("big.bin", &"0123456789".repeat(20_000), true), ("a/b/c/d/e.txt", "", false)]);
        let bundle = Bundle::build(src.path(), BundleLimits::default()).unwrap();
        let mut archive = Vec::new();
        bundle.write_to(&mut archive).unwrap();

        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("out");
        extract(&archive[..], bundle.digest(), &dest, BundleLimits::default()).unwrap();
        assert_eq!(snapshot(&dest), snapshot(src.path()));
        assert_eq!(listing(work.path()), ["out"]);
        let again = Bundle::build(&dest, BundleLimits::default()).unwrap();
        assert_eq!(again.digest(), bundle.digest());

        let err = extract(&archive[..], bundle.digest(), &dest, BundleLimits::default()).unwrap_err();
        assert!(matches!(err, Error::Exists { .. }), "{err}");
    }

    /// Unsynced extraction (the worker's cache) checks exactly what synced extraction checks:
    /// the same folder from a good archive, nothing at all from one with a wrong digest or a
    /// file whose contents do not match.
    #[test]
    fn unsynced_extraction_checks_the_same() {
        let src = tempfile::tempdir().unwrap();
        populate(src.path(), PIPELINE);
        let bundle = Bundle::build(src.path(), BundleLimits::default()).unwrap();
        let mut archive = Vec::new();
        bundle.write_to(&mut archive).unwrap();
        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("out");
        extract_with(&archive[..], bundle.digest(), &dest, BundleLimits::default(), Durability::Unsynced).unwrap();
        assert_eq!(snapshot(&dest), snapshot(src.path()));

        let other = work.path().join("other");
        let wrong = digest(b"something else");
        let err =
            extract_with(&archive[..], &wrong, &other, BundleLimits::default(), Durability::Unsynced).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        let bad = craft(&[("a.txt", b"hello")]);
        let mut bad = String::from_utf8(bad).unwrap();
        bad = bad.replacen("hello", "hellO", 1);
        let err = extract_with(
            bad.as_bytes(),
            &digest(bad.as_bytes()),
            &other,
            BundleLimits::default(),
            Durability::Unsynced,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{err}");
        assert_eq!(listing(work.path()), ["out"], "a refused archive leaves nothing behind");
    }

    /// A well-formed archive of `entries`, in the order given.
    fn craft(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let bytes: usize = entries.iter().map(|e| e.1.len()).sum();
        let mut out =
            format!("{{\"format\":\"weir-bundle\",\"version\":1,\"files\":{},\"bytes\":{bytes}}}\n", entries.len());
        let mut out = std::mem::take(&mut out).into_bytes();
        for (path, data) in entries {
            let line = EntryLine { path: path.to_string(), size: data.len() as u64, exec: false, blake3: digest(data) };
            out.extend(serde_json::to_vec(&line).unwrap());
            out.push(b'\n');
            out.extend(*data);
        }
        out
    }

    fn digest(data: &[u8]) -> String {
        blake3::hash(data).to_hex().to_string()
    }

    fn header(files: u64, bytes: u64) -> String {
        format!("{{\"format\":\"weir-bundle\",\"version\":1,\"files\":{files},\"bytes\":{bytes}}}\n")
    }

    #[test]
    fn hostile_archives_leave_nothing_behind() {
        let ok = craft(&[("a", b"hello")]);
        let mut truncated = ok.clone();
        truncated.truncate(ok.len() - 2);
        let mut trailing = ok.clone();
        trailing.extend(b"x");
        let liar = format!(
            "{}{{\"path\":\"a\",\"size\":5,\"exec\":false,\"blake3\":\"{}\"}}\nhellX",
            header(1, 5),
            digest(b"hello")
        );
        let oversum =
            format!("{}{{\"path\":\"a\",\"size\":9,\"exec\":false,\"blake3\":\"{}\"}}\n", header(1, 5), digest(b"x"));
        let extra = format!(
            "{}{{\"path\":\"a\",\"size\":0,\"exec\":false,\"blake3\":\"{}\",\"mode\":511}}\n",
            header(1, 0),
            digest(b"")
        );
        let long = header(1, 0) + &"x".repeat(MAX_LINE as usize + 10);
        let deep = craft(&[(&vec!["d"; 300].join("/"), b"x")]);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("parent", craft(&[("../evil", b"x")]), "`..` would leave the folder"),
            ("nested parent", craft(&[("a/../../evil", b"x")]), "`..` would leave the folder"),
            ("absolute", craft(&[("/etc/x", b"x")]), "absolute paths are not allowed"),
            ("empty segment", craft(&[("a//b", b"x")]), "empty or `.` path segments"),
            ("trailing slash", craft(&[("a/", b"x")]), "empty or `.` path segments"),
            ("dot", craft(&[("./a", b"x")]), "empty or `.` path segments"),
            ("empty", craft(&[("", b"x")]), "a name cannot be empty"),
            ("duplicate", craft(&[("a", b"x"), ("a", b"y")]), "duplicate path"),
            ("out of order", craft(&[("b", b"x"), ("a", b"y")]), "out of order"),
            ("file then folder", craft(&[("a", b"x"), ("a/b", b"y")]), "share a name"),
            ("truncated data", truncated, "truncated"),
            (
                "missing entry",
                (header(2, 5).into_bytes().into_iter().chain(ok[header(1, 5).len()..].iter().copied())).collect(),
                "truncated",
            ),
            ("trailing data", trailing, "data after the last entry"),
            ("content digest", liar.into_bytes(), "do not match their digest"),
            ("sizes over header", oversum.into_bytes(), "exceed the declared 5 bytes"),
            ("too many bytes", header(1, 1 << 40).into_bytes(), "1099511627776 bytes, over the limit"),
            ("too many files", header(1 << 20, 0).into_bytes(), "1048576 files"),
            ("too many folders", deep, "folders"),
            ("unknown field", extra.into_bytes(), "unknown field"),
            ("endless line", long.into_bytes(), "line longer than"),
            ("not a bundle", b"PK\x03\x04 a zip file\n".to_vec(), "malformed"),
            ("other format", header(0, 0).replace("weir-bundle", "zip").into_bytes(), "unknown format"),
            ("empty input", Vec::new(), "truncated"),
        ];
        let limits = BundleLimits { max_bytes: 1 << 20, max_files: 10 };
        for (name, archive, expect) in cases {
            let work = tempfile::tempdir().unwrap();
            let dest = work.path().join("out");
            let err = extract(&archive[..], &digest(&archive), &dest, limits).unwrap_err().to_string();
            assert!(err.contains(expect), "{name}: {err}");
            assert!(listing(work.path()).is_empty(), "{name}: left {:?}", listing(work.path()));
        }
    }

    #[test]
    fn wrong_digest_leaves_nothing() {
        let work = tempfile::tempdir().unwrap();
        let archive = craft(&[("a", b"hello"), ("b/c", b"x")]);
        let dest = work.path().join("out");
        let wrong = digest(b"something else");
        let err = extract(&archive[..], &wrong, &dest, BundleLimits::default()).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(listing(work.path()).is_empty());
        let err = extract(&archive[..], "../../etc", &dest, BundleLimits::default()).unwrap_err();
        assert!(matches!(err, Error::BadDigest(_)), "{err}");
        extract(&archive[..], &digest(&archive), &dest, BundleLimits::default()).unwrap();
        assert_eq!(snapshot(&dest), [("a".into(), b"hello".to_vec(), false), ("b/c".into(), b"x".to_vec(), false)]);
    }

    #[test]
    fn a_failing_reader_leaves_nothing() {
        struct Broken<'a>(&'a [u8]);
        impl Read for Broken<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("connection reset"));
                }
                let n = self.0.read(buf)?;
                Ok(n)
            }
        }
        let archive = craft(&[("a", b"hello"), ("b", &[7; 100_000])]);
        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("out");
        let err = extract(Broken(&archive[..archive.len() - 10]), &digest(&archive), &dest, BundleLimits::default());
        assert!(err.unwrap_err().to_string().contains("connection reset"));
        assert!(listing(work.path()).is_empty());
    }
}
