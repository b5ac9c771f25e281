//! [`DockerRuntime`]: a step as a container on the worker's local Docker engine, through bollard
//! over the engine's unix socket. The container's shape (name, labels, mounts, limits, GPUs,
//! security) is pure data built in `config`; the image's pull policy lives in `image`. This module
//! owns the life of the container: create, attach, start, wait, stop with a grace, collect the
//! outcome, remove. Like the process runtime it never talks to the engine of weir, never uploads
//! (outputs are already on the host, in the bind-mounted outputs folder) and never retries.
//!
//! The life of a step:
//! - the image is made present by its pull policy (a missing image that cannot be pulled is an
//!   [`Error::Image`] at once; a pull is bounded in time);
//! - the container is created under [`container_name`] of the attempt, so a duplicated dispatch
//!   hits a name conflict and follows the container that exists (attaches to it and waits for it,
//!   starting it if it was only created) instead of starting a second one;
//! - its output is attached to before it starts, so no byte is missed: the engine sends stdout and
//!   stderr multiplexed (tty off), and each stream goes through its own pipe into the same line
//!   splitter as a process's (`logs::pump`);
//! - on timeout or cancel the container gets SIGTERM (passed on to the step by the init that runs
//!   as PID 1), `spec.grace` to end, then SIGKILL; timed by weir, to the millisecond, rather than
//!   by the engine's `stop`, which counts whole seconds;
//! - it ends as [`Outcome::OutOfMemory`] when the engine says the OOM killer struck and the step
//!   failed, else as [`Outcome::Exited`] with its code (a step killed by a signal exits 128 + the
//!   signal through the init: this runtime never reports [`Outcome::Signalled`]);
//! - the container is removed once the outcome is known. Dropping the future of a running step
//!   removes the container too (with force, from a spawned task, as the process runtime kills).
//!
//! The step runs as the worker's own uid:gid (no supplementary groups), so what it writes to the
//! outputs folder belongs to the worker on the host; an image that needs root to run needs a
//! worker that runs as root. A step with no attempt id (a bare step in tests) gets a unique name
//! of its own instead of [`container_name`].
//!
//! Known limits:
//! - A duplicate that follows a container its twin has created but not yet started starts it;
//!   the twin then attaches late and may miss the first lines, which the follower does see. A
//!   duplicate whose twin's container ended and was removed before it looked gets an error.
//! - Following (or resuming) a container that ends between its inspect and the attach costs the
//!   drain timeout: an attach to a container that is not running waits for its next start.
//! - A future dropped while its create request is in flight may leave a created, never started
//!   container behind (the removal can reach the engine first), and one dropped as the tokio
//!   runtime itself shuts down leaves its container (the spawned removal never runs); both carry
//!   weir's labels, so the worker's clean-up at start finds them.
//! - The timeout counts from the container's start: a pull does not eat into it.
//! - Only a local engine on a unix socket (`DOCKER_HOST=unix://...` or the default socket): no TCP
//!   and no TLS, so the worker carries no TLS stack for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::models::{ContainerStateStatusEnum, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{AttemptLabel, Error, LogLine, Outcome, RunFuture, Runtime, StepSpec, Stream, logs};

mod config;
mod image;

pub use config::{PIDS_LIMIT, container_name};

/// How long [`DockerRuntime::connect`] waits for the engine to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `run` waits, once the container has ended, for the rest of its output.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a SIGKILLed container may take to be reported dead before it is removed by force.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an ended container killed by SIGKILL is inspected again (50 ms apart) for a late OOM
/// event; see `exited`.
const OOM_TRIES: u32 = 20;
/// How long a name conflict's container may take to appear (see `follow`).
const CREATE_WAIT: Duration = Duration::from_secs(10);
/// The buffer between the attach stream and each line splitter.
const PIPE: usize = 64 * 1024;

/// Runs steps as containers on the local Docker engine; see the module docs. Clones share one
/// connection pool.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
    /// `uid:gid` of the worker: what steps run as, so their outputs belong to the worker.
    user: String,
    /// The longest a pull may take.
    pull_timeout: Duration,
}

