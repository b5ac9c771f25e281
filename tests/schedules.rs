//! Schedules through a real server, real workers running real processes and the gRPC API: a
//! per-second schedule producing runs with trigger cron, the schedule's params and
//! `WEIR_SCHEDULED_TIME`; `forbid` and `replace` with a slow step; pause and resume; removal by
//! re-submitting; backfill over a range, one at a time under `forbid`. The exact rules (downtime,
//! clocks that jump, crashes between writes) are tested against fixed instants in the engine's
//! scheduler module; the kill -9 restart test is `cli/tests/schedules_restart.rs`.

use std::time::{Duration, Instant};

use weir_proto::v1::{self, BackfillOutcome, RunState};
use weir_tests::Cluster;

const MINUTE: Duration = Duration::from_secs(60);

/// Every run of `pipeline`, by id.
async fn runs(c: &mut Cluster, pipeline: &str) -> Vec<v1::Run> {
    let req = v1::ListRunsRequest { pipeline: pipeline.into(), page_size: 1000, ..Default::default() };
    let mut runs = c.client.list_runs(req).await.expect("list runs").into_inner().runs;
    runs.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    runs
}

async fn schedule(c: &mut Cluster, pipeline: &str) -> v1::ScheduleInfo {
    let req = v1::ListSchedulesRequest { pipeline: pipeline.into() };
    c.client.list_schedules(req).await.expect("list schedules").into_inner().schedules.remove(0)
}

