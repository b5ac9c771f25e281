//! One leased attempt, from assignment to final report: fetch the bundle (a process step runs
//! in its own copy of it, `attempts/<n>/src`, see [`crate::checkout`]), materialize the
//! inputs under `attempts/<run>/<instance>.<number>/inputs`, report Started, run the step through
//! the [`Runtime`] while its output is forwarded and its live metrics file (`metrics/`,
//! `$WEIR_METRICS`) tailed ([`super::live_metrics`]), then collect and upload the declared outputs,
//! read `metrics.json`, and report how it ended. Every failure of the step or of its files becomes
//! a Failed report with a reason; only a refused report or a stopping worker ends an attempt
//! silently. The attempt's folder is removed afterwards, whatever happened.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_data::artifact::{self, Manifest, collect_outputs, materialize, metrics_from_json};
use weir_data::relpath;

use crate::wire;
use weir_proto::v1;
use weir_proto::v1::report_request::Outcome as Report;

use super::containers;
use super::live_metrics;
use super::logs;
use super::session::{CallError, Key, Session, StopReason};
use super::transfer::{self, Files, TransferError};
use crate::checkout::{self, Checkouts};
use crate::otel::{self, Phase};
use crate::runtime::{
    Action, AttemptLabel, DockerRuntime, Error as RuntimeError, Image, Limits, Outcome, PullPolicy, RunFuture, Runtime,
    StepSpec, container_name,
};

/// What an attempt needs besides its assignment; shared by all attempts of an agent.
pub(crate) struct Context {
    pub session: Arc<Session>,
    pub files: Files,
    pub runtime: Arc<dyn Runtime>,
    /// The Docker engine, when this worker runs docker steps.
    pub docker: Option<Arc<DockerRuntime>>,
    /// Whether this worker runs process steps (`--no-process-steps` turns them off).
    pub process_steps: bool,
    /// Where the records of running containers are ([`containers`]).
    pub records: PathBuf,
    /// This worker's identity on a shared Docker engine ([`containers::owner`]).
    pub owner: String,
    pub attempts_dir: PathBuf,
    /// An empty, read-only folder: `WEIR_INPUTS` of steps that need nothing.
    pub no_inputs: PathBuf,
    pub slots: Slots,
    /// A permit per step that may run at once (`AgentConfig::capacity`); the worker may hold
    /// more attempts than that (`AgentConfig::ahead`), which wait here for a step to end.
    pub running: Arc<tokio::sync::Semaphore>,
    /// How long an attempt held ahead waits for a running step to end before it is given back
    /// to the engine (`AgentConfig::hold`); `None`: as long as it takes.
    pub hold: Option<Duration>,
    /// Set when an attempt was given back: the lease loop leases nothing more ahead until a
    /// running step ends, so that what was given back goes to another worker, not back here.
    pub gave_back: std::sync::atomic::AtomicBool,
    pub grace: Duration,
    pub gpus: Arc<super::gpus::GpuPool>,
    /// Private copies of cached bundles for process steps, and the tamper check.
    pub checkouts: Arc<Checkouts>,
    /// Phase spans of traced attempts (`--otlp-endpoint`, [`crate::otel`]).
    pub otel: Option<Arc<crate::otel::Tracer>>,
}

/// Why an attempt ended without running to an outcome.
enum Stop {
    /// Report this failure.
    Fail(String),
    /// Report this failure, which another attempt could not avoid (a missing image): the engine
    /// does not retry it.
    Permanent(String),
    /// Report nothing more (refused, stopped, or the worker is going away).
    Quiet(CallError),
    /// Give the attempt back unstarted (held ahead past `Context::hold`), with this reason.
    GiveBack(String),
}

impl From<TransferError> for Stop {
    /// A transfer the engine refused fails the attempt, unless the refusal says the attempt is
    /// no longer live (FAILED_PRECONDITION), when there is no one left to tell.
    fn from(e: TransferError) -> Stop {
        match e {
            TransferError::Call(CallError::Refused(status)) if status.code() != tonic::Code::FailedPrecondition => {
                Stop::Fail(format!("the engine refused a transfer ({:?}): {}", status.code(), status.message()))
            }
            TransferError::Call(e) => Stop::Quiet(e),
            TransferError::Failed(reason) => Stop::Fail(reason),
        }
    }
}

/// How long a step runs before the worker tells the engine it started (see `attempt`).
const STARTED_AFTER: Duration = Duration::from_millis(20);

