//! `weir run --labels`: a pipeline whose steps say `runs_on:` runs on a laptop once the local
//! worker offers the labels, and fails at once, naming the label, when it does not.

use std::process::{Command, Output};

fn weir_run(dir: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(dir)
        .arg("--data-dir")
        .arg(dir.join(".weir"))
        .args(["--grace", "2"])
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .expect("run weir")
}

#[test]
fn runs_on_steps_run_locally_with_the_labels_and_not_without() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        "name: placed\nsteps:\n  train:\n    run: echo trained\n    runs_on: {pool: gpu}\n",
    )
    .unwrap();
    let without = weir_run(dir.path(), &[]);
    assert_eq!(without.status.code(), Some(1));
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(err.contains("can never run here") && err.contains("pool=gpu"), "{err}");

    let with = weir_run(dir.path(), &["--labels", "pool=gpu,zone=home"]);
    assert_eq!(
        with.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&with.stdout),
        String::from_utf8_lossy(&with.stderr)
    );
    let bad = weir_run(dir.path(), &["--labels", "nokey"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected key=value"));
}
