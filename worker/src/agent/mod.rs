//! The worker's engine loop: [`Agent::run`] registers with the engine, long-polls Lease while it
//! has free slots, runs each assignment in its own task (`attempt`), heartbeats at the interval
//! the engine set (applying stop orders), and on shutdown stops its steps, reports them, and
//! returns. The engine may come and go: calls are retried (`session`), a forgotten worker id is
//! replaced by registering again, and running steps carry on meanwhile. The agent never decides
//! about retries or scheduling, and never logs the token.

mod attempt;
mod containers;
mod evict;
mod fence;
mod gpus;
mod host;
mod join;
mod live_metrics;
mod logs;
mod mask;
mod metrics_file;
mod session;
mod transfer;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weir_proto::transport::Transport;
use weir_proto::v1;
use weir_proto::v1::weir_worker_client::WeirWorkerClient;

pub use host::{cores, hostname};

use crate::runtime::{DockerRuntime, ProcessRuntime, Runtime};
pub(crate) use session::Key;
use session::{Auth, CallError, Session};

/// How long shutdown waits, beyond the grace period, for stopped steps to be reported.
const SHUTDOWN_REPORTS: Duration = Duration::from_secs(15);

/// How an agent joins the engine and where it keeps its files.
#[derive(Clone)]
pub struct AgentConfig {
    /// The engine's address, `http://127.0.0.1:7070`.
    pub engine: String,
    /// Sent as `authorization: Bearer <token>` on every call; never logged.
    pub token: Option<String>,
    /// TLS for an `https://` engine: the CA to trust, the client certificate for mTLS.
    pub tls: weir_proto::tls::ClientTls,
    /// A name for people; [`hostname`] by default.
    pub name: String,
    /// What steps' `runs_on` select on.
    pub labels: BTreeMap<String, String>,
    /// How many steps run at once.
    pub capacity: u32,
    /// How many attempts the worker holds beyond `capacity`, each waiting for a running step to
    /// end: one starts the moment a step exits, while that step's outcome is still being
    /// reported (and flushed), so no core idles through the report. An attempt held longer
    /// than `hold` is given back to the engine (see there), which makes holding safe where
    /// several workers share the engine. `weir-worker` holds one per step slot by default;
    /// this library default is 0.
    pub ahead: u32,
    /// How long an attempt held ahead waits for a running step to end before the worker gives
    /// it back to the engine unstarted (`Released`), to run on whichever worker asks first, and
    /// leases nothing more ahead until one of its steps ends. Short steps start well within it;
    /// behind long ones it is the most an attempt waits here while another worker idles.
    /// `None`: held until a slot frees (`weir run`, whose worker is the engine's only one).
    pub hold: Option<Duration>,
    /// `bundles/`, `blobs/`, `tmp/` and `attempts/` live under it.
    pub work_dir: PathBuf,
    pub runtime: Arc<dyn Runtime>,
    /// The Docker engine for `runtime: docker` steps; `None`: this worker runs process steps only
    /// and does not offer docker to the engine.
    pub docker: Option<Arc<DockerRuntime>>,
    /// Whether it runs process steps. Off for a worker given the Docker socket that should run
    /// only containers: a process step would run beside it with the same power over the host.
    pub process_steps: bool,
    /// How long a stopped step has between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Which GPUs to offer (`--gpus`); detected with nvidia-smi by default.
    pub gpus: crate::gpu::GpuChoice,
    /// The most bytes of input and output blobs kept in `work_dir/blobs` between attempts
    /// (`--cache-max`); the least recently used go first (`evict`).
    pub cache_max: u64,
    /// An engine in this same process (`weir run`): calls go straight into its router, with
    /// no socket in between (`weir_proto::transport`); `engine` then only names it in logs.
    pub local: Option<weir_proto::transport::Transport>,
}

/// [`AgentConfig::hold`] by default: some hundred times a short step's exit-to-start gap, and
/// nothing beside a long step it would wait behind.
pub const DEFAULT_HOLD: Duration = Duration::from_millis(250);

/// `--cache-max` by default: 10 GiB.
pub const DEFAULT_CACHE_MAX: u64 = 10 << 30;

