//! The gRPC side of live metrics (`live_metrics.proto`): UploadMetrics for workers and
//! GetStepMetrics for clients, decoded here and answered by `server::live_metrics`. A point
//! whose value is not finite or whose name is empty is refused with the whole request
//! (INVALID_ARGUMENT): the worker's parser never sends one.

use tonic::{Request, Response, Status};
use weir_proto::v1;

use super::bounds::bounded;
use super::convert as wire;
use crate::server::core::Engine;
use crate::server::error::ApiError;
use crate::store::LivePoint;

/// UploadMetrics, once the caller has its session secret.
pub(super) fn upload(
    engine: &Engine,
    session: &str,
    req: Request<v1::UploadMetricsRequest>,
) -> Result<Response<v1::UploadMetricsResponse>, Status> {
    let r = bounded(req)?;
    let (run, attempt) = wire::from_attempt_ref(r.attempt.as_ref()).map_err(ApiError::from)?;
    let now = engine.clock.now();
    let points = r
        .points
        .into_iter()
        .map(|p| {
            if p.name.is_empty() || !p.value.is_finite() {
                return Err(ApiError::Invalid(format!(
                    "point {:?} = {}: a point needs a name and a finite value",
                    p.name, p.value
                )));
            }
            Ok(LivePoint {
                at: wire::from_timestamp(p.time.as_ref()).unwrap_or(now),
                name: p.name,
                value: p.value,
                step: p.step,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let up = engine.upload_metrics(&r.worker_id, session, &run, attempt, &points, u64::from(r.malformed))?;
    Ok(Response::new(v1::UploadMetricsResponse {
        accepted: up.accepted as u32,
        refused: up.refused as u32,
        message: up.message.unwrap_or_default(),
    }))
}

/// GetStepMetrics.
pub(super) fn get(
    engine: &Engine,
    req: Request<v1::GetStepMetricsRequest>,
) -> Result<Response<v1::GetStepMetricsResponse>, Status> {
    let r = bounded(req)?;
    crate::server::runs::require_run_id(&r.run_id)?;
    let m = engine.step_metrics(&r.run_id, &r.step, r.attempt)?;
    let series = m
        .series
        .into_iter()
        .map(|(name, points)| v1::LiveMetricSeries { name, points: points.into_iter().map(point).collect() })
        .collect();
    Ok(Response::new(v1::GetStepMetricsResponse {
        instance: m.instance,
        attempt: m.attempt,
        attempts: m.attempts,
        series,
        refused: m.summary.refused,
        malformed: m.summary.malformed,
        limit: m.limit,
    }))
}

fn point(p: LivePoint) -> v1::LiveMetricPoint {
    v1::LiveMetricPoint { name: p.name, value: p.value, step: p.step, time: Some(wire::timestamp(p.at)) }
}