/// A container of weir's found on the engine (see [`DockerRuntime::weir_containers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The container's name, without the engine's leading `/`.
    pub name: String,
    /// The attempt its labels name.
    pub id: AttemptLabel,
    /// Running as the engine's list shows it, which can lag a moment behind a start.
    pub running: bool,
    /// Every label of the container, weir's and the image's.
    pub labels: BTreeMap<String, String>,
}

/// A bollard error as a runtime error, with what was being done.
pub(super) fn engine_error(what: impl std::fmt::Display, error: bollard::errors::Error) -> Error {
    Error::Docker(format!("{what}: {error}"))
}

/// The engine's status code for a failed request, if it answered at all.
fn status(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

impl DockerRuntime {
    /// Connects to the local Docker engine (its default socket, or `DOCKER_HOST=unix://...`) and
    /// negotiates the API version; fails within a few seconds with a clear error when no daemon
    /// answers.
    pub async fn connect() -> Result<Self, Error> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_default();
        if !host.is_empty() && !host.starts_with("unix://") {
            return Err(Error::Docker(format!(
                "DOCKER_HOST={host}: weir reaches Docker through a local unix socket only; unset DOCKER_HOST or set it to unix:///path/to/docker.sock"
            )));
        }
        let at = if host.is_empty() { "/var/run/docker.sock" } else { &host };
        let unreachable = |e: String| {
            Error::Docker(format!(
                "no Docker engine answers at {at}: {e}; start dockerd, or point DOCKER_HOST at its socket"
            ))
        };
        let docker = Docker::connect_with_local_defaults().map_err(|e| unreachable(e.to_string()))?;
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        };
        // SAFETY: getuid and getgid cannot fail and have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let user = format!("{uid}:{gid}");
        tracing::debug!(api = %docker.client_version(), %user, "connected to docker");
        Ok(DockerRuntime { docker, user, pull_timeout: image::PULL_TIMEOUT })
    }

    /// Bounds image pulls by `timeout` instead of the default five minutes: past it the step
    /// fails with [`Error::Image`].
    pub fn with_pull_timeout(mut self, timeout: Duration) -> Self {
        self.pull_timeout = timeout;
        self
    }

    /// Every container carrying weir's labels on this engine (running or not).
    pub async fn weir_containers(&self) -> Result<Vec<Found>, Error> {
        let filters =
            std::collections::HashMap::from([("label", vec![format!("{}={}", config::MANAGED.0, config::MANAGED.1)])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let list =
            self.docker.list_containers(Some(options)).await.map_err(|e| engine_error("listing containers", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let name = c.names?.into_iter().next()?.trim_start_matches('/').to_string();
                let labels: BTreeMap<String, String> = c.labels.unwrap_or_default().into_iter().collect();
                let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
                Some(Found { name, id: config::attempt_of(&labels), running, labels })
            })
            .collect())
    }

    /// Waits for an existing container (found after a worker restart) to end, streaming its logs
    /// from now on, honouring `spec.timeout` (measured from now), the cancel token and the grace
    /// exactly as `run` does; removes it at the end. Returns the same outcomes as `run`. Only
    /// `timeout` and `grace` of `spec` matter here: the container already has everything else. A
    /// container that was created but never started is started.
    pub fn resume(
        &self,
        name: String,
        spec: StepSpec,
        logs: mpsc::Sender<LogLine>,
        cancel: CancellationToken,
    ) -> RunFuture<'_> {
        Box::pin(async move {
            let container = Container::new(self.docker.clone(), name);
            follow(&self.docker, container, &spec, logs, cancel, Duration::ZERO).await
        })
    }

    /// Stops (SIGTERM, `grace`, then SIGKILL) and removes a container by name; Ok when it is
    /// already gone.
    pub async fn remove(&self, name: &str, grace: Duration) -> Result<(), Error> {
        let mut exit = Box::pin(wait_exit(&self.docker, name));
        stop(&self.docker, name, grace, &mut exit).await;
        remove_now(&self.docker, name).await
    }
}

impl Runtime for DockerRuntime {
    fn run(&self, spec: StepSpec, logs: mpsc::Sender<LogLine>, cancel: CancellationToken) -> RunFuture<'_> {
        Box::pin(run(self, spec, logs, cancel))
    }
}

