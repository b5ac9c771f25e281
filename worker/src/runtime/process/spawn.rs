//! Starting a step without `fork`: `posix_spawn` (a `vfork`-like clone in glibc and musl, whose
//! cost does not grow with the worker's memory, unlike `fork`, which copies its page tables), and
//! waiting for its exit through a pidfd that the caller's own task polls (a small thread where
//! the kernel has no pidfd). Must be called within a tokio runtime. This module starts one process and reports its exit; it
//! never signals a step and never reads its output.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

// Declared here rather than taken from `libc`, which has it for glibc only; musl has it too.
unsafe extern "C" {
    fn posix_spawn_file_actions_addchdir_np(
        actions: *mut libc::posix_spawn_file_actions_t,
        path: *const libc::c_char,
    ) -> libc::c_int;
}

/// A started step leader.
pub(super) struct Child {
    /// The leader's pid, which is also its group's and session's id.
    pub pid: libc::pid_t,
    /// The read ends of the leader's stdout and stderr.
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The leader's exit. The leader is left a zombie until [`Exit::reap`], so that its pid, group
    /// id and session id cannot be recycled while the runtime still signals them.
    pub exit: Exit,
}

/// How the leader's exit is seen: a pidfd the caller's own task waits on (no other task or
/// thread per step), or, where the kernel has no pidfd, a small thread that waits and reaps.
pub(super) enum Exit {
    Pidfd(AsyncFd<OwnedFd>),
    Thread { exited: oneshot::Receiver<io::Result<ExitStatus>>, reap: oneshot::Sender<()> },
}

impl Exit {
    /// Waits until the leader `pid` has exited, without reaping it. May be called again after it
    /// returned or was dropped unfinished.
    pub async fn wait(&mut self, pid: libc::pid_t) -> io::Result<ExitStatus> {
        match self {
            Exit::Pidfd(fd) => match fd.readable().await {
                // Readable once the leader has exited: waitid answers without blocking.
                Ok(_) => wait_exit(pid),
                Err(_) => tokio::task::spawn_blocking(move || wait_exit(pid))
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e))),
            },
            Exit::Thread { exited, .. } => match exited.await {
                Ok(status) => status,
                Err(_) => Err(io::Error::other("the thread waiting for the step died")),
            },
        }
    }

    /// Reaps the leader `pid` without blocking the caller: at once when `exited` (its exit was
    /// seen), else once it exits (the caller has killed it).
    pub fn reap(self, pid: libc::pid_t, exited: bool) {
        match self {
            // The pidfd leaves the event loop first: reaping with it still registered makes it
            // ready again, and that wakes a runtime thread parked on the loop for nothing (one
            // wake-up of the other core a step).
            Exit::Pidfd(fd) if exited => {
                drop(fd);
                reap_pid(pid);
            }
            Exit::Pidfd(fd) => match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn(async move {
                    let _ = fd.readable().await;
                    drop(fd);
                    reap_pid(pid);
                })),
                Err(_) => {
                    let _ = std::thread::Builder::new()
                        .name("weir-step-wait".into())
                        .stack_size(64 * 1024)
                        .spawn(move || reap_pid(pid));
                }
            },
            // The waiting thread reaps once told.
            Exit::Thread { reap, .. } => drop(reap),
        }
    }
}

/// Starts `program` with `argv` (`program`, unless it holds a `/`, is looked up in the `PATH` of
/// `env`, as `Command` does when the child's environment sets `PATH`) in `workdir`, leading a new session and so a new group, with
/// exactly `env`, stdin on `/dev/null`, stdout and stderr on fresh pipes, an empty signal mask and
/// every signal at its default disposition (the worker ignores SIGPIPE, and ignored signals would
/// survive `exec`).
pub(super) fn spawn(program: &str, argv: &[&str], env: &[(String, String)], workdir: &Path) -> io::Result<Child> {
    let cstring = |bytes: &[u8]| CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
    let program = resolve(program, env, workdir)?;
    let program = cstring(program.as_os_str().as_bytes())?;
    let argv: Vec<CString> = argv.iter().map(|a| cstring(a.as_bytes())).collect::<io::Result<_>>()?;
    let envp: Vec<CString> =
        env.iter().map(|(k, v)| cstring(format!("{k}={v}").as_bytes())).collect::<io::Result<_>>()?;
    let workdir = cstring(workdir.as_os_str().as_bytes())?;
    let null_terminated = |v: &[CString]| v.iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect::<Vec<_>>();
    let (argv_ptrs, envp_ptrs) = (null_terminated(&argv), null_terminated(&envp));

    let (stdout, stdout_w) = pipe()?;
    let (stderr, stderr_w) = pipe()?;
    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute and file-action objects are initialised before use and destroyed on
    // every path (the guards); every pointer handed over is to a NUL-terminated string or a
    // NULL-terminated array that outlives the call.
    unsafe {
        let mut attr = Attr::new()?;
        let mut actions = Actions::new()?;
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let flags =
            libc::POSIX_SPAWN_SETSID | (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
        check(libc::posix_spawnattr_setflags(&mut attr.0, flags))?;
        check(libc::posix_spawnattr_setsigmask(&mut attr.0, &empty))?;
        check(libc::posix_spawnattr_setsigdefault(&mut attr.0, &all))?;
        check(posix_spawn_file_actions_addchdir_np(&mut actions.0, workdir.as_ptr()))?;
        check(libc::posix_spawn_file_actions_addopen(&mut actions.0, 0, c"/dev/null".as_ptr(), libc::O_RDONLY, 0))?;
        // The write ends are above 2 (see `pipe`), so neither dup2 overwrites the other's source;
        // dup2 clears close-on-exec on the copies only.
        check(libc::posix_spawn_file_actions_adddup2(&mut actions.0, stdout_w.as_raw_fd(), 1))?;
        check(libc::posix_spawn_file_actions_adddup2(&mut actions.0, stderr_w.as_raw_fd(), 2))?;
        check(libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            &actions.0,
            &attr.0,
            argv_ptrs.as_ptr().cast(),
            envp_ptrs.as_ptr().cast(),
        ))?;
    }
    // Only the leader may hold the write ends now: the log readers wait for their end of file.
    drop((stdout_w, stderr_w));

    let exit = match pidfd(pid) {
        // The exit arrives on the event loop of the task that runs the step.
        Ok(fd) => Exit::Pidfd(fd),
        // No pidfd (a kernel before 5.3, or a seccomp filter): a small thread waits instead.
        Err(_) => {
            let (exit_tx, exited) = oneshot::channel();
            let (reap, reap_rx) = oneshot::channel::<()>();
            let waiter =
                std::thread::Builder::new().name("weir-step-wait".into()).stack_size(64 * 1024).spawn(move || {
                    let _ = exit_tx.send(wait_exit(pid));
                    let _ = reap_rx.blocking_recv();
                    reap_pid(pid);
                });
            if let Err(error) = waiter {
                // SAFETY: the leader is our unreaped child, so the group and session ids are still ours.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
                reap_pid(pid);
                return Err(error);
            }
            Exit::Thread { exited, reap }
        }
    };
    Ok(Child { pid, stdout, stderr, exit })
}