impl AgentConfig {
    /// A config with the defaults: no token, the host name, no labels, one step per core, the
    /// process runtime, a 10 s grace period.
    pub fn new(engine: impl Into<String>, work_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            engine: engine.into(),
            token: None,
            tls: Default::default(),
            name: hostname(),
            labels: BTreeMap::new(),
            capacity: cores(),
            ahead: 0,
            hold: Some(DEFAULT_HOLD),
            work_dir: work_dir.into(),
            runtime: Arc::new(ProcessRuntime::new()),
            docker: None,
            process_steps: true,
            grace: Duration::from_secs(10),
            gpus: crate::gpu::GpuChoice::Detect,
            cache_max: DEFAULT_CACHE_MAX,
            local: None,
        }
    }
}

impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("engine", &self.engine)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("capacity", &self.capacity)
            .field("ahead", &self.ahead)
            .field("hold", &self.hold)
            .field("work_dir", &self.work_dir)
            .field("docker", &self.docker.is_some())
            .field("grace", &self.grace)
            .field("local", &self.local.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether a worker runs `runtime: docker` steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DockerMode {
    /// When the local Docker engine answers at start; process steps only otherwise.
    #[default]
    Auto,
    /// Always: a Docker engine that does not answer is a fatal error.
    On,
    /// Never, even with a Docker engine at hand.
    Off,
}

/// The Docker runtime `mode` asks for: `None` for `Off`, and for `Auto` without an answering
/// engine (logged); an error for `On` without one.
pub async fn connect_docker(mode: DockerMode) -> Result<Option<Arc<DockerRuntime>>, crate::runtime::Error> {
    match mode {
        DockerMode::Off => Ok(None),
        DockerMode::On => Ok(Some(Arc::new(DockerRuntime::connect().await?))),
        DockerMode::Auto => match DockerRuntime::connect().await {
            Ok(docker) => Ok(Some(Arc::new(docker))),
            Err(e) => {
                tracing::info!(error = %e, "no Docker engine: this worker runs process steps only");
                Ok(None)
            }
        },
    }
}

/// Why an agent stopped other than by its shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Tls(#[from] weir_proto::tls::TlsError),
    #[error("the token cannot be sent: it must be printable ASCII")]
    BadToken,
    #[error("cannot prepare the work folder `{}`: {reason}", path.display())]
    WorkDir { path: PathBuf, reason: String },
    /// The engine refused the worker: a wrong or missing token (UNAUTHENTICATED,
    /// PERMISSION_DENIED), or a registration it will not take.
    #[error("the engine refused this worker ({code:?}): {message}")]
    Refused { code: tonic::Code, message: String },
}

impl AgentError {
    /// Whether the engine refused the token.
    pub fn is_auth(&self) -> bool {
        matches!(self, AgentError::Refused { code: tonic::Code::Unauthenticated | tonic::Code::PermissionDenied, .. })
    }
}

/// A worker's engine loop; see the module docs.
pub struct Agent {
    config: AgentConfig,
    tracer: Option<Arc<crate::otel::Tracer>>,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Agent {
        Agent { config, tracer: None }
    }

    /// Traces the attempts the engine sends a `traceparent` with (`crate::otel`).
    pub fn traced(mut self, tracer: Arc<crate::otel::Tracer>) -> Agent {
        self.tracer = Some(tracer);
        self
    }

    /// Runs until `shutdown` fires, then stops leasing, cancels the running steps, reports them
    /// (Lost: the engine dispatches them again), and returns. Returns early with an error when
    /// the engine refuses the worker.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let mut config = self.config;
        // Steps run in their bundle's folder: a relative work folder (`weir run`'s default
        // `.weir`) would put WEIR_OUTPUTS and WEIR_INPUTS somewhere else for them.
        config.work_dir = std::path::absolute(&config.work_dir)
            .map_err(|e| AgentError::WorkDir { path: config.work_dir.clone(), reason: e.to_string() })?;
        let auth = Auth::new(config.token.as_deref()).ok_or(AgentError::BadToken)?;
        // The URL and the TLS settings, checked with the messages the CLI gives for them.
        let https = config.tls.check_url(&config.engine)?;
        let slot = auth.session_slot();
        // Calls go out from the caller's task over h2 (`weir_proto::direct`): one write per unary
        // call and no task hops before it; TLS with the same settings tonic's channel would use.
        let transport = match &config.local {
            Some(local) => local.clone(),
            None => {
                let tls = if https { Some(config.tls.rustls_config()?) } else { None };
                let settings = weir_proto::direct::Settings {
                    connect_timeout: Duration::from_secs(5),
                    keep_alive_interval: Some(Duration::from_secs(10)),
                    keep_alive_timeout: Duration::from_secs(10),
                };
                let direct = weir_proto::direct::Direct::new(&config.engine, settings, tls)
                    .map_err(|reason| AgentError::Tls(weir_proto::tls::TlsError::Usage(reason)))?;
                Transport::from(direct)
            }
        };
        let client = WeirWorkerClient::with_interceptor(transport, auth);