/// Runs `assignment` to its end; `cancel` is the attempt's stop signal (stop order or shutdown).
/// Returns the next attempt the engine leased with this one's outcome, if `lease_next` asked
/// for one (ReportRequest.lease_next): the caller runs it in the slot this one frees.
pub(crate) async fn run(
    ctx: Arc<Context>,
    key: Key,
    assignment: v1::Assignment,
    cancel: CancellationToken,
    lease_next: &CancellationToken,
) -> Option<Leased> {
    let (dir, ready) = ctx.slots.take(&ctx.attempts_dir);
    let _running = crate::metrics::Running::start();
    tracing::info!(attempt = %key, instance = %assignment.instance_name, "running an attempt");
    let ended = attempt(&ctx, &key, &assignment, &dir, ready, &cancel).await;
    conclude(ctx, key, &assignment, dir, ended, Some(lease_next)).await
}

/// An assignment and its W3C traceparent, as Lease (or a Report that leased) returned it.
pub(crate) type Leased = (v1::Assignment, Option<String>);

/// Picks up the container of an attempt this worker started before it restarted (see
/// [`containers`]): waits for it, then collects and reports exactly as for a fresh attempt.
pub(crate) async fn resume(
    ctx: Arc<Context>,
    key: Key,
    assignment: v1::Assignment,
    dir: PathBuf,
    name: String,
    gpus: Vec<u32>,
    cancel: CancellationToken,
) {
    tracing::info!(attempt = %key, container = name, "resuming the container of an earlier worker process");
    let _running = crate::metrics::Running::start();
    // The container has these GPUs already: no other attempt may get them while it runs.
    let held = ctx.gpus.take_exact(&gpus);
    let ended = match (ctx.docker.clone(), held) {
        (_, Err(reason)) => Err(Stop::Fail(format!("cannot resume the container: {reason}"))),
        (Some(docker), Ok(_gpus)) => {
            let spec = resumed_spec(&ctx, &key, &assignment, &dir);
            let outputs_dir = spec.outputs_dir.clone();
            let (timeout, limits) = (spec.timeout, spec.limits);
            let (tx, rx) = mpsc::channel(1024);
            let (outcome, ()) =
                tokio::join!(docker.resume(name, spec, tx, cancel.clone()), logs::forward(&ctx.session, &key, rx, &[]));
            match outcome {
                Ok(outcome) => judge(&ctx, &key, &assignment, &outputs_dir, outcome, timeout, &limits).await,
                Err(e) => Err(runtime_stop(e)),
            }
        }
        (None, Ok(_)) => Err(Stop::Fail("this worker no longer runs docker steps".to_string())),
    };
    conclude(ctx, key, &assignment, dir, ended, None).await;
}

/// Reports how an attempt ended, forgets its container record, and empties its folder for reuse.
/// With `lease_next` not cancelled (the agent is not stopping), the outcome's report asks the
/// engine to lease the next attempt in the same call, returned here.
async fn conclude(
    ctx: Arc<Context>,
    key: Key,
    assignment: &v1::Assignment,
    dir: PathBuf,
    ended: Result<Report, Stop>,
    lease_next: Option<&CancellationToken>,
) -> Option<Leased> {
    let ended = match ended {
        Ok(report) => Some(report),
        Err(Stop::Fail(reason)) => Some(failed(reason, None)),
        Err(Stop::Permanent(reason)) => Some(Report::Failed(v1::Failed { reason, exit_code: None, permanent: true })),
        Err(Stop::Quiet(CallError::Refused(status))) => {
            tracing::info!(attempt = %key, code = ?status.code(), error = status.message(), "the engine no longer wants this attempt, dropping it");
            None
        }
        Err(Stop::Quiet(CallError::Abandoned)) => None,
        Err(Stop::GiveBack(reason)) => {
            tracing::info!(attempt = %key, reason, "giving back an attempt held ahead");
            ctx.gave_back.store(true, std::sync::atomic::Ordering::Release);
            Some(Report::Released(v1::Released { reason }))
        }
    };
    let mut ended = match ended {
        Some(_) if ctx.session.stop_reason(&key) == Some(StopReason::Fenced) => Some(fenced()),
        ended => ended,
    };
    if ctx.otel.is_some() {
        otel::finish(&ctx.otel, &key, traced_end(ended.as_ref()));
    }
    let mut next = None;
    while let Some(report) = ended.take() {
        let success = matches!(report, Report::Succeeded(_));
        // What is given back is for the other workers: this slot asks for nothing in its place.
        let lease =
            lease_next.is_some_and(|stopping| !stopping.is_cancelled()) && !matches!(report, Report::Released(_));
        match ctx.session.report_and_lease(&key, crate::clock::wall(), report, lease).await {
            Ok(leased) => {
                // At debug: "running" and "ended" are the two lines an attempt logs at info.
                tracing::debug!(attempt = %key, "reported the outcome");
                next = leased;
            }
            // A success the engine will not take (a manifest it refuses) is still an outcome:
            // report it as a failure, so the attempt does not hang until its lease runs out.
            Err(CallError::Refused(status)) if success && status.code() != tonic::Code::FailedPrecondition => {
                tracing::warn!(attempt = %key, code = ?status.code(), error = status.message(), "the engine refused the success");
                ended = Some(failed(format!("the engine refused the outcome: {}", status.message()), None));
            }
            Err(CallError::Refused(status)) => {
                tracing::info!(attempt = %key, code = ?status.code(), error = status.message(), "the engine refused the outcome, dropping it");
            }
            Err(CallError::Abandoned) => tracing::warn!(attempt = %key, "gave up reporting the outcome"),
        }
    }
    if is_docker(assignment) {
        containers::forget(&ctx.records, &container_name(&label(&ctx, &key, assignment)));
    }
    // Emptied and reused: creating and deleting folders for every step cost a real share of a
    // short step on ext4 (BENCHMARKS.md). A folder the step left clean (most are) is seen so
    // with a few reads of folders, done here; one with something to remove goes to the
    // blocking pool; one that cannot be emptied is dropped.
    if is_clean(&dir) {
        ctx.slots.give_back(dir);
    } else {
        let slots = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if empty_folder(&dir) {
                slots.slots.give_back(dir);
            } else {
                remove_tree(&dir);
            }
        })
        .await;
    }
    next
}

