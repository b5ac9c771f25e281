//! What a client asks the engine instead of working it out itself, through a real server on
//! loopback with a real store: why a ready step waits (a reason and whether any registered
//! worker could ever run it, not text to parse), a submission that only validates and stores
//! nothing, and the plan of a pipeline file that is not stored (what `weir plan` shows).

use std::time::Duration;

use tonic::Code;
use tonic::transport::Channel;
use weir_engine::server::{self, Server, ServerConfig};
use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_proto::v1::weir_worker_client::WeirWorkerClient;

const PLACED: &str = "name: placed
steps:
  gpu: {run: 'true', resources: {gpus: 1}}
  plain: {run: 'true'}
";

const MATRIX: &str = "name: grid
steps:
  prep:
    run: echo hi > $WEIR_OUTPUTS/a.txt
    outputs: [a.txt]
    cache: true
  train:
    needs: [prep]
    matrix: {lr: [0.1, 0.2, 0.3]}
    run: echo {{ matrix.lr }}
";

async fn serve(dir: &std::path::Path) -> (Server, Channel) {
    let mut config = ServerConfig::new(dir, "127.0.0.1:0".parse().unwrap());
    config.tick = Duration::from_millis(20);
    let s = server::start(config).await.unwrap();
    let ch = Channel::from_shared(s.url()).unwrap().connect().await.unwrap();
    (s, ch)
}

fn header(yaml: &str, validate_only: bool) -> v1::SubmitPipelineHeader {
    v1::SubmitPipelineHeader { yaml: yaml.into(), file_name: "p.yaml".into(), validate_only, ..Default::default() }
}

async fn submit(
    c: &mut WeirClientClient<Channel>,
    header: v1::SubmitPipelineHeader,
    chunks: &[&[u8]],
) -> Result<v1::SubmitPipelineResponse, tonic::Status> {
    use v1::submit_pipeline_request::Part;
    let mut msgs = vec![v1::SubmitPipelineRequest { part: Some(Part::Header(header)) }];
    msgs.extend(chunks.iter().map(|c| v1::SubmitPipelineRequest { part: Some(Part::BundleChunk(c.to_vec())) }));
    c.submit_pipeline(tokio_stream::iter(msgs)).await.map(|r| r.into_inner())
}

async fn pipelines(c: &mut WeirClientClient<Channel>) -> Vec<String> {
    let got = c.list_pipelines(v1::ListPipelinesRequest::default()).await.unwrap().into_inner();
    got.pipelines.into_iter().map(|p| p.name).collect()
}

/// Each step's (name, waiting_reason, unplaceable, message).
async fn waits(c: &mut WeirClientClient<Channel>, run: &str) -> Vec<(String, String, bool, String)> {
    let got = c.get_run(v1::GetRunRequest { run_id: run.into(), ..Default::default() }).await.unwrap().into_inner();
    got.steps.into_iter().map(|s| (s.name, s.waiting_reason, s.unplaceable, s.message)).collect()
}

