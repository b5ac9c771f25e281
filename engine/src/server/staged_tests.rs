//! A report that leases the next attempt writes the outcome and the lease in one sled
//! transaction (`Staged`, issue 19): what the lease reads of the outcome (the upstream
//! artifacts) comes from the staged batch, both are durable once answered, and an outcome
//! whose cache hits apply more events writes what is staged before them.

use super::core::Engine;
use super::dispatch::Report;
use super::testkit;
use weir_core::run::{AttemptId, InstanceId, Millis, StepState};
use weir_data::artifact::{Entry, Manifest};

/// `a` writes `m.txt`, which `b` gets as its input; `c` follows `b`. `b` is cached.
const CHAIN: &str = "name: chain
steps:
  a: {run: 'true', outputs: [m.txt]}
  b: {run: 'true', needs: [a], cache: true}
  c: {run: 'true', needs: [b]}
";

fn start(e: &Engine) -> String {
    testkit::start_run(e, CHAIN, Millis(1))
}

/// `a`'s success with `m.txt` (stored in the engine's blob store first, as an upload does).
fn a_succeeded(e: &Engine) -> (Report, Manifest) {
    let digest = e.blobs.put_bytes(b"model").unwrap();
    let manifest = Manifest::new(vec![Entry { path: "m.txt".into(), digest, size: 5, executable: false }]).unwrap();
    (Report::Succeeded { metrics: Default::default(), outputs: manifest.clone() }, manifest)
}

fn state(e: &Engine, run: &str, i: u32) -> StepState {
    let st = e.lock();
    let Some(live) = st.runs.get(run) else {
        panic!(
            "{run} not live: {:?} {:?}, reload {:?}",
            st.runs.keys().collect::<Vec<_>>(),
            e.store.run(run),
            st.reload
        )
    };
    live.machine.state(InstanceId(i))
}

#[test]
fn an_outcome_and_the_lease_it_makes_are_one_transaction_and_the_lease_sees_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine(dir.path());
    let run = start(&e);
    let (worker, session) = testkit::register(&e);
    let a = e.try_lease(&worker).unwrap().expect("a is ready");
    let (done, manifest) = a_succeeded(&e);
    let before = e.store.transactions();
    let b = e.report(&worker, &session, &run, a.attempt, done, true).unwrap().expect("b, leased with the answer");
    assert_eq!(e.store.transactions() - before, 1, "the outcome and the lease: one transaction");
    assert_eq!(b.instance_name, "b");
    // Read from the staged batch: the store did not hold `a`'s artifacts yet.
    assert_eq!(b.inputs, [("a".to_string(), manifest.clone())]);
    assert_eq!((state(&e, &run, 0), state(&e, &run, 1)), (StepState::Succeeded, StepState::Leased));
    drop(e);

    // Answered means durable, both of them, in order: after a restart `a` succeeded with its
    // outputs, `b` is still leased to the worker, and the run's events replay.
    let e = testkit::engine(dir.path());
    assert_eq!(e.recover(&super::Resume::All).unwrap(), 1);
    assert_eq!(e.store.artifacts(&run, InstanceId(0)).unwrap(), Some(manifest));
    assert_eq!((state(&e, &run, 0), state(&e, &run, 1)), (StepState::Succeeded, StepState::Leased));
    let seqs: Vec<u64> = e.store.events(&run, 0).unwrap().map(|i| i.unwrap().0).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "dense seqs across the staged events");
}

#[test]
fn cache_hits_write_what_is_staged_before_their_own_events() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine(dir.path());
    // A first run fills `b`'s cache entry.
    let first = start(&e);
    let (worker, session) = testkit::register(&e);
    let mut next = e.try_lease(&worker).unwrap();
    while let Some(a) = next {
        let report = if a.instance_name == "a" { a_succeeded(&e).0 } else { ok() };
        next = e.report(&worker, &session, &first, a.attempt, report, true).unwrap();
    }
    assert_eq!(state_stored(&e, &first, 2), StepState::Succeeded);

    // The second run's `a` ends the same way: `b` is a cache hit, so the same call leases `c`.
    let run = start(&e);
    let a = e.try_lease(&worker).unwrap().expect("a is ready");
    let before = e.store.transactions();
    let c = e.report(&worker, &session, &run, a.attempt, a_succeeded(&e).0, true).unwrap().expect("c");
    assert_eq!(c.instance_name, "c");
    assert_eq!(c.attempt, AttemptId { instance: InstanceId(2), number: 1 });
    // Staged `a`, written when the hit came; `b`'s cached event; `c`'s lease.
    assert_eq!(e.store.transactions() - before, 3);
    assert_eq!(state(&e, &run, 1), StepState::Cached);
    drop(e);
    let e = testkit::engine(dir.path());
    assert_eq!(e.recover(&super::Resume::All).unwrap(), 1);
    assert_eq!(
        (state(&e, &run, 0), state(&e, &run, 1), state(&e, &run, 2)),
        (StepState::Succeeded, StepState::Cached, StepState::Leased)
    );
}

fn ok() -> Report {
    Report::Succeeded { metrics: Default::default(), outputs: Manifest::default() }
}