        let work_dir_error = |reason: String| AgentError::WorkDir { path: config.work_dir.clone(), reason };
        let attempts_dir = config.work_dir.join("attempts");
        let records = containers::records_dir(&config.work_dir);
        let owner = containers::owner(&hostname(), &config.work_dir);
        // Containers an earlier process of this worker started and that may still be live.
        let adoptable = match &config.docker {
            Some(docker) => adoptable(docker, &records, &owner, config.grace).await,
            None => Vec::new(),
        };
        // Attempt folders are reused while the agent runs; whatever an earlier process left is
        // stale (its outputs must never be collected by a new step), except the folders of the
        // containers about to be resumed.
        let slots = attempt::Slots::default();
        let kept: Vec<PathBuf> = adoptable.iter().map(|(_, r)| r.slot.clone()).collect();
        if kept.is_empty() {
            attempt::remove_tree(&attempts_dir);
        } else if let Ok(entries) = std::fs::read_dir(&attempts_dir) {
            for entry in entries.flatten() {
                if !kept.contains(&entry.path()) {
                    attempt::remove_tree(&entry.path());
                }
            }
            slots.skip_past(&kept);
        }
        std::fs::create_dir_all(&attempts_dir).map_err(|e| work_dir_error(e.to_string()))?;
        let no_inputs = config.work_dir.join("no-inputs");
        std::fs::create_dir_all(&no_inputs).map_err(|e| work_dir_error(e.to_string()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&no_inputs, std::fs::Permissions::from_mode(0o555))
                .map_err(|e| work_dir_error(e.to_string()))?;
        }
        let files = transfer::Files::open(&config.work_dir, config.cache_max).map_err(work_dir_error)?;

        if config.process_steps {
            // The reaper starts while the worker registers, not when the first step does.
            config.runtime.warm();
        }
        let running = config.capacity.max(1);
        // What the engine may lease to this worker at once.
        let capacity = running.saturating_add(config.ahead);
        let gpus = config.gpus.resolve().await;
        let register = v1::RegisterRequest {
            name: config.name.clone(),
            labels: config.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            capacity,
            cpus_milli: u64::from(cores()) * 1000,
            memory_bytes: host::memory_bytes(),
            gpus: gpus
                .iter()
                .map(|g| v1::Gpu { index: g.index, model: g.model.clone(), memory_bytes: g.memory_bytes })
                .collect(),
            runtimes: [
                config.process_steps.then_some(v1::Runtime::Process as i32),
                config.docker.is_some().then_some(v1::Runtime::Docker as i32),
            ]
            .into_iter()
            .flatten()
            .collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ahead: capacity - running,
            ..Default::default()
        };
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            engine = %config.engine,
            name = %config.name,
            labels = ?config.labels,
            runtimes = ?[config.process_steps.then_some("process"), config.docker.as_ref().map(|_| "docker")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>(),
            capacity = running,
            ahead = config.ahead,
            cpus = register.cpus_milli / 1000,
            memory_bytes = register.memory_bytes,
            gpus = ?gpus.iter().map(|g| format!("{}:{}", g.index, g.model)).collect::<Vec<_>>(),
            work_dir = %config.work_dir.display(),
            "worker starting"
        );
        let session = Arc::new(Session::new(client, register, slot, Some(config.work_dir.join("session"))));
        let registered = tokio::select! {
            r = session.register() => r,
            () = shutdown.cancelled() => return Ok(()),
        };
        match registered {
            Ok(()) => {}
            Err(CallError::Refused(status)) => {
                return Err(AgentError::Refused { code: status.code(), message: status.message().to_string() });
            }
            Err(CallError::Abandoned) => return session.take_fatal().map_or(Ok(()), Err),
        }

