//! Approval gates through the `weir` binary against a real `weir server` (a child process) and
//! a real worker agent: a step with `approval:` waits in `awaiting_approval` until `weir
//! approve` approves it (the run succeeds) or `--reject`s it (it fails, what needs it is
//! skipped), or its timeout fails it; `weir status` shows the request, the commands that decide
//! it and the decision (who, when, why). A restart of the server (kill -9) while steps await
//! keeps them awaiting, and a deadline that passed while the server was down fails its step.

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_proto::v1;
use weir_worker::{Agent, AgentConfig};

mod common;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `weir ARGS --server URL` with `USER=tester`, off the async runtime.
async fn weir(url: &str, args: &[&str]) -> Output {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--server".to_string(), url.to_string()]);
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(&all)
            .env("NO_COLOR", "1")
            .env("USER", "tester")
            .output()
            .expect("run weir")
    })
    .await
    .unwrap()
}

const YAML: &str = r#"name: gate
params:
  model: churn
steps:
  train:
    run: echo trained
  deploy:
    needs: [train]
    approval: {message: "ship {{ params.model }} to production?", timeout: 1h}
    run: echo deployed
  notify:
    needs: [deploy]
    run: echo notified
  quick:
    needs: [train]
    when: params.model == "quick"
    approval: {message: "in time?", timeout: 2s}
    run: echo quick
"#;

/// A server with a worker agent, the pipeline submitted.
struct Setup {
    dir: tempfile::TempDir,
    port: u16,
    url: String,
    engine: Child,
    stop: CancellationToken,
    agent: tokio::task::JoinHandle<()>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let engine = common::server(&dir.path().join("data"), port, &[]);
    let stop = CancellationToken::new();
    let worker = Agent::new(AgentConfig::new(url.clone(), dir.path().join("worker")));
    let agent = tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = worker.run(stop).await;
        }
    });
    let folder = dir.path().join("gate");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), YAML).unwrap();
    let sub = weir(&url, &["submit", &folder.display().to_string()]).await;
    assert_eq!(sub.status.code(), Some(0), "{}", text(&sub.stderr));
    Setup { dir, port, url, engine, stop, agent }
}

