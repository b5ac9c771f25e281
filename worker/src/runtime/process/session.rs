//! The scan that finds the members of a step's session: a session cannot be signalled as a whole,
//! so its members are found among the pids in `/proc`, by `getsid` (reading every
//! `/proc/<pid>/stat` instead cost about 17 µs a process, over a millisecond per step on a quiet
//! host). Raw syscalls and stack buffers, no allocation: it runs at least once per step.

use std::io;

/// Sends `signal` to every live process of session `sid`, found by scanning `/proc` (a session
/// cannot be signalled as a whole), except, for any signal but SIGKILL, the members of process
/// group `signalled`, which the caller has just signalled with `killpg`: a second SIGTERM would
/// run a step's trap twice. Scans again while it finds any, since a member may
/// fork during a scan; bounded, as a SIGKILLed process can show as running for a moment. Without
/// `/proc` it does nothing.
pub(super) fn kill_session(sid: libc::pid_t, signal: i32, signalled: libc::pid_t) {
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
                    // getsid, a cheap syscall, filters; only members (or processes a security
                    // module keeps getsid from, EPERM) get their costly stat read, which tells a
                    // live one from a zombie.
                    let candidate = match libc::getsid(pid) {
                        -1 => io::Error::last_os_error().raw_os_error() == Some(libc::EPERM),
                        of => of == sid,
                    };
                    let again = signal != libc::SIGKILL && libc::getpgid(pid) == signalled;
                    if candidate && !again && session_of(name) == Some(sid) {
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
fn parse_session(stat: &[u8]) -> Option<libc::pid_t> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat[close + 1..].split(u8::is_ascii_whitespace).filter(|f| !f.is_empty());
    if matches!(fields.next()?, b"Z" | b"X") {
        return None;
    }
    parse_pid(fields.nth(2)?)
}

/// A positive decimal pid, from bytes.
fn parse_pid(digits: &[u8]) -> Option<libc::pid_t> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pid = digits.iter().fold(0, |n: libc::pid_t, &d| n * 10 + libc::pid_t::from(d - b'0'));
    (pid > 0).then_some(pid)
}

#[cfg(test)]
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
