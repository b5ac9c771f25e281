//! `WeirClient`'s calls about pipelines and runs: submit a pipeline (with its bundle), list
//! pipelines, start a run, get one, list them. Decode, call the engine, encode.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};
use weir_proto::v1;

use super::super::bounds::{Bounded, bounded};
use super::super::convert as wire;
use super::super::transfer::Upload;
use crate::server::core::Engine;
use crate::server::error::ApiError;
use crate::store::{Listed, PipelineVersion, RunFilter, Trigger};
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
    let mut stream = req.into_inner();
    let header = match stream.message().await?.and_then(|m| m.part) {
        Some(v1::submit_pipeline_request::Part::Header(h)) => h,
        _ => return Err(ApiError::Invalid("the first message of a submission must be its header".into()).into()),
    };
    header.check()?;
    let file = if header.file_name.is_empty() { "pipeline.yaml" } else { &header.file_name };
    let pipeline = weir_core::spec::load(&header.yaml, &engine.limits)
        .map_err(|d| ApiError::diagnostics("the pipeline is invalid", file, &header.yaml, d))?;
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
            None if engine.blobs().contains(&expected) => {}
            None => {
                return Err(ApiError::Invalid(format!("bundle {expected} is not stored: send its bytes")).into());
            }
        }
        Some(expected)
    };
    let version = match &bundle {
        None => pipeline.hash().to_string(),
        Some(d) => {
            let h = blake3::hash(format!("{}:{d}", pipeline.hash()).as_bytes()).to_hex();
            h[..pipeline.hash().len().min(64)].to_string()
        }
    };
    let created = engine.store.pipeline_version(&version).map_err(ApiError::from)?.is_none();
    let record = PipelineVersion {
        name: pipeline.name().to_string(),
        yaml: header.yaml.clone(),
        bundle_digest: bundle,
        submitted_at: crate::time::now(),
    };
    engine.store.put_pipeline_version(&version, &record).map_err(ApiError::from)?;
    if engine.scheduling {
        {
            let mut st = engine.lock();
            engine.sync_schedule(&mut st, pipeline.name(), &version, chrono::Utc::now())?;
        }
        engine.commit()?;
    }
    tracing::info!(pipeline = pipeline.name(), version, created, "pipeline submitted");
    Ok(Response::new(v1::SubmitPipelineResponse {
        name: pipeline.name().to_string(),
        version,
        created,
        warnings: Vec::new(),
    }))
}

pub(super) async fn list_pipelines(
    engine: &Arc<Engine>,
    req: Request<v1::ListPipelinesRequest>,
) -> Result<Response<v1::ListPipelinesResponse>, Status> {
    let r = bounded(req)?;
    let size = page_size(r.page_size, 100, 1000);
    let all = engine.store.pipelines().map_err(ApiError::from)?;
    let mut out = Vec::new();
    let mut next = String::new();
    for (name, index) in all.into_iter().filter(|(n, _)| r.page_token.is_empty() || *n > r.page_token) {
        if out.len() == size {
            next = out.last().map(|p: &v1::PipelineSummary| p.name.clone()).unwrap_or_default();
            break;
        }
        let stored = engine.store.pipeline_version(&index.latest).map_err(ApiError::from)?;
        let parsed = {
            let mut st = engine.lock();
            engine.pipeline(&mut st, &index.latest).ok().map(|(p, _)| p)
        };
        out.push(v1::PipelineSummary {
            name,
            description: parsed.as_ref().and_then(|p| p.description().map(str::to_string)).unwrap_or_default(),
            latest_version: index.latest.clone(),
            submitted_at: stored.map(|s| wire::timestamp(s.submitted_at)),
            version_count: index.versions.len() as u32,
            schedule: parsed.as_ref().and_then(|p| p.schedule().map(|s| s.cron.clone())).unwrap_or_default(),
        });
    }
    Ok(Response::new(v1::ListPipelinesResponse { pipelines: out, next_page_token: next }))
}

