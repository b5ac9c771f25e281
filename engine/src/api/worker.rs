//! The `WeirWorker` gRPC service: decodes requests, calls the engine, encodes answers. No
//! decisions here: those are in `dispatch` and `core`.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status, Streaming};
use weir_proto::v1;
use weir_proto::v1::weir_worker_server::WeirWorker;

use super::convert as wire;
use crate::store::{LogChunk, Stream};
use weir_data::artifact::{Digest, check_name};

use super::bounds::{Bounded, bounded};
use super::transfer::{self, ChunkStream, Upload};
use crate::server::core::Engine;
use crate::server::dispatch::Report;
use crate::server::error::ApiError;
use weir_core::placement::{Offer, Usage};
use weir_core::spec::Runtime;

/// The largest single output file accepted.
const MAX_ARTIFACT: u64 = 64 << 30;

pub struct WorkerApi(pub Arc<Engine>);

impl WorkerApi {
    /// With tracing on, a leased attempt's span travels as W3C `traceparent` metadata
    /// (otel.rs), on Lease and on a Report that leased the next attempt.
    fn traceparent(
        &self,
        assignment: Option<&crate::server::dispatch::Assignment>,
    ) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
        match (assignment, self.0.otel.get()) {
            (Some(a), Some(_)) => crate::otel::traceparent(&a.run, a.attempt.instance, a.attempt.number).parse().ok(),
            _ => None,
        }
    }
}

