//! Every error the API can answer with, and its one mapping to a gRPC status: invalid input is
//! `INVALID_ARGUMENT` (validation diagnostics ride along as `weir.v1.Diagnostics` in the status
//! details, and rendered in the message), an unknown name `NOT_FOUND`, a stale attempt or a
//! finished run `FAILED_PRECONDITION`, a full disk `RESOURCE_EXHAUSTED` ("no space left on
//! <folder>"; workers retry it), a store being reopened after a failed write `UNAVAILABLE`,
//! another storage failure `INTERNAL`. Messages say what to do. Every status is cut to fit
//! in headers (`bounds::fit`): a message never grows past 4 KiB. Errors logged here go through
//! [`ratelog`](super::ratelog): a failure that repeats is one line per interval, not a flood.

use prost::Message;
use tonic::{Code, Status};
use weir_proto::v1;

use weir_core::diag::{Diagnostic, Renderer, Severity};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(String),
    #[error("{message}")]
    Diagnostics { message: String, diagnostics: Vec<v1::Diagnostic> },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Precondition(String),
    /// An authenticated caller asked for something that is not its own (a worker reporting on
    /// another worker's attempt).
    #[error("{0}")]
    Denied(String),
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
        let diagnostics = diags.iter().map(|d| diagnostic(file, d)).collect();
        ApiError::Diagnostics { message: format!("{what}:\n{rendered}"), diagnostics }
    }
}

fn diagnostic(file: &str, d: &Diagnostic) -> v1::Diagnostic {
    let span = d.span.unwrap_or_default();
    v1::Diagnostic {
        message: d.message.clone(),
        line: span.line,
        column: span.col,
        end_line: span.end_line,
        end_column: span.end_col,
        label: d.label.clone(),
        help: d.help.clone().unwrap_or_default(),
        notes: d.notes.clone(),
        severity: match d.severity {
            Severity::Error => v1::Severity::Error,
            Severity::Warning => v1::Severity::Warning,
        } as i32,
        related: d
            .related
            .iter()
            .map(|r| v1::RelatedSpan {
                line: r.span.line,
                column: r.span.col,
                end_line: r.span.end_line,
                end_column: r.span.end_col,
                label: r.label.clone(),
            })
            .collect(),
        file: file.to_string(),
    }
}

impl From<crate::wire::BadField> for ApiError {
    fn from(e: crate::wire::BadField) -> Self {
        ApiError::Invalid(e.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        super::bounds::fit(status(e))
    }
}

/// The status for `e`, before `bounds::fit` cuts what it quotes to fit in headers.
fn status(e: ApiError) -> Status {
    {
        match e {
            ApiError::Invalid(m) => Status::invalid_argument(m),
            ApiError::Diagnostics { message, diagnostics } => {
                let details = v1::Diagnostics { diagnostics }.encode_to_vec();
                Status::with_details(Code::InvalidArgument, message, details.into())
            }
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::Precondition(m) => Status::failed_precondition(m),
            ApiError::Denied(m) => Status::permission_denied(m),
            ApiError::Artifact(e @ weir_data::artifact::Error::UnsafeName { .. }) => {
                Status::invalid_argument(e.to_string())
            }
            ApiError::Store(e @ crate::store::Error::NoSpace { .. }) => {
                let message = e.to_string();
                if let Some(suppressed) = super::ratelog::admit(&message) {
                    tracing::error!(error = message, suppressed, "storage write failed");
                }
                Status::resource_exhausted(message)
            }
            ApiError::Store(e @ crate::store::Error::Reopening { .. }) => {
                let message = e.to_string();
                if let Some(suppressed) = super::ratelog::admit(&message) {
                    tracing::warn!(error = message, suppressed, "store not writable yet");
                }
                Status::unavailable(message)
            }
            ApiError::Artifact(weir_data::artifact::Error::Io { path, source, .. })
                if crate::store::is_no_space(&source) =>
            {
                let dir = path.parent().unwrap_or(&path).to_path_buf();
                let message = crate::store::Error::NoSpace { dir }.to_string();
                if let Some(suppressed) = super::ratelog::admit(&message) {
                    tracing::error!(error = message, suppressed, "artifact write failed");
                }
                Status::resource_exhausted(message)
            }
            e @ (ApiError::Internal(_) | ApiError::Store(_) | ApiError::Artifact(_)) => {
                let message = e.to_string();
                if let Some(suppressed) = super::ratelog::admit(&message) {
                    tracing::error!(error = message, suppressed, "internal error");
                }
                Status::internal(message)
            }
        }
    }
}
