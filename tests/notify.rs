//! Notifications end to end, through the real binaries: `weir server` and `weir-worker` over
//! loopback, the `weir` CLI, and a small HTTP receiver in this test (std `TcpListener`) that
//! checks every webhook delivery's HMAC-SHA256 signature as docs/notifications.md tells a
//! receiver to.
//!
//! 1. With the receiver up, a run's `run_succeeded` arrives signed and well-formed. With the
//!    receiver down, a failing run and two more successes queue five deliveries (webhook,
//!    Slack, a step's own entry) that `weir notifications` lists; the server is killed with
//!    SIGKILL and restarted, the receiver comes back, and every one of them arrives: each
//!    listed delivery id at least once, any repeat with the same id and body.
//! 2. With every attempt failing, a delivery becomes a dead letter that `weir notifications
//!    --dead` shows with its last error; `weir notifications retry ID` re-queues it and it
//!    arrives with the same id once the receiver is up.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{KeyInit, Mac};
use weir_tests::procs::{self, Kill};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// An HTTP receiver on a fixed loopback port that can go down and come back.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Receiver {
    /// A free port, with nothing listening on it yet.
    fn down() -> Receiver {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Receiver { port, got: Arc::default(), stop: None }
    }

    fn up(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (got, flag) = (self.got.clone(), stop.clone());
        std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        if let Some(g) = serve(stream) {
                            got.lock().unwrap().push(g);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        self.stop = Some(stop);
    }

    fn take_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            // The accept loop sees the flag within one sleep; wait until the port refuses.
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                assert!(Instant::now() < deadline, "the receiver did not stop");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `pred` holds of what arrived; fails naming what did arrive.
    fn wait_for(&self, what: &str, pred: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let got = self.got();
            if pred(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "waiting for {what}; got {got:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads one HTTP/1.1 request and answers 200.
fn serve(mut stream: TcpStream) -> Option<Got> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split(' ').nth(1)?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").ok()?;
    Some(Got { path, headers, body: String::from_utf8(body).ok()? })
}

/// Checks a webhook delivery as docs/notifications.md tells a receiver to: the signature over
/// `timestamp.body` with the shared secret, compared in constant time, and a timestamp at
/// most 5 minutes old.
fn verify(g: &Got) {
    let ts = &g.headers["x-weir-timestamp"];
    let sig = g.headers["x-weir-signature"].strip_prefix("sha256=").expect("sha256= prefix");
    let bytes: Vec<u8> = (0..sig.len()).step_by(2).map(|i| u8::from_str_radix(&sig[i..i + 2], 16).unwrap()).collect();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.{}", g.body).as_bytes());
    mac.verify_slice(&bytes).unwrap_or_else(|_| panic!("bad signature on {g:#?}"));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(ts.parse::<u64>().unwrap()) <= 300, "stale timestamp on {g:#?}");
    let body: serde_json::Value = serde_json::from_str(&g.body).unwrap();
    assert_eq!(body["id"].as_str(), Some(g.headers["x-weir-delivery"].as_str()), "the body's id is the header's");
}

struct Env {
    weir: PathBuf,
    worker: PathBuf,
    dir: tempfile::TempDir,
    url: String,
}

impl Env {
    fn new() -> Env {
        let (weir, worker) = weir_tests::binaries();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secrets"), format!("# test\nhooks = {SECRET}\n")).unwrap();
        Env { weir, worker, dir, url: String::new() }
    }

    /// Starts `weir server` on the env's data folder with short notification backoffs (100 ms
    /// doubling up to 2 s: with 100 attempts a delivery stays pending for minutes, however
    /// slowly a loaded machine runs the test).
    fn server(&mut self, attempts: &str) -> Kill {
        let secrets = self.dir.path().join("secrets");
        let secrets = secrets.to_str().unwrap();
        let args = ["--gc-every", "off", "--notify-attempts", attempts, "--notify-backoff", "100ms"];
        let args = [&args[..], &["--notify-max-backoff", "2s", "--notify-secrets", secrets]].concat();
        let (server, url) = procs::server(&self.weir, &self.dir.path().join("data"), &args);
        self.url = url;
        server
    }

    fn worker(&self) -> Kill {
        procs::spawn(procs::worker(&self.worker, &self.url, &self.dir.path().join("work"), "w1", 2))
    }

    fn weir(&self, args: &[&str]) -> Output {
        Command::new(&self.weir).args(args).args(["--server", &self.url]).env_remove("RUST_LOG").output().unwrap()
    }

    fn expect(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.weir(args);
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert_eq!(out.status.code(), Some(code), "weir {args:?}\nstdout: {stdout}\nstderr: {stderr}");
        (stdout, stderr)
    }

    fn submit(&self, yaml: &str) {
        let folder = self.dir.path().join("pipeline");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("pipeline.yaml"), yaml).unwrap();
        self.expect(&["submit", folder.join("pipeline.yaml").to_str().unwrap()], 0);
    }

    /// Starts a run and follows it to its end; returns its id.
    fn run(&self, pipeline: &str, params: &[&str], code: i32) -> String {
        let mut args = vec!["start", pipeline];
        for p in params {
            args.extend(["-p", p]);
        }
        let (out, _) = self.expect(&args, 0);
        let id = out.lines().next().unwrap().trim().to_string();
        self.expect(&["status", &id, "--watch"], code);
        id
    }

    /// The ids `weir notifications [--dead]` lists.
    fn listed(&self, dead: bool) -> Vec<String> {
        let args: &[&str] = if dead { &["notifications", "--dead"] } else { &["notifications"] };
        let (out, _) = self.expect(args, 0);
        out.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
    }
}

