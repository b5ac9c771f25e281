//! The step cache as a user meets it through the `weir` binary: `weir run` twice on the
//! example pipeline (the second run takes its cacheable steps from the cache, and `weir plan`
//! says so beforehand), `--no-cache`; and against a real `weir server`, `weir cache explain`
//! naming the changed param and `weir retry RUN --from STEP` with and without `--dry-run`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_worker::{Agent, AgentConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).env("NO_COLOR", "1").output().expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The summary line of a step in `weir run`'s or `weir start --watch`'s closing table.
fn row<'a>(out: &'a str, step: &str) -> &'a str {
    out.lines().find(|l| l.split_whitespace().next() == Some(step)).unwrap_or_else(|| panic!("no {step} in:\n{out}"))
}

#[test]
fn a_second_weir_run_of_the_example_takes_its_cacheable_steps_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let pipeline = root().join("pipelines/ml-retrain").display().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", &pipeline, "--data-dir", &data_arg];
        args.extend_from_slice(extra);
        weir(&args)
    };
    let first = run(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert!(!text(&first.stdout).contains("cached"), "{}", text(&first.stdout));

    let plan = weir(&["plan", &pipeline, "--data-dir", &data_arg]);
    let said = text(&plan.stdout);
    assert!(said.contains("step cache ("), "{said}");
    assert!(said.contains("6 from the cache, 2 to run"), "ingest, preprocess and the 4 trains: {said}");
    let other = text(&weir(&["plan", &pipeline, "--data-dir", &data_arg, "-p", "seed=8"]).stdout);
    assert!(other.contains("param.seed: 7 -> 8"), "{other}");
    assert!(other.contains("0 from the cache, 8 to run"), "{other}");

    let second = run(&[]);
    let out = text(&second.stdout);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    for step in ["ingest", "preprocess", "train[l2=0.0,features=linear]", "train[l2=1.0,features=quadratic]"] {
        assert!(row(&out, step).contains("cached"), "{step}: {out}");
    }
    for step in ["validate", "deploy"] {
        assert!(row(&out, step).contains("succeeded"), "{step} has no `cache:`: {out}");
    }

    let fresh = run(&["--no-cache"]);
    let out = text(&fresh.stdout);
    assert_eq!(fresh.status.code(), Some(0), "{}", text(&fresh.stderr));
    assert!(row(&out, "ingest").contains("succeeded") && !out.contains("cached"), "{out}");
}

const YAML: &str = r#"name: cachy
params:
  b: x
steps:
  s1:
    run: echo one > "$WEIR_OUTPUTS/one.txt"
    outputs: [one.txt]
    cache: true
  s2:
    needs: [s1]
    run: echo "b={{ params.b }}" > "$WEIR_OUTPUTS/two.txt"
    outputs: [two.txt]
    cache: true
  s3:
    needs: [s2]
    run: cat "$WEIR_INPUTS/s2/two.txt"
"#;

