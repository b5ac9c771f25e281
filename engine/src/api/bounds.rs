//! Sizes at the API edge. Length bounds on the names, ids and texts in requests, checked once
//! before anything looks at them: every handler takes its request through [`bounded`] (streams
//! check each message with [`Bounded::check`]). A value past its bound is refused with
//! `INVALID_ARGUMENT` naming the field, its length and the bound, and showing at most
//! [`SHOWN`] characters of it: an error never echoes a long value (a 70 KB run id echoed in
//! `grpc-message` once broke clients on header size).
//!
//! The other direction: [`fit`] cuts every status the API answers with to fit in headers, so
//! that whatever an error quotes (a param value, many diagnostics) still reaches the client.
//!
//! The bounds sit far above anything weir makes: pipeline and step names have at most 63
//! characters and run ids about 90, instance names grow with matrix values, digests and
//! pipeline versions are 64 hex characters. Bulk content (pipeline YAML, bundles, logs,
//! artifacts) has its own limits elsewhere.

use std::collections::HashMap;

use tonic::{Request, Status};
use weir_proto::v1;

use crate::server::error::ApiError;

/// Run ids, pipeline, model, alias and metric names, worker ids, labels, page tokens.
pub const MAX_NAME: usize = 256;
/// Step instance names (`train[lr=0.1,features=linear]`) and file paths.
pub const MAX_INSTANCE: usize = 1024;
/// Digests and pipeline versions: 64 hex characters.
pub const MAX_DIGEST: usize = 64;
/// Free text kept with a run or a model event: reasons.
pub const MAX_TEXT: usize = 4096;
/// One param value given to a run (a run's params are also bounded by the message size).
pub const MAX_PARAM: usize = 16 << 10;
/// The most characters of a refused value an error shows.
pub const SHOWN: usize = 24;

/// The most bytes of a status message sent. `grpc-message` and `grpc-status-details-bin` are
/// headers, and clients refuse a header block past 16 KiB (a refusal quoting a 16 KiB param
/// value reached the client as "h2 protocol error"), so whatever an error quotes is cut here.
pub const MAX_MESSAGE: usize = 4096;
/// The most bytes of encoded status details (diagnostics) sent; base64 adds a third.
pub const MAX_DETAILS: usize = 6144;
/// The most bytes of each text of a diagnostic in the details, when they are too long.
const MAX_DETAIL_TEXT: usize = 512;

/// `status` cut to fit in headers: its message to [`MAX_MESSAGE`], its diagnostics to
/// [`MAX_DETAILS`] (each text shortened, then the last ones dropped). The one place every API
/// error passes (`status.rs`).
pub fn fit(status: Status) -> Status {
    let details = status.details();
    if status.message().len() <= MAX_MESSAGE && details.len() <= MAX_DETAILS {
        return status;
    }
    let message = clip(status.message(), MAX_MESSAGE);
    let details = if details.len() <= MAX_DETAILS { details.to_vec() } else { shrink(details) };
    Status::with_details(status.code(), message, details.into())
}

/// `s` cut to at most `max` bytes on a character boundary, saying how much was cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max.saturating_sub(40);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} more bytes cut)", &s[..cut], s.len() - cut)
}

/// A `google.rpc.Status` (in details) within [`MAX_DETAILS`]: weir's diagnostics in it are
/// shortened; if that is not enough, the details are dropped (the message still says it all).
fn shrink(details: &[u8]) -> Vec<u8> {
    use prost::Message;
    let Ok(mut body) = tonic_types::pb::Status::decode(details) else { return Vec::new() };
    for any in &mut body.details {
        if any.type_url == super::status::DIAGNOSTICS_TYPE
            && let Ok(d) = v1::Diagnostics::decode(&*any.value)
        {
            any.value = shrink_diagnostics(d).encode_to_vec();
        }
    }
    if body.encoded_len() > MAX_DETAILS { Vec::new() } else { body.encode_to_vec() }
}

