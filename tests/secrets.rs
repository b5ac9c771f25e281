//! Step secrets end to end, through the real binaries: `weir server --secrets-key` and
//! `weir-worker` over loopback (both at RUST_LOG=debug, their stderr kept), and the `weir` CLI.
//!
//! A secret is set from stdin; a step that names it prints it whole on stdout, then in two
//! writes apart in time, and on stderr. The run succeeds and its logs show `***` where the
//! value was; the value is in no log (`weir logs`), no listing (`weir secrets list`), no run
//! status, no store export (every record: runs, steps, events, logs, the secret's own sealed
//! record), no file under the server's data folder or the worker's work folder (raw bytes),
//! and neither process's stderr. A step naming a secret the server lacks fails naming it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use weir_tests::procs::{self, Kill};

const VALUE: &str = "pw-Zq8vX3kL-unique-7c1e";

const PIPELINE: &str = r#"name: secretive
steps:
  show:
    run: |
      echo "len=${#DB_PASSWORD}"
      echo "whole: $DB_PASSWORD"
      printf 'split: %s' "$(printf '%s' "$DB_PASSWORD" | head -c 5)"
      sleep 0.4
      printf '%s\n' "$(printf '%s' "$DB_PASSWORD" | tail -c +6)"
      echo "on stderr: $DB_PASSWORD" >&2
    secrets: [DB_PASSWORD]
  missing:
    run: echo never
    secrets: [NOT_SET]
"#;

fn weir(bin: &Path, url: &str, args: &[&str], stdin: Option<&str>, code: i32) -> String {
    let mut child = Command::new(bin)
        .args(args)
        .args(["--server", url])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    let out: Output = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "weir {args:?}: {text}");
    text
}

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &[u8], found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_holding(&path, needle, found);
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path);
        }
    }
}

#[test]
fn a_secret_reaches_its_step_and_nothing_else() {
    let (bin, worker_bin) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let (data, work) = (dir.path().join("data"), dir.path().join("work"));
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, [42u8; 32]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (server_log, worker_log) = (dir.path().join("server.log"), dir.path().join("worker.log"));

    let mut cmd = Command::new(&bin);
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--secrets-key")
        .arg(&key)
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&server_log).unwrap());
    let (server, url) = procs::serve(cmd);
    let mut w = procs::worker(&worker_bin, &url, &work, "w1", 2);
    w.env("RUST_LOG", "debug").stderr(std::fs::File::create(&worker_log).unwrap());
    let worker: Kill = procs::spawn(w);

    let out = weir(&bin, &url, &["secrets", "set", "DB_PASSWORD"], Some(&format!("{VALUE}\n")), 0);
    assert!(out.contains("set secret DB_PASSWORD"), "{out}");
    let out = weir(&bin, &url, &["secrets", "set", "DB_PASSWORD"], Some(VALUE), 0);
    assert!(out.contains("replaced secret DB_PASSWORD"), "{out}");
    let listed = weir(&bin, &url, &["secrets", "list"], None, 0);
    assert!(listed.contains("DB_PASSWORD") && !listed.contains(VALUE), "{listed}");
    let out = weir(&bin, &url, &["secrets", "set", "WEIR_X"], Some("v"), 1);
    assert!(out.contains("WEIR_"), "{out}");

    let folder = dir.path().join("secretive");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), PIPELINE).unwrap();
    weir(&bin, &url, &["submit", folder.to_str().unwrap()], None, 0);
    let run = weir(&bin, &url, &["start", "secretive"], None, 0).lines().next().unwrap().trim().to_string();
    // The run fails: `missing` names a secret the server lacks.
    let watched = weir(&bin, &url, &["status", &run, "--watch"], None, 1);
    let status = weir(&bin, &url, &["status", &run], None, 0);
    assert!(status.contains("NOT_SET") && status.contains("weir secrets set NOT_SET"), "{status}");

    let logs = weir(&bin, &url, &["logs", &run, "show"], None, 0);
    assert!(logs.contains(&format!("len={}", VALUE.len())), "the step did not get the value: {logs}");
    for masked in ["whole: ***", "split: ***", "on stderr: ***"] {
        assert!(logs.contains(masked), "{masked:?} not in {logs}");
    }
    weir(&bin, &url, &["secrets", "rm", "DB_PASSWORD"], None, 0);
    let out = weir(&bin, &url, &["secrets", "rm", "DB_PASSWORD"], None, 1);
    assert!(out.contains("no secret `DB_PASSWORD`"), "{out}");
    weir(&bin, &url, &["secrets", "set", "DB_PASSWORD"], Some(VALUE), 0);
    drop(worker);
    drop(server);

    let export = Command::new(&bin).args(["store", "export", "--data-dir"]).arg(&data).output().unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let export = String::from_utf8_lossy(&export.stdout).into_owned();
    assert!(export.contains("\"secrets\"") && export.contains("DB_PASSWORD"), "the sealed secret is exported");
    for (what, text) in [("logs", &logs), ("status", &status), ("watch", &watched), ("export", &export)] {
        assert!(!text.contains(VALUE), "the value is in {what}");
    }
    for (what, file) in [("server", &server_log), ("worker", &worker_log)] {
        let log = std::fs::read_to_string(file).unwrap();
        assert!(log.contains("DEBUG"), "the {what} logged nothing at debug");
        assert!(!log.contains(VALUE), "the value is in the {what}'s log");
    }
    let mut found = Vec::new();
    files_holding(&data, VALUE.as_bytes(), &mut found);
    files_holding(&work, VALUE.as_bytes(), &mut found);
    assert!(found.is_empty(), "the value is on disk in {found:?}");
}