/// Whether `dir` holds what [`empty_folder`] leaves and nothing more: `outputs/` and `metrics/`
/// folders, both empty, and maybe `src/`. Only reads the three folders; removes nothing.
fn is_clean(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let mut kept = 0;
    for entry in entries {
        let Ok(entry) = entry else { return false };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            return false;
        }
        let name = entry.file_name();
        if name == "src" {
            continue;
        }
        if name != "outputs" && name != "metrics" {
            return false;
        }
        if !std::fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none()) {
            return false;
        }
        kept += 1;
    }
    kept == 2
}

/// Reusable attempt folders (`attempts/<n>/`), each holding `outputs/` and, when the step has
/// inputs, `inputs/`. A folder is only handed out empty.
#[derive(Default)]
pub(crate) struct Slots {
    free: std::sync::Mutex<Vec<PathBuf>>,
    next: std::sync::atomic::AtomicU64,
}

impl Slots {
    /// A folder for one attempt, and whether it is one handed back (so it holds `outputs/` and
    /// `metrics/`, both empty, and nothing else but maybe `src/`).
    fn take(&self, root: &Path) -> (PathBuf, bool) {
        if let Some(dir) = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return (dir, true);
        }
        (root.join(self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string()), false)
    }

    /// Numbers new folders past those of `kept` (resumed attempts' folders, still in use).
    pub(crate) fn skip_past(&self, kept: &[PathBuf]) {
        let max = kept.iter().filter_map(|p| p.file_name()?.to_str()?.parse::<u64>().ok()).max();
        if let Some(max) = max {
            self.next.store(max + 1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn give_back(&self, dir: PathBuf) {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).push(dir);
    }
}

fn remove_entry(entry: &std::fs::DirEntry) {
    if entry.file_type().is_ok_and(|t| t.is_dir()) {
        remove_tree(&entry.path());
    } else {
        let _ = std::fs::remove_file(entry.path());
    }
}

/// Removes everything inside `dir` but `dir`, the contents of its `outputs/` and `metrics/`
/// folders, and the bundle copy `src/` (which the next checkout reuses only if untouched, see
/// [`crate::checkout`]); true when that left `outputs/` and `metrics/` there and empty, and
/// nothing else. Keeping the two folders saves a `mkdir` and an `rmdir` each per step: 6% of a
/// `true` step's profile (BENCHMARKS.md, issue 19). When there was nothing to remove, nothing
/// is checked afterwards.
fn empty_folder(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let (mut clean, mut kept) = (true, 0);
    for entry in entries {
        let Ok(entry) = entry else { return false };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let name = entry.file_name();
        if is_dir && name == "src" {
            continue;
        }
        if is_dir && (name == "outputs" || name == "metrics") {
            let path = entry.path();
            let Ok(inner) = std::fs::read_dir(&path) else { return false };
            let mut removed = false;
            for e in inner {
                let Ok(e) = e else { return false };
                remove_entry(&e);
                removed = true;
            }
            if removed {
                clean &= std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
            }
            kept += 1;
        } else {
            remove_entry(&entry);
            clean &= std::fs::symlink_metadata(entry.path()).is_err();
        }
    }
    clean && kept == 2
}

/// A report as the worker's tracing sees it.
fn traced_end(report: Option<&Report>) -> otel::Ended {
    match report {
        Some(Report::Succeeded(_)) => otel::Ended::Succeeded,
        Some(Report::Failed(f)) => otel::Ended::Failed { reason: f.reason.clone(), exit_code: f.exit_code },
        Some(Report::Lost(l)) => otel::Ended::Lost { reason: l.reason.clone() },
        Some(Report::Released(_)) => otel::Ended::Released,
        Some(Report::Started(_)) | None => otel::Ended::Unreported,
    }
}

/// The assignment as the work folder may keep it (to resume its container after a restart):
/// without the secret values, which never touch the worker's disk.
fn without_secrets(a: &v1::Assignment) -> v1::Assignment {
    v1::Assignment { secrets: Default::default(), ..a.clone() }
}

fn failed(reason: String, exit_code: Option<i32>) -> Report {
    Report::Failed(v1::Failed { reason, exit_code, permanent: false })
}

async fn attempt(
    ctx: &Context,
    key: &Key,
    a: &v1::Assignment,
    dir: &Path,
    ready: bool,
    cancel: &CancellationToken,
) -> Result<Report, Stop> {
    let (mut spec, outputs_dir) = tokio::select! {
        prepared = prepare(ctx, key, a, dir, ready) => prepared?,
        () = cancel.cancelled() => return Ok(stopped(ctx, key)),
    };
    let slot = match ctx.running.clone().try_acquire_owned() {
        Ok(slot) => slot,
        // Held ahead: it waits for a running step to end, but not past `hold`. Past it, the
        // steps here are long ones, and the attempt goes back to the engine for a worker that
        // is free (two one-slot workers and four hour-long trainings: the second training must
        // not wait an hour behind the first while the other worker idles).
        Err(_) => {
            let waited = async {
                match ctx.hold {
                    Some(hold) => tokio::time::timeout(hold, ctx.running.clone().acquire_owned()).await.ok(),
                    None => Some(ctx.running.clone().acquire_owned().await),
                }
            };
            tokio::select! {
                slot = waited => match slot {
                    Some(slot) => slot.expect("the semaphore is never closed"),
                    None => {
                        let held = ctx.hold.unwrap_or_default().as_millis();
                        return Err(Stop::GiveBack(format!("held {held}ms ahead while every step slot stayed busy")));
                    }
                },
                () = cancel.cancelled() => return Ok(stopped(ctx, key)),
            }
        }
    };
    let running = otel::phase(&ctx.otel, key, Phase::Run);
    // Held until the attempt is over (outputs uploaded), then free for the next one.
    let gpus = ctx.gpus.take(a.resources.as_ref().map_or(0, |r| r.gpus)).map_err(Stop::Fail)?;
    spec.gpus = gpus.indices().to_vec();
    let timeout = spec.timeout;
    let limits = spec.limits;
    let (tx, rx) = mpsc::channel(1024);
    let secrets: Vec<String> = a.secrets.values().cloned().collect();
    // The live metrics file is tailed until the step has ended, its notes in the step's log.
    let metrics_file = spec.metrics_dir.as_ref().map(|d| d.join(crate::runtime::METRICS_FILE));
    let (metrics_logs, step_done) = (tx.clone(), CancellationToken::new());
    let step: RunFuture<'_> = match (&ctx.docker, is_docker(a)) {
        (Some(docker), true) => {
            // Written before the container exists: a worker killed right after creating it finds
            // the record on restart and resumes the container instead of leaving it behind.
            let (records, name, slot, a, gpus) = (
                ctx.records.clone(),
                container_name(&spec.id),
                dir.to_path_buf(),
                without_secrets(a),
                spec.gpus.clone(),
            );
            blocking(move || containers::remember(&records, &name, &slot, &a, &gpus))
                .await?
                .map_err(|e| Stop::Fail(format!("cannot record the container in the work folder: {e}")))?;
            docker.run(spec, tx, cancel.clone())
        }
        (None, true) => {
            return Err(Stop::Fail(
                "this worker runs no docker steps (its Docker engine did not answer at start)".to_string(),
            ));
        }
        (_, false) if !ctx.process_steps => {
            return Err(Stop::Fail("this worker runs docker steps only (--no-process-steps)".to_string()));
        }
        (_, false) => ctx.runtime.run(spec, tx, cancel.clone()),
    };
    // The start report travels while the step runs (a round trip less per step); it is
    // awaited before the outcome, so the engine always hears them in order. A step that ends
    // within `STARTED_AFTER` sends none: its outcome says it ran (the engine takes an outcome
    // of a leased attempt), which spares the short steps of a fan-out a third of their calls.
    let began = crate::clock::wall();
    let started = async {
        tokio::select! {
            () = step_done.cancelled() => Ok(()),
            () = tokio::time::sleep(STARTED_AFTER) => {
                ctx.session.report(key, began, Report::Started(v1::Started {})).await
            }
        }
    };
    let step = async {
        let outcome = step.await;
        step_done.cancel();
        outcome
    };
    let tail = async {
        match metrics_file {
            Some(file) => live_metrics::tail(&ctx.session, key, file, metrics_logs, step_done.clone()).await,
            None => drop(metrics_logs),
        }
    };
    // `join4`, not `tokio::join!`: the step's end wakes the other three within this task's poll.
    let (started, outcome, (), ()) =
        super::join::join4(started, step, logs::forward(&ctx.session, key, rx, &secrets), tail).await;
    // The step has ended: an attempt held ahead starts while this one's outcome is judged, its
    // outputs uploaded and its report flushed. Woken on this thread, it would wait behind the
    // flush that blocks it: let it start its step first.
    drop(slot);
    if ctx.running.available_permits() == 0 {
        tokio::task::yield_now().await;
    }
    started.map_err(Stop::Quiet)?;
    let outcome = outcome.map_err(runtime_stop)?;
    drop(running);
    judge(ctx, key, a, &outputs_dir, outcome, timeout, &limits).await
}

