//! Explanations end to end, against a real `weir server` (a child process) and a real worker
//! agent: a step writes `explain.json` beside its model, the version keeps it, `weir models
//! show` charts it, `weir models diff` compares two versions (also through the API), a
//! `register.when` on `explain.*` refuses a leaky challenger naming the values it read, and a
//! malformed file is warned about in the step's log while the step still succeeds.

use std::process::{Command, Output};

use tokio_util::sync::CancellationToken;
use weir_proto::v1;
use weir_worker::{Agent, AgentConfig};

mod common;

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).env("NO_COLOR", "1").output().expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A real `weir server` (a child) with a worker agent in this process, and the pipeline `yaml`
/// submitted from a folder `name`.
struct Setup {
    _dir: tempfile::TempDir,
    url: String,
    engine: std::process::Child,
    stop: CancellationToken,
    agent: tokio::task::JoinHandle<Result<(), weir_worker::AgentError>>,
}

impl Setup {
    async fn submitted(name: &str, yaml: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let url = format!("http://127.0.0.1:{port}");
        let engine = common::server(&dir.path().join("data"), port, &[]);
        let stop = CancellationToken::new();
        let agent =
            tokio::spawn(Agent::new(AgentConfig::new(url.clone(), dir.path().join("worker"))).run(stop.clone()));
        let folder = dir.path().join(name);
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("pipeline.yaml"), yaml).unwrap();
        let setup = Setup { _dir: dir, url, engine, stop, agent };
        let sub = setup.weir(&["submit", &folder.display().to_string()]).await;
        assert_eq!(sub.status.code(), Some(0), "{}", text(&sub.stderr));
        setup
    }

    /// `weir ARGS --server URL`, off the async threads.
    async fn weir(&self, args: &[&str]) -> Output {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--server".to_string(), self.url.clone()]);
        tokio::task::spawn_blocking(move || weir(&all.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap()
    }

    async fn stop(mut self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.agent).await;
        self.engine.kill().unwrap();
        self.engine.wait().unwrap();
    }
}

const YAML: &str = r#"name: expl
params:
  variant: good
