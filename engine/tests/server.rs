//! The gRPC server against real loopback connections and a real sled store in a temporary
//! folder, with the worker side driven by hand through the generated client, so each test can
//! put a report exactly where it wants it (a stale attempt, a lost worker, a restart between
//! lease and report). The worker agent's own tests and the end-to-end tests drive real workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use weir_engine::clock::Clock;
use weir_engine::server::{self, Server, ServerConfig, Terms};
use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_proto::v1::weir_worker_client::WeirWorkerClient;

const TWO_STEPS: &str = "name: two
params:
  n: {type: int, default: 3}
steps:
  make:
    run: echo {{ params.n }} > $WEIR_OUTPUTS/n.txt
    outputs: [n.txt]
  use:
    needs: [make]
    run: cat $WEIR_INPUTS/make/n.txt
";

fn config(dir: &std::path::Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir, "127.0.0.1:0".parse().unwrap());
    c.terms = Terms {
        lease_timeout: Duration::from_millis(800),
        heartbeat_interval: Duration::from_millis(200),
        max_wait: Duration::from_secs(5),
    };
    c.tick = Duration::from_millis(20);
    c
}

/// Sends the session of the last Register answered on this client as `x-weir-session`, as a
/// real worker does.
#[derive(Clone, Default)]
struct SessionSlot(Arc<Mutex<Option<String>>>);

impl tonic::service::Interceptor for SessionSlot {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(s) = self.0.lock().unwrap().as_ref() {
            req.metadata_mut().insert("x-weir-session", s.parse().unwrap());
        }
        Ok(req)
    }
}

/// A hand-driven worker connection: the generated client, whose `register` also keeps the
/// session it returns for the calls that follow.
struct W {
    client: WeirWorkerClient<InterceptedService<Channel, SessionSlot>>,
    slot: SessionSlot,
}

impl W {
    fn new(ch: Channel) -> W {
        let slot = SessionSlot::default();
        W { client: WeirWorkerClient::with_interceptor(ch, slot.clone()), slot }
    }

    async fn register(
        &mut self,
        req: impl tonic::IntoRequest<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let r = self.client.register(req).await?;
        *self.slot.0.lock().unwrap() = Some(r.get_ref().session.clone());
        Ok(r)
    }

    /// The session this connection sends.
    fn session(&self) -> String {
        self.slot.0.lock().unwrap().clone().unwrap_or_default()
    }

    fn set_session(&self, session: &str) {
        *self.slot.0.lock().unwrap() = Some(session.to_string());
    }
}

impl std::ops::Deref for W {
    type Target = WeirWorkerClient<InterceptedService<Channel, SessionSlot>>;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl std::ops::DerefMut for W {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.client
    }
}

/// A server on `dir` whose clock the test moves, with that clock.
async fn timed(dir: &std::path::Path) -> (Server, Clock) {
    let mut cfg = config(dir);
    let clock = Clock::at(Clock::system().now()); // moved by the test alone, never resynced
    cfg.clock = clock.clone();
    (server::start(cfg).await.unwrap(), clock)
}

/// Moves the server's clock by `ms` and lets it fire what is due.
fn pass(s: &Server, clock: &Clock, ms: u64) {
    clock.advance(Duration::from_millis(ms));
    s.tick();
}

async fn clients(s: &Server) -> (WeirClientClient<Channel>, W) {
    let ch = Channel::from_shared(s.url()).unwrap().connect().await.unwrap();
    (WeirClientClient::new(ch.clone()), W::new(ch))
}

async fn submit(c: &mut WeirClientClient<Channel>, yaml: &str) -> Result<v1::SubmitPipelineResponse, tonic::Status> {
    let header = v1::SubmitPipelineHeader { yaml: yaml.into(), file_name: "p.yaml".into(), ..Default::default() };
    let msgs = vec![v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) }];
    c.submit_pipeline(tokio_stream::iter(msgs)).await.map(|r| r.into_inner())
}

async fn start(c: &mut WeirClientClient<Channel>, name: &str, params: &[(&str, &str)]) -> String {
    let params: HashMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Name(name.into())),
        params,
        no_cache: false,
    };
    c.start_run(req).await.unwrap().into_inner().run.unwrap().run_id
}

async fn register(w: &mut W) -> String {
    let req = v1::RegisterRequest { name: "hand".into(), capacity: 4, ..Default::default() };
    w.register(req).await.unwrap().into_inner().worker_id
}

/// Registers again under a proven identity (`id` and its session secret); returns the id given.
async fn register_again(w: &mut W, id: &str, session: &str) -> String {
    let req = v1::RegisterRequest {
        name: "hand".into(),
        capacity: 4,
        previous_worker_id: id.into(),
        previous_session: session.into(),
        ..Default::default()
    };
    w.register(req).await.unwrap().into_inner().worker_id
}

/// Clients of `s`, with pipeline `two` submitted and run, and its first step leased to a new
/// worker: (client, worker, run id, worker id, the assignment).
async fn two_leased(s: &Server) -> (WeirClientClient<Channel>, W, String, String, v1::Assignment) {
    let (mut c, mut w) = clients(s).await;
    submit(&mut c, TWO_STEPS).await.unwrap();
    let run = start(&mut c, "two", &[]).await;
    let id = register(&mut w).await;
    let a = lease(&mut w, &id).await.unwrap();
    (c, w, run, id, a)
}

async fn lease(w: &mut W, id: &str) -> Option<v1::Assignment> {
    let req =
        v1::LeaseRequest { worker_id: id.into(), free: 1, wait: Some(prost_types::Duration { seconds: 3, nanos: 0 }) };
    w.lease(req).await.unwrap().into_inner().assignment
}

/// Heartbeats and polls until something is leased to `id` (keeping `id` alive meanwhile).
async fn lease_when_ready(w: &mut W, id: &str) -> v1::Assignment {
    loop {
        w.heartbeat(v1::HeartbeatRequest { worker_id: id.into(), ..Default::default() }).await.unwrap();
        if let Some(a) = lease(w, id).await {
            return a;
        }
    }
}

fn outcome(o: v1::report_request::Outcome, id: &str, a: &v1::Assignment) -> v1::ReportRequest {
    v1::ReportRequest {
        worker_id: id.into(),
        attempt: a.attempt.clone(),
        time: None,
        outcome: Some(o),
        lease_next: false,
    }
}

/// [`outcome`], asking the engine to lease the next attempt in the same call.
fn outcome_and_lease(o: v1::report_request::Outcome, id: &str, a: &v1::Assignment) -> v1::ReportRequest {
    v1::ReportRequest { lease_next: true, ..outcome(o, id, a) }
}

fn ok(metrics: &[(&str, f64)], outputs: Option<v1::Manifest>) -> v1::report_request::Outcome {
    v1::report_request::Outcome::Succeeded(v1::Succeeded {
        metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        outputs,
    })
}

fn failed(reason: &str) -> v1::report_request::Outcome {
    v1::report_request::Outcome::Failed(v1::Failed { reason: reason.into(), exit_code: Some(1), permanent: false })
}

