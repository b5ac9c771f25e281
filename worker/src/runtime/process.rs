//! [`ProcessRuntime`]: a step as a local process group and session. On Linux the step leads a new
//! session (and so a new group); a stop signals the group (`killpg`) and every other process of the
//! session, which holds the children that moved to groups of their own (GNU `timeout`, shells with
//! job control). Elsewhere the step leads a new group only. Stdin is `/dev/null`; the step has no
//! controlling terminal. This module owns the life of those processes and nothing else: no
//! uploads, no engine, no retries.
//!
//! A step's processes die with their worker, on Linux, by two means:
//! - The leader gets `PR_SET_PDEATHSIG(SIGKILL)`. That covers the leader only: the signal is
//!   cleared by `fork`, and Linux sends it when the *thread* that spawned the step exits.
//! - A watchdog guards the whole step. Between `fork` and `exec` the leader double-forks a small
//!   process (named `weir-watchdog`, never exec'd) that stays in the step's group and session,
//!   ignores every signal but SIGKILL, closes every file descriptor but the read end of a pipe
//!   whose write end only the worker holds, and blocks reading it. That read returns end-of-file
//!   once the worker process is gone, however it died (the kernel closes its descriptors); the
//!   watchdog then SIGKILLs the session and the group, itself included. When a step ends normally,
//!   the runtime's own final kill ends the watchdog with the rest. Being double-forked, it is no
//!   child of the step (a step that waits for all its children never waits for it); being a member,
//!   it keeps the group and session ids from being recycled while it lives, so neither its kill nor
//!   the runtime's can hit a stranger.
//!
//! A session cannot be signalled as a whole: its members are found by scanning `/proc` (the
//! watchdog does it with raw syscalls and stack buffers), which costs a few milliseconds per stop.
//!
//! Known limits, stated so the next reader does not rediscover them:
//! - A process that starts a session of its own (`setsid`, daemons) escapes every kill here; so
//!   does the rest of the session when `/proc` is not mounted. Holding those needs a cgroup per
//!   step, killed whole by the watchdog (`cgroup.kill`); that takes root or a delegated cgroup,
//!   and is not done here.
//! - The watchdog is a fork of the worker that never execs: until the step ends it shares the
//!   worker's memory copy-on-write, so pages the worker writes meanwhile are copied (at most the
//!   worker's own footprint per running step; the worker is small next to the steps it runs).
//! - A step stopped by SIGSTOP to its group stops its watchdog too; it kills once continued.
//! - Dead watchdogs (and a step's own orphans) are reparented to init or to the nearest subreaper
//!   and reaped there. A worker that runs as PID 1 or as a subreaper must reap orphans itself (or
//!   run under an init such as `tini`); this module does not.
//! - Call `run` from a tokio worker thread (they live as long as the runtime), not from
//!   `spawn_blocking`, whose idle threads exit and would fire the leader's parent-death signal.
//! - Outside Linux there is neither parent-death signal, nor watchdog, nor session: the step
//!   outlives a killed worker, and children in other groups outlive a stop.

use std::io;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::BufReader;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Action, Error, LogLine, Outcome, RunFuture, Runtime, StepSpec, Stream, logs, step_env};

mod watchdog;

/// How long `run` waits, after the step's processes are killed, for its output pipes to close. A
/// process that escaped the session (`setsid`) can hold them open forever; its later output is
/// dropped.
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
        .stderr(Stdio::piped());
    // On Linux the leader calls setsid itself (see `watchdog::guard_group`), which also makes it lead a group.
    #[cfg(not(target_os = "linux"))]
    cmd.process_group(0);
    let spawn_error = |source| Error::Spawn { program: program.to_string(), workdir: spec.workdir.clone(), source };
    let (lifeline, watched) = watchdog::guard_group(&mut cmd).map_err(spawn_error)?;
    let spawned = cmd.spawn();
    // Only the worker and the watchdog may hold the pipe: the leader closed its copy at exec.
    drop(watched);
    let mut child = spawned.map_err(spawn_error)?;
    let pgid =
        child.id().and_then(|id| i32::try_from(id).ok()).ok_or_else(|| spawn_error(io::ErrorKind::Other.into()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut guard = Group {
        pgid,
        _lifeline: lifeline,
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
            kill_step(pgid, libc::SIGTERM);
            if tokio::time::timeout(spec.grace, child.wait()).await.is_err() {
                kill_step(pgid, libc::SIGKILL);
            }
            child.wait().await.map_err(Error::Wait)?;
            match stop {
                Stop::Timeout => Outcome::TimedOut,
                Stop::Cancel => Outcome::Cancelled,
            }
        }
    };
    // Leftovers (`sleep 100 &`) die with the step; then the pipes close and the pumps finish.
    kill_step(pgid, libc::SIGKILL);
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
    /// The write end of the watchdog's pipe, held for the life of the step; dropped after the
    /// group was killed (the fields drop after `Drop::drop`), when it no longer matters.
    _lifeline: Option<OwnedFd>,
    pumps: Vec<JoinHandle<()>>,
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.pumps.is_empty() {
            kill_step(self.pgid, libc::SIGKILL);
            self.pumps.iter().for_each(JoinHandle::abort);
        }
    }
}

/// Signals every process of the step: its group and, on Linux, the rest of its session (which
/// holds the children that moved to groups of their own). ESRCH (all gone) is expected.
fn kill_step(pgid: i32, signal: i32) {
    // SAFETY: killpg has no memory-safety preconditions; kill_session only makes syscalls.
    unsafe {
        libc::killpg(pgid, signal);
        #[cfg(target_os = "linux")]
        watchdog::kill_session(pgid, signal, 0);
    }
}
