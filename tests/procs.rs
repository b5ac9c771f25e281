//! The real binaries as child processes, for tests that must see what users run: `weir server`
//! started on a free loopback port (its address read from the line it prints), `weir-worker`
//! with the options every such test sets, and [`Kill`], which ends and reaps a child however the
//! test ends.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process killed and reaped when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        // A child the test already reaped is not signalled again (std knows it exited).
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Kill {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Kill {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// `weir server --listen 127.0.0.1:0 --data-dir DATA` and `extra`, quiet (stderr dropped,
/// `RUST_LOG` unset). Returns the process and the URL it listens on.
pub fn server(weir: &Path, data: &Path, extra: &[&str]) -> (Kill, String) {
    let mut cmd = Command::new(weir);
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .env_remove("RUST_LOG")
        .stderr(Stdio::null());
    serve(cmd)
}

/// Starts `cmd`, a `weir server` command, reads the line naming its address and keeps reading
/// its standard output (a closed pipe would end the server at its next line). Returns the
/// process and its URL.
pub fn serve(mut cmd: Command) -> (Kill, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("weir server starts");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the server's first line");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let url = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
    assert!(
        url.starts_with("http://") || url.starts_with("https://"),
        "no address in the server's first line {line:?}"
    );
    (Kill(child), url)
}

/// `weir-worker --engine URL --name NAME --capacity N --docker off --gpus none --work-dir WORK`,
/// quiet: add arguments and [`spawn`] it.
pub fn worker(worker: &Path, url: &str, work: &Path, name: &str, capacity: u32) -> Command {
    let mut cmd = Command::new(worker);
    cmd.args([
        "--engine",
        url,
        "--name",
        name,
        "--capacity",
        &capacity.to_string(),
        "--docker",
        "off",
        "--gpus",
        "none",
    ])
    .arg("--work-dir")
    .arg(work)
    .env_remove("RUST_LOG")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

/// Spawns `cmd`, to be killed when the result is dropped.
pub fn spawn(mut cmd: Command) -> Kill {
    Kill(cmd.spawn().expect("the process starts"))
}