pub(super) async fn start_run(
    engine: &Arc<Engine>,
    req: Request<v1::StartRunRequest>,
) -> Result<Response<v1::StartRunResponse>, Status> {
    let r = bounded(req)?;
    let version = match r.pipeline {
        Some(v1::start_run_request::Pipeline::Name(name)) => {
            engine
                .store
                .pipeline(&name)
                .map_err(ApiError::from)?
                .ok_or_else(|| {
                    ApiError::NotFound(format!("no pipeline {name}: submit it first with `weir submit DIR`"))
                })?
                .latest
        }
        Some(v1::start_run_request::Pipeline::Version(v)) => v,
        None => return Err(ApiError::Invalid("pipeline: give a name or a version".into()).into()),
    };
    let overrides: Vec<(String, String)> = r.params.into_iter().collect::<BTreeMap<_, _>>().into_iter().collect();
    // Plan outside the state lock (and off the async threads): a huge run costs its caller
    // the time it takes, not everyone else.
    let (pipeline, bundle) = engine.pipeline(&mut engine.lock(), &version)?;
    let planner = engine.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let trigger = Trigger::Manual { user: None };
        planner.prepare_run(pipeline, bundle, &version, &overrides, trigger, r.no_cache, None)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("planning the run failed: {e}")))??;
    let run_id = engine.install_run(&mut engine.lock(), prepared)?;
    engine.commit()?;
    let (record, steps, message) = engine.load_run(&run_id)?;
    tracing::info!(run = run_id, "run started");
    Ok(Response::new(v1::StartRunResponse { run: Some(wire::run(&record, &steps, message)) }))
}

pub(super) async fn get_run(
    engine: &Arc<Engine>,
    req: Request<v1::GetRunRequest>,
) -> Result<Response<v1::GetRunResponse>, Status> {
    let r = bounded(req)?;
    let (record, steps, message) = engine.load_run(&r.run_id)?;
    let from: usize = if r.step_page_token.is_empty() {
        0
    } else {
        r.step_page_token
            .parse()
            .map_err(|_| ApiError::Invalid("step_page_token was not issued by this server".into()))?
    };
    let size = page_size(r.step_page_size, 1000, 10_000);
    let mut views = Vec::new();
    for (i, s) in steps.iter().enumerate().skip(from).take(size) {
        let i = InstanceId(i as u32);
        let (stage, outputs) = engine.step_extras(&record, i, s)?;
        views.push(wire::step(i, s, stage, outputs.as_ref()));
    }
    let next = if from + size < steps.len() { (from + size).to_string() } else { String::new() };
    Ok(Response::new(v1::GetRunResponse {
        run: Some(wire::run(&record, &steps, message)),
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
    let filter = RunFilter {
        pipeline: (!r.pipeline.is_empty()).then(|| r.pipeline.clone()),
        state: if states.len() == 1 { Some(states[0]) } else { None },
    };
    let size = page_size(r.page_size, 50, 1000);
    let mut token = (!r.page_token.is_empty()).then(|| r.page_token.clone());
    let mut runs = Vec::new();
    let mut next = String::new();
    loop {
        let page = engine.store.list_runs(&filter, size - runs.len(), token.as_deref()).map_err(ApiError::from)?;
        for listed in page.runs {
            let (record, message) = match listed {
                Listed::Run(r) => (r, String::new()),
                Listed::Quarantined { record: Some(r), reason, .. } => (r, format!("quarantined: {reason}")),
                Listed::Quarantined { id, reason, record: None } => {
                    runs.push(v1::Run { run_id: id, message: format!("quarantined: {reason}"), ..Default::default() });
                    continue;
                }
                Listed::Unreadable { after, reason } => {
                    let after = after.map(|a| format!(" after run {a}")).unwrap_or_default();
                    runs.push(v1::Run {
                        message: format!("unreadable runs{after} (`weir store check` says which): {reason}"),
                        ..Default::default()
                    });
                    continue;
                }
            };
            if states.len() > 1 && !states.contains(&record.state) {
                continue;
            }
            // Live runs answer from memory: step counts without a scan.
            let (record, steps) = {
                let st = engine.lock();
                match st.runs.get(&record.id) {
                    Some(live) => (live.record.clone(), live.steps.clone()),
                    None => {
                        drop(st);
                        match engine.store.steps(&record.id, None, usize::MAX) {
                            Ok(steps) => (record, steps.into_iter().map(|(_, s)| s).collect()),
                            // A step record that does not decode marks its run, not the list.
                            Err(e) => {
                                let message = format!("quarantined: {e}");
                                runs.push(wire::run(&record, &[], message));
                                continue;
                            }
                        }
                    }
                }
            };
            runs.push(wire::run(&record, &steps, message));
        }
        match page.next_page_token {
            Some(t) if runs.len() < size => token = Some(t),
            Some(t) => {
                next = t;
                break;
            }
            None => break,
        }
    }
    Ok(Response::new(v1::ListRunsResponse { runs, next_page_token: next }))
}