async fn upload(
    w: &mut W,
    id: &str,
    a: &v1::Assignment,
    path: &str,
    bytes: &[u8],
) -> Result<v1::UploadArtifactResponse, tonic::Status> {
    let header = v1::UploadArtifactHeader {
        worker_id: id.into(),
        attempt: a.attempt.clone(),
        path: path.into(),
        size: bytes.len() as u64,
        digest: String::new(),
    };
    let msgs = vec![
        v1::UploadArtifactRequest { part: Some(v1::upload_artifact_request::Part::Header(header)) },
        v1::UploadArtifactRequest { part: Some(v1::upload_artifact_request::Part::Chunk(bytes.to_vec())) },
    ];
    w.upload_artifact(tokio_stream::iter(msgs)).await.map(|r| r.into_inner())
}

async fn run_state(c: &mut WeirClientClient<Channel>, run: &str) -> (v1::RunState, Vec<v1::Step>) {
    let r = c.get_run(v1::GetRunRequest { run_id: run.into(), ..Default::default() }).await.unwrap().into_inner();
    (r.run.unwrap().state(), r.steps)
}

async fn wait_state(c: &mut WeirClientClient<Channel>, run: &str, want: v1::RunState) {
    for _ in 0..500 {
        if run_state(c, run).await.0 == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("run {run} never reached {want:?}: {:?}", run_state(c, run).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_flows_through_lease_report_and_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(config(dir.path())).await.unwrap();
    let (mut c, mut w) = clients(&s).await;
    let sub = submit(&mut c, TWO_STEPS).await.unwrap();
    assert_eq!((sub.name.as_str(), sub.created), ("two", true));
    assert!(!submit(&mut c, TWO_STEPS).await.unwrap().created, "same content, same version");
    let listed = c.list_pipelines(v1::ListPipelinesRequest::default()).await.unwrap().into_inner();
    let names: Vec<(&str, &str, u32)> =
        listed.pipelines.iter().map(|p| (p.name.as_str(), p.latest_version.as_str(), p.version_count)).collect();
    assert_eq!(names, [("two", sub.version.as_str(), 1)]);
    let run = start(&mut c, "two", &[("n", "7")]).await;
    let id = register(&mut w).await;

    let a = lease(&mut w, &id).await.expect("make is ready");
    assert_eq!(a.instance_name, "make");
    let v1::action::Kind::Script(script) = a.action.clone().unwrap().kind.unwrap() else { panic!("a script") };
    assert_eq!(script, "echo \"${WEIR_PARAM_N}\" > $WEIR_OUTPUTS/n.txt", "a reference, never the value");
    assert_eq!(a.env["WEIR_RUN_ID"], run);
    assert_eq!(a.env["WEIR_PARAM_N"], "7");
    assert_eq!(a.outputs, ["n.txt"]);
    assert!(lease(&mut w, &id).await.is_none(), "use waits for make");

    // An output name that climbs out of its folder is refused, as is a success whose
    // outputs were never uploaded.
    let bad = upload(&mut w, &id, &a, "../../etc/passwd", b"x").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let up = upload(&mut w, &id, &a, "n.txt", b"7\n").await.unwrap();
    let entry = v1::ManifestEntry { path: "n.txt".into(), digest: up.digest.clone(), size: 2, executable: false };
    let mut missing = entry.clone();
    missing.digest = "0".repeat(64);
    let refused = w.report(outcome(ok(&[], Some(v1::Manifest { files: vec![missing] })), &id, &a)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    w.report(outcome(v1::report_request::Outcome::Started(v1::Started {}), &id, &a)).await.unwrap();
    w.report(outcome(ok(&[("rows", 7.0)], Some(v1::Manifest { files: vec![entry] })), &id, &a)).await.unwrap();
    let again = w.report(outcome(ok(&[], None), &id, &a)).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "a duplicate success is stale: {again:?}");

    let b = lease(&mut w, &id).await.expect("use is ready");
    assert_eq!(b.instance_name, "use");
    assert_eq!(b.inputs.len(), 1);
    assert_eq!(b.inputs[0].dir, "make");
    assert_eq!(b.inputs[0].manifest.as_ref().unwrap().files[0].digest, up.digest);
    w.report(outcome(failed("exit code 1"), &id, &b)).await.unwrap();
    wait_state(&mut c, &run, v1::RunState::Failed).await;
    let (_, steps) = run_state(&mut c, &run).await;
    assert_eq!(steps[0].metrics["rows"], 7.0);
    assert_eq!(steps[0].outputs.as_ref().unwrap().files.len(), 1);
    assert_eq!(steps[1].message, "exit code 1");

    // Retry reuses `make` and runs `use` again.
    let retry = c
        .retry_run(v1::RetryRunRequest { run_id: run.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let b2 = lease(&mut w, &id).await.expect("use runs again");
    assert_eq!(b2.instance_name, "use");
    assert_eq!(b2.attempt.as_ref().unwrap().run_id, retry.run_id);
    assert_eq!(b2.inputs[0].manifest.as_ref().unwrap().files[0].digest, up.digest, "reused outputs");
    w.report(outcome(ok(&[], None), &id, &b2)).await.unwrap();
    wait_state(&mut c, &retry.run_id, v1::RunState::Succeeded).await;
    let (_, steps) = run_state(&mut c, &retry.run_id).await;
    assert_eq!(steps[0].state(), v1::StepState::Cached, "{:?}", steps[0]);
    assert_eq!(steps[0].cached_from, run, "reused from the retried run");
    assert_eq!(steps[0].metrics["rows"], 7.0, "its metrics come along");
    let text = scrape(s.addr()).await;
    // A retry's reuse is no cache hit; the upload is counted in bytes.
    assert_eq!(sample(&text, "weir_cache_hits_total"), 0.0, "{text}");
    assert_eq!(sample(&text, "weir_artifact_uploaded_bytes_total"), 2.0, "n.txt's two bytes:\n{text}");
    s.shutdown().await;
}

/// `GET /metrics` (classic text) from a server without tokens.
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: weir\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
}

/// A sample's value in exposition text; 0 for a series not there.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.split_once(' ').is_some_and(|(name, _)| name == series))
        .map_or(0.0, |l| l.rsplit(' ').next().unwrap().trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_lost_its_step_redispatched_and_its_late_report_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (s, clock) = timed(dir.path()).await;
    let (mut c, mut w) = clients(&s).await;
    submit(&mut c, TWO_STEPS).await.unwrap();
    let run = start(&mut c, "two", &[]).await;
    let dead = register(&mut w).await;
    let a1 = lease(&mut w, &dead).await.unwrap();
    // `dead` never heartbeats again: silent past the lease timeout (800 ms), it is lost.
    pass(&s, &clock, 900);
    let alive = register(&mut w).await;
    let a2 = lease(&mut w, &alive).await.expect("the step is offered again");
    assert_eq!(a2.instance_name, "make");
    assert_eq!(a2.attempt.as_ref().unwrap().attempt.as_ref().unwrap().number, 2);
    let late = w.report(outcome(ok(&[], None), &alive, &a1)).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
    assert!(late.message().contains("stale"), "{late:?}");
    let unknown = w.report(outcome(ok(&[], None), &dead, &a1)).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "the lost worker must register again: {unknown:?}");
    let (_, steps) = run_state(&mut c, &run).await;
    assert_eq!((steps[0].attempt, steps[0].state()), (2, v1::StepState::Leased));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_in_a_long_poll_is_lost_after_the_lease_timeout() {
    // A worker holding a step and waiting in a Lease long-poll for more, then cut off from the
    // network: its poll stays open on the engine's side all the same (here, by never
    // heartbeating again). It must be lost a lease timeout (800 ms) after it last spoke, not
    // when its poll ends (up to max_wait, 5 s, plus a lease timeout, before the fix).
    let dir = tempfile::tempdir().unwrap();
    let (s, clock) = timed(dir.path()).await;
    let (mut c, mut w) = clients(&s).await;
    submit(&mut c, TWO_STEPS).await.unwrap();
    let run = start(&mut c, "two", &[]).await;
    let cut = register(&mut w).await;
    let a1 = lease(&mut w, &cut).await.unwrap();
    let mut polling = w.clone();
    let req = v1::LeaseRequest {
        worker_id: cut.clone(),
        free: 1,
        wait: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
    };
    let poll = tokio::spawn(async move { polling.lease(req).await });
    // 500 ms pass on the server's clock while it polls: a polling worker is not lost.
    tokio::time::sleep(Duration::from_millis(50)).await;
    pass(&s, &clock, 500);
    // Its poll ends by itself (at half the lease timeout, 400 ms), with nothing; by then it
    // last spoke more than a lease timeout ago, and the poll's end is no sign of life.
    let ended =
        tokio::time::timeout(Duration::from_secs(10), poll).await.expect("a long-poll outlived the lease timeout");
    assert_eq!(ended.unwrap().unwrap().into_inner().assignment, None);
    s.tick();
    let alive = register(&mut w).await;
    let a2 = lease(&mut w, &alive).await.expect("lost as its poll ended: the step is offered again");
    assert_eq!(a2.attempt.as_ref().unwrap().attempt.as_ref().unwrap().number, 2, "{a2:?}");
    let late = w.report(outcome(ok(&[], None), &cut, &a1)).await.unwrap_err();
    assert_eq!(late.code(), Code::NotFound, "the lost worker must register again: {late:?}");
    let (_, steps) = run_state(&mut c, &run).await;
    assert_eq!((steps[0].attempt, steps[0].state()), (2, v1::StepState::Leased));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_runs_and_a_worker_keeps_the_step_it_was_running() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(config(dir.path())).await.unwrap();
    let (_c, mut w, run, id, a) = two_leased(&s).await;
    w.report(outcome(v1::report_request::Outcome::Started(v1::Started {}), &id, &a)).await.unwrap();

    // A second engine on the same folder is refused while the first holds it.
    let locked = server::start(config(dir.path())).await.err().expect("locked");
    assert!(locked.to_string().contains("another weir engine"), "{locked}");
    s.shutdown().await;

    let session = w.session();
    let (s, clock) = timed(dir.path()).await;
    let (mut c, mut w) = clients(&s).await;
    w.set_session(&session);
    let hb = v1::HeartbeatRequest { worker_id: id.clone(), attempts: vec![a.attempt.clone().unwrap()], free: 0 };
    let forgotten = w.heartbeat(hb.clone()).await.unwrap_err();
    assert_eq!(forgotten.code(), Code::NotFound, "the new engine does not know the old worker id");

    // Another worker cannot claim it: it was leased to `id`.
    let (_, mut other) = clients(&s).await;
    let intruder = register(&mut other).await;
    let resp = other.heartbeat(v1::HeartbeatRequest { worker_id: intruder, ..hb.clone() }).await.unwrap();
    assert_eq!(resp.into_inner().stop.len(), 1, "a claim on another worker's orphan is told to stop");

    // The worker registers again with its identity, keeps its id and re-adopts the attempt.
    let id2 = register_again(&mut w, &id, &session).await;
    assert_eq!(id2, id, "a proven identity is kept");
    let resp = w.heartbeat(v1::HeartbeatRequest { worker_id: id2.clone(), ..hb }).await.unwrap().into_inner();
    assert!(resp.stop.is_empty(), "the running attempt is re-adopted, not stopped: {resp:?}");
    // Past the lease timeout, still heartbeating: no second attempt appears.
    for _ in 0..8 {
        pass(&s, &clock, 200);
        let hb = v1::HeartbeatRequest { worker_id: id2.clone(), attempts: vec![a.attempt.clone().unwrap()], free: 0 };
        w.heartbeat(hb).await.unwrap();
    }
    let (_, steps) = run_state(&mut c, &run).await;
    assert_eq!((steps[0].state(), steps[0].attempt), (v1::StepState::Running, 1));
    w.report(outcome(ok(&[], None), &id2, &a)).await.unwrap();
    let b = lease(&mut w, &id2).await.unwrap();
    w.report(outcome(ok(&[], None), &id2, &b)).await.unwrap();
    wait_state(&mut c, &run, v1::RunState::Succeeded).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_attempt_after_a_restart_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(config(dir.path())).await.unwrap();
    let (_c, _w, run, _id, a) = two_leased(&s).await;
    s.shutdown().await;
    let (s, clock) = timed(dir.path()).await;
    let (mut c, mut w) = clients(&s).await;
    // Unclaimed past its deadline (a lease timeout and the stored time's lag: 2 s).
    pass(&s, &clock, 2100);
    let id = register(&mut w).await;
    let again = lease(&mut w, &id).await.expect("the orphan is offered again");
    assert_eq!(again.instance_name, "make");
    assert_eq!(again.attempt.as_ref().unwrap().attempt.as_ref().unwrap().number, 2);
    assert_eq!(w.report(outcome(ok(&[], None), &id, &a)).await.unwrap_err().code(), Code::FailedPrecondition);
    let (_, steps) = run_state(&mut c, &run).await;
    assert_eq!(steps[0].attempt, 2);
    s.shutdown().await;
}

/// The engine dies between making a lease durable and answering it: the worker never saw the
/// attempt. When that worker comes back under its identity, the attempt is handed to it again
/// at once, as the same attempt 1, rather than waiting out the orphan deadline to run as
/// attempt 2. An attempt the worker reported started is never handed out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_answer_lost_in_a_crash_is_handed_to_its_worker_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(config(dir.path())).await.unwrap();
    let (_c, w, run, id, lost) = two_leased(&s).await; // durable; pretend the answer never arrived
    let session = w.session();
    s.shutdown().await;

    let (s, _clock) = timed(dir.path()).await;
    let (c, mut w) = clients(&s).await;
    w.set_session(&session);
    assert_eq!(register_again(&mut w, &id, &session).await, id);
    // A first heartbeat that does not mention it (the worker does not know of it) changes nothing.
    w.heartbeat(v1::HeartbeatRequest { worker_id: id.clone(), ..Default::default() }).await.unwrap();
    let a = lease_now(&mut w, &id).await.expect("handed again without waiting for the orphan deadline");
    assert_eq!(a.attempt, lost.attempt, "the same attempt: {a:?}");
    assert_eq!(a.instance_name, "make");
    assert!(lease_now(&mut w, &id).await.is_none(), "handed again once, not on every lease");
    w.report(outcome(v1::report_request::Outcome::Started(v1::Started {}), &id, &a)).await.unwrap();
    let session = w.session();
    s.shutdown().await;

    // Started, then the engine dies again: a running orphan is left to its worker's claim.
    let (s, _clock) = timed(dir.path()).await;
    let (mut c2, mut w) = clients(&s).await;
    w.set_session(&session);
    register_again(&mut w, &id, &session).await;
    assert!(lease_now(&mut w, &id).await.is_none(), "a started attempt is never handed out twice");
    let hb = v1::HeartbeatRequest { worker_id: id.clone(), attempts: vec![a.attempt.clone().unwrap()], free: 0 };
    assert!(w.heartbeat(hb).await.unwrap().into_inner().stop.is_empty(), "claimed by its worker");
    w.report(outcome(ok(&[], None), &id, &a)).await.unwrap();
    let (_, steps) = run_state(&mut c2, &run).await;
    assert_eq!((steps[0].state(), steps[0].attempt), (v1::StepState::Succeeded, 1));
    drop(c);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_leases_the_next_attempt_in_the_same_durable_call() {
    const CHAIN: &str =
        "name: chain\nsteps:\n  a: {run: 'true'}\n  b: {run: 'true', needs: [a]}\n  c: {run: 'true', needs: [b]}\n";
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(config(dir.path())).await.unwrap();
    let (mut c, mut w) = clients(&s).await;
    submit(&mut c, CHAIN).await.unwrap();
    let run = start(&mut c, "chain", &[]).await;
    let id = register(&mut w).await;
    let a = lease(&mut w, &id).await.unwrap();
    let started = v1::report_request::Outcome::Started(v1::Started {});
    let answer = w.report(outcome_and_lease(started, &id, &a)).await.unwrap().into_inner();
    assert_eq!(answer.next, None, "a progress report frees no slot and leases nothing");
    // The outcome makes `b` ready, and the same call leases it to this worker.
    let b = w.report(outcome_and_lease(ok(&[], None), &id, &a)).await.unwrap().into_inner().next;
    let b = b.expect("the step this outcome made ready, leased with the answer");
    assert_eq!(b.instance_name, "b");
    let (_, steps) = run_state(&mut c, &run).await;
    assert_eq!((steps[0].state(), steps[1].state()), (v1::StepState::Succeeded, v1::StepState::Leased));
    assert!(lease_now(&mut w, &id).await.is_none(), "leased once: a Lease call does not get it again");
    let session = w.session();
    s.shutdown().await;

    // Answered means durable: after a restart `b` is still leased to this worker (and handed to
    // it again, as any lease whose answer may have been lost), `a` still succeeded.
    let (s, _clock) = timed(dir.path()).await;
    let (mut c, mut w) = clients(&s).await;
    w.set_session(&session);
    register_again(&mut w, &id, &session).await;
    let again = lease_now(&mut w, &id).await.expect("the lease made with the report survived the restart");
    assert_eq!(again.attempt, b.attempt);
    let (_, steps) = run_state(&mut c, &run).await;
    assert_eq!(steps[0].state(), v1::StepState::Succeeded);
    // Without the flag, a report leases nothing; `c` waits for a Lease call.
    let answer = w.report(outcome(ok(&[], None), &id, &b)).await.unwrap().into_inner();
    assert_eq!(answer.next, None);
    let last = lease_now(&mut w, &id).await.expect("c is ready");
    assert_eq!(last.instance_name, "c");
    // Nothing left to lease: the report is still taken, with no assignment.
    let answer = w.report(outcome_and_lease(ok(&[], None), &id, &last)).await.unwrap().into_inner();
    assert_eq!(answer.next, None);
    wait_state(&mut c, &run, v1::RunState::Succeeded).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_per_service_and_open_listening_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut open = config(dir.path());
    open.listen = "0.0.0.0:0".parse().unwrap();
    let refused = server::start(open.clone()).await.err().expect("refused");
    assert!(refused.to_string().contains("without authentication"), "{refused}");
    open.insecure = true;
    server::start(open).await.unwrap().shutdown().await;

    let mut cfg = config(dir.path());
    cfg.client_token = Some("c-secret".into());
    cfg.worker_token = Some("w-secret".into());
    let s = server::start(cfg).await.unwrap();
    let (mut c, mut w) = clients(&s).await;
    let no = c.list_runs(v1::ListRunsRequest::default()).await.unwrap_err();
    assert_eq!(no.code(), Code::Unauthenticated, "{no:?}");
    let with = |token: &str| {
        let mut r = Request::new(v1::ListRunsRequest::default());
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    // A known token of the wrong role: authenticated, not allowed (the role table).
    assert_eq!(c.list_runs(with("w-secret")).await.unwrap_err().code(), Code::PermissionDenied);
    assert!(!c.list_runs(with("w-secret")).await.unwrap_err().message().contains("secret"), "tokens never echo");
    c.list_runs(with("c-secret")).await.unwrap();
    let reg = w.register(v1::RegisterRequest::default()).await.unwrap_err();
    assert_eq!(reg.code(), Code::Unauthenticated);
    let mut r = Request::new(v1::RegisterRequest::default());
    r.metadata_mut().insert("authorization", "Bearer w-secret".parse().unwrap());
    w.register(r).await.unwrap();

    // Health and reflection stay open, so generic tools can probe the server.
    let ch = Channel::from_shared(s.url()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let h = health.check(tonic_health::pb::HealthCheckRequest { service: "weir.v1.WeirClient".into() }).await.unwrap();
    assert_eq!(h.into_inner().status(), tonic_health::pb::health_check_response::ServingStatus::Serving);

    // Backups (WeirAdmin) take the client token, not the worker's.
    let mut admin = v1::weir_admin_client::WeirAdminClient::new(ch);
    assert_eq!(admin.backup(v1::BackupRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    let backup_with = |token: &str| {
        let mut r = Request::new(v1::BackupRequest {});
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    assert_eq!(admin.backup(backup_with("w-secret")).await.unwrap_err().code(), Code::PermissionDenied);
    let mut stream = admin.backup(backup_with("c-secret")).await.unwrap().into_inner();
    let mut file = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        file.extend(chunk.data);
    }
    weir_engine::backup::verify(&file[..]).unwrap();
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_built_from_reflection_alone_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().unwrap();
    let s = server::start(config(dir.path())).await.unwrap();
    let ch = Channel::from_shared(s.url()).unwrap().connect().await.unwrap();
    let mut r = ServerReflectionClient::new(ch);
    let ask = |m: MessageRequest| ServerReflectionRequest { host: String::new(), message_request: Some(m) };
    let reqs = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol("weir.v1.WeirWorker".into())),
    ];
    let mut stream = r.server_reflection_info(tokio_stream::iter(reqs)).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["weir.v1.WeirClient", "weir.v1.WeirWorker", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("descriptors")
    };
    let methods: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
        .flat_map(|f| f.service)
        .filter(|s| s.name() == "WeirWorker")
        .flat_map(|s| s.method.into_iter().map(|m| m.name().to_string()))
        .collect();
    assert!(methods.contains(&"Lease".to_string()) && methods.contains(&"Report".to_string()), "{methods:?}");

    // The older v1alpha protocol (grpcurl before 1.9 asks it) is served too.
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let ch = Channel::from_shared(s.url()).unwrap().connect().await.unwrap();
    let list = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut stream =
        AlphaClient::new(ch).server_reflection_info(tokio_stream::iter([list])).await.unwrap().into_inner();
    let Some(AlphaResponse::ListServicesResponse(list)) = stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("a v1alpha service list")
    };
    assert!(list.service.iter().any(|s| s.name == "weir.v1.WeirClient"), "{:?}", list.service);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(config(dir.path())).await.unwrap();
    let (mut c, _) = clients(&s).await;
    let bad = submit(&mut c, "name: x\nsteps:\n  a:\n    needs: [nope]\n    run: 'true'\n").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("p.yaml:4:"), "{}", bad.message());
    let details = weir_engine::api::status::diagnostics(&bad).expect("diagnostics in a google.rpc.Status");
    assert_eq!((details.diagnostics[0].line, details.diagnostics[0].file.as_str()), (4, "p.yaml"));

    let missing = c
        .start_run(v1::StartRunRequest {
            pipeline: Some(v1::start_run_request::Pipeline::Name("ghost".into())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("weir submit"), "{missing:?}");
    submit(&mut c, TWO_STEPS).await.unwrap();
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Name("two".into())),
        params: [("n".to_string(), "many".to_string())].into(),
        no_cache: false,
    };
    let bad_param = c.start_run(req).await.unwrap_err();
    assert_eq!(bad_param.code(), Code::InvalidArgument, "{bad_param:?}");
    let run = start(&mut c, "two", &[]).await;
    c.cancel_run(v1::CancelRunRequest { run_id: run.clone(), reason: String::new() }).await.unwrap();
    let twice = c.cancel_run(v1::CancelRunRequest { run_id: run.clone(), reason: String::new() }).await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition, "{twice:?}");
    let nope = c.get_run(v1::GetRunRequest { run_id: "nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(nope.code(), Code::NotFound);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_records_rot_is_quarantined_and_the_others_resume() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(config(dir.path())).await.unwrap();
    let (mut c, _) = clients(&s).await;
    submit(&mut c, TWO_STEPS).await.unwrap();
    let bad = start(&mut c, "two", &[]).await;
    let good = start(&mut c, "two", &[]).await;
    s.shutdown().await;

    // Rot one byte of the bad run's first event, as a torn write or a bad disk would.
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        let events = db.open_tree("events").unwrap();
        let mut key = bad.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&1u64.to_be_bytes());
        let mut value = events.get(&key).unwrap().expect("the first event").to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x55;
        events.insert(key, value).unwrap();
        db.flush().unwrap();
    }

    let s = server::start(config(dir.path())).await.expect("one bad run does not stop the server");
    let (mut c, mut w) = clients(&s).await;
    let listed = c.list_runs(v1::ListRunsRequest::default()).await.unwrap().into_inner();
    let bad_view = listed.runs.iter().find(|r| r.run_id == bad).expect("still listed");
    assert!(bad_view.message.starts_with("quarantined: cannot resume"), "{bad_view:?}");
    let id = register(&mut w).await;
    let a = lease(&mut w, &id).await.expect("the good run resumed");
    assert_eq!(a.attempt.as_ref().unwrap().run_id, good);
    assert!(lease(&mut w, &id).await.is_none(), "nothing of the quarantined run is dispatched");
    s.shutdown().await;
}

async fn register_offering(w: &mut W, labels: &[(&str, &str)], cpus_milli: u64, gpus: u32) -> String {
    let req = v1::RegisterRequest {
        name: "hand".into(),
        capacity: 4,
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        cpus_milli,
        memory_bytes: 8 << 30,
        gpus: (0..gpus).map(|index| v1::Gpu { index, model: "fake".into(), memory_bytes: 1 << 30 }).collect(),
        runtimes: vec![v1::Runtime::Process as i32],
        ..Default::default()
    };
    w.register(req).await.unwrap().into_inner().worker_id
}

async fn lease_now(w: &mut W, id: &str) -> Option<v1::Assignment> {
    let wait = Some(prost_types::Duration { seconds: 0, nanos: 100_000_000 });
    let req = v1::LeaseRequest { worker_id: id.into(), free: 1, wait };
    w.lease(req).await.unwrap().into_inner().assignment
}

fn name(a: &Option<v1::Assignment>) -> Option<&str> {
    a.as_ref().map(|a| a.instance_name.as_str())
}

async fn messages(c: &mut WeirClientClient<Channel>, run: &str) -> Vec<(String, String)> {
    let (_, steps) = run_state(c, run).await;
    steps.into_iter().map(|s| (s.name, s.message)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_follows_labels_runtimes_and_free_resources_and_says_why_a_step_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (s, clock) = timed(dir.path()).await;
    let (mut c, mut w) = clients(&s).await;
    let yaml = "name: place
steps:
  gpu1: {run: 'true', resources: {gpus: 1}, runs_on: {pool: gpu}}
  gpu2: {run: 'true', resources: {gpus: 1}, runs_on: {pool: gpu}}
  plain: {run: 'true', resources: {cpus: 2}}
  boxed: {run: 'true', runtime: docker, image: 'busybox:1'}
";
    submit(&mut c, yaml).await.unwrap();
    let run = start(&mut c, "place", &[]).await;
    let waiting = |reason: &str| format!("waiting: {reason}");
    let none = waiting("no worker is registered");
    let want: Vec<(String, String)> =
        ["gpu1", "gpu2", "plain", "boxed"].iter().map(|n| (n.to_string(), none.clone())).collect();
    assert_eq!(messages(&mut c, &run).await, want);

    let cpu = register_offering(&mut w, &[("pool", "cpu")], 2000, 0).await;
    let got = messages(&mut c, &run).await;
    assert_eq!(got[0].1, waiting("no worker has labels pool=gpu"));
    assert_eq!(got[3].1, waiting("no worker runs docker steps"));
    assert_eq!(got[2].1, "", "the cpu worker could run `plain`");
    // The GPU steps came first, but the cpu worker gets the oldest step it can run.
    let plain = lease_now(&mut w, &cpu).await;
    assert_eq!(name(&plain), Some("plain"));
    assert_eq!(name(&lease_now(&mut w, &cpu).await), None, "nothing else fits it");

    let (_, mut wg) = clients(&s).await; // a second worker, with its own session
    let gpu = register_offering(&mut wg, &[("pool", "gpu")], 8000, 1).await;
    assert_eq!(messages(&mut c, &run).await[1].1, "", "a registered worker could run it");
    let gpu1 = lease_now(&mut wg, &gpu).await;
    assert_eq!(name(&gpu1), Some("gpu1"));
    assert_eq!(name(&lease_now(&mut wg, &gpu).await), None, "its only GPU is taken");
    assert_eq!(messages(&mut c, &run).await[1].1, "", "busy is not waiting for a worker");
    // The CPU worker's `plain` holds both its cores; its end gives them back.
    wg.report(outcome(ok(&[], None), &gpu, gpu1.as_ref().unwrap())).await.unwrap();
    let gpu2 = lease_now(&mut wg, &gpu).await;
    assert_eq!(name(&gpu2), Some("gpu2"), "the GPU is free again");
    w.report(outcome(ok(&[], None), &cpu, plain.as_ref().unwrap())).await.unwrap();
    wg.report(outcome(ok(&[], None), &gpu, gpu2.as_ref().unwrap())).await.unwrap();

    // A worker that is lost takes its offer with it.
    let got = messages(&mut c, &run).await;
    assert_eq!(got[3].1, waiting("no worker runs docker steps"));
    pass(&s, &clock, 1500); // both silent past the lease timeout
    assert_eq!(messages(&mut c, &run).await[3].1, none);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_fails_the_step_at_once_despite_retries_and_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: perm
steps:
  a: {run: 'true', retries: {limit: 3, backoff: 1s}}
";
    let run = {
        let s = server::start(config(dir.path())).await.unwrap();
        let (mut c, mut w) = clients(&s).await;
        submit(&mut c, yaml).await.unwrap();
        let run = start(&mut c, "perm", &[]).await;
        let id = register(&mut w).await;
        let a = lease_when_ready(&mut w, &id).await;
        let failed = v1::report_request::Outcome::Failed(v1::Failed {
            reason: "image nope:1 cannot be pulled".into(),
            exit_code: None,
            permanent: true,
        });
        w.report(outcome(failed, &id, &a)).await.unwrap();
        s.shutdown().await;
        run
    };
    // After a restart (the report was acknowledged, so durable) the step is still failed, once.
    let s = server::start(config(dir.path())).await.unwrap();
    let (mut c, _) = clients(&s).await;
    let (state, steps) = run_state(&mut c, &run).await;
    assert_eq!(state, v1::RunState::Failed);
    assert_eq!(steps[0].attempt, 1);
    assert!(steps[0].message.starts_with("image nope:1 cannot be pulled (not retried"), "{}", steps[0].message);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_policy_reaches_the_assignment_from_the_step_or_its_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(config(dir.path())).await.unwrap();
    let (mut c, mut w) = clients(&s).await;
    let yaml = "name: pulls
defaults: {runtime: docker, image: 'busybox:1', pull: always}
steps:
  own: {run: 'true', pull: never}
  inherited: {run: 'true', needs: [own]}
  plain: {run: 'true', runtime: process, pull: if-not-present, needs: [inherited]}
";
    submit(&mut c, yaml).await.unwrap();
    let run = start(&mut c, "pulls", &[]).await;
    let req = v1::RegisterRequest {
        name: "docker".into(),
        capacity: 1,
        runtimes: vec![v1::Runtime::Docker as i32, v1::Runtime::Process as i32],
        ..Default::default()
    };
    let id = w.register(req).await.unwrap().into_inner().worker_id;
    for (step, want) in
        [("own", v1::PullPolicy::Never), ("inherited", v1::PullPolicy::Always), ("plain", v1::PullPolicy::IfNotPresent)]
    {
        let a = lease_when_ready(&mut w, &id).await;
        assert_eq!((a.instance_name.as_str(), a.pull_policy()), (step, want));
        w.report(outcome(ok(&[], None), &id, &a)).await.unwrap();
    }
    wait_state(&mut c, &run, v1::RunState::Succeeded).await;
    s.shutdown().await;
}

async fn logs(w: &mut W, id: &str, a: &v1::Assignment, text: &str) -> Result<v1::UploadLogsResponse, tonic::Status> {
    let chunk = v1::LogChunk { data: text.as_bytes().to_vec(), ..Default::default() };
    let msg = v1::UploadLogsRequest { worker_id: id.into(), attempt: a.attempt.clone(), chunks: vec![chunk] };
    w.upload_logs(tokio_stream::iter(vec![msg])).await.map(|r| r.into_inner())
}

/// Issue 12, item 3: a second registered worker, holding a valid worker token and its own valid
/// session, tries every way of speaking for an attempt leased to the first; each is refused and
/// changes nothing, and the rightful worker carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_report_upload_log_or_claim_for_another_workers_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.terms.lease_timeout = Duration::from_secs(30); // nobody is lost during the test
    let s = server::start(cfg).await.unwrap();
    let (mut c, mut a_w) = clients(&s).await;
    submit(&mut c, TWO_STEPS).await.unwrap();
    let run = start(&mut c, "two", &[]).await;
    let a_id = register(&mut a_w).await;
    let a = lease(&mut a_w, &a_id).await.unwrap();
    a_w.report(outcome(v1::report_request::Outcome::Started(v1::Started {}), &a_id, &a)).await.unwrap();

    let (_, mut b_w) = clients(&s).await;
    let b_id = register(&mut b_w).await;
    // Not its attempt: refused like a stale one (a worker drops the call and goes on).
    fn denied<T>(r: Result<T, tonic::Status>, what: &str) {
        let e = r.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(e.code(), Code::FailedPrecondition, "{what}: {e:?}");
        assert!(e.message().contains("not leased to this worker"), "{what}: {e:?}");
    }
    // Not its session: an authentication failure.
    fn impostor<T>(r: Result<T, tonic::Status>, what: &str) {
        let e = r.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
    }
    // Under its own identity.
    let forged = v1::Manifest {
        files: vec![v1::ManifestEntry {
            path: "n.txt".into(),
            digest: blake3::hash(b"backdoor\n").to_hex().to_string(),
            size: 9,
            ..Default::default()
        }],
    };
    denied(upload(&mut b_w, &b_id, &a, "n.txt", b"backdoor\n").await, "B uploads A's output");
    denied(b_w.report(outcome(ok(&[("acc", 1.0)], Some(forged.clone())), &b_id, &a)).await, "B reports success");
    denied(b_w.report(outcome(failed("forged"), &b_id, &a)).await, "B reports failure");
    let lost = v1::report_request::Outcome::Lost(v1::Lost { reason: "forged".into() });
    denied(b_w.report(outcome(lost, &b_id, &a)).await, "B reports a loss");
    // Giving back another worker's attempt would take it from under that worker.
    let released = v1::report_request::Outcome::Released(v1::Released { reason: "forged".into() });
    denied(b_w.report(outcome(released, &b_id, &a)).await, "B gives back A's attempt");
    denied(logs(&mut b_w, &b_id, &a, "forged log\n").await, "B uploads logs");
    let claim = v1::HeartbeatRequest { worker_id: b_id.clone(), attempts: vec![a.attempt.clone().unwrap()], free: 0 };
    let stops = b_w.heartbeat(claim).await.unwrap().into_inner().stop;
    assert_eq!(stops.len(), 1, "B's claim is answered with a stop order: {stops:?}");
    assert_eq!(stops[0].reason, "leased to another worker");
    // Naming A's id with B's session.
    impostor(b_w.report(outcome(ok(&[], Some(forged.clone())), &a_id, &a)).await, "B as A reports success");
    let hb = v1::HeartbeatRequest { worker_id: a_id.clone(), ..Default::default() };
    impostor(b_w.heartbeat(hb.clone()).await, "B as A heartbeats");
    impostor(b_w.lease(v1::LeaseRequest { worker_id: a_id.clone(), free: 1, wait: None }).await, "B as A leases");
    impostor(logs(&mut b_w, &a_id, &a, "forged log\n").await, "B as A uploads logs");
    // With no session at all (a bare worker-token client): unauthenticated.
    let ch = Channel::from_shared(s.url()).unwrap().connect().await.unwrap();
    let mut bare = WeirWorkerClient::new(ch);
    let e = bare.report(outcome(ok(&[], Some(forged)), &a_id, &a)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("x-weir-session"), "says what is missing: {e:?}");

    // Nothing changed: A still holds its running attempt, no forged log was stored.
    let (_, steps) = run_state(&mut c, &run).await;
    assert_eq!((steps[0].state(), steps[0].attempt), (v1::StepState::Running, 1));
    assert!(a_w.heartbeat(hb).await.unwrap().into_inner().stop.is_empty(), "A keeps its attempt");
    let mut stream =
        c.stream_logs(v1::StreamLogsRequest { run_id: run.clone(), ..Default::default() }).await.unwrap().into_inner();
    let mut stored = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        stored.extend(chunk.data);
    }
    assert!(!String::from_utf8_lossy(&stored).contains("forged"), "no forged log stored");

    // A finishes its own work; its bytes, not the forgery, are the output.
    logs(&mut a_w, &a_id, &a, "real log\n").await.unwrap();
    let up = upload(&mut a_w, &a_id, &a, "n.txt", b"3\n").await.unwrap();
    let manifest = v1::Manifest {
        files: vec![v1::ManifestEntry {
            path: "n.txt".into(),
            digest: up.digest.clone(),
            size: 2,
            ..Default::default()
        }],
    };
    a_w.report(outcome(ok(&[], Some(manifest)), &a_id, &a)).await.unwrap();
    let b = lease(&mut a_w, &a_id).await.unwrap();
    assert_eq!(b.inputs[0].manifest.as_ref().unwrap().files[0].digest, up.digest);
    s.shutdown().await;
}

/// Issue 12, item 7: an engine restarted again and again (each time well within the lease
/// timeout) still re-queues an attempt whose worker vanished: the orphan's deadline comes from
/// when the engine last heard of it, stored, not from when the engine last started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_storm_cannot_postpone_an_orphans_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Clock::system().now();
    let at = |ms: u64| {
        let mut c = config(dir.path()); // lease timeout 800 ms
        c.clock = Clock::at(weir_core::run::Millis(t0.0 + ms));
        c
    };
    let s = server::start(at(0)).await.unwrap();
    let (_c, mut w, run, id, a) = two_leased(&s).await;
    w.report(outcome(v1::report_request::Outcome::Started(v1::Started {}), &id, &a)).await.unwrap();
    s.shutdown().await; // the worker vanishes with it

    // Restart every 300 ms, far less than the 800 ms a restart used to grant: the deadline
    // (heard + 800 ms + the 1.2 s allowed for the stored time's lag) passes all the same.
    let mut requeued = None;
    for restart in 0..40 {
        let s = server::start(at(300 * restart)).await.unwrap();
        let (_, mut w) = clients(&s).await;
        let id = register(&mut w).await;
        s.tick();
        if let Some(b) = lease_now(&mut w, &id).await {
            requeued = Some((restart, b));
        }
        s.shutdown().await;
        if requeued.is_some() {
            break;
        }
    }
    let (restart, b) = requeued.expect("the orphan was never re-queued while the engine kept restarting");
    assert!(restart <= 9, "re-queued only after {restart} restarts, 300 ms of its clock apart: its deadline is 2 s");
    assert_eq!(b.instance_name, "make");
    assert_eq!(b.attempt.unwrap().attempt.unwrap().number, 2, "a new attempt, after {restart} restarts");
    let s = server::start(config(dir.path())).await.unwrap();
    let (mut c, _) = clients(&s).await;
    let (_, steps) = run_state(&mut c, &run).await;
    assert_eq!(steps[0].attempt, 2);
    s.shutdown().await;
}

