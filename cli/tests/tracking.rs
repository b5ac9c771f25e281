//! `weir runs compare`, `weir metrics` and `weir lineage` (of a digest and of a model alias) as
//! users run them: the real `weir` binary against a real `weir server`, with a worker agent
//! running the steps as processes.

use std::process::{Command, Output};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_worker::{Agent, AgentConfig};

mod common;

const YAML: &str = r#"name: tracked
params:
  seed: 1
  lr: 0.1
steps:
  ingest:
    run: echo "rows for seed $WEIR_PARAM_SEED" > $WEIR_OUTPUTS/data.csv
    outputs: [data.csv]
  train:
    needs: [ingest]
    run: |
      (cat $WEIR_INPUTS/ingest/data.csv; echo "$WEIR_RUN_ID") > $WEIR_OUTPUTS/model.bin
      echo "{\"rmse\": $WEIR_PARAM_LR}" > $WEIR_OUTPUTS/metrics.json
    outputs: [model.bin, metrics.json]
    register:
      model: tracked
      file: model.bin
      alias: production
"#;

fn weir(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .args(["--server", url])
        .env("NO_COLOR", "1")
        .output()
        .expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Stdout of a command that must succeed.
fn ok(out: Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// The row of `table` whose field (after the marker column) starts with `field`.
fn row<'a>(table: &'a str, field: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.get(3..).is_some_and(|f| f.starts_with(field)))
        .unwrap_or_else(|| panic!("no {field}:\n{table}"))
}

async fn start(url: &str, params: &[&str]) -> String {
    let mut args = vec!["start".to_string(), "tracked".into(), "--watch".into()];
    for p in params {
        args.extend(["-p".to_string(), p.to_string()]);
    }
    let url = url.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        weir(&url, &args)
    })
    .await
    .unwrap();
    ok(out).lines().next().expect("the run id first").trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_metrics_and_lineage_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut engine = common::server(&dir.path().join("data"), port, &[]);
    let folder = dir.path().join("tracked");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), YAML).unwrap();
    ok(weir(&url, &["submit", &folder.display().to_string()]));
    let stop = CancellationToken::new();
    let agent = tokio::spawn(Agent::new(AgentConfig::new(url.clone(), dir.path().join("worker"))).run(stop.clone()));

    let a = start(&url, &["seed=1", "lr=0.5"]).await;
    let b = start(&url, &["seed=1", "lr=0.25"]).await;

    let table = ok(weir(&url, &["runs", "compare", &a, &b]));
    assert!(table.lines().next().unwrap().contains(&a) && table.contains(&b), "{table}");
    assert!(row(&table, "param lr").starts_with('*'), "a param that differs is marked:\n{table}");
    assert!(!row(&table, "param seed").starts_with('*'), "an equal param is not:\n{table}");
    assert!(row(&table, "param seed").ends_with(" 1"), "{table}");
    assert!(row(&table, "metric train rmse").starts_with('*'), "{table}");
    assert!(!row(&table, "output ingest/data.csv").starts_with('*'), "same data:\n{table}");
    assert!(row(&table, "output train/model.bin").starts_with('*'), "{table}");
    assert!(!table.contains("\x1b["), "NO_COLOR: no colour");
    let usage = weir(&url, &["runs", "compare", &a]);
    assert_eq!(usage.status.code(), Some(2), "one run is not a comparison");

    let metrics = ok(weir(&url, &["metrics", "tracked", "rmse"]));
    let values: Vec<&str> = metrics.lines().skip(1).take(2).map(|l| l.split_whitespace().last().unwrap()).collect();
    assert_eq!(values, ["0.5", "0.25"], "{metrics}");
    assert!(metrics.contains("rmse: 2 points, min 0.25, max 0.5, latest 0.25 (-0.25 vs previous)"), "{metrics}");
    let typo = weir(&url, &["metrics", "tracked", "rmes"]);
    assert_eq!(typo.status.code(), Some(1));
    assert!(text(&typo.stderr).contains("did you mean `rmse`?"), "{}", text(&typo.stderr));
    let nope = weir(&url, &["metrics", "untracked", "rmse"]);
    assert_eq!(nope.status.code(), Some(1));
    assert!(text(&nope.stderr).contains("weir pipelines"), "{}", text(&nope.stderr));

    // The digests come from `weir status`, as the lineage error says.
    let status = ok(weir(&url, &["status", &b]));
    let short_of = |step: &str, path: &str| {
        let line = status
            .lines()
            .find(|l| l.starts_with(step) && l.contains(path) && l.split_whitespace().count() >= 4)
            .unwrap_or_else(|| panic!("no {step} {path} output:\n{status}"));
        line.split_whitespace().nth(2).unwrap().to_string()
    };
    let (data, model) = (short_of("ingest", "data.csv"), short_of("train", "model.bin"));
    let up = ok(weir(&url, &["lineage", &model]));
    let lines: Vec<&str> = up.lines().collect();
    assert!(lines[0].starts_with("lineage of ") && lines[0].contains("upstream"), "{up}");
    assert!(lines[1].starts_with(&model) && lines[1].ends_with(&format!("{b}/train")), "{up}");
    assert!(
        lines[2].starts_with(&format!("└── {data}  data.csv")) && lines[2].ends_with(&format!("{b}/ingest")),
        "{up}"
    );
    let down = ok(weir(&url, &["lineage", &data, "--down"]));
    assert!(down.contains(&format!("{a}/train")) && down.contains(&format!("{b}/train")), "both runs' models:\n{down}");
    let by_alias = ok(weir(&url, &["lineage", "tracked@production"]));
    let lines: Vec<&str> = by_alias.lines().collect();
    assert!(lines[0].contains("(tracked version 2)"), "the alias moved to the second run's model:\n{by_alias}");
    assert!(lines[1].starts_with(&model) && lines[1].ends_with(&format!("{b}/train")), "{by_alias}");
    assert!(lines[2].contains("data.csv"), "{by_alias}");
    let unknown = weir(&url, &["lineage", "0123456789abcdef"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("weir status RUN"), "{}", text(&unknown.stderr));

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    engine.kill().unwrap();
    engine.wait().unwrap();
}