fn wait(name: &str, reason: &str, unplaceable: bool) -> (String, String, bool, String) {
    let message = if reason.is_empty() { String::new() } else { format!("waiting: {reason}") };
    (name.into(), reason.into(), unplaceable, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_step_says_why_and_whether_a_registered_worker_could_ever_run_it() {
    let dir = tempfile::tempdir().unwrap();
    let (s, ch) = serve(dir.path()).await;
    let mut c = WeirClientClient::new(ch.clone());
    submit(&mut c, header(PLACED, false), &[]).await.unwrap();
    let start = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Name("placed".into())),
        ..Default::default()
    };
    let run = c.start_run(start).await.unwrap().into_inner().run.unwrap().run_id;
    // No worker yet: any that registers may run both, so neither is unplaceable.
    let none = "no worker is registered";
    assert_eq!(waits(&mut c, &run).await, [wait("gpu", none, false), wait("plain", none, false)]);

    let mut w = WeirWorkerClient::new(ch);
    let offer = v1::RegisterRequest {
        name: "cpu-only".into(),
        capacity: 2,
        cpus_milli: 2000,
        memory_bytes: 1 << 30,
        runtimes: vec![v1::Runtime::Process as i32],
        ..Default::default()
    };
    w.register(offer).await.unwrap();
    // A worker is registered and cannot run `gpu` however idle: it can never be placed there.
    assert_eq!(waits(&mut c, &run).await, [wait("gpu", "no worker offers gpus=1", true), wait("plain", "", false)]);

    c.cancel_run(v1::CancelRunRequest { run_id: run.clone(), reason: "test".into() }).await.unwrap();
    let after = waits(&mut c, &run).await;
    assert!(after.iter().all(|(_, reason, unplaceable, _)| reason.is_empty() && !unplaceable), "{after:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validate_only_submission_answers_as_a_submission_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (s, ch) = serve(dir.path()).await;
    let mut c = WeirClientClient::new(ch);

    let checked = submit(&mut c, header(MATRIX, true), &[]).await.unwrap();
    assert!(checked.validated_only && checked.created, "{checked:?}");
    assert_eq!((checked.name.as_str(), checked.steps, checked.instances), ("grid", 2, 4));
    assert!(pipelines(&mut c).await.is_empty(), "nothing stored");
    let start = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Name("grid".into())),
        ..Default::default()
    };
    assert_eq!(c.start_run(start).await.unwrap_err().code(), Code::NotFound);

    // The same checks as a submission: every problem, with its place, in the details.
    let bad = submit(&mut c, header("name: x\nsteps:\n  a:\n    needs: [nope]\n    run: 'true'\n", true), &[])
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let details = weir_engine::api::status::diagnostics(&bad).expect("diagnostics in a google.rpc.Status");
    assert_eq!((details.diagnostics[0].line, details.diagnostics[0].file.as_str()), (4, "p.yaml"));

    // A bundle is named by its digest and size alone: its bytes are neither needed nor taken.
    let bundle = v1::SubmitPipelineHeader { bundle_digest: "ab".repeat(32), bundle_size: 3, ..header(MATRIX, true) };
    let with_bundle = submit(&mut c, bundle.clone(), &[]).await.unwrap();
    assert_ne!(with_bundle.version, checked.version, "the bundle is part of the version");
    let chunks = submit(&mut c, bundle, &[b"abc"]).await.unwrap_err();
    assert_eq!(chunks.code(), Code::InvalidArgument, "{chunks:?}");
    let bad_digest = v1::SubmitPipelineHeader { bundle_digest: "nope".into(), bundle_size: 3, ..header(MATRIX, true) };
    assert_eq!(submit(&mut c, bad_digest, &[]).await.unwrap_err().code(), Code::InvalidArgument);
    assert!(pipelines(&mut c).await.is_empty(), "still nothing stored");

    // What it said is what a submission does.
    let stored = submit(&mut c, header(MATRIX, false), &[]).await.unwrap();
    assert!(!stored.validated_only && stored.created);
    assert_eq!((stored.version.as_str(), stored.steps, stored.instances), (checked.version.as_str(), 2, 4));
    let again = submit(&mut c, header(MATRIX, true), &[]).await.unwrap();
    assert!(again.validated_only && !again.created, "already stored: {again:?}");
    assert_eq!(pipelines(&mut c).await, ["grid"]);
    s.shutdown().await;
}

fn plan_source(yaml: &str, bundle_digest: &str) -> v1::PlanRunRequest {
    let source =
        v1::PipelineSource { yaml: yaml.into(), file_name: "p.yaml".into(), bundle_digest: bundle_digest.into() };
    v1::PlanRunRequest { pipeline: Some(v1::plan_run_request::Pipeline::Source(source)), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_file_not_stored_is_planned_as_the_version_it_would_get() {
    let dir = tempfile::tempdir().unwrap();
    let (s, ch) = serve(dir.path()).await;
    let mut c = WeirClientClient::new(ch);

    let plan = c.plan_run(plan_source(MATRIX, "")).await.unwrap().into_inner();
    let got: Vec<(&str, v1::CacheVerdict, &str)> =
        plan.steps.iter().map(|p| (p.name.as_str(), p.cache(), p.reason.as_str())).collect();
    assert_eq!(got[0], ("prep", v1::CacheVerdict::Miss, "nothing cached for this step yet"));
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got[1..].iter().all(|(_, v, _)| *v == v1::CacheVerdict::NotCacheable), "{got:?}");
    assert!(pipelines(&mut c).await.is_empty(), "planning stores nothing");
    let stored = submit(&mut c, header(MATRIX, false), &[]).await.unwrap();
    assert_eq!(plan.version, stored.version, "the version it would get");

    let bad = c.plan_run(plan_source("name: x\nsteps: {}\n", "")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(!weir_engine::api::status::diagnostics(&bad).expect("diagnostics").diagnostics.is_empty(), "{bad:?}");
    let digest = c.plan_run(plan_source(MATRIX, "not-a-digest")).await.unwrap_err();
    assert_eq!(digest.code(), Code::InvalidArgument);
    assert!(digest.message().contains("bundle_digest"), "{digest:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_pipeline_name_gets_the_closest_stored_name() {
    let dir = tempfile::tempdir().unwrap();
    let (s, ch) = serve(dir.path()).await;
    let mut c = WeirClientClient::new(ch);
    submit(&mut c, header(MATRIX, false), &[]).await.unwrap();
    let start = |name: &str| v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Name(name.into())),
        ..Default::default()
    };
    let typo = c.start_run(start("gird")).await.unwrap_err();
    assert_eq!(typo.code(), Code::NotFound);
    assert!(typo.message().contains("no pipeline gird: did you mean grid?"), "{}", typo.message());
    let far = c.start_run(start("something-else")).await.unwrap_err();
    assert!(far.message().contains("submit it first with `weir submit DIR`"), "{}", far.message());
    let pause = c.pause_schedule(v1::PauseScheduleRequest { pipeline: "gird".into() }).await.unwrap_err();
    assert!(pause.message().contains("did you mean grid?"), "{}", pause.message());
    s.shutdown().await;
}
