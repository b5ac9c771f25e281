//! Finding the members of a step's session: a session cannot be signalled as a whole, so its
//! members are found among the pids born after its leader when that range can be trusted (a
//! short step, see [`Born`]), else among all pids in `/proc`, by `getsid` (reading every
//! `/proc/<pid>/stat` instead cost about 17 µs a process, over a millisecond per step on a quiet
//! host). Raw syscalls and stack buffers, no allocation: it runs at least once per step.

use std::io;

/// A step's pids, as far as they can be bounded: the members of a session are descendants of its
/// leader, forked after it, and the kernel hands out pids in increasing order until it wraps at
/// `pid_max`. So while no wrap can have happened, every member's pid lies between the leader's
/// and the namespace's last pid (`/proc/sys/kernel/ns_last_pid`), and those few pids are all the
/// final kill of a short step has to look at, instead of every process on the host (the `/proc`
/// scan was ~5% of a `true` step's profile, and grows with the host's process count).
#[derive(Clone, Copy, Debug)]
pub(super) struct Born {
    pub leader: libc::pid_t,
    /// When the leader started, by the worker's clock.
    pub at: tokio::time::Instant,
}

/// How long after its leader's start a step's pids are trusted to lie in the range above. A
/// wrap needs `pid_max` forks in between (32,768 at the least Linux allows by default); at the
/// tens of thousands of forks per second a busy host reaches, that takes far longer than this.
const RANGE_TRUSTED_FOR: std::time::Duration = std::time::Duration::from_millis(100);

/// The widest range checked pid by pid; wider ones scan `/proc` instead.
const RANGE_MAX: libc::pid_t = 512;

/// Sends `signal` to every live process of session `sid` (except, for any signal but SIGKILL, the
/// members of process group `signalled`, see [`scan`]): looks only at the pids born after the
/// leader when `born` says that range is trustworthy and small (see [`Born`]), else scans `/proc`.
pub(super) fn kill_session(sid: libc::pid_t, signal: i32, signalled: libc::pid_t, born: Option<Born>) {
    if let Some(born) = born
        && born.leader == sid
        && crate::clock::instant().duration_since(born.at) < RANGE_TRUSTED_FOR
    {
        for _ in 0..16 {
            let Some(last) = last_pid() else { break };
            if last < sid || last - sid > RANGE_MAX {
                break; // wrapped, or too many to check one by one: scan
            }
            let mut found = false;
            let mut digits = [0u8; 12];
            for pid in sid + 1..=last {
                // SAFETY: as in `scan`: plain syscalls on pids and local buffers.
                found |= unsafe { kill_member(pid, decimal(pid, &mut digits), sid, signal, signalled) };
            }
            if !found || signal != libc::SIGKILL {
                return;
            }
        }
    }
    scan(sid, signal, signalled);
}

/// The namespace's most recently allocated pid.
fn last_pid() -> Option<libc::pid_t> {
    let mut buf = [0u8; 16];
    // SAFETY: a NUL-terminated path and a local buffer of the stated length.
    let n = unsafe {
        let fd = libc::open(c"/proc/sys/kernel/ns_last_pid".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd == -1 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let text = buf.get(..usize::try_from(n).ok()?)?;
    parse_pid(text.strip_suffix(b"\n").unwrap_or(text))
}

/// `pid` in decimal, in `buf`.
fn decimal(pid: libc::pid_t, buf: &mut [u8; 12]) -> &[u8] {
    let mut at = buf.len();
    let mut n = pid.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Signals `pid` (named `name` in `/proc`) if it is a live member of session `sid` and, for any
/// signal but SIGKILL, not of group `signalled`; true if it signalled it.
///
/// # Safety
/// Only syscalls on pids and local buffers; always safe to call.
unsafe fn kill_member(pid: libc::pid_t, name: &[u8], sid: libc::pid_t, signal: i32, signalled: libc::pid_t) -> bool {
    // SAFETY: getsid, getpgid and kill take plain integers.
    unsafe {
        // getsid, a cheap syscall, filters; only members (or processes a security module keeps
        // getsid from, EPERM) get their costly stat read, which tells a live one from a zombie.
        let candidate = match libc::getsid(pid) {
            -1 => io::Error::last_os_error().raw_os_error() == Some(libc::EPERM),
            of => of == sid,
        };
        if !candidate {
            return false;
        }
        let again = signal != libc::SIGKILL && libc::getpgid(pid) == signalled;
        if !again && session_of(name) == Some(sid) {
            libc::kill(pid, signal);
            return true;
        }
        false
    }
}

/// Sends `signal` to every live process of session `sid` found by scanning `/proc` (a session
/// cannot be signalled as a whole), except, for any signal but SIGKILL, the members of process
/// group `signalled`, which the caller has just signalled with `killpg`: a second SIGTERM would
/// run a step's trap twice. Scans again while it finds any, since a member may
/// fork during a scan; bounded, as a SIGKILLed process can show as running for a moment. Without
/// `/proc` it does nothing.
fn scan(sid: libc::pid_t, signal: i32, signalled: libc::pid_t) {
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
                    found |= kill_member(pid, name, sid, signal, signalled);
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
        let mut buf = [0u8; 12];
        for pid in [1, 9, 10, 4242, 4194304, libc::pid_t::MAX] {
            assert_eq!(decimal(pid, &mut buf), pid.to_string().as_bytes());
        }
        assert!(last_pid().is_some_and(|p| p > 0), "ns_last_pid reads on Linux");
        for bad in [&b""[..], b"0", b"self", b"12a", b"9999999999"] {
            assert_eq!(parse_pid(bad), None);
        }
    }
}