/// Issue 12, item 7, the other side: a worker that kept heartbeating is not robbed by a restart
/// even when its lease is older than the lease timeout: heartbeats refresh the stored deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_old_lease_claimable_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (s, clock) = timed(dir.path()).await;
    let (_c, mut w, _, id, a) = two_leased(&s).await;
    let hb = v1::HeartbeatRequest { worker_id: id.clone(), attempts: vec![a.attempt.clone().unwrap()], free: 0 };
    // 3 s of heartbeats: longer than the deadline a lease alone would give (2 s).
    for _ in 0..15 {
        assert!(w.heartbeat(hb.clone()).await.unwrap().into_inner().stop.is_empty());
        pass(&s, &clock, 200);
    }
    let session = w.session();
    s.shutdown().await;
    let mut cfg = config(dir.path());
    cfg.clock = Clock::at(clock.now()); // the restart comes 3 s after the lease
    let s = server::start(cfg).await.unwrap();
    let (mut c, mut w) = clients(&s).await;
    assert_eq!(register_again(&mut w, &id, &session).await, id);
    let resp = w.heartbeat(hb).await.unwrap().into_inner();
    assert!(resp.stop.is_empty(), "re-adopted, not lost: {resp:?}");
    let run = start(&mut c, "two", &[]).await; // the engine still answers normally
    assert!(!run.is_empty());
    s.shutdown().await;
}

