//! Protected model aliases through the `weir` binary against a real `weir server` (a child
//! process, `--public-url` set) and a real worker agent, with a real HTTP receiver in this test
//! for the notifications: a registration into a protected alias leaves the alias where it was
//! and lists a pending move (the run still succeeds); `weir models approve` moves it, `--reject`
//! leaves it, and the history shows who and why; the approval request, the promotion and the
//! refusal each arrive at the receiver with a `url`. A manual promotion of an unprotected alias
//! notifies `model_promoted`. A manual promotion of the protected alias waits, survives kill -9
//! of the server, and is approved after the restart. A pipeline naming a notify secret the
//! server lacks is refused at submit, naming the field and its line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_proto::v1;
use weir_worker::{Agent, AgentConfig};

mod common;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `weir ARGS --server URL`, off the async runtime.
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

async fn ok(url: &str, args: &[&str]) -> String {
    let out = weir(url, args).await;
    assert_eq!(out.status.code(), Some(0), "weir {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// A receiver answering 200 to every POST and keeping the JSON bodies.
fn receiver() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                keep.lock().unwrap().push(v);
            }
            let mut s = stream;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, got)
}

/// Waits (120 s at most) for a notification of `event` about version `version`.
fn arrived(got: &Mutex<Vec<serde_json::Value>>, event: &str, version: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all = got.lock().unwrap().clone();
        if let Some(v) = all.iter().find(|v| v["event"] == event && v["model"]["version"] == version) {
            return v.clone();
        }
        assert!(Instant::now() < deadline, "no {event} for v{version}; got {all:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn run_succeeds(url: &str, run: &str) {
    let began = Instant::now();
    loop {
        let mut c = common::client(url).await;
        let req = v1::GetRunRequest { run_id: run.into(), ..Default::default() };
        let r = c.get_run(req).await.unwrap().into_inner();
        let state = r.run.as_ref().unwrap().state();
        if state == v1::RunState::Succeeded {
            return;
        }
        assert!(!matches!(state, v1::RunState::Failed | v1::RunState::Cancelled), "{r:#?}");
        assert!(began.elapsed() < Duration::from_secs(60), "the run never succeeded: {r:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pipeline(hook: &str) -> String {
    format!(
        r#"name: ship
params:
  score: 1
notify:
  - {{on: [approval_requested, model_promoted, model_refused], webhook: "{hook}"}}
steps:
  train:
    run: |
      printf '{{"score": %s}}\n' "$WEIR_PARAM_SCORE" > "$WEIR_OUTPUTS/model.json"
    outputs: [model.json]
    register:
      model: churn
      file: model.json
      alias: production
      approval: {{message: "ship churn to production?", timeout: 1h}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_alias_waits_for_approval_through_the_cli_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (hook_port, got) = receiver();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    let public = ["--public-url", "https://weir.example.com/"];
    let mut engine = common::server(&data, port, &public);
    let stop = CancellationToken::new();
    let agent = tokio::spawn(Agent::new(AgentConfig::new(url.clone(), dir.path().join("worker"))).run(stop.clone()));

    // A notify secret the server does not hold is refused at submit, naming field and line.
    let folder = dir.path().join("ship");
    std::fs::create_dir(&folder).unwrap();
    let hook = format!("http://127.0.0.1:{hook_port}/hook");
    let unsigned = pipeline(&hook);
    let signed = unsigned.replace(&format!("webhook: \"{hook}\"}}"), &format!("webhook: \"{hook}\", secret: ops}}"));
    std::fs::write(folder.join("pipeline.yaml"), &signed).unwrap();
    let refused = weir(&url, &["submit", &folder.display().to_string()]).await;
    let err = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("`notify[0].secret` names secret `ops`, which this server does not hold"), "{err}");
    assert!(err.contains("pipeline.yaml:5:"), "{err}");

    std::fs::write(folder.join("pipeline.yaml"), &unsigned).unwrap();
    ok(&url, &["submit", &folder.display().to_string()]).await;

    // A registration into the protected alias: the run succeeds, the alias waits.
    let run1 = ok(&url, &["start", "ship", "-p", "score=1"]).await.trim().to_string();
    run_succeeds(&url, &run1).await;
    let show = ok(&url, &["models", "show", "churn"]).await;
    assert!(show.contains("model churn: latest v1, aliases -"), "{show}");
    assert!(show.contains("protected: production (moves await approval; timeout 1h"), "{show}");
    assert!(show.contains("awaiting approval"), "{show}");
    assert!(show.contains("AWAITING APPROVAL (request 1)"), "{show}");
    let asked = arrived(&got, "approval_requested", 1);
    assert_eq!(asked["model"]["alias"], "production");
    assert!(asked["message"].as_str().unwrap().starts_with("ship churn to production?"), "{asked}");
    assert_eq!(asked["url"], "https://weir.example.com/models/churn");

    // Approve by alias: the alias moves; the history says who and why.
    let out = ok(&url, &["models", "approve", "churn", "production", "--as", "alice", "--comment", "looks good"]).await;
    assert!(out.contains("churn: production new -> v1"), "{out}");
    let show = ok(&url, &["models", "show", "churn"]).await;
    assert!(show.contains("aliases production=v1"), "{show}");
    assert!(show.contains("moved, approved by alice (client token): looks good"), "{show}");
    let promoted = arrived(&got, "model_promoted", 1);
    assert_eq!(promoted["url"], "https://weir.example.com/models/churn");

    // A second registration, rejected by its id: the alias stays.
    let run2 = ok(&url, &["start", "ship", "-p", "score=2"]).await.trim().to_string();
    run_succeeds(&url, &run2).await;
    arrived(&got, "approval_requested", 2);
    let out = weir(&url, &["models", "approve", "churn", "7"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("awaiting approval: 2 (production)"), "{}", text(&out.stderr));
    let out = ok(&url, &["models", "approve", "churn", "2", "--reject", "--as", "bob", "--comment", "worse"]).await;
    assert!(out.contains("production did not move"), "{out}");
    let show = ok(&url, &["models", "show", "churn"]).await;
    assert!(show.contains("aliases production=v1"), "{show}");
    assert!(show.contains("REJECTED by bob (client token): worse"), "{show}");
    arrived(&got, "model_refused", 2);

    // A manual promotion of an unprotected alias moves it at once and notifies.
    ok(&url, &["models", "promote", "churn", "2", "--alias", "staging"]).await;
    let staging = arrived(&got, "model_promoted", 2);
    assert_eq!(staging["model"]["alias"], "staging");

    // A manual promotion of the protected alias waits, through kill -9 and a restart.
    let out = ok(&url, &["models", "promote", "churn", "2", "--alias", "production", "--reason", "retry"]).await;
    assert!(out.contains("awaits approval as request 3"), "{out}");
    engine.kill().unwrap();
    engine.wait().unwrap();
    let mut engine = common::server(&data, port, &public);
    let show = ok(&url, &["models", "show", "churn"]).await;
    assert!(show.contains("aliases production=v1, staging=v2"), "{show}");
    assert!(show.contains("promoted by hand: retry"), "{show}");
    ok(&url, &["models", "approve", "churn", "3", "--as", "carol"]).await;
    let show = ok(&url, &["models", "show", "churn"]).await;
    assert!(show.contains("aliases production=v2, staging=v2"), "{show}");
    assert!(show.contains("moved, approved by carol (client token)"), "{show}");

    stop.cancel();
    let _ = agent.await;
    engine.kill().unwrap();
    let _ = engine.wait();
}