/// A pidfd of our child `pid`, registered with the event loop: it becomes readable when the
/// child exits.
fn pidfd(pid: libc::pid_t) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just gave us (close-on-exec, as pidfds always are).
    let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    // SAFETY: the `OwnedFd` moves into the `AsyncFd`, which alone closes it; its raw descriptor
    // never changes.
    Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?)
}

/// Waits until `pid` (our child) has exited, without reaping it.
fn wait_exit(pid: libc::pid_t) -> io::Result<ExitStatus> {
    loop {
        // SAFETY: waitid writes into the local siginfo_t; the si_* accessors read its union as
        // the kernel filled it for a CLD_* code.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            if libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) == -1 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let status = info.si_status();
            return Ok(ExitStatus::from_raw(match info.si_code {
                libc::CLD_EXITED => (status & 0xff) << 8,
                libc::CLD_DUMPED => (status & 0x7f) | 0x80,
                _ => status & 0x7f, // CLD_KILLED
            }));
        }
    }
}

/// Reaps our exited (or killed) child `pid`.
fn reap_pid(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid writes into a local.
    while unsafe { libc::waitpid(pid, &mut status, 0) } == -1
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

/// `program` as `execvp` would find it with `env`'s `PATH` (or glibc's default, `/bin:/usr/bin`):
/// a name with a slash as is, anything else in the first `PATH` entry that holds an executable
/// file of that name. Relative entries are taken from `workdir`, where the step execs.
fn resolve(program: &str, env: &[(String, String)], workdir: &Path) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    if program.is_empty() {
        return Err(io::ErrorKind::NotFound.into());
    }
    let path = env.iter().rev().find(|(k, _)| k == "PATH").map_or("/bin:/usr/bin", |(_, v)| v.as_str());
    for dir in path.split(':') {
        let dir = if dir.is_empty() { Path::new(".") } else { Path::new(dir) };
        let candidate = workdir.join(dir).join(program);
        let Ok(c) = CString::new(candidate.as_os_str().as_bytes()) else { continue };
        // SAFETY: a NUL-terminated path.
        let executable = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
        if executable && std::fs::metadata(&candidate).is_ok_and(|m| m.is_file()) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found in PATH", OsStr::new(program).display())))
}

/// A close-on-exec pipe, both ends above descriptor 2: a worker started with its stdio closed
/// would get 0 to 2 here, and the step's own dup2 onto 1 and 2 would then clobber them.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array, which then belong to us alone.
    let (read, write) = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    let high = |fd: OwnedFd| -> io::Result<OwnedFd> {
        if fd.as_raw_fd() > 2 {
            return Ok(fd);
        }
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that belongs to us alone.
        match unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) } {
            -1 => Err(io::Error::last_os_error()),
            new => Ok(unsafe { OwnedFd::from_raw_fd(new) }),
        }
    };
    Ok((high(read)?, high(write)?))
}

/// The `posix_spawn*` functions return an error number instead of setting errno.
fn check(code: libc::c_int) -> io::Result<()> {
    if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(code)) }
}

struct Attr(libc::posix_spawnattr_t);

impl Attr {
    /// # Safety
    /// The object must not move after `posix_spawnattr_init` (glibc keeps no pointer to itself,
    /// so a move before first use is fine, as here).
    unsafe fn new() -> io::Result<Self> {
        // SAFETY: init fills the zeroed object.
        unsafe {
            let mut attr = std::mem::zeroed();
            check(libc::posix_spawnattr_init(&mut attr))?;
            Ok(Attr(attr))
        }
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

struct Actions(libc::posix_spawn_file_actions_t);

impl Actions {
    /// # Safety
    /// As for [`Attr::new`]: moved only before the first action is added.
    unsafe fn new() -> io::Result<Self> {
        // SAFETY: init fills the zeroed object.
        unsafe {
            let mut actions = std::mem::zeroed();
            check(libc::posix_spawn_file_actions_init(&mut actions))?;
            Ok(Actions(actions))
        }
    }
}

impl Drop for Actions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`; frees the actions' own allocations.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}
