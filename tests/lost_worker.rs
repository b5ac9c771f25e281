//! Losing a worker for real: the `weir-worker` binary as a child process against a real engine
//! server (in this test process, on 127.0.0.1:0), then `kill -9` or `SIGSTOP` of the worker
//! while its step runs. The step must finish on a second worker as attempt 2, the dead
//! worker's step processes must not outlive it, and a frozen worker that wakes up late must
//! have its report refused (the stored output is attempt 2's, not its own).
//!
//! A worker at its defaults holds an attempt ahead of each step slot; behind a long step it
//! gives that attempt back, and the step runs on an idle worker instead of waiting.
//!
//! Docker steps outlive a killed worker: restarted with the same work folder, the worker resumes
//! the container of a still-live attempt (no second attempt) and removes one whose attempt the
//! engine has given up on. These need the Docker engine and the `weir-test/busybox:1` image
//! (built by `scripts/test-images.sh` when missing).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use weir_engine::server::{self, ServerConfig};
use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_tests::procs::{self, Kill};

const STEP: &str = "name: lost
steps:
  work:
    run: |
      echo $WEIR_ATTEMPT $$ >> {log}
      sleep {secs}
      echo $WEIR_ATTEMPT > $WEIR_OUTPUTS/attempt.txt
    outputs: [attempt.txt]
";

const DOCKER_STEP: &str = "name: lost-container
steps:
  work:
    runtime: docker
    image: weir-test/busybox:1
    pull: never
    run: |
      sleep {secs}
      echo $WEIR_ATTEMPT > $WEIR_OUTPUTS/attempt.txt
    outputs: [attempt.txt]
";

fn worker(url: &str, dir: &Path, name: &str) -> Kill {
    spawn_worker(url, dir, name, "off")
}

/// A worker that runs docker steps (`--docker on`).
fn docker_worker(url: &str, dir: &Path, name: &str) -> Kill {
    spawn_worker(url, dir, name, "on")
}

/// Killed (SIGKILL) and reaped when dropped, so a test that fails midway leaves no worker behind.
fn spawn_worker(url: &str, dir: &Path, name: &str, docker: &str) -> Kill {
    let mut cmd = Command::new(weir_tests::binaries().1);
    cmd.args(["--engine", url, "--capacity", "1", "--name", name, "--grace", "1", "--docker", docker])
        .arg("--work-dir")
        .arg(dir.join(name))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.worker.log"))).expect("create the worker's log"));
    procs::spawn(cmd)
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

/// Whether the Docker tests can run: the engine answers and the test image exists (built when
/// missing). Without Docker, CI fails and a developer's run skips loudly.
fn docker_ready() -> bool {
    let answers = Command::new("docker").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !answers.is_ok_and(|s| s.success()) {
        assert!(std::env::var_os("CI").is_none(), "CI needs a running Docker engine for the docker tests");
        eprintln!("SKIPPED: no Docker engine answers; the docker restart tests did not run");
        return false;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-images.sh");
    let built = Command::new("bash").arg(&script).status().expect("run scripts/test-images.sh");
    assert!(built.success(), "scripts/test-images.sh failed");
    true
}

/// `name state` of every container of `run`, from the docker CLI.
fn containers_of(run: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--filter", &format!("label=weir.run={run}"), "--format", "{{.Names}} {{.State}}"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < Duration::from_secs(60), "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a docker step sleeping `secs` on worker `w`, waits for its container, then kills the
/// worker with SIGKILL; the container must run on. Returns the run id.
async fn docker_step_outliving_its_worker(s: &mut Setup, secs: u32) -> String {
    let run = start_yaml(s, DOCKER_STEP.replace("{secs}", &secs.to_string())).await;
    let mut first = docker_worker(&s.server.url(), s.dir.path(), "w");
    wait_for("the step's container", || containers_of(&run).iter().any(|c| c.ends_with(" running"))).await;
    signal(&first, libc::SIGKILL);
    let _ = first.wait();
    let left = containers_of(&run);
    assert!(left.len() == 1 && left[0].ends_with(" running"), "the container must outlive its worker: {left:?}");
    run
}

async fn setup() -> Setup {
    setup_with(Duration::from_millis(1500)).await
}

async fn setup_with(lease_timeout: Duration) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().join("engine"), "127.0.0.1:0".parse().unwrap());
    config.terms.lease_timeout = lease_timeout;
    config.terms.heartbeat_interval = Duration::from_millis(250);
    config.tick = Duration::from_millis(20);
    let server = server::start(config).await.unwrap();
    let client = WeirClientClient::connect(server.url()).await.unwrap();
    Setup { dir, server, client }
}

async fn start(s: &mut Setup, secs: u32) -> String {
    let log = s.dir.path().join("attempts.log");
    let yaml = STEP.replace("{log}", &log.display().to_string()).replace("{secs}", &secs.to_string());
    start_yaml(s, yaml).await
}

async fn start_yaml(s: &mut Setup, yaml: String) -> String {
    let header = v1::SubmitPipelineHeader { yaml, file_name: "p.yaml".into(), ..Default::default() };
    let msgs = vec![v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) }];
    let version =
        s.client.submit_pipeline(tonic::codegen::tokio_stream::iter(msgs)).await.unwrap().into_inner().version;
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Version(version)),
        params: HashMap::new(),
        no_cache: false,
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
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} attempts started: {lines:?}\n{}",
            lines.len(),
            worker_logs(s.dir.path())
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The last lines of every worker's log in `dir`, to say why a run did not finish.
fn worker_logs(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.to_string_lossy().ends_with(".worker.log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- {}:\n{}\n", path.display(), lines[lines.len().saturating_sub(40)..].join("\n"));
        }
    }
    out
}

