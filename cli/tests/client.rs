//! The client commands as a user meets them when no server answers: exit codes, the messages
//! that say what to do next, local validation before any connection, tokens kept out of output,
//! and `--help`. Tests against a server that answers live in client_fake_server.rs.

use std::path::Path;
use std::process::{Command, Output};

/// Nothing listens on port 1: connecting is refused at once.
const DEAD: &str = "http://127.0.0.1:1";

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("WEIR_SERVER")
        .env_remove("WEIR_TOKEN")
        .output()
        .expect("run weir")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn an_unreachable_server_exits_3_naming_the_url() {
    for args in [
        &["runs", "--server", DEAD][..],
        &["--server", DEAD, "pipelines"],
        &["status", "r-1", "--server", DEAD],
        &["logs", "r-1", "train", "-f", "--server", DEAD],
        &["cancel", "r-1", "--server", DEAD],
        &["retry", "r-1", "--server", DEAD],
        &["start", "churn", "-p", "rows=5", "--server", DEAD],
    ] {
        let out = weir(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("cannot reach the weir server at http://127.0.0.1:1"), "{args:?}: {err}");
        assert!(err.contains("`weir server`") && err.contains("WEIR_SERVER"), "{err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn the_server_url_comes_from_weir_server_too() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_weir")).args(["runs"]).env("WEIR_SERVER", DEAD).output().expect("run weir");
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("http://127.0.0.1:1"), "{}", text(&out.stderr));
}

#[test]
fn bad_urls_and_token_files_are_usage_errors() {
    for url in ["nope", "ftp://127.0.0.1:1"] {
        let out = weir(&["runs", "--server", url]);
        assert_eq!(out.status.code(), Some(2), "{url}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(url), "{}", text(&out.stderr));
    }
    // https:// is a URL like any other (TLS, tests/tls.rs): nothing answers there.
    let out = weir(&["runs", "--server", "https://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = weir(&["runs", "--server", DEAD, "--token-file", "/nonexistent/token"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("token file `/nonexistent/token`: cannot read it"), "{}", text(&out.stderr));

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("token");
    std::fs::write(&empty, "\n").unwrap();
    let out = weir(&["runs", "--server", DEAD, "--token-file", &empty.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("it holds no token"), "{}", text(&out.stderr));

    assert_eq!(weir(&["start"]).status.code(), Some(2), "no pipeline name");
    assert_eq!(weir(&["runs", "--state", "sleeping"]).status.code(), Some(2));
    assert_eq!(weir(&["start", "churn", "-p", "rows"]).status.code(), Some(2));
    assert_eq!(weir(&["logs", "r-1", "--attempt", "0"]).status.code(), Some(2));
}

#[test]
fn tokens_are_never_printed() {
    let secret = "s3cret-t0ken-value";
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["runs", "--server", DEAD, "--token", secret])
        .env("RUST_LOG", "trace")
        .output()
        .expect("run weir");
    assert_eq!(out.status.code(), Some(3));
    assert!(!text(&out.stderr).contains(secret) && !text(&out.stdout).contains(secret));

    let help = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["runs", "--help"])
        .env("WEIR_TOKEN", secret)
        .output()
        .expect("run weir");
    assert!(!text(&help.stdout).contains(secret), "{}", text(&help.stdout));
    assert!(text(&help.stdout).contains("WEIR_TOKEN"));
}

#[test]
fn submit_validates_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, "name: x\nsteps:\n  a:\n    run: 'true'\n    neds: [b]\n").unwrap();
    for target in [file.display().to_string(), dir.path().display().to_string()] {
        let out = weir(&["submit", &target, "--server", DEAD]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("{}:5:5", file.display())), "{err}");
        assert!(err.contains("did you mean `needs`?"), "{err}");
        assert!(!err.contains("cannot reach"), "connected before validating: {err}");
    }

    let missing = weir(&["submit", "/nonexistent/folder", "--server", DEAD]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot read `/nonexistent/folder`"), "{}", text(&missing.stderr));
}

#[test]
fn a_valid_pipeline_is_bundled_then_needs_the_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("root");
    let out = weir(&["submit", &root.join("pipelines/ml-retrain").display().to_string(), "--server", DEAD]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn help_of_each_client_command_names_its_flags_and_exit_codes() {
    let top = text(&weir(&["--help"]).stdout);
    for word in [
        "submit",
        "pipelines",
        "start",
        "runs",
        "status",
        "logs",
        "cancel",
        "retry",
        "--server",
        "Exit status",
        "  4  ",
    ] {
        assert!(top.contains(word), "--help lacks {word}:\n{top}");
    }
    let cases: &[(&str, &[&str])] = &[
        ("submit", &["DIR|FILE", ".weirignore", "idempotent"]),
        ("pipelines", &[]),
        ("start", &["--param", "--watch", "run failed or was cancelled"]),
        ("runs", &["--pipeline", "--state", "--limit", "succeeded"]),
        ("status", &["--watch", "RUN"]),
        ("logs", &["--follow", "-f", "--attempt", "STEP"]),
        ("cancel", &["--reason", "RUN"]),
        ("retry", &["RUN"]),
        ("backup", &["FILE", "--force", "FILE.tmp", "--local", "weir restore"]),
    ];
    for (command, flags) in cases {
        let out = weir(&[command, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        for word in flags.iter().chain(&["--server", "--token", "--token-file", "Exit status", "cannot reach"]) {
            assert!(help.contains(word), "{command} --help lacks {word}:\n{help}");
        }
    }
}
