//! The step runtime: one trait for "run this step somewhere and tell me how it ended", with a
//! process implementation and a Docker one (issue 4). A runtime owns only the life of
//! one step's processes: it streams their output as [`LogLine`]s, enforces the timeout and cancel
//! with a grace period, and reports an [`Outcome`]. It never talks to the engine, never uploads,
//! and never decides about retries. Every implementation must pass the shared conformance suite
//! in `worker/tests/conformance/`.

mod docker;
mod env;
mod logs;
mod process;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
pub use tokio_util::sync::CancellationToken;

pub use docker::{DockerRuntime, Found, PIDS_LIMIT as DOCKER_PIDS_LIMIT, container_name};
pub use env::{KEPT_VARS, METRICS_FILE, set_metrics_file, set_visible_gpus, step_env};
pub use logs::MAX_LINE;
pub use process::ProcessRuntime;

/// What a step runs; mirrors the engine's `plan::Resolved`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A script for `sh -c`.
    Script(String),
    /// An argv, run without a shell: no word splitting, no quoting rules.
    Argv(Vec<String>),
}

/// Everything a runtime needs to run one step attempt.
#[derive(Clone, Debug)]
pub struct StepSpec {
    pub action: Action,
    /// The caller's environment for the step (`WEIR_RUN_ID`, `WEIR_STEP`, `WEIR_PARAM_*`, the
    /// step's own `env:`). The runtime adds `WEIR_INPUTS` and `WEIR_OUTPUTS`; see [`step_env`] for
    /// what else of the worker's environment is kept.
    pub env: Vec<(String, String)>,
    /// The working directory: the unpacked pipeline bundle.
    pub workdir: PathBuf,
    /// Where the outputs of the steps this one needs are, as `<step>/<name>`.
    pub inputs_dir: PathBuf,
    /// Where the step writes its outputs; the caller uploads them when the step succeeds.
    pub outputs_dir: PathBuf,
    /// Wall-clock limit from start; `None` means no limit.
    pub timeout: Option<Duration>,
    /// How long a stopped step has between SIGTERM (or the runtime's equivalent) and SIGKILL.
    pub grace: Duration,
    /// Which attempt this is: names and labels its container, so a second dispatch of the same
    /// attempt cannot start a second one. Empty in tests that run a bare step.
    pub id: AttemptLabel,
    /// CPU and memory limits (the step's `resources`); the process runtime does not enforce them.
    pub limits: Limits,
    /// The GPU device indices the worker assigned to this attempt, and no other running one:
    /// a device request for Docker, `CUDA_VISIBLE_DEVICES` for a process.
    pub gpus: Vec<u32>,
    /// The image and pull policy, for the Docker runtime; `None` for a process step.
    pub image: Option<Image>,
    /// The Linux capabilities a step's container keeps (names without `CAP_`, each from
    /// `weir_data::capabilities::SAFE`); `None` for its `DEFAULT`. The process runtime
    /// ignores it: a process step has the worker's own privileges.
    pub capabilities: Option<Vec<String>>,
    /// A folder of the attempt's own where the step's live metrics file is
    /// ([`METRICS_FILE`]): `WEIR_METRICS` names that file (in a container, as mounted at
    /// `/weir/metrics`). `None`: no `WEIR_METRICS`.
    pub metrics_dir: Option<PathBuf>,
}

impl StepSpec {
    /// A spec with no timeout, a 10 s grace, no id, no limits, no GPUs and no image.
    pub fn new(action: Action, workdir: PathBuf, inputs_dir: PathBuf, outputs_dir: PathBuf) -> Self {
        StepSpec {
            action,
            env: Vec::new(),
            workdir,
            inputs_dir,
            outputs_dir,
            timeout: None,
            grace: Duration::from_secs(10),
            id: AttemptLabel::default(),
            limits: Limits::default(),
            gpus: Vec::new(),
            image: None,
            capabilities: None,
            metrics_dir: None,
        }
    }
}

/// The attempt a step spec belongs to, as the engine named it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AttemptLabel {
    pub run_id: String,
    /// The step's name in the pipeline file.
    pub step: String,
    /// The step instance (matrix combination) number in the run.
    pub instance: u32,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The worker that runs it (a stable id of host and work folder): containers carry it, so
    /// that two workers sharing one Docker engine never remove or resume each other's.
    pub owner: String,
}

/// Resource limits for one step; `None` means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Thousandths of a core.
    pub cpus_milli: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// A container image and when to pull it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub pull: PullPolicy,
}

/// When the Docker runtime pulls an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull only when the engine has no image of that name (the default).
    #[default]
    IfNotPresent,
    /// Pull before every step, so a moved tag is seen.
    Always,
    /// Never pull: a missing image fails the step.
    Never,
}

/// Which output stream a [`LogLine`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of a step's output. Lines of one stream arrive in order; the two streams interleave
/// only as closely as their timestamps say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub stream: Stream,
    /// When the runtime read the end of the line.
    pub at: SystemTime,
    /// The bytes without the trailing `\n`. A final line without a newline is flushed when the
    /// stream closes; a line longer than [`MAX_LINE`] arrives as several pieces of at most that size.
    pub line: Vec<u8>,
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The step exited by itself with this code.
    Exited(i32),
    /// The step was killed by this signal (not by us: a stop we asked for is below).
    Signalled(i32),
    /// The timeout passed; the step was stopped.
    TimedOut,
    /// The cancel token fired; the step was stopped.
    Cancelled,
    /// The kernel's out-of-memory killer ended it (the container passed its memory limit).
    OutOfMemory,
}

/// Why a runtime could not run a step at all. A step that runs and fails is an [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("step has an empty argv")]
    EmptyArgv,
    #[error("cannot start {program:?} in {workdir}: {source}")]
    Spawn { program: String, workdir: PathBuf, source: std::io::Error },
    #[error("waiting for the step: {0}")]
    Wait(std::io::Error),
    /// The step's image is missing and cannot be had (or the step names none). Permanent: running
    /// the attempt again on this host fails the same way, so the caller does not retry it.
    #[error("image {image}: {reason}")]
    Image { image: String, reason: String },
    /// The Docker engine refused or failed a request (or no engine answers).
    #[error("docker: {0}")]
    Docker(String),
}

/// The boxed future a [`Runtime`] returns: boxed so that `Arc<dyn Runtime>` works (the worker
/// picks the runtime per step at run time), `Send` so that it can be spawned.
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, Error>> + Send + 'a>>;

/// Runs one step attempt to its end.
///
/// Contract, checked by the conformance suite: the step runs in `spec.workdir` with the
/// environment of [`step_env`]; each output line is sent to `logs` in order per stream (a closed
/// receiver is not an error: output is then drained and dropped, never left to block the step);
/// on timeout or cancel the step gets a stop request, `spec.grace` to finish, then a kill; when
/// `run` returns, none of the step's processes are left running and all of its output has been
/// sent. Dropping the returned future kills the step too.
pub trait Runtime: Send + Sync {
    fn run(&self, spec: StepSpec, logs: mpsc::Sender<LogLine>, cancel: CancellationToken) -> RunFuture<'_>;

    /// Prepares, in the background, what the first step would otherwise wait for (the process
    /// runtime's reaper). A worker calls it once it has decided to take such steps; a runtime
    /// works the same without it.
    fn warm(&self) {}
}
