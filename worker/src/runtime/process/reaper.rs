//! The reaper: one small `sh` per [`ProcessRuntime`](super::ProcessRuntime) that kills the
//! sessions of the steps still running when the worker dies, however it died. The design and its
//! limits are in the docs of the parent module. This module only starts the reaper and tells it
//! which sessions to guard; it never waits for a step.
//!
//! Two pipes, so that telling the reaper costs it nothing: the list (`add <sid>`, `del <sid>`
//! lines, and `sync` marks) is written without waking it, since it blocks on the other pipe, the
//! guard, which the worker writes only to have the list read. A line on the guard makes it read
//! the list up to the next `sync`; the end of the guard (the worker is gone) makes it read the
//! list to its end, then kill. Woken for every step, its shell cost a step about 0.1 ms of CPU
//! (a wake-up on both sides, then a `read` per byte; BENCHMARKS.md, issue 19, tenth round);
//! now it wakes once per [`SYNC_EVERY`] bytes of the list, a few hundred steps.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::spawn::Exit;

/// How long the `del` of a session whose step ended waits for the next `add` to share its write
/// (see [`Reaper::end`]).
const DEL_DELAY: Duration = Duration::from_millis(20);

/// Bytes of list after which the reaper is told to read it: far below a pipe's 64 KiB, so that
/// the list never fills while the reaper catches up, and small enough that a reaper reading a
/// byte at a time gets through what is unread within milliseconds of the worker's death.
const SYNC_EVERY: usize = 8 * 1024;

/// Reads the list (`add <sid>`, `del <sid>`, `sync`) on descriptor 1, a pipe: up to the next
/// `sync` for each line on stdin (the guard), and to its end once stdin ends (the worker is gone:
/// the kernel closed both write ends). Then SIGKILLs each guarded session's group, then every
/// other live member of those sessions, found in `/proc/<pid>/stat` (field 6, counted after the
/// last `)`, since a command name may hold spaces and parentheses), rescanning while it finds any
/// (a member may fork meanwhile), then exits. Only builtins, so it forks nothing; it ignores the
/// signals a terminal or a stop sends, so that only SIGKILL ends it before the worker does.
const SCRIPT: &str = r#"trap '' HUP INT QUIT TERM PIPE ALRM USR1 USR2
cd /
s=' '
take() {
  while read -r op id <&1; do
    [ "$op" = sync ] && return 0
    case $id in ''|*[!0-9]*) continue ;; esac
    case $op in
      add) s="$s$id " ;;
      del) case $s in *" $id "*) s="${s%% $id *} ${s#* $id }" ;; esac ;;
    esac
  done
  return 1
}
while read -r _; do take; done
while take; do :; done
[ "$s" = ' ' ] && exit 0
for id in $s; do kill -s KILL -- "-$id" 2>/dev/null; done
n=0
while [ $n -lt 16 ]; do
  n=$((n + 1)); found=
  for f in /proc/[0-9]*/stat; do
    read -r l 2>/dev/null < "$f" || continue
    set -f; set -- ${l##*)}; set +f
    case $1 in Z|X) continue ;; esac
    case $s in *" $4 "*) p=${f#/proc/}; kill -s KILL -- "${p%/stat}" 2>/dev/null && found=1 ;; esac
  done
  [ -n "$found" ] || break
done
"#;

/// The reaper of one runtime (shared by its clones), started with the first step.
#[derive(Debug, Default)]
pub(super) struct Reaper {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    live: Option<Live>,
    /// The sessions of the steps running now: replayed to a new reaper if the old one died.
    sids: BTreeSet<libc::pid_t>,
    /// Sessions whose steps ended, not yet told to the reaper, with their unreaped leaders.
    ended: Vec<Ended>,
    /// Whether a task will send `ended`'s lines after [`DEL_DELAY`].
    flush_due: bool,
}

/// A session the reaper still guards, though its step ended, and its leader, reaped once the
/// reaper was told: until then the leader's zombie keeps its pid, the session's id, from reuse.
struct Ended {
    sid: libc::pid_t,
    exit: Exit,
    exited: bool,
}

impl std::fmt::Debug for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ended").field("sid", &self.sid).field("exited", &self.exited).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Live {
    child: Child,
    /// The guard's write end: written only to have the list read. Non-blocking, as is `list`:
    /// a reaper that stopped reading (SIGSTOP) must not block a tokio thread.
    guard: ChildStdin,
    /// The list's write end (close-on-exec: no step holds it, so its end is the worker's).
    list: File,
    /// Bytes written to the list since the last `sync`.
    unsynced: usize,
}

