//! [`ProcessRuntime`]: a step as a local process group. The step leads a new process group, so a
//! stop reaches everything it started (`killpg`); it gets `PR_SET_PDEATHSIG(SIGKILL)` on Linux so
//! it dies with the worker; stdin is `/dev/null`. This module owns the life of that group and
//! nothing else: no uploads, no engine, no retries.
//!
//! Known limits, stated so the next reader does not rediscover them:
//! - The parent-death signal is per process and cleared by `fork`: it kills the group leader
//!   (`sh`, or the argv program) when the worker dies, but a grandchild that outlives its leader
//!   survives until it next writes to its (now reader-less) stdout/stderr and gets SIGPIPE. Closing
//!   that gap needs a watchdog process or a cgroup per step.
//! - Linux delivers the parent-death signal when the *thread* that spawned the step exits. Call
//!   `run` from a tokio worker thread (they live as long as the runtime), not from
//!   `spawn_blocking`, whose idle threads exit.
//! - After the leader is reaped, its group id can only be reused once the whole group is gone, so
//!   the final `killpg` cannot hit a stranger unless the group emptied in between and the id was
//!   recycled at once; the window is microseconds.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::BufReader;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Action, Error, LogLine, Outcome, RunFuture, Runtime, StepSpec, Stream, logs, step_env};

/// How long `run` waits, after the step's group is gone, for its output pipes to close. A process
/// that escaped the group (`setsid`) can hold them open forever; its later output is dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs steps as local processes; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct ProcessRuntime {
    _private: (),
}

impl ProcessRuntime {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Runtime for ProcessRuntime {
    fn run(&self, spec: StepSpec, logs: mpsc::Sender<LogLine>, cancel: CancellationToken) -> RunFuture<'_> {
        Box::pin(run(spec, logs, cancel))
    }
}

/// Why the step stopped before exiting by itself.
#[derive(Clone, Copy)]
enum Stop {
    Timeout,
    Cancel,
}

async fn run(spec: StepSpec, logs: mpsc::Sender<LogLine>, cancel: CancellationToken) -> Result<Outcome, Error> {
    let (program, args): (&str, &[String]) = match &spec.action {
        Action::Script(script) => ("sh", std::slice::from_ref(script)),
        Action::Argv(argv) => match argv.split_first() {
            Some((program, args)) => (program, args),
            None => return Err(Error::EmptyArgv),
        },
    };
    let mut cmd = Command::new(program);
    if matches!(spec.action, Action::Script(_)) {
        cmd.arg("-c");
    }
    cmd.args(args)
        .current_dir(&spec.workdir)
        .env_clear()
        .envs(step_env(std::env::vars(), &spec.env, &spec.inputs_dir, &spec.outputs_dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    set_parent_death_signal(&mut cmd);

    let spawn_error = |source| Error::Spawn { program: program.to_string(), workdir: spec.workdir.clone(), source };
    let mut child = cmd.spawn().map_err(spawn_error)?;
    let pgid =
        child.id().and_then(|id| i32::try_from(id).ok()).ok_or_else(|| spawn_error(io::ErrorKind::Other.into()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut guard = Group {
        pgid,
        pumps: vec![
            tokio::spawn(logs::pump(BufReader::new(stdout), Stream::Stdout, logs.clone())),
            tokio::spawn(logs::pump(BufReader::new(stderr), Stream::Stderr, logs)),
        ],
    };

    let timeout = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let stop = tokio::select! {
        status = child.wait() => Err(status),
        () = timeout => Ok(Stop::Timeout),
        () = cancel.cancelled() => Ok(Stop::Cancel),
    };
    let outcome = match stop {
        Err(status) => exit_outcome(status.map_err(Error::Wait)?),
        Ok(stop) => {
            killpg(pgid, libc::SIGTERM);
            if tokio::time::timeout(spec.grace, child.wait()).await.is_err() {
                killpg(pgid, libc::SIGKILL);
            }
            child.wait().await.map_err(Error::Wait)?;
            match stop {
                Stop::Timeout => Outcome::TimedOut,
                Stop::Cancel => Outcome::Cancelled,
            }
        }
    };
    // Leftovers (`sleep 100 &`) die with the step; then the pipes close and the pumps finish.
    killpg(pgid, libc::SIGKILL);
    let pumps = std::mem::take(&mut guard.pumps);
    let aborts: Vec<_> = pumps.iter().map(JoinHandle::abort_handle).collect();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        for pump in pumps {
            let _ = pump.await;
        }
    })
    .await;
    if drained.is_err() {
        aborts.iter().for_each(|a| a.abort());
    }
    Ok(outcome)
}

fn exit_outcome(status: ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(signal)) => Outcome::Signalled(signal),
        // Stopped or continued statuses are never returned by wait; treat them as a failure.
        (None, None) => Outcome::Exited(-1),
    }
}

/// Kills the step's group when `run` is dropped before it finished (the worker task was
/// aborted), so an abandoned step never runs on unobserved.
struct Group {
    pgid: i32,
    pumps: Vec<JoinHandle<()>>,
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.pumps.is_empty() {
            killpg(self.pgid, libc::SIGKILL);
            self.pumps.iter().for_each(JoinHandle::abort);
        }
    }
}

fn killpg(pgid: i32, signal: i32) {
    // SAFETY: killpg has no memory-safety preconditions; ESRCH (group gone) is expected and ignored.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

#[cfg(target_os = "linux")]
fn set_parent_death_signal(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls
    // (prctl, getppid, _exit); it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The worker may have died before prctl: then nobody will send the signal.
            if libc::getppid() as u32 != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_cmd: &mut Command) {
    // No parent-death signal outside Linux: the step outlives a killed worker (documented above).
}
