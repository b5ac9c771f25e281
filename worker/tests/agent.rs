//! The agent against a fake engine: a small in-test implementation of the WeirWorker service,
//! served on 127.0.0.1 from its own runtime (so that the test can kill it, connections and all,
//! and start it again on the same port), that hands out scripted assignments and records what
//! the worker reports, logs and uploads. No timing assertions: every wait polls with a generous
//! deadline.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::codegen::tokio_stream::{self, Stream};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use weir_data::artifact::Digest;
use weir_data::bundle::{Bundle, BundleLimits};
use weir_proto::v1;
use weir_proto::v1::weir_worker_server::{WeirWorker, WeirWorkerServer};
use weir_worker::runtime::ProcessRuntime;
use weir_worker::{Agent, AgentConfig, AgentError};

const TOKEN: &str = "s3cret";

/// What the fake engine knows and what it saw.
#[derive(Default)]
struct State {
    next_worker: u32,
    known: HashSet<String>,
    registrations: Vec<v1::RegisterRequest>,
    queue: VecDeque<v1::Assignment>,
    /// (worker id, report)
    reports: Vec<(String, v1::ReportRequest)>,
    /// (run id, instance, chunk)
    logs: Vec<(String, u32, v1::LogChunk)>,
    /// path -> bytes, as uploaded
    artifacts: BTreeMap<String, Vec<u8>>,
    heartbeats: Vec<v1::HeartbeatRequest>,
    blobs: HashMap<String, Vec<u8>>,
    bundles: HashMap<String, Vec<u8>>,
    blob_downloads: usize,
    /// The offset of every DownloadBlob call.
    blob_offsets: Vec<u64>,
    /// Break each blob download that starts at 0 after its first chunk.
    break_blobs: bool,
    bundle_downloads: usize,
    /// Send a stop order for every held attempt that reported Started.
    stop_started: bool,
    /// Forget every worker id at the next heartbeat.
    forget: bool,
    /// Output paths whose upload is refused with INVALID_ARGUMENT.
    refuse_paths: HashSet<String>,
    /// Calls refused for a missing or wrong token.
    unauthenticated: usize,
    /// Handed out only in the answer to an outcome's report that asks for the next lease.
    chained: VecDeque<v1::Assignment>,
    /// Like the engine, offer an attempt given back (`Released`) again.
    requeue_released: bool,
    /// Each assignment Lease handed out, and whether `watch` existed then.
    leased: Vec<(v1::Assignment, bool)>,
    watch: Option<PathBuf>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    fn known(&self, id: &str) -> Result<(), Status> {
        if self.state().known.contains(id) { Ok(()) } else { Err(Status::not_found(format!("no worker {id}"))) }
    }

