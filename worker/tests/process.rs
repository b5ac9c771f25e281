//! [`ProcessRuntime`] against the shared conformance suite, plus what only a local process
//! runtime can show: host pids of the step's group, signal deaths, spawn errors, a dropped `run`,
//! a grandchild that escaped the group, and the step dying with its worker (`PR_SET_PDEATHSIG`).

mod conformance;

use std::path::Path;
use std::time::{Duration, Instant};

use conformance::{Fixture, run_plain};
use tokio::sync::mpsc;
use weir_worker::runtime::{Action, CancellationToken, Error, Outcome, ProcessRuntime, Runtime};

conformance_tests!(ProcessRuntime::new());

/// Whether `pid` is a live process (a zombie waiting for a reaper counts as dead).
fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()), Some("Z" | "X")),
        Err(_) => false,
    }
}

/// Polls until `pid` is dead, for at most `bound`.
async fn dies_within(pid: i32, bound: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < bound {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn timeout_kills_grandchild_by_pid() {
    let f = Fixture::new();
    let mut spec = f.script(r#"sleep 30 & echo $! > "$WEIR_OUTPUTS/pid"; sleep 30"#);
    spec.timeout = Some(Duration::from_millis(300));
    assert_eq!(run_plain(&ProcessRuntime::new(), spec).await.outcome, Outcome::TimedOut);
    assert!(dies_within(read_pid(&f.outputs.join("pid")), Duration::from_secs(2)).await);
}

#[tokio::test]
async fn own_signal_is_reported() {
    let f = Fixture::new();
    assert_eq!(run_plain(&ProcessRuntime::new(), f.script("kill -9 $$")).await.outcome, Outcome::Signalled(9));
}

#[tokio::test]
async fn spawn_errors() {
    let f = Fixture::new();
    let rt = ProcessRuntime::new();
    let run = |spec| {
        let (tx, _rx) = mpsc::channel(8);
        rt.run(spec, tx, CancellationToken::new())
    };
    assert!(matches!(run(f.spec(Action::Argv(vec![]))).await, Err(Error::EmptyArgv)));
    let missing = f.spec(Action::Argv(vec!["/nonexistent/weir-step".into()]));
    assert!(matches!(run(missing).await, Err(Error::Spawn { .. })));
    let mut no_dir = f.script("true");
    no_dir.workdir = f.workdir.join("missing");
    assert!(matches!(run(no_dir).await, Err(Error::Spawn { .. })));
}

#[tokio::test]
async fn dropping_run_kills_the_group() {
    let f = Fixture::new();
    let rt = ProcessRuntime::new();
    let (tx, _rx) = mpsc::channel(8);
    let step = rt.run(f.script(r#"echo $$ > "$WEIR_OUTPUTS/pid"; sleep 30"#), tx, CancellationToken::new());
    let wait = f.wait_for("pid");
    tokio::select! {
        _ = step => panic!("the step ended early"),
        () = wait => {}
    }
    assert!(dies_within(read_pid(&f.outputs.join("pid")), Duration::from_secs(2)).await);
}

/// A grandchild in its own session holds stdout open; `run` gives up on the pipe after a bound.
#[tokio::test]
async fn escaped_grandchild_does_not_hang_run() {
    let f = Fixture::new();
    let script = r#"setsid sh -c 'echo $$ > "$WEIR_OUTPUTS/p"; mv "$WEIR_OUTPUTS/p" "$WEIR_OUTPUTS/pid"; exec sleep 20' &
        while [ ! -e "$WEIR_OUTPUTS/pid" ]; do sleep 0.01; done; echo done"#;
    let ran = run_plain(&ProcessRuntime::new(), f.script(script)).await;
    assert_eq!(ran.outcome, Outcome::Exited(0));
    assert_eq!(ran.stdout(), ["done"]);
    assert!(ran.took < Duration::from_secs(5), "took {:?}", ran.took);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(read_pid(&f.outputs.join("pid")), libc::SIGKILL) };
}

const HELPER_ENV: &str = "WEIR_WORKER_TEST_PDEATH_DIR";

/// Not a test on its own: when re-run by [`step_dies_with_its_worker`] with [`HELPER_ENV`] set,
/// this process is a mini-worker that starts a long step and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdeath_helper() {
    let Some(dir) = std::env::var_os(HELPER_ENV) else { return };
    let dir = Path::new(&dir);
    let spec = weir_worker::runtime::StepSpec {
        action: Action::Script(
            r#"echo $$ > "$WEIR_OUTPUTS/pid.tmp"; mv "$WEIR_OUTPUTS/pid.tmp" "$WEIR_OUTPUTS/pid"; exec sleep 30"#
                .into(),
        ),
        env: vec![],
        workdir: dir.to_path_buf(),
        inputs_dir: dir.to_path_buf(),
        outputs_dir: dir.to_path_buf(),
        timeout: None,
        grace: Duration::from_secs(1),
    };
    let (tx, _rx) = mpsc::channel(8);
    let _ = ProcessRuntime::new().run(spec, tx, CancellationToken::new()).await;
}

#[tokio::test]
async fn step_dies_with_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut worker = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["pdeath_helper", "--exact", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("pid");
    let start = Instant::now();
    while !pid_file.exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "the mini-worker never started its step");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let step = read_pid(&pid_file);
    assert!(alive(step));
    worker.kill().unwrap(); // SIGKILL: the worker gets no chance to clean up
    worker.wait().unwrap();
    assert!(dies_within(step, Duration::from_secs(10)).await, "step {step} outlived its worker");
}
