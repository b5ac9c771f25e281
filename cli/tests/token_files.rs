//! Token files through the real `weir server` and `weir` client: a file that would weaken
//! authentication stops the server with exit 1 and a message naming the file, the line and
//! what to do (equal or shared client and worker tokens, duplicate or unknown lines, tokens too
//! short for an address off loopback); a file others can read gets a warning; no message ever
//! holds a token. The parser's own cases are unit tests in `proto/src/auth.rs`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const WARNING: &str = "token file can be read or changed by other users";
/// Parts of every token below, never to be printed.
const SECRET: &str = "SECRET";

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("WEIR_SERVER")
        .env_remove("WEIR_TOKEN")
        .env_remove("WEIR_TOKEN_FILE")
        .env_remove("WEIR_LISTEN")
        .output()
        .expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `content` in a file only its owner can read, unless `mode` says otherwise.
fn token_file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn the_server_refuses_token_files_that_weaken_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let long = |c: char| format!("{SECRET}{}", c.to_string().repeat(40));
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (
            format!("client={0}\nworker={0}\n", long('a')),
            "127.0.0.1:0",
            vec!["`:", "the client token (line 1) and the worker token (line 2) are the same", "openssl rand -hex 32"],
        ),
        (format!("{}\n", long('a')), "127.0.0.1:0", vec![":1: one token for clients and workers alike"]),
        (
            format!("client={}\nworker={}\nclient={}\n", long('a'), long('b'), long('c')),
            "127.0.0.1:0",
            vec![":3: a second `client=` line (the first is on line 1): keep one"],
        ),
        (
            format!("# team tokens\nclinet={}\nworker={}\n", long('a'), long('b')),
            "127.0.0.1:0",
            vec![":2: unknown key `clinet`: expected `client=TOKEN` or `worker=TOKEN` (did you mean `client`?)"],
        ),
        (
            format!("client={SECRET}-short\nworker={}\n", long('b')),
            "0.0.0.0:0",
            vec![
                ":1: the client token has 12 characters; listening on 0.0.0.0:0 (off loopback) needs at least 32",
                "openssl rand -hex 32",
            ],
        ),
    ];
    for (i, (content, listen, wanted)) in cases.iter().enumerate() {
        let file = token_file(dir.path(), &format!("tokens-{i}"), content, 0o600);
        let data = dir.path().join(format!("data-{i}"));
        let out = weir(&[
            "server",
            "--listen",
            listen,
            "--data-dir",
            &data.display().to_string(),
            "--token-file",
            &file.display().to_string(),
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{content:?}: {err}");
        assert!(err.contains(&format!("error: token file `{}`", file.display())), "{content:?}: {err}");
        for w in wanted {
            assert!(err.contains(w), "{content:?}: {err:?} should contain {w:?}");
        }
        assert!(!err.contains(SECRET) && !text(&out.stdout).contains(SECRET), "a token was printed: {err}");
        assert!(!err.contains(WARNING), "{err}");
    }
}

#[test]
fn a_token_file_others_can_read_is_warned_about_by_server_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let content = format!("client={SECRET}{}\nworker={SECRET}{}\n", "c".repeat(32), "w".repeat(32));
    for (mode, warned) in [(0o644, true), (0o640, true), (0o600, false)] {
        let file = token_file(dir.path(), &format!("tokens-{mode:o}"), &content, mode);
        let file_arg = file.display().to_string();

        // The server starts, having warned once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--token-file", &file_arg, "--data-dir"])
            .arg(dir.path().join(format!("data-{mode:o}")))
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
        assert!(line.contains("listening on"), "{line}");
        server.kill().unwrap();
        server.wait().unwrap();
        let mut err = String::new();
        server.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(err.matches(WARNING).count(), usize::from(warned), "mode {mode:o}: {err}");
        if warned {
            assert!(err.contains(&format!("mode=\"{mode:o}\"")) && err.contains("chmod 600"), "{err}");
        }
        assert!(!err.contains(SECRET), "{err}");

        // So does a client, before it finds nothing listening.
        let out = weir(&["runs", "--server", "http://127.0.0.1:1", "--token-file", &file_arg]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert_eq!(err.matches(WARNING).count(), usize::from(warned), "mode {mode:o}: {err}");
        assert!(!err.contains(SECRET), "{err}");
    }
}

#[test]
fn a_client_refuses_a_token_file_with_duplicate_or_unknown_lines() {
    let dir = tempfile::tempdir().unwrap();
    for (content, wanted) in [
        (format!("client={SECRET}1\nclient={SECRET}2\n"), ":2: a second `client=` line (the first is on line 1)"),
        (format!("cilent={SECRET}1\n"), ":1: unknown key `cilent`"),
    ] {
        let file = token_file(dir.path(), "tokens", &content, 0o600);
        let out = weir(&["runs", "--server", "http://127.0.0.1:1", "--token-file", &file.display().to_string()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&format!("error: token file `{}`{wanted}", file.display())), "{err}");
        assert!(!err.contains(SECRET), "{err}");
    }
}
