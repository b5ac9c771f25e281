//! The one mapping from the engine's [`ApiError`] to a gRPC status. Client mistakes are never
//! `INTERNAL`: invalid input (a bad run id, page token or digest) is `INVALID_ARGUMENT`, with
//! validation diagnostics in the details and rendered in the message; an unknown name or blob
//! `NOT_FOUND`; a stale attempt or a finished run `FAILED_PRECONDITION`; stored data that does
//! not read back `DATA_LOSS`; a full disk `RESOURCE_EXHAUSTED` ("no space left on <folder>";
//! workers retry it); a store being reopened after a failed write `UNAVAILABLE`.
//!
//! A real internal error (or corrupt data) is logged here with an error id, inside the RPC's
//! span (`rpc{method=...}`), and the caller gets a generic message with that id: never a server
//! path, a sled tree or a raw sled error. Details travel as a standard `google.rpc.Status` in
//! `grpc-status-details-bin` (so grpcio-status and other ecosystem helpers decode them): weir's
//! `weir.v1.Diagnostics` as one detail, and a `google.rpc.ErrorInfo` carrying the error id.
//! Every status is cut to fit in headers (`bounds::fit`). What is logged goes through
//! [`ratelog`](crate::server::ratelog): a failure that repeats is one line per interval.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;
use tonic::{Code, Status};
use tonic_types::pb;
use weir_proto::v1;

use crate::server::error::ApiError;
use crate::server::ratelog;
use crate::store;
use weir_data::artifact;

use super::bounds;
use super::convert;

/// The type URL of weir's diagnostics inside a `google.rpc.Status`.
pub const DIAGNOSTICS_TYPE: &str = "type.googleapis.com/weir.v1.Diagnostics";
/// The `google.rpc.ErrorInfo` domain of weir's errors.
pub const DOMAIN: &str = "weir";

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        status(e)
    }
}

/// The status for `e`, cut to fit in headers.
pub fn status(e: ApiError) -> Status {
    bounds::fit(unbounded(e))
}

fn unbounded(e: ApiError) -> Status {
    use artifact::Error as A;
    use store::Error as S;
    match e {
        ApiError::Invalid(m) => Status::invalid_argument(m),
        ApiError::Diagnostics { message, file, diagnostics } => {
            let diagnostics =
                v1::Diagnostics { diagnostics: diagnostics.iter().map(|d| convert::diagnostic(&file, d)).collect() };
            let any = prost_types::Any {
                type_url: DIAGNOSTICS_TYPE.to_string(),
                value: bounds::shrink_diagnostics(diagnostics).encode_to_vec(),
            };
            rich(Code::InvalidArgument, message, vec![any])
        }
        ApiError::NotFound(m) => Status::not_found(m),
        ApiError::Precondition(m) => Status::failed_precondition(m),
        ApiError::Denied(m) => Status::permission_denied(m),
        ApiError::Store(e @ (S::BadRunId(_) | S::BadPageToken(_))) => Status::invalid_argument(e.to_string()),
        ApiError::Artifact(e @ (A::UnsafeName { .. } | A::BadDigest(_) | A::DuplicateName(_) | A::NonUtf8Name(_))) => {
            Status::invalid_argument(e.to_string())
        }
        ApiError::Artifact(e @ A::NotFound(_)) => Status::not_found(e.to_string()),
        ApiError::Store(e @ S::NoSpace { .. }) => {
            let message = e.to_string();
            if let Some(suppressed) = ratelog::admit(&message) {
                tracing::error!(error = message, suppressed, "storage write failed");
            }
            Status::resource_exhausted(message)
        }
        ApiError::Store(e @ S::Reopening { .. }) => {
            let message = e.to_string();
            if let Some(suppressed) = ratelog::admit(&message) {
                tracing::warn!(error = message, suppressed, "store not writable yet");
            }
            Status::unavailable(message)
        }
        ApiError::Artifact(A::Io { path, source, .. }) if store::is_no_space(&source) => {
            let dir = path.parent().unwrap_or(&path).to_path_buf();
            let message = S::NoSpace { dir }.to_string();
            if let Some(suppressed) = ratelog::admit(&message) {
                tracing::error!(error = message, suppressed, "artifact write failed");
            }
            Status::resource_exhausted(message)
        }
        ApiError::DataLoss { what, detail } => hidden(Code::DataLoss, &what, &format!("{what}: {detail}")),
        e @ ApiError::Store(S::Corrupt { .. }) => hidden(Code::DataLoss, "a stored record is corrupt", &e.to_string()),
        ApiError::Artifact(A::Corrupt { digest, detail }) => {
            hidden(Code::DataLoss, &format!("blob {digest} is corrupt"), &format!("blob {digest} is corrupt: {detail}"))
        }
        e @ (ApiError::Internal(_) | ApiError::Store(_) | ApiError::Artifact(_)) => {
            hidden(Code::Internal, "internal error", &e.to_string())
        }
    }
}

