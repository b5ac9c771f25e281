//! What the `weir` binary asks the engine instead of working out itself, through a real engine:
//! `weir submit --dry-run` (the server validates and stores nothing), and `weir plan`'s cache
//! lines for `weir run`'s data folder, answered by an engine started on that folder (never by
//! reading its store directly), which is refused while another weir holds the folder.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).env("NO_COLOR", "1").output().expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const GRID: &str = "name: grid
steps:
  prep:
    run: echo hi > \"$WEIR_OUTPUTS/a.txt\"
    outputs: [a.txt]
    cache: true
  train:
    needs: [prep]
    matrix: {lr: ['0.1', '0.2']}
    run: cat \"$WEIR_INPUTS/prep/a.txt\"
";

fn folder(dir: &Path) -> String {
    let folder = dir.join("grid");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), GRID).unwrap();
    folder.display().to_string()
}

#[test]
fn submit_dry_run_is_checked_by_the_server_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut engine = common::server(&dir.path().join("data"), port, &[]);
    let folder = folder(dir.path());

    let dry = weir(&["submit", &folder, "--dry-run", "--server", &url]);
    let said = text(&dry.stdout);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    assert!(said.starts_with("valid on the server: grid (2 steps, 3 after matrix expansion); version "), "{said}");
    assert!(said.ends_with(" would be new; nothing was stored\n"), "{said}");
    let listed = text(&weir(&["pipelines", "--server", &url]).stdout);
    assert!(!listed.contains("grid"), "nothing stored: {listed}");

    let stored = weir(&["submit", &folder, "--server", &url]);
    let version = said.split("version ").nth(1).unwrap().split(' ').next().unwrap();
    assert_eq!(text(&stored.stdout), format!("submitted grid version {version} (new)\n"), "the version it said");
    let again = text(&weir(&["submit", &folder, "--dry-run", "--server", &url]).stdout);
    assert!(again.contains(&format!("version {version} is already stored")), "{again}");
    // `weir plan` names the same version `weir submit` stored, offline.
    let planned = weir(&["plan", &folder, "--json"]);
    let planned: serde_json::Value = serde_json::from_slice(&planned.stdout).unwrap();
    let full = planned["version"].as_str().unwrap();
    assert!(full.starts_with(version) && version.len() >= 12, "plan {full}, submit {version}");
    let head = text(&weir(&["plan", &folder]).stdout);
    assert!(head.contains(&format!("(version {}, as `weir submit` stores it)", &full[..12])), "{head}");

    // `weir plan` on the server's data folder: the engine there holds it, and says so.
    let file = format!("{folder}/pipeline.yaml");
    let data = dir.path().join("data").display().to_string();
    let plan = weir(&["plan", &file, "--data-dir", &data]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    assert!(
        text(&plan.stdout).ends_with(&format!("  cannot read it: a running weir holds {data}\n")),
        "{}",
        text(&plan.stdout)
    );
    engine.kill().unwrap();
    engine.wait().unwrap();
}

#[test]
fn plan_asks_an_engine_on_weir_runs_data_folder_what_its_cache_holds() {
    let dir = tempfile::tempdir().unwrap();
    let folder = folder(dir.path());
    // A data folder inside the pipeline's folder, under a name .weirignore does not know:
    // `weir run` leaves it out of the bundle, and so must the plan, or every key would differ.
    let data = format!("{folder}/state");
    let file = format!("{folder}/pipeline.yaml");
    let before = weir(&["plan", &file, "--data-dir", &data]);
    assert!(!text(&before.stdout).contains("step cache"), "never run here: {}", text(&before.stdout));

    let run = weir(&["run", &folder, "--data-dir", &data]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let plan = weir(&["plan", &file, "--data-dir", &data]);
    let said = text(&plan.stdout);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    assert!(said.contains(&format!("\nstep cache ({data}):\n  prep ")), "{said}");
    let prep = said.lines().find(|l| l.starts_with("  prep ")).unwrap_or_default();
    assert!(prep.ends_with(")") && prep.contains(" cached (from run grid-"), "{said}");
    assert!(said.ends_with("1 from the cache, 2 to run\n"), "{said}");
    let off = text(&weir(&["plan", &file, "--data-dir", &data, "--no-cache"]).stdout);
    assert!(off.ends_with("0 from the cache, 3 to run\n"), "{off}");
    // Asking stored nothing: the data folder still holds the one pipeline `weir run` stored.
    let listed = text(&weir(&["pipelines", "--local", &data]).stdout);
    assert_eq!(listed.lines().filter(|l| l.starts_with("grid")).count(), 1, "{listed}");
}