/// The report for a step that ran to `outcome`.
async fn judge(
    ctx: &Context,
    key: &Key,
    a: &v1::Assignment,
    outputs_dir: &Path,
    outcome: Outcome,
    timeout: Option<Duration>,
    limits: &Limits,
) -> Result<Report, Stop> {
    tracing::info!(attempt = %key, outcome = ?outcome, "the step ended");
    crate::metrics::exited(&outcome);
    match outcome {
        Outcome::Exited(0) => succeeded(ctx, key, a, outputs_dir).await,
        Outcome::Exited(code) => Ok(failed(format!("exit code {code}"), Some(code))),
        Outcome::Signalled(signal) => Ok(failed(format!("killed by signal {}", signal_name(signal)), None)),
        Outcome::TimedOut => Ok(failed(format!("timed out after {:?}", timeout.unwrap_or_default()), None)),
        Outcome::Cancelled => Ok(stopped(ctx, key)),
        Outcome::OutOfMemory => Ok(failed(out_of_memory(limits), None)),
    }
}

/// A runtime that could not run the step: an image problem is the step's own and no retry will
/// fix it; anything else may pass on another attempt.
fn runtime_stop(e: RuntimeError) -> Stop {
    match e {
        RuntimeError::Image { .. } => Stop::Permanent(e.to_string()),
        e => Stop::Fail(e.to_string()),
    }
}

