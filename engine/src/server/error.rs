//! The engine services' one error type: what went wrong, in domain terms (invalid input with
//! its diagnostics, an unknown name, a refused precondition, a storage failure). It names no
//! gRPC status: `crate::api::status` is the one place that turns it into one, and decides what
//! a caller may see of it.

use weir_core::diag::{Diagnostic, Renderer};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(String),
    /// Validation problems of `file`, rendered in `message` and kept structured.
    #[error("{message}")]
    Diagnostics { message: String, file: String, diagnostics: Vec<Diagnostic> },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Precondition(String),
    /// An authenticated caller asked for something that is not its own (a worker reporting on
    /// another worker's attempt).
    #[error("{0}")]
    Denied(String),
    /// Stored data that does not read back as it was written (a corrupt record or blob):
    /// `what` may be shown to the caller, `detail` (which may name server paths or trees) is
    /// only logged.
    #[error("{what}: {detail}")]
    DataLoss { what: String, detail: String },
    #[error("{0}")]
    Internal(String),
    #[error("storage: {0}")]
    Store(#[from] crate::store::Error),
    #[error("artifact store: {0}")]
    Artifact(#[from] weir_data::artifact::Error),
}

impl ApiError {
    /// Validation problems of `file` (whose text is `source`): rendered as the message, and
    /// structured in the details.
    pub fn diagnostics(what: &str, file: &str, source: &str, diags: Vec<Diagnostic>) -> ApiError {
        let rendered = Renderer { path: file, source, color: false }.render_all(&diags);
        ApiError::Diagnostics { message: format!("{what}:\n{rendered}"), file: file.to_string(), diagnostics: diags }
    }
}
