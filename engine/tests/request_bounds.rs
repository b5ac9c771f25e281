//! Every RPC that takes a name or an id refuses one past its bound (`api/bounds.rs`) with
//! INVALID_ARGUMENT and a short message, over real loopback gRPC against a real store. Before
//! the bounds, a 70 KB run id came back whole in `grpc-message` and the client failed on the
//! header's size instead of reading the refusal.

use std::collections::HashMap;

use tonic::transport::Channel;
use tonic::{Code, Status};
use weir_engine::server::{self, ServerConfig};
use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_proto::v1::weir_worker_client::WeirWorkerClient;

/// 70 KB, as in the report.
fn huge() -> String {
    "r".repeat(70_000)
}

fn attempt(run_id: String) -> Option<v1::AttemptRef> {
    Some(v1::AttemptRef { run_id, attempt: Some(v1::AttemptId { instance: 0, number: 1 }) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_a_huge_id_with_a_short_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(ServerConfig::new(dir.path(), "127.0.0.1:0".parse().unwrap())).await.unwrap();
    let ch = Channel::from_shared(s.url()).unwrap().connect().await.unwrap();
    let (mut c, mut w) = (WeirClientClient::new(ch.clone()), WeirWorkerClient::new(ch));
    let big = huge;
    let mut got: Vec<(&str, Result<(), Status>)> = Vec::new();
    macro_rules! call {
        ($what:expr, $client:ident . $rpc:ident($req:expr)) => {
            got.push(($what, $client.$rpc($req).await.map(drop)));
        };
    }

    // ---- WeirClient ----
    let header = |file_name: String, bundle_digest: String| {
        let h = v1::SubmitPipelineHeader {
            yaml: "name: p\nsteps:\n  a:\n    run: 'true'\n".into(),
            file_name,
            bundle_digest,
            bundle_size: 1,
            validate_only: false,
        };
        tokio_stream::iter(vec![v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(h)) }])
    };
    call!("SubmitPipeline file_name", c.submit_pipeline(header(big(), String::new())));
    call!("SubmitPipeline bundle_digest", c.submit_pipeline(header("p.yaml".into(), big())));
    call!("ListPipelines page_token", c.list_pipelines(v1::ListPipelinesRequest { page_token: big(), page_size: 0 }));
    let start = |p: v1::start_run_request::Pipeline, params: HashMap<String, String>| v1::StartRunRequest {
        pipeline: Some(p),
        params,
        no_cache: false,
    };
    call!("StartRun name", c.start_run(start(v1::start_run_request::Pipeline::Name(big()), HashMap::new())));
    call!("StartRun version", c.start_run(start(v1::start_run_request::Pipeline::Version(big()), HashMap::new())));
    let param = HashMap::from([(big(), "1".to_string())]);
    call!("StartRun param name", c.start_run(start(v1::start_run_request::Pipeline::Name("p".into()), param)));
    call!("GetRun run_id", c.get_run(v1::GetRunRequest { run_id: big(), ..Default::default() }));
    call!("ListRuns pipeline", c.list_runs(v1::ListRunsRequest { pipeline: big(), ..Default::default() }));
    call!("WatchRun run_id", c.watch_run(v1::WatchRunRequest { run_id: big(), after_seq: 0 }));
    call!("CancelRun run_id", c.cancel_run(v1::CancelRunRequest { run_id: big(), reason: String::new() }));
    call!("RetryRun run_id", c.retry_run(v1::RetryRunRequest { run_id: big(), ..Default::default() }));
    call!(
        "RetryRun from_step",
        c.retry_run(v1::RetryRunRequest { run_id: "r".into(), from_step: big(), ..Default::default() })
    );
    call!("StreamLogs run_id", c.stream_logs(v1::StreamLogsRequest { run_id: big(), ..Default::default() }));
    call!(
        "StreamLogs step",
        c.stream_logs(v1::StreamLogsRequest { run_id: "r".into(), step: big(), ..Default::default() })
    );
    call!("GetArtifact run_id", c.get_artifact(v1::GetArtifactRequest { run_id: big(), ..Default::default() }));
    call!(
        "GetArtifact path",
        c.get_artifact(v1::GetArtifactRequest { run_id: "r".into(), step: "a".into(), path: big() })
    );
    call!("ListSchedules pipeline", c.list_schedules(v1::ListSchedulesRequest { pipeline: big() }));
    call!("PauseSchedule pipeline", c.pause_schedule(v1::PauseScheduleRequest { pipeline: big() }));
    call!("ResumeSchedule pipeline", c.resume_schedule(v1::ResumeScheduleRequest { pipeline: big() }));
    call!("Backfill pipeline", c.backfill(v1::BackfillRequest { pipeline: big(), ..Default::default() }));
    call!(
        "PlanRun name",
        c.plan_run(v1::PlanRunRequest {
            pipeline: Some(v1::plan_run_request::Pipeline::Name(big())),
            ..Default::default()
        })
    );
    let source = |file_name: String, bundle_digest: String| v1::PlanRunRequest {
        pipeline: Some(v1::plan_run_request::Pipeline::Source(v1::PipelineSource {
            yaml: "name: p\nsteps:\n  a:\n    run: 'true'\n".into(),
            file_name,
            bundle_digest,
        })),
        ..Default::default()
    };
    call!("PlanRun source.file_name", c.plan_run(source(big(), String::new())));
    call!("PlanRun source.bundle_digest", c.plan_run(source("p.yaml".into(), big())));
    call!("ExplainCache run_id", c.explain_cache(v1::ExplainCacheRequest { run_id: big(), step: "a".into() }));
    call!("ExplainCache step", c.explain_cache(v1::ExplainCacheRequest { run_id: "r".into(), step: big() }));
    call!(
        "MetricHistory pipeline",
        c.metric_history(v1::MetricHistoryRequest { pipeline: big(), metric: "m".into(), ..Default::default() })
    );
    call!(
        "MetricHistory metric",
        c.metric_history(v1::MetricHistoryRequest { pipeline: "p".into(), metric: big(), ..Default::default() })
    );
    call!("GetLineage target", c.get_lineage(v1::GetLineageRequest { target: big(), ..Default::default() }));
    call!("GetModel name", c.get_model(v1::GetModelRequest { name: big() }));
    call!(
        "DiffModelExplanations model",
        c.diff_model_explanations(v1::DiffModelExplanationsRequest { model: big(), from_version: 1, to_version: 2 })
    );
    call!(
        "PromoteModel name",
        c.promote_model(v1::PromoteModelRequest { name: big(), alias: "a".into(), ..Default::default() })
    );
    call!(
        "PromoteModel alias",
        c.promote_model(v1::PromoteModelRequest { name: "m".into(), alias: big(), ..Default::default() })
    );
    call!(
        "RollbackModel alias",
        c.rollback_model(v1::RollbackModelRequest { name: "m".into(), alias: big(), ..Default::default() })
    );
    call!("GetModelArtifact target", c.get_model_artifact(v1::GetModelArtifactRequest { target: big() }));

    // ---- WeirWorker ----
    call!("Register name", w.register(v1::RegisterRequest { name: big(), capacity: 1, ..Default::default() }));
    let labels = HashMap::from([("pool".to_string(), big())]);
    call!("Register label", w.register(v1::RegisterRequest { name: "w".into(), labels, ..Default::default() }));
    call!("Lease worker_id", w.lease(v1::LeaseRequest { worker_id: big(), ..Default::default() }));
    call!("Heartbeat worker_id", w.heartbeat(v1::HeartbeatRequest { worker_id: big(), ..Default::default() }));
    call!(
        "Heartbeat attempt run_id",
        w.heartbeat(v1::HeartbeatRequest {
            worker_id: "w".into(),
            attempts: vec![attempt(big()).unwrap()],
            ..Default::default()
        })
    );
    let failed = Some(v1::report_request::Outcome::Failed(v1::Failed::default()));
    call!(
        "Report worker_id",
        w.report(v1::ReportRequest {
            worker_id: big(),
            attempt: attempt("r".into()),
            outcome: failed.clone(),
            ..Default::default()
        })
    );
    call!(
        "Report run_id",
        w.report(v1::ReportRequest {
            worker_id: "w".into(),
            attempt: attempt(big()),
            outcome: failed,
            ..Default::default()
        })
    );
    let logs = |worker_id: String, run_id: String| {
        tokio_stream::iter(vec![v1::UploadLogsRequest { worker_id, attempt: attempt(run_id), chunks: Vec::new() }])
    };
    call!("UploadLogs worker_id", w.upload_logs(logs(big(), "r".into())));
    call!("UploadLogs run_id", w.upload_logs(logs("w".into(), big())));
    let upload = |worker_id: String, run_id: String, path: String| {
        let h = v1::UploadArtifactHeader { worker_id, attempt: attempt(run_id), path, size: 0, digest: String::new() };
        tokio_stream::iter(vec![v1::UploadArtifactRequest { part: Some(v1::upload_artifact_request::Part::Header(h)) }])
    };
    call!("UploadArtifact worker_id", w.upload_artifact(upload(big(), "r".into(), "f".into())));
    call!("UploadArtifact run_id", w.upload_artifact(upload("w".into(), big(), "f".into())));
    call!("UploadArtifact path", w.upload_artifact(upload("w".into(), "r".into(), big())));
    call!(
        "DownloadBlob worker_id",
        w.download_blob(v1::DownloadBlobRequest { worker_id: big(), ..Default::default() })
    );
    call!(
        "DownloadBlob digest",
        w.download_blob(v1::DownloadBlobRequest { worker_id: "w".into(), digest: big(), offset: 0 })
    );
    call!(
        "DownloadBundle digest",
        w.download_bundle(v1::DownloadBundleRequest { worker_id: "w".into(), digest: big() })
    );
    let metrics = |worker_id: String, run_id: String, name: String| v1::UploadMetricsRequest {
        worker_id,
        attempt: attempt(run_id),
        points: vec![v1::LiveMetricPoint { name, value: 1.0, ..Default::default() }],
        malformed: 0,
    };
    call!("UploadMetrics worker_id", w.upload_metrics(metrics(big(), "r".into(), "loss".into())));
    call!("UploadMetrics run_id", w.upload_metrics(metrics("w".into(), big(), "loss".into())));
    call!("UploadMetrics points name", w.upload_metrics(metrics("w".into(), "r".into(), big())));
    call!(
        "GetStepMetrics run_id",
        c.get_step_metrics(v1::GetStepMetricsRequest { run_id: big(), step: "s".into(), attempt: 0 })
    );
    call!(
        "GetStepMetrics step",
        c.get_step_metrics(v1::GetStepMetricsRequest { run_id: "r".into(), step: big(), attempt: 0 })
    );

    for (what, result) in got {
        let status = result.err().unwrap_or_else(|| panic!("{what}: accepted a 70 KB value"));
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {:?}", status.code());
        let message = status.message();
        assert!(message.len() < 200, "{what}: a {} byte message", message.len());
        assert!(message.contains("70000 bytes long; at most"), "{what}: {message}");
    }

    // Within the bounds, the usual answers.
    let unknown = c.get_run(v1::GetRunRequest { run_id: "r".repeat(256), ..Default::default() }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    s.shutdown().await;
}

/// The longest value the bounds let through still comes back readable when an error echoes
/// it: a param value at its bound (16 KiB), which the plan's diagnostic quotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_value_at_its_bound_still_reaches_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(ServerConfig::new(dir.path(), "127.0.0.1:0".parse().unwrap())).await.unwrap();
    let ch = Channel::from_shared(s.url()).unwrap().connect().await.unwrap();
    let mut c = WeirClientClient::new(ch);
    let yaml = "name: p\nparams:\n  rows: 5\nsteps:\n  a:\n    run: 'true'\n";
    let header = v1::SubmitPipelineHeader { yaml: yaml.into(), file_name: "p.yaml".into(), ..Default::default() };
    let msgs = vec![v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) }];
    c.submit_pipeline(tokio_stream::iter(msgs)).await.unwrap();
    let params = HashMap::from([("rows".to_string(), "x".repeat(16 << 10))]);
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Name("p".into())),
        params,
        no_cache: false,
    };
    let status = c.start_run(req).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{:?}: {}",
        status.code(),
        &status.message()[..200.min(status.message().len())]
    );
    assert!(status.message().contains("param `rows` expects an int"), "{}", &status.message()[..200]);
    s.shutdown().await;
}
