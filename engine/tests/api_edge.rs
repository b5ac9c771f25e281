//! What the API's edge says, against a real server on loopback and a real store in a
//! temporary folder. Honest errors: a client's mistake is `INVALID_ARGUMENT` or `NOT_FOUND`,
//! never `INTERNAL`; a real internal error reaches the caller as a generic message with an
//! error id, never a server path; a param error names the param and points into the pipeline,
//! not at a file called `params`; details are a standard `google.rpc.Status`. Honest views: a
//! step's matrix values come back as given, whatever characters they hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request};
use weir_engine::server::{self, Server, ServerConfig};
use weir_proto::v1;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_proto::v1::weir_worker_client::WeirWorkerClient;

const ROWS: &str = "name: ml-retrain
params:
  rows: {type: int, default: 10}
steps:
  train:
    run: echo {{ params.rows }}
";

/// Everything the server logs in this test binary, from the first call on.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn serve(dir: &std::path::Path) -> (Server, WeirClientClient<Channel>, Channel) {
    let mut config = ServerConfig::new(dir, "127.0.0.1:0".parse().unwrap());
    config.tick = Duration::from_millis(50);
    let s = server::start(config).await.unwrap();
    let ch = Channel::from_shared(s.url()).unwrap().connect().await.unwrap();
    (s, WeirClientClient::new(ch.clone()), ch)
}

/// Submits `yaml` as `p.yaml`, with `bundle` as its bundle when given.
async fn submit(c: &mut WeirClientClient<Channel>, yaml: &str, bundle: Option<&[u8]>) -> v1::SubmitPipelineResponse {
    let mut header = v1::SubmitPipelineHeader { yaml: yaml.into(), file_name: "p.yaml".into(), ..Default::default() };
    let mut msgs = Vec::new();
    if let Some(b) = bundle {
        header.bundle_digest = blake3::hash(b).to_hex().to_string();
        header.bundle_size = b.len() as u64;
    }
    msgs.push(v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::Header(header)) });
    if let Some(b) = bundle {
        msgs.push(v1::SubmitPipelineRequest { part: Some(v1::submit_pipeline_request::Part::BundleChunk(b.to_vec())) });
    }
    c.submit_pipeline(tokio_stream::iter(msgs)).await.unwrap().into_inner()
}

