//! [`collect_outputs`]: turns what a finished step left in `$WEIR_OUTPUTS` into blobs in the
//! [`Store`] and a [`Manifest`], following the step's declared outputs (`model.json` a file,
//! `data/` a folder collected recursively). Nothing outside the outputs folder can be reached:
//! declared names are checked, every path component is examined with `symlink_metadata` and a
//! symlink anywhere is refused (never followed), as are fifos, sockets and devices. It must not
//! modify the outputs folder.

use std::collections::BTreeMap;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::manifest::check_name;
use super::{Entry, Error, Manifest, Store};

/// Stores the declared outputs found under `outputs_dir` and returns their manifest. A
/// declared entry is a relative path; a trailing `/` declares a folder, collected with
/// everything below it. Collection stops at the first refusal (a missing output, an unsafe
/// name, a symlink, a special file); blobs already stored stay, harmlessly, in the store.
pub fn collect_outputs(store: &Store, outputs_dir: &Path, declared: &[String]) -> Result<Manifest, Error> {
    let meta = fs::symlink_metadata(outputs_dir).map_err(Error::io("read the outputs folder", outputs_dir))?;
    if meta.file_type().is_symlink() {
        return Err(Error::Symlink(outputs_dir.display().to_string()));
    }
    if !meta.is_dir() {
        let not_dir = io::Error::new(io::ErrorKind::NotADirectory, "not a folder");
        return Err(Error::io("read the outputs folder", outputs_dir)(not_dir));
    }
    let mut files = BTreeMap::new();
    for name in declared {
        let (rel, want_dir) = match name.strip_suffix('/') {
            Some(rel) => (rel, true),
            None => (name.as_str(), false),
        };
        check_name(rel).map_err(|e| match e {
            Error::UnsafeName { reason, .. } => Error::UnsafeName { name: name.clone(), reason },
            other => other,
        })?;
        let parts: Vec<&str> = rel.split('/').collect();
        let mut path = outputs_dir.to_path_buf();
        for (i, part) in parts.iter().enumerate() {
            path.push(part);
            let shown = || parts[..=i].join("/");
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::MissingOutput(name.clone())),
                Err(e) => return Err(Error::io("read", &path)(e)),
            };
            let kind = meta.file_type();
            if kind.is_symlink() {
                return Err(Error::Symlink(shown()));
            }
            if i + 1 < parts.len() {
                if !kind.is_dir() {
                    // `data` is a file, so `data/x` cannot have been written.
                    return Err(Error::MissingOutput(name.clone()));
                }
            } else if want_dir {
                match () {
                    _ if kind.is_dir() => collect_dir(store, &path, rel, &mut files)?,
                    _ if kind.is_file() => return Err(Error::NotADirectory(rel.to_string())),
                    _ => return Err(special(rel, &meta)),
                }
            } else {
                match () {
                    _ if kind.is_file() => collect_file(store, &path, rel, &meta, &mut files)?,
                    _ if kind.is_dir() => return Err(Error::DirectoryNotFile(rel.to_string())),
                    _ => return Err(special(rel, &meta)),
                }
            }
        }
    }
    Manifest::new(files.into_values().collect())
}

/// Everything below the folder `dir` (named `rel`), depth first with an explicit stack so a
/// deep tree cannot exhaust the thread's stack.
fn collect_dir(store: &Store, dir: &Path, rel: &str, files: &mut BTreeMap<String, Entry>) -> Result<(), Error> {
    let mut stack: Vec<(PathBuf, String)> = vec![(dir.to_path_buf(), rel.to_string())];
    while let Some((dir, rel)) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
            let entry = entry.map_err(Error::io("list", &dir))?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|raw| Error::NonUtf8Name(format!("{rel}/{}", raw.to_string_lossy())))?;
            let child = format!("{rel}/{name}");
            check_name(&child)?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(Error::io("read", &path))?;
            let kind = meta.file_type();
            match () {
                _ if kind.is_symlink() => return Err(Error::Symlink(child)),
                _ if kind.is_dir() => stack.push((path, child)),
                _ if kind.is_file() => collect_file(store, &path, &child, &meta, files)?,
                _ => return Err(special(&child, &meta)),
            }
        }
    }
    Ok(())
}

