//! Losing a worker for real: the `weir-worker` binary as a child process against a real engine
//! server (in this test process, on 127.0.0.1:0), then `kill -9` or `SIGSTOP` of the worker
//! while its step runs. The step must finish on a second worker as attempt 2, the dead
//! worker's step processes must not outlive it, and a frozen worker that wakes up late must
//! have its report refused (the stored output is attempt 2's, not its own).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use weir_engine::server::{self, ServerConfig};
use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;

const STEP: &str = "name: lost
steps:
  work:
    run: |
      echo $WEIR_ATTEMPT $$ >> {log}
      sleep {secs}
      echo $WEIR_ATTEMPT > $WEIR_OUTPUTS/attempt.txt
    outputs: [attempt.txt]
";

fn worker(url: &str, dir: &Path, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_weir-worker"))
        .args(["--engine", url, "--capacity", "1", "--name", name, "--grace", "1"])
        .arg("--work-dir")
        .arg(dir.join(name))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weir-worker")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

struct Setup {
    dir: tempfile::TempDir,
    server: server::Server,
    client: WeirClientClient<Channel>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().join("engine"), "127.0.0.1:0".parse().unwrap());
    config.terms.lease_timeout = Duration::from_millis(1500);
    config.terms.heartbeat_interval = Duration::from_millis(250);
    config.tick = Duration::from_millis(20);
    let server = server::start(config).await.unwrap();
    let client = WeirClientClient::connect(server.url()).await.unwrap();
    Setup { dir, server, client }
}

async fn start(s: &mut Setup, secs: u32) -> String {
    let log = s.dir.path().join("attempts.log");
    let yaml = STEP.replace("{log}", &log.display().to_string()).replace("{secs}", &secs.to_string());
    let header = v1::SubmitPipelineHeader { yaml, file_name: "p.yaml".into(), ..Default::default() };
    let msgs = vec![v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) }];
    let version =
        s.client.submit_pipeline(tonic::codegen::tokio_stream::iter(msgs)).await.unwrap().into_inner().version;
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Version(version)),
        params: HashMap::new(),
    };
    s.client.start_run(req).await.unwrap().into_inner().run.unwrap().run_id
}

async fn get(s: &mut Setup, run: &str) -> v1::GetRunResponse {
    s.client.get_run(v1::GetRunRequest { run_id: run.into(), ..Default::default() }).await.unwrap().into_inner()
}

/// Waits until the attempts log has `n` lines; returns them as (attempt, pid).
async fn attempts(s: &Setup, n: usize) -> Vec<(u32, i32)> {
    let path = s.dir.path().join("attempts.log");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<(u32, i32)> = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, p)| (a.parse().unwrap(), p.parse().unwrap()))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "only {} attempts started: {lines:?}", lines.len());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn finish(s: &mut Setup, run: &str) -> v1::GetRunResponse {
    let start = Instant::now();
    loop {
        let got = get(s, run).await;
        if got.run.as_ref().unwrap().state() == v1::RunState::Succeeded {
            return got;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "run did not succeed: {:#?}", got.steps);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stored_attempt(s: &mut Setup, run: &str) -> String {
    let req = v1::GetArtifactRequest { run_id: run.into(), step: "work".into(), path: "attempt.txt".into() };
    let mut stream = s.client.get_artifact(req).await.unwrap().into_inner();
    let mut bytes = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        if let Some(v1::get_artifact_response::Part::Chunk(c)) = m.part {
            bytes.extend(c);
        }
    }
    String::from_utf8(bytes).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_worker_mid_step_runs_the_step_again_elsewhere_and_leaves_no_orphan() {
    let mut s = setup().await;
    let run = start(&mut s, 3).await;
    let mut first = worker(&s.server.url(), s.dir.path(), "first");
    let started = attempts(&s, 1).await;
    assert_eq!(started[0].0, 1);
    let mut second = worker(&s.server.url(), s.dir.path(), "second");
    signal(&first, libc::SIGKILL);
    let _ = first.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(started[0].1) {
        assert!(Instant::now() < deadline, "the dead worker's step (pid {}) is still running", started[0].1);
        std::thread::sleep(Duration::from_millis(25));
    }
    let both = attempts(&s, 2).await;
    assert_eq!(both[1].0, 2, "{both:?}");
    let got = finish(&mut s, &run).await;
    assert_eq!(got.steps[0].attempt, 2);
    assert!(got.steps[0].worker_id.starts_with("second"), "{:?}", got.steps[0]);
    assert_eq!(stored_attempt(&mut s, &run).await, "2");
    signal(&second, libc::SIGTERM);
    let _ = second.wait();
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_that_wakes_late_has_its_report_refused() {
    let mut s = setup().await;
    let run = start(&mut s, 2).await;
    let mut first = worker(&s.server.url(), s.dir.path(), "first");
    attempts(&s, 1).await;
    // Frozen past the lease timeout: lost. Its step goes on (only the worker is stopped).
    signal(&first, libc::SIGSTOP);
    let mut second = worker(&s.server.url(), s.dir.path(), "second");
    let both = attempts(&s, 2).await;
    assert_eq!(both[1].0, 2);
    // Let the first attempt's step finish, then wake its worker: it reports success for an
    // attempt that is no longer live, and the engine refuses it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&first, libc::SIGCONT);
    let got = finish(&mut s, &run).await;
    assert_eq!(got.steps[0].attempt, 2);
    assert_eq!(stored_attempt(&mut s, &run).await, "2", "the late report of attempt 1 must not win");
    // Give the woken worker time to report; the run's record must not change.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = get(&mut s, &run).await;
    assert_eq!((after.steps[0].attempt, after.steps[0].state()), (2, v1::StepState::Succeeded));
    assert_eq!(stored_attempt(&mut s, &run).await, "2");
    for w in [&mut first, &mut second] {
        signal(w, libc::SIGTERM);
        let _ = w.wait();
    }
    s.server.shutdown().await;
}
