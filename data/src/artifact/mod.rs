//! Step outputs as content-addressed artifacts: the blob [`Store`] under the data folder,
//! [`collect_outputs`] (a finished step's `$WEIR_OUTPUTS` into a [`Manifest`]), [`materialize`]
//! (a manifest into a dependent step's `$WEIR_INPUTS/<step>/`) and [`metrics_from_json`]. This
//! module owns every rule about artifact names: nothing it accepts can name a file outside its
//! folder (`..`, absolute paths and symlinks are refused, never followed). It must not know about
//! runs, sled or gRPC: callers hand it paths and manifests, and it hands back digests.
//!
//! Hashing is BLAKE3 (`BENCHMARKS.md`, "Hashing artifacts", has the measurement behind that).

mod collect;
mod digest;
mod manifest;
mod materialize;
mod metrics;
mod store;

use std::io;
use std::path::PathBuf;

pub use collect::collect_outputs;
pub use digest::Digest;
pub use manifest::{Entry, Manifest, check_name};
pub use materialize::materialize;
pub use metrics::{MAX_METRICS_BYTES, Metrics, metrics_from_json};
pub use store::{Store, Swept};

/// Everything that can go wrong storing, collecting or materializing artifacts. Messages name
/// the output as the step declared it, so they can be shown to the pipeline's author as they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error, with what was being done and to which file.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{0}` is not a digest: expected 64 lowercase hex characters")]
    BadDigest(String),
    #[error("blob {0} is not in the store")]
    NotFound(Digest),
    /// The bytes stored under a digest no longer hash to it (or have the wrong size).
    #[error("blob {digest} is corrupt: {detail}")]
    Corrupt { digest: Digest, detail: String },
    #[error("step declared `{0}` but did not write it")]
    MissingOutput(String),
    /// A name that could leave its folder or is not a plain relative path.
    #[error("artifact name `{name}` is refused: {reason}")]
    UnsafeName { name: String, reason: &'static str },
    #[error("`{0}` is a symlink: outputs must be regular files or folders, and symlinks are never followed")]
    Symlink(String),
    #[error("`{path}` is a {kind}: outputs must be regular files or folders")]
    SpecialFile { path: String, kind: &'static str },
    #[error("step declared `{0}` as a file but wrote a folder (declare `{0}/` to collect a folder)")]
    DirectoryNotFile(String),
    #[error("step declared `{0}/` as a folder but `{0}` is not a folder")]
    NotADirectory(String),
    /// The file at a collected path was replaced between its check and its read.
    #[error("`{0}` changed while it was being collected")]
    Changed(String),
    #[error("`{0}` is not valid UTF-8; artifact names must be")]
    NonUtf8Name(String),
    #[error("manifest lists `{0}` twice, or both as a file and as a folder")]
    DuplicateName(String),
    #[error("`{0}` must be an empty or missing folder to receive inputs")]
    DestinationNotEmpty(String),
    #[error("metrics.json is {0} bytes, over the 1 MiB limit")]
    MetricsTooLarge(usize),
    #[error("metrics.json is not valid JSON: {0}")]
    MetricsJson(#[source] serde_json::Error),
    #[error("metrics.json must hold a JSON object, found {0}")]
    MetricsNotObject(&'static str),
}

impl Error {
    fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}
