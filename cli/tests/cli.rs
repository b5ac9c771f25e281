//! The `weir` binary as a user meets it: exit codes, what goes to stdout and stderr, `-p`
//! overrides, output formats and `--help`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).env("NO_COLOR", "1").output().expect("run weir")
}

fn example() -> String {
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("root").to_path_buf();
    root.join("pipelines/ml-retrain/pipeline.yaml").display().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write");
    path.display().to_string()
}

#[test]
fn validate_exit_codes() {
    let ok = weir(&["validate", &example()]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("ok: ") && text(&ok.stdout).contains("8 after matrix expansion"));

    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.yaml", "name: x\nsteps:\n  a:\n    run: 'true'\n    neds: [b]\n");
    let out = weir(&["validate", &example(), &bad]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad.yaml:5:5"), "{err}");
    assert!(err.contains("did you mean `needs`?"), "{err}");
    assert!(err.contains("1 of 2 files invalid"), "{err}");

    let missing = weir(&["validate", "/nonexistent/p.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot read `/nonexistent/p.yaml`"));

    assert_eq!(weir(&["validate"]).status.code(), Some(2), "no file is a usage error");
    assert_eq!(weir(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn a_colon_in_a_plain_run_value_says_to_quote_it_or_use_a_block() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "pipeline.yaml", "name: x\nsteps:\n  a:\n    run: echo {\"a\": 1}\n");
    let out = weir(&["validate", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("pipeline.yaml:4:"), "{err}");
    assert!(err.contains("the command holds `: `"), "{err}");
    assert!(err.contains("    run: 'echo {\"a\": 1}'") && err.contains("    run: |\n"), "{err}");
    assert!(!err.contains("check the indentation"), "{err}");
}

#[test]
fn a_folder_stands_for_its_pipeline_yaml() {
    let folder = Path::new(&example()).parent().expect("folder").display().to_string();
    let out = weir(&["validate", &folder]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("pipeline.yaml"), "{}", text(&out.stdout));
    let empty = tempfile::tempdir().unwrap();
    let out = weir(&["plan", &empty.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("pipeline.yaml"), "{}", text(&out.stderr));
}

#[test]
fn file_size_limit_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!("name: x\n# {}\nsteps:\n  a:\n    run: 'true'\n", "x".repeat(4000));
    let file = write(dir.path(), "big.yaml", &body);
    let out = weir(&["validate", "--max-file-size", "1Ki", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("more than the limit of 1024 bytes"), "{}", text(&out.stderr));
    assert_eq!(weir(&["validate", "--max-file-size", "8Ki", &file]).status.code(), Some(0));
}

#[test]
fn expansion_limits_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let body = "name: m\nsteps:\n  a:\n    matrix: {x: [1, 2, 3], y: [1, 2]}\n    run: 'true'\n  b:\n    run: 'true'\n";
    let file = write(dir.path(), "m.yaml", body);
    assert_eq!(weir(&["validate", &file]).status.code(), Some(0));
    let matrix = weir(&["validate", "--max-matrix", "5", &file]);
    assert_eq!(matrix.status.code(), Some(1));
    assert!(
        text(&matrix.stderr).contains("expands to 6 instances, more than the limit of 5"),
        "{}",
        text(&matrix.stderr)
    );
    let steps = weir(&["validate", "--max-steps", "6", &file]);
    assert_eq!(steps.status.code(), Some(1));
    assert!(text(&steps.stderr).contains("7 step instances, more than the limit of 6"), "{}", text(&steps.stderr));
    let env = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["validate", &file])
        .env("WEIR_MAX_MATRIX", "5")
        .output()
        .expect("run weir");
    assert_eq!(env.status.code(), Some(1), "WEIR_MAX_MATRIX is honoured");
}

#[test]
fn plan_renders_params_and_checks_overrides() {
    let out = weir(&["plan", &example(), "-p", "rows=500", "--run-id", "r42"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("--rows \"${WEIR_PARAM_ROWS}\" "), "{stdout}");
    assert!(stdout.contains("with: WEIR_PARAM_ROWS=500\n"), "{stdout}");
    assert!(stdout.contains("train[l2=0.0,features=quadratic]"), "{stdout}");
    assert!(stdout.contains("needs: train[*] (4 instances)"), "{stdout}");
    assert!(stdout.contains("RUN_ID=r42"), "{stdout}");

    let bad_type = weir(&["plan", &example(), "-p", "rows=many"]);
    assert_eq!(bad_type.status.code(), Some(1));
    assert!(text(&bad_type.stderr).contains("param `rows` expects an int, got `many`"), "{}", text(&bad_type.stderr));

    let unknown = weir(&["plan", &example(), "-p", "rowz=5"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("did you mean `rows`?"), "{}", text(&unknown.stderr));

    let pattern = weir(&["plan", &example(), "-p", "model_name=Bad Name"]);
    assert_eq!(pattern.status.code(), Some(1));
    assert!(text(&pattern.stderr).contains("does not match the pattern"), "{}", text(&pattern.stderr));

    assert_eq!(weir(&["plan", &example(), "-p", "novalue"]).status.code(), Some(2));
}

#[test]
fn plan_json_is_machine_readable() {
    let out = weir(&["plan", &example(), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let steps = v["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 8);
    assert_eq!(steps[0]["name"], "ingest");
    assert_eq!(steps[6]["name"], "validate");
    assert_eq!(steps[6]["needs"].as_array().unwrap().len(), 4, "fan-in waits for every instance");
    assert_eq!(steps[2]["action"]["command"][3], "0.0");
    assert_eq!(v["env"]["WEIR_PARAM_ROWS"], "2000");
    assert_eq!(v["hash"].as_str().unwrap().len(), 64);
    // Params as an object of typed values, read as `.params.rows`.
    assert_eq!(v["params"]["rows"], 2000);
    assert_eq!(v["params"]["model_name"], "churn");
    assert_eq!(v["params"]["deploy"], true);
}

#[test]
fn required_params_must_be_given() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "p.yaml",
        "name: x\nparams:\n  data: {type: string}\nsteps:\n  a:\n    run: cat {{ params.data }}\n",
    );
    let out = weir(&["plan", &file]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("param `data` is required") && err.contains("p.yaml:3:3") && err.contains("-p data=VALUE"),
        "{err}"
    );
    // The script as it runs, holding a reference; the value it holds shown beside it.
    let out = weir(&["plan", &file, "-p", "data=/tmp/x y; $(id)"]);
    let shown = text(&out.stdout);
    assert!(shown.contains("run: cat \"${WEIR_PARAM_DATA}\"\n"), "{shown}");
    assert!(shown.contains("with: WEIR_PARAM_DATA=/tmp/x y; $(id)\n"), "{shown}");
}

#[test]
fn graph_formats() {
    let mermaid = text(&weir(&["graph", &example()]).stdout);
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    assert!(mermaid.contains("subgraph stage2[\"training\"]"), "{mermaid}");
    assert_eq!(mermaid.matches(" --> ").count(), 10, "{mermaid}");
    let dot = text(&weir(&["graph", "--format", "dot", &example()]).stdout);
    assert!(dot.starts_with("digraph \"ml-retrain\" {"), "{dot}");
    assert!(dot.contains("label=\"validation\""), "{dot}");
    assert_eq!(dot.matches(" -> ").count(), 10, "{dot}");
    assert_eq!(weir(&["graph", "--format", "png", &example()]).status.code(), Some(2));
}

#[test]
fn schema_is_json() {
    let out = weir(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["$schema"], "http://json-schema.org/draft-07/schema#");
}

#[test]
fn help_names_every_command_and_the_exit_codes() {
    let help = text(&weir(&["--help"]).stdout);
    for word in [
        "validate",
        "plan",
        "graph",
        "schema",
        "schedules",
        "backfill",
        "backup",
        "restore",
        "Exit status",
        "usage error",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let restore_help = text(&weir(&["restore", "--help"]).stdout);
    for word in ["FILE", "--data-dir", "missing or empty", "Exit status", "truncated"] {
        assert!(restore_help.contains(word), "restore --help lacks {word}:\n{restore_help}");
    }
    let plan_help = text(&weir(&["plan", "--help"]).stdout);
    for word in ["--param", "--json", "--run-id", "--max-file-size", "--max-matrix", "--max-steps"] {
        assert!(plan_help.contains(word), "plan --help lacks {word}:\n{plan_help}");
    }
}