/// A registered worker's client and id, its session sent on every call.
async fn worker(ch: Channel) -> (WeirWorkerClient<Channel>, String, String) {
    let mut w = WeirWorkerClient::new(ch);
    let r = w
        .register(v1::RegisterRequest { name: "hand".into(), capacity: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    (w, r.worker_id, r.session)
}

fn with_session<T>(msg: T, session: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(weir_proto::SESSION_HEADER, session.parse().unwrap());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_are_invalid_argument_or_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let (s, mut c, ch) = serve(dir.path()).await;

    let e = c.get_run(v1::GetRunRequest { run_id: String::new(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "an empty run id: {e:?}");
    assert!(e.message().contains("run_id"), "{e:?}");
    let e = c.cancel_run(v1::CancelRunRequest { run_id: String::new(), reason: String::new() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "an empty run id: {e:?}");

    let e =
        c.list_runs(v1::ListRunsRequest { page_token: "not-a-token".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "a page token this server never issued: {e:?}");

    let (mut w, id, session) = worker(ch).await;
    let bad = v1::DownloadBlobRequest { worker_id: id.clone(), digest: "zz".into(), offset: 0 };
    let e = w.download_blob(with_session(bad, &session)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "a digest that is not one: {e:?}");
    let unknown = blake3::hash(b"never stored").to_hex().to_string();
    let req = v1::DownloadBundleRequest { worker_id: id.clone(), digest: unknown.clone() };
    let e = w.download_bundle(with_session(req, &session)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "a digest nothing was stored under: {e:?}");
    let req = v1::DownloadBlobRequest { worker_id: id, digest: unknown, offset: 0 };
    let e = w.download_blob(with_session(req, &session)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_param_error_names_the_param_and_the_pipeline_file() {
    let dir = tempfile::tempdir().unwrap();
    let (s, mut c, _) = serve(dir.path()).await;
    submit(&mut c, ROWS, None).await;
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Name("ml-retrain".into())),
        params: HashMap::from([("rows".to_string(), "many".to_string())]),
        no_cache: false,
    };
    let e = c.start_run(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("param `rows` expects an int, got `many`"), "{}", e.message());
    assert!(!e.message().contains("--> params"), "no file called params: {}", e.message());
    // The file name it was submitted as, as `weir plan` renders the same error.
    assert!(e.message().contains("--> p.yaml:3:"), "points at the declaration: {}", e.message());
    assert!(e.message().contains("rows: {type: int, default: 10}"), "shows it: {}", e.message());
    let d = weir_engine::api::status::diagnostics(&e).expect("diagnostics in a google.rpc.Status");
    assert_eq!((d.diagnostics[0].file.as_str(), d.diagnostics[0].line), ("p.yaml", 3));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_error_shows_an_error_id_and_no_server_path() {
    let logs = logs();
    let dir = tempfile::tempdir().unwrap();
    let (s, mut c, ch) = serve(dir.path()).await;
    let bundle = b"not really a bundle, but bytes the engine keeps";
    submit(&mut c, ROWS, Some(bundle)).await;
    // The stored blob becomes a symlink to itself: opening it fails with ELOOP, an I/O error
    // that is nobody's fault but the server's.
    let hex = blake3::hash(bundle).to_hex().to_string();
    let path = dir.path().join("artifacts").join("blobs").join(&hex[..2]).join(&hex[2..]);
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&path, &path).unwrap();

    let (mut w, id, session) = worker(ch).await;
    let req = v1::DownloadBundleRequest { worker_id: id, digest: hex };
    let e = w.download_bundle(with_session(req, &session)).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    let shown = dir.path().display().to_string();
    assert!(!e.message().contains(&shown), "the server's folder stays on the server: {}", e.message());
    assert!(e.message().contains("error id "), "{}", e.message());
    let body = tonic_types::pb::Status::decode(e.details()).expect("a google.rpc.Status");
    assert_eq!(body.code, Code::Internal as i32);
    let info = tonic_types::pb::ErrorInfo::decode(&*body.details[0].value).unwrap();
    assert_eq!(info.domain, "weir");
    let id = &info.metadata["error_id"];
    assert!(e.message().contains(id.as_str()), "{e:?}");
    // The server's log says what happened, in which call, under the same id.
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    let line = logged.lines().find(|l| l.contains(id.as_str())).unwrap_or_else(|| panic!("no {id} in {logged}"));
    assert!(line.contains("/weir.v1.WeirWorker/DownloadBundle"), "names the RPC: {line}");
    assert!(line.contains(&shown), "keeps the detail: {line}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_values_holding_commas_and_equals_come_back_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let (s, mut c, _) = serve(dir.path()).await;
    let yaml = "name: grid
steps:
  train:
    matrix: {opts: ['a=1,b=2', plain], size: ['x]y']}
    run: echo {{ matrix.opts }}
";
    submit(&mut c, yaml, None).await;
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Name("grid".into())),
        params: HashMap::new(),
        no_cache: false,
    };
    let run = c.start_run(req).await.unwrap().into_inner().run.unwrap().run_id;
    let got = c.get_run(v1::GetRunRequest { run_id: run, ..Default::default() }).await.unwrap().into_inner();
    let mut cells: Vec<(String, Vec<(String, String)>)> = got
        .steps
        .iter()
        .map(|st| {
            let mut m: Vec<(String, String)> = st.matrix.clone().into_iter().collect();
            m.sort();
            (st.step.clone(), m)
        })
        .collect();
    cells.sort();
    let cell = |opts: &str| {
        ("train".to_string(), vec![("opts".to_string(), opts.to_string()), ("size".to_string(), "x]y".to_string())])
    };
    assert_eq!(cells, [cell("a=1,b=2"), cell("plain")]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_record_rotted_is_data_loss_without_the_stores_words() {
    let dir = tempfile::tempdir().unwrap();
    let (s, mut c, _) = serve(dir.path()).await;
    submit(&mut c, ROWS, None).await;
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Name("ml-retrain".into())),
        params: HashMap::new(),
        no_cache: false,
    };
    let run = c.start_run(req).await.unwrap().into_inner().run.unwrap().run_id;
    s.shutdown().await;
    // Rot one byte of the run's record, as a torn write or a bad disk would.
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        let runs = db.open_tree("runs").unwrap();
        let mut value = runs.get(run.as_bytes()).unwrap().expect("the run's record").to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x55;
        runs.insert(run.as_bytes(), value).unwrap();
        db.flush().unwrap();
    }
    let (s, mut c, _) = serve(dir.path()).await;
    let e = c.get_run(v1::GetRunRequest { run_id: run.clone(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains(&run) && e.message().contains("error id "), "{}", e.message());
    assert!(!e.message().contains("tree") && !e.message().contains("checksum"), "{}", e.message());
    s.shutdown().await;
}