/// A worker declared lost registers again (same identity) and still uploads the trailing logs of
/// the attempt it lost; another worker cannot, and neither refusal stops a worker (not
/// PERMISSION_DENIED, which a worker treats as fatal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_worker_back_under_its_identity_may_upload_its_old_attempts_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (s, clock) = timed(dir.path()).await; // lease timeout 800 ms
    let (mut c, mut w, run, id, a) = two_leased(&s).await;
    w.report(outcome(v1::report_request::Outcome::Started(v1::Started {}), &id, &a)).await.unwrap();
    let session = w.session();
    // Silent past the lease timeout: lost, and attempt 2 is offered.
    pass(&s, &clock, 900);
    let (_, mut other) = clients(&s).await;
    let other_id = register(&mut other).await;
    let b = lease(&mut other, &other_id).await.expect("the step is offered again");
    assert_eq!(b.attempt.as_ref().unwrap().attempt.as_ref().unwrap().number, 2);

    assert_eq!(register_again(&mut w, &id, &session).await, id);
    logs(&mut w, &id, &a, "the last lines of attempt 1\n").await.expect("its own old attempt's logs");
    let refused = logs(&mut other, &other_id, &a, "forged\n").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let late = w.report(outcome(ok(&[], None), &id, &a)).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "a late report is stale: {late:?}");
    let (_, steps) = run_state(&mut c, &run).await;
    assert_eq!((steps[0].attempt, steps[0].state()), (2, v1::StepState::Leased));
    s.shutdown().await;
}