fn is_docker(a: &v1::Assignment) -> bool {
    v1::Runtime::try_from(a.runtime) == Ok(v1::Runtime::Docker)
}

fn label(ctx: &Context, key: &Key, a: &v1::Assignment) -> AttemptLabel {
    AttemptLabel {
        run_id: key.run_id.clone(),
        step: a.step.clone(),
        instance: key.instance,
        attempt: key.number,
        owner: ctx.owner.clone(),
    }
}

/// The spec of a resumed container: only what the runtime needs to wait for it and stop it (its
/// mounts and command were fixed when it was created). Its timeout counts again from now.
fn resumed_spec(ctx: &Context, key: &Key, a: &v1::Assignment, dir: &Path) -> StepSpec {
    let mut spec = StepSpec::new(Action::Argv(Vec::new()), dir.to_path_buf(), dir.join("inputs"), dir.join("outputs"));
    spec.timeout = wire::from_duration(a.timeout.as_ref()).filter(|d| !d.is_zero());
    spec.grace = step_grace(ctx);
    spec.id = label(ctx, key, a);
    spec.limits = limits(a);
    spec
}

fn limits(a: &v1::Assignment) -> Limits {
    a.resources.as_ref().map_or_else(Limits::default, |r| Limits {
        cpus_milli: Some(r.cpus_milli).filter(|&n| n > 0),
        memory_bytes: Some(r.memory_bytes).filter(|&n| n > 0),
    })
}

/// The failure reason of an attempt the out-of-memory killer ended.
fn out_of_memory(limits: &Limits) -> String {
    match limits.memory_bytes {
        Some(bytes) => format!("out of memory: killed by the kernel at its memory limit of {} MiB", bytes >> 20),
        None => "out of memory: killed by the kernel's out-of-memory killer".to_string(),
    }
}

/// What to say about an attempt stopped by its cancel token: Failed for the engine's stop order
/// (which the engine may refuse as stale, harmlessly); Lost when this worker is shutting down,
/// since the step did nothing wrong and the engine should dispatch it again as for a lost worker.
fn stopped(ctx: &Context, key: &Key) -> Report {
    match ctx.session.stop_reason(key) {
        Some(StopReason::Engine(reason)) => failed(format!("stopped: {reason}"), None),
        Some(StopReason::Shutdown) | None => {
            Report::Lost(v1::Lost { reason: "the worker shut down while the step ran".to_string() })
        }
        Some(StopReason::Fenced) => fenced(),
    }
}

/// The only report of an attempt its worker fenced ([`super::fence`]), whatever the step did:
/// the engine may already have given it to another worker, and if it has not, it runs it again.
fn fenced() -> Report {
    Report::Lost(v1::Lost {
        reason: "the worker lost contact with the engine and stopped the step (self-fencing)".to_string(),
    })
}

