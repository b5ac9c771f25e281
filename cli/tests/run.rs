//! `weir run` as a user runs it: the binary, the example pipeline, a data folder, exit codes,
//! what it prints, and what it leaves in the store (the deploy step's manifest).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use weir_core::run::{InstanceId, RunState, StepState};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn weir_run(data: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(root().join("pipelines/ml-retrain"))
        .arg("--data-dir")
        .arg(data)
        .args(["--grace", "2"])
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_example_pipeline_succeeds_and_its_deploy_step_writes_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join(".weir");
    let out = weir_run(&data, &["-p", "rows=500"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // Plain progress lines when not a terminal, then the summary table.
    assert!(stdout.contains("ingest succeeded in"), "{stdout}");
    assert!(stdout.contains("STEP") && stdout.contains("ATTEMPTS") && stdout.contains("DURATION"), "{stdout}");
    for step in ["ingest", "preprocess", "train[l2=0.0,features=linear]", "validate", "deploy"] {
        assert!(stdout.lines().any(|l| l.starts_with(step) && l.contains("succeeded")), "{step} in\n{stdout}");
    }

    // What the run left behind: the deploy step's manifest, content-addressed in the store.
    let store = weir_engine::store::Store::open(&data.join("db")).unwrap();
    let page = store.list_runs(&Default::default(), 10, None).unwrap();
    let weir_engine::store::Listed::Run(run) = &page.runs[0] else { panic!("a run") };
    assert_eq!(run.state, RunState::Succeeded);
    let steps = store.steps(&run.id, None, 100).unwrap();
    let (deploy, record) = steps.iter().find(|(_, s)| s.name == "deploy").unwrap();
    assert_eq!(record.state, StepState::Succeeded);
    let manifest = store.artifacts(&run.id, InstanceId(deploy.0)).unwrap().unwrap();
    let entry = manifest.get("manifest.json").expect("deploy wrote manifest.json");
    let blobs = weir_data::artifact::Store::open(&data.join("artifacts")).unwrap();
    let json: serde_json::Value = serde_json::from_reader(blobs.open_blob(&entry.digest).unwrap()).unwrap();
    assert_eq!(json["model_name"], "churn", "{json}");
    assert_eq!(json["run_id"], run.id.as_str(), "{json}");
}

#[test]
fn a_gate_that_fails_fails_the_run_with_its_message_and_the_step_logs() {
    let dir = tempfile::tempdir().unwrap();
    let out = weir_run(&dir.path().join("d"), &["-p", "rows=300", "-p", "max_rmse=0.0001"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("gate `metrics.rmse < params.max_rmse` is false: metrics.rmse = "), "{stderr}");
    assert!(stderr.contains("select: best of 4"), "the failed step's output is shown:\n{stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("deploy") && l.contains("skipped")), "{stdout}");

    // The hints are commands that work when pasted: they carry `--local DIR`.
    let data = dir.path().join("d");
    let hint = stderr.lines().find(|l| l.starts_with("help: `weir logs ")).expect("a logs hint");
    let commands: Vec<&str> = hint.split('`').skip(1).step_by(2).collect();
    let local = format!("--local {}", data.display());
    assert_eq!(commands.len(), 2, "{hint}");
    assert!(commands.iter().all(|c| c.ends_with(&local)), "{hint}");
    let words: Vec<&str> = commands[0].split_whitespace().skip(1).collect();
    let logs = Command::new(env!("CARGO_BIN_EXE_weir")).args(&words).env("NO_COLOR", "1").output().unwrap();
    assert_eq!(logs.status.code(), Some(0), "{}: {}", commands[0], text(&logs.stderr));
    assert!(text(&logs.stdout).contains("select: best of 4"), "{}", text(&logs.stdout));

    // A global `--local` before the subcommand does not take the subcommand for its folder.
    let weir = |cwd: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_weir")).current_dir(cwd).args(args).env("NO_COLOR", "1").output().unwrap()
    };
    let runs = weir(dir.path(), &["--local", &data.display().to_string(), "runs"]);
    assert_eq!(runs.status.code(), Some(0), "{}", text(&runs.stderr));
    assert!(text(&runs.stdout).contains("ml-retrain"), "{}", text(&runs.stdout));
    std::fs::rename(&data, dir.path().join(".weir")).unwrap();
    let runs = weir(dir.path(), &["--local", "runs"]);
    assert_eq!(runs.status.code(), Some(0), "{}", text(&runs.stderr));
    assert!(text(&runs.stdout).contains("failed"), "{}", text(&runs.stdout));
}

#[test]
fn invalid_params_exit_2_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("never");
    let out = weir_run(&data, &["-p", "rows=many"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("param `rows` expects an int, got `many`"), "{}", text(&out.stderr));
    assert!(!data.exists(), "nothing was started");
}

#[test]
fn a_second_weir_on_the_same_data_folder_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let _held = weir_engine::store::Store::open(&data.join("db")).unwrap();
    let out = weir_run(&data, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("another weir engine is using the data folder"), "{}", text(&out.stderr));
}

#[test]
fn ctrl_c_cancels_the_run_and_its_running_step() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        format!("name: long\nsteps:\n  wait:\n    run: echo $$ > {}; exec sleep 300\n", pid_file.display()),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .args(["--grace", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("wait running") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("weir run ended early: {seen}\n{err}");
        }
        seen.push_str(&line);
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "stdout:\n{seen}{rest}\nstderr:\n{err}");
    assert!(err.contains("cancelling run"), "{err}");
    assert!(rest.lines().any(|l| l.starts_with("wait") && l.contains("cancelled")), "{rest}");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the step's process survived");
}

