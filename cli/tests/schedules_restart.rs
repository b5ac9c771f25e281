//! `weir server` fires a per-second schedule, is killed with SIGKILL, stays down for four
//! seconds and is restarted on the same data folder and port. A worker agent in this test
//! process runs the steps throughout; every step appends its `WEIR_SCHEDULED_TIME` to a file.
//! No tick may run twice (in the file or as runs), and the ticks missed while the server was
//! down must follow `catchup`: with `false` at most one of them runs and the rest are recorded
//! as skipped; with `true` every one of them runs.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_worker::{Agent, AgentConfig};

mod common;
use common::{client, free_port};

type Client = WeirClientClient<tonic::transport::Channel>;

fn server(data: &Path, port: u16) -> Child {
    common::server(data, port, &["--lease-timeout", "3s"])
}

async fn runs(c: &mut Client, pipeline: &str) -> Vec<v1::Run> {
    let req = v1::ListRunsRequest { pipeline: pipeline.into(), page_size: 1000, ..Default::default() };
    c.list_runs(req).await.expect("list runs").into_inner().runs
}

async fn wait_runs(c: &mut Client, pipeline: &str, what: &str, pred: impl Fn(&[v1::Run]) -> bool) -> Vec<v1::Run> {
    let start = Instant::now();
    loop {
        let got = runs(c, pipeline).await;
        if pred(&got) {
            return got;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "{what}: not reached: {got:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tick(run: &v1::Run) -> i64 {
    run.scheduled_time.as_ref().expect("a scheduled run has its tick").seconds
}

fn rfc3339(seconds: i64) -> String {
    DateTime::from_timestamp(seconds, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

struct Outcome {
    /// The ticks that have runs, in order.
    ticks: Vec<i64>,
    /// The ticks strictly between the kill and the restart: missed for certain.
    down: Vec<i64>,
    schedule: v1::ScheduleInfo,
}

async fn kill_9_and_restart(catchup: bool) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let counter = dir.path().join("counter");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let name = if catchup { "catchup-on" } else { "catchup-off" };
    let yaml = format!(
        "name: {name}\nschedule:\n  cron: \"* * * * * *\"\n  catchup: {catchup}\n  concurrency: allow\n\
         steps:\n  s:\n    run: echo $WEIR_SCHEDULED_TIME >> {}\n",
        counter.display()
    );

    let mut engine = server(&data, port);
    let stop = CancellationToken::new();
    let mut config = AgentConfig::new(url.clone(), dir.path().join("worker"));
    config.capacity = 8;
    let agent = tokio::spawn(Agent::new(config).run(stop.clone()));
    let mut c = client(&url).await;
    let header = v1::SubmitPipelineHeader { yaml, file_name: "p.yaml".into(), ..Default::default() };
    let msgs = vec![v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) }];
    c.submit_pipeline(tokio_stream::iter(msgs)).await.unwrap();
    wait_runs(&mut c, name, "two ticks before the kill", |r| r.len() >= 2).await;

    engine.kill().unwrap(); // SIGKILL, whatever the scheduler was doing
    engine.wait().unwrap();
    let killed: DateTime<Utc> = Utc::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarted: DateTime<Utc> = Utc::now();
    let mut engine = server(&data, port);
    let mut c = client(&url).await;
    let after = restarted.timestamp() + 1;
    wait_runs(&mut c, name, "two ticks after the restart", |r| r.iter().filter(|r| tick(r) > after).count() >= 2).await;
    c.pause_schedule(v1::PauseScheduleRequest { pipeline: name.into() }).await.expect("pause");
    let all = wait_runs(&mut c, name, "every run finished", |r| {
        r.iter().all(|r| matches!(r.state(), v1::RunState::Succeeded | v1::RunState::Failed | v1::RunState::Cancelled))
    })
    .await;
    let schedule = c.list_schedules(v1::ListSchedulesRequest { pipeline: name.into() }).await.unwrap();
    let schedule = schedule.into_inner().schedules.remove(0);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    engine.kill().unwrap();
    engine.wait().unwrap();

    for run in &all {
        assert_eq!(run.state(), v1::RunState::Succeeded, "{run:?}");
        let stamp = DateTime::from_timestamp(tick(run), 0).unwrap().format("%Y%m%d-%H%M%S");
        assert_eq!(run.run_id, format!("{name}-{stamp}-cron"));
    }
    let mut ticks: Vec<i64> = all.iter().map(tick).collect();
    ticks.sort();
    let written: Vec<String> = std::fs::read_to_string(&counter).unwrap().lines().map(str::to_string).collect();
    let distinct: BTreeSet<&String> = written.iter().collect();
    assert_eq!(distinct.len(), written.len(), "a tick's step ran twice: {written:?}");
    let expected: Vec<String> = ticks.iter().map(|t| rfc3339(*t)).collect();
    let mut sorted = written.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "every run's step ran once, and no other");
    let first_down = killed.timestamp() + 1;
    let last_down = restarted.timestamp() - 1;
    let down: Vec<i64> = (first_down..=last_down).collect();
    assert!(down.len() >= 3, "the server was down for at least three ticks: {down:?}");
    Outcome { ticks, down, schedule }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_catchup_false_runs_only_the_latest_missed_tick() {
    let o = kill_9_and_restart(false).await;
    let ran: Vec<&i64> = o.ticks.iter().filter(|t| o.down.contains(t)).collect();
    assert!(ran.len() <= 1, "catchup: false ran {ran:?} of the missed ticks {:?}", o.down);
    let skipped: u64 = o.schedule.skipped.iter().filter(|k| k.reason.contains("catchup: false")).map(|k| k.count).sum();
    assert!(
        skipped as usize >= o.down.len() - 1,
        "missed ticks {:?} are recorded as skipped: {:?}",
        o.down,
        o.schedule.skipped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_catchup_true_runs_every_missed_tick() {
    let o = kill_9_and_restart(true).await;
    for t in &o.down {
        assert!(o.ticks.contains(t), "missed tick {} did not run: {:?}", rfc3339(*t), o.ticks);
    }
    // And no tick was lost at any point: one run per second from the first to the last.
    let (first, last) = (o.ticks[0], o.ticks[o.ticks.len() - 1]);
    assert_eq!(o.ticks, (first..=last).collect::<Vec<_>>());
    assert!(o.schedule.skipped.is_empty(), "{:?}", o.schedule.skipped);
}
