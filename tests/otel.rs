//! OpenTelemetry traces through the real binaries: a real OTLP/gRPC receiver in this process
//! (opentelemetry-proto's `TraceService` served by tonic on loopback) takes what `weir server
//! --otlp-endpoint` and `weir-worker --otlp-endpoint` export while a pipeline submitted with its
//! folder (so there is a bundle to fetch) runs: a step with an output, one that takes it as an
//! input, one that holds until the test opens a gate, and one that fails twice (exit 3, one
//! retry). The engine is killed (SIGKILL) while the gate holds and started again on the same
//! port and data folder; the run then finishes.
//!
//! Checked: every span of the run shares one trace id, before and after the restart; the run
//! span is the root, step spans its children, attempt spans theirs, and the worker's phases
//! (fetch bundle, materialize inputs, run, collect outputs, upload outputs) are children of the
//! attempt spans, exported as service `weir-worker` beside the engine's `weir-engine`; the
//! attributes (pipeline, run id, step, attempt, worker, exit code, outcome); the failed step's
//! and attempts' error status and `error.type`. Nothing here waits on a clock but for deadlines.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, status};
use weir_tests::procs::Kill;

const PIPELINE: &str = "name: traced
steps:
  fetch:
    run: echo rows > $WEIR_OUTPUTS/data.txt
    outputs: [data.txt]
  train:
    needs: [fetch]
    run: cat $WEIR_INPUTS/fetch/data.txt
  hold:
    run: while [ ! -e {gate} ]; do sleep 0.05; done
  fails:
    needs: [hold]
    retries: {limit: 1, backoff: 1s}
    run: exit 3
";

/// A span as received, with the `service.name` of the resource it came under.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    span: Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<String> {
        let kv = self.span.attributes.iter().find(|kv| kv.key == key)?;
        Some(show(kv.value.as_ref()?))
    }

    fn trace(&self) -> String {
        hex(&self.span.trace_id)
    }

    fn id(&self) -> String {
        hex(&self.span.span_id)
    }

    fn parent(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    fn status(&self) -> (i32, String) {
        self.span.status.as_ref().map_or((0, String::new()), |s| (s.code, s.message.clone()))
    }
}

