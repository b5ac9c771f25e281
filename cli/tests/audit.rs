//! The audit log through the `weir` binary against a real `weir server` with named tokens:
//! each kind of mutation (submit, start, cancel, retry, approve, schedule pause, resume and
//! backfill, promote, rollback, token create and revoke), made by different people, is listed
//! by `weir audit` with its actor, role and outcome after the server was killed with SIGKILL
//! and started again; a viewer's refused start is listed too; `--who` and `--since` filter.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const ADA: &str = "ada-admin-token-0123456789abcdef0123";
const OTTO: &str = "otto-operator-token-0123456789abcdef";
const VIC: &str = "vic-viewer-token-0123456789abcdef012";

const YAML: &str = r#"name: nightly
schedule:
  cron: "0 2 * * *"
  timezone: UTC
steps:
  gate:
    approval: {message: "go?", timeout: 1h}
    run: echo gate
  train:
    needs: [gate]
    run: sleep 30
"#;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn weir(url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .args(["--server", url, "--token", token])
        .env("NO_COLOR", "1")
        .env("USER", "laptop-user")
        .output()
        .expect("run weir")
}

/// `weir ARGS` that must succeed; its stdout.
fn ok(url: &str, token: &str, args: &[&str]) -> String {
    let out = weir(url, token, args);
    assert_eq!(out.status.code(), Some(0), "weir {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The server, with the token file and a key that seals step secrets (its file beside the tokens).
fn start_server(data: &Path, port: u16, tokens: &Path) -> std::process::Child {
    let key = tokens.with_file_name("secrets.key");
    common::server(
        data,
        port,
        &["--token-file", &tokens.display().to_string(), "--secrets-key", &key.display().to_string()],
    )
}

/// `weir secrets set NAME` with `value` on its standard input, which must succeed.
fn set_secret(url: &str, token: &str, name: &str, value: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["secrets", "set", name, "--server", url, "--token", token])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weir");
    child.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "weir secrets set: {}", text(&out.stderr));
}

/// The run id `weir start` printed.
fn run_id(stdout: &str) -> String {
    stdout.split_whitespace().find(|w| w.starts_with("nightly-")).unwrap_or_else(|| panic!("{stdout}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_mutation_is_listed_with_its_actor_after_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("ada:admin={ADA}\notto:operator={OTTO}\nvic:viewer={VIC}\nbuilder:worker=worker-token-0123456789abcdef0123456\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = dir.path().join("secrets.key");
        std::fs::write(&key, "5e".repeat(32)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let data = dir.path().join("data");
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut engine = start_server(&data, port, &tokens);

    let folder = dir.path().join("nightly");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), YAML).unwrap();
    let u = url.as_str();
    ok(u, ADA, &["submit", &folder.display().to_string()]);
    // a viewer may not start a run: refused (exit 1) and recorded
    let denied = weir(u, VIC, &["start", "nightly"]);
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied.stderr));
    assert!(text(&denied.stderr).contains("`vic` (viewer) may not call"), "{}", text(&denied.stderr));
    let first = run_id(&ok(u, OTTO, &["start", "nightly"]));
    ok(u, OTTO, &["approve", &first, "gate"]);
    ok(u, OTTO, &["cancel", &first]);
    ok(u, OTTO, &["retry", &first]);
    ok(u, OTTO, &["schedules", "pause", "nightly"]);
    ok(u, OTTO, &["schedules", "resume", "nightly"]);
    ok(u, OTTO, &["backfill", "nightly", "--from", "2026-11-01", "--to", "2026-11-02", "--dry-run"]);
    // the registry refuses moves of a model it does not hold; the attempt is recorded
    assert_eq!(weir(u, ADA, &["models", "promote", "churn", "1", "--alias", "prod"]).status.code(), Some(1));
    assert_eq!(weir(u, ADA, &["models", "rollback", "churn", "--alias", "prod"]).status.code(), Some(1));
    let made = ok(u, ADA, &["tokens", "create", "ci-bot", "--role", "operator"]);
    let ci = made.trim().to_string();
    assert!(ci.starts_with("weir_") && ci.len() > 60, "{made}");
    ok(u, &ci, &["runs"]);
    ok(u, ADA, &["tokens", "revoke", "ci-bot"]);
    // secret changes are recorded by name; the value never
    set_secret(u, ADA, "DB_PASSWORD", "hunter2-sealed-value");
    ok(u, ADA, &["secrets", "rm", "DB_PASSWORD"]);
    let after = weir(u, &ci, &["runs"]);
    assert_eq!(after.status.code(), Some(4), "a revoked token is refused at once: {}", text(&after.stderr));

    // SIGKILL: nothing gets a chance to flush but what was flushed before each answer
    engine.kill().unwrap();
    engine.wait().unwrap();
    let mut engine = start_server(&data, port, &tokens);
    let _ = common::client(&url).await;

    let json = ok(u, ADA, &["audit", "--json"]);
    let entries: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seen: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
                e["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("ada", "submit", "ok"),
        ("vic", "start", "permission_denied"),
        ("otto", "start", "ok"),
        ("otto", "approve", "ok"),
        ("otto", "cancel", "ok"),
        ("otto", "retry", "ok"),
        ("otto", "schedule.pause", "ok"),
        ("otto", "schedule.resume", "ok"),
        ("otto", "schedule.backfill", "ok"),
        ("ada", "promote", "not_found"),
        ("ada", "rollback", "not_found"),
        ("ada", "token.create", "ok"),
        ("ada", "token.revoke", "ok"),
        ("ada", "secret.set", "ok"),
        ("ada", "secret.delete", "ok"),
    ];
    let want: Vec<(String, String, String)> =
        want.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    assert_eq!(seen, want, "{json}");
    let target =
        |action: &str| entries.iter().find(|e| e["action"] == action).unwrap()["target"].as_str().unwrap().to_string();
    assert_eq!(target("submit"), "pipeline=nightly");
    assert!(target("cancel").contains(&format!("run_id={first}")), "{}", target("cancel"));
    assert!(target("approve").contains("step=gate"), "{}", target("approve"));
    assert_eq!(target("token.create"), "name=ci-bot role=operator");
    assert!(!json.contains(&ci) && !json.contains(ADA), "no token reaches the log");
    assert!(target("secret.set").contains("DB_PASSWORD"), "{}", target("secret.set"));
    assert!(!json.contains("hunter2"), "no secret value reaches the log: {json}");
    assert!(entries.iter().all(|e| e["role"] == "admin" || e["role"] == "operator" || e["role"] == "viewer"));

    // the table, and the filters
    let table = ok(u, ADA, &["audit", "--who", "otto", "--since", "1h"]);
    assert!(table.lines().next().unwrap().contains("WHO"), "{table}");
    assert_eq!(table.lines().count(), 1 + 7, "{table}");
    assert!(table.lines().skip(1).all(|l| l.contains("otto")), "{table}");
    assert_eq!(ok(u, ADA, &["audit", "--since", "2999-01-01", "--json"]), "");
    // the approval names the principal beside the name the caller gave, not "client token"
    let status = ok(u, ADA, &["status", &first]);
    assert!(status.contains("approved by laptop-user (otto)"), "{status}");
    assert!(status.contains("started   by otto"), "the run names who started it: {status}");
    // only admins read the log
    let peek = weir(u, OTTO, &["audit"]);
    assert_eq!(peek.status.code(), Some(1), "{}", text(&peek.stderr));
    engine.kill().unwrap();
    engine.wait().unwrap();
}
