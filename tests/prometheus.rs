//! Operations visibility through the real binaries: `weir server` (with tokens) and
//! `weir-worker --metrics ADDR --log-format json` run a pipeline while a real Prometheus
//! (Debian's `prometheus`) scrapes both (a step holds until the test saw it running), the engine with the client token as a bearer
//! `credentials_file`. Prometheus's HTTP API must then give the run counters and step durations
//! the run produced, `promtool check metrics` must accept both endpoints, `/metrics` without the
//! token is refused, the server's text log (stderr to a file) carries no ANSI codes and says
//! what happened, and the worker's JSON log parses line by line.
//!
//! Without `prometheus` the test skips loudly, except under CI=true, where it fails.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_tests::procs::Kill;

const CLIENT: &str = "client-token-0123456789abcdef0123456789";
const WORKER: &str = "worker-token-0123456789abcdef0123456789";

const PIPELINE: &str = "name: prom
steps:
  slow:
    run: while [ ! -e {gate} ]; do sleep 0.05; done; sleep 2
  after:
    needs: [slow]
    run: echo after
";

fn prometheus_ready() -> bool {
    let found = Command::new("prometheus").arg("--version").output().is_ok_and(|o| o.status.success())
        && Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "CI needs Debian's `prometheus` package (prometheus, promtool)");
        eprintln!(
            "SKIPPED: no `prometheus`/`promtool` on PATH (apt-get install prometheus); the metrics test did not run"
        );
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP/1.1 GET: (status, body).
fn http_get(addr: &str, path: &str, bearer: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(body) } else { body.into() };
    Ok((status, body))
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

