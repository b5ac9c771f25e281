//! [`ProcessRuntime`]: a step as a local process session, on Linux. The step leads a new session
//! (and so a new group); a stop signals the group (`killpg`) and every other process of the
//! session, which holds the children that moved to groups of their own (GNU `timeout`, shells with
//! job control). Stdin is `/dev/null`; the step has no controlling terminal. This module owns the
//! life of those processes and nothing else: no uploads, no engine, no retries.
//!
//! Steps start without `fork`: `posix_spawn` with `POSIX_SPAWN_SETSID` (see `spawn`), whose cost
//! does not grow with the worker's memory. A `pre_exec` hook, or anything else that must run
//! between fork and exec, would force `fork` again, which copies the page tables of the whole
//! worker (tens of milliseconds per step for a worker of 100 MB): keep it that way. `argv[0]` is
//! looked up in the step's own `PATH`. The leader's exit is awaited through a pidfd on the event loop and
//! left a zombie until the runtime's last kill of the step, so its pid, group id and session id
//! cannot be recycled under that kill.
//!
//! A step's processes die with their worker by the reaper (see `reaper`): one `sh` per runtime,
//! started with its first step in a group of its own, in `/`, with stderr on `/dev/null` and
//! stdin and stdout the read ends of two pipes whose write ends only the worker holds
//! (close-on-exec, so no step inherits them; the steps' own pipes are close-on-exec too, so the
//! reaper never holds them; like every child it does inherit what the worker holds without
//! close-on-exec, such as a jobserver pipe from cargo). The runtime writes `add <sid>` to the
//! list pipe once a step started and `del <sid>` after its final kill; the reaper reads that list
//! only every few hundred steps (told on the other pipe, the guard) and at the end, so telling it
//! wakes nothing. The `del` waits up to 20 ms to share the write of the next `add`, and the
//! leader's zombie is kept until it is written, so the id the reaper holds is never anyone
//! else's. When the worker process is gone, however it died, the kernel closes both write ends;
//! at the guard's end of file the reaper reads the rest of the list, SIGKILLs each guarded
//! session's group and every other member of those sessions found in `/proc`, then exits.
//! Dropping the runtime (all its clones) closes the pipes too, and the reaper exits. If a write
//! finds the reaper dead or hung, a new one is started and told every session still running.
//!
//! Known limits, stated so the next reader does not rediscover them:
//! - A process that starts a session of its own (`setsid`, daemons) escapes every kill here; so
//!   does the rest of the session when `/proc` is not mounted. Holding those needs a cgroup per
//!   step (`cgroup.kill`); that takes root or a delegated cgroup, and is not done here.
//! - Between the worker's death and the reaper's kill, a step runs on for a few milliseconds (the
//!   reaper first reads what it had not read of the list, at most 8 KiB a byte at a time), and
//!   its leader is reaped by init; if every process of a session is gone by then and its id was
//!   recycled meanwhile (the pid space wrapped within those milliseconds), the reaper's kill hits
//!   a stranger. Steps that end while the worker lives never risk it (their leader is reaped only
//!   after the final kill).
//! - The reaper is no member of the steps: a SIGKILL sent to the reaper alone (or an OOM kill)
//!   leaves the running steps unguarded until the runtime next writes to it (the next step's start
//!   or end), which starts a new reaper. A SIGSTOPped reaper guards nothing until continued; the
//!   runtime replaces it when its list pipe fills.
//! - A step is registered just after `posix_spawn` returns: a worker killed in between leaves
//!   that one step unguarded. That is microseconds, but on a loaded machine the worker's thread
//!   can be descheduled there for much longer while the step already runs (seen once in a full
//!   test run on 2 busy cores). Closing it needs a start barrier (the step's leader waiting on a
//!   pipe until it is registered), not built yet.
//! - The leader gets no parent-death signal (`posix_spawn` cannot set one): only the reaper kills
//!   steps after the worker's death.
//! - A step starts with every signal at its default disposition and an empty signal mask, even
//!   signals the worker itself ignores (SIGPIPE; SIGHUP under `nohup`).
//! - Orphans of a step (and dead reapers) are reparented to init or to the nearest subreaper and
//!   reaped there. A worker that runs as PID 1 or as a subreaper must reap orphans itself (or run
//!   under an init such as `tini`); this module does not.
//! - Linux only: `POSIX_SPAWN_SETSID`, `posix_spawn_file_actions_addchdir_np` and `/proc`.