/// Polls until `pred` holds for the pipeline's runs (at most `limit`).
async fn wait_runs(
    c: &mut Cluster,
    pipeline: &str,
    limit: Duration,
    pred: impl Fn(&[v1::Run]) -> bool,
) -> Vec<v1::Run> {
    let start = Instant::now();
    loop {
        let got = runs(c, pipeline).await;
        if pred(&got) {
            return got;
        }
        assert!(start.elapsed() < limit, "not reached after {limit:?}: {got:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(runs: &[v1::Run], state: RunState) -> usize {
    runs.iter().filter(|r| r.state() == state).count()
}

fn seconds(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map_or(0, |t| t.seconds)
}

/// The tick's instant as the run id spells it: `YYYYMMDD-HHMMSS` in UTC.
fn stamp(t: &Option<prost_types::Timestamp>) -> String {
    let t = chrono::DateTime::from_timestamp(seconds(t), 0).expect("a time");
    t.format("%Y%m%d-%H%M%S").to_string()
}

fn rfc3339(t: &Option<prost_types::Timestamp>) -> String {
    let t = chrono::DateTime::from_timestamp(seconds(t), 0).expect("a time");
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_second_schedule_produces_runs_through_a_real_server() {
    let mut c = Cluster::start(1, 4).await;
    let yaml = "name: every-second\nparams:\n  who: {type: string, default: nobody}\n\
                schedule:\n  cron: \"* * * * * *\"\n  concurrency: allow\n  params: {who: cron}\n\
                steps:\n  hello:\n    run: echo \"tick=$WEIR_SCHEDULED_TIME who=$WEIR_PARAM_WHO\"\n";
    c.submit(yaml, None).await;
    let got = wait_runs(&mut c, "every-second", MINUTE, |r| count(r, RunState::Succeeded) >= 3).await;
    for run in got.iter().filter(|r| r.state() == RunState::Succeeded) {
        assert_eq!(run.trigger(), v1::Trigger::Schedule);
        assert!(!run.backfill);
        assert_eq!(run.run_id, format!("every-second-{}-cron", stamp(&run.scheduled_time)), "{run:?}");
        assert_eq!(run.params["who"], "cron");
        let logs = c.logs(&run.run_id, "hello").await;
        assert_eq!(logs.trim(), format!("tick={} who=cron", rfc3339(&run.scheduled_time)));
    }
    let ticks: Vec<i64> = got.iter().map(|r| seconds(&r.scheduled_time)).collect();
    assert!(ticks.windows(2).all(|w| w[0] < w[1]), "one run per tick: {ticks:?}");
    let s = schedule(&mut c, "every-second").await;
    assert_eq!((s.cron.as_str(), s.timezone.as_str(), s.paused), ("* * * * * *", "UTC", false));
    assert_eq!(s.next_fires.len(), 3);
    assert!(s.last_run_id.starts_with("every-second-"), "{s:?}");

    // Paused: no tick runs; resumed: ticks run again.
    c.client.pause_schedule(v1::PauseScheduleRequest { pipeline: "every-second".into() }).await.expect("pause");
    let paused = runs(&mut c, "every-second").await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(runs(&mut c, "every-second").await.len(), paused, "a paused schedule fired");
    let resumed = c.client.resume_schedule(v1::ResumeScheduleRequest { pipeline: "every-second".into() }).await;
    let resumed = resumed.expect("resume").into_inner().schedule.expect("the schedule");
    assert!(!resumed.paused);
    assert!(resumed.skipped.iter().any(|k| k.reason == "paused" && k.count >= 2), "{:?}", resumed.skipped);
    wait_runs(&mut c, "every-second", MINUTE, |r| r.len() >= paused + 2).await;

    // Re-submitted without a schedule: nothing fires after the submission is acknowledged.
    c.submit("name: every-second\nsteps:\n  hello: {run: 'true'}\n", None).await;
    let after = runs(&mut c, "every-second").await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(runs(&mut c, "every-second").await.len(), after, "a removed schedule fired");
    let listed = c.client.list_schedules(v1::ListSchedulesRequest::default()).await.unwrap().into_inner();
    assert!(listed.schedules.is_empty(), "{listed:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_ticks_while_a_slow_run_runs_and_replace_cancels_it() {
    let mut c = Cluster::start(1, 4).await;
    let forbid = "name: forbid\nschedule:\n  cron: \"* * * * * *\"\n  concurrency: forbid\n\
                  steps:\n  slow: {run: sleep 2.5}\n";
    c.submit(forbid, None).await;
    let got = wait_runs(&mut c, "forbid", MINUTE, |r| count(r, RunState::Succeeded) >= 2).await;
    // Never two at once: each run was created after the previous one finished.
    let done: Vec<&v1::Run> = got.iter().filter(|r| r.finished_at.is_some()).collect();
    for w in got.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let Some(end) = &a.finished_at else { panic!("{} is still running while {} exists", a.run_id, b.run_id) };
        let start = b.created_at.as_ref().unwrap();
        assert!((start.seconds, start.nanos) >= (end.seconds, end.nanos), "{a:?} overlaps {b:?}");
    }
    assert!(done.len() >= 2);
    let s = schedule(&mut c, "forbid").await;
    let forbidden: u64 = s.skipped.iter().filter(|k| k.reason.contains("forbid")).map(|k| k.count).sum();
    assert!(forbidden >= 2, "2.5 s steps every second skip ticks: {:?}", s.skipped);
    c.client.pause_schedule(v1::PauseScheduleRequest { pipeline: "forbid".into() }).await.expect("pause");

    let replace = "name: replace\nschedule:\n  cron: \"* * * * * *\"\n  concurrency: replace\n\
                   steps:\n  slow: {run: sleep 60}\n";
    c.submit(replace, None).await;
    let got = wait_runs(&mut c, "replace", MINUTE, |r| count(r, RunState::Cancelled) >= 2).await;
    let live = got.iter().filter(|r| matches!(r.state(), RunState::Running | RunState::Queued)).count();
    assert!(live <= 1, "replace leaves one run: {got:#?}");
    // The replaced run's step was stopped, not left running.
    let first = c.get(&got[0].run_id).await;
    assert_eq!(first.steps[0].state(), v1::StepState::Cancelled, "{first:#?}");
    c.client.pause_schedule(v1::PauseScheduleRequest { pipeline: "replace".into() }).await.expect("pause");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_creates_one_run_per_tick_once_and_one_at_a_time_under_forbid() {
    let mut c = Cluster::start(1, 4).await;
    let yaml = "name: nightly\nschedule:\n  cron: \"0 2 * * *\"\n  timezone: Europe/Berlin\n  concurrency: forbid\n\
                steps:\n  train: {run: echo \"for $WEIR_SCHEDULED_TIME\"; sleep 0.3}\n";
    c.submit(yaml, None).await;
    let req = |dry_run| v1::BackfillRequest {
        pipeline: "nightly".into(),
        from: "2026-11-01".into(),
        to: "2026-11-03".into(),
        dry_run,
    };
    let dry = c.client.backfill(req(true)).await.expect("dry run").into_inner().ticks;
    assert!(runs(&mut c, "nightly").await.is_empty(), "a dry run creates nothing");
    let ticks = c.client.backfill(req(false)).await.expect("backfill").into_inner().ticks;
    let outcomes: Vec<BackfillOutcome> = ticks.iter().map(|t| t.outcome()).collect();
    assert_eq!(outcomes, [BackfillOutcome::Started, BackfillOutcome::Queued, BackfillOutcome::Queued]);
    assert_eq!(dry.iter().map(|t| t.outcome()).collect::<Vec<_>>(), outcomes);
    // 02:00 in Berlin is 01:00 UTC in November.
    let ids: Vec<&str> = ticks.iter().map(|t| t.run_id.as_str()).collect();
    assert_eq!(ids, ["nightly-20261101-010000-cron", "nightly-20261102-010000-cron", "nightly-20261103-010000-cron"]);

    let got = wait_runs(&mut c, "nightly", MINUTE, |r| count(r, RunState::Succeeded) == 3).await;
    for w in got.windows(2) {
        let (end, start) = (w[0].finished_at.as_ref().unwrap(), w[1].created_at.as_ref().unwrap());
        assert!((start.seconds, start.nanos) >= (end.seconds, end.nanos), "backfill runs overlapped: {got:#?}");
    }
    for run in &got {
        assert!(run.backfill && run.trigger() == v1::Trigger::Schedule, "{run:?}");
        let logs = c.logs(&run.run_id, "train").await;
        assert_eq!(logs.trim(), format!("for {}", rfc3339(&run.scheduled_time)));
    }
    // Again over an overlapping range: the ticks that have runs are not run twice.
    let again = v1::BackfillRequest { from: "2026-11-02T00:00:00Z".into(), to: "2026-11-04".into(), ..req(false) };
    let ticks = c.client.backfill(again).await.expect("backfill").into_inner().ticks;
    let outcomes: Vec<BackfillOutcome> = ticks.iter().map(|t| t.outcome()).collect();
    assert_eq!(outcomes, [BackfillOutcome::Exists, BackfillOutcome::Exists, BackfillOutcome::Started]);
    let got = wait_runs(&mut c, "nightly", MINUTE, |r| count(r, RunState::Succeeded) == 4).await;
    assert_eq!(got.len(), 4);
    // A bad range says what is wrong.
    let bad = v1::BackfillRequest { from: "last week".into(), ..req(false) };
    let err = c.client.backfill(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("RFC 3339"), "{}", err.message());
    c.stop().await;
}