fn promtool_accepts(what: &str, body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the {what}'s metrics:\n{}{}\n---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of instant query `q` (its one sample), once Prometheus has it.
fn query(prom: &str, q: &str, want: impl Fn(f64) -> bool) -> f64 {
    let path = format!("/api/v1/query?{}", serde_urlencoded::to_string([("query", q)]).unwrap());
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok((200, body)) = http_get(prom, &path, None) {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let value = v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok());
            if let Some(x) = value
                && want(x)
            {
                return x;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("Prometheus never gave a wanted value for {q}; last answer: {last}");
}

fn wait_file_line(path: &Path, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no line with {needle:?} in {}:\n{text}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_engine_and_worker_during_a_run() {
    if !prometheus_ready() {
        return;
    }
    let (weir, worker_bin) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("client={CLIENT}\nworker={WORKER}\n")).unwrap();
    let client_file = dir.path().join("client-token");
    std::fs::write(&client_file, CLIENT).unwrap();
    for f in [&tokens, &client_file] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // The engine: its text log goes to a file (not a terminal), its address to stdout.
    let server_log = dir.path().join("server.log");
    let mut server = Command::new(&weir)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--token-file")
        .arg(&tokens)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&server_log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    // Keep reading: a closed pipe would end the server at its next line.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let server = Kill(server);
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://"), "no address in {line:?}");
    let engine_addr = url.trim_start_matches("http://").to_string();

    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let worker_log = dir.path().join("worker.log");
    let worker = Kill(
        Command::new(&worker_bin)
            .args(["--engine", &url, "--capacity", "2", "--name", "w1", "--docker", "off", "--gpus", "none"])
            .args(["--labels", "zone=test", "--metrics", &worker_metrics, "--log-format", "json"])
            .arg("--token-file")
            .arg(&tokens)
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&worker_log).unwrap())
            .spawn()
            .unwrap(),
    );

    let prom_addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: weir\n    authorization:\n      \
             credentials_file: {}\n    static_configs:\n      - targets: ['{engine_addr}']\n  - job_name: \
             weir-worker\n    static_configs:\n      - targets: ['{worker_metrics}']\n",
            client_file.display()
        ),
    )
    .unwrap();
    let _prometheus = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    // A run of two steps, through the API with the client token.
    let channel = tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect().await.unwrap();
    let mut client = WeirClientClient::with_interceptor(channel, |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", format!("Bearer {CLIENT}").parse().unwrap());
        Ok(req)
    });
    let gate = dir.path().join("gate");
    let yaml = PIPELINE.replace("{gate}", &gate.display().to_string());
    let header = v1::SubmitPipelineHeader { yaml, file_name: "p.yaml".into(), ..Default::default() };
    let msgs = vec![v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) }];
    let version = client.submit_pipeline(tokio_stream::iter(msgs)).await.unwrap().into_inner().version;
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Version(version)),
        params: HashMap::new(),
        no_cache: false,
    };
    let run = client.start_run(req).await.unwrap().into_inner().run.unwrap().run_id;

    // While the slow step runs (it waits for the gate), the gauges say so, scraped by Prometheus.
    query(&prom_addr, "weir_worker_running_attempts", |v| v == 1.0);
    query(&prom_addr, "weir_workers_connected", |v| v == 1.0);
    std::fs::write(&gate, "").unwrap();

    let start = Instant::now();
    loop {
        let got = client.get_run(v1::GetRunRequest { run_id: run.clone(), ..Default::default() }).await.unwrap();
        let state = got.into_inner().run.unwrap().state();
        if state == v1::RunState::Succeeded {
            break;
        }
        assert!(state != v1::RunState::Failed, "the run failed");
        assert!(start.elapsed() < Duration::from_secs(60), "the run did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // What Prometheus scraped: exactly this run, its two steps, their exits.
    query(&prom_addr, r#"weir_runs_started_total{pipeline="prom"}"#, |v| v == 1.0);
    query(&prom_addr, r#"weir_runs_finished_total{pipeline="prom",state="succeeded"}"#, |v| v == 1.0);
    query(&prom_addr, r#"weir_step_duration_seconds_count{pipeline="prom",state="succeeded"}"#, |v| v == 2.0);
    // The slow step sleeps 2 s between its lease and its end, so the sum holds at least that.
    query(&prom_addr, r#"weir_step_duration_seconds_sum{pipeline="prom",state="succeeded"}"#, |v| v >= 2.0);
    query(&prom_addr, r#"weir_step_queue_wait_seconds_count{pipeline="prom"}"#, |v| v == 2.0);
    query(&prom_addr, "weir_leases_granted_total", |v| v == 2.0);
    query(&prom_addr, r#"weir_worker_step_exits_total{reason="exit_zero"}"#, |v| v == 2.0);
    query(&prom_addr, "weir_worker_running_attempts", |v| v == 0.0);
    query(&prom_addr, r#"up{job="weir"}"#, |v| v == 1.0);

    // Both endpoints pass promtool; the engine's wants the client token.
    let (code, engine_body) = http_get(&engine_addr, "/metrics", Some(CLIENT)).unwrap();
    assert_eq!(code, 200, "{engine_body}");
    promtool_accepts("engine", &engine_body);
    for name in [
        "weir_store_size_bytes",
        "weir_store_flush_duration_seconds_bucket",
        "weir_workers_free_cpus",
        "weir_cache_misses_total",
        "weir_artifact_uploaded_bytes_total",
    ] {
        assert!(engine_body.contains(name), "no {name} in the engine's metrics:\n{engine_body}");
    }
    let (code, worker_body) = http_get(&worker_metrics, "/metrics", None).unwrap();
    assert_eq!(code, 200);
    promtool_accepts("worker", &worker_body);
    let (code, _) = http_get(&engine_addr, "/metrics", None).unwrap();
    assert_eq!(code, 401, "/metrics must want the client token when the server has tokens");
    let (code, _) = http_get(&engine_addr, "/metrics", Some(WORKER)).unwrap();
    assert_eq!(code, 401, "the worker token is not the client token");

    // Logs: the server's text log says what happened, without escape codes (not a terminal).
    for needle in ["weir server starting", "worker joined", "run started", "run finished"] {
        wait_file_line(&server_log, needle);
    }
    let text = std::fs::read_to_string(&server_log).unwrap();
    assert!(!text.contains('\x1b'), "ANSI codes in a log that is not a terminal:\n{text}");
    assert!(wait_file_line(&server_log, "run finished").contains("state=succeeded"), "{text}");
    // The worker's JSON log: every line an object; the start line has version and configuration.
    let text = std::fs::read_to_string(&worker_log).unwrap();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let start = lines.iter().find(|l| l["fields"]["message"] == "worker starting").expect("a start line");
    assert_eq!(start["fields"]["version"], env!("CARGO_PKG_VERSION"), "{start}");
    assert!(start["fields"]["labels"].as_str().unwrap().contains("zone"), "{start}");
    assert!(start["fields"]["runtimes"].as_str().unwrap().contains("process"), "{start}");
    assert!(start["fields"]["cpus"].as_u64().unwrap() >= 1, "{start}");
    assert_eq!(start["level"], "INFO");
    assert!(
        !text.contains(WORKER) && !std::fs::read_to_string(&server_log).unwrap().contains(CLIENT),
        "a token in a log"
    );
    drop(worker);
    drop(server);
}
