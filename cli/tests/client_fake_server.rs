//! The client commands against a fake weir server: an in-process `weir.v1.WeirClient` with
//! canned answers that records what the client sent. It checks the client's half of the
//! contract in client.proto (the bearer token on every call, the submit stream, paging, status
//! codes turned into messages and exit codes); the real server is tested in the engine, and
//! end-to-end tests against it belong in a file of their own.

use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use prost::Message as _;
use tonic::codegen::tokio_stream::{self, Stream};
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status, Streaming};
use weir_proto::v1::{
    self,
    run_event::Kind,
    start_run_request::Pipeline,
    submit_pipeline_request::Part,
    weir_client_server::{WeirClient, WeirClientServer},
};

const TOKEN: &str = "sekrit";
const VERSION: &str = "abababababababababababababababababababababababababababababababab";
const T0: i64 = 1_795_780_801; // 2026-11-27 12:00:01 UTC

#[derive(Default)]
struct Seen {
    auth: Vec<String>,
    submitted: Vec<String>,
    bundle_files: Vec<(String, String)>,
    chunk_sizes: Vec<usize>,
    started: Vec<v1::StartRunRequest>,
    listed_runs: Vec<v1::ListRunsRequest>,
    logs: Vec<v1::StreamLogsRequest>,
    watched_after: Vec<u64>,
    listed_schedules: Vec<String>,
    paused: Vec<String>,
    resumed: Vec<String>,
    backfills: Vec<v1::BackfillRequest>,
}

#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Seen>>,
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn ts(offset: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: T0 + offset, nanos: 0 })
}

fn run(id: &str, state: v1::RunState) -> v1::Run {
    let done = matches!(state, v1::RunState::Succeeded | v1::RunState::Failed);
    v1::Run {
        run_id: id.into(),
        pipeline: "demo".into(),
        version: VERSION.into(),
        state: state as i32,
        params: [("rows".to_string(), "5".to_string())].into(),
        created_at: ts(-1),
        started_at: ts(0),
        finished_at: if done { ts(3) } else { None },
        message: if state == v1::RunState::Failed { "step a failed".into() } else { String::new() },
        trigger: v1::Trigger::Manual as i32,
        steps_total: 2,
        steps_done: if done { 2 } else { 0 },
        ..v1::Run::default()
    }
}

fn step(name: &str, state: v1::StepState, message: &str) -> v1::Step {
    v1::Step {
        name: name.into(),
        step: name.split('[').next().unwrap_or(name).into(),
        state: state as i32,
        attempt: 1,
        started_at: ts(0),
        finished_at: ts(1),
        message: message.into(),
        ..Default::default()
    }
}

fn step_event(seq: u64, at: i64, name: &str, state: v1::StepState, message: &str) -> Result<v1::RunEvent, Status> {
    Ok(v1::RunEvent {
        seq,
        time: ts(at),
        kind: Some(Kind::Step(v1::StepChanged {
            instance: 0,
            name: name.into(),
            state: state as i32,
            attempt: 1,
            message: message.into(),
        })),
    })
}

fn run_event(seq: u64, at: i64, state: v1::RunState, message: &str) -> Result<v1::RunEvent, Status> {
    Ok(v1::RunEvent {
        seq,
        time: ts(at),
        kind: Some(Kind::Run(v1::RunChanged { state: state as i32, message: message.into() })),
    })
}

fn no_run(id: &str) -> Status {
    Status::not_found(format!("no run `{id}`"))
}

/// A seconds-since-epoch timestamp of an RFC 3339 instant.
fn at(rfc: &str) -> prost_types::Timestamp {
    let t = chrono::DateTime::parse_from_rfc3339(rfc).unwrap();
    prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }
}

/// `demo` fires at 02:00 in Berlin (01:00 UTC in winter); `nightly` at 03:00 UTC, paused.
fn schedule(name: &str) -> v1::ScheduleInfo {
    match name {
        "demo" => v1::ScheduleInfo {
            pipeline: "demo".into(),
            version: VERSION.into(),
            cron: "0 2 * * *".into(),
            timezone: "Europe/Berlin".into(),
            catchup: false,
            max_catchup: 0,
            concurrency: v1::Concurrency::Forbid as i32,
            paused: false,
            next_fires: vec![at("2026-11-28T01:00:00Z"), at("2026-11-29T01:00:00Z"), at("2026-11-30T01:00:00Z")],
            last_tick: Some(at("2026-11-27T01:00:00Z")),
            last_run_id: "demo-20261127T0100Z".into(),
            last_run_state: v1::RunState::Running as i32,
            skipped: vec![v1::SkippedTicks {
                first: Some(at("2026-11-20T01:00:00Z")),
                last: Some(at("2026-11-22T01:00:00Z")),
                count: 3,
                reason: "missed while the server was down".into(),
            }],
            backfill: Some(v1::BackfillProgress {
                from: Some(at("2026-10-31T23:00:00Z")),
                to: Some(at("2026-11-03T22:59:59Z")),
                remaining: 2,
                catchup: false,
            }),
            params: [("rows".to_string(), "5".to_string())].into(),
        },
        _ => v1::ScheduleInfo {
            pipeline: name.into(),
            version: VERSION.into(),
            cron: "0 3 * * *".into(),
            timezone: "UTC".into(),
            catchup: true,
            max_catchup: 10,
            concurrency: v1::Concurrency::Allow as i32,
            paused: true,
            next_fires: vec![at("2026-11-28T03:00:00Z")],
            ..Default::default()
        },
    }
}

