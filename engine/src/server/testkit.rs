//! Test support for the engine's own unit tests (compiled only for tests).

use std::path::Path;
use std::time::{Duration, Instant};

use super::core::{Engine, Terms};
use crate::clock::Clock;
use crate::store::{Error, Store};

/// An engine on `dir`'s store (`dir/db`, `dir/artifacts`), firing no schedules. Reopening right
/// after a drop retries while sled's background flusher, which holds the file lock a moment
/// longer, winds down.
pub(super) fn engine(dir: &Path) -> Engine {
    engine_on(dir, Clock::system())
}

/// [`engine`] taking its time from `clock` (a test clock moved by hand or by paused time).
pub(super) fn engine_on(dir: &Path, clock: Clock) -> Engine {
    // A real-time bound on a real file lock, released by sled's own thread: never paused.
    let start = Instant::now();
    let store = loop {
        match Store::open(&dir.join("db")) {
            Err(Error::Locked { .. }) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => break other.unwrap(),
        }
    };
    let blobs = weir_data::artifact::Store::open(&dir.join("artifacts")).unwrap();
    let terms = Terms {
        lease_timeout: Duration::from_secs(30),
        heartbeat_interval: Duration::from_secs(5),
        max_wait: Duration::from_secs(1),
    };
    Engine::new(store, blobs, terms, clock)
}

/// A sample's value in what `/metrics` shows of `e` (OpenMetrics names: a counter's sample
/// ends in `_total`, a histogram's in `_count` and `_sum`); 0 for a series not yet created.
pub(super) fn metric(e: &Engine, series: &str) -> f64 {
    let text = e.metrics.render(e);
    text.lines()
        .find(|l| l.split_once(' ').is_some_and(|(name, _)| name == series))
        .map_or(0.0, |l| l.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number"))
}
