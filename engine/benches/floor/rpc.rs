//! What splitting the engine and the worker into two processes adds to a chain step, measured
//! alone: one Report of a finished step that leases the next in the same call (what a chain
//! step of `weir server` + `weir-worker` sends, once a step), over loopback TCP, through
//!
//! * gRPC: a tonic server built as `weir server` builds its own (TCP_NODELAY, every connection
//!   [`Coalesced`]), in a process of its own, whose Report handler answers at once with an
//!   assignment of a chain step's size; and the worker's own client ([`Direct`], the session
//!   header on every call) on a runtime of this process. No store, no engine, no watcher: the
//!   transport alone, HTTP/2, gRPC and the tasks and threads that carry them. Measured twice:
//!   back to back, and each call after a `sh -c true` step started and waited for on the
//!   client's runtime (as the worker starts steps), against the same steps without calls. The
//!   difference is what a call costs when both ends went idle while a step ran, as they do in
//!   a chain: woken threads, and code and data no longer in the caches;
//! * TCP: the same request and answer bytes over a plain loopback TCP connection, one blocking
//!   thread at each end (two writes, two reads, two wake-ups): the kernel's part of a round
//!   trip, which no transport over TCP avoids; again back to back and after each step.
//!
//! Knobs, for finding out what a call's cost is made of: `FLOOR_SERVER_RT=current` or
//! `FLOOR_CLIENT_RT=current` puts that end on a current-thread runtime instead of a
//! multi-thread one (one thread a core): whether the runtime's threads are the cost;
//! `FLOOR_SLEEP=1` makes each step a 0.7 ms sleep instead of a process: whether the cost is
//! the idle gap or what the step's process leaves in the caches.

use std::cell::RefCell;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use prost::Message as _;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};
use weir_engine::api::coalesce::Coalesced;
use weir_proto::direct::{Direct, Settings};
use weir_proto::transport::Transport;
use weir_proto::v1::weir_worker_client::WeirWorkerClient;
use weir_proto::v1::weir_worker_server::{WeirWorker, WeirWorkerServer};
use weir_proto::v1::{self as pb, action, report_request};

/// The Report a worker sends when a chain step succeeded, asking for the next step.
fn report(i: u32) -> pb::ReportRequest {
    pb::ReportRequest {
        worker_id: "bench-18d0a3f2c41-1".into(),
        attempt: Some(attempt(i)),
        time: Some(prost_types::Timestamp { seconds: 1_800_000_000 + i64::from(i), nanos: 123_456_789 }),
        outcome: Some(report_request::Outcome::Succeeded(pb::Succeeded {
            metrics: Default::default(),
            outputs: Some(pb::Manifest::default()),
        })),
        lease_next: true,
    }
}

fn attempt(i: u32) -> pb::AttemptRef {
    pb::AttemptRef {
        run_id: "chain-1000-20261208-014455-3f2a".into(),
        attempt: Some(pb::AttemptId { instance: i, number: 1 }),
    }
}

/// The engine's answer: the next step of the chain, as `weir server` sends it.
fn answer(i: u32) -> pb::ReportResponse {
    let step = format!("s{:04}", i + 1);
    let env = [
        ("WEIR_RUN_ID", "chain-1000-20261208-014455-3f2a"),
        ("WEIR_PIPELINE", "chain-1000"),
        ("WEIR_STEP", step.as_str()),
        ("WEIR_INSTANCE", step.as_str()),
        ("WEIR_ATTEMPT", "1"),
    ];
    pb::ReportResponse {
        next: Some(pb::Assignment {
            attempt: Some(attempt(i + 1)),
            instance_name: step.clone(),
            step: step.clone(),
            pipeline: "chain-1000".into(),
            action: Some(pb::Action { kind: Some(action::Kind::Script("true".into())) }),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            runtime: pb::Runtime::Process as i32,
            bundle_digest: "b3:5b0c8f5e6f0a3c1d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d".into(),
            resources: Some(pb::Resources { cpus_milli: 1000, memory_bytes: 0, gpus: 0 }),
            ..Default::default()
        }),
    }
}

