//! What the worker's host offers, as Register reports it: its name, cores and memory. Read from
//! the OS once at start; nothing here is cached or watched.

/// The host name, or `worker` when the OS will not say.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "worker".to_string(),
    }
}

/// How many steps fit by default: the cores this process may use.
pub fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// The memory of the host in bytes, from `/proc/meminfo`; 0 when unknown.
pub(crate) fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| mem_total(&s)).unwrap_or(0)
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total() {
        assert_eq!(mem_total("MemTotal:       16318540 kB\nMemFree: 1 kB\n"), Some(16318540 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots kB\n"), None);
        assert!(!hostname().is_empty());
        assert!(cores() >= 1);
    }
}
