//! `weir run FILE`: the embedded default. Starts the engine (sled in `./.weir` unless
//! `--data-dir`) and local workers in this process, talking over loopback gRPC through exactly
//! the code paths `weir server`, `weir-worker` and the client commands use; submits the
//! pipeline, starts a run, shows its progress, prints the summary and the logs of failed steps,
//! and exits 0 (succeeded), 1 (failed or cancelled) or 2 (invalid). Ctrl-C cancels the run.
//! The worker offers this machine's cores, memory and GPUs: a step it could never run cancels
//! the run at once with the reason (`no worker offers gpus=1`), since no other worker will come.
//!
//! Runs found unfinished in the data folder were left by a `weir run` that was killed: neither
//! `weir run` nor `--local` resumes them by itself (`Resume::Only`); they are named with how far
//! they got, and `weir resume RUN --local` (`client::resume`) finishes one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;
use weir_core::plan;
use weir_core::spec::{self, Limits};
use weir_engine::server::{self, Resume, ServerConfig};
use weir_proto::v1;
use weir_worker::agent::{Agent, AgentConfig};
use weir_worker::agent::{DockerMode, connect_docker};
use weir_worker::runtime::ProcessRuntime;

use crate::client::runs::{OnInterrupt, OnStuck, follow_run};
use crate::client::{ConnArgs, Failure, conn, submit};
use crate::offline::{self, ParamArgs};

pub const RUN_EXIT_CODES: &str = "\
Exit status:
  0  the run succeeded
  1  the run failed or was cancelled (the logs of failed steps are printed), or a step asks for
     more than this machine's worker offers (gpus: 1 without a GPU, runs_on labels, docker):
     the run is cancelled at once with the reason rather than left waiting
  2  invalid: the pipeline file or a parameter has problems, or usage error
  3  the embedded engine could not start (data folder in use by another weir, disk error, an
     --otlp-endpoint that is not an http:// URL)
  130  interrupted twice (Ctrl-C): stopped waiting while the run was being cancelled";

/// The lease timeout of the engine in this process: one process, so a worker cannot be lost
/// without the engine; it also bounds how long a resumed run waits for the attempts its killed
/// `weir run` held before running them again.
pub const LEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The engine of `weir run`, `--local` and `weir ui` on the data folder `dir`. One process: a
/// worker cannot be lost without the engine, so short terms only make cancel and stop orders
/// quick. No schedules (a pipeline's `schedule:` is for a `weir server`). Runs a killed
/// `weir run` left here wait for `weir resume RUN --local`: resuming them unasked would run
/// their steps beside this process's, and stop them again when it ends.
pub fn local_config(dir: &std::path::Path, listen: std::net::SocketAddr) -> ServerConfig {
    let mut config = ServerConfig::new(dir, listen);
    config.terms.heartbeat_interval = Duration::from_millis(250);
    config.terms.lease_timeout = LEASE_TIMEOUT;
    config.scheduling = false;
    config.resume = Resume::Only(Default::default());
    config
}

/// How many trailing log lines of each failed step are printed.
const FAILED_LOG_LINES: usize = 40;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The pipeline file (a folder means its pipeline.yaml).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    params: ParamArgs,
    /// Folder for the run database, artifacts and the worker's cache; runs accumulate there.
    #[arg(long, default_value = ".weir", value_name = "DIR", env = "WEIR_DATA_DIR")]
    data_dir: PathBuf,
    /// Steps run at once (default: the number of cores). As many more attempts wait leased,
    /// each to start the moment a running step exits, while that step's outcome is recorded.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    workers: Option<u32>,
    /// Seconds a stopped step gets between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    grace: u64,
    /// Run every step, even those with `cache:` whose key matches an earlier success here.
    /// Their results still refresh the cache.
    #[arg(long)]
    no_cache: bool,
    /// Labels this machine's worker offers, for steps with `runs_on:` (`--labels gpu=a100,pool=ml`);
    /// without them such steps can never run here, and the run fails at once saying so.
    #[arg(long = "labels", alias = "label", value_name = "K=V[,K=V]", value_delimiter = ',', value_parser = label)]
    labels: Vec<(String, String)>,
    /// Serve the web UI on ADDR (loopback; default 127.0.0.1:7080) while the run runs, and
    /// after it ends until Ctrl-C, so the run's graph, logs and metrics can be watched live.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::ui::DEFAULT_UI)]
    ui: Option<std::net::SocketAddr>,
    #[command(flatten)]
    otlp: crate::otlp::OtlpArgs,
}

/// `key=value`, as `weir-worker --labels` takes them.
fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("`{s}` is not a label: expected key=value")),
    }
}

