//! Shared helpers for weir's end-to-end tests: a real engine server on `127.0.0.1:0` with a
//! temporary data folder, real worker agents running steps as real processes, and a gRPC client,
//! all in the test process. Nothing is mocked.

pub mod http;
pub mod pki;
pub mod procs;
pub mod webdriver;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use weir_data::bundle::{Bundle, BundleLimits};
use weir_engine::server::{self, Server, ServerConfig};
use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_worker::runtime::DockerRuntime;
use weir_worker::{Agent, AgentConfig};

/// The repository's root folder.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// An engine, its workers and a client.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub server: Option<Server>,
    pub client: WeirClientClient<Channel>,
    workers: Vec<(CancellationToken, JoinHandle<()>)>,
}

/// Short lease terms so lost workers are noticed in tests within a second or two.
pub fn test_config(data_dir: &Path) -> ServerConfig {
    let mut c = ServerConfig::new(data_dir, "127.0.0.1:0".parse().expect("addr"));
    c.terms.lease_timeout = Duration::from_millis(1500);
    c.terms.heartbeat_interval = Duration::from_millis(200);
    c.tick = Duration::from_millis(20);
    c
}

impl Cluster {
    /// A server and `workers` agents of `capacity` slots each.
    pub async fn start(workers: usize, capacity: u32) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = server::start(test_config(&dir.path().join("engine"))).await.expect("server starts");
        let client = WeirClientClient::connect(server.url()).await.expect("client connects");
        let mut c = Cluster { dir, server: Some(server), client, workers: Vec::new() };
        for _ in 0..workers {
            c.add_worker(capacity);
        }
        c
    }

    pub fn url(&self) -> String {
        self.server.as_ref().expect("running").url()
    }

    /// The in-process transport to the server (as `weir run`'s embedded worker uses).
    pub fn transport(&self) -> weir_proto::transport::Transport {
        self.server.as_ref().expect("running").transport()
    }

    /// Starts one more worker agent; returns its index.
    pub fn add_worker(&mut self, capacity: u32) -> usize {
        self.add_worker_with(capacity, |_| {})
    }

    /// Starts one more worker agent, named `w<index>`, with `configure` applied to its config
    /// (labels, GPUs, Docker); returns its index.
    pub fn add_worker_with(&mut self, capacity: u32, configure: impl FnOnce(&mut AgentConfig)) -> usize {
        let n = self.workers.len();
        let mut config = AgentConfig::new(self.url(), self.dir.path().join(format!("worker-{n}")));
        config.capacity = capacity;
        config.name = format!("w{n}");
        config.grace = Duration::from_secs(2);
        configure(&mut config);
        let token = CancellationToken::new();
        let agent = Agent::new(config);
        let stop = token.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = agent.run(stop).await {
                eprintln!("worker ended: {e}");
            }
        });
        self.workers.push((token, handle));
        n
    }

    /// Ends worker `n` abruptly: its task is aborted mid-whatever, its steps' processes die
    /// with it, and it never reports or heartbeats again.
    pub fn kill_worker(&mut self, n: usize) {
        self.workers[n].1.abort();
    }

    /// Submits `yaml` (with `folder` bundled, if given); returns the version.
    pub async fn submit(&mut self, yaml: &str, folder: Option<&Path>) -> String {
        let mut msgs = Vec::new();
        let mut header =
            v1::SubmitPipelineHeader { yaml: yaml.into(), file_name: "pipeline.yaml".into(), ..Default::default() };
        let mut chunks = Vec::new();
        if let Some(folder) = folder {
            let bundle = Bundle::build(folder, BundleLimits::default()).expect("bundle");
            let mut bytes = Vec::new();
            bundle.write_to(&mut bytes).expect("archive");
            header.bundle_digest = bundle.digest().to_string();
            header.bundle_size = bytes.len() as u64;
            chunks = bytes.chunks(1 << 20).map(<[u8]>::to_vec).collect();
        }
        msgs.push(v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) });
        for c in chunks {
            msgs.push(v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::BundleChunk(c)) });
        }
        self.client.submit_pipeline(tokio_stream::iter(msgs)).await.expect("submitted").into_inner().version
    }

    /// Starts a run of `version` with `params`; returns its id.
    pub async fn start_run(&mut self, version: &str, params: &[(&str, &str)]) -> String {
        let params: HashMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let req = v1::StartRunRequest {
            pipeline: Some(v1::start_run_request::Pipeline::Version(version.into())),
            params,
            no_cache: false,
        };
        self.client.start_run(req).await.expect("started").into_inner().run.expect("a run").run_id
    }

    pub async fn get(&mut self, run: &str) -> v1::GetRunResponse {
        self.client
            .get_run(v1::GetRunRequest { run_id: run.into(), ..Default::default() })
            .await
            .expect("get")
            .into_inner()
    }

    /// Polls until the run is terminal (at most `limit`).
    pub async fn wait(&mut self, run: &str, limit: Duration) -> v1::GetRunResponse {
        let start = Instant::now();
        loop {
            let got = self.get(run).await;
            let state = got.run.as_ref().expect("run").state();
            if matches!(state, v1::RunState::Succeeded | v1::RunState::Failed | v1::RunState::Cancelled) {
                return got;
            }
            assert!(start.elapsed() < limit, "run {run} still {state:?} after {limit:?}: {:#?}", got.steps);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls until `pred` holds for the run (at most `limit`).
    pub async fn wait_for(&mut self, run: &str, limit: Duration, pred: impl Fn(&v1::GetRunResponse) -> bool) {
        let start = Instant::now();
        loop {
            let got = self.get(run).await;
            if pred(&got) {
                return;
            }
            assert!(start.elapsed() < limit, "condition not met after {limit:?}: {:#?}", got.steps);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The whole log text of one step instance.
    pub async fn logs(&mut self, run: &str, step: &str) -> String {
        let req = v1::StreamLogsRequest { run_id: run.into(), step: step.into(), follow: false, attempt: 0 };
        let mut stream = self.client.stream_logs(req).await.expect("logs").into_inner();
        let mut out = Vec::new();
        while let Some(c) = stream.message().await.expect("a chunk") {
            out.extend_from_slice(&c.data);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Stops the workers and the server.
    pub async fn stop(mut self) {
        for (token, _) in &self.workers {
            token.cancel();
        }
        for (_, handle) in self.workers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// A step of `got` by instance name.
pub fn step<'a>(got: &'a v1::GetRunResponse, name: &str) -> &'a v1::Step {
    got.steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no step {name} in {:#?}", got.steps))
}

/// `(state, attempts, message)` of a step, for compact assertions.
pub fn summary(got: &v1::GetRunResponse, name: &str) -> (v1::StepState, u32, String) {
    let s = step(got, name);
    (s.state(), s.attempt, s.message.clone())
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls until `pid` is gone (at most `limit`).
pub fn wait_gone(pid: i32, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// The local Docker engine with the `weir-test/busybox:1` test image (built by
/// `scripts/test-images.sh` when missing); `None`, after a loud message, when no engine answers
/// outside CI. In CI a missing engine fails the test.
pub async fn docker() -> Option<Arc<DockerRuntime>> {
    match DockerRuntime::connect().await {
        Ok(docker) => {
            let built = std::process::Command::new("bash").arg(root().join("scripts/test-images.sh")).status();
            assert!(built.is_ok_and(|s| s.success()), "scripts/test-images.sh failed");
            Some(Arc::new(docker))
        }
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "CI needs a running Docker engine: {e}");
            eprintln!("SKIPPED: no Docker engine answers ({e}); this docker test did not run");
            None
        }
    }
}

/// `weir` and `weir-worker` from this build: `cargo test --workspace` builds every binary of the
/// workspace before any test runs, next to this test's own folder (`target/<profile>/`, wherever
/// CARGO_TARGET_DIR puts it). Run alone (`cargo test -p weir-tests --test hosts`), cargo builds
/// neither: missing, they are built here; present, they are used as they are (build them after
/// changing the engine or the worker, or run the whole workspace's tests).
pub fn binaries() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf();
    let (weir, worker) = (dir.join("weir"), dir.join("weir-worker"));
    if !weir.is_file() || !worker.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "weir-cli", "--bin", "weir", "-p", "weir-worker", "--bin", "weir-worker"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        eprintln!("{} or {} is missing: building them with {build:?}", weir.display(), worker.display());
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building weir and weir-worker failed: {status}");
        assert!(weir.is_file() && worker.is_file(), "cargo built them somewhere other than {}", dir.display());
    }
    (weir, worker)
}