#[cfg(not(target_os = "linux"))]
compile_error!("ProcessRuntime needs Linux: POSIX_SPAWN_SETSID, posix_spawn_file_actions_addchdir_np and /proc");

use std::io;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    Action, Error, LogLine, Outcome, RunFuture, Runtime, StepSpec, Stream, logs, set_metrics_file, set_visible_gpus,
    step_env,
};

mod reaper;
mod session;
mod spawn;

/// How long `run` waits, after the step's processes are killed, for its output pipes to close. A
/// process that escaped the session (`setsid`) can hold them open forever; its later output is
/// dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs steps as local processes; see the module docs. Clones share one reaper.
#[derive(Clone, Debug, Default)]
pub struct ProcessRuntime {
    reaper: Arc<reaper::Reaper>,
}

impl ProcessRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pid of this runtime's reaper (see the module docs), once a step has started it. For
    /// tests and diagnostics.
    pub fn reaper_pid(&self) -> Option<u32> {
        self.reaper.pid()
    }
}

impl Runtime for ProcessRuntime {
    fn run(&self, spec: StepSpec, logs: mpsc::Sender<LogLine>, cancel: CancellationToken) -> RunFuture<'_> {
        Box::pin(run(&self.reaper, spec, logs, cancel))
    }

    /// Starts the reaper on a blocking thread, so that the first step does not wait for a shell
    /// to start (about a millisecond of a one-step run). A failure here is only logged: the
    /// first step tries again and refuses to run without a reaper.
    fn warm(&self) {
        let reaper = self.reaper.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn_blocking(move || {
                if let Err(e) = reaper.start() {
                    tracing::warn!(error = %e, "cannot start the step reaper yet; the first step will try again");
                }
            });
        }
    }
}

/// Why the step stopped before exiting by itself.
#[derive(Clone, Copy)]
enum Stop {
    Timeout,
    Cancel,
}

async fn run(
    reaper: &Arc<reaper::Reaper>,
    spec: StepSpec,
    logs: mpsc::Sender<LogLine>,
    cancel: CancellationToken,
) -> Result<Outcome, Error> {
    // A script runs as `system(3)` and make run one: `/bin/sh -c`, found without a walk of
    // `PATH` (an `access` call per entry for every step); `$0` stays `sh`.
    let (program, argv): (&str, Vec<&str>) = match &spec.action {
        Action::Script(script) => ("/bin/sh", vec!["sh", "-c", script]),
        Action::Argv(argv) if argv.is_empty() => return Err(Error::EmptyArgv),
        Action::Argv(argv) => (argv[0].as_str(), argv.iter().map(String::as_str).collect()),
    };
    let spawn_error = |source| Error::Spawn { program: argv[0].to_string(), workdir: spec.workdir.clone(), source };
    let mut env =
        step_env(super::env::kept_from_process().iter().cloned(), &spec.env, &spec.inputs_dir, &spec.outputs_dir);
    set_visible_gpus(&mut env, &spec.gpus);
    if let Some(dir) = &spec.metrics_dir {
        set_metrics_file(&mut env, &dir.join(super::METRICS_FILE));
    }
    let child = spawn::spawn(program, &argv, &env, &spec.workdir).map_err(spawn_error)?;
    let pgid = child.pid;
    let born = session::Born { leader: pgid, at: crate::clock::instant() };
    let stdout = pipe_reader(child.stdout, std::process::ChildStdout::from, tokio::process::ChildStdout::from_std);
    let stderr = pipe_reader(child.stderr, std::process::ChildStderr::from, tokio::process::ChildStderr::from_std);
    let mut guard = Group { pgid, born, reaper, exit: Some(child.exit), exited: false, finished: false };
    let (stdout, stderr) = match (stdout, stderr) {
        (Ok(stdout), Ok(stderr)) => (stdout, stderr),
        (Err(e), _) | (_, Err(e)) => return Err(spawn_error(e)), // `guard` kills the step
    };
    if let Err(error) = reaper.add(pgid) {
        // Without a reaper the step would outlive a killed worker: do not run it.
        return Err(spawn_error(error));
    }
    // The output is read on this task while it waits for the exit, not on tasks of its own:
    // each task spawned per step could wake the other runtime thread to take it.
    let mut pumps = Pumps::new(async move {
        tokio::join!(
            logs::pump(BufReader::new(stdout), Stream::Stdout, logs.clone()),
            logs::pump(BufReader::new(stderr), Stream::Stderr, logs),
        );
    });

    let mut timeout = std::pin::pin!(async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    });
    let stop = pumps
        .meanwhile(async {
            tokio::select! {
                status = guard.wait() => Err(status),
                () = &mut timeout => Ok(Stop::Timeout),
                () = cancel.cancelled() => Ok(Stop::Cancel),
            }
        })
        .await;
    let outcome = match stop {
        Err(status) => exit_outcome(status.map_err(Error::Wait)?),
        Ok(stop) => {
            kill_step(born, libc::SIGTERM);
            let status = match pumps.meanwhile(tokio::time::timeout(spec.grace, guard.wait())).await {
                Ok(status) => status,
                Err(_) => {
                    kill_step(born, libc::SIGKILL);
                    pumps.meanwhile(guard.wait()).await
                }
            };
            status.map_err(Error::Wait)?;
            match stop {
                Stop::Timeout => Outcome::TimedOut,
                Stop::Cancel => Outcome::Cancelled,
            }
        }
    };
    // Leftovers (`sleep 100 &`) die with the step; then the pipes close and the pumps finish.
    kill_step(born, libc::SIGKILL);
    guard.finished = true;
    drop(guard); // unregisters the session from the reaper, then reaps the leader
    // Output a process that escaped the session still writes is dropped with the pumps.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, pumps.drained()).await;
    Ok(outcome)
}