async fn start(url: &str, model: &str) -> String {
    let out = weir(url, &["start", "gate", "-p", &format!("model={model}")]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// Waits (60 s at most) until `step` of `run` is in `state`; returns the run.
async fn until(url: &str, run: &str, step: &str, state: v1::StepState) -> v1::GetRunResponse {
    let began = Instant::now();
    loop {
        let mut c = common::client(url).await;
        let req = v1::GetRunRequest { run_id: run.into(), ..Default::default() };
        if let Ok(r) = c.get_run(req).await {
            let r = r.into_inner();
            if r.steps.iter().any(|s| s.name == step && s.state() == state) {
                return r;
            }
            assert!(began.elapsed() < Duration::from_secs(60), "{step} never became {state:?}: {:#?}", r.steps);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_state(url: &str, run: &str, state: v1::RunState) {
    let began = Instant::now();
    loop {
        let mut c = common::client(url).await;
        let req = v1::GetRunRequest { run_id: run.into(), ..Default::default() };
        let r = c.get_run(req).await.unwrap().into_inner();
        if r.run.as_ref().unwrap().state() == state {
            return;
        }
        assert!(began.elapsed() < Duration::from_secs(60), "the run never became {state:?}: {:#?}", r);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_reject_and_timeout_through_the_cli() {
    let Setup { dir: _dir, url, mut engine, stop, agent, .. } = setup().await;

    // Approve: the step waits, status says how to decide, the decision lets it run.
    let run = start(&url, "churn").await;
    until(&url, &run, "deploy", v1::StepState::AwaitingApproval).await;
    let status = weir(&url, &["status", &run]).await;
    let out = text(&status.stdout);
    assert!(out.contains("awaiting_approval") && out.contains(", 1 awaiting approval\n"), "{out}");
    let runs = text(&weir(&url, &["runs"]).await.stdout);
    assert!(runs.contains("running (awaiting approval)"), "{runs}");
    assert!(out.contains("deploy: awaiting approval since "), "{out}");
    assert!(out.contains(": ship churn to production?\n"), "{out}");
    assert!(out.contains(&format!("approve: weir approve {run} deploy [--comment TEXT]")), "{out}");
    let early = weir(&url, &["approve", &run, "notify"]).await;
    assert_eq!(early.status.code(), Some(1), "{}", text(&early.stderr));
    assert!(
        text(&early.stderr)
            .contains(&format!("step notify of run {run} is not awaiting approval: it has no `approval:`")),
        "{}",
        text(&early.stderr)
    );
    let typo = weir(&url, &["approve", &run, "deplyo"]).await;
    assert_eq!(typo.status.code(), Some(1));
    assert!(text(&typo.stderr).contains("awaiting approval: deploy"), "{}", text(&typo.stderr));
    let ok = weir(&url, &["approve", &run, "deploy", "--comment", "metrics look fine", "--as", "alice"]).await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).starts_with(&format!("approved step deploy of run {run}: it is ready")),
        "{}",
        text(&ok.stdout)
    );
    run_state(&url, &run, v1::RunState::Succeeded).await;
    let again = weir(&url, &["approve", &run, "deploy"]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("already finished as succeeded"), "{}", text(&again.stderr));
    let out = text(&weir(&url, &["status", &run]).await.stdout);
    assert!(out.contains("deploy: approved by alice (anonymous) at "), "{out}");
    assert!(out.contains(": metrics look fine\n"), "{out}");

    // Reject: the step fails with who and why, what needs it is skipped.
    let run = start(&url, "churn").await;
    until(&url, &run, "deploy", v1::StepState::AwaitingApproval).await;
    let no = weir(&url, &["approve", &run, "deploy", "--reject", "--comment", "drift too high"]).await;
    assert_eq!(no.status.code(), Some(0), "{}", text(&no.stderr));
    assert!(text(&no.stdout).contains("rejected by tester (anonymous): drift too high"), "{}", text(&no.stdout));
    run_state(&url, &run, v1::RunState::Failed).await;
    let out = text(&weir(&url, &["status", &run]).await.stdout);
    let deploy = out.lines().find(|l| l.starts_with("deploy ")).unwrap();
    assert!(deploy.contains("failed") && deploy.contains("rejected by tester (anonymous): drift too high"), "{out}");
    let notify = out.lines().find(|l| l.starts_with("notify ")).unwrap();
    assert!(notify.contains("skipped") && notify.contains("upstream failed: deploy"), "{out}");
    assert!(out.contains("deploy: rejected by tester (anonymous) at "), "{out}");

    // Timeout: nobody decides within 2 s, the step fails with a clear reason.
    let run = start(&url, "quick").await;
    until(&url, &run, "quick", v1::StepState::Failed).await;
    let out = text(&weir(&url, &["status", &run]).await.stdout);
    let quick = out.lines().find(|l| l.starts_with("quick ")).unwrap();
    assert!(quick.contains("approval timed out after 2s"), "{out}");
    let late = weir(&url, &["approve", &run, "quick"]).await;
    assert_eq!(late.status.code(), Some(1));
    assert!(text(&late.stderr).contains("is not awaiting approval: it is failed"), "{}", text(&late.stderr));
    weir(&url, &["cancel", &run]).await;

    let help = text(&weir(&url, &["approve", "--help"]).await.stdout);
    for word in ["--reject", "--comment", "--as", "Exit status", "awaiting approval"] {
        assert!(help.contains(word), "approve --help lacks {word}:\n{help}");
    }

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    engine.kill().unwrap();
    engine.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_awaiting_approval_survive_a_kill_9_and_a_passed_deadline_fails_on_restart() {
    let Setup { dir, port, url, mut engine, stop, agent } = setup().await;
    let long = start(&url, "churn").await;
    let short = start(&url, "quick").await;
    until(&url, &long, "deploy", v1::StepState::AwaitingApproval).await;
    let r = until(&url, &short, "quick", v1::StepState::AwaitingApproval).await;
    let due = r.steps.iter().find(|s| s.name == "quick").unwrap().approval.clone().unwrap().due_at.unwrap();
    engine.kill().unwrap(); // SIGKILL
    engine.wait().unwrap();
    // Stay down past the short deadline, by the wall clock the stored times use.
    let due_ms = due.seconds as u128 * 1000 + due.nanos as u128 / 1_000_000;
    loop {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        if now > due_ms + 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut engine = common::server(&dir.path().join("data"), port, &[]);
    // The deadline armed from the stored request time has passed: the step fails now.
    let r = until(&url, &short, "quick", v1::StepState::Failed).await;
    let quick = r.steps.iter().find(|s| s.name == "quick").unwrap();
    assert_eq!(quick.message, "approval timed out after 2s");
    // The other still awaits, and approving it after the restart runs it.
    let out = text(&weir(&url, &["status", &long]).await.stdout);
    assert!(out.contains("deploy: awaiting approval since "), "{out}");
    let ok = weir(&url, &["approve", &long, "deploy"]).await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    run_state(&url, &long, v1::RunState::Succeeded).await;
    weir(&url, &["cancel", &short]).await;

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    engine.kill().unwrap();
    engine.wait().unwrap();
}
