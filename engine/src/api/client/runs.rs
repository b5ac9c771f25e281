//! `WeirClient`'s calls about pipelines and runs: submit a pipeline (with its bundle), list
//! pipelines, start a run, get one, list them. Decode, call the engine, encode.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};
use weir_proto::v1;

use super::super::AuditNote;
use super::super::bounds::{Bounded, bounded};
use super::super::convert as wire;
use super::super::transfer::Upload;
use crate::server::core::Engine;
use crate::server::error::ApiError;
use weir_core::run::{InstanceId, RunState};
use weir_data::artifact::Digest;
use weir_data::bundle::{BundleLimits, is_digest};

fn page_size(requested: u32, default: usize, max: usize) -> usize {
    if requested == 0 { default } else { (requested as usize).min(max) }
}

pub(super) async fn submit_pipeline(
    engine: &Arc<Engine>,
    req: Request<Streaming<v1::SubmitPipelineRequest>>,
) -> Result<Response<v1::SubmitPipelineResponse>, Status> {
    let note = req.extensions().get::<AuditNote>().cloned();
    let mut stream = req.into_inner();
    let header = match stream.message().await?.and_then(|m| m.part) {
        Some(v1::submit_pipeline_request::Part::Header(h)) => h,
        _ => return Err(ApiError::Invalid("the first message of a submission must be its header".into()).into()),
    };
    header.check()?;
    let pipeline = Arc::new(engine.check_pipeline(&header.yaml, &header.file_name)?);
    engine.check_notify_secrets(&pipeline, &header.yaml, &header.file_name)?;
    if let Some(note) = &note {
        note.push(format!("pipeline={}", pipeline.name()));
    }
    let limits = BundleLimits::default();
    let bundle = if header.bundle_digest.is_empty() && header.bundle_size == 0 {
        None
    } else {
        if !is_digest(&header.bundle_digest) {
            return Err(ApiError::Invalid(format!(
                "bundle_digest {:?} is not a BLAKE3 hex digest",
                header.bundle_digest
            ))
            .into());
        }
        if header.bundle_size > limits.max_archive_len() {
            return Err(ApiError::Invalid(format!(
                "the bundle is {} bytes; at most {} are accepted (list large files in .weirignore)",
                header.bundle_size,
                limits.max_archive_len()
            ))
            .into());
        }
        let expected: Digest =
            header.bundle_digest.parse().map_err(|e| ApiError::Invalid(format!("bundle_digest: {e}")))?;
        let mut upload = None;
        while let Some(msg) = stream.message().await? {
            match msg.part {
                Some(v1::submit_pipeline_request::Part::BundleChunk(_)) if header.validate_only => {
                    return Err(ApiError::Invalid("a validate-only submission carries no bundle chunks".into()).into());
                }
                Some(v1::submit_pipeline_request::Part::BundleChunk(bytes)) => {
                    let up = upload.get_or_insert_with(|| {
                        Upload::start(engine, format!("bundle of {}", pipeline.name()), header.bundle_size)
                    });
                    up.push(bytes).await?;
                }
                _ => return Err(ApiError::Invalid("only bundle chunks may follow the header".into()).into()),
            }
        }
        match upload {
            Some(up) => {
                let (got, size) = up.finish().await?;
                if got != expected || size != header.bundle_size {
                    return Err(ApiError::Invalid(format!(
                        "the bundle arrived as {size} bytes hashing to {got}; the header said {} bytes, {expected}",
                        header.bundle_size
                    ))
                    .into());
                }
            }
            // Validating only: the bytes are not needed, and nothing is stored.
            None if header.validate_only || engine.blobs().contains(&expected) => {}
            None => {
                return Err(ApiError::Invalid(format!("bundle {expected} is not stored: send its bytes")).into());
            }
        }
        Some(expected)
    };
    let (version, created, validated_only) = if header.validate_only {
        let (version, created) = engine.would_submit(&pipeline, bundle.as_ref())?;
        (version, created, true)
    } else {
        let (version, created) = engine.submit(&pipeline, &header.yaml, &header.file_name, bundle)?;
        (version, created, false)
    };
    Ok(Response::new(v1::SubmitPipelineResponse {
        name: pipeline.name().to_string(),
        version,
        created,
        warnings: Vec::new(),
        steps: pipeline.steps().len() as u32,
        instances: pipeline.instance_count() as u32,
        validated_only,
    }))
}