impl Reaper {
    /// Guards session `sid` from now on, starting the reaper if need be. The `del` lines of
    /// steps that ended meanwhile go in the same write, then their leaders are reaped.
    pub(super) fn add(&self, sid: libc::pid_t) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.sids.insert(sid);
        let mut lines = state.dels();
        lines.push_str(&format!("add {sid}\n"));
        let sent = state.send(&lines);
        let ended = std::mem::take(&mut state.ended);
        drop(state);
        reap(ended);
        sent
    }

    /// The step of session `sid` ended and its processes were killed: stops guarding the
    /// session, then reaps its leader (`exit`, `exited` as [`Exit::reap`] takes them), in that
    /// order. The `del` line waits up to [`DEL_DELAY`] for the next `add` and shares its write:
    /// one wake-up of the reaper a step instead of two. Until the line is sent the leader stays
    /// unreaped, so the id the reaper still holds names no one else's session.
    pub(super) fn end(self: &Arc<Self>, sid: libc::pid_t, exit: Exit, exited: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.sids.remove(&sid) {
            // Never added, or a failure restarted the reaper without `sid`: nothing to tell.
            drop(state);
            exit.reap(sid, exited);
            return;
        }
        state.ended.push(Ended { sid, exit, exited });
        if state.flush_due {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                state.flush_due = true;
                drop(state);
                // Weak: a runtime dropped meanwhile sends the lines from its drop, at once.
                let reaper = Arc::downgrade(self);
                drop(handle.spawn(async move {
                    tokio::time::sleep(DEL_DELAY).await;
                    if let Some(reaper) = reaper.upgrade() {
                        reaper.flush();
                    }
                }));
            }
            Err(_) => {
                drop(state);
                self.flush();
            }
        }
    }

    /// Sends the `del` lines of the sessions that ended, then reaps their leaders.
    fn flush(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.flush_due = false;
        if state.ended.is_empty() {
            return;
        }
        let lines = state.dels();
        // A failure restarted the reaper without these sessions: nothing is lost.
        let _ = state.send(&lines);
        let ended = std::mem::take(&mut state.ended);
        drop(state);
        reap(ended);
    }

    /// Starts the reaper if none runs (and tells it every guarded session).
    pub(super) fn start(&self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.live.is_some() {
            return Ok(());
        }
        state.send("")
    }

    /// The reaper's pid, if it runs.
    pub(super) fn pid(&self) -> Option<u32> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).live.as_ref().map(|l| l.child.id())
    }
}

/// Reaps the leaders of sessions the reaper was told about.
fn reap(ended: Vec<Ended>) {
    for Ended { sid, exit, exited } in ended {
        exit.reap(sid, exited);
    }
}

impl State {
    /// The `del` lines of the sessions that ended.
    fn dels(&self) -> String {
        self.ended.iter().map(|e| format!("del {}\n", e.sid)).collect()
    }

    /// Sends lines to the reaper; if there is none, or it cannot take the line (it died, or
    /// stopped reading), starts a new one and tells it every guarded session. One `write` per
    /// call (a pipe takes up to 4 KiB at once).
    fn send(&mut self, line: &str) -> io::Result<()> {
        if let Some(live) = &mut self.live
            && live.tell(line).is_ok()
        {
            return Ok(());
        }
        if let Some(mut old) = self.live.take() {
            tracing::warn!(pid = old.child.id(), "the step reaper died or hung; starting a new one");
            let _ = old.child.kill();
            let _ = old.child.wait();
        }
        let mut live = Live::start()?;
        let mut all = String::new();
        for sid in &self.sids {
            all.push_str(&format!("add {sid}\n"));
        }
        live.tell(&all)?;
        self.live = Some(live);
        Ok(())
    }
}

impl Live {
    fn start() -> io::Result<Self> {
        let (read, write) = pipe()?;
        // No pre_exec and no PATH change: std starts it with posix_spawn too. `/bin/sh`, as for
        // steps' scripts: no walk of `PATH`. Its own group keeps it out of the worker's (a
        // terminal's ^C) and out of every step's. The list's read end is its descriptor 1.
        let mut child = Command::new("/bin/sh")
            .args(["-c", SCRIPT, "weir-reaper"])
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(read))
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let guard = child.stdin.take().expect("stdin is piped");
        for fd in [guard.as_raw_fd(), write.as_raw_fd()] {
            // SAFETY: F_GETFL/F_SETFL on descriptors we own.
            unsafe { libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) };
        }
        Ok(Live { child, guard, list: File::from(write), unsynced: 0 })
    }

    /// Writes `lines` to the list, and past [`SYNC_EVERY`] unread bytes a `sync` mark after
    /// them and a line on the guard, so the reaper reads them. An error means the reaper is
    /// gone (no reader: EPIPE) or not reading (the list is full: EAGAIN).
    fn tell(&mut self, lines: &str) -> io::Result<()> {
        if !lines.is_empty() {
            self.list.write_all(lines.as_bytes())?;
            self.unsynced += lines.len();
        }
        if self.unsynced >= SYNC_EVERY {
            self.list.write_all(b"sync\n")?;
            self.guard.write_all(b"\n")?;
            self.unsynced = 0;
        }
        Ok(())
    }
}

/// A pipe, both ends close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two descriptors the kernel just gave us, owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // The runtime and its clones are gone, so no step of theirs runs: the sessions that ended
        // are told first (with nothing left to guard, the reaper exits without scanning `/proc`),
        // then closing the pipes makes the reaper read the list and exit (having killed whatever
        // leaked). Reap it off this thread, which may be a tokio one.
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if !state.ended.is_empty() {
            let lines = state.dels();
            if let Some(live) = &mut state.live {
                let _ = live.list.write_all(lines.as_bytes());
            }
            reap(std::mem::take(&mut state.ended));
        }
        if let Some(Live { mut child, guard, list, .. }) = state.live.take() {
            drop((guard, list));
            let _ = std::thread::Builder::new().name("weir-reaper-wait".into()).spawn(move || child.wait());
        }
    }
}