/// The answer for a schedule call about `name`: `demo` and `nightly` have one, `plain` is a
/// pipeline without one, anything else is no pipeline.
fn schedule_of(name: &str) -> Result<v1::ScheduleInfo, Status> {
    match name {
        "demo" | "nightly" => Ok(schedule(name)),
        "plain" => Err(Status::failed_precondition(format!("pipeline `{name}` has no schedule"))),
        other => Err(Status::not_found(format!("no pipeline `{other}`"))),
    }
}

impl Fake {
    fn auth<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let ok = header == format!("Bearer {TOKEN}");
        self.seen.lock().unwrap().auth.push(header);
        if ok { Ok(()) } else { Err(Status::unauthenticated("missing or unknown client token")) }
    }
}

#[tonic::async_trait]
impl WeirClient for Fake {
    async fn submit_pipeline(
        &self,
        request: Request<Streaming<v1::SubmitPipelineRequest>>,
    ) -> Result<Response<v1::SubmitPipelineResponse>, Status> {
        self.auth(&request)?;
        let mut stream = request.into_inner();
        let Some(Part::Header(header)) = stream.message().await?.and_then(|m| m.part) else {
            return Err(Status::invalid_argument("the first message must be the header"));
        };
        let mut bytes = Vec::new();
        while let Some(m) = stream.message().await? {
            let Some(Part::BundleChunk(chunk)) = m.part else {
                return Err(Status::invalid_argument("a second header"));
            };
            self.seen.lock().unwrap().chunk_sizes.push(chunk.len());
            bytes.extend(chunk);
        }
        if bytes.len() as u64 != header.bundle_size {
            return Err(Status::invalid_argument("bundle_size does not match the stream"));
        }
        if header.yaml.contains("refuse me") {
            let diagnostics = v1::Diagnostics {
                diagnostics: vec![v1::Diagnostic {
                    message: "the server dislikes this name".into(),
                    line: 1,
                    column: 6,
                    end_line: 1,
                    end_column: 10,
                    label: "this one".into(),
                    help: "pick another".into(),
                    severity: v1::Severity::Error as i32,
                    file: header.file_name.clone(),
                    ..Default::default()
                }],
            };
            let details = diagnostics.encode_to_vec().into();
            return Err(Status::with_details(Code::InvalidArgument, "pipeline `demo` is invalid", details));
        }
        let dir = tempfile::tempdir().map_err(|e| Status::internal(e.to_string()))?;
        let dest = dir.path().join("b");
        weir_data::bundle::extract(&bytes[..], &header.bundle_digest, &dest, Default::default())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dest).unwrap() {
            let entry = entry.unwrap();
            if entry.path().is_file() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                files.push((entry.file_name().to_string_lossy().into_owned(), text));
            }
        }
        files.sort();
        let mut seen = self.seen.lock().unwrap();
        let created = !seen.submitted.contains(&header.bundle_digest);
        seen.submitted.push(header.bundle_digest.clone());
        seen.bundle_files = files;
        Ok(Response::new(v1::SubmitPipelineResponse {
            name: "demo".into(),
            version: VERSION.into(),
            created,
            warnings: Vec::new(),
            ..Default::default()
        }))
    }

    async fn list_pipelines(
        &self,
        request: Request<v1::ListPipelinesRequest>,
    ) -> Result<Response<v1::ListPipelinesResponse>, Status> {
        self.auth(&request)?;
        let summary = |name: &str, schedule: &str| v1::PipelineSummary {
            name: name.into(),
            description: String::new(),
            latest_version: VERSION.into(),
            submitted_at: ts(0),
            version_count: 2,
            schedule: schedule.into(),
        };
        Ok(Response::new(match request.get_ref().page_token.as_str() {
            "" => v1::ListPipelinesResponse { pipelines: vec![summary("demo", "")], next_page_token: "p2".into() },
            _ => v1::ListPipelinesResponse {
                pipelines: vec![summary("nightly", "0 3 * * *")],
                next_page_token: "".into(),
            },
        }))
    }

    async fn start_run(&self, request: Request<v1::StartRunRequest>) -> Result<Response<v1::StartRunResponse>, Status> {
        self.auth(&request)?;
        let r = request.into_inner();
        self.seen.lock().unwrap().started.push(r.clone());
        let id = match r.pipeline {
            Some(Pipeline::Name(n)) if n == "nope" => return Err(Status::not_found("no pipeline `nope`")),
            Some(Pipeline::Name(n)) if n == "failing" => "r-fail",
            _ => "r-ok",
        };
        Ok(Response::new(v1::StartRunResponse { run: Some(run(id, v1::RunState::Queued)) }))
    }

    async fn get_run(&self, request: Request<v1::GetRunRequest>) -> Result<Response<v1::GetRunResponse>, Status> {
        self.auth(&request)?;
        use v1::StepState::*;
        let (state, steps) = match request.get_ref().run_id.as_str() {
            "r-ok" | "r-flaky" => {
                (v1::RunState::Succeeded, vec![step("a", Succeeded, ""), step("b[x=1]", Succeeded, "")])
            }
            "r-fail" => (v1::RunState::Failed, vec![step("a", Failed, "exit code 2"), step("b[x=1]", Skipped, "")]),
            "demo-20261101T0100Z" => (v1::RunState::Succeeded, vec![step("a", Succeeded, "")]),
            other => return Err(no_run(other)),
        };
        let id = request.get_ref().run_id.clone();
        let mut run = run(&id, state);
        if id.starts_with("demo-") {
            run.trigger = v1::Trigger::Schedule as i32;
            run.scheduled_time = Some(at("2026-11-01T01:00:00Z"));
            run.backfill = true;
        }
        Ok(Response::new(v1::GetRunResponse { run: Some(run), steps, next_step_page_token: String::new() }))
    }

    async fn list_runs(&self, request: Request<v1::ListRunsRequest>) -> Result<Response<v1::ListRunsResponse>, Status> {
        self.auth(&request)?;
        let r = request.into_inner();
        let mut seen = self.seen.lock().unwrap();
        seen.listed_runs.push(r.clone());
        let n = seen.listed_runs.len();
        let size = if r.page_size == 0 { 3 } else { r.page_size.min(3) };
        let runs = (0..size).map(|i| run(&format!("r-{n}-{i}"), v1::RunState::Failed)).collect();
        Ok(Response::new(v1::ListRunsResponse { runs, next_page_token: format!("t{n}") }))
    }

    type WatchRunStream = Stream_<v1::RunEvent>;

    async fn watch_run(&self, request: Request<v1::WatchRunRequest>) -> Result<Response<Self::WatchRunStream>, Status> {
        self.auth(&request)?;
        use v1::StepState::*;
        let after = request.get_ref().after_seq;
        self.seen.lock().unwrap().watched_after.push(after);
        let events = match request.get_ref().run_id.as_str() {
            "r-ok" | "r-flaky" => vec![
                step_event(1, 0, "a", Running, ""),
                step_event(2, 1, "a", Succeeded, ""),
                step_event(3, 1, "b[x=1]", Running, ""),
                step_event(4, 3, "b[x=1]", Succeeded, ""),
                run_event(5, 3, v1::RunState::Succeeded, ""),
            ],
            "r-fail" => vec![
                step_event(1, 0, "a", Running, ""),
                step_event(2, 1, "a", Failed, "exit code 2"),
                step_event(3, 1, "b[x=1]", Skipped, "a needed step did not succeed"),
                run_event(4, 3, v1::RunState::Failed, "step a failed"),
            ],
            other => return Err(no_run(other)),
        };
        let mut events: Vec<_> = events.into_iter().filter(|e| e.as_ref().is_ok_and(|e| e.seq > after)).collect();
        if request.get_ref().run_id == "r-flaky" && after == 0 {
            events.truncate(2);
            events.push(Err(Status::unavailable("the engine is restarting")));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(events))))
    }

    async fn cancel_run(
        &self,
        request: Request<v1::CancelRunRequest>,
    ) -> Result<Response<v1::CancelRunResponse>, Status> {
        self.auth(&request)?;
        match request.get_ref().run_id.as_str() {
            "r-ok" => Err(Status::failed_precondition("run r-ok already finished")),
            "r-live" => Ok(Response::new(v1::CancelRunResponse { run: Some(run("r-live", v1::RunState::Running)) })),
            other => Err(no_run(other)),
        }
    }

    async fn retry_run(&self, request: Request<v1::RetryRunRequest>) -> Result<Response<v1::RetryRunResponse>, Status> {
        self.auth(&request)?;
        match request.get_ref().run_id.as_str() {
            "r-ok" => Err(Status::failed_precondition("run r-ok succeeded")),
            "r-fail" => Ok(Response::new(v1::RetryRunResponse {
                run: Some(run("r-fail", v1::RunState::Running)),
                ..Default::default()
            })),
            other => Err(no_run(other)),
        }
    }

    type StreamLogsStream = Stream_<v1::LogChunk>;

    async fn stream_logs(
        &self,
        request: Request<v1::StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        self.auth(&request)?;
        let r = request.into_inner();
        self.seen.lock().unwrap().logs.push(r.clone());
        let chunk = |name: &str, data: &str| {
            Ok(v1::LogChunk {
                time: ts(0),
                stream: v1::LogStream::Stdout as i32,
                data: data.as_bytes().to_vec(),
                instance_name: name.into(),
                attempt: 1,
            })
        };
        let all = vec![chunk("a", "loading\nrows: "), chunk("b[x=1]", "hello from b\n"), chunk("a", "5\ndone")];
        let chunks: Vec<_> = all
            .into_iter()
            .filter(|c: &Result<v1::LogChunk, Status>| {
                r.step.is_empty() || c.as_ref().is_ok_and(|c| c.instance_name.starts_with(&r.step))
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    type GetArtifactStream = Stream_<v1::GetArtifactResponse>;

    async fn get_artifact(
        &self,
        _request: Request<v1::GetArtifactRequest>,
    ) -> Result<Response<Self::GetArtifactStream>, Status> {
        Err(Status::unimplemented("no artifacts in the fake"))
    }

    async fn list_schedules(
        &self,
        request: Request<v1::ListSchedulesRequest>,
    ) -> Result<Response<v1::ListSchedulesResponse>, Status> {
        self.auth(&request)?;
        let pipeline = request.into_inner().pipeline;
        self.seen.lock().unwrap().listed_schedules.push(pipeline.clone());
        let schedules = match pipeline.as_str() {
            // Out of order: the client sorts by pipeline name.
            "" => vec![schedule("nightly"), schedule("demo")],
            "plain" => Vec::new(),
            name => vec![schedule_of(name)?],
        };
        Ok(Response::new(v1::ListSchedulesResponse { schedules }))
    }

    async fn pause_schedule(
        &self,
        request: Request<v1::PauseScheduleRequest>,
    ) -> Result<Response<v1::PauseScheduleResponse>, Status> {
        self.auth(&request)?;
        let pipeline = request.into_inner().pipeline;
        self.seen.lock().unwrap().paused.push(pipeline.clone());
        let schedule = v1::ScheduleInfo { paused: true, ..schedule_of(&pipeline)? };
        Ok(Response::new(v1::PauseScheduleResponse { schedule: Some(schedule) }))
    }

    async fn resume_schedule(
        &self,
        request: Request<v1::ResumeScheduleRequest>,
    ) -> Result<Response<v1::ResumeScheduleResponse>, Status> {
        self.auth(&request)?;
        let pipeline = request.into_inner().pipeline;
        self.seen.lock().unwrap().resumed.push(pipeline.clone());
        let schedule = v1::ScheduleInfo { paused: false, ..schedule_of(&pipeline)? };
        Ok(Response::new(v1::ResumeScheduleResponse { schedule: Some(schedule) }))
    }

    async fn backfill(&self, request: Request<v1::BackfillRequest>) -> Result<Response<v1::BackfillResponse>, Status> {
        self.auth(&request)?;
        let r = request.into_inner();
        self.seen.lock().unwrap().backfills.push(r.clone());
        schedule_of(&r.pipeline)?;
        if r.from == "yesterday" {
            return Err(Status::invalid_argument("--from `yesterday` is not a time"));
        }
        if r.from == "2026-11-27T12:00:00Z" {
            return Ok(Response::new(v1::BackfillResponse { ticks: Vec::new(), timezone: "Europe/Berlin".into() }));
        }
        use v1::BackfillOutcome::*;
        let tick = |rfc: &str, id: &str, outcome: v1::BackfillOutcome| v1::BackfillTick {
            time: Some(at(rfc)),
            run_id: id.into(),
            outcome: outcome as i32,
        };
        Ok(Response::new(v1::BackfillResponse {
            ticks: vec![
                tick("2026-11-01T01:00:00Z", "demo-20261101T0100Z", Started),
                tick("2026-11-02T01:00:00Z", "demo-20261102T0100Z", Exists),
                tick("2026-11-03T01:00:00Z", "demo-20261103T0100Z", Queued),
            ],
            timezone: "Europe/Berlin".into(),
        }))
    }

    // Answered by the real engine only; the tests that use them run against `weir server`.
    async fn plan_run(&self, _: Request<v1::PlanRunRequest>) -> Result<Response<v1::PlanRunResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn explain_cache(
        &self,
        _: Request<v1::ExplainCacheRequest>,
    ) -> Result<Response<v1::ExplainCacheResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn metric_history(
        &self,
        _: Request<v1::MetricHistoryRequest>,
    ) -> Result<Response<v1::MetricHistoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn fire_webhook(
        &self,
        _: Request<v1::FireWebhookRequest>,
    ) -> Result<Response<v1::FireWebhookResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn decide_alias_move(
        &self,
        _: Request<v1::DecideAliasMoveRequest>,
    ) -> Result<Response<v1::DecideAliasMoveResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_lineage(&self, _: Request<v1::GetLineageRequest>) -> Result<Response<v1::GetLineageResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_models(&self, _: Request<v1::ListModelsRequest>) -> Result<Response<v1::ListModelsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_workers(
        &self,
        _: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_step_metrics(
        &self,
        _: Request<v1::GetStepMetricsRequest>,
    ) -> Result<Response<v1::GetStepMetricsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn delete_runs(&self, _: Request<v1::DeleteRunsRequest>) -> Result<Response<v1::DeleteRunsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn delete_pipeline(
        &self,
        _: Request<v1::DeletePipelineRequest>,
    ) -> Result<Response<v1::DeletePipelineResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn gc(&self, _: Request<v1::GcRequest>) -> Result<Response<v1::GcResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_notifications(
        &self,
        _: Request<v1::ListNotificationsRequest>,
    ) -> Result<Response<v1::ListNotificationsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn retry_notification(
        &self,
        _: Request<v1::RetryNotificationRequest>,
    ) -> Result<Response<v1::RetryNotificationResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn approve(&self, _: Request<v1::ApproveRequest>) -> Result<Response<v1::ApproveResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_model(&self, _: Request<v1::GetModelRequest>) -> Result<Response<v1::GetModelResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn diff_model_explanations(
        &self,
        _: Request<v1::DiffModelExplanationsRequest>,
    ) -> Result<Response<v1::DiffModelExplanationsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn promote_model(
        &self,
        _: Request<v1::PromoteModelRequest>,
    ) -> Result<Response<v1::PromoteModelResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn rollback_model(
        &self,
        _: Request<v1::RollbackModelRequest>,
    ) -> Result<Response<v1::RollbackModelResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    type GetModelArtifactStream = Stream_<v1::GetModelArtifactResponse>;
    async fn get_model_artifact(
        &self,
        _: Request<v1::GetModelArtifactRequest>,
    ) -> Result<Response<Self::GetModelArtifactStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A fake server on a free loopback port, alive as long as this value.
struct Server {
    url: String,
    seen: Arc<Mutex<Seen>>,
    _runtime: tokio::runtime::Runtime,
}

fn serve() -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let fake = Fake::default();
    let seen = fake.seen.clone();
    let incoming = runtime.block_on(async { TcpIncoming::bind("127.0.0.1:0".parse().unwrap()) }).unwrap();
    let url = format!("http://{}", incoming.local_addr().unwrap());
    runtime.spawn(
        tonic::transport::Server::builder().add_service(WeirClientServer::new(fake)).serve_with_incoming(incoming),
    );
    Server { url, seen, _runtime: runtime }
}

impl Server {
    fn weir(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .env("NO_COLOR", "1")
            .env("WEIR_SERVER", &self.url)
            .env("WEIR_TOKEN", TOKEN)
            .output()
            .expect("run weir")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    text(&out.stdout)
}

fn pipeline_folder(dir: &Path, name_line: &str) {
    std::fs::write(
        dir.join("pipeline.yaml"),
        format!("{name_line}\nsteps:\n  train:\n    command: [python, train.py]\n"),
    )
    .unwrap();
    std::fs::write(dir.join("train.py"), "print('hi')\n").unwrap();
}

#[test]
fn every_call_carries_the_token_and_a_refused_token_exits_4() {
    let server = serve();
    ok(&server.weir(&["pipelines"]));
    let out = server.weir(&["pipelines", "--token", "wrong"]);
    assert_eq!(out.status.code(), Some(4));
    let err = text(&out.stderr);
    assert!(err.contains("the server refused the token: pass --token-file, WEIR_TOKEN_FILE or --token"), "{err}");
    assert!(!err.contains("wrong"), "the token was printed: {err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("  {TOKEN}\n")).unwrap();
    ok(&server.weir(&["runs", "--token", "wrong", "--token-file", &file.display().to_string()]));

    let auth = server.seen.lock().unwrap().auth.clone();
    assert_eq!(auth[..3], ["Bearer sekrit", "Bearer sekrit", "Bearer wrong"]);
    assert!(auth[3..].iter().all(|a| a == "Bearer sekrit"), "{auth:?}");
}

#[test]
fn submit_streams_the_folder_and_reports_the_version() {
    let server = serve();
    let dir = tempfile::tempdir().unwrap();
    pipeline_folder(dir.path(), "name: demo");
    let folder = dir.path().display().to_string();
    let first = ok(&server.weir(&["submit", &folder]));
    assert_eq!(first, format!("submitted demo version {VERSION} (new)\n"));
    let again = ok(&server.weir(&["submit", &dir.path().join("pipeline.yaml").display().to_string()]));
    assert_eq!(again, format!("submitted demo version {VERSION} (unchanged)\n"));
    let seen = server.seen.lock().unwrap();
    let names: Vec<&str> = seen.bundle_files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["pipeline.yaml", "train.py"]);
    assert_eq!(seen.bundle_files[1].1, "print('hi')\n");
    assert!(seen.chunk_sizes.iter().all(|&n| n > 0 && n <= 1 << 20), "{:?}", seen.chunk_sizes);
}

#[test]
fn big_bundles_go_in_1_mib_chunks() {
    let server = serve();
    let dir = tempfile::tempdir().unwrap();
    pipeline_folder(dir.path(), "name: demo");
    std::fs::write(dir.path().join("weights.bin"), vec![7u8; 2_500_000]).unwrap();
    ok(&server.weir(&["submit", &dir.path().display().to_string()]));
    let sizes = server.seen.lock().unwrap().chunk_sizes.clone();
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes[..2].iter().all(|&n| n == 1 << 20), "{sizes:?}");
}

#[test]
fn a_refused_submit_renders_the_servers_diagnostics() {
    let server = serve();
    let dir = tempfile::tempdir().unwrap();
    pipeline_folder(dir.path(), "name: demo\ndescription: refuse me");
    let out = server.weir(&["submit", &dir.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let file = dir.path().join("pipeline.yaml").display().to_string();
    assert!(err.contains("pipeline `demo` is invalid"), "{err}");
    assert!(err.contains(&format!("{file}:1:7")), "{err}");
    assert!(err.contains("error: the server dislikes this name"), "{err}");
    assert!(err.contains("1 | name: demo") && err.contains("^^^^ this one"), "{err}");
    assert!(err.contains("help: pick another"), "{err}");
}

#[test]
fn pipelines_and_runs_follow_every_page() {
    let server = serve();
    let out = ok(&server.weir(&["pipelines"]));
    assert_eq!(
        out,
        "NAME     VERSION       VERSIONS  SUBMITTED            SCHEDULE\n\
         demo     abababababab  2         2026-11-27 12:00:01  -\n\
         nightly  abababababab  2         2026-11-27 12:00:01  0 3 * * *\n"
    );

    let output =
        server.weir(&["runs", "--pipeline", "demo", "--state", "failed", "--state", "cancelled", "--limit", "5"]);
    let out = ok(&output);
    assert_eq!(out.lines().count(), 6, "{out}");
    // --limit cut the list: it says so.
    let err = text(&output.stderr);
    assert!(err.contains("the 5 newest matching runs are listed, and there are more"), "{err}");
    assert!(out.starts_with("RUN    PIPELINE  STATE   STEPS  CREATED              DURATION\n"), "{out}");
    assert!(out.contains("r-1-0  demo      failed  2/2    2026-11-27 12:00:00  3.0s\n"), "{out}");
    let listed = server.seen.lock().unwrap().listed_runs.clone();
    let pages: Vec<(u32, &str)> = listed.iter().map(|r| (r.page_size, r.page_token.as_str())).collect();
    // One run past the limit is asked for, to know whether there are more.
    assert_eq!(pages, [(6, ""), (3, "t1")]);
    assert_eq!(listed[0].pipeline, "demo");
    assert_eq!(listed[0].states, [v1::RunState::Failed as i32, v1::RunState::Cancelled as i32]);
}

#[test]
fn start_prints_the_run_id_and_refusals_say_what_next() {
    let server = serve();
    assert_eq!(ok(&server.weir(&["start", "demo", "-p", "rows=5", "--param", "lr=0.1"])), "r-ok\n");
    assert_eq!(ok(&server.weir(&["start", VERSION])), "r-ok\n");
    let started = server.seen.lock().unwrap().started.clone();
    assert_eq!(started[0].pipeline, Some(Pipeline::Name("demo".into())));
    assert_eq!(started[0].params.get("lr").map(String::as_str), Some("0.1"));
    assert_eq!(started[1].pipeline, Some(Pipeline::Version(VERSION.into())));

    let out = server.weir(&["start", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("error: no pipeline `nope`") && err.contains("`weir pipelines`"), "{err}");
}

#[test]
fn watching_prints_a_line_per_change_and_exits_with_the_run() {
    let server = serve();
    let out = server.weir(&["start", "demo", "--watch"]);
    let stdout = ok(&out);
    assert_eq!(
        stdout,
        "r-ok\n\
         12:00:01 a running (attempt 1)\n\
         12:00:02 a succeeded in 1.0s\n\
         12:00:02 b[x=1] running (attempt 1)\n\
         12:00:04 b[x=1] succeeded in 2.0s\n\
         12:00:04 run succeeded\n\
         \n\
         STEP    STATE      ATTEMPTS  DURATION\n\
         a       succeeded  1         1.0s\n\
         b[x=1]  succeeded  1         1.0s\n\
         run r-ok succeeded in 3.0s\n"
    );

    let out = server.weir(&["status", "r-fail", "--watch"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("12:00:02 a failed: exit code 2\n"), "{stdout}");
    assert!(stdout.contains("12:00:02 b[x=1] skipped: a needed step did not succeed\n"), "{stdout}");
    assert!(stdout.contains("12:00:04 run failed: step a failed\n"), "{stdout}");
    assert!(stdout.ends_with("run r-fail failed in 3.0s: step a failed\n"), "{stdout}");
    assert!(text(&out.stderr).contains("weir retry r-fail"), "{}", text(&out.stderr));
}

#[test]
fn a_broken_watch_resumes_after_the_last_event() {
    let server = serve();
    let stdout = ok(&server.weir(&["status", "r-flaky", "--watch"]));
    assert_eq!(stdout.matches(" a succeeded in 1.0s\n").count(), 1, "{stdout}");
    assert!(stdout.contains("12:00:04 run succeeded\n"), "{stdout}");
    assert_eq!(server.seen.lock().unwrap().watched_after, [0, 2]);
}

#[test]
fn status_shows_the_run_and_its_steps() {
    let server = serve();
    let out = ok(&server.weir(&["status", "r-fail"]));
    assert_eq!(
        out,
        "run       r-fail\n\
         pipeline  demo (version abababababab)\n\
         state     failed, 2/2 steps done\n\
         created   2026-11-27 12:00:00\n\
         duration  3.0s\n\
         params    rows=5\n\
         message   step a failed\n\
         \n\
         STEP    STATE    ATTEMPT  DURATION  MESSAGE\n\
         a       failed   1        1.0s      exit code 2\n\
         b[x=1]  skipped  1        1.0s\n"
    );
    let missing = server.weir(&["status", "r-zzz"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = text(&missing.stderr);
    assert!(err.contains("error: no run `r-zzz`") && err.contains("run `weir runs` to list run ids"), "{err}");
}

#[test]
fn logs_prefix_lines_only_when_several_steps_are_shown() {
    let server = serve();
    let all = ok(&server.weir(&["logs", "r-ok"]));
    assert_eq!(all, "[a] loading\n[b[x=1]] hello from b\n[a] rows: 5\n[a] done\n");
    let one = ok(&server.weir(&["logs", "r-ok", "a", "-f", "--attempt", "1"]));
    assert_eq!(one, "loading\nrows: 5\ndone");
    let logs = server.seen.lock().unwrap().logs.clone();
    assert_eq!((logs[1].step.as_str(), logs[1].follow, logs[1].attempt), ("a", true, 1));

    let typo = server.weir(&["logs", "r-ok", "bb"]);
    assert_eq!(typo.status.code(), Some(1));
    let err = text(&typo.stderr);
    assert!(err.contains("run r-ok has no step `bb`") && err.contains("did you mean `b`?"), "{err}");
}

#[test]
fn cancel_and_retry_say_what_next_when_refused() {
    let server = serve();
    assert_eq!(ok(&server.weir(&["cancel", "r-live"])), "cancelled run r-live; running attempts are being stopped\n");
    let out = server.weir(&["cancel", "r-ok", "--reason", "oops"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("already finished; `weir status RUN`"), "{}", text(&out.stderr));

    assert!(ok(&server.weir(&["retry", "r-fail"])).starts_with("retrying run r-fail"));
    let out = server.weir(&["retry", "r-ok"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("only a failed or cancelled run can be retried"), "{}", text(&out.stderr));
    let out = server.weir(&["retry", "r-zzz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("weir runs"), "{}", text(&out.stderr));
}

#[test]
fn on_a_terminal_watching_redraws_a_live_block() {
    // `script` (util-linux) gives the binary a pseudo-terminal; without it there is nothing to test.
    if Command::new("script").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI needs `script` (util-linux, bsdutils) for the terminal test");
        eprintln!("SKIPPED: no `script` to run weir on a pseudo-terminal; the terminal test did not run");
        return;
    }
    let server = serve();
    let out = Command::new("script")
        .args(["-qec", &format!("{} status r-fail --watch", env!("CARGO_BIN_EXE_weir")), "/dev/null"])
        .env("WEIR_SERVER", &server.url)
        .env("WEIR_TOKEN", TOKEN)
        .env_remove("NO_COLOR")
        .output()
        .expect("run script");
    assert_eq!(out.status.code(), Some(1));
    let screen = text(&out.stdout);
    assert!(screen.contains("  a \x1b[36mrunning\x1b[0m"), "{screen:?}");
    assert!(screen.contains("\x1b[2F\x1b[J12:00:02 a \x1b[31mfailed\x1b[0m: exit code 2"), "{screen:?}");
    assert!(!screen.contains("a \x1b[36mrunning\x1b[0m (attempt 1)"), "running steps belong in the block: {screen:?}");
    assert!(screen.contains("run r-fail failed in 3.0s"), "{screen:?}");
}

#[test]
fn schedules_list_every_schedule_with_times_in_its_zone() {
    let server = serve();
    assert_eq!(
        ok(&server.weir(&["schedules"])),
        "demo: `0 2 * * *` in Europe/Berlin, active\n\
         \x20 version      abababababab\n\
         \x20 concurrency  forbid\n\
         \x20 catchup      off: only the latest missed tick runs\n\
         \x20 params       rows=5\n\
         \x20 next         2026-11-28 02:00:00 CET (+01:00)\n\
         \x20              2026-11-29 02:00:00 CET (+01:00)\n\
         \x20              2026-11-30 02:00:00 CET (+01:00)\n\
         \x20 last tick    2026-11-27 02:00:00 CET (+01:00): run demo-20261127T0100Z running\n\
         \x20 skipped      3 ticks 2026-11-20 02:00:00 CET (+01:00) .. 2026-11-22 02:00:00 CET (+01:00): \
         missed while the server was down\n\
         \x20 backfill     2026-11-01 00:00:00 CET (+01:00) .. 2026-11-03 23:59:59 CET (+01:00), 2 ticks still \
         to start\n\
         \n\
         nightly: `0 3 * * *` in UTC, paused: ticks pass without runs\n\
         \x20 version      abababababab\n\
         \x20 concurrency  allow\n\
         \x20 catchup      on, at most 10 missed ticks run after downtime\n\
         \x20 next         2026-11-28 03:00:00 UTC\n\
         \x20 last tick    none yet\n"
    );
    let one = ok(&server.weir(&["schedules", "--pipeline", "nightly"]));
    assert!(one.starts_with("nightly: ") && !one.contains("demo"), "{one}");

    let none = server.weir(&["schedules", "--pipeline", "plain"]);
    assert_eq!(ok(&none), "");
    let err = text(&none.stderr);
    assert!(err.contains("no schedule for pipeline `plain`: add `schedule:` to it and `weir submit` it"), "{err}");

    let missing = server.weir(&["schedules", "--pipeline", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = text(&missing.stderr);
    assert!(err.contains("error: no pipeline `nope`") && err.contains("help: `weir schedules` lists"), "{err}");
    assert_eq!(server.seen.lock().unwrap().listed_schedules, ["", "nightly", "plain", "nope"]);
}

#[test]
fn pause_and_resume_name_the_pipeline_and_print_what_it_now_does() {
    let server = serve();
    assert_eq!(
        ok(&server.weir(&["schedules", "pause", "demo"])),
        "schedule demo paused: the tick at 2026-11-28 02:00:00 CET (+01:00) and later ones pass without runs\n\
         `weir schedules resume demo` lets it fire again\n"
    );
    assert_eq!(
        ok(&server.weir(&["schedules", "resume", "demo"])),
        "schedule demo firing again: next tick 2026-11-28 02:00:00 CET (+01:00); ticks that passed while it was \
         paused do not run\n"
    );
    let out = server.weir(&["schedules", "pause", "plain"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("error: pipeline `plain` has no schedule"), "{err}");
    assert!(err.contains("help: the pipeline has no schedule: add `schedule:`"), "{err}");
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.paused, ["demo", "plain"]);
    assert_eq!(seen.resumed, ["demo"]);
    assert!(seen.listed_schedules.is_empty(), "pause and resume do not list");
}

#[test]
fn backfill_sends_the_range_as_written_and_prints_each_tick() {
    let server = serve();
    let dry = ok(&server.weir(&["backfill", "demo", "--from", "2026-11-01", "--to", "2026-11-03", "--dry-run"]));
    assert_eq!(
        dry,
        "2026-11-01 02:00:00 CET (+01:00)  demo-20261101T0100Z  would start\n\
         2026-11-02 02:00:00 CET (+01:00)  demo-20261102T0100Z  exists\n\
         2026-11-03 02:00:00 CET (+01:00)  demo-20261103T0100Z  would queue\n\
         3 ticks: 1 would start, 1 already has a run, 1 would queue; nothing was created; without --dry-run the \
         backfill creates them\n"
    );
    let real =
        ok(&server.weir(&["backfill", "demo", "--from", "2026-11-01T00:00:00+01:00", "--to", "2026-11-03T06:00"]));
    assert!(real.starts_with("2026-11-01 02:00:00 CET (+01:00)  demo-20261101T0100Z  started\n"), "{real}");
    assert!(
        real.ends_with("3 ticks: 1 started, 1 already had a run, 1 queued; follow with `weir runs --pipeline demo`\n"),
        "{real}"
    );
    let bad = server.weir(&["backfill", "demo", "--from", "yesterday", "--to", "2026-11-03"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(err.contains("error: --from `yesterday` is not a time"), "{err}");
    assert!(err.contains("help: --from and --to take RFC 3339"), "{err}");
    let empty = server.weir(&["backfill", "demo", "--from", "2026-11-27T12:00:00Z", "--to", "2026-11-27T12:30:00Z"]);
    assert_eq!(ok(&empty), "");
    assert!(
        text(&empty.stderr).contains("no ticks of demo's schedule from 2026-11-27T12:00:00Z"),
        "{}",
        text(&empty.stderr)
    );
    let missing = server.weir(&["backfill", "demo", "--from", "2026-11-01"]);
    assert_eq!(missing.status.code(), Some(2), "--to is required");

    let seen = server.seen.lock().unwrap();
    let sent: Vec<(&str, &str, &str, bool)> =
        seen.backfills.iter().map(|r| (r.pipeline.as_str(), r.from.as_str(), r.to.as_str(), r.dry_run)).collect();
    assert_eq!(
        sent,
        [
            ("demo", "2026-11-01", "2026-11-03", true),
            ("demo", "2026-11-01T00:00:00+01:00", "2026-11-03T06:00", false),
            ("demo", "yesterday", "2026-11-03", false),
            ("demo", "2026-11-27T12:00:00Z", "2026-11-27T12:30:00Z", false),
        ]
    );
}

#[test]
fn status_of_a_scheduled_run_shows_cron_and_its_tick() {
    let server = serve();
    let out = ok(&server.weir(&["status", "demo-20261101T0100Z"]));
    assert!(
        out.contains(
            "state     succeeded, 2/2 steps done\ntrigger   cron\nscheduled 2026-11-01 01:00:00 UTC (backfill)\n"
        ),
        "{out}"
    );
    assert!(!ok(&server.weir(&["status", "r-ok"])).contains("trigger"), "a manual run shows no trigger line");
}