        let ctx = Arc::new(attempt::Context {
            session: session.clone(),
            files,
            runtime: config.runtime.clone(),
            docker: config.docker.clone(),
            process_steps: config.process_steps,
            records,
            owner,
            attempts_dir,
            no_inputs,
            slots,
            running: Arc::new(Semaphore::new(running as usize)),
            hold: config.hold,
            gave_back: std::sync::atomic::AtomicBool::new(false),
            grace: config.grace,
            gpus: gpus::GpuPool::new(gpus.iter().map(|g| g.index)),
            checkouts: Arc::new(crate::checkout::Checkouts::new()),
            otel: self.tracer,
        });
        let slots = Arc::new(Semaphore::new(capacity as usize));
        let mut tasks = JoinSet::new();
        let resumed = !adoptable.is_empty();
        for (name, recalled) in adoptable {
            let containers::Recalled { slot, assignment, gpus } = recalled;
            let Ok(key) = Key::of(assignment.attempt.as_ref()) else { continue };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                // Only when the worker restarted with a smaller --capacity.
                tracing::warn!(attempt = %key, container = name, "no free slot to resume a container, removing it");
                if let Some(docker) = &ctx.docker {
                    let _ = docker.remove(&name, ctx.grace).await;
                }
                continue;
            };
            let Some(cancel) = session.hold(&key) else { continue };
            let ctx = ctx.clone();
            tasks.spawn(async move {
                let _slot = permit;
                let _release = Release { session: ctx.session.clone(), key: key.clone() };
                attempt::resume(ctx, key, assignment, slot, name, gpus, cancel).await;
            });
        }
        if resumed {
            // At once rather than after an interval: the engine re-adopts the resumed attempts
            // (or orders the stale ones stopped) before their reports arrive.
            if let Err(e) = session.beat().await {
                tracing::warn!(error = %e, "the first heartbeat failed");
            }
        }
        let stop_beats = CancellationToken::new();
        let beats = tokio::spawn(heartbeats(session.clone(), stop_beats.clone()));
        let fencing = tokio::spawn(fence::watch(session.clone(), config.grace, stop_beats.clone()));
        lease_loop(&ctx, slots, &mut tasks, &shutdown).await;

        tracing::info!(running = session.held_count(), "worker stopping");
        session.stop_all();
        let deadline = config.grace + SHUTDOWN_REPORTS;
        if tokio::time::timeout(deadline, drain(&mut tasks)).await.is_err() {
            tracing::warn!("stopped steps not reported in time, giving up on them");
            session.abandon();
            if tokio::time::timeout(Duration::from_secs(5), drain(&mut tasks)).await.is_err() {
                tasks.abort_all();
                drain(&mut tasks).await;
            }
        }
        stop_beats.cancel();
        let _ = beats.await;
        let _ = fencing.await;
        match session.take_fatal() {
            Some(e) => Err(e),
            None => {
                tracing::info!("worker stopped");
                Ok(())
            }
        }
    }
}

/// Leases while there are free slots, spawning a task per assignment, until `shutdown` fires
/// or the session is abandoned (a fatal refusal).
async fn lease_loop(
    ctx: &Arc<attempt::Context>,
    slots: Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) {
    let session = &ctx.session;
    loop {
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "an attempt task failed");
            }
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => return,
            () = session.abandoned().cancelled() => return,
        };
        // An attempt was given back because the steps here are long: lease again only once
        // one of them has ended, else the engine could hand the same attempt straight back
        // (a permit taken here and dropped at once, behind any attempt already waiting).
        if ctx.gave_back.load(std::sync::atomic::Ordering::Acquire) {
            tokio::select! {
                ended = ctx.running.clone().acquire_owned() => drop(ended),
                () = shutdown.cancelled() => return,
                () = session.abandoned().cancelled() => return,
            }
            ctx.gave_back.store(false, std::sync::atomic::Ordering::Release);
        }
        let leased = tokio::select! {
            leased = session.lease(session.free()) => leased,
            () = shutdown.cancelled() => return,
            () = session.abandoned().cancelled() => return,
        };
        let (assignment, traceparent) = match leased {
            Ok(Some((assignment, traceparent))) => (assignment, traceparent),
            Ok(None) => continue,
            Err(CallError::Refused(status)) => {
                tracing::warn!(code = ?status.code(), error = status.message(), "the engine refused a lease");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
            Err(CallError::Abandoned) => return,
        };
        let Some((key, cancel)) = accept(ctx, &assignment, traceparent, shutdown) else { continue };
        let (ctx, stopping) = (ctx.clone(), shutdown.clone());
        // A plain task, not spawn_blocking: the process runtime's parent-death signal follows
        // the thread that spawned the step, and tokio's worker threads live as long as the agent.
        tasks.spawn(async move {
            let _slot = slot;
            let mut current = Some((key, assignment, cancel));
            // Each outcome's report leases the next attempt for this slot when one is ready
            // (ReportRequest.lease_next): a chain runs here without going back to the long-poll.
            while let Some((key, assignment, cancel)) = current.take() {
                let release = Release { session: ctx.session.clone(), key: key.clone() };
                let next = attempt::run(ctx.clone(), key, assignment, cancel, &stopping).await;
                drop(release);
                current = next.and_then(|(assignment, traceparent)| {
                    let (key, cancel) = accept(&ctx, &assignment, traceparent, &stopping)?;
                    Some((key, assignment, cancel))
                });
            }
        });
    }
}