/// The run id in the last line of `weir start --watch`'s summary (`run ID succeeded in ...`).
fn run_id(out: &str) -> String {
    let last = out.lines().rev().find(|l| l.starts_with("run ")).unwrap_or_else(|| panic!("no summary: {out}"));
    last.split_whitespace().nth(1).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_explain_names_the_changed_param_and_retry_from_reruns_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut engine = common::server(&dir.path().join("data"), port, &[]);
    let folder = dir.path().join("cachy");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), YAML).unwrap();
    let sub = weir(&["submit", &folder.display().to_string(), "--server", &url]);
    assert_eq!(sub.status.code(), Some(0), "{}", text(&sub.stderr));
    let stop = CancellationToken::new();
    let agent = tokio::spawn(Agent::new(AgentConfig::new(url.clone(), dir.path().join("worker"))).run(stop.clone()));

    let u = url.clone();
    let cli = move |args: Vec<String>| {
        let u = u.clone();
        tokio::task::spawn_blocking(move || {
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            all.extend(["--server", &u]);
            weir(&all)
        })
    };
    let args = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let first = cli(args(&["start", "cachy", "--watch"])).await.unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let id1 = run_id(&text(&first.stdout));
    let changed = cli(args(&["start", "cachy", "-p", "b=y", "--watch"])).await.unwrap();
    let out = text(&changed.stdout);
    assert!(row(&out, "s1").contains("cached") && row(&out, "s2").contains("succeeded"), "{out}");
    let id2 = run_id(&out);
    let file = folder.join("pipeline.yaml").display().to_string();
    let planned = cli(args(&["plan", &file, "--remote", "-p", "b=y"])).await.unwrap();
    let said = text(&planned.stdout);
    assert_eq!(planned.status.code(), Some(0), "{}", text(&planned.stderr));
    assert!(said.contains(&format!("s2  cached (from run {id2})")), "{said}");
    assert!(said.contains("2 from the cache, 1 to run"), "{said}");

    let why = cli(args(&["cache", "explain", &id2, "s2"])).await.unwrap();
    let said = text(&why.stdout);
    assert_eq!(why.status.code(), Some(0), "{}", text(&why.stderr));
    assert!(said.starts_with("s2: ran (cache miss)\n"), "{said}");
    assert!(said.contains(&format!("what differs from run {id1}:")), "{said}");
    assert!(said.contains("param.b  x  ->  y"), "{said}");
    let hit = text(&cli(args(&["cache", "explain", &id2, "s1"])).await.unwrap().stdout);
    assert!(hit.starts_with("s1: cached\n") && hit.contains(&id1), "{hit}");

    let dry = cli(args(&["retry", &id1, "--from", "s2", "--dry-run"])).await.unwrap();
    assert_eq!(
        text(&dry.stdout),
        format!("dry run: retrying {id1} from s2 would\n  run again (2): s2, s3\n  reuse from {id1} (1): s1\n")
    );
    let again = cli(args(&["retry", &id1, "--from", "s2", "--watch"])).await.unwrap();
    let out = text(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{out}{}", text(&again.stderr));
    assert!(row(&out, "s1").contains("cached"), "{out}");
    assert!(row(&out, "s2").contains("succeeded") && row(&out, "s3").contains("succeeded"), "{out}");
    let bad = cli(args(&["retry", &id1, "--from", "s9"])).await.unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("no step s9"), "{}", text(&bad.stderr));

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    engine.kill().unwrap();
    engine.wait().unwrap();
}

/// `--local DIR`: after `weir run`, the client commands read and act on its data folder with an
/// engine and worker of their own, no server: explain, retry --from (its steps run here),
/// models and lineage.
#[test]
fn client_commands_work_on_weir_runs_data_folder_with_local() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let pipeline = root().join("pipelines/ml-retrain").display().to_string();
    let none = weir(&["runs", "--local", &data_arg]);
    assert_eq!(none.status.code(), Some(3), "nothing there yet");
    assert!(text(&none.stderr).contains("no `weir run` data there yet"), "{}", text(&none.stderr));
    let first = weir(&["run", &pipeline, "--data-dir", &data_arg]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let id = run_id(&text(&first.stdout));
    let local = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--local", &data_arg]);
        weir(&all)
    };

    let why = local(&["cache", "explain", &id, "ingest"]);
    assert_eq!(why.status.code(), Some(0), "{}", text(&why.stderr));
    assert!(text(&why.stdout).contains("this was the first"), "{}", text(&why.stdout));
    let models = text(&local(&["models", "show", "churn"]).stdout);
    assert!(models.contains("production"), "{models}");
    let lineage = text(&local(&["lineage", "churn@production"]).stdout);
    assert!(lineage.contains("raw.csv") && lineage.contains("/ingest"), "{lineage}");

    let again = local(&["retry", &id, "--from", "validate"]);
    let out = text(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{out}{}", text(&again.stderr));
    assert!(out.contains("run again (2): validate, deploy"), "{out}");
    assert!(row(&out, "ingest").contains("cached") && row(&out, "deploy").contains("succeeded"), "{out}");
}