/// A finished run's step state, from its stored record.
fn state_stored(e: &Engine, run: &str, i: u32) -> StepState {
    e.store.step(run, InstanceId(i)).unwrap().expect("a step record").state
}

#[test]
fn a_staged_write_that_fails_stores_neither_and_the_worker_reports_again() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine(dir.path());
    let run = start(&e);
    let (worker, session) = testkit::register(&e);
    let a = e.try_lease(&worker).unwrap().expect("a is ready");
    let (done, manifest) = a_succeeded(&e);
    e.store.fail_next_batch.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(e.report(&worker, &session, &run, a.attempt, done, true).is_err(), "nothing stored, nothing answered");
    // Reloaded from the store: `a` is still the worker's, `b` is not leased to anyone.
    assert_eq!((state(&e, &run, 0), state(&e, &run, 1)), (StepState::Leased, StepState::Pending));
    let held: Vec<AttemptId> = e.lock().workers[&worker].held.keys().map(|(_, a)| *a).collect();
    assert_eq!(held, [a.attempt]);
    // The worker that holds `a` keeps it (not an orphan to redeliver or expire); `b` waits.
    assert!(e.lock().orphans.is_empty());
    assert!(e.try_lease(&worker).unwrap().is_none(), "a is the worker's; b waits for a");
    // The worker's retry is taken as the first report would have been.
    let (done, _) = a_succeeded(&e);
    let b = e.report(&worker, &session, &run, a.attempt, done, true).unwrap().expect("b");
    assert_eq!((b.instance_name.as_str(), &b.inputs), ("b", &vec![("a".to_string(), manifest)]));
    let held: Vec<AttemptId> = e.lock().workers[&worker].held.keys().map(|(_, a)| *a).collect();
    assert_eq!(held, [b.attempt]);
}

/// Each event is announced once durable with what it changed, as stored: a watcher that has
/// seen the one before needs no read of the store (`WatchRun`). So are the staged events of a
/// report that leased (two events, one write) and an outcome reported alone.
#[test]
fn announcements_carry_the_changes_of_each_event_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine(dir.path());
    let run = start(&e);
    let mut changes = e.changes.subscribe();
    let (worker, session) = testkit::register(&e);
    let a = e.try_lease(&worker).unwrap().expect("a is ready");
    let (done, _) = a_succeeded(&e);
    let b = e.report(&worker, &session, &run, a.attempt, done, true).unwrap().expect("b");
    assert!(e.report(&worker, &session, &run, b.attempt, ok(), false).unwrap().is_none());
    let stored: Vec<(u64, super::super::store::EventRecord)> =
        e.store.events(&run, 0).unwrap().collect::<Result<_, _>>().unwrap();
    let mut announced = Vec::new();
    while let Ok(a) = changes.try_recv() {
        assert_eq!(a.run, run);
        announced.push(a);
    }
    // a leased, a succeeded + b leased (staged), b succeeded (and c ready: the same event).
    assert!(announced.len() >= 4, "{announced:?}");
    for a in &announced {
        let seen = a.event.as_ref().unwrap_or_else(|| panic!("event {} announced without its changes", a.seq));
        let (_, record) = stored.iter().find(|(seq, _)| *seq == a.seq).expect("an announced event is stored");
        assert_eq!((seen.now, &seen.changes), (record.now, &record.changes), "event {}", a.seq);
    }
    let seqs: Vec<u64> = announced.iter().map(|a| a.seq).collect();
    let last = stored.last().unwrap().0;
    assert_eq!(seqs, ((last + 1 - seqs.len() as u64)..=last).collect::<Vec<_>>(), "in order, none missing");
}

/// Whether `notified` has fired, without waiting.
fn fired(notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) -> bool {
    let waker = std::task::Waker::noop();
    notified.poll(&mut std::task::Context::from_waker(waker)).is_ready()
}

/// A report that leases the next attempt itself wakes no `Lease` long-poll when nothing is left
/// for them (a chain's next step): each such wake-up cost the other runtime thread a wake and a
/// wait for the state lock. When something is left (a fan-out), they are woken.
#[test]
fn a_report_that_leases_the_only_ready_attempt_wakes_no_long_poll() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine(dir.path());
    let run = testkit::start_run(
        &e,
        "name: c\nsteps:\n  a: {run: 'true'}\n  b: {run: 'true', needs: [a]}\n  c: {run: 'true', needs: [b]}\n  d: {run: 'true', needs: [b]}\n",
        Millis(1),
    );
    let (worker, session) = testkit::register(&e);
    let a = e.try_lease(&worker).unwrap().expect("a is ready");
    let notified = e.ready_signal.notified();
    let mut notified = std::pin::pin!(notified);
    notified.as_mut().enable();
    let b = e.report(&worker, &session, &run, a.attempt, ok(), true).unwrap().expect("b, leased with a's outcome");
    assert!(!fired(notified.as_mut()), "woken for b, which the report leased itself");
    // b's end makes c and d ready: the report leases one, the other is left for the polls.
    let next = e.report(&worker, &session, &run, b.attempt, ok(), true).unwrap().expect("c or d");
    assert!(["c", "d"].contains(&next.instance_name.as_str()));
    assert!(fired(notified.as_mut()), "not woken though an attempt is left ready");
}
