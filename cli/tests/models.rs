//! `weir models` against a real `weir server` (a child process) with a real worker agent: three
//! runs register three versions, the gate refuses the worst, and the CLI lists, shows (with the
//! refused promotion's values), promotes, rolls back and downloads with a digest check, exiting
//! 1 with a next step when the server refuses.

use std::process::{Command, Output};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_worker::{Agent, AgentConfig};

mod common;

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).env("NO_COLOR", "1").output().expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const YAML: &str = r#"name: reg
params:
  rmse: 0.5
steps:
  train:
    run: |
      printf '{"rmse": %s}\n' "$WEIR_PARAM_RMSE" > "$WEIR_OUTPUTS/model.json"
      printf '{"rmse": %s}\n' "$WEIR_PARAM_RMSE" > "$WEIR_OUTPUTS/metrics.json"
    outputs: [model.json, metrics.json]
    register: {model: churn, file: model.json, alias: production, when: "metrics.rmse < current.metrics.rmse"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_models_lists_shows_promotes_rolls_back_and_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut engine = common::server(&dir.path().join("data"), port, &[]);
    let stop = CancellationToken::new();
    let agent = tokio::spawn(Agent::new(AgentConfig::new(url.clone(), dir.path().join("worker"))).run(stop.clone()));

    let folder = dir.path().join("reg");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), YAML).unwrap();
    let w = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--server".to_string(), url.clone()]);
        let all2 = all.clone();
        async move {
            tokio::task::spawn_blocking(move || weir(&all2.iter().map(String::as_str).collect::<Vec<_>>()))
                .await
                .unwrap()
        }
    };
    let none = w(&["models"]).await;
    assert_eq!(none.status.code(), Some(0), "{}", text(&none.stderr));
    assert!(text(&none.stderr).contains("no models"), "{}", text(&none.stderr));
    let sub = w(&["submit", &folder.display().to_string()]).await;
    assert_eq!(sub.status.code(), Some(0), "{}", text(&sub.stderr));
    for rmse in ["0.5", "0.3", "0.9"] {
        let run = w(&["start", "reg", "-p", &format!("rmse={rmse}"), "--watch"]).await;
        assert_eq!(run.status.code(), Some(0), "{}\n{}", text(&run.stdout), text(&run.stderr));
    }

    let list = w(&["models"]).await;
    let out = text(&list.stdout);
    assert!(out.starts_with("NAME   LATEST  ALIASES        UPDATED\nchurn  v3      production=v2  "), "{out}");

    let show = w(&["models", "show", "churn"]).await;
    let out = text(&show.stdout);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
    assert!(out.starts_with("model churn: latest v3, aliases production=v2\n"), "{out}");
    assert!(out.contains("rmse=0.9"), "{out}");
    let refused = out.lines().find(|l| l.contains("REFUSED")).expect("a refused promotion");
    assert!(
        refused.contains("v2 -> v3") && refused.contains("metrics.rmse = 0.9, current.metrics.rmse = 0.3"),
        "{refused}"
    );

    // A dry run says what would move and moves nothing.
    let dry = w(&["models", "promote", "churn", "3", "--alias", "production", "--dry-run"]).await;
    assert_eq!(
        text(&dry.stdout),
        "dry run, nothing recorded: would move churn: production v2 -> v3 (promoted by hand)\n",
        "{}",
        text(&dry.stderr)
    );
    assert!(text(&w(&["models"]).await.stdout).contains("production=v2"), "the dry run moved nothing");
    let promote = w(&["models", "promote", "churn", "3", "--alias", "production", "--reason", "canary ok"]).await;
    assert_eq!(
        text(&promote.stdout),
        "churn: production v2 -> v3 (promoted by hand: canary ok)\n",
        "{}",
        text(&promote.stderr)
    );
    let back = w(&["models", "rollback", "churn", "--alias", "production"]).await;
    assert_eq!(text(&back.stdout), "churn: production v3 -> v2 (rollback)\n", "{}", text(&back.stderr));
    // the history names who moved the alias by hand (on a server without tokens: anonymous),
    // and `-` for a run's registration
    let shown = text(&w(&["models", "show", "churn"]).await.stdout);
    let moves: Vec<&str> = shown
        .lines()
        .filter(|l| l.contains("promoted by hand: canary ok") || l.contains("(rollback)") || l.contains("  rollback"))
        .collect();
    assert!(!moves.is_empty() && moves.iter().all(|l| l.contains(" anonymous ")), "{shown}");
    assert!(
        shown.lines().any(|l| l.contains(" -    registered by run") || l.contains(" -          registered by run")),
        "{shown}"
    );

    let file = dir.path().join("out").join("model.json");
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let get = w(&["models", "get", "churn@production", "-o", &file.display().to_string()]).await;
    assert_eq!(get.status.code(), Some(0), "{}", text(&get.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"rmse\": 0.3}\n");
    assert!(text(&get.stderr).contains("churn@production is churn v2"), "{}", text(&get.stderr));
    assert_eq!(std::fs::read_dir(dir.path().join("out")).unwrap().count(), 1, "no temporary file is left behind");
    let stdout = w(&["models", "get", "churn@1", "-o", "-"]).await;
    assert_eq!(text(&stdout.stdout), "{\"rmse\": 0.5}\n", "{}", text(&stdout.stderr));

    let unknown = w(&["models", "show", "chrun"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("did you mean `churn`?"), "{}", text(&unknown.stderr));
    let no_version = w(&["models", "promote", "churn", "9", "--alias", "production"]).await;
    assert_eq!(no_version.status.code(), Some(1));
    assert!(text(&no_version.stderr).contains("versions are 1 to 3"), "{}", text(&no_version.stderr));
    let fresh = w(&["models", "promote", "churn", "1", "--alias", "staging"]).await;
    assert_eq!(fresh.status.code(), Some(0), "{}", text(&fresh.stderr));
    let nothing = w(&["models", "rollback", "churn", "--alias", "staging"]).await;
    assert_eq!(nothing.status.code(), Some(1));
    assert!(text(&nothing.stderr).contains("nothing to go back to"), "{}", text(&nothing.stderr));
    let usage = w(&["models", "promote", "churn", "0", "--alias", "production"]).await;
    assert_eq!(usage.status.code(), Some(2), "versions count from 1: {}", text(&usage.stderr));

    let help = text(&weir(&["models", "--help"]).stdout);
    for word in ["show", "promote", "rollback", "get", "docs/registry.md", "Exit status"] {
        assert!(help.contains(word), "models --help lacks {word}:\n{help}");
    }
    let help = text(&weir(&["models", "get", "--help"]).stdout);
    for word in ["NAME[@ALIAS|@N]", "-o", "BLAKE3", "--server"] {
        assert!(help.contains(word), "models get --help lacks {word}:\n{help}");
    }

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    engine.kill().unwrap();
    engine.wait().unwrap();
}