/// `sh -c true` in a process group of its own, its output piped, waited for on the runtime
/// (with `FLOOR_SLEEP`, a sleep as long instead).
async fn step() {
    if std::env::var_os("FLOOR_SLEEP").is_some() {
        std::thread::sleep(std::time::Duration::from_micros(700));
        return;
    }
    let status = tokio::process::Command::new("/bin/sh")
        .args(["-c", "true"])
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .status()
        .await
        .expect("sh runs");
    assert!(status.success());
}

/// A worker service whose Report answers at once; nothing else is called.
struct Answering;

type Chunks = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Chunk, Status>> + Send>>;

#[tonic::async_trait]
impl WeirWorker for Answering {
    async fn register(&self, _: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn lease(&self, _: Request<pb::LeaseRequest>) -> Result<Response<pb::LeaseResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn heartbeat(&self, _: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn report(&self, request: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let done = request.into_inner().attempt.and_then(|a| a.attempt).map_or(0, |a| a.instance);
        Ok(Response::new(answer(done)))
    }
    async fn upload_logs(
        &self,
        _: Request<Streaming<pb::UploadLogsRequest>>,
    ) -> Result<Response<pb::UploadLogsResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn upload_artifact(
        &self,
        _: Request<Streaming<pb::UploadArtifactRequest>>,
    ) -> Result<Response<pb::UploadArtifactResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
    type DownloadBlobStream = Chunks;
    async fn download_blob(&self, _: Request<pb::DownloadBlobRequest>) -> Result<Response<Chunks>, Status> {
        Err(Status::unimplemented("bench"))
    }
    type DownloadBundleStream = Chunks;
    async fn download_bundle(&self, _: Request<pb::DownloadBundleRequest>) -> Result<Response<Chunks>, Status> {
        Err(Status::unimplemented("bench"))
    }
    async fn upload_metrics(
        &self,
        _: Request<pb::UploadMetricsRequest>,
    ) -> Result<Response<pb::UploadMetricsResponse>, Status> {
        Err(Status::unimplemented("bench"))
    }
}

/// The gRPC part's two ends: a server in a process of its own (this program again, started
/// with `FLOOR_SERVE=1`), and the client on a runtime of this process, each runtime of the
/// default size (one thread a core), as `weir server` and `weir-worker` are. Two processes, not
/// one: in one, each `munmap` of a step's start would have to flush the other end's threads'
/// TLBs too, which two processes never do.
pub struct Grpc {
    server: Child,
    /// The server's stdin, where a line asks it for its CPU time so far, and its stdout.
    ask: RefCell<(ChildStdin, BufReader<ChildStdout>)>,
    client: tokio::runtime::Runtime,
    worker: WeirWorkerClient<Transport>,
}

/// When this program was started as the gRPC part's server: serves on a loopback port, prints
/// `listening on ADDRESS`, then answers each line on stdin with its own CPU seconds so far, and
/// exits at the end of its stdin.
pub fn serve_if_asked() {
    if std::env::var_os("FLOOR_SERVE").is_none() {
        return;
    }
    let server = runtime("FLOOR_SERVER_RT");
    server.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let serve = tonic::transport::Server::builder()
            .add_service(WeirWorkerServer::new(Answering))
            .serve_with_incoming(incoming.map(|io| io.map(Coalesced)));
        tokio::spawn(serve);
        println!("listening on {addr}");
        // Read on a thread of its own; the runtime's threads only serve.
        let asked = tokio::task::spawn_blocking(|| {
            let mut out = std::io::stdout();
            for line in std::io::stdin().lines() {
                if line.is_err() || writeln!(out, "{}", super::cpu()).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        });
        let _ = asked.await;
    });
    drop(server);
    std::process::exit(0);
}

fn runtime(var: &str) -> tokio::runtime::Runtime {
    match std::env::var(var).as_deref() {
        Ok("current") => tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime"),
    }
}

impl Grpc {
    pub fn start() -> Grpc {
        let mut server = Command::new(std::env::current_exe().expect("this program"))
            .env("FLOOR_SERVE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("server starts");
        let ask = server.stdin.take().expect("stdin");
        let mut answers = BufReader::new(server.stdout.take().expect("stdout"));
        let mut line = String::new();
        answers.read_line(&mut line).expect("server's first line");
        let addr = line.trim().strip_prefix("listening on ").expect("listening on ADDRESS").to_string();
        let client = runtime("FLOOR_CLIENT_RT");
        let direct = Direct::new(&format!("http://{addr}"), Settings::default(), None).expect("client");
        let worker = WeirWorkerClient::new(Transport::from(direct));
        let grpc = Grpc { server, ask: RefCell::new((ask, answers)), client, worker };
        grpc.calls(0, 100, false); // connected and warm
        grpc
    }

    /// The server process's CPU seconds so far.
    pub fn server_cpu(&self) -> f64 {
        let (ask, answers) = &mut *self.ask.borrow_mut();
        let mut line = String::new();
        writeln!(ask).and_then(|()| ask.flush()).expect("ask the server");
        answers.read_line(&mut line).expect("server's CPU");
        line.trim().parse().expect("CPU seconds")
    }

    /// `n` steps started and waited for on the client's runtime, as [`Grpc::calls`] with
    /// `steps` starts them, without the calls: the difference is what the calls cost.
    pub fn steps(&self, n: u32) {
        let task = self.client.spawn(async move {
            for _ in 0..n {
                step().await;
            }
        });
        self.client.block_on(task).expect("steps");
    }

    /// `n` Reports one after another, each waiting for its answer, from a task of the client's
    /// runtime (as the worker's step task sends its report). With `steps`, each call follows a
    /// `sh -c true` started and waited for on that runtime, as a worker's step: the threads at
    /// both ends go idle while it runs, so each call wakes them again.
    pub fn calls(&self, first: u32, n: u32, steps: bool) {
        let mut worker = self.worker.clone();
        let task = self.client.spawn(async move {
            for i in first..first + n {
                if steps {
                    step().await;
                }
                let mut request = Request::new(report(i));
                request
                    .metadata_mut()
                    .insert(weir_proto::SESSION_HEADER, "0123456789abcdef0123456789abcdef".parse().unwrap());
                let next = worker.report(request).await.expect("report").into_inner().next.expect("next");
                assert_eq!(next.attempt.and_then(|a| a.attempt).map(|a| a.instance), Some(i + 1));
            }
        });
        self.client.block_on(task).expect("calls");
    }
}

impl Drop for Grpc {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// The TCP part's two ends: a thread echoing a request's worth of bytes with an answer's worth.
pub struct Tcp {
    client: TcpStream,
    request: Vec<u8>,
    answer_len: usize,
}

impl Tcp {
    pub fn start() -> Tcp {
        // The bytes a gRPC call carries on the wire are larger (HTTP/2 frames and headers);
        // the protobuf messages alone are the least any framing sends.
        let request = report(1).encode_to_vec();
        let answer = answer(1).encode_to_vec();
        let (req_len, answer_len) = (request.len(), answer.len());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().expect("accept");
            peer.set_nodelay(true).expect("nodelay");
            let mut buf = vec![0; req_len];
            while peer.read_exact(&mut buf).is_ok() {
                if peer.write_all(&answer).is_err() {
                    break;
                }
            }
        });
        let client = TcpStream::connect(addr).expect("connect");
        client.set_nodelay(true).expect("nodelay");
        Tcp { client, request, answer_len }
    }

    /// `n` round trips; with `steps`, each after a step started as [`crate::spawn`] starts it.
    pub fn calls(&self, n: u32, steps: bool) {
        let mut buf = vec![0; self.answer_len];
        for _ in 0..n {
            if steps {
                crate::spawn(1);
            }
            (&self.client).write_all(&self.request).expect("send");
            (&self.client).read_exact(&mut buf).expect("answer");
        }
    }
}