/// A unique name for a step with no attempt id (a bare step in tests): such steps share no
/// identity, so they must not share a container either.
fn anonymous_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = crate::clock::wall().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("weir-anon-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn run(
    rt: &DockerRuntime,
    spec: StepSpec,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> Result<Outcome, Error> {
    let Some(image) = spec.image.clone() else {
        return Err(Error::Image {
            image: "(none)".into(),
            reason: "the step runs in docker but names no image: set `image:` on the step".into(),
        });
    };
    // Built first: a bad spec (an empty argv, a folder that cannot be mounted) fails before a pull.
    let body = config::create_body(&spec, &image.name, &rt.user)?;
    tokio::select! {
        biased;
        () = cancel.cancelled() => return Ok(Outcome::Cancelled),
        ready = image::ensure(&rt.docker, &image, rt.pull_timeout) => ready?,
    }
    let name = if spec.id == AttemptLabel::default() { anonymous_name() } else { container_name(&spec.id) };
    let mut container = Container::new(rt.docker.clone(), name.clone());
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let creating = crate::clock::instant();
    match rt.docker.create_container(Some(options), body).await {
        Ok(_) => {}
        Err(e) if status(&e) == Some(409) => {
            tracing::warn!(
                container = name,
                "the attempt's container exists already (a duplicate dispatch?): following it"
            );
            return follow(&rt.docker, container, &spec, logs, cancel, CREATE_WAIT).await;
        }
        Err(e) => {
            container.done = true; // nothing was created
            return Err(match e {
                bollard::errors::Error::DockerResponseServerError { status_code: 404, message } => Error::Image {
                    image: image.name,
                    reason: format!("the engine has no such image ({message}): pull or load it on this host"),
                },
                e => engine_error(format!("creating container {name}"), e),
            });
        }
    }
    // Attached before the start, so that the first bytes of output are not lost.
    container.tasks = attach(&rt.docker, &name, &logs).await?;
    if let Err(e) = rt.docker.start_container(&name, None).await {
        container.finish().await;
        return Err(engine_error(format!("starting container {name}"), e));
    }
    tracing::debug!(container = name, "started");
    crate::metrics::container_started(creating.elapsed().as_secs_f64());
    supervise(&rt.docker, container, &spec, cancel).await
}

/// Attaches to an existing container from now on (starting it when it was only created) and
/// supervises it as `run` does. A container not found is looked for again during `appear`: after
/// a name conflict, the twin's container may still be in the making (the engine reserves its name
/// before the container can be inspected).
async fn follow(
    docker: &Docker,
    mut container: Container,
    spec: &StepSpec,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
    appear: Duration,
) -> Result<Outcome, Error> {
    let name = container.name.clone();
    let looking = crate::clock::instant();
    let state = loop {
        match docker.inspect_container(&name, None).await {
            Ok(info) => break info.state.and_then(|s| s.status),
            Err(e) if status(&e) == Some(404) && looking.elapsed() < appear => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                container.done = true;
                return Err(match status(&e) {
                    Some(404) => Error::Docker(format!("container {name} is gone: it ended and was removed")),
                    _ => engine_error(format!("inspecting container {name}"), e),
                });
            }
        }
    };
    // An attach to a container that is not running waits for its next start: to one that ended
    // it would never close. (One that ends between the inspect and the attach costs the drain
    // timeout and nothing else.)
    let ended = matches!(
        state,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD | ContainerStateStatusEnum::REMOVING)
    );
    if !ended {
        match attach(docker, &name, &logs).await {
            Ok(tasks) => container.tasks = tasks,
            Err(error) => tracing::warn!(container = name, %error, "cannot attach: its output is lost"),
        }
    }
    if state == Some(ContainerStateStatusEnum::CREATED)
        && let Err(e) = docker.start_container(&name, None).await
    {
        container.finish().await;
        return Err(engine_error(format!("starting container {name}"), e));
    }
    supervise(docker, container, spec, cancel).await
}