/// Live metrics are taken only from the worker that holds the live attempt, flushed before the
/// answer, read back as series, and their last values join the success's `metrics.json`
/// numbers (which win on a clash); once the attempt has ended, a late batch is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_come_from_the_holder_of_the_live_attempt_and_join_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.terms.lease_timeout = Duration::from_secs(30);
    let s = server::start(cfg).await.unwrap();
    let (mut c, mut a_w) = clients(&s).await;
    submit(&mut c, "name: lm\nsteps:\n  train:\n    run: 'true'\n").await.unwrap();
    let run = start(&mut c, "lm", &[]).await;
    let a_id = register(&mut a_w).await;
    let a = lease(&mut a_w, &a_id).await.unwrap();
    a_w.report(outcome(v1::report_request::Outcome::Started(v1::Started {}), &a_id, &a)).await.unwrap();
    let batch = |worker: &str, points: &[(&str, f64, u64)]| v1::UploadMetricsRequest {
        worker_id: worker.into(),
        attempt: a.attempt.clone(),
        points: points
            .iter()
            .map(|(n, v, s)| v1::LiveMetricPoint { name: n.to_string(), value: *v, step: Some(*s), time: None })
            .collect(),
        malformed: 1,
    };
    let got = a_w.upload_metrics(batch(&a_id, &[("loss", 0.9, 1), ("loss", 0.4, 2), ("acc", 0.5, 2)])).await;
    assert_eq!(got.unwrap().into_inner().accepted, 3);

    let (_, mut b_w) = clients(&s).await;
    let b_id = register(&mut b_w).await;
    let e = b_w.upload_metrics(batch(&b_id, &[("loss", 9.0, 3)])).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not leased to this worker"), "{e:?}");
    let nan = a_w.upload_metrics(batch(&a_id, &[("loss", f64::NAN, 3)])).await.unwrap_err();
    assert_eq!(nan.code(), Code::InvalidArgument, "{nan:?}");

    a_w.report(outcome(ok(&[("acc", 1.0)], None), &a_id, &a)).await.unwrap();
    let (_, steps) = run_state(&mut c, &run).await;
    let metrics: std::collections::BTreeMap<_, _> = steps[0].metrics.clone().into_iter().collect();
    assert_eq!(metrics, [("acc".to_string(), 1.0), ("loss".to_string(), 0.4)].into(), "metrics.json wins on acc");

    let late = a_w.upload_metrics(batch(&a_id, &[("loss", 0.1, 3)])).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");

    let m = c
        .get_step_metrics(v1::GetStepMetricsRequest { run_id: run.clone(), step: "train".into(), attempt: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((m.instance.as_str(), m.attempt, m.attempts, m.malformed, m.refused), ("train", 1, 1, 1, 0));
    let series: Vec<(String, Vec<f64>)> =
        m.series.iter().map(|s| (s.name.clone(), s.points.iter().map(|p| p.value).collect())).collect();
    assert_eq!(series, [("acc".to_string(), vec![0.5]), ("loss".to_string(), vec![0.9, 0.4])]);
    let none = c
        .get_step_metrics(v1::GetStepMetricsRequest { run_id: run, step: "train".into(), attempt: 2 })
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound, "{none:?}");
    s.shutdown().await;
}

