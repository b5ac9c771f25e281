//! Test support for the engine's own unit tests (compiled only for tests).

use std::path::Path;
use std::time::{Duration, Instant};

use super::core::{Engine, Terms};
use crate::clock::Clock;
use crate::store::{Error, PipelineVersion, Store, Trigger};
use weir_core::placement::{Offer, Usage};
use weir_core::run::Millis;
use weir_core::spec::Runtime;

/// An engine on `dir`'s store (`dir/db`, `dir/artifacts`), firing no schedules. Reopening right
/// after a drop retries while sled's background flusher, which holds the file lock a moment
/// longer, winds down.
pub(crate) fn engine(dir: &Path) -> Engine {
    engine_on(dir, Clock::system())
}

/// [`engine`] taking its time from `clock` (a test clock moved by hand or by paused time).
pub(crate) fn engine_on(dir: &Path, clock: Clock) -> Engine {
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

/// Stores `yaml` as version `v1`, submitted at `at`, and starts a run of it (committed).
pub(crate) fn start_run(e: &Engine, yaml: &str, at: Millis) -> String {
    let parsed = weir_core::spec::load(yaml, &Default::default()).unwrap_or_else(|d| panic!("{d:?}"));
    let version = PipelineVersion {
        name: parsed.name().into(),
        yaml: yaml.into(),
        bundle_digest: None,
        submitted_at: at,
        file: None,
    };
    e.store.put_pipeline_version("v1", &version).unwrap();
    let run = e.create_run(&mut e.lock(), "v1", &[], Trigger::Manual { user: None }, false, None).unwrap();
    e.commit().unwrap();
    run
}

/// Registers a worker offering 4 cpus, 1 GiB and the process runtime, with no bound on how
/// many attempts it holds: its id and session.
pub(crate) fn register(e: &Engine) -> (String, String) {
    let total = Usage { cpus_milli: 4000, memory_bytes: 1 << 30, gpus: 0 };
    let offer = Offer { labels: Default::default(), total, runtimes: vec![Runtime::Process], capacity: 0, ahead: 0 };
    e.register("w", offer, None).unwrap()
}
