//! [`Manifest`]: what a step produced, as (relative path, digest, size, executable) entries
//! sorted by path, and [`check_name`], the one rule for what an artifact name may be. A manifest
//! can only hold safe, distinct names: [`Manifest::new`] and deserialization both check, since a
//! manifest may arrive from a worker. It holds names and digests only, never file contents.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Digest, Error};

/// One file of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated, checked by [`check_name`].
    pub path: String,
    pub digest: Digest,
    pub size: u64,
    /// Whether the owner could execute it; materialized inputs keep this bit.
    pub executable: bool,
}

/// The files a step wrote, sorted by path. Its canonical form is its compact JSON
/// (`{"files":[{"path":..,"digest":..,"size":..,"executable":..},..]}`), and
/// [`Manifest::digest`] hashes that.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawManifest")]
pub struct Manifest {
    // Sorted, distinct, every path checked; `pub(super)` only so that tests elsewhere in the
    // module can craft a bad manifest to prove `materialize` checks again.
    pub(super) files: Vec<Entry>,
}

#[derive(Deserialize)]
struct RawManifest {
    files: Vec<Entry>,
}

impl TryFrom<RawManifest> for Manifest {
    type Error = Error;

    fn try_from(raw: RawManifest) -> Result<Manifest, Error> {
        Manifest::new(raw.files)
    }
}

impl Manifest {
    /// Sorts `files` by path; refuses an unsafe name, a name listed twice, and a name that is
    /// also the folder of another (`a` and `a/b`).
    pub fn new(mut files: Vec<Entry>) -> Result<Manifest, Error> {
        for entry in &files {
            check_name(&entry.path)?;
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let names: BTreeSet<&str> = files.iter().map(|e| e.path.as_str()).collect();
        if names.len() != files.len() {
            let dup = files.windows(2).find(|w| w[0].path == w[1].path).expect("a duplicate exists");
            return Err(Error::DuplicateName(dup[0].path.clone()));
        }
        for entry in &files {
            let mut folder = entry.path.as_str();
            while let Some((parent, _)) = folder.rsplit_once('/') {
                if names.contains(parent) {
                    return Err(Error::DuplicateName(parent.to_string()));
                }
                folder = parent;
            }
        }
        Ok(Manifest { files })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.files
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.files.binary_search_by(|e| e.path.as_str().cmp(path)).ok().map(|i| &self.files[i])
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|e| e.size).sum()
    }

    /// The canonical JSON: compact, fields in declaration order, entries sorted.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serializes")
    }

    /// The BLAKE3 digest of [`Manifest::to_canonical_json`]: equal manifests, equal digests.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_canonical_json())
    }
}

/// Checks that `name` is a plain relative path that stays inside its folder: not empty, not
/// absolute, `/` separators only, no `..`, `.` or empty segments, no control characters. The
/// same rules `spec` applies to declared outputs, minus the trailing `/` (strip it first).
pub fn check_name(name: &str) -> Result<(), Error> {
    crate::relpath::check(name).map_err(|why| Error::UnsafeName { name: name.to_string(), reason: why.describe() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry { path: path.to_string(), digest: Digest::of(path.as_bytes()), size: 1, executable: false }
    }

    #[test]
    fn names() {
        let check = |name: &str, expect: Option<&str>| {
            let got = check_name(name).err().map(|e| e.to_string());
            let want = expect.map(|r| format!("artifact name `{name}` is refused: {r}"));
            assert_eq!(got, want, "{name:?}");
        };
        for ok in ["model.json", "data/train.csv", "a/b/c.d", "..hidden", "x..y", "é"] {
            check(ok, None);
        }
        check("", Some("a name cannot be empty"));
        check("/etc/passwd", Some("absolute paths are not allowed"));
        check("C:/x", Some("absolute paths are not allowed"));
        check("a\\b", Some("use `/` to separate folders"));
        check("a\nb", Some("control characters are not allowed"));
        check("a\0b", Some("control characters are not allowed"));
        check("..", Some("`..` would leave the folder"));
        check("../x", Some("`..` would leave the folder"));
        check("a/../../x", Some("`..` would leave the folder"));
        check("a/", Some("empty or `.` path segments are not allowed"));
        check("a//b", Some("empty or `.` path segments are not allowed"));
        check("./a", Some("empty or `.` path segments are not allowed"));
    }

    #[test]
    fn sorted_with_a_stable_digest() {
        let m = Manifest::new(vec![entry("z"), entry("a/b"), entry("a-b")]).unwrap();
        let paths: Vec<&str> = m.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a-b", "a/b", "z"]);
        assert_eq!(m.get("a/b"), Some(&entry("a/b")));
        assert_eq!(m.get("a"), None);
        assert_eq!(m.total_size(), 3);
        let same = Manifest::new(vec![entry("a-b"), entry("z"), entry("a/b")]).unwrap();
        assert_eq!(m.digest(), same.digest());
        assert_ne!(m.digest(), Manifest::new(vec![entry("z")]).unwrap().digest());

        let json = String::from_utf8(m.to_canonical_json()).unwrap();
        assert!(json.starts_with(r#"{"files":[{"path":"a-b","digest":""#), "{json}");
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn refuses_duplicates_and_unsafe_names() {
        let err = |files: Vec<Entry>| Manifest::new(files).unwrap_err().to_string();
        assert_eq!(err(vec![entry("a"), entry("a")]), "manifest lists `a` twice, or both as a file and as a folder");
        assert_eq!(
            err(vec![entry("a/b/c"), entry("a")]),
            "manifest lists `a` twice, or both as a file and as a folder"
        );
        assert!(err(vec![entry("../x")]).contains("`..` would leave the folder"));
        // A crafted manifest from a worker is checked while it is read.
        let d = Digest::of(b"");
        let json = format!(r#"{{"files":[{{"path":"../x","digest":"{d}","size":0,"executable":false}}]}}"#);
        let e = serde_json::from_str::<Manifest>(&json).unwrap_err().to_string();
        assert!(e.contains("`..` would leave the folder"), "{e}");
    }
}
