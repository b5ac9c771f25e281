//! The engine's timing with paused time (issue 13, item 4): lease expiry, step timeouts, retry
//! backoff, orphan deadlines after a restart, cron ticks. Each test runs on tokio's paused
//! clock and the engine's [`Clock`] over it, moves time with `tokio::time::advance` and calls
//! `tick` itself, so what fires when is exact, whatever the machine's load. A jump of the wall
//! clock moves no timer; a restart re-arms the stored deadlines against the new clock.

use std::time::Duration;

use tokio::time::advance;

use super::core::Engine;
use super::testkit;
use crate::clock::Clock;
use crate::store::{PipelineVersion, Trigger};
use weir_core::run::{AttemptId, InstanceId, Millis, StepState};

/// 2027-01-15T08:00:00Z.
const T0: Millis = Millis(1_799_999_200_000);

/// A step with a 20 s timeout and one retry 10 s after a failure.
const TIMED: &str = "name: timed
steps:
  a:
    run: 'true'
    timeout: 20s
    retries: {limit: 1, backoff: 10s}
";

fn start(e: &Engine, yaml: &str) -> String {
    testkit::start_run(e, yaml, T0)
}

fn register(e: &Engine) -> (String, String) {
    testkit::register(e)
}

/// Leases the ready attempt to `worker` and reports it started.
fn lease_and_start(e: &Engine, (worker, session): &(String, String), run: &str) -> AttemptId {
    assert!(e.try_lease(worker).unwrap().is_some(), "an attempt is ready");
    let attempt = e.lock().runs[run].machine.live_attempt(InstanceId(0)).unwrap();
    e.report(worker, session, run, attempt, super::dispatch::Report::Started, false).unwrap();
    attempt
}

/// The state and live attempt number of the run's first step.
fn step(e: &Engine, run: &str) -> (StepState, u32) {
    let st = e.lock();
    let m = &st.runs[run].machine;
    (m.state(InstanceId(0)), m.live_attempt(InstanceId(0)).map_or(0, |a| a.number))
}

fn heartbeat(e: &Engine, (worker, session): &(String, String), run: &str, attempt: AttemptId) {
    e.heartbeat(worker, session, vec![(run.to_string(), attempt)]).unwrap();
}

/// Moves paused time by `secs` and lets the engine fire what is due.
async fn pass(e: &Engine, secs: u64) {
    advance(Duration::from_secs(secs)).await;
    e.tick();
}

#[tokio::test(start_paused = true)]
async fn a_silent_worker_is_lost_exactly_a_lease_timeout_after_it_last_spoke() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine_on(dir.path(), Clock::at(T0)); // lease timeout 30 s
    let run = start(&e, "name: one\nsteps:\n  a: {run: 'true'}\n");
    let w = register(&e);
    let a = lease_and_start(&e, &w, &run);
    pass(&e, 20).await;
    heartbeat(&e, &w, &run, a); // spoke at 20 s
    pass(&e, 30).await;
    assert_eq!(step(&e, &run), (StepState::Running, 1), "silent for exactly the lease timeout: not lost yet");
    pass(&e, 1).await;
    assert_eq!(step(&e, &run), (StepState::Ready, 2), "lost, and the step offered again");
    assert!(e.lock().workers.is_empty(), "the lost worker is forgotten");
    assert_eq!(testkit::metric(&e, "weir_leases_granted_total"), 1.0);
    assert_eq!(testkit::metric(&e, "weir_leases_expired_total"), 1.0, "the loss is on /metrics");
    assert_eq!(testkit::metric(&e, "weir_stale_reports_refused_total"), 0.0);

    // The lost attempt's outcome, arriving late, is refused and counted.
    let w2 = register(&e);
    let late = super::dispatch::Report::Failed { reason: "late".into(), permanent: false };
    assert!(e.report(&w2.0, &w2.1, &run, a, late, false).is_err(), "a stale attempt's report is refused");
    assert_eq!(testkit::metric(&e, "weir_stale_reports_refused_total"), 1.0);
    assert_eq!(step(&e, &run), (StepState::Ready, 2), "and changes nothing");
}

#[tokio::test(start_paused = true)]
async fn a_step_times_out_after_its_timeout_and_retries_after_its_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine_on(dir.path(), Clock::at(T0));
    let run = start(&e, TIMED);
    let w = register(&e);
    let a = lease_and_start(&e, &w, &run); // leased at T0: the deadline is T0 + 20 s
    pass(&e, 19).await;
    heartbeat(&e, &w, &run, a);
    assert_eq!(step(&e, &run), (StepState::Running, 1));
    pass(&e, 1).await;
    assert_eq!(step(&e, &run), (StepState::Pending, 0), "timed out at 20 s; the retry waits its backoff");
    let stops = e.heartbeat(&w.0, &w.1, vec![(run.clone(), a)]).unwrap();
    assert!(stops.iter().any(|(_, s, why)| *s == a && why.contains("timeout after 20s")), "{stops:?}");
    pass(&e, 9).await;
    assert_eq!(step(&e, &run).0, StepState::Pending, "9 s into a 10 s backoff");
    pass(&e, 1).await;
    assert_eq!(step(&e, &run), (StepState::Ready, 2), "the retry is offered when the backoff ends");
}

