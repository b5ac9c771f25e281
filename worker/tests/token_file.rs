//! `weir-worker --token-file` as an operator meets it: a file with duplicate or unknown lines is
//! a usage error (exit 2) naming the file and line, a file that group or others can read gets a
//! warning, and neither ever shows the token. The parser is `weir_proto::auth`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "SECRET";
const WARNING: &str = "token file can be read or changed by other users";

fn worker() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir-worker"));
    // Nothing listens on port 1: the worker keeps trying until it is killed.
    c.args(["--engine", "http://127.0.0.1:1", "--docker", "off", "--gpus", "none"])
        .env("NO_COLOR", "1")
        .env_remove("WEIR_WORKER_TOKEN");
    c
}

#[test]
fn bad_token_files_are_usage_errors_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    for (content, wanted) in [
        (format!("worker={SECRET}1\nworker={SECRET}2\n"), ":2: a second `worker=` line (the first is on line 1)"),
        (format!("wokrer={SECRET}1\n"), ":1: unknown key `wokrer`"),
        (format!("client={SECRET}1\n"), ": no `worker=TOKEN` line"),
    ] {
        std::fs::write(&file, &content).unwrap();
        let out = worker().arg("--token-file").arg(&file).arg("--work-dir").arg(dir.path().join("w")).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{content:?}: {err}");
        assert!(err.contains(&format!("error: token file `{}`{wanted}", file.display())), "{err}");
        assert!(!err.contains(SECRET), "{err}");
    }
}

#[test]
fn a_token_file_others_can_read_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("worker={SECRET}-0123456789abcdef0123456789abcdef\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = worker()
        .arg("--token-file")
        .arg(&file)
        .arg("--work-dir")
        .arg(dir.path().join("w"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains(WARNING)) {
        assert!(start.elapsed() < Duration::from_secs(30), "no warning in {seen:#?}");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push(line);
    }
    assert_eq!(seen.iter().filter(|l| l.contains(WARNING)).count(), 1, "{seen:#?}");
    assert!(seen.iter().all(|l| !l.contains(SECRET)), "{seen:#?}");
}