pub(super) async fn list_pipelines(
    engine: &Arc<Engine>,
    req: Request<v1::ListPipelinesRequest>,
) -> Result<Response<v1::ListPipelinesResponse>, Status> {
    let r = bounded(req)?;
    let (pipelines, next) = engine.pipelines(&r.page_token, page_size(r.page_size, 100, 1000))?;
    let out = pipelines.into_iter().map(wire::pipeline_summary).collect();
    Ok(Response::new(v1::ListPipelinesResponse { pipelines: out, next_page_token: next }))
}

pub(super) async fn start_run(
    engine: &Arc<Engine>,
    req: Request<v1::StartRunRequest>,
) -> Result<Response<v1::StartRunResponse>, Status> {
    let note = req.extensions().get::<AuditNote>().cloned();
    let by = req.extensions().get::<crate::access::Principal>().map(|p| p.name.clone());
    let r = bounded(req)?;
    let overrides = r.params.into_iter().collect::<BTreeMap<_, _>>().into_iter().collect();
    let run_id = engine.start_run(wire::start_target(r.pipeline), overrides, r.no_cache, by).await?;
    let (record, steps, message) = engine.load_run(&run_id)?;
    if let Some(note) = note {
        note.push(format!("pipeline={} run={run_id}", record.pipeline));
    }
    Ok(Response::new(v1::StartRunResponse { run: Some(wire::run(&record, &steps, message)) }))
}

pub(super) async fn get_run(
    engine: &Arc<Engine>,
    req: Request<v1::GetRunRequest>,
) -> Result<Response<v1::GetRunResponse>, Status> {
    let r = bounded(req)?;
    let from: usize = if r.step_page_token.is_empty() {
        0
    } else {
        r.step_page_token
            .parse()
            .map_err(|_| ApiError::Invalid("step_page_token was not issued by this server".into()))?
    };
    let size = page_size(r.step_page_size, 1000, 10_000);
    let (record, page, message) = engine.load_run_page(&r.run_id, from, size)?;
    let waiting = engine.waiting(&r.run_id);
    let stages = engine.stages(&record);
    let mut views = Vec::new();
    for (n, s) in page.steps.iter().enumerate() {
        let i = InstanceId((from + n) as u32);
        let (stage, outputs) = engine.step_extras(&record, i, s, &stages)?;
        let mut view = wire::step(i, s, stage, outputs.as_ref());
        if let Some(w) = waiting.get(&i) {
            wire::waiting(&mut view, w);
        }
        views.push(view);
    }
    // Saturating: a forged token near usize::MAX must give an empty last page, not wrap.
    let end = from.saturating_add(size);
    let next = if end < page.total { end.to_string() } else { String::new() };
    Ok(Response::new(v1::GetRunResponse {
        run: Some(wire::run_counted(&record, page.total, page.done, page.awaiting_approval, message)),
        steps: views,
        next_step_page_token: next,
    }))
}

pub(super) async fn list_runs(
    engine: &Arc<Engine>,
    req: Request<v1::ListRunsRequest>,
) -> Result<Response<v1::ListRunsResponse>, Status> {
    let r = bounded(req)?;
    let states: Vec<RunState> = r.states().filter_map(wire::from_run_state).collect();
    let size = page_size(r.page_size, 50, 1000);
    let (listed, next) = engine.list_runs(&r.pipeline, &states, &r.trigger, size, &r.page_token)?;
    let runs = listed.into_iter().map(wire::run_listing).collect();
    Ok(Response::new(v1::ListRunsResponse { runs, next_page_token: next }))
}