/// A wall clock stepped forward by an hour (an operator, NTP) while a step runs does not time
/// it out: its deadline is 20 s of monotonic time after its lease.
#[tokio::test(start_paused = true)]
async fn a_forward_jump_of_the_wall_clock_does_not_fire_a_step_timeout_early() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::at(T0);
    let e = testkit::engine_on(dir.path(), clock.clone());
    let run = start(&e, TIMED);
    let w = register(&e);
    lease_and_start(&e, &w, &run);
    clock.jump_wall(3_600_000);
    assert!(clock.calendar().timestamp_millis() as u64 > T0.0 + 3_599_000, "the wall clock did jump");
    pass(&e, 10).await;
    assert_eq!(step(&e, &run), (StepState::Running, 1), "10 s of a 20 s timeout passed, not an hour");
    pass(&e, 10).await;
    assert_eq!(step(&e, &run), (StepState::Pending, 0), "timed out after its 20 s");
    assert!(clock.now().0 < T0.0 + 60_000, "the retry's backoff is armed: the clock keeps to monotonic time");
    pass(&e, 10).await;
    assert_eq!(step(&e, &run), (StepState::Ready, 2), "the backoff took its 10 s");
    // No timer is armed now: the engine's clock follows the wall clock again, so new times
    // and timestamps are the wall's.
    e.tick();
    assert!(clock.now().0 >= T0.0 + 3_630_000, "resynced: {}", clock.now());
}

/// A deadline stored before a restart still holds after it, re-armed against the new clock:
/// the step leased at T0 with a 20 s timeout times out at T0 + 20 s, though the engine came
/// back at T0 + 12 s. Its worker's orphan deadline (from the stored `heard_at`) survives too.
#[tokio::test(start_paused = true)]
async fn stored_deadlines_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine_on(dir.path(), Clock::at(T0));
    let run = start(&e, TIMED);
    let w = register(&e);
    let a = lease_and_start(&e, &w, &run);
    drop(e);
    let e = testkit::engine_on(dir.path(), Clock::at(Millis(T0.0 + 12_000)));
    assert_eq!(e.recover(&super::Resume::All).unwrap(), 1);
    assert!(e.lock().orphans.contains_key(&(run.clone(), a)), "held on recovery: an orphan its worker may claim");
    pass(&e, 7).await;
    assert_eq!(step(&e, &run), (StepState::Running, 1));
    pass(&e, 1).await;
    assert_eq!(step(&e, &run), (StepState::Pending, 0), "timed out at T0 + 20 s, as stored");
}

/// Issue 12, item 7, with paused time: the orphan's deadline comes from when the engine last
/// heard of it (stored), so restarting again and again cannot postpone it. Lease timeout 30 s:
/// the deadline is heard + 30 s + 8.5 s (the stored time's allowed lag).
#[tokio::test(start_paused = true)]
async fn a_restart_storm_cannot_postpone_an_orphans_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine_on(dir.path(), Clock::at(T0));
    let one = "name: one\nsteps:\n  a: {run: 'true'}\n";
    let run = start(&e, one);
    let w = register(&e);
    lease_and_start(&e, &w, &run); // heard at T0
    drop(e);
    for restart in 1..=3 {
        let e = testkit::engine_on(dir.path(), Clock::at(Millis(T0.0 + restart * 10_000)));
        e.recover(&super::Resume::All).unwrap();
        pass(&e, 5).await;
        assert_eq!(step(&e, &run), (StepState::Running, 1), "restart {restart}: still claimable");
    }
    let e = testkit::engine_on(dir.path(), Clock::at(Millis(T0.0 + 38_000)));
    e.recover(&super::Resume::All).unwrap();
    e.tick();
    assert_eq!(step(&e, &run), (StepState::Running, 1), "38 s after it was heard of: its worker may still claim it");
    pass(&e, 1).await;
    assert_eq!(step(&e, &run), (StepState::Ready, 2), "past the stored deadline: re-queued");
}

/// The tick fires a schedule when the clock's calendar reaches the cron time, once; after a
/// downtime with `catchup: true` the missed ticks start oldest first.
#[tokio::test(start_paused = true)]
async fn cron_ticks_fire_from_the_clock_and_catch_up_after_a_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let at = |s: &str| Millis(s.parse::<chrono::DateTime<chrono::Utc>>().unwrap().timestamp_millis() as u64);
    let mut e = testkit::engine_on(dir.path(), Clock::at(at("2027-01-15T09:59:50Z")));
    e.scheduling = true;
    let yaml = "name: cron
schedule: {cron: '0 * * * *', catchup: true, concurrency: allow}
steps:
  a: {run: 'true'}