async fn finish(s: &mut Setup, run: &str) -> v1::GetRunResponse {
    let start = Instant::now();
    loop {
        let got = get(s, run).await;
        if got.run.as_ref().unwrap().state() == v1::RunState::Succeeded {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "run did not succeed: {:#?}\n{}",
            got.steps,
            worker_logs(s.dir.path())
        );
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

/// Two one-slot workers at their defaults (each holds one attempt ahead). The first leases
/// both steps of a fan-out: the one that starts first takes a lock and runs until the test
/// lets it end (the long one), the other waits behind it. The first worker gives that one back,
/// and the second worker runs it (it finds the lock taken and ends at once) while the long one
/// still runs. Held until the long one ended, it would never run before the test lets it end.
/// Which step is long is decided when they run, as the worker may start either first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_held_behind_a_long_step_is_given_back_and_runs_on_the_idle_worker() {
    let mut s = setup_with(Duration::from_secs(30)).await;
    let (go, lock) = (s.dir.path().join("go"), s.dir.path().join("lock"));
    let script = format!(
        "mkdir {} 2>/dev/null && {{ while [ ! -f {} ]; do sleep 0.05; done; }} || echo short",
        lock.display(),
        go.display()
    );
    let yaml = format!("name: held\nsteps:\n  x: {{run: '{script}'}}\n  y: {{run: '{script}'}}\n");
    let run = start_yaml(&mut s, yaml).await;
    let first = worker(&s.server.url(), s.dir.path(), "first");
    let start = Instant::now();
    // Alone, the first worker leases both; the second joins once one of them runs.
    let long = loop {
        let got = get(&mut s, &run).await;
        if let Some(st) = got.steps.iter().find(|st| st.state() == v1::StepState::Running) {
            break st.name.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no step started: {:#?}", got.steps);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let short = if long == "x" { "y" } else { "x" };
    let second = worker(&s.server.url(), s.dir.path(), "second");
    let got = loop {
        let got = get(&mut s, &run).await;
        if got.steps.iter().any(|st| st.name == short && st.state() == v1::StepState::Succeeded) {
            break got;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{short} never ran beside {long}: {:#?}", got.steps);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let by_name = |name: &str| got.steps.iter().find(|st| st.name == name).unwrap().clone();
    let (long, short) = (by_name(&long), by_name(short));
    assert_eq!(long.state(), v1::StepState::Running, "{long:?}");
    assert!(long.worker_id.starts_with("first"), "{long:?}");
    assert!(short.worker_id.starts_with("second"), "{short:?}");
    assert_eq!(short.attempt, 2, "attempt 1 was leased to the first worker and given back: {short:?}");
    std::fs::write(&go, "").unwrap();
    let got = finish(&mut s, &run).await;
    assert!(got.steps.iter().all(|st| st.state() == v1::StepState::Succeeded), "{:#?}", got.steps);
    drop((first, second));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_resumes_its_live_container_instead_of_running_the_step_again() {
    if !docker_ready() {
        return;
    }
    // A lease timeout well above a worker restart: the attempt stays live meanwhile.
    let mut s = setup_with(Duration::from_secs(8)).await;
    let run = docker_step_outliving_its_worker(&mut s, 4).await;
    // The same worker (same work folder) comes back while the step still runs.
    let mut again = docker_worker(&s.server.url(), s.dir.path(), "w");
    let got = finish(&mut s, &run).await;
    assert_eq!(got.steps[0].attempt, 1, "the live container was resumed, not run again: {:?}", got.steps[0]);
    assert_eq!(stored_attempt(&mut s, &run).await, "1");
    wait_for("the container's removal", || containers_of(&run).is_empty()).await;
    signal(&again, libc::SIGTERM);
    let _ = again.wait();
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_removes_the_container_of_an_attempt_no_longer_leased() {
    if !docker_ready() {
        return;
    }
    let mut s = setup_with(Duration::from_millis(1500)).await;
    let run = docker_step_outliving_its_worker(&mut s, 30).await;
    // Past the lease timeout the engine counts attempt 1 lost and queues attempt 2.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = get(&mut s, &run).await;
        if got.steps[0].attempt >= 2 || got.steps[0].state() == v1::StepState::Ready {
            break;
        }
        assert!(Instant::now() < deadline, "the engine never gave up on attempt 1: {:?}", got.steps[0]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old = containers_of(&run);
    assert!(old.len() == 1 && old[0].ends_with(" running"), "{old:?}");
    let old_name = old[0].split(' ').next().unwrap().to_string();
    // Restarted, the worker finds attempt 1's container, hears it is not live, and removes it.
    let mut again = docker_worker(&s.server.url(), s.dir.path(), "w");
    wait_for("the stale container's removal", || !containers_of(&run).iter().any(|c| c.starts_with(&old_name))).await;
    // Attempt 2 runs there meanwhile (30 s of sleep): cancel the run rather than wait.
    let got = get(&mut s, &run).await;
    assert!(got.steps[0].attempt >= 2, "{:?}", got.steps[0]);
    let _ = s.client.cancel_run(v1::CancelRunRequest { run_id: run.clone(), ..Default::default() }).await;
    wait_for("every container of the run gone", || containers_of(&run).is_empty()).await;
    signal(&again, libc::SIGTERM);
    let _ = again.wait();
    s.server.shutdown().await;
}