pub fn run(args: RunArgs) -> ExitCode {
    // Validate before starting anything: problems get exact positions and exit 2.
    let file = offline::pipeline_file(&args.file);
    let limits = Limits::default();
    let source = match crate::source::read(&file, &limits) {
        Ok(s) => s,
        Err(d) => {
            offline::report(&file, "", &[d]);
            return ExitCode::from(2);
        }
    };
    let pipeline = match spec::load(&source, &limits) {
        Ok(p) => p,
        Err(diags) => {
            offline::report(&file, &source, &diags);
            return ExitCode::from(2);
        }
    };
    if let Err(diags) = plan::resolve_params(&pipeline, &args.params.params) {
        offline::report(&file, &source, &diags);
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    // Asking dockerd for its version costs a `weir run` tens of milliseconds (a third of a
    // one-step run): only a pipeline with a docker step asks.
    let docker = pipeline.steps().iter().any(|s| s.runtime == spec::model::Runtime::Docker);
    // On a worker thread, not this one: a task on the main thread is woken from a worker thread
    // (a futex wake and a context switch) by every event of the run it follows.
    match rt.block_on(rt.spawn(embedded(args, file, docker))) {
        // The run is over and on disk: every transition was flushed before it was acknowledged,
        // and `server.shutdown` closed the store and waited for its lock; the worker stopped and
        // the traces were drained. Dropping the runtime now would only wake and join its idle
        // threads, about 1.3 ms of a one-step run's 18 (BENCHMARKS.md, sixth round). `exit`
        // still flushes stdout.
        Ok(status) => std::process::exit(i32::from(status)),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => {
            eprintln!("error: the run was stopped: {e}");
            ExitCode::from(3)
        }
    }
}

/// `docker`: whether the pipeline has a docker step, so the worker needs a Docker engine. Without
/// one the worker neither connects to Docker nor tidies containers an earlier killed `weir run`
/// left (`weir resume --local` and the next pipeline with a docker step do).
async fn embedded(args: RunArgs, file: PathBuf, docker: bool) -> u8 {
    let listen = args.ui.unwrap_or_else(|| "127.0.0.1:0".parse().expect("a socket address"));
    if !listen.ip().is_loopback() {
        eprintln!("error: --ui {listen}: the web UI of `weir run` serves loopback only (it has no tokens)");
        return 2;
    }
    let mut config = local_config(&args.data_dir, listen);
    config.otlp_endpoint = args.otlp.endpoint();
    // A data folder without a database holds no run a killed `weir run` could have left.
    let fresh = !config.data_dir.join("db").exists();
    let server = match server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start the embedded engine: {e}");
            return 3;
        }
    };
    let tracer = match args.otlp.worker_tracer() {
        Ok(tracer) => tracer,
        Err(e) => {
            eprintln!("error: {e}");
            return 3;
        }
    };
    let shutdown = CancellationToken::new();
    let mut agent_config = AgentConfig::new(server.url(), args.data_dir.join("worker"));
    if let Some(n) = args.workers {
        agent_config.capacity = n;
    }
    // The engine's only worker: an attempt held ahead could not have run anywhere else, so it
    // is never given back.
    agent_config.ahead = agent_config.capacity;
    agent_config.hold = None;
    agent_config.name = "local".into();
    agent_config.local = Some(server.transport());
    agent_config.labels = args.labels.iter().cloned().collect();
    agent_config.grace = Duration::from_secs(args.grace);
    agent_config.runtime = Arc::new(ProcessRuntime::new());
    // Docker steps run when a Docker engine answers; without one the engine shows them waiting
    // for a worker that runs docker steps.
    if docker {
        agent_config.docker = connect_docker(DockerMode::Auto).await.unwrap_or_default();
    }
    let agent = tokio::spawn(crate::otlp::run_agent(Agent::new(agent_config), tracer, shutdown.clone()));

    let conn = ConnArgs {
        server: server.url(),
        weir_run: Some(args.data_dir.clone()),
        transport: Some(server.transport()),
        ..ConnArgs::default()
    };
    if !fresh && let Ok(mut client) = conn::connect(&conn).await {
        crate::client::resume::announce_interrupted(&mut client, &args.data_dir, &[]).await;
    }
    let result = drive(&conn, &args, &file).await;
    // Its transport holds the engine, which shutdown waits to be free.
    drop(conn);
    if args.ui.is_some() && !matches!(result, Err(Failure::Interrupted)) {
        eprintln!("the web UI stays up at {}/runs: Ctrl-C stops it", server.url());
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(args.grace + 5), agent).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "local worker ended with an error"),
        Err(_) => tracing::warn!("local worker did not stop in time"),
        _ => {}
    }
    server.shutdown().await;
    match result {
        Ok(()) => 0,
        Err(Failure::Refused) => 2,
        Err(f) => f.status(),
    }
}

