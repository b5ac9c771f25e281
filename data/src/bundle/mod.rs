//! Pipeline bundles: a pipeline folder packed into one deterministic, content-addressed archive
//! that the engine stores when a pipeline is submitted and that workers fetch once and cache.
//! This module owns the archive format, the `.weirignore` rules, building ([`Bundle::build`]),
//! streaming ([`Bundle::write_to`]), verified extraction ([`extract`]) and the worker-side
//! [`BundleCache`]. It knows nothing about gRPC or sled: archives travel through `io::Read` and
//! `io::Write`. It must never write outside the destination it is given, never trust a size,
//! path or digest read from an archive, and never panic on bad input. Unix only (exec bits).
//!
//! The archive format, version 1, is ours and self-describing:
//!
//! ```text
//! {"format":"weir-bundle","version":1,"files":2,"bytes":1234}\n      header
//! {"path":"pipeline.yaml","size":1000,"exec":false,"blake3":"<hex>"}\n  entry line
//! <1000 raw bytes>
//! {"path":"steps/train.py","size":234,"exec":true,"blake3":"<hex>"}\n
//! <234 raw bytes>
//! ```
//!
//! Entries are regular files only (directories are implied by paths, empty ones are not kept),
//! sorted by path bytes, with `/` separators and no `.`/`..`/empty segments. Nothing else is
//! recorded (no mtimes, owners or permissions beyond the executable bit), so the same content
//! always gives the same bytes, and the bundle's address is the BLAKE3 of those bytes in hex.
//! The header's counts make truncation at an entry boundary detectable; readers refuse any
//! byte after the last entry, unknown fields, and entries out of order.

mod build;
mod cache;
mod extract;
mod ignore;

pub use build::{Bundle, Entry};
pub use cache::BundleCache;
pub use extract::{Durability, extract, extract_with};
pub use ignore::Ignore;

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Size caps, applied both when building (with advice) and when extracting (against hostile
/// archives, before anything reaches the disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleLimits {
    /// Total bytes of file contents.
    pub max_bytes: u64,
    /// Number of files.
    pub max_files: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self { max_bytes: 64 * 1024 * 1024, max_files: 10_000 }
    }
}

impl BundleLimits {
    /// The longest archive these limits allow: the contents plus one header line per file.
    pub fn max_archive_len(&self) -> u64 {
        self.max_bytes.saturating_add(self.max_files.saturating_add(1).saturating_mul(MAX_LINE))
    }
}

/// The longest header or entry line a reader accepts, newline included.
const MAX_LINE: u64 = 32 * 1024;
/// The longest entry path, in bytes (Linux's `PATH_MAX`).
const MAX_PATH: usize = crate::relpath::MAX_LEN;
const FORMAT: &str = "weir-bundle";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    files: u64,
    bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryLine {
    path: String,
    size: u64,
    exec: bool,
    blake3: String,
}

/// Everything that can go wrong building, streaming, extracting or caching a bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("bundle stream: {0}")]
    Stream(#[source] io::Error),
    #[error("fetching bundle {digest}: {source}")]
    Fetch { digest: String, source: io::Error },
    #[error(
        "the pipeline folder holds {} of files, over the {} bundle limit; biggest: {}; \
         list what steps do not need in .weirignore",
        human(*reached), human(*limit), sizes(biggest)
    )]
    TooLarge { limit: u64, reached: u64, biggest: Vec<(String, u64)> },
    #[error(
        "the pipeline folder holds more than {limit} files, the bundle limit; most files under: {}; \
         list what steps do not need in .weirignore",
        counts(busiest)
    )]
    TooManyFiles { limit: u64, busiest: Vec<(String, u64)> },
    #[error("{}: symlink points outside the pipeline folder (to {})", path.display(), target.display())]
    SymlinkOutside { path: PathBuf, target: PathBuf },
    #[error("{}: {kind} cannot go into a bundle; list it in .weirignore", path.display())]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("{}: file name is not UTF-8", path.display())]
    NonUtf8 { path: PathBuf },
    #[error("{}: changed while the bundle was being read; if something writes it during runs, list it in .weirignore", path.display())]
    Changed { path: PathBuf },
    #[error("`{0}` is not a bundle digest (64 lowercase hex digits)")]
    BadDigest(String),
    #[error("malformed bundle: {0}")]
    Malformed(String),
    #[error("bundle entry `{path}` refused: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("bundle declares (or needs) {declared} {what}, over the limit of {limit}")]
    OverLimit { what: &'static str, declared: u64, limit: u64 },
    #[error("bundle ended early (truncated)")]
    Truncated,
    #[error("bundle digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("{}: already exists", path.display())]
    Exists { path: PathBuf },
}

impl Error {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// True for a well-formed bundle digest: 64 lowercase hex digits (safe as a file name).
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn human(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB { format!("{:.1} MiB", bytes as f64 / MIB as f64) } else { format!("{bytes} B") }
}

fn sizes(list: &[(String, u64)]) -> String {
    list.iter().map(|(p, n)| format!("{p} ({})", human(*n))).collect::<Vec<_>>().join(", ")
}

fn counts(list: &[(String, u64)]) -> String {
    list.iter().map(|(p, n)| format!("{p} ({n})")).collect::<Vec<_>>().join(", ")
}