/// Every page of `run`'s steps at `size` a page: (the names on each page, the run's
/// (total, done) as each page tells it).
async fn pages(c: &mut WeirClientClient<Channel>, run: &str, size: u32) -> (Vec<Vec<String>>, Vec<(u32, u32)>) {
    let (mut names, mut counts, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let req = v1::GetRunRequest { run_id: run.into(), step_page_size: size, step_page_token: token.clone() };
        let page = c.get_run(req).await.unwrap().into_inner();
        names.push(page.steps.iter().map(|s| s.name.clone()).collect());
        let r = page.run.unwrap();
        counts.push((r.steps_total, r.steps_done));
        if page.next_step_page_token.is_empty() {
            return (names, counts);
        }
        token = page.next_step_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_steps_page_in_order_and_every_page_counts_them_all() {
    const FIVE: &str = "name: five\nsteps:\n  s0: {run: 'true'}\n  s1: {run: 'true'}\n  s2: {run: 'true'}\n  s3: {run: 'true'}\n  s4: {run: 'true'}\n";
    let dir = tempfile::tempdir().unwrap();
    let s = server::start(config(dir.path())).await.unwrap();
    let (mut c, mut w) = clients(&s).await;
    submit(&mut c, FIVE).await.unwrap();
    let run = start(&mut c, "five", &[]).await;
    let id = register(&mut w).await;
    let first = lease(&mut w, &id).await.unwrap();
    w.report(outcome(ok(&[], None), &id, &first)).await.unwrap();
    let want: Vec<Vec<String>> =
        vec![vec!["s0".into(), "s1".into()], vec!["s2".into(), "s3".into()], vec!["s4".into()]];
    // Live: from the engine's memory.
    assert_eq!(pages(&mut c, &run, 2).await, (want.clone(), vec![(5, 1); 3]));
    while let Some(a) = lease_now(&mut w, &id).await {
        w.report(outcome(ok(&[], None), &id, &a)).await.unwrap();
    }
    wait_state(&mut c, &run, v1::RunState::Succeeded).await;
    // Finished: from the store, only the page decoded in full.
    assert_eq!(pages(&mut c, &run, 2).await, (want, vec![(5, 5); 3]));
    let (all, counts) = pages(&mut c, &run, 0).await;
    assert_eq!((all[0].len(), counts), (5, vec![(5, 5)]), "the default page holds them all");
    // A forged token past every step, up to the largest number, is an empty last page.
    for token in ["5", "1000000", &usize::MAX.to_string()] {
        let req = v1::GetRunRequest { run_id: run.clone(), step_page_size: 10_000, step_page_token: token.into() };
        let page = c.get_run(req).await.unwrap().into_inner();
        assert!(page.steps.is_empty() && page.next_step_page_token.is_empty(), "{token}");
        assert_eq!(page.run.unwrap().steps_total, 5);
    }
    s.shutdown().await;
}

/// An attempt a worker held ahead and gives back unstarted is offered again to any worker, not
/// to the one that gave it back, as a new attempt that spends no retry; the old attempt is
/// fenced off, a started attempt cannot be given back, and all of it is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_attempt_goes_to_another_worker_and_spends_no_retry() {
    const ONE: &str = "name: one\nsteps:\n  a: {run: 'true'}\n";
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.terms.lease_timeout = Duration::from_secs(30); // nobody is lost during the test
    let s = server::start(cfg).await.unwrap();
    let (mut c, mut a_w) = clients(&s).await;
    submit(&mut c, ONE).await.unwrap();
    let run = start(&mut c, "one", &[]).await;
    let a_id = register(&mut a_w).await;
    let first = lease(&mut a_w, &a_id).await.unwrap();
    let released = || v1::report_request::Outcome::Released(v1::Released { reason: "held ahead".into() });
    // Even asked to lease the next attempt, the engine does not hand it straight back.
    let answer = a_w.report(outcome_and_lease(released(), &a_id, &first)).await.unwrap().into_inner();
    assert_eq!(answer.next, None, "what a worker gives back is not leased back to it in the same call");
    let (_, steps) = run_state(&mut c, &run).await;
    assert_eq!((steps[0].state(), steps[0].attempt), (v1::StepState::Ready, 2));

    let (_, mut b_w) = clients(&s).await;
    let b_id = register(&mut b_w).await;
    let second = lease(&mut b_w, &b_id).await.expect("the released step is ready for any worker");
    assert_eq!(second.instance_name, "a");
    assert_ne!(second.attempt, first.attempt, "a new attempt, so the old one is fenced off");
    let e = a_w.report(outcome(ok(&[], None), &a_id, &first)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    b_w.report(outcome(v1::report_request::Outcome::Started(v1::Started {}), &b_id, &second)).await.unwrap();
    let e = b_w.report(outcome(released(), &b_id, &second)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "a started attempt cannot be given back: {e:?}");
    assert!(e.message().contains("released"), "{e:?}");
    // The step has no retries: had the release counted as a failure, the run would have failed.
    b_w.report(outcome(ok(&[], None), &b_id, &second)).await.unwrap();
    wait_state(&mut c, &run, v1::RunState::Succeeded).await;
    s.shutdown().await;

    let (s, _clock) = timed(dir.path()).await;
    let (mut c, _) = clients(&s).await;
    let (state, steps) = run_state(&mut c, &run).await;
    assert_eq!((state, steps[0].state(), steps[0].attempt), (v1::RunState::Succeeded, v1::StepState::Succeeded, 2));
    s.shutdown().await;
}