/// Submit, start, follow, and on failure print the failed steps' logs.
async fn drive(conn: &ConnArgs, args: &RunArgs, file: &std::path::Path) -> Result<(), Failure> {
    let submitted = submit::submit_quietly(conn, file, Some(&args.data_dir)).await?;
    let mut client = conn::connect(conn).await?;
    let request = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Version(submitted.version.clone())),
        params: args.params.params.iter().cloned().collect(),
        no_cache: args.no_cache,
    };
    let run = match client.start_run(request).await {
        Ok(r) => r.into_inner().run.unwrap_or_default(),
        Err(s) => {
            eprintln!("error: {}", s.message());
            return Err(Failure::Refused);
        }
    };
    eprintln!(
        "run {} of {} ({} steps) — data in {}",
        run.run_id,
        submitted.name,
        run.steps_total,
        args.data_dir.display()
    );
    if args.ui.is_some() {
        eprintln!("watch it at {}/runs/{}", conn.server, run.run_id);
    }
    let followed = follow_run(&mut client, conn, &run.run_id, OnInterrupt::Cancel, OnStuck::Cancel).await;
    if matches!(followed, Err(Failure::RunFailed)) {
        print_failed_logs(&mut client, &run.run_id, &conn.local_flag()).await;
    }
    followed
}

/// The last lines of every failed step's output, on stderr.
async fn print_failed_logs(client: &mut conn::Client, run_id: &str, local: &str) {
    let Ok(got) = client.get_run(v1::GetRunRequest { run_id: run_id.into(), ..Default::default() }).await else {
        return;
    };
    for step in got.into_inner().steps.into_iter().filter(|s| s.state() == v1::StepState::Failed) {
        let request = v1::StreamLogsRequest {
            run_id: run_id.into(),
            step: step.name.clone(),
            follow: false,
            attempt: step.attempt,
        };
        let mut text = Vec::new();
        if let Ok(stream) = client.stream_logs(request).await {
            let mut stream = stream.into_inner();
            while let Ok(Some(chunk)) = stream.message().await {
                text.extend_from_slice(&chunk.data);
            }
        }
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let shown = &lines[lines.len().saturating_sub(FAILED_LOG_LINES)..];
        eprintln!("\n--- {} (attempt {}): {} ---", step.name, step.attempt, step.message);
        if lines.len() > shown.len() {
            eprintln!("... {} earlier lines: `weir logs {run_id} '{}'{local}`", lines.len() - shown.len(), step.name);
        }
        if shown.is_empty() {
            eprintln!("(no output)");
        }
        for line in shown {
            eprintln!("{line}");
        }
    }
}

/// `--local DIR`: starts an engine (no schedules) and a worker in this process on `weir run`'s
/// data folder `dir` and returns the engine's URL. They live until the process exits: every
/// acknowledged write was flushed before its answer, so nothing is lost then. Of the runs a
/// killed `weir run` left unfinished there, the engine resumes those in `resume` only. Without
/// `worker` no worker starts (to cancel a resumed run before any of its steps starts).
pub async fn attach(dir: &std::path::Path, resume: &[String], worker: bool) -> Result<String, Failure> {
    if !dir.join("db").is_dir() {
        eprintln!(
            "error: --local {}: no `weir run` data there yet; run a pipeline first (`weir run FILE --data-dir {}`)",
            dir.display(),
            dir.display()
        );
        return Err(Failure::Unreachable);
    }
    let mut config = local_config(dir, "127.0.0.1:0".parse().expect("a socket address"));
    config.resume = Resume::Only(resume.iter().cloned().collect());
    let server = server::start(config).await.map_err(|e| {
        eprintln!("error: --local {}: cannot start an engine on it: {e}", dir.display());
        Failure::Unreachable
    })?;
    let url = server.url();
    if !worker {
        std::mem::forget(server);
        return Ok(url);
    }
    let mut agent_config = AgentConfig::new(url.clone(), dir.join("worker"));
    agent_config.name = "local".into();
    agent_config.local = Some(server.transport());
    agent_config.runtime = Arc::new(ProcessRuntime::new());
    agent_config.docker = connect_docker(DockerMode::Auto).await.unwrap_or_default();
    let stop = CancellationToken::new();
    let agent = tokio::spawn(Agent::new(agent_config).run(stop.clone()));
    let _ = ATTACHED.set((stop, std::sync::Mutex::new(Some(agent))));
    // The engine serves until the process ends.
    std::mem::forget(server);
    Ok(url)
}

/// An engine on `weir run`'s data folder `dir` for one question asked over loopback gRPC
/// (`weir plan`'s cache lines): no worker, no schedules, no run resumed. The caller shuts it
/// down once answered, which unlocks the folder.
pub async fn engine_only(dir: &std::path::Path) -> Result<server::Server, server::StartError> {
    let mut config = ServerConfig::new(dir, "127.0.0.1:0".parse().expect("a socket address"));
    config.scheduling = false;
    config.resume = Resume::Only(Default::default());
    server::start(config).await
}

type AgentTask = tokio::task::JoinHandle<Result<(), weir_worker::AgentError>>;

/// The worker `attach` started, so [`detach`] can stop it before the runtime goes.
static ATTACHED: std::sync::OnceLock<(CancellationToken, std::sync::Mutex<Option<AgentTask>>)> =
    std::sync::OnceLock::new();

/// Stops the worker of `--local` (if one was started), so it does not go on calling an engine
/// that is going away.
pub async fn detach() {
    let Some((stop, agent)) = ATTACHED.get() else { return };
    stop.cancel();
    let task = agent.lock().ok().and_then(|mut a| a.take());
    if let Some(task) = task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}