/// A status that says `what` and an error id, while `error` (which may name server paths,
/// trees or sled's own words) goes only to the log, under that id.
fn hidden(code: Code, what: &str, error: &str) -> Status {
    let id = error_id();
    if let Some(suppressed) = ratelog::admit(error) {
        tracing::error!(error_id = id, error, suppressed, code = ?code, "request failed");
    }
    let message = format!("{what} (error id {id}; the server log says more)");
    let info = pb::ErrorInfo {
        reason: format!("{code:?}").to_uppercase(),
        domain: DOMAIN.to_string(),
        metadata: HashMap::from([("error_id".to_string(), id)]),
    };
    let any = prost_types::Any {
        type_url: "type.googleapis.com/google.rpc.ErrorInfo".to_string(),
        value: info.encode_to_vec(),
    };
    rich(code, message, vec![any])
}

/// A status whose details are a `google.rpc.Status` with `details`.
fn rich(code: Code, message: String, details: Vec<prost_types::Any>) -> Status {
    let body = pb::Status { code: code as i32, message: message.clone(), details };
    Status::with_details(code, message, body.encode_to_vec().into())
}

/// A short id that ties a caller's error to its log line: unique within a server's life and
/// unlikely to repeat across restarts (the standard library's per-process random hash keys
/// seed it; no clock is read).
fn error_id() -> String {
    use std::hash::BuildHasher;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let seed = KEYS.get_or_init(Default::default).hash_one((std::process::id(), n));
    blake3::hash(&seed.to_le_bytes()).to_hex()[..12].to_string()
}

/// weir's diagnostics in a status's details: a detail of the `google.rpc.Status` there, or
/// (from a server before that) the bare `weir.v1.Diagnostics`.
pub fn diagnostics(status: &Status) -> Option<v1::Diagnostics> {
    if let Ok(body) = pb::Status::decode(status.details()) {
        return body
            .details
            .iter()
            .find(|a| a.type_url == DIAGNOSTICS_TYPE)
            .and_then(|a| v1::Diagnostics::decode(&*a.value).ok());
    }
    v1::Diagnostics::decode(status.details()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_what_they_quote_and_give_an_id() {
        let e = ApiError::Store(store::Error::Corrupt {
            tree: "runs",
            key: "r-1".into(),
            reason: "/srv/weir/db: bad checksum".into(),
        });
        let s = status(e);
        assert_eq!(s.code(), Code::DataLoss);
        assert!(!s.message().contains("/srv") && !s.message().contains("runs"), "{}", s.message());
        assert!(s.message().contains("error id "), "{}", s.message());
        let body = pb::Status::decode(s.details()).unwrap();
        let info = pb::ErrorInfo::decode(&*body.details[0].value).unwrap();
        assert!(s.message().contains(&info.metadata["error_id"]));

        let s = status(ApiError::Internal("open /srv/weir/x: denied".into()));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/srv"), "{}", s.message());
    }

    #[test]
    fn diagnostics_are_read_from_a_google_rpc_status_or_bare() {
        let d = v1::Diagnostics { diagnostics: vec![v1::Diagnostic { message: "m".into(), ..Default::default() }] };
        let bare = Status::with_details(Code::InvalidArgument, "x", d.encode_to_vec().into());
        assert_eq!(diagnostics(&bare), Some(d.clone()));
        let any = prost_types::Any { type_url: DIAGNOSTICS_TYPE.into(), value: d.encode_to_vec() };
        assert_eq!(diagnostics(&rich(Code::InvalidArgument, "x".into(), vec![any])), Some(d));
        assert_eq!(diagnostics(&status(ApiError::Internal("x".into()))), None);
    }

    #[test]
    fn client_mistakes_are_never_internal() {
        let cases = [
            (ApiError::Store(store::Error::BadRunId(String::new())), Code::InvalidArgument),
            (ApiError::Store(store::Error::BadPageToken("x".into())), Code::InvalidArgument),
            (ApiError::Artifact(artifact::Error::BadDigest("zz".into())), Code::InvalidArgument),
            (ApiError::Artifact(artifact::Error::NotFound(weir_data::artifact::Digest::of(b"x"))), Code::NotFound),
        ];
        for (e, code) in cases {
            let shown = e.to_string();
            assert_eq!(status(e).code(), code, "{shown}");
        }
    }
}