/// Stores one regular file. `checked` is what `symlink_metadata` said of `path`; the opened
/// file must be that same file, so a swap for a symlink between the check and the open is
/// caught rather than followed.
fn collect_file(
    store: &Store,
    path: &Path,
    rel: &str,
    checked: &Metadata,
    files: &mut BTreeMap<String, Entry>,
) -> Result<(), Error> {
    if files.contains_key(rel) {
        return Ok(()); // declared twice (`data/` and `data/a.csv`): one entry
    }
    let file = File::open(path).map_err(Error::io("open", path))?;
    let opened = file.metadata().map_err(Error::io("read", path))?;
    if !opened.is_file() || opened.dev() != checked.dev() || opened.ino() != checked.ino() {
        return Err(Error::Changed(rel.to_string()));
    }
    let (digest, size) = store.put_reader(file, path)?;
    let executable = checked.mode() & 0o100 != 0;
    files.insert(rel.to_string(), Entry { path: rel.to_string(), digest, size, executable });
    Ok(())
}

fn special(rel: &str, meta: &Metadata) -> Error {
    let kind = meta.file_type();
    let kind = match () {
        _ if kind.is_fifo() => "fifo",
        _ if kind.is_socket() => "socket",
        _ if kind.is_block_device() => "block device",
        _ if kind.is_char_device() => "character device",
        _ => "special file",
    };
    Error::SpecialFile { path: rel.to_string(), kind }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::Digest;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::os::unix::net::UnixListener;

    /// A data folder with the store in `data/` and a step's outputs in `out/`.
    struct Fixture {
        dir: tempfile::TempDir,
        store: Store,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("out")).unwrap();
            let store = Store::open(&dir.path().join("data")).unwrap();
            Fixture { dir, store }
        }

        fn out(&self) -> PathBuf {
            self.dir.path().join("out")
        }

        fn write(&self, rel: &str, content: &str) {
            let path = self.out().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }

        fn collect(&self, declared: &[&str]) -> Result<Manifest, String> {
            let declared: Vec<String> = declared.iter().map(|s| s.to_string()).collect();
            collect_outputs(&self.store, &self.out(), &declared).map_err(|e| e.to_string())
        }

        fn refuses(&self, declared: &[&str], message: &str) {
            assert_eq!(self.collect(declared).unwrap_err(), message, "{declared:?}");
        }
    }

    #[test]
    fn files_and_folders_collected_sorted() {
        let f = Fixture::new();
        f.write("model.json", "{}");
        f.write("metrics.json", "{\"rmse\": 0.3}");
        f.write("data/train.csv", "a,b\n");
        f.write("data/deep/er/test.csv", "a,b\n"); // same content: one blob
        f.write("data/run.sh", "#!/bin/sh\n");
        f.write("not-declared.txt", "ignored");
        fs::set_permissions(f.out().join("data/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(f.out().join("data/empty")).unwrap();

        let m = f.collect(&["model.json", "data/", "metrics.json", "data/train.csv"]).unwrap();
        let got: Vec<(&str, u64, bool)> = m.entries().iter().map(|e| (e.path.as_str(), e.size, e.executable)).collect();
        let want = [
            ("data/deep/er/test.csv", 4, false),
            ("data/run.sh", 10, true),
            ("data/train.csv", 4, false),
            ("metrics.json", 13, false),
            ("model.json", 2, false),
        ];
        assert_eq!(got, want);
        for e in m.entries() {
            assert_eq!(e.digest, Digest::of(&fs::read(f.out().join(&e.path)).unwrap()));
            f.store.verify(&e.digest).unwrap();
        }
        assert_eq!(m.get("data/train.csv").unwrap().digest, m.get("data/deep/er/test.csv").unwrap().digest);
        // Nested declared paths and the same outputs again give the same manifest.
        assert_eq!(f.collect(&["data/deep/er/test.csv"]).unwrap().entries().len(), 1);
        assert_eq!(f.collect(&["data/", "metrics.json", "model.json"]).unwrap().digest(), m.digest());
    }

    #[test]
    fn missing_and_mistyped_outputs() {
        let f = Fixture::new();
        f.write("data/a.csv", "x");
        f.write("model.json", "{}");
        f.refuses(&["model.json", "best.json"], "step declared `best.json` but did not write it");
        f.refuses(&["sub/model.json"], "step declared `sub/model.json` but did not write it");
        f.refuses(&["model.json/x"], "step declared `model.json/x` but did not write it");
        f.refuses(&["reports/"], "step declared `reports/` but did not write it");
        f.refuses(&["data"], "step declared `data` as a file but wrote a folder (declare `data/` to collect a folder)");
        f.refuses(&["model.json/"], "step declared `model.json/` as a folder but `model.json` is not a folder");
    }

    #[test]
    fn unsafe_declared_names() {
        let f = Fixture::new();
        f.write("a", "x");
        f.refuses(&["../a"], "artifact name `../a` is refused: `..` would leave the folder");
        f.refuses(&["data/../../a"], "artifact name `data/../../a` is refused: `..` would leave the folder");
        f.refuses(&["../"], "artifact name `../` is refused: `..` would leave the folder");
        f.refuses(&["/etc/passwd"], "artifact name `/etc/passwd` is refused: absolute paths are not allowed");
        f.refuses(&["/"], "artifact name `/` is refused: a name cannot be empty");
        f.refuses(&["./a"], "artifact name `./a` is refused: empty or `.` path segments are not allowed");
    }

    #[test]
    fn symlinks_are_refused_never_followed() {
        let f = Fixture::new();
        let outside = f.dir.path().join("secret.txt");
        fs::write(&outside, "secret").unwrap();
        f.write("real.json", "{}");
        f.write("data/ok.csv", "x");
        fs::create_dir(f.dir.path().join("elsewhere")).unwrap();
        fs::write(f.dir.path().join("elsewhere/x.csv"), "x").unwrap();

        symlink(&outside, f.out().join("leak.json")).unwrap();
        symlink("real.json", f.out().join("sibling.json")).unwrap();
        symlink("../elsewhere", f.out().join("linked")).unwrap();
        symlink("/nonexistent", f.out().join("dangling")).unwrap();
        f.refuses(
            &["leak.json"],
            "`leak.json` is a symlink: outputs must be regular files or folders, and symlinks are never followed",
        );
        f.refuses(
            &["sibling.json"],
            "`sibling.json` is a symlink: outputs must be regular files or folders, and symlinks are never followed",
        );
        f.refuses(
            &["dangling"],
            "`dangling` is a symlink: outputs must be regular files or folders, and symlinks are never followed",
        );
        // A symlinked folder component, as a declared folder or on the way to a declared file.
        f.refuses(
            &["linked/"],
            "`linked` is a symlink: outputs must be regular files or folders, and symlinks are never followed",
        );
        f.refuses(
            &["linked/x.csv"],
            "`linked` is a symlink: outputs must be regular files or folders, and symlinks are never followed",
        );
        // A symlink anywhere inside a collected folder.
        symlink(&outside, f.out().join("data/inner")).unwrap();
        f.refuses(
            &["data/"],
            "`data/inner` is a symlink: outputs must be regular files or folders, and symlinks are never followed",
        );
        assert!(!f.store.contains(&Digest::of(b"secret")));

        // The outputs folder itself must not be a symlink.
        let link = f.dir.path().join("out-link");
        symlink(f.out(), &link).unwrap();
        let err = collect_outputs(&f.store, &link, &["real.json".to_string()]).unwrap_err();
        assert!(matches!(err, Error::Symlink(_)), "{err}");
    }

    #[test]
    fn special_files_are_refused() {
        let f = Fixture::new();
        fs::create_dir(f.out().join("data")).unwrap();
        let _listener = UnixListener::bind(f.out().join("data/sock")).unwrap();
        f.refuses(&["data/sock"], "`data/sock` is a socket: outputs must be regular files or folders");
        f.refuses(&["data/"], "`data/sock` is a socket: outputs must be regular files or folders");
        // A fifo, made with coreutils' mkfifo (no libc dependency for one test); skipped where
        // the command is missing.
        let fifo = f.out().join("pipe");
        if std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
            f.refuses(&["pipe"], "`pipe` is a fifo: outputs must be regular files or folders");
        }
        let err = collect_outputs(&f.store, Path::new("/dev/null"), &[]).unwrap_err().to_string();
        assert!(err.starts_with("cannot read the outputs folder `/dev/null`"), "{err}");
    }
}