/// The answer to a worker's call that failed with `e`, marked [`weir_proto::HEARD_HEADER`] when
/// the engine heard the worker during the call (it began at `since`): the worker counts such
/// an answer as contact, as the engine counted the call, and does not fence itself while the
/// engine still counts it alive (a store that cannot write fails the calls, not the worker).
fn failed(engine: &Engine, worker: &str, session: &str, since: tokio::time::Instant, e: ApiError) -> Status {
    let mut status = Status::from(e);
    if engine.heard_since(worker, session, since) {
        status.metadata_mut().insert(weir_proto::HEARD_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    }
    status
}

/// The session secret every call after Register carries in [`wire::SESSION_HEADER`].
fn session<T>(req: &Request<T>) -> Result<String, Status> {
    let given = req.metadata().get(wire::SESSION_HEADER).and_then(|v| v.to_str().ok());
    given.filter(|s| s.len() <= 256).map(str::to_string).ok_or_else(|| {
        Status::unauthenticated(format!(
            "no worker session: call Register, then send the session it returns as `{}` on every call",
            wire::SESSION_HEADER
        ))
    })
}

fn digest(s: &str) -> Result<Digest, ApiError> {
    s.parse().map_err(|e| ApiError::Invalid(format!("digest {s:?}: {e}")))
}

#[tonic::async_trait]
impl WeirWorker for WorkerApi {
    async fn register(&self, req: Request<v1::RegisterRequest>) -> Result<Response<v1::RegisterResponse>, Status> {
        let r = bounded(req)?;
        let mut runtimes: Vec<Runtime> = r
            .runtimes()
            .filter_map(|rt| match rt {
                v1::Runtime::Process => Some(Runtime::Process),
                v1::Runtime::Docker => Some(Runtime::Docker),
                v1::Runtime::Unspecified => None,
            })
            .collect();
        if runtimes.is_empty() {
            runtimes.push(Runtime::Process); // a worker from before runtimes were named
        }
        let offer = Offer {
            labels: r.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            total: Usage { cpus_milli: r.cpus_milli, memory_bytes: r.memory_bytes, gpus: r.gpus.len() as u32 },
            runtimes,
            capacity: r.capacity,
            ahead: r.ahead,
        };
        tracing::info!(
            name = r.name,
            cpus_milli = r.cpus_milli,
            memory_bytes = r.memory_bytes,
            gpus = r.gpus.len(),
            labels = ?offer.labels,
            runtimes = ?offer.runtimes,
            "worker offers"
        );
        let previous =
            (!r.previous_worker_id.is_empty()).then_some((r.previous_worker_id.as_str(), r.previous_session.as_str()));
        let (id, session) = self.0.register(&r.name, offer, previous)?;
        tracing::info!(worker = id, capacity = r.capacity, ahead = r.ahead, version = r.version, "registered");
        Ok(Response::new(v1::RegisterResponse {
            worker_id: id,
            lease_timeout: Some(wire::duration(self.0.terms.lease_timeout)),
            heartbeat_interval: Some(wire::duration(self.0.terms.heartbeat_interval)),
            session,
        }))
    }

    async fn lease(&self, req: Request<v1::LeaseRequest>) -> Result<Response<v1::LeaseResponse>, Status> {
        let session = session(&req);
        let r = bounded(req)?;
        let session = session?;
        let wait = wire::from_duration(r.wait.as_ref()).filter(|d| !d.is_zero()).unwrap_or(Duration::from_secs(20));
        let since = self.0.clock.instant();
        let assignment = self
            .0
            .lease(&r.worker_id, &session, r.free, wait)
            .await
            .map_err(|e| failed(&self.0, &r.worker_id, &session, since, e))?;
        let traceparent = self.traceparent(assignment.as_ref());
        let mut response = Response::new(v1::LeaseResponse { assignment: assignment.map(wire::assignment) });
        if let Some(traceparent) = traceparent {
            response.metadata_mut().insert("traceparent", traceparent);
        }
        Ok(response)
    }

    async fn heartbeat(&self, req: Request<v1::HeartbeatRequest>) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let session = session(&req);
        let r = bounded(req)?;
        let session = session?;
        let attempts = r
            .attempts
            .iter()
            .map(|a| wire::from_attempt_ref(Some(a)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::from)?;
        let since = self.0.clock.instant();
        let stops = self
            .0
            .heartbeat(&r.worker_id, &session, attempts)
            .map_err(|e| failed(&self.0, &r.worker_id, &session, since, e))?;
        let stop = stops
            .into_iter()
            .map(|(run, a, reason)| v1::StopOrder { attempt: Some(wire::attempt_ref(&run, a)), reason })
            .collect();
        Ok(Response::new(v1::HeartbeatResponse { stop }))
    }

    async fn upload_metrics(
        &self,
        req: Request<v1::UploadMetricsRequest>,
    ) -> Result<Response<v1::UploadMetricsResponse>, Status> {
        let session = session(&req);
        req.get_ref().check()?;
        super::live_metrics::upload(&self.0, &session?, req)
    }

    async fn report(&self, req: Request<v1::ReportRequest>) -> Result<Response<v1::ReportResponse>, Status> {
        let session = session(&req);
        let r = bounded(req)?;
        let session = session?;
        let (run, attempt) = wire::from_attempt_ref(r.attempt.as_ref()).map_err(ApiError::from)?;
        let report = match r.outcome {
            Some(v1::report_request::Outcome::Started(_)) => Report::Started,
            Some(v1::report_request::Outcome::Succeeded(s)) => Report::Succeeded {
                metrics: wire::from_metrics(&s.metrics),
                outputs: wire::from_manifest(s.outputs.as_ref()).map_err(ApiError::from)?,
            },
            Some(v1::report_request::Outcome::Failed(f)) => Report::Failed { reason: f.reason, permanent: f.permanent },
            Some(v1::report_request::Outcome::Lost(l)) => Report::Lost { reason: l.reason },
            Some(v1::report_request::Outcome::Released(r)) => Report::Released { reason: r.reason },
            None => return Err(ApiError::Invalid("outcome: is required".into()).into()),
        };
        let since = self.0.clock.instant();
        let next = self
            .0
            .report(&r.worker_id, &session, &run, attempt, report, r.lease_next)
            .map_err(|e| failed(&self.0, &r.worker_id, &session, since, e))?;
        let traceparent = self.traceparent(next.as_ref());
        let mut response = Response::new(v1::ReportResponse { next: next.map(wire::assignment) });
        if let Some(traceparent) = traceparent {
            response.metadata_mut().insert("traceparent", traceparent);
        }
        Ok(response)
    }

    async fn upload_logs(
        &self,
        req: Request<Streaming<v1::UploadLogsRequest>>,
    ) -> Result<Response<v1::UploadLogsResponse>, Status> {
        let session = session(&req);
        let mut stream = req.into_inner();
        let mut stored = 0u64;
        let mut checked = None;
        while let Some(msg) = stream.message().await? {
            msg.check()?;
            let session = session.as_ref().map_err(Clone::clone)?;
            let (run, attempt) = wire::from_attempt_ref(msg.attempt.as_ref()).map_err(ApiError::from)?;
            if checked.as_ref() != Some(&(run.clone(), attempt)) {
                self.0.check_dispatched(&msg.worker_id, session, &run, attempt)?;
                checked = Some((run.clone(), attempt));
            }
            let chunks: Vec<LogChunk> = msg
                .chunks
                .into_iter()
                .map(|c| LogChunk {
                    stream: if c.stream == v1::LogStream::Stderr as i32 { Stream::Stderr } else { Stream::Stdout },
                    at: wire::from_timestamp(c.time.as_ref()).unwrap_or_else(|| self.0.clock.now()),
                    data: c.data,
                })
                .collect();
            if chunks.is_empty() {
                continue;
            }
            self.0.append_logs(&run, attempt, &chunks)?;
            stored += chunks.len() as u64;
        }
        Ok(Response::new(v1::UploadLogsResponse { chunks: stored }))
    }

    async fn upload_artifact(
        &self,
        req: Request<Streaming<v1::UploadArtifactRequest>>,
    ) -> Result<Response<v1::UploadArtifactResponse>, Status> {
        let session = session(&req);
        let mut stream = req.into_inner();
        let header = match stream.message().await?.and_then(|m| m.part) {
            Some(v1::upload_artifact_request::Part::Header(h)) => h,
            _ => return Err(ApiError::Invalid("the first message of an upload must be its header".into()).into()),
        };
        header.check()?;
        let session = session?;
        let (run, attempt) = wire::from_attempt_ref(header.attempt.as_ref()).map_err(ApiError::from)?;
        check_name(&header.path).map_err(|e| ApiError::Invalid(format!("path: {e}")))?;
        self.0.check_live(&header.worker_id, &session, &run, attempt)?;
        if header.size > MAX_ARTIFACT {
            return Err(ApiError::Invalid(format!(
                "{} is {} bytes; at most {MAX_ARTIFACT} are accepted",
                header.path, header.size
            ))
            .into());
        }
        let expected = if header.digest.is_empty() { None } else { Some(digest(&header.digest)?) };
        let mut upload = Upload::start(&self.0, format!("upload of {} for {run} {attempt}", header.path), header.size);
        while let Some(msg) = stream.message().await? {
            match msg.part {
                Some(v1::upload_artifact_request::Part::Chunk(bytes)) => upload.push(bytes).await?,
                _ => return Err(ApiError::Invalid("only chunks may follow an upload's header".into()).into()),
            }
        }
        let (got, size) = upload.finish().await?;
        if size != header.size {
            return Err(ApiError::Invalid(format!(
                "{}: {size} bytes arrived, the header said {}",
                header.path, header.size
            ))
            .into());
        }
        if expected.is_some_and(|d| d != got) {
            return Err(ApiError::Invalid(format!(
                "{}: the bytes hash to {got}, the header said {}",
                header.path, header.digest
            ))
            .into());
        }
        Ok(Response::new(v1::UploadArtifactResponse { digest: got.to_string(), size }))
    }

    type DownloadBlobStream = ChunkStream;

    async fn download_blob(&self, req: Request<v1::DownloadBlobRequest>) -> Result<Response<ChunkStream>, Status> {
        let session = session(&req);
        let r = bounded(req)?;
        let session = session?;
        self.0.check_session(&r.worker_id, &session)?;
        Ok(Response::new(transfer::download(&self.0, digest(&r.digest)?, r.offset)?))
    }

    type DownloadBundleStream = ChunkStream;

    async fn download_bundle(&self, req: Request<v1::DownloadBundleRequest>) -> Result<Response<ChunkStream>, Status> {
        let session = session(&req);
        let r = bounded(req)?;
        let session = session?;
        self.0.check_session(&r.worker_id, &session)?;
        Ok(Response::new(transfer::download(&self.0, digest(&r.digest)?, 0)?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use tonic::Code;
    use weir_core::run::{AttemptId, Millis};
    use weir_proto::HEARD_HEADER;

    use super::*;
    use crate::server::testkit;

    /// A report of `attempt`'s failure by `worker`, with `session` as its secret.
    fn failed_report(worker: &str, session: &str, run: &str, attempt: AttemptId) -> Request<v1::ReportRequest> {
        let failed = v1::Failed { reason: "exit 1".into(), exit_code: Some(1), permanent: true };
        let mut req = Request::new(v1::ReportRequest {
            worker_id: worker.to_string(),
            attempt: Some(wire::attempt_ref(run, attempt)),
            outcome: Some(v1::report_request::Outcome::Failed(failed)),
            ..Default::default()
        });
        req.metadata_mut().insert(wire::SESSION_HEADER, session.parse().unwrap());
        req
    }

    /// A report the engine counted as a sign of life but could not store (its store fails the
    /// write, as on a full disk) fails with an answer that says the engine heard the worker,
    /// so the worker does not fence itself while the engine still counts it alive. A call the
    /// engine did not count (a session that is not the worker's) is not marked; the retry of
    /// the report succeeds once the store writes again.
    #[tokio::test]
    async fn a_call_that_fails_after_the_engine_heard_the_worker_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let e = Arc::new(testkit::engine(dir.path()));
        let run = testkit::start_run(&e, "name: one\nsteps:\n  a: {run: 'true'}\n", Millis(1));
        let (worker, session) = testkit::register(&e);
        let a = e.try_lease(&worker).unwrap().expect("a is ready").attempt;
        let api = WorkerApi(e.clone());

        e.store.fail_next_batch.store(true, Relaxed);
        let status = api.report(failed_report(&worker, &session, &run, a)).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert_eq!(status.metadata().get(HEARD_HEADER).map(|v| v.to_str().unwrap()), Some("1"), "{status:?}");

        let status = api.report(failed_report(&worker, "not-the-session", &run, a)).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.metadata().get(HEARD_HEADER).is_none(), "{status:?}");

        let answer = api.report(failed_report(&worker, &session, &run, a)).await.unwrap();
        assert!(answer.metadata().get(HEARD_HEADER).is_none());
    }
}