    /// Like the engine: a call for worker `id` must carry the session Register gave `id`.
    fn session<T>(request: &Request<T>, id: &str) -> Result<(), Status> {
        let sent = request.metadata().get("x-weir-session").and_then(|v| v.to_str().ok());
        if sent == Some(format!("s-{id}").as_str()) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!("not the session of {id}: {sent:?}")))
        }
    }

    fn started(&self, run: &str) -> bool {
        self.state().reports.iter().any(|(_, r)| {
            r.attempt.as_ref().is_some_and(|a| a.run_id == run)
                && matches!(r.outcome, Some(v1::report_request::Outcome::Started(_)))
        })
    }

    /// The final report of the run's attempt, once there is one.
    fn outcome(&self, run: &str) -> Option<(String, v1::report_request::Outcome)> {
        self.state().reports.iter().find_map(|(worker, r)| {
            let outcome = r.outcome.clone()?;
            let this = r.attempt.as_ref().is_some_and(|a| a.run_id == run);
            (this && !matches!(outcome, v1::report_request::Outcome::Started(_))).then(|| (worker.clone(), outcome))
        })
    }

    fn log(&self, run: &str, stream: v1::LogStream) -> String {
        let state = self.state();
        let bytes: Vec<u8> = state
            .logs
            .iter()
            .filter(|(r, _, c)| r == run && c.stream == stream as i32)
            .flat_map(|(_, _, c)| c.data.clone())
            .collect();
        String::from_utf8(bytes).unwrap()
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::Chunk, Status>> + Send>>;

fn chunks(bytes: &[u8]) -> ChunkStream {
    let parts: Vec<Result<v1::Chunk, Status>> =
        bytes.chunks(1 << 20).map(|c| Ok(v1::Chunk { data: c.to_vec() })).collect();
    Box::pin(tokio_stream::iter(parts))
}

fn duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

#[tonic::async_trait]
impl WeirWorker for Fake {
    async fn register(&self, request: Request<v1::RegisterRequest>) -> Result<Response<v1::RegisterResponse>, Status> {
        let mut state = self.state();
        state.next_worker += 1;
        let id = format!("w{}", state.next_worker);
        state.known.insert(id.clone());
        state.registrations.push(request.into_inner());
        Ok(Response::new(v1::RegisterResponse {
            session: format!("s-{id}"),
            worker_id: id,
            lease_timeout: Some(duration(10_000)),
            heartbeat_interval: Some(duration(50)),
        }))
    }

    async fn lease(&self, request: Request<v1::LeaseRequest>) -> Result<Response<v1::LeaseResponse>, Status> {
        Fake::session(&request, &request.get_ref().worker_id)?;
        let request = request.into_inner();
        self.known(&request.worker_id)?;
        assert!(request.free > 0, "leased with no free slot");
        let handed = {
            let mut state = self.state();
            let assignment = state.queue.pop_front();
            if let Some(a) = &assignment {
                let seen = state.watch.as_ref().is_some_and(|w| w.exists());
                state.leased.push((a.clone(), seen));
            }
            assignment
        };
        if let Some(assignment) = handed {
            return Ok(Response::new(v1::LeaseResponse { assignment: Some(assignment) }));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok(Response::new(v1::LeaseResponse { assignment: None }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let forgotten = self.state().forget;
        if !forgotten {
            Fake::session(&request, &request.get_ref().worker_id)?;
        }
        let request = request.into_inner();
        {
            let mut state = self.state();
            if state.forget {
                state.forget = false;
                state.known.clear();
            }
        }
        self.known(&request.worker_id)?;
        let stop = if self.state().stop_started {
            request
                .attempts
                .iter()
                .filter(|a| self.started(&a.run_id))
                .map(|a| v1::StopOrder { attempt: Some(a.clone()), reason: "cancelled".into() })
                .collect()
        } else {
            Vec::new()
        };
        self.state().heartbeats.push(request);
        Ok(Response::new(v1::HeartbeatResponse { stop }))
    }

    async fn report(&self, request: Request<v1::ReportRequest>) -> Result<Response<v1::ReportResponse>, Status> {
        Fake::session(&request, &request.get_ref().worker_id)?;
        let request = request.into_inner();
        self.known(&request.worker_id)?;
        assert!(request.time.is_some(), "a report without a time");
        let started = matches!(request.outcome, Some(v1::report_request::Outcome::Started(_)));
        assert!(!(started && request.lease_next), "a progress report asked for the next lease");
        let mut state = self.state();
        if let Some(v1::report_request::Outcome::Released(_)) = &request.outcome {
            assert!(!request.lease_next, "an attempt given back asked for the next lease");
            if state.requeue_released {
                let run = &request.attempt.as_ref().unwrap().run_id;
                let again = state.leased.iter().map(|(a, _)| a).find(|a| &a.attempt.as_ref().unwrap().run_id == run);
                let again = again.cloned();
                state.queue.extend(again);
            }
        }
        let next = if request.lease_next { state.chained.pop_front() } else { None };
        state.reports.push((request.worker_id.clone(), request));
        Ok(Response::new(v1::ReportResponse { next }))
    }

    async fn upload_logs(
        &self,
        request: Request<Streaming<v1::UploadLogsRequest>>,
    ) -> Result<Response<v1::UploadLogsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut received = Vec::new();
        while let Some(message) = stream.message().await? {
            self.known(&message.worker_id)?;
            let attempt = message.attempt.unwrap();
            let instance = attempt.attempt.unwrap().instance;
            for chunk in message.chunks {
                received.push((attempt.run_id.clone(), instance, chunk));
            }
        }
        let n = received.len() as u64;
        self.state().logs.extend(received);
        Ok(Response::new(v1::UploadLogsResponse { chunks: n }))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<v1::UploadArtifactRequest>>,
    ) -> Result<Response<v1::UploadArtifactResponse>, Status> {
        use v1::upload_artifact_request::Part;
        let mut stream = request.into_inner();
        let Some(Part::Header(header)) = stream.message().await?.and_then(|m| m.part) else {
            return Err(Status::invalid_argument("header first"));
        };
        self.known(&header.worker_id)?;
        if self.state().refuse_paths.contains(&header.path) {
            return Err(Status::invalid_argument(format!("path `{}` is refused", header.path)));
        }
        let mut bytes = Vec::new();
        while let Some(message) = stream.message().await? {
            match message.part {
                Some(Part::Chunk(chunk)) if chunk.len() <= 1 << 20 => bytes.extend(chunk),
                _ => return Err(Status::invalid_argument("chunks of at most 1 MiB after the header")),
            }
        }
        let digest = Digest::of(&bytes).to_string();
        if bytes.len() as u64 != header.size || digest != header.digest {
            return Err(Status::invalid_argument("size or digest mismatch"));
        }
        let size = bytes.len() as u64;
        self.state().artifacts.insert(header.path, bytes);
        Ok(Response::new(v1::UploadArtifactResponse { digest, size }))
    }

    type DownloadBlobStream = ChunkStream;

    async fn download_blob(&self, request: Request<v1::DownloadBlobRequest>) -> Result<Response<ChunkStream>, Status> {
        let request = request.into_inner();
        self.known(&request.worker_id)?;
        let mut state = self.state();
        state.blob_downloads += 1;
        state.blob_offsets.push(request.offset);
        let blob = state.blobs.get(&request.digest).ok_or_else(|| Status::not_found("no such blob"))?;
        let rest = &blob[request.offset as usize..];
        if state.break_blobs && request.offset == 0 && rest.len() > 1 << 20 {
            let first = Ok(v1::Chunk { data: rest[..1 << 20].to_vec() });
            let broken = Err(Status::unavailable("connection lost"));
            return Ok(Response::new(Box::pin(tokio_stream::iter(vec![first, broken]))));
        }
        Ok(Response::new(chunks(rest)))
    }

    async fn upload_metrics(
        &self,
        request: Request<v1::UploadMetricsRequest>,
    ) -> Result<Response<v1::UploadMetricsResponse>, Status> {
        let request = request.into_inner();
        self.known(&request.worker_id)?;
        let accepted = request.points.len() as u32;
        Ok(Response::new(v1::UploadMetricsResponse { accepted, ..Default::default() }))
    }

    type DownloadBundleStream = ChunkStream;

    async fn download_bundle(
        &self,
        request: Request<v1::DownloadBundleRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let request = request.into_inner();
        self.known(&request.worker_id)?;
        let mut state = self.state();
        state.bundle_downloads += 1;
        let bundle = state.bundles.get(&request.digest).ok_or_else(|| Status::not_found("no such bundle"))?;
        Ok(Response::new(chunks(bundle)))
    }
}

/// The fake engine, served from its own thread and runtime; dropping it kills the server and
/// every connection to it.
struct Serving {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Serving {
    fn start(fake: Fake, listener: std::net::TcpListener) -> Serving {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let counter = fake.clone();
                let auth = move |request: Request<()>| {
                    let ok = request
                        .metadata()
                        .get("authorization")
                        .is_some_and(|v| v == format!("Bearer {TOKEN}").as_str());
                    if ok {
                        Ok(request)
                    } else {
                        counter.state().unauthenticated += 1;
                        Err(Status::unauthenticated("bad token"))
                    }
                };
                let server = Server::builder()
                    .add_service(WeirWorkerServer::with_interceptor(fake, auth))
                    .serve_with_incoming(TcpIncoming::from(listener));
                tokio::select! {
                    served = server => served.unwrap(),
                    _ = stopped => {}
                }
            });
            runtime.shutdown_timeout(Duration::from_millis(200));
        });
        Serving { stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

/// A fake engine and an agent connected to it.
struct Setup {
    fake: Fake,
    serving: Option<Serving>,
    port: u16,
    work: tempfile::TempDir,
    shutdown: CancellationToken,
    agent: Option<tokio::task::JoinHandle<Result<(), AgentError>>>,
}

impl Setup {
    fn new(fake: Fake) -> Setup {
        // RUST_LOG=weir_worker=debug shows the agent's side of a failing test.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let serving = Some(Serving::start(fake.clone(), listener));
        Setup {
            fake,
            serving,
            port,
            work: tempfile::tempdir().unwrap(),
            shutdown: CancellationToken::new(),
            agent: None,
        }
    }

    fn config(&self, token: &str) -> AgentConfig {
        AgentConfig {
            engine: format!("http://127.0.0.1:{}", self.port),
            token: Some(token.to_string()),
            tls: Default::default(),
            name: "test-worker".into(),
            labels: BTreeMap::from([("pool".to_string(), "cpu".to_string())]),
            capacity: 4,
            ahead: 0,
            hold: None,
            work_dir: self.work.path().join("work"),
            runtime: Arc::new(ProcessRuntime::new()),
            docker: None,
            process_steps: true,
            grace: Duration::from_millis(500),
            gpus: weir_worker::gpu::GpuChoice::None,
            cache_max: 10 << 30,
            local: None,
        }
    }

    fn start_agent(&mut self) {
        let agent = Agent::new(self.config(TOKEN));
        self.agent = Some(tokio::spawn(agent.run(self.shutdown.clone())));
    }

    fn kill_engine(&mut self) {
        self.serving = None;
    }

    fn restart_engine(&mut self) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.serving = Some(Serving::start(self.fake.clone(), listener));
    }

    async fn stop_agent(&mut self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), self.agent.take().unwrap()).await;
        result.expect("the agent stops").unwrap().unwrap();
        assert_eq!(self.fake.state().unauthenticated, 0, "every call carried the token");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }
}