steps:
  train:
    run: |
      printf '{"variant": "%s"}\n' "$WEIR_PARAM_VARIANT" > "$WEIR_OUTPUTS/model.json"
      case "$WEIR_PARAM_VARIANT" in
        good) echo '{"method": "permutation", "metric": "accuracy drop", "importances": {"income": 0.3, "tenure": 0.2, "age": 0.05}}' ;;
        good2) echo '{"method": "permutation", "importances": {"income": 0.28, "age": 0.21, "tenure": 0.2}}' ;;
        leaky) echo '{"method": "permutation", "importances": {"customer_id": 0.61, "income": 0.12, "tenure": 0.1, "age": 0.02}}' ;;
        *) echo '{"method": "permutation", "importances": {"income": "high"}}' ;;
      esac > "$WEIR_OUTPUTS/explain.json"
    outputs: [model.json, explain.json]
    register:
      model: churn
      file: model.json
      alias: production
      when: "explain.top != 'customer_id' && explain.rank_shift <= 2"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explanations_are_kept_charted_compared_and_gate_promotions() {
    let setup = Setup::submitted("expl", YAML).await;
    let mut runs = Vec::new();
    for variant in ["good", "good2", "leaky", "malformed"] {
        let run = setup.weir(&["start", "expl", "-p", &format!("variant={variant}"), "--watch"]).await;
        assert_eq!(run.status.code(), Some(0), "{variant}: {}\n{}", text(&run.stdout), text(&run.stderr));
        runs.push(text(&run.stdout).lines().next().unwrap().to_string());
    }

    // v1 moved production (it held nothing), v2 kept the ranking close enough (shift 1), the
    // leaky v3 was refused with the value its gate read, and v4 has no explanation to read.
    let show = setup.weir(&["models", "show", "churn"]).await;
    let out = text(&show.stdout);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
    assert!(out.starts_with("model churn: latest v4, aliases production=v2\n"), "{out}");
    let refused: Vec<&str> = out.lines().filter(|l| l.contains("REFUSED")).collect();
    assert_eq!(refused.len(), 2, "{out}");
    assert!(
        refused[0].contains("v2 -> v3")
            && refused[0].contains(
                "`explain.top != 'customer_id' && explain.rank_shift <= 2` is false with explain.top = 'customer_id'"
            ),
        "{out}"
    );
    assert!(refused[1].contains("v2 -> v4") && refused[1].contains("explain.top is not set"), "{out}");
    let moved = out.lines().find(|l| l.contains("v1 -> v2")).expect("v2 moved production");
    assert!(moved.contains("explain.top = 'income', explain.rank_shift = 1"), "{moved}");
    // The newest explanation (v3's, v4 has none) as bars, largest first.
    let chart: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("explanation of")).take(5).collect();
    assert_eq!(chart[0], "explanation of v3 (permutation): top 4 of 4 features", "{out}");
    assert!(chart[1].starts_with(&format!("   1  customer_id  {}", "█".repeat(30))), "{out}");
    assert!(chart[1].ends_with(" 0.61") && chart[4].contains("age") && chart[4].ends_with(" 0.02"), "{out}");

    let diff = setup.weir(&["models", "diff", "churn", "1", "3"]).await;
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff.stderr));
    let lines: Vec<String> = text(&diff.stdout).lines().map(|l| l.trim_end().to_string()).collect();
    assert_eq!(
        lines,
        [
            "churn v1 -> v3 explanations (permutation): rank shift 3 (the largest rank move among either top 10)",
            "",
            "FEATURE      RANK    CHANGE    IMPORTANCE",
            "customer_id  - -> 1  appeared  - -> 0.61",
            "income       1 -> 2  down 1    0.3 -> 0.12",
            "tenure       2 -> 3  down 1    0.2 -> 0.1",
            "age          3 -> 4  down 1    0.05 -> 0.02",
        ]
    );
    let none = setup.weir(&["models", "diff", "churn", "1", "4"]).await;
    assert_eq!(none.status.code(), Some(1));
    assert!(text(&none.stderr).contains("version 4 of model churn has no explanation"), "{}", text(&none.stderr));

    // The same through the API.
    let mut client = common::client(&setup.url).await;
    let request = v1::DiffModelExplanationsRequest { model: "churn".into(), from_version: 1, to_version: 2 };
    let d = client.diff_model_explanations(request).await.unwrap().into_inner();
    assert_eq!((d.rank_shift, d.from_method.as_str(), d.changes.len()), (1, "permutation", 3));
    let model = client.get_model(v1::GetModelRequest { name: "churn".into() }).await.unwrap().into_inner();
    let v1 = model.versions.iter().find(|v| v.version == 1).unwrap().explanation.clone().unwrap();
    assert_eq!(
        (v1.method.as_str(), v1.metric.as_str(), v1.importances[0].feature.as_str()),
        ("permutation", "accuracy drop", "income")
    );
    assert!(model.versions.iter().find(|v| v.version == 4).unwrap().explanation.is_none());

    // The malformed file: the step succeeded, its log says which field was wrong.
    let status = setup.weir(&["status", &runs[3]]).await;
    assert!(text(&status.stdout).contains("succeeded"), "{}", text(&status.stdout));
    let logs = setup.weir(&["logs", &runs[3], "train"]).await;
    let all = format!("{}{}", text(&logs.stdout), text(&logs.stderr));
    assert!(
        all.contains(
            "weir: explain.json: `importances.income` must be a finite number, found a string \"high\": left out"
        ),
        "{all}"
    );
    assert!(all.contains("the step has no explanation; the step's success stands"), "{all}");

    setup.stop().await;
}

const GATED: &str = r#"name: gated
params:
  variant: good
steps:
  train:
    run: |
      if [ "$WEIR_PARAM_VARIANT" = good ]; then
        echo '{"method": "shap", "importances": {"income": 0.3, "customer_id": 0.01}}'
      else
        echo '{"method": "shap", "importances": {"customer_id": 0.7, "income": 0.3}}'
      fi > "$WEIR_OUTPUTS/explain.json"
    outputs: [explain.json]
    gate: "explain.top != 'customer_id' && explain.importance.customer_id < 0.1"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_gate_reads_its_own_explanation_and_names_the_values() {
    let setup = Setup::submitted("gated", GATED).await;
    let good = setup.weir(&["start", "gated", "-p", "variant=good", "--watch"]).await;
    assert_eq!(good.status.code(), Some(0), "{}\n{}", text(&good.stdout), text(&good.stderr));
    let leaky = setup.weir(&["start", "gated", "-p", "variant=leaky", "--watch"]).await;
    assert_eq!(leaky.status.code(), Some(1), "{}\n{}", text(&leaky.stdout), text(&leaky.stderr));
    let run = text(&leaky.stdout).lines().next().unwrap().to_string();
    let status = setup.weir(&["status", &run]).await;
    let out = text(&status.stdout);
    assert!(
        out.contains("gate `explain.top != 'customer_id' && explain.importance.customer_id < 0.1` is false: explain.top = 'customer_id'"),
        "{out}"
    );

    setup.stop().await;
}