/// Waits for the container to end, stops it on timeout or cancel, reads its outcome, collects the
/// rest of its output and removes it.
async fn supervise(
    docker: &Docker,
    mut container: Container,
    spec: &StepSpec,
    cancel: CancellationToken,
) -> Result<Outcome, Error> {
    let name = container.name.clone();
    let mut exit = Box::pin(wait_exit(docker, &name));
    let timeout = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let stop_reason = tokio::select! {
        code = &mut exit => Err(code),
        () = timeout => Ok(Outcome::TimedOut),
        () = cancel.cancelled() => Ok(Outcome::Cancelled),
    };
    let outcome = match stop_reason {
        Err(code) => exited(docker, &name, code?).await,
        Ok(outcome) => {
            tracing::debug!(container = name, ?outcome, "stopping");
            stop(docker, &name, spec.grace, &mut exit).await;
            outcome
        }
    };
    container.finish().await;
    tracing::debug!(container = name, ?outcome, "ended");
    Ok(outcome)
}

/// Waits until the container is not running, for its exit code.
async fn wait_exit(docker: &Docker, name: &str) -> Result<i64, Error> {
    let options = WaitContainerOptionsBuilder::new().condition("not-running").build();
    let mut wait = docker.wait_container(name, Some(options));
    match wait.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        // bollard reports a non-zero exit as an error.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(engine_error(format!("waiting for container {name}"), e)),
        None => Err(Error::Docker(format!("waiting for container {name}: the engine sent no exit status"))),
    }
}