/// `all` within [`MAX_DETAILS`] less room for the status around them: each text shortened
/// when they are too long, then the last ones dropped.
pub fn shrink_diagnostics(mut all: v1::Diagnostics) -> v1::Diagnostics {
    use prost::Message;
    let room = MAX_DETAILS - 256;
    if all.encoded_len() <= room {
        return all;
    }
    for d in &mut all.diagnostics {
        for text in [&mut d.message, &mut d.label, &mut d.help].into_iter().chain(d.notes.iter_mut()) {
            *text = clip(text, MAX_DETAIL_TEXT);
        }
    }
    while all.encoded_len() > room {
        all.diagnostics.pop();
    }
    all
}

/// A request whose strings have bounds.
pub trait Bounded {
    /// The first field past its bound, as an error that shows a short prefix of it.
    fn check(&self) -> Result<(), ApiError>;
}

/// The request's message, once its strings are within bounds.
pub fn bounded<T: Bounded>(req: Request<T>) -> Result<T, Status> {
    let inner = req.into_inner();
    inner.check()?;
    Ok(inner)
}

/// The most runs one DeleteRuns names.
const MAX_DELETE: usize = 10_000;

/// `field` holding `value` is at most `max` bytes.
fn at_most(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() <= max {
        return Ok(());
    }
    let mut cut = SHOWN;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    Err(ApiError::Invalid(format!(
        "{field} is {} bytes long; at most {max} are accepted (it starts {:?}...)",
        value.len(),
        &value[..cut]
    )))
}

fn params(field: &str, map: &HashMap<String, String>) -> Result<(), ApiError> {
    for (k, v) in map {
        at_most(&format!("{field} name"), k, MAX_NAME)?;
        at_most(&format!("{field} {}", shown(k)), v, MAX_PARAM)?;
    }
    Ok(())
}

