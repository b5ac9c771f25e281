//! The watchdog that makes a step's processes die with their worker, and the scan that finds the
//! members of a step's session; the design is in the docs of the parent module. Everything here
//! that runs between fork and exec, or in the watchdog, is async-signal-safe: raw syscalls, stack
//! buffers, no allocation, no lock. This module starts and kills processes; it never waits for a
//! step or reads its output.

use std::io;
use std::os::fd::OwnedFd;

use tokio::process::Command;

/// Arms `cmd` so that its group dies with the worker (see the module docs): sets the leader's
/// parent-death signal and has it start the watchdog before exec. Returns the pipe's write end,
/// to hold until the step is over, and its read end, to close as soon as `cmd` has spawned.
#[cfg(target_os = "linux")]
pub(super) fn guard_group(cmd: &mut Command) -> io::Result<(Option<OwnedFd>, Option<OwnedFd>)> {
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
pub(super) fn guard_group(_cmd: &mut Command) -> io::Result<(Option<OwnedFd>, Option<OwnedFd>)> {
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
pub(super) unsafe fn kill_session(sid: libc::pid_t, signal: i32, skip: libc::pid_t) {
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
