//! The `WeirClient` gRPC service: one thin method per call, each checking its request's bounds,
//! decoding it, calling the engine's services and encoding the answer. Pipelines and runs
//! (submit, start, get, list) are in `client/runs.rs`, the server-streaming calls (watch, logs,
//! artifacts) in `client/streams.rs`; the rest is short enough to live here.

mod runs;
mod streams;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use weir_proto::v1;
use weir_proto::v1::weir_client_server::WeirClient;

use super::bounds::bounded;
use super::convert as wire;
use super::transfer;
use crate::server::core::Engine;

pub struct ClientApi(pub Arc<Engine>);

type Stream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl WeirClient for ClientApi {
    async fn submit_pipeline(
        &self,
        req: Request<Streaming<v1::SubmitPipelineRequest>>,
    ) -> Result<Response<v1::SubmitPipelineResponse>, Status> {
        runs::submit_pipeline(&self.0, req).await
    }

    async fn list_pipelines(
        &self,
        req: Request<v1::ListPipelinesRequest>,
    ) -> Result<Response<v1::ListPipelinesResponse>, Status> {
        runs::list_pipelines(&self.0, req).await
    }

    async fn start_run(&self, req: Request<v1::StartRunRequest>) -> Result<Response<v1::StartRunResponse>, Status> {
        runs::start_run(&self.0, req).await
    }

    async fn get_run(&self, req: Request<v1::GetRunRequest>) -> Result<Response<v1::GetRunResponse>, Status> {
        runs::get_run(&self.0, req).await
    }

    async fn list_runs(&self, req: Request<v1::ListRunsRequest>) -> Result<Response<v1::ListRunsResponse>, Status> {
        runs::list_runs(&self.0, req).await
    }

    type WatchRunStream = Stream<v1::RunEvent>;

    async fn watch_run(&self, req: Request<v1::WatchRunRequest>) -> Result<Response<Self::WatchRunStream>, Status> {
        streams::watch_run(&self.0, req).await
    }

    async fn cancel_run(&self, req: Request<v1::CancelRunRequest>) -> Result<Response<v1::CancelRunResponse>, Status> {
        let r = bounded(req)?;
        let engine = &self.0;
        engine.cancel(&r.run_id, &r.reason)?;
        let (record, steps, message) = engine.load_run(&r.run_id)?;
        Ok(Response::new(v1::CancelRunResponse { run: Some(wire::run(&record, &steps, message)) }))
    }

    async fn retry_run(&self, req: Request<v1::RetryRunRequest>) -> Result<Response<v1::RetryRunResponse>, Status> {
        let r = bounded(req)?;
        let engine = &self.0;
        let from = (!r.from_step.is_empty()).then_some(r.from_step.as_str());
        let (run_id, rerun, reused) = engine.retry(&r.run_id, from, r.dry_run)?;
        let run = match run_id {
            Some(run_id) => {
                tracing::info!(run = run_id, of = r.run_id, from, "retry started");
                let (record, steps, message) = engine.load_run(&run_id)?;
                Some(wire::run(&record, &steps, message))
            }
            None => None,
        };
        Ok(Response::new(v1::RetryRunResponse { run, rerun, reused }))
    }

    type StreamLogsStream = Stream<v1::LogChunk>;

    async fn stream_logs(
        &self,
        req: Request<v1::StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        streams::stream_logs(&self.0, req).await
    }

    type GetArtifactStream = Stream<v1::GetArtifactResponse>;

    async fn get_artifact(
        &self,
        req: Request<v1::GetArtifactRequest>,
    ) -> Result<Response<Self::GetArtifactStream>, Status> {
        streams::get_artifact(&self.0, req).await
    }

    async fn list_schedules(
        &self,
        req: Request<v1::ListSchedulesRequest>,
    ) -> Result<Response<v1::ListSchedulesResponse>, Status> {
        let r = bounded(req)?;
        let schedules = self.0.schedules(&r.pipeline)?;
        Ok(Response::new(v1::ListSchedulesResponse { schedules: schedules.into_iter().map(wire::schedule).collect() }))
    }

    async fn pause_schedule(
        &self,
        req: Request<v1::PauseScheduleRequest>,
    ) -> Result<Response<v1::PauseScheduleResponse>, Status> {
        let schedule = self.0.pause(&bounded(req)?.pipeline, true)?;
        Ok(Response::new(v1::PauseScheduleResponse { schedule: Some(wire::schedule(schedule)) }))
    }

    async fn resume_schedule(
        &self,
        req: Request<v1::ResumeScheduleRequest>,
    ) -> Result<Response<v1::ResumeScheduleResponse>, Status> {
        let schedule = self.0.pause(&bounded(req)?.pipeline, false)?;
        Ok(Response::new(v1::ResumeScheduleResponse { schedule: Some(wire::schedule(schedule)) }))
    }

    async fn backfill(&self, req: Request<v1::BackfillRequest>) -> Result<Response<v1::BackfillResponse>, Status> {
        let r = bounded(req)?;
        let ticks = self.0.request_backfill(&r.pipeline, &r.from, &r.to, r.dry_run)?;
        let timezone = self.0.schedules(&r.pipeline)?.into_iter().next().map(|s| s.record.timezone).unwrap_or_default();
        Ok(Response::new(v1::BackfillResponse {
            ticks: ticks.into_iter().map(wire::backfill_tick).collect(),
            timezone,
        }))
    }

    // Step caching: server/cache.rs.

    async fn plan_run(&self, req: Request<v1::PlanRunRequest>) -> Result<Response<v1::PlanRunResponse>, Status> {
        let r = bounded(req)?;
        let params = r.params.into_iter().collect();
        let (version, steps) = self.0.plan_run(wire::plan_target(r.pipeline), params, r.no_cache)?;
        Ok(Response::new(v1::PlanRunResponse { version, steps: steps.into_iter().map(wire::planned_step).collect() }))
    }

    async fn explain_cache(
        &self,
        req: Request<v1::ExplainCacheRequest>,
    ) -> Result<Response<v1::ExplainCacheResponse>, Status> {
        let r = bounded(req)?;
        crate::server::runs::require_run_id(&r.run_id)?;
        Ok(Response::new(wire::explanation(self.0.explain_cache(&r.run_id, &r.step)?)))
    }

    // Tracking and lineage: server/tracking.rs.

    async fn metric_history(
        &self,
        req: Request<v1::MetricHistoryRequest>,
    ) -> Result<Response<v1::MetricHistoryResponse>, Status> {
        let r = bounded(req)?;
        Ok(Response::new(wire::metric_history(self.0.metric_history(&r.pipeline, &r.metric, &r.step, r.limit)?)))
    }

    async fn get_lineage(
        &self,
        req: Request<v1::GetLineageRequest>,
    ) -> Result<Response<v1::GetLineageResponse>, Status> {
        let r = bounded(req)?;
        Ok(Response::new(wire::lineage(self.0.lineage(&r.target, r.down, r.depth)?)))
    }

    async fn fire_webhook(
        &self,
        req: Request<v1::FireWebhookRequest>,
    ) -> Result<Response<v1::FireWebhookResponse>, Status> {
        let r = bounded(req)?;
        let engine = self.0.clone();
        let (run_id, created) = tokio::task::spawn_blocking(move || {
            engine.accept_delivery(&r.pipeline, &r.idempotency_key, r.payload_json.as_bytes())
        })
        .await
        .map_err(|e| crate::server::ApiError::Internal(format!("the delivery failed: {e}")))??;
        Ok(Response::new(v1::FireWebhookResponse { run_id, created }))
    }

    // The model registry: server/registry.rs.

    async fn list_workers(
        &self,
        req: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        bounded(req)?;
        let workers = self.0.workers().into_iter().map(wire::worker_info).collect();
        Ok(Response::new(v1::ListWorkersResponse { workers }))
    }

    async fn get_step_metrics(
        &self,
        req: Request<v1::GetStepMetricsRequest>,
    ) -> Result<Response<v1::GetStepMetricsResponse>, Status> {
        super::live_metrics::get(&self.0, req)
    }

    // Retention: server/retention.rs.

    async fn delete_runs(
        &self,
        req: Request<v1::DeleteRunsRequest>,
    ) -> Result<Response<v1::DeleteRunsResponse>, Status> {
        let r = bounded(req)?;
        let engine = self.0.clone();
        let done = tokio::task::spawn_blocking(move || engine.delete_runs(&r.run_ids))
            .await
            .map_err(|e| Status::internal(format!("delete runs: {e}")))??;
        let runs = done
            .into_iter()
            .map(|d| v1::RunDeletion { run_id: d.run, deleted: d.refused.is_empty(), refused: d.refused })
            .collect();
        Ok(Response::new(v1::DeleteRunsResponse { runs }))
    }

    async fn delete_pipeline(
        &self,
        req: Request<v1::DeletePipelineRequest>,
    ) -> Result<Response<v1::DeletePipelineResponse>, Status> {
        let name = bounded(req)?.name;
        let engine = self.0.clone();
        let n = tokio::task::spawn_blocking(move || engine.delete_pipeline(&name))
            .await
            .map_err(|e| Status::internal(format!("delete pipeline: {e}")))??;
        Ok(Response::new(v1::DeletePipelineResponse { runs_deleted: n as u32 }))
    }

    async fn approve(&self, req: Request<v1::ApproveRequest>) -> Result<Response<v1::ApproveResponse>, Status> {
        let who =
            req.extensions().get::<crate::access::Principal>().map_or("anonymous".to_string(), |p| p.name.clone());
        let r = bounded(req)?;
        let decide = crate::server::approvals::Decide {
            run_id: &r.run_id,
            step: &r.step,
            approve: r.approve,
            comment: &r.comment,
            name: &r.decided_by,
            // The token's holder (the guard's principal): the decision names the person.
            credential: &who,
        };
        let (state, message) = self.0.approve(&decide)?;
        Ok(Response::new(v1::ApproveResponse {
            state: wire::step_state(state) as i32,
            message: message.unwrap_or_default(),
        }))
    }

    async fn gc(&self, req: Request<v1::GcRequest>) -> Result<Response<v1::GcResponse>, Status> {
        let dry_run = bounded(req)?.dry_run;
        let engine = self.0.clone();
        let report = tokio::task::spawn_blocking(move || engine.collect(dry_run))
            .await
            .map_err(|e| Status::internal(format!("gc: {e}")))??;
        let runs = report.runs.into_iter().map(|(pipeline, run_ids)| v1::PipelineRuns { pipeline, run_ids }).collect();
        let s = report.swept;
        Ok(Response::new(v1::GcResponse { runs, blobs: s.blobs, bytes: s.bytes, temp_files: s.temp_files }))
    }

    // Notifications: server/notify.rs.

    async fn list_notifications(
        &self,
        req: Request<v1::ListNotificationsRequest>,
    ) -> Result<Response<v1::ListNotificationsResponse>, Status> {
        let dead = bounded(req)?.dead;
        let engine = self.0.clone();
        let listed = tokio::task::spawn_blocking(move || engine.list_notifications(dead))
            .await
            .map_err(|e| Status::internal(format!("list notifications: {e}")))??;
        let notifications = listed.into_iter().map(wire::notification).collect();
        Ok(Response::new(v1::ListNotificationsResponse { notifications }))
    }

    async fn retry_notification(
        &self,
        req: Request<v1::RetryNotificationRequest>,
    ) -> Result<Response<v1::RetryNotificationResponse>, Status> {
        let id = bounded(req)?.id;
        let engine = self.0.clone();
        let d = tokio::task::spawn_blocking(move || engine.retry_notification(&id))
            .await
            .map_err(|e| Status::internal(format!("retry notification: {e}")))??;
        let receiver = crate::server::notify::receiver(d.target.url());
        let listed = crate::server::notify::Listed { delivery: d, receiver };
        Ok(Response::new(v1::RetryNotificationResponse { notification: Some(wire::notification(listed)) }))
    }

    async fn list_models(
        &self,
        req: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        bounded(req)?;
        let models = self.0.list_models()?.into_iter().map(wire::model_summary).collect();
        Ok(Response::new(v1::ListModelsResponse { models }))
    }

    async fn get_model(&self, req: Request<v1::GetModelRequest>) -> Result<Response<v1::GetModelResponse>, Status> {
        Ok(Response::new(wire::model(self.0.get_model(&bounded(req)?.name)?)))
    }

    async fn diff_model_explanations(
        &self,
        req: Request<v1::DiffModelExplanationsRequest>,
    ) -> Result<Response<v1::DiffModelExplanationsResponse>, Status> {
        let r = bounded(req)?;
        let diff = self.0.diff_explanations(&r.model, r.from_version, r.to_version)?;
        Ok(Response::new(wire::explanation_diff(diff)))
    }

    async fn promote_model(
        &self,
        req: Request<v1::PromoteModelRequest>,
    ) -> Result<Response<v1::PromoteModelResponse>, Status> {
        let by = req.extensions().get::<crate::access::Principal>().map(|p| p.name.clone());
        let r = bounded(req)?;
        let event = self.0.promote_model(&r.name, &r.alias, r.version, &r.reason, r.dry_run, by.as_deref())?;
        self.0.commit()?;
        Ok(Response::new(v1::PromoteModelResponse { event: Some(wire::alias_event(&event)) }))
    }

    async fn rollback_model(
        &self,
        req: Request<v1::RollbackModelRequest>,
    ) -> Result<Response<v1::RollbackModelResponse>, Status> {
        let by = req.extensions().get::<crate::access::Principal>().map(|p| p.name.clone());
        let r = bounded(req)?;
        let event = self.0.rollback_model(&r.name, &r.alias, &r.reason, r.dry_run, by.as_deref())?;
        self.0.commit()?;
        Ok(Response::new(v1::RollbackModelResponse { event: Some(wire::alias_event(&event)) }))
    }

    async fn decide_alias_move(
        &self,
        req: Request<v1::DecideAliasMoveRequest>,
    ) -> Result<Response<v1::DecideAliasMoveResponse>, Status> {
        let r = bounded(req)?;
        let decide = crate::server::protect::DecideMove {
            model: &r.model,
            target: &r.target,
            approve: r.approve,
            comment: &r.comment,
            name: &r.decided_by,
            // Client tokens carry no name yet: the caller is known only as a holder of one.
            credential: "client token",
        };
        let event = self.0.decide_alias_move(&decide)?;
        self.0.commit()?;
        Ok(Response::new(v1::DecideAliasMoveResponse { event: Some(wire::alias_event(&event)) }))
    }

    type GetModelArtifactStream = Stream<v1::GetModelArtifactResponse>;

    /// Streams a model version's file: the version first, then its bytes.
    async fn get_model_artifact(
        &self,
        req: Request<v1::GetModelArtifactRequest>,
    ) -> Result<Response<Self::GetModelArtifactStream>, Status> {
        let r = bounded(req)?;
        let (v, aliases) = self.0.model_file(&r.target)?;
        let mut chunks = transfer::download(&self.0, v.digest, 0)?;
        let head = wire::model_version(v, &aliases);
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(
            async move {
                let first =
                    v1::GetModelArtifactResponse { part: Some(v1::get_model_artifact_response::Part::Version(head)) };
                if tx.send(Ok(first)).await.is_err() {
                    return;
                }
                use tokio_stream::StreamExt;
                while let Some(c) = chunks.next().await {
                    let msg = c.map(|c| v1::GetModelArtifactResponse {
                        part: Some(v1::get_model_artifact_response::Part::Chunk(c.data)),
                    });
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