/// The SIGTERM-to-SIGKILL grace of a step: the worker's, capped so that a fenced worker's steps
/// are gone before the engine's lease timeout ([`super::fence::window`]).
fn step_grace(ctx: &Context) -> Duration {
    match ctx.session.contact().lease_timeout() {
        Some(lease_timeout) => super::fence::window(lease_timeout, ctx.grace).kill_grace,
        None => ctx.grace,
    }
}

/// Fetches the bundle and inputs and makes the attempt's folders; returns the step's spec and
/// its outputs folder.
/// `ready`: `dir` is a reused attempt folder (see [`Slots::take`]), whose `outputs/` and
/// `metrics/` need no `mkdir` (nor a trip to a blocking thread to find that out).
async fn prepare(
    ctx: &Context,
    key: &Key,
    a: &v1::Assignment,
    dir: &Path,
    ready: bool,
) -> Result<(StepSpec, PathBuf), Stop> {
    if relpath::check(&key.run_id).is_err() || key.run_id.contains('/') {
        return Err(Stop::Fail(format!("run id {:?} cannot name a folder", key.run_id)));
    }
    let action = match a.action.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(v1::action::Kind::Script(script)) => Action::Script(script.clone()),
        Some(v1::action::Kind::Command(argv)) => Action::Argv(argv.args.clone()),
        None => return Err(Stop::Fail("the assignment has no action".to_string())),
    };
    let image = match v1::Runtime::try_from(a.runtime) {
        Ok(v1::Runtime::Unspecified | v1::Runtime::Process) => None,
        Ok(v1::Runtime::Docker) if a.image.trim().is_empty() => {
            return Err(Stop::Permanent(
                "a docker step needs an `image:`; set one on the step or in `defaults:`".into(),
            ));
        }
        Ok(v1::Runtime::Docker) => Some(Image { name: a.image.clone(), pull: pull_policy(a.pull_policy) }),
        Err(_) => return Err(Stop::Fail(format!("this worker does not know runtime {}: upgrade it", a.runtime))),
    };
    // Folders cost a few hundred microseconds each on ext4, a real share of a short step: a step
    // with no inputs gets the agent's shared, read-only empty folder as WEIR_INPUTS, and one
    // without a bundle runs in its own attempt folder (which holds `outputs/` and nothing else).
    let inputs_dir = if a.inputs.is_empty() { ctx.no_inputs.clone() } else { dir.join("inputs") };
    let outputs_dir = dir.join("outputs");
    let metrics_dir = dir.join("metrics");
    let mut dirs = Vec::new();
    if !ready {
        dirs.extend([outputs_dir.clone(), metrics_dir.clone()]);
    }
    if !a.inputs.is_empty() {
        dirs.push(inputs_dir.clone());
    }
    if !dirs.is_empty() {
        let make = move || dirs.iter().try_for_each(|d| if d.is_dir() { Ok(()) } else { std::fs::create_dir_all(d) });
        blocking(make).await?.map_err(|e| Stop::Fail(format!("cannot create the attempt folder: {e}")))?;
    }

    if a.bundle_digest.is_empty() || image.is_some() {
        // A bundle copy an earlier process step left in this folder has nothing to do here.
        let (checkouts, copy) = (ctx.checkouts.clone(), dir.join("src"));
        blocking(move || checkouts.discard(&copy))
            .await?
            .map_err(|e| Stop::Fail(format!("cannot empty the attempt folder: {e}")))?;
    }
    let workdir = if a.bundle_digest.is_empty() {
        dir.to_path_buf()
    } else {
        let _fetching = otel::phase(&ctx.otel, key, Phase::FetchBundle);
        bundle_workdir(ctx, &a.bundle_digest, dir, image.is_some()).await?
    };

    let materializing = if a.inputs.is_empty() { None } else { otel::phase(&ctx.otel, key, Phase::MaterializeInputs) };
    for input in &a.inputs {
        if let Err(why) = relpath::check(&input.dir) {
            return Err(Stop::Fail(format!("input folder `{}` is refused: {}", input.dir, why.describe())));
        }
        let manifest = wire::from_manifest(input.manifest.as_ref())
            .map_err(|e| Stop::Fail(format!("input `{}`: {}", input.dir, e.reason)))?;
        // Kept from eviction until copied into the attempt's folder.
        let _pinned = ctx.files.pins.pin(manifest.entries().iter().map(|e| e.digest).collect());
        for entry in manifest.entries() {
            transfer::fetch_blob(&ctx.session, &ctx.files, entry).await?;
        }
        let store = ctx.files.store.clone();
        let dest = inputs_dir.join(&input.dir);
        let shown = input.dir.clone();
        blocking(move || {
            let made = materialize(&store, &manifest, &dest);
            if let Err(artifact::Error::Corrupt { digest, .. }) = &made {
                // Fetched again by the next attempt that needs it, instead of failing it too.
                let _ = std::fs::remove_file(store.path_of(digest));
            }
            made
        })
        .await?
        .map_err(|e| Stop::Fail(format!("input `{shown}`: {e}")))?;
    }
    drop(materializing);
    ctx.files.evict().await;

    let timeout = wire::from_duration(a.timeout.as_ref()).filter(|d| !d.is_zero());
    let mut env: Vec<(String, String)> = a.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // Secrets arrive as the variables of their names (docs/secrets.md); the engine refused
    // `env:` that would set the same name, and `WEIR_` names.
    env.retain(|(k, _)| !a.secrets.contains_key(k));
    env.extend(a.secrets.iter().filter(|(k, _)| !k.starts_with("WEIR_")).map(|(k, v)| (k.clone(), v.clone())));
    env.sort();
    let mut spec = StepSpec::new(action, workdir, inputs_dir, outputs_dir.clone());
    spec.env = env;
    spec.timeout = timeout;
    spec.grace = step_grace(ctx);
    spec.id = label(ctx, key, a);
    spec.limits = limits(a);
    spec.image = image;
    spec.capabilities = a.capabilities.as_ref().map(|c| c.names.clone());
    spec.metrics_dir = Some(metrics_dir);
    Ok((spec, outputs_dir))
}

