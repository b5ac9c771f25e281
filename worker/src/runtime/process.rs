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
    // On Linux the leader calls setsid itself (see `guard_group`), which also makes it lead a group.
    #[cfg(not(target_os = "linux"))]
    cmd.process_group(0);
    let spawn_error = |source| Error::Spawn { program: program.to_string(), workdir: spec.workdir.clone(), source };
    let (lifeline, watched) = guard_group(&mut cmd).map_err(spawn_error)?;
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
        kill_session(pgid, signal, 0);
    }
}

/// Arms `cmd` so that its group dies with the worker (see the module docs): sets the leader's
/// parent-death signal and has it start the watchdog before exec. Returns the pipe's write end,
/// to hold until the step is over, and its read end, to close as soon as `cmd` has spawned.
#[cfg(target_os = "linux")]
fn guard_group(cmd: &mut Command) -> io::Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    use std::os::fd::{AsRawFd, FromRawFd};

    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array, which then belong to us alone.
    let (read, write) = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    // A worker started with its stdio closed gets descriptors 0 to 2 here; the child's stdio
    // would then replace the read end before the watchdog starts (it would kill the step at once).
    let read = if read.as_raw_fd() > 2 {
        read
    } else {
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that belongs to us alone.
        unsafe {
            match libc::fcntl(read.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) {
                -1 => return Err(io::Error::last_os_error()),
                fd => OwnedFd::from_raw_fd(fd),
            }
        }
    };
    let watched = read.as_raw_fd();
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid, setsid, getpid, sigaction, fork, waitpid, _exit, and in the watchdog
    // chdir, close, open, read, getdents64, kill); it allocates nothing and takes no lock. `fork`
    // in this single-threaded child is safe: glibc reset its own locks after std's fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The worker may have died before prctl: then nobody will send the signal.
            if libc::getppid() as u32 != parent {
                libc::_exit(137);
            }
            // A session of its own: children that move to new groups stay in it.
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            start_watchdog(watched)
        });
    }
    Ok((Some(write), Some(read)))
}

#[cfg(not(target_os = "linux"))]
fn guard_group(_cmd: &mut Command) -> io::Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    // No parent-death signal and no watchdog outside Linux (documented above).
    Ok((None, None))
}

/// In the step's leader, before exec: double-forks the watchdog, so that it is no child of the
/// step, and waits for the middle process. Fails only if a fork failed; the step then never runs.
///
/// # Safety
/// Only between fork and exec, in the leader of a fresh session.
#[cfg(target_os = "linux")]
unsafe fn start_watchdog(watched: i32) -> io::Result<()> {
    // SAFETY: plain syscalls on our own process; see the caller for the fork context.
    unsafe {
        let group = libc::getpid();
        // The worker's SIGCHLD handler (tokio's) is still installed here; when the middle process
        // exits it would poke the worker's wakeup pipe. Exec resets it to the default anyway.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGCHLD, &default, std::ptr::null_mut());
        let middle = match libc::fork() {
            -1 => return Err(io::Error::last_os_error()),
            0 => match libc::fork() {
                -1 => libc::_exit(1),
                0 => watchdog(watched, group),
                _ => libc::_exit(0),
            },
            middle => middle,
        };
        let mut status = 0;
        while libc::waitpid(middle, &mut status, 0) == -1 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EINTR) {
                return Err(error);
            }
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EAGAIN))
        }
    }
}

/// The watchdog's whole life: wait for the end of file on `watched`, then kill `group`.
///
/// # Safety
/// Only in a fresh fork that owns nothing it must clean up: it never returns.
#[cfg(target_os = "linux")]
unsafe fn watchdog(watched: i32, group: libc::pid_t) -> ! {
    // SAFETY: plain syscalls on our own process, with pointers to locals and a static string.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"weir-watchdog".as_ptr() as libc::c_ulong, 0, 0, 0);
        // Only SIGKILL may end the watchdog before the worker does: a stop's SIGTERM to the group,
        // or a step's `kill 0`, must not leave the group unguarded. Errors (SIGKILL, SIGSTOP,
        // numbers past the last signal) are expected.
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        for signal in 1..=64 {
            libc::sigaction(signal, &ignore, std::ptr::null_mut());
        }
        // Hold no directory busy and no descriptor of the worker's: not the step's stdout or
        // stderr (the log readers wait for their end of file), nor the pipes of other steps.
        libc::chdir(c"/".as_ptr());
        let watched_u = watched as libc::c_uint;
        if watched_u > 0 {
            close_range(0, watched_u - 1);
        }
        close_range(watched_u + 1, libc::c_uint::MAX);
        let mut byte = 0u8;
        loop {
            match libc::read(watched, (&raw mut byte).cast(), 1) {
                0 => break,
                -1 if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
                -1 => break,
                _ => continue, // nobody writes; ignore anything that comes
            }
        }
        kill_session(group, libc::SIGKILL, libc::getpid());
        libc::kill(-group, libc::SIGKILL);
        libc::_exit(0)
    }
}

