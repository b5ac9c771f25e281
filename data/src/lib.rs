//! weir's data plane, shared by the engine and the worker: the content-addressed artifact
//! store and manifests (`artifact`), pipeline bundles (`bundle`), the one rule for names that
//! must stay inside a folder (`relpath`), and the Linux capabilities a step's container may
//! keep (`capabilities`).
//!
//! It knows nothing of pipelines, runs, gRPC or the state store: the worker links it without
//! linking the engine, and the core uses only its pure parts (`relpath`, `capabilities`).

pub mod artifact;
pub mod bundle;
pub mod capabilities;
pub mod relpath;

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || matches!(e.raw_os_error(), Some(28 | 122)) // ENOSPC, EDQUOT
        // sled clones its sticky error by formatting it: only the text is left then.
        || e.to_string().contains("No space left on device")
}