/// The outcome of a container that ended by itself with `code`: out of memory when the engine saw
/// the OOM killer strike and the step failed (a step that survived the kill of one of its
/// processes and succeeded has succeeded).
///
/// The engine learns of an OOM kill from an event of its own, which can come a moment after the
/// exit, or never: on a loaded host dockerd (20.10, cgroup v2) was seen to lose it when the
/// container's cgroup went away first, leaving `OOMKilled` false for good. So a step that died
/// of SIGKILL (137) under a memory limit is inspected again for a while, and then counts as out
/// of memory anyway: weir sent no kill (a stop of ours ends as TimedOut or Cancelled before this
/// is asked), and the kernel's OOM killer is what SIGKILLs a process at its limit. Only an
/// operator's `docker kill` of a memory-limited step is misnamed by this.
async fn exited(docker: &Docker, name: &str, code: i64) -> Outcome {
    let mut tries = 0;
    loop {
        let (oom, limited) = match docker.inspect_container(name, None).await {
            Ok(info) => (
                info.state.and_then(|s| s.oom_killed).unwrap_or(false),
                info.host_config.and_then(|h| h.memory).is_some_and(|m| m > 0),
            ),
            Err(error) => {
                // A twin (duplicate dispatch) may have removed it already.
                tracing::debug!(container = name, %error, "cannot inspect the ended container");
                (false, false)
            }
        };
        if oom && code != 0 {
            return Outcome::OutOfMemory;
        }
        if code != 128 + 9 || !limited {
            return Outcome::Exited(i32::try_from(code).unwrap_or(-1));
        }
        if tries == OOM_TRIES {
            tracing::info!(
                container = name,
                "SIGKILLed at its memory limit without an OOM event from the engine: out of memory"
            );
            return Outcome::OutOfMemory;
        }
        tries += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, `grace` for `exit` to resolve, then SIGKILL and a bounded wait. Errors are logged: a
/// container that is gone or not running needs no stopping, and removal (by force) follows anyway.
async fn stop<F>(docker: &Docker, name: &str, grace: Duration, exit: &mut std::pin::Pin<Box<F>>)
where
    F: std::future::Future<Output = Result<i64, Error>>,
{
    signal(docker, name, "SIGTERM").await;
    if tokio::time::timeout(grace, exit.as_mut()).await.is_err() {
        signal(docker, name, "SIGKILL").await;
        if tokio::time::timeout(KILL_TIMEOUT, exit.as_mut()).await.is_err() {
            tracing::warn!(container = name, "still running {KILL_TIMEOUT:?} after SIGKILL; removing it by force");
        }
    }
}

async fn signal(docker: &Docker, name: &str, signal: &str) {
    let options = KillContainerOptionsBuilder::new().signal(signal).build();
    match docker.kill_container(name, Some(options)).await {
        Ok(()) => {}
        // 404: gone; 409: not running.
        Err(e) if matches!(status(&e), Some(404 | 409)) => {}
        Err(error) => tracing::warn!(container = name, signal, %error, "cannot signal the container"),
    }
}

/// Removes a container by force (killing it if it runs); Ok when it is gone already.
async fn remove_now(docker: &Docker, name: &str) -> Result<(), Error> {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if status(&e) == Some(404) => Ok(()),
        // A removal is in progress (a twin's, or `run`'s own while `remove` is called): wait for it.
        Err(e) if status(&e) == Some(409) => {
            let options = WaitContainerOptionsBuilder::new().condition("removed").build();
            let removed = docker.wait_container(name, Some(options));
            tokio::pin!(removed);
            if tokio::time::timeout(KILL_TIMEOUT, removed.next()).await.is_err() {
                return Err(Error::Docker(format!("container {name} is still being removed after {KILL_TIMEOUT:?}")));
            }
            Ok(())
        }
        Err(e) => Err(engine_error(format!("removing container {name}"), e)),
    }
}

/// Attaches to the container's stdout and stderr and starts the tasks that turn them into lines:
/// one that splits the multiplexed stream into a pipe per stream, and a `logs::pump` per pipe.
async fn attach(docker: &Docker, name: &str, logs: &mpsc::Sender<LogLine>) -> Result<Vec<JoinHandle<()>>, Error> {
    let options = AttachContainerOptionsBuilder::new().stream(true).stdout(true).stderr(true).logs(false).build();
    let AttachContainerResults { mut output, input } = docker
        .attach_container(name, Some(options))
        .await
        .map_err(|e| engine_error(format!("attaching to {name}"), e))?;
    let (mut stdout, stdout_reader) = tokio::io::duplex(PIPE);
    let (mut stderr, stderr_reader) = tokio::io::duplex(PIPE);
    let demux = async move {
        let _input = input; // stdin is not attached; kept so the connection stays whole
        while let Some(Ok(chunk)) = output.next().await {
            let (pipe, bytes) = match chunk {
                LogOutput::StdOut { message } | LogOutput::Console { message } => (&mut stdout, message),
                LogOutput::StdErr { message } => (&mut stderr, message),
                LogOutput::StdIn { .. } => continue,
            };
            // The pumps read until the end (even for a closed receiver), so this only waits for them.
            if pipe.write_all(&bytes).await.is_err() {
                break;
            }
        }
        // Dropping the pipes ends them: the pumps flush any last unterminated line.
    };
    Ok(vec![
        tokio::spawn(demux),
        tokio::spawn(logs::pump(BufReader::new(stdout_reader), Stream::Stdout, logs.clone())),
        tokio::spawn(logs::pump(BufReader::new(stderr_reader), Stream::Stderr, logs.clone())),
    ])
}

/// A step's container while it may exist: removed (by force, from a spawned task) if the step's
/// future is dropped before `finish`, so an abandoned step never runs on unobserved.
struct Container {
    docker: Docker,
    name: String,
    /// The output tasks of `attach`.
    tasks: Vec<JoinHandle<()>>,
    /// Set once the container is removed, or was never created.
    done: bool,
}

impl Container {
    fn new(docker: Docker, name: String) -> Self {
        Container { docker, name, tasks: Vec::new(), done: false }
    }

    /// Collects the rest of the output (bounded by [`DRAIN_TIMEOUT`]), then removes the container.
    async fn finish(&mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            for task in tasks {
                let _ = task.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                container = self.name,
                "output still open {DRAIN_TIMEOUT:?} after the end; dropping the rest"
            );
            aborts.iter().for_each(|a| a.abort());
        }
        if let Err(error) = remove_now(&self.docker, &self.name).await {
            tracing::warn!(container = self.name, %error, "cannot remove the ended container");
        }
        self.done = true;
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
        if self.done {
            return;
        }
        let (docker, name) = (self.docker.clone(), std::mem::take(&mut self.name));
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(error) = remove_now(&docker, &name).await {
                        tracing::warn!(container = name, %error, "cannot remove the abandoned container");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(container = name, "abandoned outside a tokio runtime: left for the next start to remove")
            }
        }
    }
}