fn show(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OTLP receiver: keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Got>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref().map(show))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.push(Got { service: service.clone(), span });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    fn spans(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (up to a deadline) until `want` holds of the spans received.
    async fn until(&self, what: &str, want: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let start = Instant::now();
        loop {
            let spans = self.spans();
            if want(&spans) {
                return spans;
            }
            assert!(start.elapsed() < Duration::from_secs(90), "never received {what}; got:\n{}", names(&spans));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn names(spans: &[Got]) -> String {
    spans.iter().map(|g| format!("{} {} {}<-{}\n", g.service, g.span.name, g.id(), g.parent())).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn server(weir: &Path, port: u16, data: &Path, otlp: &str, log: &Path) -> Kill {
    let mut child = Command::new(weir)
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--lease-timeout", "20s", "--data-dir"])
        .arg(data)
        .args(["--otlp-endpoint", otlp])
        .stdout(Stdio::piped())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "the server did not start: {line:?} (log {})", log.display());
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Kill(child)
}

fn cli(weir: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(weir).args(args).args(["--server", url]).output().unwrap();
    assert!(out.status.success(), "weir {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn one<'a>(spans: &'a [Got], what: &str, pred: impl Fn(&Got) -> bool) -> &'a Got {
    let found: Vec<&Got> = spans.iter().filter(|g| pred(g)).collect();
    assert_eq!(found.len(), 1, "expected one {what}; all spans:\n{}", names(spans));
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_one_trace_across_engine_worker_and_a_restart() {
    let (weir, worker_bin) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();

    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let serve = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let engine = server(&weir, port, &data, &otlp, &log);
    let _worker = Kill(
        Command::new(&worker_bin)
            .args(["--engine", &url, "--capacity", "2", "--name", "w1", "--docker", "off", "--gpus", "none"])
            .args(["--otlp-endpoint", &otlp])
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("worker.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    let folder = dir.path().join("pipeline");
    std::fs::create_dir_all(&folder).unwrap();
    let gate = dir.path().join("gate");
    std::fs::write(folder.join("pipeline.yaml"), PIPELINE.replace("{gate}", &gate.display().to_string())).unwrap();
    std::fs::write(folder.join("README"), "a bundle to fetch\n").unwrap();
    cli(&weir, &url, &["submit", &folder.display().to_string()]);
    let run = cli(&weir, &url, &["start", "traced"]);
    assert!(run.starts_with("traced-"), "{run}");

    // Before the restart: fetch and train are done, their spans and the worker's exported.
    let before = receiver
        .until("fetch and train with the worker's phases", |s| {
            let steps = s.iter().filter(|g| g.span.name == "step fetch" || g.span.name == "step train").count();
            let uploads = s.iter().filter(|g| g.span.name == "upload outputs").count();
            let materialized = s.iter().filter(|g| g.span.name == "materialize inputs").count();
            steps == 2 && uploads >= 2 && materialized >= 1
        })
        .await;
    let trace = before[0].trace();

    // Kill the engine outright while `hold` runs, and start it again on the same folder and port.
    drop(engine);
    let _engine = server(&weir, port, &data, &otlp, &log);
    std::fs::write(&gate, "").unwrap();

    receiver
        .until("the run span and the failed step", |s| {
            s.iter().any(|g| g.span.name == "run traced") && s.iter().any(|g| g.span.name == "step fails")
        })
        .await;
    // Attempt spans of `fails` and the worker's last phases may trail the run span by an export.
    let spans = receiver
        .until("every attempt and phase", |s| {
            s.iter().filter(|g| g.span.name == "attempt fails").count() == 2
                && s.iter().filter(|g| g.service == "weir-worker" && g.span.name == "run").count() == 5
        })
        .await;

    // One trace for everything, before and after the restart, from both services.
    for g in &spans {
        assert_eq!(g.trace(), trace, "a span outside the run's trace: {g:?}");
    }
    assert!(spans.iter().any(|g| g.service == "weir-engine"));
    assert!(spans.iter().any(|g| g.service == "weir-worker"));

    // The run span: the root, with the pipeline, the run id and its failure.
    let root = one(&spans, "run span", |g| g.span.name == "run traced");
    assert!(root.span.parent_span_id.is_empty(), "the run span has a parent: {root:?}");
    assert_eq!(root.service, "weir-engine");
    assert_eq!(root.attr("cicd.pipeline.name").as_deref(), Some("traced"));
    assert_eq!(root.attr("cicd.pipeline.run.id").as_deref(), Some(run.as_str()));
    assert_eq!(root.attr("cicd.pipeline.result").as_deref(), Some("failure"));
    assert_eq!(root.status().0, status::StatusCode::Error as i32);

    // Steps under the run; attempts under their steps; the worker's phases under attempts.
    let by_id: HashMap<String, &Got> = spans.iter().map(|g| (g.id(), g)).collect();
    let parent_of = |g: &Got| by_id.get(&g.parent()).copied();
    for step in ["fetch", "train", "hold", "fails"] {
        let s = one(&spans, "step span", |g| g.span.name == format!("step {step}"));
        assert_eq!(s.parent(), root.id(), "step {step} is not a child of the run");
        assert_eq!(s.attr("cicd.pipeline.task.name").as_deref(), Some(step));
        assert_eq!(s.attr("cicd.pipeline.run.id").as_deref(), Some(run.as_str()));
        let attempts: Vec<&Got> = spans.iter().filter(|g| g.span.name == format!("attempt {step}")).collect();
        assert_eq!(attempts.len(), if step == "fails" { 2 } else { 1 }, "attempts of {step}");
        for a in &attempts {
            assert_eq!(a.parent(), s.id(), "attempt of {step} is not a child of its step");
            assert!(a.attr("cicd.worker.id").is_some_and(|w| !w.is_empty()), "{a:?}");
            assert!(a.attr("weir.attempt").is_some(), "{a:?}");
            let phases: Vec<&Got> = spans.iter().filter(|g| g.parent() == a.id()).collect();
            assert!(phases.iter().all(|p| p.service == "weir-worker"), "{phases:?}");
            let phase_names: Vec<&str> = phases.iter().map(|p| p.span.name.as_str()).collect();
            assert!(phase_names.contains(&"fetch bundle") && phase_names.contains(&"run"), "{step}: {phase_names:?}");
        }
    }
    let phases_of = |step: &str| -> Vec<String> {
        let attempt = one(&spans, "attempt", |g| g.span.name == format!("attempt {step}"));
        let mut names: Vec<String> =
            spans.iter().filter(|g| g.parent() == attempt.id()).map(|g| g.span.name.clone()).collect();
        names.sort();
        names
    };
    assert_eq!(phases_of("fetch"), ["collect outputs", "fetch bundle", "run", "upload outputs"]);
    assert_eq!(phases_of("train"), ["collect outputs", "fetch bundle", "materialize inputs", "run", "upload outputs"]);

    // A success: exit code 0 on the worker's run phase, no error anywhere on the step.
    let fetch = one(&spans, "fetch attempt", |g| g.span.name == "attempt fetch");
    assert_eq!(fetch.attr("weir.outcome").as_deref(), Some("succeeded"));
    assert_eq!(fetch.status().0, status::StatusCode::Unset as i32);
    let fetch_run = one(&spans, "fetch's run phase", |g| g.span.name == "run" && g.parent() == fetch.id());
    assert_eq!(fetch_run.attr("process.exit.code").as_deref(), Some("0"));
    assert_eq!(fetch_run.attr("cicd.pipeline.task.name").as_deref(), Some("fetch"));

    // The failed step: error status, error.type and exit code on the step, its attempts and the
    // worker's run phases.
    let fails = one(&spans, "step fails", |g| g.span.name == "step fails");
    assert_eq!(fails.status().0, status::StatusCode::Error as i32, "{fails:?}");
    assert_eq!(fails.attr("error.type").as_deref(), Some("exit_code"));
    assert_eq!(fails.attr("cicd.pipeline.task.run.result").as_deref(), Some("failure"));
    for a in spans.iter().filter(|g| g.span.name == "attempt fails") {
        let (code, message) = a.status();
        assert_eq!(code, status::StatusCode::Error as i32, "{a:?}");
        assert!(message.starts_with("exit code 3"), "{a:?}");
        assert_eq!(a.attr("process.exit.code").as_deref(), Some("3"));
        assert_eq!(a.attr("error.type").as_deref(), Some("exit_code"));
        let run_phase = one(&spans, "run phase", |g| g.span.name == "run" && g.parent() == a.id());
        assert_eq!(run_phase.status().0, status::StatusCode::Error as i32);
        assert_eq!(run_phase.attr("process.exit.code").as_deref(), Some("3"));
        assert!(parent_of(run_phase).is_some());
    }

    // The restart: `hold`'s attempt began under the first engine and ended under the second,
    // and its worker phases joined the same trace under the same attempt span.
    let hold = one(&spans, "hold attempt", |g| g.span.name == "attempt hold");
    assert!(spans.iter().any(|g| g.span.name == "run" && g.parent() == hold.id()));
    serve.abort();
}

/// `weir run --otlp-endpoint`: the engine and the worker it embeds both export, and what they
/// hold at the end (the run span, the last phases) is sent before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_run_exports_everything_before_it_exits() {
    let (weir, _) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let serve = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let file = dir.path().join("pipeline.yaml");
    std::fs::write(&file, "name: local\nsteps:\n  only:\n    run: echo hi\n").unwrap();
    let mut run = Command::new(&weir);
    run.arg("run").arg(&file).arg("--data-dir").arg(dir.path().join("data")).args(["--otlp-endpoint", &otlp]);
    let out = tokio::task::spawn_blocking(move || run.output()).await.unwrap().unwrap();
    assert!(out.status.success(), "weir run failed: {}", String::from_utf8_lossy(&out.stderr));
    // Exited: whatever was not sent by now never will be.
    let spans = receiver.spans();
    let root = one(&spans, "run span", |g| g.span.name == "run local");
    assert_eq!(root.attr("cicd.pipeline.result").as_deref(), Some("success"));
    let step = one(&spans, "step span", |g| g.span.name == "step only");
    let attempt = one(&spans, "attempt span", |g| g.span.name == "attempt only");
    let phase = one(&spans, "run phase", |g| g.span.name == "run");
    assert_eq!((step.parent(), attempt.parent(), phase.parent()), (root.id(), step.id(), attempt.id()));
    assert_eq!(phase.service, "weir-worker");
    assert!(spans.iter().all(|g| g.trace() == root.trace()), "{}", names(&spans));
    serve.abort();
}

/// Tracing is the engine's to start: a worker with `--otlp-endpoint` under an engine without one
/// gets no `traceparent` with its leases and exports nothing, checked once the worker has
/// exited (it sends what it holds before it exits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_traces_nothing_when_its_engine_does_not() {
    let (weir, worker_bin) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let serve = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut engine = Command::new(&weir)
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("WEIR_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(engine.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let _engine = Kill(engine);
    let mut worker = Command::new(&worker_bin)
        .args(["--engine", &url, "--capacity", "1", "--docker", "off", "--gpus", "none"])
        .args(["--otlp-endpoint", &otlp])
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let folder = dir.path().join("pipeline");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), "name: quiet\nsteps:\n  a:\n    run: echo a\n").unwrap();
    let (w, u, f) = (weir.clone(), url.clone(), folder.display().to_string());
    tokio::task::spawn_blocking(move || {
        cli(&w, &u, &["submit", &f]);
        cli(&w, &u, &["start", "quiet", "--watch"]);
    })
    .await
    .unwrap();
    // SIGTERM: the worker stops cleanly, sending whatever spans it held first.
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || worker.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the worker did not stop cleanly: {status}");
    assert!(receiver.spans().is_empty(), "spans without an engine trace:\n{}", names(&receiver.spans()));
    serve.abort();
}