/// Holds a leased attempt for this worker: its key and cancel token, or `None` (logged) for an
/// assignment without a valid attempt or one already running here. Begins its trace. One that
/// arrives while the worker stops (leased with a report sent just before) is stopped at once,
/// so it reports as every other attempt stopped by the shutdown does.
fn accept(
    ctx: &attempt::Context,
    assignment: &v1::Assignment,
    traceparent: Option<String>,
    stopping: &CancellationToken,
) -> Option<(Key, CancellationToken)> {
    let key = match Key::of(assignment.attempt.as_ref()) {
        Ok(key) => key,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an assignment without a valid attempt");
            return None;
        }
    };
    let Some(cancel) = ctx.session.hold(&key) else {
        tracing::warn!(attempt = %key, "ignoring an assignment for an attempt already running here");
        return None;
    };
    if let (Some(tracer), Some(traceparent)) = (&ctx.otel, traceparent) {
        let (pipeline, step, instance) = (&assignment.pipeline, &assignment.step, &assignment.instance_name);
        tracer.begin(&key, &traceparent, crate::otel::Attempt { pipeline, step, instance });
    }
    if stopping.is_cancelled() {
        ctx.session.stop_all();
    }
    Some((key, cancel))
}

/// The containers of this worker (`owner`) that an earlier process started, with their attempt
/// folders and assignments; every other container of this worker is removed, and every record
/// without a container dropped.
async fn adoptable(
    docker: &DockerRuntime,
    records: &std::path::Path,
    owner: &str,
    grace: Duration,
) -> Vec<(String, containers::Recalled)> {
    let found = match docker.weir_containers().await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list weir's containers: none is resumed");
            return Vec::new();
        }
    };
    let mut adoptable = Vec::new();
    for f in found.into_iter().filter(|f| f.id.owner == owner) {
        match containers::recall(records, &f.name) {
            Some(recalled) => adoptable.push((f.name, recalled)),
            None => {
                tracing::info!(container = f.name, "removing a container of this worker that has no record");
                if let Err(e) = docker.remove(&f.name, grace).await {
                    tracing::warn!(container = f.name, error = %e, "cannot remove a stale container");
                }
            }
        }
    }
    for name in containers::recorded(records) {
        if !adoptable.iter().any(|(n, _)| *n == name) {
            containers::forget(records, &name);
        }
    }
    adoptable
}

/// Forgets a held attempt when its run ends, even by a panic (the task's slot permit is
/// dropped with the task).
struct Release {
    session: Arc<Session>,
    key: Key,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.session.release(&self.key);
    }
}

async fn drain(tasks: &mut JoinSet<()>) {
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done
            && e.is_panic()
        {
            tracing::error!(error = %e, "an attempt task panicked");
        }
    }
}

/// Heartbeats at the interval the engine set until `stop` fires or the session is abandoned.
async fn heartbeats(session: Arc<Session>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(session.heartbeat_interval()) => {}
            () = stop.cancelled() => return,
        }
        let beat = tokio::select! {
            beat = session.beat() => beat,
            () = stop.cancelled() => return,
        };
        match beat {
            Ok(()) => {}
            Err(CallError::Refused(status)) => {
                tracing::warn!(code = ?status.code(), error = status.message(), "the engine refused a heartbeat");
            }
            Err(CallError::Abandoned) => return,
        }
    }
}
