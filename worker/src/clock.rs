//! The worker's one source of time. Decisions (heartbeat and fencing deadlines, log flushes,
//! waiting for a container) use [`instant`], tokio's monotonic clock, so `tokio::time::pause`
//! moves them in tests; [`wall`] is the system's wall time, read here only, and only to stamp
//! reports and log lines for people: nothing the worker decides depends on it.

use std::time::SystemTime;

/// Monotonic now (tokio's: paused in tests).
pub fn instant() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// The wall time, for timestamps only.
pub fn wall() -> SystemTime {
    SystemTime::now()
}