fn pipeline(r: &Receiver) -> String {
    format!(
        r#"name: notes
notify:
  - {{on: [run_failed, run_succeeded], webhook: "{hook}", secret: hooks}}
  - {{on: [run_failed], slack: "{slack}"}}
params:
  fail: false
steps:
  work:
    run: |
      if [ "$WEIR_PARAM_FAIL" = true ]; then echo broken >&2; exit 3; fi
    notify:
      - {{on: [step_failed], webhook: "{step}", secret: hooks}}
"#,
        hook = r.url("/hook"),
        slack = r.url("/services/T0/B0/slack-secret-path"),
        step = r.url("/step")
    )
}

#[test]
fn every_notification_arrives_signed_after_the_receiver_was_down_and_the_server_was_killed() {
    let mut env = Env::new();
    let mut receiver = Receiver::down();
    let server = env.server("100");
    let _worker = env.worker();
    env.submit(&pipeline(&receiver));

    // Receiver up: a success is notified, signed.
    receiver.up();
    let first = env.run("notes", &[], 0);
    let got = receiver.wait_for("run_succeeded", |g| !g.is_empty());
    assert_eq!((got[0].path.as_str(), got[0].headers["x-weir-event"].as_str()), ("/hook", "run_succeeded"));
    verify(&got[0]);
    let body: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!((body["run_id"].as_str(), body["pipeline"].as_str()), (Some(first.as_str()), Some("notes")));
    assert_eq!((body["event"].as_str(), body["state"].as_str()), (Some("run_succeeded"), Some("succeeded")));
    assert!(body["time"].as_str().unwrap().ends_with('Z'), "{body}");
    receiver.wait_for("the outbox to empty", |_| env.listed(false).is_empty());

    // Receiver down: a failure and two successes queue five deliveries.
    receiver.take_down();
    let before = receiver.got().len();
    let failed = env.run("notes", &["fail=true"], 1);
    let ok1 = env.run("notes", &[], 0);
    let ok2 = env.run("notes", &[], 0);
    let pending = env.listed(false);
    assert_eq!(pending.len(), 5, "run_failed twice (webhook, slack), step_failed, run_succeeded twice: {pending:?}");
    let (table, _) = env.expect(&["notifications"], 0);
    assert!(!table.contains("slack-secret-path"), "a receiver's path is never shown:\n{table}");

    // kill -9, restart, receiver back: everything arrives.
    drop(server);
    let _server = env.server("100");
    receiver.up();
    let want: BTreeSet<String> = pending.iter().cloned().collect();
    let got = receiver.wait_for("all five deliveries", |g| {
        let ids: BTreeSet<String> = g[before..]
            .iter()
            .map(|g| match g.headers.get("x-weir-delivery") {
                Some(id) => id.clone(),
                None => String::new(),
            })
            .collect();
        want.is_subset(&ids)
    });
    let mut bodies: BTreeMap<String, String> = BTreeMap::new();
    for g in &got[before..] {
        let id = g.headers["x-weir-delivery"].clone();
        assert!(want.contains(&id), "a delivery nobody queued: {g:#?}");
        // A repeat (at least once) carries the same id and the same body.
        if let Some(earlier) = bodies.insert(id.clone(), g.body.clone()) {
            assert_eq!(earlier, g.body, "delivery {id} sent twice with different bodies");
        }
        if g.path == "/services/T0/B0/slack-secret-path" {
            let text: serde_json::Value = serde_json::from_str(&g.body).unwrap();
            assert_eq!(text["text"], format!("weir: run failed: notes run {failed}: run failed: work failed"));
            assert!(!g.headers.contains_key("x-weir-signature"), "a Slack entry names no secret");
        } else {
            verify(g);
        }
    }
    let by_event: BTreeSet<(String, String)> = got[before..]
        .iter()
        .filter(|g| g.path != "/services/T0/B0/slack-secret-path")
        .map(|g| {
            let b: serde_json::Value = serde_json::from_str(&g.body).unwrap();
            (b["event"].as_str().unwrap().to_string(), b["run_id"].as_str().unwrap().to_string())
        })
        .collect();
    let expected: BTreeSet<(String, String)> =
        [("run_failed", &failed), ("step_failed", &failed), ("run_succeeded", &ok1), ("run_succeeded", &ok2)]
            .into_iter()
            .map(|(e, r)| (e.to_string(), r.clone()))
            .collect();
    assert_eq!(by_event, expected);
    let step = got[before..].iter().find(|g| g.path == "/step").unwrap();
    let b: serde_json::Value = serde_json::from_str(&step.body).unwrap();
    assert_eq!((b["step"].as_str(), b["message"].as_str()), (Some("work"), Some("exit code 3")), "{b}");
    receiver.wait_for("the outbox to empty", |_| env.listed(false).is_empty());
}