/// Polls `f` until it returns something, or panics after a generous deadline.
async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1000 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn assignment(run: &str, script: &str) -> v1::Assignment {
    v1::Assignment {
        attempt: Some(v1::AttemptRef {
            run_id: run.to_string(),
            attempt: Some(v1::AttemptId { instance: 0, number: 1 }),
        }),
        instance_name: "step".into(),
        step: "step".into(),
        pipeline: "test".into(),
        action: Some(v1::Action { kind: Some(v1::action::Kind::Script(script.to_string())) }),
        runtime: v1::Runtime::Process as i32,
        ..Default::default()
    }
}

fn succeeded(outcome: &v1::report_request::Outcome) -> &v1::Succeeded {
    match outcome {
        v1::report_request::Outcome::Succeeded(s) => s,
        other => panic!("expected success, got {other:?}"),
    }
}

fn failed(outcome: &v1::report_request::Outcome) -> &v1::Failed {
    match outcome {
        v1::report_request::Outcome::Failed(f) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn bundle(dir: &Path) -> (String, Vec<u8>) {
    std::fs::create_dir_all(dir.join("steps")).unwrap();
    std::fs::write(dir.join("pipeline.yaml"), "name: test\n").unwrap();
    std::fs::write(dir.join("steps/train.sh"), "printf '{\"w\": 1}' > \"$WEIR_OUTPUTS/model.json\"\n").unwrap();
    let bundle = Bundle::build(dir, BundleLimits::default()).unwrap();
    let mut bytes = Vec::new();
    bundle.write_to(&mut bytes).unwrap();
    (bundle.digest().to_string(), bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_steps_with_bundle_and_inputs_and_uploads_outputs() {
    let fake = Fake::default();
    let mut setup = Setup::new(fake.clone());
    let (bundle_digest, bundle_bytes) = bundle(&setup.path("src"));
    let input = b"hello input\n".to_vec();
    let input_digest = Digest::of(&input).to_string();
    let inputs = vec![v1::Input {
        dir: "prep".into(),
        manifest: Some(v1::Manifest {
            files: vec![v1::ManifestEntry {
                path: "data/in.txt".into(),
                digest: input_digest.clone(),
                size: input.len() as u64,
                executable: false,
            }],
        }),
    }];
    {
        let mut state = fake.state();
        state.bundles.insert(bundle_digest.clone(), bundle_bytes);
        state.blobs.insert(input_digest.clone(), input.clone());
        let mut train = assignment(
            "r1",
            // The sleep outlasts the worker's delay before a start report (20 ms), so this step
            // reports Started; a step that ends sooner reports its outcome only.
            r#"set -e
sleep 1
for i in $(seq 1 200); do echo "out $i"; done
echo "err line" >&2
test -f pipeline.yaml
sh steps/train.sh
cat "$WEIR_INPUTS/prep/data/in.txt" > "$WEIR_OUTPUTS/copy.txt"
mkdir "$WEIR_OUTPUTS/plots"
printf p > "$WEIR_OUTPUTS/plots/a.png"
echo '{"rmse": 0.25, "model": "linear"}' > "$WEIR_OUTPUTS/metrics.json"
echo "$MY_VAR""#,
        );
        train.env.insert("MY_VAR".into(), "from env".into());
        train.bundle_digest = bundle_digest.clone();
        train.inputs = inputs.clone();
        train.outputs = vec!["copy.txt".into(), "plots/".into(), "metrics.json".into(), "model.json".into()];
        state.queue.push_back(train);
        let mut again = assignment("r2", r#"cat "$WEIR_INPUTS/prep/data/in.txt"; test -f steps/train.sh"#);
        again.bundle_digest = bundle_digest;
        again.inputs = inputs;
        state.queue.push_back(again);
    }
    setup.start_agent();

    let (worker, outcome) = until("the first step's outcome", || fake.outcome("r1")).await;
    assert_eq!(worker, "w1");
    let ok = succeeded(&outcome);
    assert_eq!(ok.metrics, HashMap::from([("rmse".to_string(), 0.25)]));
    let manifest = ok.outputs.as_ref().unwrap();
    let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["copy.txt", "metrics.json", "model.json", "plots/a.png"]);
    {
        let state = fake.state();
        for file in &manifest.files {
            let uploaded = &state.artifacts[&file.path];
            assert_eq!(Digest::of(uploaded).to_string(), file.digest, "{}", file.path);
            assert_eq!(uploaded.len() as u64, file.size);
        }
        assert_eq!(state.artifacts["copy.txt"], input);
        assert_eq!(state.artifacts["model.json"], b"{\"w\": 1}");
        let started = state.reports.iter().position(|(_, r)| {
            matches!(r.outcome, Some(v1::report_request::Outcome::Started(_)))
                && r.attempt.as_ref().unwrap().run_id == "r1"
        });
        let done = state.reports.iter().position(|(_, r)| {
            matches!(r.outcome, Some(v1::report_request::Outcome::Succeeded(_)))
                && r.attempt.as_ref().unwrap().run_id == "r1"
        });
        assert!(started.unwrap() < done.unwrap(), "started is reported first");
        let registered = &state.registrations[0];
        assert_eq!((registered.name.as_str(), registered.capacity), ("test-worker", 4));
        assert_eq!(registered.labels.get("pool").map(String::as_str), Some("cpu"));
        assert_eq!(registered.runtimes, [v1::Runtime::Process as i32]);
        assert!(registered.cpus_milli >= 1000 && registered.memory_bytes > 0);
    }
    // Every line arrived, in order, before the outcome was reported.
    let mut expect: String = (1..=200).map(|i| format!("out {i}\n")).collect();
    expect.push_str("from env\n");
    assert_eq!(fake.log("r1", v1::LogStream::Stdout), expect);
    assert_eq!(fake.log("r1", v1::LogStream::Stderr), "err line\n");

    // The second step used the cached bundle and blob.
    let (_, outcome) = until("the second step's outcome", || fake.outcome("r2")).await;
    succeeded(&outcome);
    assert_eq!(fake.log("r2", v1::LogStream::Stdout), "hello input\n");
    let downloads = {
        let state = fake.state();
        (state.blob_downloads, state.bundle_downloads)
    };
    assert_eq!(downloads, (1, 1), "each blob and bundle is fetched once per worker");

    // Attempt folders are emptied once reported (and kept for the next attempt): nothing of a
    // finished step, inputs or outputs, stays behind; the empty `outputs/` and `metrics/` stay,
    // saving two mkdir and two rmdir per step. A bundle copy (`src`) does, for the next step of
    // the same bundle, which reuses it only if untouched (weir_worker::checkout).
    let attempts = setup.path("work/attempts");
    let leftovers = || {
        let mut left = Vec::new();
        for slot in std::fs::read_dir(&attempts).unwrap().flatten() {
            for e in std::fs::read_dir(slot.path()).unwrap().flatten() {
                if e.file_name() == "src" {
                    continue;
                }
                let kept = e.file_name() == "outputs" || e.file_name() == "metrics";
                if !kept || std::fs::read_dir(e.path()).unwrap().next().is_some() {
                    left.push(e.path());
                }
            }
        }
        left
    };
    until("the attempt folders to be emptied", || leftovers().is_empty().then_some(())).await;
    setup.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_reported_with_their_reason() {
    let fake = Fake::default();
    let mut setup = Setup::new(fake.clone());
    {
        let mut state = fake.state();
        state.queue.push_back(assignment("exit", "echo bad; exit 3"));
        let mut missing = assignment("missing", "true");
        missing.outputs = vec!["model.json".into()];
        state.queue.push_back(missing);
        let mut metrics = assignment("metrics", r#"echo '{"rmse": ' > "$WEIR_OUTPUTS/metrics.json""#);
        metrics.outputs = vec!["metrics.json".into()];
        state.queue.push_back(metrics);
        let mut escape = assignment("escape", r#"ln -s /etc/passwd "$WEIR_OUTPUTS/leak""#);
        escape.outputs = vec!["leak".into()];
        state.queue.push_back(escape);
        let mut slow = assignment("timeout", "sleep 30");
        slow.timeout = Some(duration(200));
        state.queue.push_back(slow);
        let mut argv = assignment("argv", "");
        argv.action = Some(v1::Action {
            kind: Some(v1::action::Kind::Command(v1::Argv { args: vec!["/no/such/program".into()] })),
        });
        state.queue.push_back(argv);
        state.refuse_paths.insert("refused.txt".into());
        let mut refused = assignment("refused", r#"echo x > "$WEIR_OUTPUTS/refused.txt""#);
        refused.outputs = vec!["refused.txt".into()];
        state.queue.push_back(refused);
        let mut bad_input = assignment("bad-input", "true");
        bad_input.inputs = vec![v1::Input { dir: "../up".into(), manifest: None }];
        state.queue.push_back(bad_input);
    }
    setup.start_agent();

    let reason = |run: &'static str| {
        let fake = fake.clone();
        async move {
            let (_, outcome) = until(run, || fake.outcome(run)).await;
            let f = failed(&outcome);
            (f.reason.clone(), f.exit_code)
        }
    };
    assert_eq!(reason("exit").await, ("exit code 3".to_string(), Some(3)));
    assert_eq!(fake.log("exit", v1::LogStream::Stdout), "bad\n");
    let (why, _) = reason("missing").await;
    assert_eq!(why, "collecting outputs: step declared `model.json` but did not write it");
    let (why, _) = reason("metrics").await;
    assert!(why.starts_with("metrics.json is not valid JSON"), "{why}");
    let (why, _) = reason("escape").await;
    assert!(why.contains("`leak` is a symlink"), "{why}");
    assert_eq!(reason("timeout").await, ("timed out after 200ms".to_string(), None));
    let (why, _) = reason("argv").await;
    assert!(why.starts_with("cannot start \"/no/such/program\""), "{why}");
    let (why, _) = reason("refused").await;
    assert_eq!(why, "the engine refused a transfer (InvalidArgument): path `refused.txt` is refused");
    let (why, _) = reason("bad-input").await;
    assert_eq!(why, "input folder `../up` is refused: `..` would leave the folder");
    assert!(fake.state().artifacts.is_empty(), "nothing of a failed step is uploaded");
    setup.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_leased_with_a_report_runs_in_the_slot_it_freed() {
    let fake = Fake::default();
    let mut setup = Setup::new(fake.clone());
    {
        let mut state = fake.state();
        state.queue.push_back(assignment("first", "echo one"));
        state.chained.push_back(assignment("second", "echo two"));
        state.chained.push_back(assignment("third", "echo three"));
    }
    setup.start_agent();
    // Neither `second` nor `third` is ever answered to a Lease: only to the reports before them.
    for run in ["first", "second", "third"] {
        let (_, outcome) = until(run, || fake.outcome(run)).await;
        succeeded(&outcome);
    }
    assert_eq!(fake.log("second", v1::LogStream::Stdout), "two\n");
    assert_eq!(fake.log("third", v1::LogStream::Stdout), "three\n");
    let asked: Vec<(String, bool)> = fake
        .state()
        .reports
        .iter()
        .filter(|(_, r)| !matches!(r.outcome, Some(v1::report_request::Outcome::Started(_))))
        .map(|(_, r)| (r.attempt.as_ref().unwrap().run_id.clone(), r.lease_next))
        .collect();
    let every = ["first", "second", "third"].map(|r| (r.to_string(), true));
    assert_eq!(asked, every, "every outcome asks for the next lease while the worker runs");
    setup.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_held_ahead_starts_only_when_a_running_step_ends() {
    let fake = Fake::default();
    let mut setup = Setup::new(fake.clone());
    let (go, done, started) = (setup.path("go"), setup.path("done"), setup.path("started"));
    fake.state().queue.push_back(assignment("first", &started_then(&started, &gated(&go, &done))));
    let mut config = setup.config(TOKEN);
    (config.capacity, config.ahead) = (1, 1);
    setup.agent = Some(tokio::spawn(Agent::new(config).run(setup.shutdown.clone())));
    // Offered once `first` holds the step slot, so that `second` is the one held ahead.
    until("first to start", || started.exists().then_some(())).await;
    // Fails if it runs while `first` does.
    let check = format!("test -f '{}' || {{ echo 'ran beside first'; exit 1; }}; echo after", done.display());
    fake.state().queue.push_back(assignment("second", &check));
    until("a heartbeat holding both attempts", || {
        let state = fake.state();
        state.heartbeats.iter().any(|h| h.attempts.len() == 2).then_some(())
    })
    .await;
    assert_eq!(fake.state().registrations[0].capacity, 2, "the engine may lease one attempt ahead");
    std::fs::write(&go, "").unwrap();
    for run in ["first", "second"] {
        let (_, outcome) = until(run, || fake.outcome(run)).await;
        succeeded(&outcome);
    }
    assert_eq!(fake.log("second", v1::LogStream::Stdout), "after\n");
    setup.stop_agent().await;
}

/// Behind a long step, an attempt held ahead is given back once `hold` has passed (a report
/// that asks for no lease in its place), and the worker leases nothing more until its running
/// step has ended: had it leased at once, the engine could have handed the same attempt back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_held_ahead_too_long_is_given_back_and_not_leased_again_until_a_step_ends() {
    let fake = Fake::default();
    let mut setup = Setup::new(fake.clone());
    let (go, done, started) = (setup.path("go"), setup.path("done"), setup.path("started"));
    {
        let mut state = fake.state();
        state.queue.push_back(assignment("first", &started_then(&started, &gated(&go, &done))));
        state.requeue_released = true;
        state.watch = Some(done.clone());
    }
    let mut config = setup.config(TOKEN);
    (config.capacity, config.ahead, config.hold) = (1, 1, Some(Duration::from_millis(100)));
    setup.agent = Some(tokio::spawn(Agent::new(config).run(setup.shutdown.clone())));
    // Offered once `first` holds the step slot, so that `second` is the one held ahead.
    until("first to start", || started.exists().then_some(())).await;
    fake.state().queue.push_back(assignment("second", "echo second"));
    let released = |fake: &Fake| {
        let state = fake.state();
        state.reports.iter().find_map(|(_, r)| match &r.outcome {
            Some(v1::report_request::Outcome::Released(g)) => {
                Some((r.attempt.as_ref().unwrap().run_id.clone(), g.reason.clone()))
            }
            _ => None,
        })
    };
    let (run, reason) = until("an attempt given back", || released(&fake)).await;
    assert_eq!(run, "second");
    assert_eq!(reason, "held 100ms ahead while every step slot stayed busy");
    // Time for a worker that did not wait to lease `second` again (ten heartbeats).
    let beats = fake.state().heartbeats.len();
    until("ten heartbeats", || (fake.state().heartbeats.len() >= beats + 10).then_some(())).await;
    std::fs::write(&go, "").unwrap();
    let final_of = |run: &str| {
        let state = fake.state();
        state.reports.iter().find_map(|(_, r)| {
            let this = r.attempt.as_ref().is_some_and(|a| a.run_id == run);
            match &r.outcome {
                Some(o @ v1::report_request::Outcome::Succeeded(_)) if this => Some(o.clone()),
                _ => None,
            }
        })
    };
    for run in ["first", "second"] {
        until(run, || final_of(run)).await;
    }
    let leased: Vec<(String, bool)> =
        fake.state().leased.iter().map(|(a, done)| (a.attempt.as_ref().unwrap().run_id.clone(), *done)).collect();
    let want = [("first", false), ("second", false), ("second", true)].map(|(r, d)| (r.to_string(), d));
    assert_eq!(leased, want, "leased again only once `first` had ended");
    assert_eq!(fake.log("second", v1::LogStream::Stdout), "second\n", "it ran once, after it came back");
    setup.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_order_cancels_the_running_step() {
    let fake = Fake::default();
    let mut setup = Setup::new(fake.clone());
    fake.state().queue.push_back(assignment("r", "echo started; sleep 60"));
    setup.start_agent();
    until("the start", || fake.started("r").then_some(())).await;
    fake.state().stop_started = true;
    let (_, outcome) = until("the stopped step's report", || fake.outcome("r")).await;
    assert_eq!(failed(&outcome).reason, "stopped: cancelled");
    assert_eq!(fake.log("r", v1::LogStream::Stdout), "started\n");
    setup.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_download_resumes_where_it_stopped() {
    let fake = Fake::default();
    let mut setup = Setup::new(fake.clone());
    let blob: Vec<u8> = (0..(3 << 19)).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of(&blob).to_string();
    {
        let mut state = fake.state();
        state.break_blobs = true;
        state.blobs.insert(digest.clone(), blob.clone());
        let mut step = assignment("r", r#"cp "$WEIR_INPUTS/up/big.bin" "$WEIR_OUTPUTS/big.bin""#);
        step.inputs = vec![v1::Input {
            dir: "up".into(),
            manifest: Some(v1::Manifest {
                files: vec![v1::ManifestEntry {
                    path: "big.bin".into(),
                    digest,
                    size: blob.len() as u64,
                    executable: false,
                }],
            }),
        }];
        step.outputs = vec!["big.bin".into()];
        state.queue.push_back(step);
    }
    setup.start_agent();
    let (_, outcome) = until("the outcome", || fake.outcome("r")).await;
    succeeded(&outcome);
    assert_eq!(fake.state().artifacts["big.bin"], blob, "the input arrived whole, and went back up in chunks");
    assert_eq!(fake.state().blob_offsets, [0, 1 << 20]);
    setup.stop_agent().await;
}

/// `script`, after creating `started`.
fn started_then(started: &Path, script: &str) -> String {
    format!("touch '{}'; {script}", started.display())
}

/// A step that waits for `go` to exist, then writes `done` and says so.
fn gated(go: &Path, done: &Path) -> String {
    format!("while [ ! -f '{}' ]; do sleep 0.02; done; touch '{}'; echo finished", go.display(), done.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_worker_registers_again_and_keeps_its_attempts() {
    let fake = Fake::default();
    let mut setup = Setup::new(fake.clone());
    let (go, done) = (setup.path("go"), setup.path("done"));
    fake.state().queue.push_back(assignment("r", &gated(&go, &done)));
    setup.start_agent();
    until("the start", || fake.started("r").then_some(())).await;

    fake.state().forget = true;
    until("a heartbeat from the new id that lists the attempt", || {
        let state = fake.state();
        let beat = state.heartbeats.iter().find(|h| h.worker_id == "w2")?;
        (beat.attempts.len() == 1 && beat.attempts[0].run_id == "r").then_some(())
    })
    .await;
    {
        let state = fake.state();
        assert_eq!(state.registrations.len(), 2);
        let again = &state.registrations[1];
        assert_eq!(
            (again.previous_worker_id.as_str(), again.previous_session.as_str()),
            ("w1", "s-w1"),
            "registering again claims the identity it had"
        );
    }

    std::fs::write(&go, "").unwrap();
    let (worker, outcome) = until("the outcome", || fake.outcome("r")).await;
    succeeded(&outcome);
    assert_eq!(worker, "w2", "reports use the current worker id");
    setup.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_waits_for_the_engine_to_come_back() {
    let fake = Fake::default();
    let mut setup = Setup::new(fake.clone());
    let (go, done) = (setup.path("go"), setup.path("done"));
    fake.state().queue.push_back(assignment("r", &gated(&go, &done)));
    setup.start_agent();
    until("the start", || fake.started("r").then_some(())).await;

    setup.kill_engine();
    std::fs::write(&go, "").unwrap();
    until("the step to finish", || done.exists().then_some(())).await;
    // Give the agent time to fail at reporting at least once; correctness does not depend on it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.outcome("r").is_none());

    setup.restart_engine();
    let (_, outcome) = until("the outcome after the restart", || fake.outcome("r")).await;
    succeeded(&outcome);
    assert_eq!(fake.log("r", v1::LogStream::Stdout), "finished\n");
    setup.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_running_steps_and_reports_them_lost() {
    let fake = Fake::default();
    let mut setup = Setup::new(fake.clone());
    fake.state().queue.push_back(assignment("r", "sleep 60"));
    setup.start_agent();
    until("the start", || fake.started("r").then_some(())).await;
    setup.stop_agent().await;
    let (_, outcome) = fake.outcome("r").expect("the stopped step is reported before run returns");
    assert!(matches!(outcome, v1::report_request::Outcome::Lost(_)), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_the_agent() {
    let fake = Fake::default();
    let setup = Setup::new(fake.clone());
    let agent = Agent::new(setup.config("wrong"));
    let result = tokio::time::timeout(Duration::from_secs(20), agent.run(CancellationToken::new())).await;
    let err = result.expect("the agent gives up").unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert_eq!(fake.state().unauthenticated, 1);
    assert!(fake.state().registrations.is_empty());
}

/// A child process killed and reaped when dropped, so a failing test leaves no worker behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `weir-worker` binary against the fake engine: SIGTERM is a clean stop (exit 0), a refused
/// token exits 1 with a hint, bad arguments exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_weir-worker");
    let fake = Fake::default();
    let setup = Setup::new(fake.clone());
    let engine = format!("http://127.0.0.1:{}", setup.port);
    let token_file = setup.path("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();

    let mut child = KillOnDrop(
        std::process::Command::new(bin)
            .args(["--engine", &engine, "--labels", "pool=cpu,zone=a", "--capacity", "2", "--name", "bin"])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--work-dir")
            .arg(setup.path("bin-work"))
            .env_remove("WEIR_WORKER_TOKEN")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    until("the binary to register", || (!fake.state().registrations.is_empty()).then_some(())).await;
    {
        let state = fake.state();
        let r = &state.registrations[0];
        // Two step slots, and by default an attempt held ahead for each.
        assert_eq!((r.name.as_str(), r.capacity, r.ahead, r.labels.len()), ("bin", 4, 2, 2));
    }
    // SAFETY: kill with a valid pid and signal number has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let status = until("the binary to exit", || child.0.try_wait().unwrap()).await;
    assert_eq!(status.code(), Some(0));

    let out = std::process::Command::new(bin)
        .args(["--engine", &engine, "--token", "wrong", "--work-dir"])
        .arg(setup.path("bin-work"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hint: give the worker the token"), "{stderr}");
    assert!(!stderr.contains("wrong"), "the token is never printed: {stderr}");

    let out = std::process::Command::new(bin).args(["--engine", &engine, "--labels", "novalue"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(bin).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes:"));
}
