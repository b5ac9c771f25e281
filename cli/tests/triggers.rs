//! The `on:` triggers end to end: a real `weir server` child process (killed with SIGKILL where
//! it matters) and a worker agent in this test process running real steps.
//!
//! - files: a new file starts exactly one run, also when the server is killed between noticing
//!   the file and starting its run, and between starting it and anything after; a file still
//!   growing is not taken until it settles.
//! - webhook: a delivery twice with one idempotency key starts one run; a bad signature, a
//!   stale timestamp, a missing key and a param of the wrong type are refused without a run.
//! - pipeline: an upstream run over the threshold starts one downstream run with the value
//!   passed on, one under it none.
//!
//! No timed assertion: "nothing more happened" is shown by a later event that the same scan
//! must have passed through (a second file's run, a later upstream run's).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_worker::{Agent, AgentConfig};

mod common;
use common::{client, free_port};

type Client = WeirClientClient<tonic::transport::Channel>;

const LIMIT: Duration = Duration::from_secs(90);

/// `weir server` on `port` polling triggers every 200 ms, with `env` set and `extra` flags.
fn server(data: &Path, port: u16, env: &[(&str, &str)], extra: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--trigger-every", "200ms"])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start weir server");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "{line}");
    std::thread::spawn(move || for _ in out.lines() {});
    child
}

fn kill_9(mut c: Child) {
    c.kill().unwrap(); // SIGKILL
    c.wait().unwrap();
}

struct Worker {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn worker(url: &str, dir: &Path) -> Worker {
    let stop = CancellationToken::new();
    let mut config = AgentConfig::new(url.to_string(), dir.join("worker"));
    config.capacity = 4;
    let agent = Agent::new(config).run(stop.clone());
    let task = tokio::spawn(async move {
        let _ = agent.await;
    });
    Worker { stop, task }
}

impl Worker {
    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

async fn submit(c: &mut Client, yaml: &str) {
    let header = v1::SubmitPipelineHeader { yaml: yaml.into(), file_name: "p.yaml".into(), ..Default::default() };
    let msgs = vec![v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) }];
    c.submit_pipeline(tokio_stream::iter(msgs)).await.expect("submit");
}

async fn runs(c: &mut Client, pipeline: &str) -> Vec<v1::Run> {
    let req = v1::ListRunsRequest { pipeline: pipeline.into(), page_size: 1000, ..Default::default() };
    let mut runs = c.list_runs(req).await.expect("list runs").into_inner().runs;
    runs.sort_by(|a, b| {
        a.created_at.as_ref().map(|t| (t.seconds, t.nanos)).cmp(&b.created_at.as_ref().map(|t| (t.seconds, t.nanos)))
    });
    runs
}

