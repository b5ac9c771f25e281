//! Helpers shared by the tests that start `weir server` as a child process.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A port free right now on 127.0.0.1 (a restarted server must come back on the same one).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `weir server` on `port` with `data` and `extra` flags, and waits for its
/// "listening" line.
#[allow(dead_code)] // triggers.rs starts its servers with an environment of its own
pub fn server(data: &Path, port: u16, extra: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start weir server");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "{line}");
    // Keep reading (and dropping) its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    child
}

/// A client of the server at `url`, retrying while a (re)started server comes up (20 s at most).
#[allow(dead_code)] // not every test binary that shares this module restarts a server
pub async fn client(url: &str) -> weir_proto::v1::weir_client_client::WeirClientClient<tonic::transport::Channel> {
    let start = std::time::Instant::now();
    loop {
        match weir_proto::v1::weir_client_client::WeirClientClient::connect(url.to_string()).await {
            Ok(c) => return c,
            Err(e) => assert!(start.elapsed() < std::time::Duration::from_secs(20), "cannot connect: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