#[test]
fn the_default_data_folder_is_relative_to_where_weir_runs_and_works() {
    // The quick start's form: no --data-dir, so `.weir` under the current folder. Steps run
    // in the bundle's folder, so the worker must not hand them relative paths.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(dir.path())
        .arg("run")
        .arg(root().join("pipelines/ml-retrain/pipeline.yaml"))
        .args(["-p", "rows=300", "--grace", "2"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(dir.path().join(".weir/db").is_dir());
}

/// The container variant of the example, on a Python image built locally from this machine's
/// python3 (`scripts/python-image.sh`: no registry here). Every step runs in a container, so the
/// bundle, inputs and outputs cross the /weir mounts; the run must succeed exactly as the process
/// one does and leave no container behind.
#[test]
fn the_example_runs_with_every_step_in_a_container() {
    let docker = Command::new("docker").arg("version").output();
    if !docker.is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "CI needs a running Docker engine for the container example");
        eprintln!("SKIPPED: no Docker engine answers; the container example did not run");
        return;
    }
    let built = Command::new("bash").arg(root().join("scripts/python-image.sh")).status().unwrap();
    assert!(built.success(), "scripts/python-image.sh failed");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join(".weir");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(root().join("pipelines/ml-retrain/container.yaml"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--grace", "2", "-p", "rows=500", "-p", "image=weir-test/python:3"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for step in ["ingest", "preprocess", "train[l2=1.0,features=quadratic]", "validate", "deploy"] {
        assert!(stdout.lines().any(|l| l.starts_with(step) && l.contains("succeeded")), "{step} in\n{stdout}");
    }
    let store = weir_engine::store::Store::open(&data.join("db")).unwrap();
    let page = store.list_runs(&Default::default(), 10, None).unwrap();
    let weir_engine::store::Listed::Run(run) = &page.runs[0] else { panic!("a run") };
    let left =
        Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=weir.run={}", run.id)]).output().unwrap();
    assert!(left.stdout.is_empty(), "containers left behind: {}", text(&left.stdout));
}

#[test]
fn a_step_this_machine_can_never_run_fails_the_run_at_once_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        "name: greedy
steps:
  fine: {run: 'true'}
  huge: {run: 'true', resources: {gpus: 64}}
",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(dir.path())
        .arg("--data-dir")
        .arg(dir.path().join(".weir"))
        .args(["--grace", "2"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run weir");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("huge waiting: no worker offers gpus=64"), "{stdout}");
    assert!(stderr.contains("error: step huge can never run here: no worker offers gpus=64"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "took {:?}", started.elapsed());
}
