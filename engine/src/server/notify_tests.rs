//! What the engine queues in its notification outbox, on paused time: a failing step and its
//! run queue `step_failed` and `run_failed` with the event that caused them, a gate judging a
//! success false queues `gate_refused` (not `step_failed`), an approval request queues
//! `approval_requested` for the step's entry, and a pipeline's `sla:` queues `sla_missed`
//! exactly once, across a restart too. Delivery itself is tested end to end (tests/notify.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::advance;

use super::core::Engine;
use super::dispatch::Report;
use super::notify::ApprovalRequested;
use super::testkit;
use crate::clock::Clock;
use crate::store::{Batch, Delivery, PipelineVersion, Trigger};
use weir_core::placement::{Offer, Usage};
use weir_core::run::{InstanceId, Millis};
use weir_core::spec::{NotifyOn, Runtime};

const T0: Millis = Millis(1_799_999_200_000);

const HOOK: &str = "http://127.0.0.1:9/hook";

fn start(e: &Engine, yaml: &str) -> String {
    let parsed = weir_core::spec::load(yaml, &Default::default()).unwrap();
    let version = PipelineVersion {
        name: parsed.name().into(),
        yaml: yaml.into(),
        bundle_digest: None,
        submitted_at: T0,
        file: None,
    };
    e.store.put_pipeline_version("v1", &version).unwrap();
    let run = e.create_run(&mut e.lock(), "v1", &[], Trigger::Manual { user: None }, false, None).unwrap();
    e.commit().unwrap();
    run
}

/// Leases the first ready attempt and reports `report` for it.
fn finish(e: &Engine, run: &str, report: Report) {
    let total = Usage { cpus_milli: 4000, memory_bytes: 1 << 30, gpus: 0 };
    let offer = Offer { labels: Default::default(), total, runtimes: vec![Runtime::Process], capacity: 0, ahead: 0 };
    let (worker, session) = e.register("w", offer, None).unwrap();
    assert!(e.try_lease(&worker).unwrap().is_some(), "an attempt is ready");
    let attempt = e.lock().runs[run].machine.live_attempt(InstanceId(0)).unwrap();
    e.report(&worker, &session, run, attempt, Report::Started, false).unwrap();
    e.report(&worker, &session, run, attempt, report, false).unwrap();
}

fn outbox(e: &Engine) -> Vec<(NotifyOn, String)> {
    let mut out: Vec<(NotifyOn, String)> =
        e.store.deliveries().unwrap().into_iter().map(|d: Delivery| (d.event, d.target.url().to_string())).collect();
    out.sort();
    out
}

fn failing() -> Report {
    Report::Failed { reason: "exit status 3".into(), permanent: false }
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_queues_step_failed_and_run_failed_with_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine_on(dir.path(), Clock::at(T0));
    let yaml = format!(
        "name: p\nnotify:\n  - {{on: [run_failed, run_succeeded], webhook: \"{HOOK}\"}}\nsteps:\n  a:\n    run: 'false'\n    \
         notify:\n      - {{on: [step_failed], slack: \"http://127.0.0.1:9/slack\"}}\n"
    );
    let run = start(&e, &yaml);
    assert!(outbox(&e).is_empty(), "nothing before an event that asks for it");
    finish(&e, &run, failing());
    assert_eq!(
        outbox(&e),
        [(NotifyOn::RunFailed, HOOK.to_string()), (NotifyOn::StepFailed, "http://127.0.0.1:9/slack".to_string())]
    );
    let step = e.store.deliveries().unwrap().into_iter().find(|d| d.event == NotifyOn::StepFailed).unwrap();
    let text: serde_json::Value = serde_json::from_str(&step.body).unwrap();
    assert_eq!(text["text"], format!("weir: step failed: p run {run} step a: exit status 3"));
    let run_failed = e.store.deliveries().unwrap().into_iter().find(|d| d.event == NotifyOn::RunFailed).unwrap();
    let body: serde_json::Value = serde_json::from_str(&run_failed.body).unwrap();
    assert_eq!((body["id"].as_str(), body["run_id"].as_str()), (Some(run_failed.id.as_str()), Some(run.as_str())));
    assert_eq!((body["state"].as_str(), body["message"].as_str()), (Some("failed"), Some("run failed: a failed")));
}

#[tokio::test(start_paused = true)]
async fn a_false_gate_is_gate_refused_not_step_failed() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine_on(dir.path(), Clock::at(T0));
    let yaml = format!(
        "name: p\nsteps:\n  a:\n    run: 'true'\n    gate: \"metrics.acc > 0.9\"\n    notify:\n      - \
         {{on: [gate_refused, step_failed], webhook: \"{HOOK}\"}}\n"
    );
    let run = start(&e, &yaml);
    let metrics = BTreeMap::from([("acc".to_string(), 0.5)]);
    finish(&e, &run, Report::Succeeded { metrics, outputs: Default::default() });
    assert_eq!(outbox(&e), [(NotifyOn::GateRefused, HOOK.to_string())]);
}

#[tokio::test(start_paused = true)]
async fn an_approval_request_queues_approval_requested_for_the_steps_entry() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine_on(dir.path(), Clock::at(T0));
    let yaml = format!(
        "name: p\nsteps:\n  a:\n    run: 'true'\n    notify:\n      - {{on: [approval_requested], webhook: \"{HOOK}\"}}\n"
    );
    let run = start(&e, &yaml);
    let mut batch = Batch::new();
    {
        let st = e.lock();
        let request = ApprovalRequested { instance: InstanceId(0), message: "ship it?" };
        assert!(e.notify_approval_requested(&st.runs[&run], &request, &mut batch, T0).unwrap());
    }
    e.store.write_batch(batch).unwrap();
    let d = e.store.deliveries().unwrap().pop().unwrap();
    let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!((body["event"].as_str(), body["step"].as_str()), (Some("approval_requested"), Some("a")));
    assert_eq!(body["message"], "ship it?");
}

#[tokio::test(start_paused = true)]
async fn sla_missed_is_queued_once_when_the_sla_passes_and_not_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let e = testkit::engine_on(dir.path(), Clock::at(T0));
    let yaml = format!(
        "name: p\nsla: 1h\nnotify:\n  - {{on: [sla_missed], webhook: \"{HOOK}\"}}\nsteps:\n  a:\n    run: sleep 9999\n"
    );
    let run = start(&e, &yaml);
    advance(Duration::from_secs(3599)).await;
    e.tick();
    assert!(outbox(&e).is_empty(), "the sla has not passed");
    advance(Duration::from_secs(1)).await;
    e.tick();
    assert_eq!(outbox(&e), [(NotifyOn::SlaMissed, HOOK.to_string())]);
    advance(Duration::from_secs(60)).await;
    e.tick();
    assert_eq!(outbox(&e).len(), 1, "once");
    assert_eq!(e.store.run(&run).unwrap().unwrap().sla_missed_at, Some(Millis(T0.0 + 3_600_000)));
    // Delivered (gone from the outbox), then a restart: the run is still unfinished and past
    // its sla, and nothing is queued again.
    let id = e.store.deliveries().unwrap()[0].id.clone();
    e.store.remove_delivery(&id).unwrap();
    drop(e);
    let e = testkit::engine_on(dir.path(), Clock::at(Millis(T0.0 + 7_200_000)));
    assert_eq!(e.recover(&super::Resume::All).unwrap(), 1);
    e.tick();
    advance(Duration::from_secs(60)).await;
    e.tick();
    assert!(outbox(&e).is_empty(), "sla_missed is sent once per run");
}