/// Where a step with a bundle runs: a private copy of the cached bundle in the attempt folder
/// (`src/`) for a process step, the cached folder itself for a docker step (mounted read-only).
/// A cached folder found changed since this worker verified it is evicted and fetched again.
async fn bundle_workdir(ctx: &Context, digest: &str, dir: &Path, docker: bool) -> Result<PathBuf, Stop> {
    let mut evicted = false;
    loop {
        let cached = transfer::bundle_dir(&ctx.session, &ctx.files, digest).await?;
        let copy = dir.join("src");
        // A small bundle's copy left by the step before is checked here, a `stat` per entry:
        // cheaper than a trip to the blocking pool (two thread wake-ups) for a short step.
        if !docker && ctx.checkouts.reuse(digest, &copy, SMALL_BUNDLE) {
            return Ok(copy);
        }
        let (checkouts, d, from, to) = (ctx.checkouts.clone(), digest.to_string(), cached.clone(), copy.clone());
        let checked = blocking(move || {
            if docker {
                checkouts.verify(&d, &from).map(|_| from)
            } else {
                checkouts.checkout(&d, &from, &to).map(|()| to)
            }
        })
        .await?;
        match checked {
            Ok(workdir) => return Ok(workdir),
            Err(e @ checkout::Error::Tampered { .. }) if !evicted => {
                tracing::warn!(bundle = digest, error = %e, "the cached bundle was changed, fetching it again");
                evicted = true;
                let (checkouts, d) = (ctx.checkouts.clone(), digest.to_string());
                blocking(move || {
                    let _ = checkouts.discard(&copy);
                    evict(&cached);
                    checkouts.forget(&d);
                })
                .await?;
            }
            Err(e) => return Err(Stop::Fail(e.to_string())),
        }
    }
}

/// The most folders and files a bundle may hold for its reused copy to be checked on the
/// async task rather than on the blocking pool (`Checkouts::reuse`): 64 `stat`s take about
/// as long as the trip to the pool and back.
const SMALL_BUNDLE: usize = 64;

/// Moves a cached bundle folder out of the cache's way in one rename (a concurrent fetch then
/// extracts it anew), then removes it. The name is one the cache sweeps if this is cut short.
fn evict(cached: &Path) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Some(name) = cached.file_name().and_then(|n| n.to_str()) else { return };
    let aside = cached.with_file_name(format!(".{name}.partial-evicted-{}-{n}", std::process::id()));
    if std::fs::rename(cached, &aside).is_ok() {
        remove_tree(&aside);
    }
}

fn pull_policy(p: i32) -> PullPolicy {
    match v1::PullPolicy::try_from(p) {
        Ok(v1::PullPolicy::Always) => PullPolicy::Always,
        Ok(v1::PullPolicy::Never) => PullPolicy::Never,
        _ => PullPolicy::IfNotPresent,
    }
}

