//! The Linux capabilities a docker step's container may keep (`capabilities:`), as data: the
//! set every container gets unless its step says otherwise ([`DEFAULT`]), the only ones a step
//! may ask for ([`SAFE`]), and how a name written in a pipeline is read ([`parse`]). The worker
//! drops every capability and adds back these names (`cap_drop: ALL`), so what is not listed
//! here can never reach a step. Pure: no I/O.
//!
//! Why these: [`DEFAULT`] is what ordinary programs running as root in a container use (install
//! files and set their owners and modes, switch user, signal their own children, listen on a
//! port below 1024), without Docker's NET_RAW (raw packets: ARP and DNS spoofing on the bridge),
//! MKNOD, AUDIT_WRITE, SETFCAP, SETPCAP and SYS_CHROOT. [`SAFE`] adds those back except NET_RAW,
//! because each is confined by the container's other walls (the device cgroup, no new
//! privileges, its own mount namespace). Everything else (SYS_ADMIN, NET_ADMIN, SYS_PTRACE,
//! SYS_MODULE, DAC_READ_SEARCH, ...) reaches past the container and is refused at validation.
//! Steps run as the worker's uid: for a non-root worker these only bound what a step could
//! regain, and `no-new-privileges` already keeps it from regaining any.

/// The capabilities of a step's container when its step names none.
pub const DEFAULT: &[&str] =
    &["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"];

/// Every capability a step may ask for, sorted.
pub const SAFE: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Every Linux capability (without `CAP_`), to tell a refused name from a misspelt one.
const ALL: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// Why a name written in `capabilities:` is not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A real capability outside [`SAFE`].
    Unsafe(&'static str),
    /// No such capability.
    Unknown,
}

/// Reads one name as a pipeline may write it (`chown`, `CHOWN`, `CAP_CHOWN`) into its canonical
/// form from [`SAFE`].
pub fn parse(name: &str) -> Result<&'static str, Refusal> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if let Some(safe) = SAFE.iter().find(|s| **s == bare) {
        return Ok(safe);
    }
    match ALL.iter().find(|s| **s == bare) {
        Some(known) => Err(Refusal::Unsafe(known)),
        None => Err(Refusal::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_case_and_prefix_free() {
        let check = |name: &str, want: Result<&str, Refusal>| assert_eq!(parse(name), want, "{name}");
        check("chown", Ok("CHOWN"));
        check("CAP_SYS_CHROOT", Ok("SYS_CHROOT"));
        check(" net_bind_service ", Ok("NET_BIND_SERVICE"));
        check("SYS_ADMIN", Err(Refusal::Unsafe("SYS_ADMIN")));
        check("cap_net_raw", Err(Refusal::Unsafe("NET_RAW")));
        check("NET_ADMIN", Err(Refusal::Unsafe("NET_ADMIN")));
        check("ALL", Err(Refusal::Unknown));
        check("CHOWNN", Err(Refusal::Unknown));
    }

    #[test]
    fn the_default_is_safe_and_the_safe_set_real() {
        assert!(DEFAULT.iter().all(|c| SAFE.contains(c)));
        assert!(SAFE.iter().all(|c| ALL.contains(c)));
        assert!(SAFE.windows(2).all(|w| w[0] < w[1]), "sorted");
        for never in ["SYS_ADMIN", "NET_ADMIN", "NET_RAW", "SYS_PTRACE", "SYS_MODULE", "DAC_READ_SEARCH"] {
            assert!(!SAFE.contains(&never), "{never}");
        }
    }
}
