//! Live metrics through the real `weir` binary (`weir run`: engine, store and worker in one
//! process, over loopback gRPC): steps append lines to `$WEIR_METRICS`, malformed ones among
//! them and more than the per-attempt bound; `weir metrics RUN STEP` shows the series,
//! `--json` every point, `weir logs` the malformed lines and the refusal; a `gate:` on a
//! metric only the live file gave passes, one that fails it fails the step; `metrics.json`
//! wins over a live series of the same name; and the same file works in a Docker step.

use std::path::Path;
use std::process::{Command, Output};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).env("NO_COLOR", "1").output().expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The run id in `weir run`'s closing summary (`run ID succeeded in ...`).
fn run_id(out: &str) -> String {
    let last = out.lines().rev().find(|l| l.starts_with("run ")).unwrap_or_else(|| panic!("no summary: {out}"));
    last.split_whitespace().nth(1).unwrap().to_string()
}

/// Runs `yaml` with `weir run` in a fresh folder; the run's id, its exit code, its output and
/// the data folder.
fn run(yaml: &str) -> (String, Option<i32>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).unwrap();
    let data = dir.path().join(".weir").display().to_string();
    let out = weir(&["run", &dir.path().display().to_string(), "--data-dir", &data, "--grace", "2"]);
    let said = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    (run_id(&text(&out.stdout)), out.status.code(), said, dir)
}

fn local(dir: &tempfile::TempDir, args: &[&str]) -> (Option<i32>, String, String) {
    let data = dir.path().join(".weir").display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--local", &data]);
    let out = weir(&all);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

const LIVE: &str = r#"name: live
steps:
  train:
    run: |
      for i in 1 2 3; do
        echo "{\"name\": \"loss\", \"value\": 0.$((10 - i)), \"step\": $i}" >> "$WEIR_METRICS"
      done
      echo 'not json' >> "$WEIR_METRICS"
      echo '{"name": "acc", "value": "NaN"}' >> "$WEIR_METRICS"
      printf '{"name": "acc", "value": 0.75}' >> "$WEIR_METRICS"
    gate: "metrics.loss < 0.8 && metrics.acc > 0.5"
  flood:
    run: |
      i=0
      while [ $i -lt 10050 ]; do echo "{\"name\":\"n\",\"value\":$i,\"step\":$i}"; i=$((i + 1)); done >> "$WEIR_METRICS"
  both:
    run: |
      echo '{"name": "rmse", "value": 0.9}' >> "$WEIR_METRICS"
      echo '{"rmse": 0.1}' > "$WEIR_OUTPUTS/metrics.json"
    outputs: [metrics.json]
    gate: "metrics.rmse < 0.5"
"#;

#[test]
fn steps_stream_series_that_weir_metrics_shows_and_gates_read() {
    let (id, code, said, dir) = run(LIVE);
    assert_eq!(code, Some(0), "{said}");

    let (code, out, err) = local(&dir, &["metrics", &id, "train"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("train attempt 1 of 1: 2 series, 4 points\n"), "{out}");
    assert!(out.contains("\nloss    3       0.9    0.7"), "{out}");
    assert!(out.contains("\nacc     1       0.75   0.75"), "the last line had no newline: {out}");
    assert!(out.contains("2 lines of $WEIR_METRICS were not metric points and were ignored"), "{out}");

    let (_, logs, _) = local(&dir, &["logs", &id, "train"]);
    assert!(logs.contains("$WEIR_METRICS line 4 is not a metric point, ignored: not JSON"), "{logs}");
    assert!(logs.contains("$WEIR_METRICS line 5 is not a metric point, ignored: `value` is not a number"), "{logs}");

    // The bound: the first 10,000 points kept, the rest refused and said so.
    let (code, out, err) = local(&dir, &["metrics", &id, "flood"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("\nn       10000   0      9999  0    9999"), "{out}");
    assert!(out.contains("50 points were refused past the bound of 10000 per attempt"), "{out}");
    let (_, logs, _) = local(&dir, &["logs", &id, "flood"]);
    assert!(logs.contains("reached the bound of 10000 live metric points: 50 more were refused"), "{logs}");
    let (code, json, _) = local(&dir, &["metrics", &id, "flood", "--json"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 10_000);
    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        (first["name"].as_str(), first["value"].as_f64(), first["step"].as_u64()),
        (Some("n"), Some(0.0), Some(0))
    );

    // metrics.json wins over the live series of the same name (the gate passed on 0.1).
    let (code, out, err) = local(&dir, &["metrics", "live", "rmse"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(" both  0.1\n") && !out.contains("0.9"), "{out}");

    // The pipeline form still works beside it: a live-only metric across runs.
    let (code, out, err) = local(&dir, &["metrics", "live", "loss"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&id) && out.contains("0.7"), "{out}");

    // Asking for what is not there.
    let (code, _, err) = local(&dir, &["metrics", &id, "trian"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no step trian") && err.contains("train"), "{err}");
    let (code, _, err) = local(&dir, &["metrics", &id, "train", "--attempt", "2"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no attempt 2: it had 1"), "{err}");
}

#[test]
fn a_gate_on_a_live_metric_fails_the_step_when_false() {
    let (_, code, said, _dir) = run(r#"name: live-gate
steps:
  train:
    run: |
      echo '{"name": "loss", "value": 2.5, "step": 1}' >> "$WEIR_METRICS"
    gate: "metrics.loss < 1"
"#);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("gate") && said.contains("metrics.loss < 1"), "{said}");
}

#[test]
fn a_docker_step_writes_to_weir_metrics_inside_its_container() {
    let docker = Command::new("docker").arg("version").output();
    if !docker.is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "CI needs a running Docker engine for live metrics in a container");
        eprintln!("SKIPPED: no Docker engine answers; live metrics in a container did not run");
        return;
    }
    let built = Command::new("bash").arg(root().join("scripts/test-images.sh")).status().unwrap();
    assert!(built.success(), "scripts/test-images.sh failed");
    let (id, code, said, dir) = run(r#"name: live-box
steps:
  boxed:
    runtime: docker
    image: weir-test/busybox:1
    pull: never
    run: |
      echo "metrics at $WEIR_METRICS"
      echo '{"name": "loss", "value": 0.5, "step": 1}' >> "$WEIR_METRICS"
      echo '{"name": "loss", "value": 0.25, "step": 2}' >> "$WEIR_METRICS"
    gate: "metrics.loss < 0.3"
"#);
    assert_eq!(code, Some(0), "{said}");
    let (_, logs, _) = local(&dir, &["logs", &id, "boxed"]);
    assert!(logs.contains("metrics at /weir/metrics/metrics.jsonl"), "{logs}");
    let (code, out, err) = local(&dir, &["metrics", &id, "boxed"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("\nloss    2       0.5    0.25"), "{out}");
}