";
    let parsed = weir_core::spec::load(yaml, &Default::default()).unwrap();
    let version =
        PipelineVersion { name: "cron".into(), yaml: yaml.into(), bundle_digest: None, submitted_at: T0, file: None };
    e.store.put_pipeline_version(parsed.hash(), &version).unwrap();
    e.sync_schedule(&mut e.lock(), "cron", parsed.hash(), e.clock.calendar()).unwrap();
    let runs = |e: &Engine| {
        let mut ids: Vec<String> = e.lock().runs.keys().cloned().collect();
        ids.sort();
        ids
    };
    pass(&e, 9).await;
    assert!(runs(&e).is_empty(), "09:59:59: nothing due");
    pass(&e, 1).await;
    assert_eq!(runs(&e).len(), 1, "10:00:00 fires");
    assert_eq!(testkit::metric(&e, "weir_scheduler_lag_seconds_count"), 1.0);
    assert_eq!(testkit::metric(&e, "weir_scheduler_lag_seconds_sum"), 0.0, "on time: no lag");
    pass(&e, 60).await;
    assert_eq!(runs(&e).len(), 1, "a tick fires once");
    drop(e);

    // Down from 10:01 to 13:30: the ticks of 11:00, 12:00 and 13:00 start at once on restart.
    let mut e = testkit::engine_on(dir.path(), Clock::at(at("2027-01-15T13:30:00Z")));
    e.scheduling = true;
    e.recover(&super::Resume::All).unwrap();
    e.start_schedules(e.clock.calendar()).unwrap();
    e.tick();
    let ids = runs(&e);
    assert_eq!(ids.len(), 4, "the running 10:00 run and three caught-up ticks: {ids:?}");
    // Each caught-up run lags its tick by the downtime: 2.5 h, 1.5 h and 0.5 h.
    assert_eq!(testkit::metric(&e, "weir_scheduler_lag_seconds_count"), 3.0);
    assert_eq!(testkit::metric(&e, "weir_scheduler_lag_seconds_sum"), 4.5 * 3600.0);
}

/// `/metrics` counts an event once it is durable: written but not yet flushed, a run's start
/// is not counted (a failed flush must leave nothing counted that the store may not hold).
#[tokio::test(start_paused = true)]
async fn metrics_count_events_once_they_are_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine_on(dir.path(), Clock::at(T0));
    let yaml = "name: one\nsteps:\n  a: {run: 'true'}\n";
    let version =
        PipelineVersion { name: "one".into(), yaml: yaml.into(), bundle_digest: None, submitted_at: T0, file: None };
    e.store.put_pipeline_version("v1", &version).unwrap();
    e.create_run(&mut e.lock(), "v1", &[], Trigger::Manual { user: None }, false, None).unwrap();
    assert_eq!(testkit::metric(&e, r#"weir_runs_started_total{pipeline="one"}"#), 0.0, "written, not yet durable");
    e.commit().unwrap();
    assert_eq!(testkit::metric(&e, r#"weir_runs_started_total{pipeline="one"}"#), 1.0, "durable: counted");
}

/// A write that fails while a connected worker holds an attempt reloads its run from the
/// store, and the worker's hold survives the reload: the attempt is not made an orphan whose
/// deadline comes from the stored `heard_at` (which the failing store could not refresh), so
/// it is not declared lost and run a second time; the worker's retried report is taken.
#[tokio::test(start_paused = true)]
async fn a_failed_write_leaves_a_connected_workers_attempt_with_it() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine_on(dir.path(), Clock::at(T0));
    let run = start(&e, "name: one\nsteps:\n  a: {run: 'true'}\n");
    let w = register(&e);
    let a = lease_and_start(&e, &w, &run); // stored as heard at T0
    for _ in 0..7 {
        // 35 s of heartbeats whose `heard_at` writes fail.
        advance(Duration::from_secs(5)).await;
        e.store.fail_next_batch.store(true, Relaxed);
        heartbeat(&e, &w, &run, a);
        e.tick();
    }
    e.store.fail_next_batch.store(true, Relaxed);
    let ok = || super::dispatch::Report::Succeeded { metrics: Default::default(), outputs: Default::default() };
    assert!(e.report(&w.0, &w.1, &run, a, ok(), false).is_err(), "the outcome's write failed");
    assert_eq!(step(&e, &run), (StepState::Running, 1), "reloaded from the store");
    assert!(e.lock().orphans.is_empty(), "still held by its worker, not an orphan");
    // Past the deadline an orphan would have had (stored heard_at T0 + 38.5 s).
    heartbeat(&e, &w, &run, a);
    pass(&e, 5).await;
    assert_eq!(step(&e, &run), (StepState::Running, 1), "not lost, not run again");
    e.report(&w.0, &w.1, &run, a, ok(), false).unwrap();
    let stored = e.store.step(&run, InstanceId(0)).unwrap().expect("a step record");
    assert_eq!((stored.state, stored.attempts), (StepState::Succeeded, 1), "ran once");
}
