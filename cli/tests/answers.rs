//! What the `weir` binary prints from a real `weir server`'s answers where a small defect once
//! hid: a mistyped pipeline name gets the closest stored one (`weir start`, `weir runs
//! --pipeline`, `weir metrics`), a metric several steps write is refused until `--step` names
//! one (and `--step` always means the `PIPELINE METRIC` form), and `weir backfill` shows its
//! ticks in the schedule's zone as `weir schedules` does, naming the zone.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_worker::{Agent, AgentConfig};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("WEIR_TOKEN")
        .output()
        .expect("run weir")
}

/// `weir server` as a child that is killed when the test ends, panicking or not.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes `yaml` as `dir/name/pipeline.yaml` and submits that folder to `url`.
fn submit(dir: &Path, name: &str, yaml: &str, url: &str) {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), yaml).unwrap();
    let out = weir(&["submit", &folder.display().to_string(), "--server", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

const NIGHTLY: &str = "name: nightly-train
schedule:
  cron: \"0 2 * * *\"
  timezone: Europe/Berlin
steps:
  train:
    run: echo training
";

#[test]
fn a_mistyped_pipeline_name_gets_the_closest_stored_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _engine = Server(common::server(&dir.path().join("data"), port, &[]));
    submit(dir.path(), "nightly", NIGHTLY, &url);

    for args in [
        &["start", "nightly-trian"][..],
        &["runs", "--pipeline", "nightly-trian"],
        &["metrics", "nightly-trian", "rmse"],
        &["backfill", "nightly-trian", "--from", "2026-11-01", "--to", "2026-11-02"],
    ] {
        let out = weir(&[args, &["--server", &url]].concat());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("nightly-trian") && err.contains("did you mean"), "{args:?}: {err}");
        assert!(err.contains("nightly-train"), "{args:?} names the stored pipeline: {err}");
    }
    // A stored pipeline without runs is an empty list, not a refusal.
    let none = weir(&["runs", "--pipeline", "nightly-train", "--server", &url]);
    assert_eq!(none.status.code(), Some(0), "{}", text(&none.stderr));
    assert!(text(&none.stderr).contains("no runs found"), "{}", text(&none.stderr));
    // A name close to nothing stored says how to store it.
    let far = weir(&["runs", "--pipeline", "zzz", "--server", &url]);
    assert_eq!(far.status.code(), Some(1));
    assert!(text(&far.stderr).contains("no pipeline zzz: submit it first"), "{}", text(&far.stderr));
}

#[test]
fn backfill_shows_ticks_in_the_schedules_zone_as_schedules_does() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _engine = Server(common::server(&dir.path().join("data"), port, &[]));
    submit(dir.path(), "nightly", NIGHTLY, &url);

    let listed = weir(&["schedules", "--server", &url]);
    let listed = text(&listed.stdout);
    assert!(listed.contains("in Europe/Berlin"), "{listed}");
    let next = listed.lines().find(|l| l.trim_start().starts_with("next")).expect("a next line");
    assert!(next.contains(" 02:00:00 CET (+01:00)") || next.contains(" 02:00:00 CEST (+02:00)"), "{listed}");

    let dry = weir(&[
        "backfill",
        "nightly-train",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-02",
        "--dry-run",
        "--server",
        &url,
    ]);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    let lines: Vec<String> = text(&dry.stdout).lines().map(str::to_string).collect();
    // 02:00 in Berlin (01:00 UTC), with the zone said, as `weir schedules` says it.
    assert!(lines[0].starts_with("2026-11-01 02:00:00 CET (+01:00)  nightly-train-"), "{lines:?}");
    assert!(lines[1].starts_with("2026-11-02 02:00:00 CET (+01:00)  nightly-train-"), "{lines:?}");
    assert!(lines[2].starts_with("2 ticks: 1 would start, 1 would queue"), "{lines:?}");
}

const TWO_RMSE: &str = r#"name: two-rmse
steps:
  train:
    run: |
      echo '{"rmse": 0.5}' > "$WEIR_OUTPUTS/metrics.json"
    outputs: [metrics.json]
  validate:
    needs: [train]
    run: |
      echo '{"rmse": 0.4}' > "$WEIR_OUTPUTS/metrics.json"
    outputs: [metrics.json]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_several_steps_write_is_one_series_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _engine = Server(common::server(&dir.path().join("data"), port, &[]));
    submit(dir.path(), "two", TWO_RMSE, &url);
    let stop = CancellationToken::new();
    let agent = tokio::spawn(Agent::new(AgentConfig::new(url.clone(), dir.path().join("worker"))).run(stop.clone()));

    let u = url.clone();
    let started =
        tokio::task::spawn_blocking(move || weir(&["start", "two-rmse", "--watch", "--server", &u])).await.unwrap();
    assert_eq!(started.status.code(), Some(0), "{}\n{}", text(&started.stdout), text(&started.stderr));
    let run_id = text(&started.stdout).split_whitespace().find(|w| w.starts_with("two-rmse-")).unwrap().to_string();

    let mixed = weir(&["metrics", "two-rmse", "rmse", "--server", &url]);
    let err = text(&mixed.stderr);
    assert_eq!(mixed.status.code(), Some(1), "{err}");
    assert!(err.contains("rmse is written by several steps of two-rmse (train, validate)"), "{err}");
    assert!(err.contains("--step"), "says how to pick one: {err}");
    assert!(mixed.stdout.is_empty(), "no mixed series: {}", text(&mixed.stdout));

    let one = weir(&["metrics", "two-rmse", "rmse", "--step", "validate", "--server", &url]);
    let shown = text(&one.stdout);
    assert_eq!(one.status.code(), Some(0), "{}", text(&one.stderr));
    assert!(shown.contains(&format!("{run_id}  validate  0.4")), "{shown}");
    assert!(!shown.contains("train"), "{shown}");
    // --step is the PIPELINE METRIC form's: after a run id it is not read as `RUN STEP`.
    let run_step = weir(&["metrics", &run_id, "rmse", "--step", "train", "--server", &url]);
    assert_eq!(run_step.status.code(), Some(1));
    assert!(text(&run_step.stderr).contains(&format!("no pipeline {run_id}")), "{}", text(&run_step.stderr));

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
}