/// A name already within [`MAX_NAME`], shortened further for use inside a message.
fn shown(s: &str) -> &str {
    let mut cut = s.len().min(64);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

fn attempt(field: &str, a: Option<&v1::AttemptRef>) -> Result<(), ApiError> {
    a.map_or(Ok(()), |a| at_most(&format!("{field}.run_id"), &a.run_id, MAX_NAME))
}

/// Implements [`Bounded`] from a list of `field: bound` pairs.
macro_rules! bounds {
    ($($ty:ty => |$r:ident| $body:block)*) => {
        $(impl Bounded for $ty {
            fn check(&$r) -> Result<(), ApiError> {
                $body
                #[allow(unreachable_code)]
                Ok(())
            }
        })*
    };
}

bounds! {
    // ---- WeirClient ----
    v1::SubmitPipelineHeader => |self| {
        at_most("file_name", &self.file_name, MAX_INSTANCE)?;
        at_most("bundle_digest", &self.bundle_digest, MAX_DIGEST)?;
    }
    v1::ListPipelinesRequest => |self| { at_most("page_token", &self.page_token, MAX_NAME)?; }
    v1::StartRunRequest => |self| {
        match &self.pipeline {
            Some(v1::start_run_request::Pipeline::Name(n)) => at_most("pipeline", n, MAX_NAME)?,
            Some(v1::start_run_request::Pipeline::Version(v)) => at_most("version", v, MAX_DIGEST)?,
            None => {}
        }
        params("param", &self.params)?;
    }
    v1::PlanRunRequest => |self| {
        match &self.pipeline {
            Some(v1::plan_run_request::Pipeline::Name(n)) => at_most("pipeline", n, MAX_NAME)?,
            Some(v1::plan_run_request::Pipeline::Version(v)) => at_most("version", v, MAX_DIGEST)?,
            // The YAML is bounded by the engine's limits when it is loaded, as in a submission.
            Some(v1::plan_run_request::Pipeline::Source(f)) => {
                at_most("source.file_name", &f.file_name, MAX_INSTANCE)?;
                at_most("source.bundle_digest", &f.bundle_digest, MAX_DIGEST)?;
            }
            None => {}
        }
        params("param", &self.params)?;
    }
    v1::GetRunRequest => |self| {
        at_most("run_id", &self.run_id, MAX_NAME)?;
        at_most("step_page_token", &self.step_page_token, MAX_NAME)?;
    }
    v1::ListRunsRequest => |self| {
        at_most("pipeline", &self.pipeline, MAX_NAME)?;
        at_most("page_token", &self.page_token, MAX_INSTANCE)?;
        at_most("trigger", &self.trigger, MAX_NAME)?;
    }
    v1::WatchRunRequest => |self| { at_most("run_id", &self.run_id, MAX_NAME)?; }
    v1::CancelRunRequest => |self| {
        at_most("run_id", &self.run_id, MAX_NAME)?;
        at_most("reason", &self.reason, MAX_TEXT)?;
    }
    v1::RetryRunRequest => |self| {
        at_most("run_id", &self.run_id, MAX_NAME)?;
        at_most("from_step", &self.from_step, MAX_NAME)?;
    }
    v1::StreamLogsRequest => |self| {
        at_most("run_id", &self.run_id, MAX_NAME)?;
        at_most("step", &self.step, MAX_INSTANCE)?;
    }
    v1::GetArtifactRequest => |self| {
        at_most("run_id", &self.run_id, MAX_NAME)?;
        at_most("step", &self.step, MAX_INSTANCE)?;
        at_most("path", &self.path, MAX_INSTANCE)?;
    }
    v1::ListSchedulesRequest => |self| { at_most("pipeline", &self.pipeline, MAX_NAME)?; }
    v1::PauseScheduleRequest => |self| { at_most("pipeline", &self.pipeline, MAX_NAME)?; }
    v1::ResumeScheduleRequest => |self| { at_most("pipeline", &self.pipeline, MAX_NAME)?; }
    v1::BackfillRequest => |self| {
        at_most("pipeline", &self.pipeline, MAX_NAME)?;
        at_most("from", &self.from, MAX_NAME)?;
        at_most("to", &self.to, MAX_NAME)?;
    }
    v1::ExplainCacheRequest => |self| {
        at_most("run_id", &self.run_id, MAX_NAME)?;
        at_most("step", &self.step, MAX_INSTANCE)?;
    }
    v1::MetricHistoryRequest => |self| {
        at_most("pipeline", &self.pipeline, MAX_NAME)?;
        at_most("metric", &self.metric, MAX_NAME)?;
        at_most("step", &self.step, MAX_INSTANCE)?;
    }
    v1::GetLineageRequest => |self| { at_most("target", &self.target, MAX_NAME)?; }
    v1::FireWebhookRequest => |self| {
        at_most("pipeline", &self.pipeline, MAX_NAME)?;
        at_most("idempotency_key", &self.idempotency_key, crate::server::triggers::MAX_KEY_LEN)?;
        at_most("payload_json", &self.payload_json, crate::web::MAX_HOOK_BODY)?;
    }
    v1::ListModelsRequest => |self| {}
    v1::ListWorkersRequest => |self| {}
    v1::DeleteRunsRequest => |self| {
        if self.run_ids.len() > MAX_DELETE {
            return Err(ApiError::Invalid(format!(
                "{} runs in one delete; at most {MAX_DELETE} are accepted: delete them in parts",
                self.run_ids.len()
            )));
        }
        for id in &self.run_ids {
            at_most("run_ids", id, MAX_NAME)?;
        }
    }
    v1::DeletePipelineRequest => |self| { at_most("name", &self.name, MAX_NAME)?; }
    v1::GcRequest => |self| {}
    v1::ListNotificationsRequest => |self| {}
    v1::RetryNotificationRequest => |self| { at_most("id", &self.id, MAX_NAME)?; }
    v1::BackupRequest => |self| {}
    v1::ApproveRequest => |self| {
        at_most("run_id", &self.run_id, MAX_NAME)?;
        at_most("step", &self.step, MAX_INSTANCE)?;
        at_most("comment", &self.comment, MAX_TEXT)?;
        at_most("decided_by", &self.decided_by, MAX_NAME)?;
    }
    v1::GetModelRequest => |self| { at_most("name", &self.name, MAX_NAME)?; }
    v1::DiffModelExplanationsRequest => |self| { at_most("model", &self.model, MAX_NAME)?; }
    v1::PromoteModelRequest => |self| {
        at_most("name", &self.name, MAX_NAME)?;
        at_most("alias", &self.alias, MAX_NAME)?;
        at_most("reason", &self.reason, MAX_TEXT)?;
    }
    v1::RollbackModelRequest => |self| {
        at_most("name", &self.name, MAX_NAME)?;
        at_most("alias", &self.alias, MAX_NAME)?;
        at_most("reason", &self.reason, MAX_TEXT)?;
    }
    v1::GetModelArtifactRequest => |self| { at_most("target", &self.target, MAX_NAME)?; }
    v1::DecideAliasMoveRequest => |self| {
        at_most("model", &self.model, MAX_NAME)?;
        at_most("target", &self.target, MAX_NAME)?;
        at_most("comment", &self.comment, MAX_TEXT)?;
        at_most("decided_by", &self.decided_by, MAX_NAME)?;
    }

    // ---- WeirWorker ----
    v1::RegisterRequest => |self| {
        at_most("name", &self.name, MAX_NAME)?;
        at_most("version", &self.version, MAX_NAME)?;
        at_most("previous_worker_id", &self.previous_worker_id, MAX_NAME)?;
        at_most("previous_session", &self.previous_session, MAX_NAME)?;
        for (k, v) in &self.labels {
            at_most("label name", k, MAX_NAME)?;
            at_most(&format!("label {}", shown(k)), v, MAX_NAME)?;
        }
        for g in &self.gpus {
            at_most("gpu model", &g.model, MAX_NAME)?;
        }
        if self.ahead > 0 && self.ahead >= self.capacity {
            return Err(ApiError::Invalid(format!(
                "ahead ({}) must be less than capacity ({}): the attempts held ahead are part of it",
                self.ahead, self.capacity
            )));
        }
    }
    v1::LeaseRequest => |self| { at_most("worker_id", &self.worker_id, MAX_NAME)?; }
    v1::HeartbeatRequest => |self| {
        at_most("worker_id", &self.worker_id, MAX_NAME)?;
        for a in &self.attempts {
            attempt("attempts", Some(a))?;
        }
    }
    v1::ReportRequest => |self| {
        at_most("worker_id", &self.worker_id, MAX_NAME)?;
        attempt("attempt", self.attempt.as_ref())?;
        if let Some(v1::report_request::Outcome::Released(r)) = &self.outcome {
            at_most("released reason", &r.reason, MAX_MESSAGE)?;
        }
        if let Some(v1::report_request::Outcome::Succeeded(s)) = &self.outcome {
            for e in s.outputs.iter().flat_map(|m| &m.files) {
                at_most("outputs path", &e.path, MAX_INSTANCE)?;
                at_most("outputs digest", &e.digest, MAX_DIGEST)?;
            }
        }
    }
    v1::UploadLogsRequest => |self| {
        at_most("worker_id", &self.worker_id, MAX_NAME)?;
        attempt("attempt", self.attempt.as_ref())?;
    }
    v1::UploadArtifactHeader => |self| {
        at_most("worker_id", &self.worker_id, MAX_NAME)?;
        attempt("attempt", self.attempt.as_ref())?;
        at_most("path", &self.path, MAX_INSTANCE)?;
        at_most("digest", &self.digest, MAX_DIGEST)?;
    }
    v1::DownloadBlobRequest => |self| {
        at_most("worker_id", &self.worker_id, MAX_NAME)?;
        at_most("digest", &self.digest, MAX_DIGEST)?;
    }
    v1::DownloadBundleRequest => |self| {
        at_most("worker_id", &self.worker_id, MAX_NAME)?;
        at_most("digest", &self.digest, MAX_DIGEST)?;
    }
    v1::UploadMetricsRequest => |self| {
        at_most("worker_id", &self.worker_id, MAX_NAME)?;
        attempt("attempt", self.attempt.as_ref())?;
        if self.points.len() > crate::server::live_metrics::MAX_BATCH {
            return Err(ApiError::Invalid(format!(
                "{} points in one request; at most {} are accepted",
                self.points.len(),
                crate::server::live_metrics::MAX_BATCH
            )));
        }
        for p in &self.points {
            at_most("points name", &p.name, MAX_NAME)?;
        }
    }
    v1::GetStepMetricsRequest => |self| {
        at_most("run_id", &self.run_id, MAX_NAME)?;
        at_most("step", &self.step, MAX_INSTANCE)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(r: &impl Bounded) -> Result<(), String> {
        r.check().map_err(|e| e.to_string())
    }

    #[test]
    fn values_past_their_bound_are_refused_with_a_short_prefix() {
        let long = "é".repeat(40_000); // 80 KB, two bytes a character: the cut is on a boundary
        let err = check(&v1::GetRunRequest { run_id: long.clone(), ..Default::default() }).unwrap_err();
        assert!(
            err.starts_with("run_id is 80000 bytes long; at most 256 are accepted (it starts \"éééééééééééé\"...)"),
            "{err}"
        );
        assert!(err.len() < 150, "{err}");

        let mut params = HashMap::new();
        params.insert("rows".to_string(), "9".repeat(MAX_PARAM + 1));
        let err = check(&v1::StartRunRequest { params, ..Default::default() }).unwrap_err();
        assert!(err.starts_with("param rows is 16385 bytes long"), "{err}");

        let err = check(&v1::DownloadBlobRequest { digest: "a".repeat(65), ..Default::default() }).unwrap_err();
        assert!(err.starts_with("digest is 65 bytes long; at most 64"), "{err}");
    }

    #[test]
    fn a_worker_holds_ahead_fewer_attempts_than_its_capacity() {
        let register = |capacity, ahead| check(&v1::RegisterRequest { capacity, ahead, ..Default::default() });
        assert_eq!(register(4, 2), Ok(()));
        assert_eq!(register(0, 0), Ok(()), "no limit, nothing said of holding");
        for (capacity, ahead) in [(2, 2), (1, 3), (0, 1)] {
            let err = register(capacity, ahead).unwrap_err();
            assert!(err.contains(&format!("ahead ({ahead}) must be less than capacity ({capacity})")), "{err}");
        }
    }

    #[test]
    fn statuses_are_cut_to_fit_in_headers() {
        let short = Status::invalid_argument("no run r-1");
        assert_eq!(fit(short).message(), "no run r-1");
        let long = fit(Status::not_found(format!("no run {}", "é".repeat(10_000))));
        assert_eq!(long.code(), tonic::Code::NotFound);
        assert!(long.message().len() <= MAX_MESSAGE, "{}", long.message().len());
        assert!(long.message().starts_with("no run éé") && long.message().ends_with(" more bytes cut)"));

        let many = v1::Diagnostics {
            diagnostics: (0..100)
                .map(|i| v1::Diagnostic { message: format!("problem {i}: {}", "x".repeat(2000)), ..Default::default() })
                .collect(),
        };
        let status = super::super::status::status(ApiError::Diagnostics {
            message: "invalid".into(),
            file: "p.yaml".into(),
            diagnostics: Vec::new(),
        });
        assert!(super::super::status::diagnostics(&status).is_some_and(|d| d.diagnostics.is_empty()));
        let kept = shrink_diagnostics(many).diagnostics;
        assert!(kept.len() > 5 && kept[0].message.starts_with("problem 0: xxx"), "{}", kept.len());
        use prost::Message;
        assert!(v1::Diagnostics { diagnostics: kept }.encoded_len() <= MAX_DETAILS);
    }

    #[test]
    fn values_within_bounds_pass() {
        let ok = v1::StreamLogsRequest {
            run_id: "r".repeat(MAX_NAME),
            step: "s".repeat(MAX_INSTANCE),
            ..Default::default()
        };
        assert_eq!(check(&ok), Ok(()));
        let report = v1::ReportRequest {
            worker_id: "local-1".into(),
            attempt: Some(v1::AttemptRef { run_id: "chain-20261204-101010-abcd".into(), attempt: None }),
            ..Default::default()
        };
        assert_eq!(check(&report), Ok(()));
    }
}
