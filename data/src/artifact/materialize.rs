//! [`materialize`]: writes the files of a [`Manifest`] from the [`Store`] into a folder, as a
//! dependent step's `$WEIR_INPUTS/<step>/`. Each file is copied (not linked, so a step cannot
//! damage a blob through its inputs), its digest checked while copying, and left read-only.
//! Every name is checked again here, since a manifest may come from a worker: nothing is ever
//! written outside the destination. It must not modify the store.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::manifest::check_name;
use super::store::CHUNK;
use super::{Digest, Entry, Error, Manifest, Store};

/// Writes every file of `manifest` under `dest`, which must be missing or an empty folder (not
/// a symlink). Files are read-only afterwards (`0o444`, or `0o555` when executable); folders
/// stay writable so the caller can remove the tree. On error, what was written so far stays for
/// the caller to remove; a file whose content did not match its digest is removed at once.
/// Inputs are scratch copies, rebuilt from the store on the next attempt, so they are not fsynced.
pub fn materialize(store: &Store, manifest: &Manifest, dest: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => {
            let mut listing = fs::read_dir(dest).map_err(Error::io("list", dest))?;
            if listing.next().is_some() {
                return Err(Error::DestinationNotEmpty(dest.display().to_string()));
            }
        }
        Ok(meta) if meta.file_type().is_symlink() => return Err(Error::Symlink(dest.display().to_string())),
        Ok(_) => return Err(Error::DestinationNotEmpty(dest.display().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(Error::io("create folder", dest))?;
        }
        Err(e) => return Err(Error::io("read", dest)(e)),
    }
    for entry in manifest.entries() {
        check_name(&entry.path)?;
        let mut path = dest.to_path_buf();
        let parts: Vec<&str> = entry.path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            path.push(part);
            match fs::create_dir(&path) {
                Ok(()) => {}
                // Only folders this call created can be here (the destination started empty),
                // but check rather than trust: never write through a symlink.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let meta = fs::symlink_metadata(&path).map_err(Error::io("read", &path))?;
                    if !meta.is_dir() {
                        return Err(Error::DuplicateName(entry.path.clone()));
                    }
                }
                Err(e) => return Err(Error::io("create folder", &path)(e)),
            }
        }
        path.push(parts[parts.len() - 1]);
        copy_verified(store, entry, &path)?;
    }
    Ok(())
}

fn copy_verified(store: &Store, entry: &Entry, path: &Path) -> Result<(), Error> {
    let mut blob = store.open_blob(&entry.digest)?;
    // `create_new` (O_EXCL) fails on anything already there, a symlink included.
    let mut out =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::DuplicateName(entry.path.clone()),
            _ => Error::io("create", path)(e),
        })?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK.min(entry.size as usize).max(1)];
    let mut size = 0u64;
    let blob_path = store.path_of(&entry.digest);
    loop {
        let n = match blob.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", &blob_path)(e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(Error::io("write", path))?;
        size += n as u64;
    }
    let actual = Digest::from(hasher.finalize());
    if actual != entry.digest || size != entry.size {
        drop(out);
        let _ = fs::remove_file(path);
        let detail = format!(
            "copying it to `{}`, its content hashed to {actual} ({size} bytes, {} expected)",
            entry.path, entry.size
        );
        return Err(Error::Corrupt { digest: entry.digest, detail });
    }
    let mode = if entry.executable { 0o555 } else { 0o444 };
    out.set_permissions(fs::Permissions::from_mode(mode)).map_err(Error::io("set permissions of", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::collect_outputs;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        (dir, store)
    }

    fn entry(store: &Store, path: &str, content: &[u8]) -> Entry {
        let digest = store.put_bytes(content).unwrap();
        Entry { path: path.to_string(), digest, size: content.len() as u64, executable: false }
    }

    #[test]
    fn round_trip_through_collect() {
        let (dir, store) = setup();
        let out = dir.path().join("out");
        fs::create_dir_all(out.join("data/sub")).unwrap();
        fs::write(out.join("model.json"), "{\"w\": 1}").unwrap();
        fs::write(out.join("data/sub/a.csv"), "a\n1\n").unwrap();
        fs::write(out.join("data/train.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(out.join("data/train.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let manifest = collect_outputs(&store, &out, &["model.json".into(), "data/".into()]).unwrap();

        let inputs = dir.path().join("inputs/train");
        materialize(&store, &manifest, &inputs).unwrap();
        for e in manifest.entries() {
            let path = inputs.join(&e.path);
            assert_eq!(fs::read(&path).unwrap(), fs::read(out.join(&e.path)).unwrap(), "{}", e.path);
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, if e.path.ends_with(".sh") { 0o555 } else { 0o444 }, "{}", e.path);
        }
        // Collecting the materialized copy gives the same manifest.
        let again = collect_outputs(&store, &inputs, &["model.json".into(), "data/".into()]).unwrap();
        assert_eq!(again.digest(), manifest.digest());
        // An empty manifest makes an empty folder.
        materialize(&store, &Manifest::default(), &dir.path().join("inputs/none")).unwrap();
        assert!(dir.path().join("inputs/none").is_dir());
    }

    #[test]
    fn refuses_names_that_escape_in_a_crafted_manifest() {
        let (dir, store) = setup();
        let dest = dir.path().join("inputs/step");
        for bad in ["../x", "a/../../x", "/tmp/x", "a//b"] {
            let _ = fs::remove_dir_all(&dest);
            // Built around `Manifest::new`, as a buggy or hostile worker could.
            let manifest = Manifest { files: vec![entry(&store, "ok.txt", b"ok"), entry(&store, bad, b"evil")] };
            let err = materialize(&store, &manifest, &dest).unwrap_err();
            assert!(matches!(&err, Error::UnsafeName { name, .. } if name == bad), "{bad}: {err}");
        }
        assert!(!dir.path().join("inputs/x").exists());
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn corrupt_or_missing_blobs_are_refused() {
        let (dir, store) = setup();
        let good = entry(&store, "model.json", b"{\"w\": 1}");
        let blob = store.path_of(&good.digest);
        fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&blob, b"{\"w\": 9}").unwrap();
        let dest = dir.path().join("in");
        let err = materialize(&store, &Manifest::new(vec![good.clone()]).unwrap(), &dest).unwrap_err();
        assert!(matches!(err, Error::Corrupt { digest, .. } if digest == good.digest), "{err}");
        assert!(!dest.join("model.json").exists(), "the bad copy is removed");

        let missing = Entry { digest: Digest::of(b"never stored"), ..good };
        let err = materialize(&store, &Manifest::new(vec![missing]).unwrap(), &dir.path().join("in2")).unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
    }

    #[test]
    fn destination_must_be_empty_and_real() {
        let (dir, store) = setup();
        let m = Manifest::new(vec![entry(&store, "a", b"a")]).unwrap();
        let full = dir.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("old"), "x").unwrap();
        assert!(matches!(materialize(&store, &m, &full), Err(Error::DestinationNotEmpty(_))));
        let link = dir.path().join("link");
        fs::create_dir(dir.path().join("target")).unwrap();
        symlink(dir.path().join("target"), &link).unwrap();
        assert!(matches!(materialize(&store, &m, &link), Err(Error::Symlink(_))));
        assert!(!dir.path().join("target/a").exists());
    }
}