/// Collects and uploads the declared outputs, reads the metrics, and builds the Succeeded report.
async fn succeeded(ctx: &Context, key: &Key, a: &v1::Assignment, outputs_dir: &Path) -> Result<Report, Stop> {
    let collecting = otel::phase(&ctx.otel, key, Phase::CollectOutputs);
    let store = ctx.files.store.clone();
    let dir = outputs_dir.to_path_buf();
    let declared = a.outputs.clone();
    let pins = ctx.files.pins.clone();
    // Collected and pinned in one go, so no eviction falls between (`evict`).
    let collect = move || pins.collecting(|| collect_outputs(&store, &dir, &declared));
    // With no outputs declared, collecting is one `stat` of the folder: done here, it saves a
    // trip to the blocking pool that costs more than the `stat`.
    let collected = if a.outputs.is_empty() { collect() } else { blocking(collect).await? };
    let (manifest, pinned) = collected.map_err(|e| Stop::Fail(format!("collecting outputs: {e}")))?;
    let manifest: Manifest = manifest;
    if !manifest.entries().is_empty() {
        ctx.files.grew();
    }
    let mut metrics = std::collections::HashMap::new();
    if let Some(entry) = manifest.get("metrics.json") {
        let path = ctx.files.store.path_of(&entry.digest);
        let bytes = tokio::fs::read(&path).await.map_err(|e| Stop::Fail(format!("cannot read metrics.json: {e}")))?;
        let parsed = metrics_from_json(&bytes).map_err(|e| Stop::Fail(e.to_string()))?;
        if !parsed.skipped.is_empty() {
            tracing::info!(attempt = %key, skipped = ?parsed.skipped, "metrics.json entries that are not numbers were skipped");
        }
        metrics.extend(parsed.values);
    }
    drop(collecting);
    let _uploading = otel::phase(&ctx.otel, key, Phase::UploadOutputs);
    for entry in manifest.entries() {
        transfer::upload_artifact(&ctx.session, &ctx.files, key, entry).await?;
    }
    drop(pinned);
    ctx.files.evict().await;
    Ok(Report::Succeeded(v1::Succeeded { metrics, outputs: Some(wire::manifest(&manifest)) }))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Stop> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Stop::Fail(format!("worker task failed: {e}")))
}

/// Removes a tree whose files may be read-only (materialized inputs): folders are made writable
/// first. Errors are ignored: a leftover is swept when the same attempt folder is used again.
pub(crate) fn remove_tree(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        return;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755));
        if let Ok(entries) = std::fs::read_dir(&d) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `9 (SIGKILL)` for the signals people meet; the number alone otherwise.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => return signal.to_string(),
    };
    format!("{signal} ({name})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_attempt_folder_keeps_outputs_metrics_and_src_and_only_then_is_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("0");
        for d in ["outputs/deep/er", "metrics", "src", "inputs/x"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("outputs/deep/er/model.bin"), b"m").unwrap();
        std::fs::write(dir.join("metrics/live.jsonl"), b"{}").unwrap();
        std::fs::write(dir.join("src/pipeline.yaml"), b"kept").unwrap();
        std::fs::write(dir.join("stray"), b"s").unwrap();
        assert!(empty_folder(&dir));
        let mut left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["metrics", "outputs", "src"]);
        assert_eq!(std::fs::read_dir(dir.join("outputs")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(dir.join("metrics")).unwrap().count(), 0);
        assert_eq!(std::fs::read(dir.join("src/pipeline.yaml")).unwrap(), b"kept");
        // Nothing to remove: still reusable.
        assert!(empty_folder(&dir));
        // A step that removed its outputs folder leaves one that cannot be handed out as ready.
        std::fs::remove_dir(dir.join("outputs")).unwrap();
        assert!(!empty_folder(&dir));
    }

    #[test]
    fn a_clean_folder_is_seen_without_removing_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("0");
        for d in ["outputs", "metrics", "src/steps"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("src/steps/a.sh"), b"kept").unwrap();
        assert!(is_clean(&dir));
        std::fs::remove_dir_all(dir.join("src")).unwrap();
        assert!(is_clean(&dir), "src/ is optional");
        // Anything a step leaves is dirt for `empty_folder`, and stays where it is.
        type Dirt<'a> = (&'a str, &'a dyn Fn(&Path));
        let dirt: [Dirt; 5] = [
            ("an output", &|d| std::fs::write(d.join("outputs/model.bin"), b"m").unwrap()),
            ("a metrics file", &|d| std::fs::write(d.join("metrics/live.jsonl"), b"{}").unwrap()),
            ("a stray file", &|d| std::fs::write(d.join("stray"), b"s").unwrap()),
            ("a stray folder", &|d| std::fs::create_dir(d.join("inputs")).unwrap()),
            ("src as a file", &|d| std::fs::write(d.join("src"), b"s").unwrap()),
        ];
        for (name, make) in dirt {
            make(&dir);
            assert!(!is_clean(&dir), "{name}");
            assert!(empty_folder(&dir), "{name}: emptied");
            assert!(is_clean(&dir), "{name}: clean once emptied");
        }
        std::fs::remove_dir(dir.join("metrics")).unwrap();
        assert!(!is_clean(&dir), "a missing metrics/ folder");
        assert!(!is_clean(&tmp.path().join("none")));
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "9 (SIGKILL)");
        assert_eq!(signal_name(15), "15 (SIGTERM)");
        assert_eq!(signal_name(64), "64");
    }
}
