//! `weir server` with tokens, driven by the client commands as a team would: a client without
//! the token is refused (exit 4), the worker token does not open the client API, and with the
//! right token a submitted pipeline runs to the end on a worker agent and its logs come back.

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_worker::{Agent, AgentConfig};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).env("NO_COLOR", "1").output().expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

mod common;

fn server(data: &Path, port: u16, tokens: &Path) -> Child {
    common::server(data, port, &["--token-file", &tokens.display().to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_protected_server_runs_a_submitted_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "client=c-0123456789\nworker=w-9876543210\n").unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut engine = server(&dir.path().join("data"), port, &tokens);

    let refused = weir(&["runs", "--server", &url]);
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused.stderr));
    let wrong = weir(&["runs", "--server", &url, "--token", "w-9876543210"]);
    // a valid token whose role may not list runs: refused (exit 1), saying why
    assert_eq!(wrong.status.code(), Some(1), "the worker token does not open the client API");
    assert!(text(&wrong.stderr).contains("`worker` (worker) may not call"), "{}", text(&wrong.stderr));
    assert!(!text(&wrong.stderr).contains("9876543210"), "tokens are never printed");

    let folder = dir.path().join("hello");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("greet.sh"), "echo \"hello from $WEIR_STEP\"\n").unwrap();
    std::fs::write(folder.join("pipeline.yaml"), "name: hello\nsteps:\n  greet:\n    run: sh greet.sh\n").unwrap();
    let tf = tokens.display().to_string();
    let sub = weir(&["submit", &folder.display().to_string(), "--server", &url, "--token-file", &tf]);
    assert_eq!(sub.status.code(), Some(0), "{}", text(&sub.stderr));
    assert!(text(&sub.stdout).contains("submitted hello version"), "{}", text(&sub.stdout));

    let stop = CancellationToken::new();
    let mut config = AgentConfig::new(url.clone(), dir.path().join("worker"));
    config.token = Some("w-9876543210".into());
    let agent = tokio::spawn(Agent::new(config).run(stop.clone()));

    let url2 = url.clone();
    let tf2 = tf.clone();
    let started = tokio::task::spawn_blocking(move || {
        weir(&["start", "hello", "--watch", "--server", &url2, "--token-file", &tf2])
    })
    .await
    .unwrap();
    assert_eq!(started.status.code(), Some(0), "{}\n{}", text(&started.stdout), text(&started.stderr));
    let runs = weir(&["runs", "--server", &url, "--token-file", &tf]);
    let run_id = text(&runs.stdout).lines().nth(1).and_then(|l| l.split_whitespace().next()).unwrap().to_string();
    let logs = weir(&["logs", &run_id, "greet", "--server", &url, "--token-file", &tf]);
    assert_eq!(text(&logs.stdout), "hello from greet\n", "{}", text(&logs.stderr));

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    engine.kill().unwrap();
    engine.wait().unwrap();
}

/// A param the server refuses points into the pipeline file as submitted, with its line and
/// source shown, as `weir plan` renders it (it pointed at a file called `params`).
#[test]
fn a_bad_param_on_start_points_at_the_submitted_pipeline_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut engine = common::server(&dir.path().join("data"), port, &[]);
    let folder = dir.path().join("p");
    std::fs::create_dir(&folder).unwrap();
    let file = folder.join("sized.yaml");
    std::fs::write(&file, "name: sized\nparams:\n  rows: {type: int, default: 5}\nsteps:\n  a:\n    run: 'true'\n")
        .unwrap();
    let sub = weir(&["submit", &file.display().to_string(), "--server", &url]);
    assert_eq!(sub.status.code(), Some(0), "{}", text(&sub.stderr));
    let out = weir(&["start", "sized", "-p", "rows=many", "--server", &url]);
    let _ = engine.kill();
    let _ = engine.wait();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("param `rows` expects an int, got `many`"), "{err}");
    assert!(err.contains("--> sized.yaml:3:3"), "{err}");
    assert!(err.contains("3 |   rows: {type: int, default: 5}"), "{err}");
    assert!(!err.contains("--> params") && !err.contains("pipeline sized"), "{err}");
}

/// A server whose stdout and stderr nobody reads any more (a finished `| head`, a supervisor
/// that closed the pipes) keeps serving and stops cleanly: it used to panic on its first line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_output_is_closed_keeps_serving() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut engine = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both read ends closed before the server writes anything.
    drop(engine.stdout.take());
    drop(engine.stderr.take());
    let url = format!("http://127.0.0.1:{port}");
    let mut c = common::client(&url).await;
    let listed = c.list_pipelines(weir_proto::v1::ListPipelinesRequest::default()).await;
    assert!(listed.is_ok(), "the server answers: {listed:?}");
    assert_eq!(engine.try_wait().unwrap(), None, "and is still running");
    // SIGTERM: it says "stopping..." to the closed stderr and exits 0.
    unsafe { libc::kill(engine.id() as i32, libc::SIGTERM) };
    let status = engine.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// A client command whose reader goes away ends quietly with 141 (as SIGPIPE would), not with
/// a panic and a backtrace.
#[test]
fn a_client_command_whose_reader_went_away_ends_quietly() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, "name: p\nsteps:\n  a: {run: 'true'}\n").unwrap();
    let data = dir.path().join("data").display().to_string();
    let ran = weir(&["run", &file.display().to_string(), "--data-dir", &data]);
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["store", "check", "--data-dir", &data])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}