/// The output pumps of a step, polled by the task that runs it.
struct Pumps<F> {
    pumps: std::pin::Pin<Box<F>>,
    done: bool,
}

impl<F: Future<Output = ()>> Pumps<F> {
    fn new(pumps: F) -> Self {
        Pumps { pumps: Box::pin(pumps), done: false }
    }

    /// Runs `f` to its end while the pumps go on reading.
    async fn meanwhile<T>(&mut self, f: impl Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        loop {
            tokio::select! {
                biased;
                out = &mut f => return out,
                () = &mut self.pumps, if !self.done => self.done = true,
            }
        }
    }

    /// Until both pipes are at their end.
    async fn drained(&mut self) {
        if !self.done {
            (&mut self.pumps).await;
            self.done = true;
        }
    }
}

/// A pipe's read end as a tokio reader, by way of the std type tokio knows how to register.
fn pipe_reader<S, T>(
    fd: std::os::fd::OwnedFd,
    to_std: impl FnOnce(std::os::fd::OwnedFd) -> S,
    to_tokio: impl FnOnce(S) -> io::Result<T>,
) -> io::Result<T> {
    to_tokio(to_std(fd))
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

/// The step while it may still have processes: when `run` is dropped before it finished (the
/// worker task was aborted), kills them, so an abandoned step never runs on unobserved. In every
/// case, then unregisters the session from the reaper and lets the leader be reaped, in that order
/// (the leader's zombie holds the session id until then).
struct Group<'a> {
    pgid: i32,
    born: session::Born,
    reaper: &'a Arc<reaper::Reaper>,
    /// Taken by the drop, which reaps.
    exit: Option<spawn::Exit>,
    /// Whether the leader's exit was seen.
    exited: bool,
    /// Set once `run` did the final kill itself.
    finished: bool,
}

impl Group<'_> {
    /// Waits for the leader's exit (without reaping it).
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        let exit = self.exit.as_mut().expect("the exit is taken only by the drop");
        let status = exit.wait(self.pgid).await;
        self.exited |= status.is_ok();
        status
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        if !self.finished {
            kill_step(self.born, libc::SIGKILL);
        }
        if let Some(exit) = self.exit.take() {
            self.reaper.end(self.pgid, exit, self.exited);
        }
    }
}

/// Signals every process of the step: its group and the rest of its session (which holds the
/// children that moved to groups of their own). ESRCH (all gone) is expected.
fn kill_step(born: session::Born, signal: i32) {
    let pgid = born.leader;
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe { libc::killpg(pgid, signal) };
    session::kill_session(pgid, signal, pgid, Some(born));
}