/// Closes the descriptors `first..=last`, by `close_range(2)` or, before Linux 5.9, one by one up
/// to the descriptor limit. Async-signal-safe.
///
/// # Safety
/// Nothing may use the closed descriptors afterwards.
#[cfg(target_os = "linux")]
unsafe fn close_range(first: libc::c_uint, last: libc::c_uint) {
    // SAFETY: closing descriptors has no memory-safety preconditions; the caller owns them all.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first, last, 0) == 0 {
            return;
        }
        let mut limit: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 { limit.rlim_cur } else { 1 << 16 };
        let end = (libc::rlim_t::from(last) + 1).min(max.min(1 << 20));
        let mut fd = libc::rlim_t::from(first);
        while fd < end {
            libc::close(fd as i32);
            fd += 1;
        }
    }
}

/// Sends `signal` to every live process of session `sid` but `skip`, found by scanning `/proc`
/// (a session cannot be signalled as a whole). Scans again while it finds any, since a member may
/// fork during a scan; bounded, as a SIGKILLed process can show as running for a moment. Without
/// `/proc` it does nothing. Async-signal-safe: raw syscalls and stack buffers only.
///
/// # Safety
/// None beyond the syscalls'; `unsafe` only because it runs between fork and exec too.
#[cfg(target_os = "linux")]
unsafe fn kill_session(sid: libc::pid_t, signal: i32, skip: libc::pid_t) {
    // SAFETY: every pointer handed to the kernel is to a local buffer of the stated length.
    unsafe {
        for _ in 0..16 {
            let dir = libc::open(c"/proc".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
            if dir == -1 {
                return;
            }
            let mut found = false;
            let mut entries = [0u8; 4096];
            loop {
                let n = libc::syscall(libc::SYS_getdents64, dir, entries.as_mut_ptr(), entries.len());
                if n <= 0 {
                    break;
                }
                // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, NUL-terminated name.
                let n = n as usize;
                let mut at = 0;
                while at + 19 < n {
                    let len = u16::from_ne_bytes([entries[at + 16], entries[at + 17]]) as usize;
                    if len < 20 || at + len > n {
                        break;
                    }
                    let name = &entries[at + 19..at + len];
                    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                    at += len;
                    let Some(pid) = parse_pid(name) else { continue };
                    if pid != skip && session_of(name) == Some(sid) {
                        libc::kill(pid, signal);
                        found = true;
                    }
                }
            }
            libc::close(dir);
            if !found || signal != libc::SIGKILL {
                return;
            }
        }
    }
}

/// The session of the live process `/proc/<pid>` (`None` if it is gone or a zombie).
#[cfg(target_os = "linux")]
unsafe fn session_of(pid: &[u8]) -> Option<libc::pid_t> {
    const PREFIX: &[u8] = b"/proc/";
    const SUFFIX: &[u8] = b"/stat\0";
    let mut path = [0u8; 64];
    if PREFIX.len() + pid.len() + SUFFIX.len() > path.len() {
        return None;
    }
    path[..PREFIX.len()].copy_from_slice(PREFIX);
    path[PREFIX.len()..PREFIX.len() + pid.len()].copy_from_slice(pid);
    path[PREFIX.len() + pid.len()..PREFIX.len() + pid.len() + SUFFIX.len()].copy_from_slice(SUFFIX);
    let mut stat = [0u8; 512];
    // SAFETY: a NUL-terminated path and a buffer of the stated length, both local.
    let n = unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd == -1 {
            return None;
        }
        let n = libc::read(fd, stat.as_mut_ptr().cast(), stat.len());
        libc::close(fd);
        n
    };
    parse_session(stat.get(..usize::try_from(n).ok()?)?)
}

/// The session field of a `/proc/<pid>/stat` line (`pid (comm) state ppid pgrp session ...`), or
/// `None` for a zombie or a line it cannot read. The command name may hold `)` or spaces, so the
/// fields are counted from the last `)`.
#[cfg(target_os = "linux")]
fn parse_session(stat: &[u8]) -> Option<libc::pid_t> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat[close + 1..].split(u8::is_ascii_whitespace).filter(|f| !f.is_empty());
    if matches!(fields.next()?, b"Z" | b"X") {
        return None;
    }
    parse_pid(fields.nth(2)?)
}

/// A positive decimal pid, from bytes.
#[cfg(target_os = "linux")]
fn parse_pid(digits: &[u8]) -> Option<libc::pid_t> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pid = digits.iter().fold(0, |n: libc::pid_t, &d| n * 10 + libc::pid_t::from(d - b'0'));
    (pid > 0).then_some(pid)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_the_session_of_a_stat_line() {
        let check = |line: &str, expect: Option<i32>| assert_eq!(parse_session(line.as_bytes()), expect, "{line}");
        check("4242 (sleep) S 1 4240 4200 0 -1 4194304 95 0", Some(4200));
        check("4242 (a) b (c)) R 1 4240 4201 0", Some(4201));
        check("4242 (weir watchdog) S 1 4240 77\n", Some(77));
        check("4242 (sleep) Z 1 4240 4200 0", None);
        check("4242 (sleep) S 1 4240", None);
        check("", None);
        assert_eq!(parse_pid(b"123"), Some(123));
        for bad in [&b""[..], b"0", b"self", b"12a", b"9999999999"] {
            assert_eq!(parse_pid(bad), None);
        }
    }
}
