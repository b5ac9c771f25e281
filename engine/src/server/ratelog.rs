//! Rate-limited error logging: a failure that repeats (a full disk fails every write, ten times
//! a second) is logged once per [`INTERVAL`] per distinct message, the next line carrying how
//! many repeats were left out. [`RateLog`] only decides; callers log with `tracing` as usual.
//! Time is tokio's (paused in tests with the rest of the engine).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// At most one line per distinct message this often.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// Distinct messages remembered at most; past it the oldest are forgotten.
const CAPACITY: usize = 1024;

/// When each distinct message was last logged and how many repeats were left out since.
#[derive(Default)]
pub(crate) struct RateLog {
    seen: HashMap<String, (Instant, u64)>,
}

impl RateLog {
    /// Whether a line for `key` may be logged at `now`: `Some(repeats left out since the last
    /// line)` if so, `None` if this one is left out.
    pub(crate) fn admit(&mut self, key: &str, now: Instant) -> Option<u64> {
        if let Some((last, suppressed)) = self.seen.get_mut(key) {
            if now.duration_since(*last) < INTERVAL {
                *suppressed += 1;
                return None;
            }
            let left_out = *suppressed;
            *last = now;
            *suppressed = 0;
            return Some(left_out);
        }
        if self.seen.len() >= CAPACITY {
            self.seen.retain(|_, (last, _)| now.duration_since(*last) < INTERVAL);
            if self.seen.len() >= CAPACITY {
                self.seen.clear();
            }
        }
        self.seen.insert(key.to_string(), (now, 0));
        Some(0)
    }
}

/// The process-wide limiter: `Some(repeats left out)` when a line for `key` may be logged now.
pub(crate) fn admit(key: &str) -> Option<u64> {
    static LOG: OnceLock<Mutex<RateLog>> = OnceLock::new();
    let mut log = LOG.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    log.admit(key, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_message_per_interval_then_the_count_of_repeats() {
        let mut log = RateLog::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(log.admit("no space", at(0)), Some(0));
        // Ten a second for the whole interval: all left out.
        for n in 1..100 {
            assert_eq!(log.admit("no space", at(n * 100)), None);
        }
        assert_eq!(log.admit("other", at(500)), Some(0), "a distinct message has its own budget");
        assert_eq!(log.admit("no space", at(10_000)), Some(99));
        assert_eq!(log.admit("no space", at(10_001)), None);
        assert_eq!(log.admit("no space", at(25_000)), Some(1));
    }

    #[test]
    fn memory_stays_bounded_by_distinct_messages() {
        let mut log = RateLog::default();
        let t0 = Instant::now();
        for n in 0..(3 * CAPACITY) {
            assert_eq!(log.admit(&format!("run {n}"), t0), Some(0));
        }
        assert!(log.seen.len() <= CAPACITY);
    }
}