async fn wait_runs(c: &mut Client, pipeline: &str, what: &str, pred: impl Fn(&[v1::Run]) -> bool) -> Vec<v1::Run> {
    let start = Instant::now();
    loop {
        let got = runs(c, pipeline).await;
        if pred(&got) {
            return got;
        }
        assert!(start.elapsed() < LIMIT, "{what}: not reached: {got:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_succeeded(n: usize) -> impl Fn(&[v1::Run]) -> bool {
    move |r| r.len() >= n && r.iter().all(|r| r.state() == v1::RunState::Succeeded)
}

fn wait_file(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(start.elapsed() < LIMIT, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines(path: &Path) -> Vec<String> {
    let mut l: Vec<String> = std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect();
    l.sort();
    l
}

fn files_pipeline(name: &str, incoming: &Path, settle: &str, counter: &Path) -> String {
    format!(
        "name: {name}\non:\n  files: {{path: {}, glob: \"*.csv\", settle: {settle}}}\n\
         steps:\n  take:\n    outputs: [seen.txt]\n    run: |\n      \
         echo \"$WEIR_TRIGGER_FILES $WEIR_TRIGGER_DIGESTS\" >> {}\n      \
         wc -c < \"$WEIR_TRIGGER_FILES\" > \"$WEIR_OUTPUTS/seen.txt\"\n",
        incoming.display(),
        counter.display()
    )
}

fn digest(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap()).to_hex().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_starts_exactly_one_run_across_kill_9_before_and_after_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let (data, incoming, counter) = (dir.path().join("data"), dir.path().join("in"), dir.path().join("counter"));
    std::fs::create_dir_all(&incoming).unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let w = worker(&url, dir.path());

    // Killed between noticing a.csv and starting its run.
    let noticed = dir.path().join("noticed");
    let hook = format!("noticed:{}", noticed.display());
    let engine = server(&data, port, &[("WEIR_TEST_TRIGGER_PAUSE", &hook)], &[]);
    let mut c = client(&url).await;
    submit(&mut c, &files_pipeline("ingest", &incoming, "1s", &counter)).await;
    std::fs::write(incoming.join("a.csv"), "x,y\n1,2\n").unwrap();
    let id = wait_file(&noticed);
    assert!(runs(&mut c, "ingest").await.is_empty(), "paused before the run's creation");
    kill_9(engine);

    // Killed right after c.csv's run was started (flushed).
    let started = dir.path().join("started");
    let hook = format!("started:{}", started.display());
    let engine = server(&data, port, &[("WEIR_TEST_TRIGGER_PAUSE", &hook)], &[]);
    let mut c = client(&url).await;
    let got = wait_runs(&mut c, "ingest", "a.csv's run after the restart", |r| r.len() == 1).await;
    assert_eq!(got[0].run_id, id, "the run id is derived from the file's digest");
    std::fs::write(incoming.join("c.csv"), "x,y\n3,4\n").unwrap();
    let c_run = wait_file(&started);
    kill_9(engine);

    // Back without hooks: d.csv is the barrier every earlier file's scan passed before it.
    let engine = server(&data, port, &[], &[]);
    let mut c = client(&url).await;
    std::fs::write(incoming.join("d.csv"), "x,y\n5,6\n").unwrap();
    let got = wait_runs(&mut c, "ingest", "three runs done", all_succeeded(3)).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(got.iter().any(|r| r.run_id == c_run), "{got:#?}");
    for r in &got {
        assert_eq!(r.trigger(), v1::Trigger::Files);
        assert_eq!(r.trigger_name, "files");
    }
    let a = got.iter().find(|r| r.run_id == id).unwrap();
    assert!(a.trigger_detail.contains("a.csv") && a.trigger_detail.contains(&digest(&incoming.join("a.csv"))), "{a:?}");
    let expected: Vec<String> = ["a.csv", "c.csv", "d.csv"]
        .iter()
        .map(|f| format!("{} {}", incoming.join(f).display(), digest(&incoming.join(f))))
        .collect();
    assert_eq!(lines(&counter), expected, "each file's step ran once");

    // The same bytes under another name are not new data.
    std::fs::copy(incoming.join("a.csv"), incoming.join("a-copy.csv")).unwrap();
    std::fs::write(incoming.join("e.csv"), "x,y\n7,8\n").unwrap();
    let got = wait_runs(&mut c, "ingest", "e.csv's run", all_succeeded(4)).await;
    assert_eq!(got.len(), 4, "a copy of a.csv started nothing: {got:#?}");

    w.stop().await;
    kill_9(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_still_being_written_is_not_taken_until_it_settles() {
    let dir = tempfile::tempdir().unwrap();
    let (data, incoming, counter) = (dir.path().join("data"), dir.path().join("in"), dir.path().join("counter"));
    std::fs::create_dir_all(&incoming).unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let w = worker(&url, dir.path());
    let engine = server(&data, port, &[], &[]);
    let mut c = client(&url).await;
    submit(&mut c, &files_pipeline("growing", &incoming, "3s", &counter)).await;

    // A writer appends to grow.csv every 200 ms until told to stop.
    let grow = incoming.join("grow.csv");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (grow, stop) = (grow.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&grow).unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                writeln!(f, "{n},{n}").unwrap();
                f.flush().unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // done.csv settles while grow.csv keeps growing: when its run exists, the scans have seen
    // grow.csv change all along.
    std::fs::write(incoming.join("done.csv"), "x\n1\n").unwrap();
    let got = wait_runs(&mut c, "growing", "done.csv's run", |r| !r.is_empty()).await;
    assert_eq!(got.len(), 1, "only the settled file: {got:#?}");
    assert!(got[0].trigger_detail.contains("done.csv"), "{:?}", got[0]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();

    let got = wait_runs(&mut c, "growing", "grow.csv's run once it settled", all_succeeded(2)).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    let full = digest(&grow);
    assert!(got[1].trigger_detail.contains(&full), "the whole file's digest: {:?}", got[1]);

    // Lineage: from the step's output back to the file that triggered its run.
    let r = c.get_run(v1::GetRunRequest { run_id: got[1].run_id.clone(), ..Default::default() }).await.unwrap();
    let out = r.into_inner().steps.remove(0).outputs.expect("outputs").files.remove(0).digest;
    let req = v1::GetLineageRequest { target: out, ..Default::default() };
    let lineage = c.get_lineage(req).await.expect("lineage").into_inner();
    let data = lineage.nodes.iter().find(|n| n.digest == full).unwrap_or_else(|| panic!("{lineage:#?}"));
    assert_eq!(data.path, grow.display().to_string());
    w.stop().await;
    kill_9(engine);
}

/// A POST to the server's HTTP port; the status and body.
fn post(port: u16, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn signed(body: &[u8], ts: i64, key: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("X-Weir-Timestamp", ts.to_string()),
        ("X-Weir-Signature", weir_engine::signing::sign(SECRET.as_bytes(), ts, body)),
    ];
    if let Some(k) = key {
        h.push(("Idempotency-Key", k.to_string()));
    }
    h
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_delivered_twice_starts_one_run_and_bad_deliveries_start_none() {
    let dir = tempfile::tempdir().unwrap();
    let (data, counter) = (dir.path().join("data"), dir.path().join("counter"));
    let secrets = dir.path().join("hooks");
    std::fs::write(&secrets, format!("# test\nhooked = {SECRET}\n")).unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let w = worker(&url, dir.path());
    let engine = server(&data, port, &[], &["--webhook-secrets", secrets.to_str().unwrap()]);
    let mut c = client(&url).await;
    let yaml = format!(
        "name: hooked\nparams:\n  rows: {{type: int, default: 1}}\n  who: {{type: string, default: nobody}}\n\
         on: {{webhook: {{}}}}\nsteps:\n  s:\n    run: echo \"$WEIR_TRIGGER {{{{ params.rows }}}} {{{{ params.who }}}}\" >> {}\n",
        counter.display()
    );
    submit(&mut c, &yaml).await;
    let path = "/hooks/hooked";
    let body = br#"{"rows": 5, "who": "ci"}"#;

    let (code, first) = post(port, path, &signed(body, unix_now(), Some("delivery-1")), body);
    assert_eq!(code, 201, "{first}");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["created"], true);
    let (code, again) = post(port, path, &signed(body, unix_now(), Some("delivery-1")), body);
    assert_eq!(code, 200, "{again}");
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!((&again["run_id"], &again["created"]), (&first["run_id"], &serde_json::json!(false)));

    let mut bad_sig = signed(body, unix_now(), Some("delivery-2"));
    bad_sig[1].1 = weir_engine::signing::sign(b"not the secret at all", unix_now(), body);
    let (code, text) = post(port, path, &bad_sig, body);
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("signature does not match"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    let (code, text) = post(port, path, &signed(body, unix_now() - 600, Some("delivery-3")), body);
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("stale"), "{text}");
    let (code, text) = post(port, path, &signed(body, unix_now(), None), body);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("Idempotency-Key"), "{text}");
    let wrong = br#"{"rows": "many"}"#;
    let (code, text) = post(port, path, &signed(wrong, unix_now(), Some("delivery-4")), wrong);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("rows") && text.contains("int"), "the diagnostic names the param and its type: {text}");
    let (code, text) = post(port, "/hooks/unknown", &signed(body, unix_now(), Some("delivery-5")), body);
    assert_eq!(code, 404, "{text}");

    // The gRPC call, with the client token instead of a signature: the same key, the same run.
    let req = v1::FireWebhookRequest {
        pipeline: "hooked".into(),
        idempotency_key: "delivery-1".into(),
        payload_json: String::from_utf8(body.to_vec()).unwrap(),
    };
    let fired = c.fire_webhook(req).await.expect("fire").into_inner();
    assert_eq!((fired.run_id.as_str(), fired.created), (first["run_id"].as_str().unwrap(), false));
    let req = v1::FireWebhookRequest {
        pipeline: "hooked".into(),
        idempotency_key: "grpc-2".into(),
        payload_json: r#"{"rows": 1.5}"#.into(),
    };
    let e = c.fire_webhook(req).await.expect_err("a float for an int");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("rows"), "{e:?}");

    let got = wait_runs(&mut c, "hooked", "the delivery's run", all_succeeded(1)).await;
    assert_eq!(got.len(), 1, "one run for every delivery: {got:#?}");
    let run = &got[0];
    assert_eq!(run.run_id, first["run_id"].as_str().unwrap());
    assert_eq!(run.trigger(), v1::Trigger::Webhook);
    assert!(run.trigger_detail.contains("delivery-1"), "{run:?}");
    assert_eq!((run.params["rows"].as_str(), run.params["who"].as_str()), ("5", "ci"));
    assert_eq!(lines(&counter), vec!["webhook 5 ci".to_string()]);
    w.stop().await;
    kill_9(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_run_over_the_threshold_starts_one_downstream_run_and_one_under_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let w = worker(&url, dir.path());
    let engine = server(&data, port, &[], &[]);
    let mut c = client(&url).await;
    submit(
        &mut c,
        "name: monitor\nparams:\n  psi: {type: float, default: 0.0}\nsteps:\n  measure:\n    run: |\n      \
         printf '{\"psi\": %s}\\n' \"$WEIR_PARAM_PSI\" > \"$WEIR_OUTPUTS/metrics.json\"\n    outputs: [metrics.json]\n",
    )
    .await;
    submit(
        &mut c,
        "name: retrain\nparams:\n  drift: {type: float, default: 0.0}\n\
         on:\n  pipeline: {name: monitor, when: \"metrics.psi > 0.2\", params: {drift: metrics.psi}}\n\
         steps:\n  train:\n    run: echo \"$WEIR_TRIGGER_RUN $WEIR_PARAM_DRIFT\"\n",
    )
    .await;
    let upstream = c.clone();
    let monitor = |psi: &'static str| {
        let mut c = upstream.clone();
        async move {
            let req = v1::StartRunRequest {
                pipeline: Some(v1::start_run_request::Pipeline::Name("monitor".into())),
                params: [("psi".to_string(), psi.to_string())].into(),
                ..Default::default()
            };
            let id = c.start_run(req).await.expect("start").into_inner().run.unwrap().run_id;
            let start = Instant::now();
            loop {
                let r = c.get_run(v1::GetRunRequest { run_id: id.clone(), ..Default::default() }).await.unwrap();
                let run = r.into_inner().run.unwrap();
                if run.state() == v1::RunState::Succeeded {
                    return id;
                }
                assert!(start.elapsed() < LIMIT, "monitor run: {run:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let under = monitor("0.1").await;
    let over = monitor("0.5").await;
    let got = wait_runs(&mut c, "retrain", "the run over the threshold", |r| !r.is_empty()).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    // A later upstream run: every pass that decided `under` has ended when its run appears.
    let later = monitor("0.9").await;
    let got = wait_runs(&mut c, "retrain", "the later run's", all_succeeded(2)).await;
    assert_eq!(got.len(), 2, "the run under the threshold started nothing: {got:#?}");
    let by_upstream: Vec<(&str, &str)> = got
        .iter()
        .map(|r| (r.trigger_detail.split_whitespace().nth(2).unwrap_or(""), r.params["drift"].as_str()))
        .collect();
    assert_eq!(by_upstream, vec![(over.as_str(), "0.5"), (later.as_str(), "0.9")], "{got:#?}");
    assert!(got.iter().all(|r| r.trigger() == v1::Trigger::Pipeline), "{got:#?}");
    assert!(!got.iter().any(|r| r.trigger_detail.contains(&under)), "{got:#?}");
    assert!(got[0].trigger_detail.contains("metrics.psi=0.5"), "{:?}", got[0]);
    w.stop().await;
    kill_9(engine);
}