#[test]
fn a_dead_letter_shows_in_the_cli_and_a_retry_delivers_it_with_the_same_id() {
    let mut env = Env::new();
    let mut receiver = Receiver::down();
    let _server = env.server("2");
    let _worker = env.worker();
    env.submit(&pipeline(&receiver));
    let failed = env.run("notes", &["fail=true"], 1);
    // Two attempts each, 100 ms apart, then dead: wait until all three are.
    receiver.wait_for("three dead letters", |_| env.listed(true).len() == 3);
    assert!(env.listed(false).is_empty());
    let (table, _) = env.expect(&["notifications", "--dead"], 0);
    assert!(table.contains("dead") && table.contains("cannot connect") && table.contains(&failed), "{table}");
    let (_, err) = env.expect(&["notifications", "retry", "d-nope"], 1);
    assert!(err.contains("no notification d-nope"), "{err}");

    receiver.up();
    let dead = env.listed(true);
    let (out, _) = env.expect(&["notifications", "retry", &dead[0]], 0);
    assert!(out.contains(&format!("re-queued {}", dead[0])), "{out}");
    let got = receiver.wait_for("the retried delivery", |g| !g.is_empty());
    assert_eq!(got[0].headers["x-weir-delivery"], dead[0]);
    assert_eq!(env.listed(true).len(), 2, "the others stay dead");
    let (_, err) = env.expect(&["notifications", "retry", &dead[0]], 1);
    assert!(err.contains("no notification"), "delivered ones are forgotten: {err}");
}

#[test]
fn a_bad_secrets_file_stops_the_server_naming_the_line_and_never_the_secret() {
    let env = Env::new();
    let file = env.dir.path().join("bad-secrets");
    std::fs::write(&file, "ops = 0123456789abcdef0123\nml = tooshort\n").unwrap();
    let out = Command::new(&env.weir)
        .args(["server", "--listen", "127.0.0.1:0", "--notify-secrets"])
        .arg(&file)
        .arg("--data-dir")
        .arg(env.dir.path().join("data"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 2") && stderr.contains("shorter than 16 characters"), "{stderr}");
    assert!(!stderr.contains("tooshort") && !stderr.contains("0123456789abcdef0123"), "a secret in: {stderr}");
}
