//! The commands that talk to a weir server over its gRPC client API (`weir.v1.WeirClient`):
//! `submit`, `pipelines`, `start`, `runs`, `status`, `logs`, `cancel`, `retry`. This module owns
//! the connection (URL, bearer token), turns gRPC statuses into messages with a next step and
//! into exit codes, and prints what the server answers through `display`. It must never decide
//! anything the server decides: a pipeline is validated locally only to fail fast with exact
//! positions, and the server's verdict is the one that counts.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use weir_engine::bundle::{self, Bundle, BundleLimits};
use weir_engine::diag::{self, Renderer};
use weir_engine::spec::{self, Limits};
use weir_proto::v1::{
    self, GetRunRequest, GetRunResponse, ListPipelinesRequest, ListRunsRequest, RunState, StartRunRequest,
    StreamLogsRequest, SubmitPipelineHeader, SubmitPipelineRequest, WatchRunRequest, run_event::Kind,
    submit_pipeline_request::Part, weir_client_client::WeirClientClient,
};

use crate::display::{self, LinePrefixer, Progress};
use crate::offline;

pub const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  refused: the server knows no such pipeline or run, or refused the request (printed on stderr)
  2  usage error: unknown option, missing argument, bad --server URL or token file
  3  cannot reach the weir server (--server, WEIR_SERVER)
  4  the server refused the token (--token, WEIR_TOKEN, --token-file)";

pub const SUBMIT_EXIT_CODES: &str = "\
Exit status:
  0  stored (or already stored: submitting is idempotent)
  1  invalid: the pipeline file has problems (checked here before connecting, then by the server),
     or its folder cannot be bundled
  2  usage error: unknown option, missing argument, bad --server URL or token file
  3  cannot reach the weir server (--server, WEIR_SERVER)
  4  the server refused the token (--token, WEIR_TOKEN, --token-file)";

pub const WATCH_EXIT_CODES: &str = "\
Exit status:
  0  success; with --watch, the run succeeded
  1  refused by the server (no such pipeline or run, invalid params);
     with --watch, the run failed or was cancelled
  2  usage error: unknown option, missing argument, bad --server URL or token file
  3  cannot reach the weir server (--server, WEIR_SERVER)
  4  the server refused the token (--token, WEIR_TOKEN, --token-file)
  130  interrupted (Ctrl-C) while watching; the run goes on";

/// Where the server is and how to prove who we are. Global: accepted before or after any
/// subcommand. The token is never printed, not even by `Debug`.
#[derive(Args, Clone)]
pub struct ConnArgs {
    /// The weir server's URL.
    #[arg(long, global = true, value_name = "URL", env = "WEIR_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// Bearer token for the server's client API.
    #[arg(long, global = true, value_name = "TOKEN", env = "WEIR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the bearer token from a file (surrounding whitespace ignored); wins over --token.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl fmt::Debug for ConnArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnArgs")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate a pipeline and store it, with its folder, on the server.
    #[command(after_help = SUBMIT_EXIT_CODES)]
    Submit {
        /// The pipeline file, or its folder (which means the pipeline.yaml inside). The file's
        /// folder is uploaded as the pipeline's bundle, minus what .weirignore lists.
        #[arg(value_name = "DIR|FILE")]
        path: PathBuf,
    },
    /// List the pipelines stored on the server.
    #[command(after_help = EXIT_CODES)]
    Pipelines,
    /// Start a run of a stored pipeline and print its id.
    #[command(after_help = WATCH_EXIT_CODES)]
    Start {
        /// The pipeline's name (its latest version), or a version hash as `weir submit` printed it.
        #[arg(value_name = "NAME")]
        pipeline: String,
        #[command(flatten)]
        params: offline::ParamArgs,
        /// Follow the run until it ends, like `weir status RUN --watch`.
        #[arg(long)]
        watch: bool,
    },
    /// List runs, newest first.
    #[command(after_help = EXIT_CODES)]
    Runs {
        /// Only runs of this pipeline.
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
        /// Only runs in this state; repeatable.
        #[arg(long = "state", value_name = "STATE", value_enum)]
        states: Vec<StateArg>,
        /// The most runs to list; 0 lists them all.
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
    },
    /// Show a run and its steps.
    #[command(after_help = WATCH_EXIT_CODES)]
    Status {
        /// The run's id, as `weir start` or `weir runs` printed it.
        #[arg(value_name = "RUN")]
        run: String,
        /// Follow the run, a line per step change, until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Print the logs of a run's steps.
    #[command(after_help = EXIT_CODES)]
    Logs {
        /// The run's id.
        #[arg(value_name = "RUN")]
        run: String,
        /// A step instance (`train[lr=0.1]`) or a step name (all its instances); all steps when
        /// left out. Lines are prefixed with `[instance] ` when more than one step is shown.
        #[arg(value_name = "STEP")]
        step: Option<String>,
        /// Keep printing new output until the steps finish.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only this attempt (from 1); all attempts when left out.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        attempt: Option<u32>,
    },
    /// Cancel a run: ready steps are withdrawn, running attempts stopped.
    #[command(after_help = EXIT_CODES)]
    Cancel {
        /// The run's id.
        #[arg(value_name = "RUN")]
        run: String,
        /// Why, recorded with the cancellation.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Run a failed or cancelled run's unfinished steps again, keeping the succeeded ones.
    #[command(after_help = EXIT_CODES)]
    Retry {
        /// The run's id.
        #[arg(value_name = "RUN")]
        run: String,
    },
}

/// A run state, as `--state` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl StateArg {
    fn wire(self) -> RunState {
        match self {
            StateArg::Queued => RunState::Queued,
            StateArg::Running => RunState::Running,
            StateArg::Succeeded => RunState::Succeeded,
            StateArg::Failed => RunState::Failed,
            StateArg::Cancelled => RunState::Cancelled,
        }
    }
}

/// Why a command did not succeed; the message was already printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server (or the local check before it) refused: exit 1.
    Refused,
    /// A followed run failed or was cancelled: exit 1.
    RunFailed,
    /// Bad arguments that clap could not catch (URL, token file): exit 2.
    Usage,
    /// No server at the URL: exit 3.
    Unreachable,
    /// The server refused the token: exit 4.
    Unauthenticated,
    /// Ctrl-C while watching: exit 130.
    Interrupted,
}

impl Failure {
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Refused | Failure::RunFailed => 1,
            Failure::Usage => 2,
            Failure::Unreachable => 3,
            Failure::Unauthenticated => 4,
            Failure::Interrupted => 130,
        })
    }
}

/// Runs one client command on a runtime of its own.
pub fn dispatch(command: Command, conn: &ConnArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(command, conn)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit_code(),
    }
}

async fn run(command: Command, conn: &ConnArgs) -> Result<(), Failure> {
    match command {
        Command::Submit { path } => submit(conn, &path).await,
        Command::Pipelines => pipelines(&mut connect(conn).await?, conn).await,
        Command::Start { pipeline, params, watch } => {
            let mut client = connect(conn).await?;
            let run_id = start(&mut client, conn, pipeline, params.params).await?;
            if watch { follow(&mut client, conn, &run_id).await } else { Ok(()) }
        }
        Command::Runs { pipeline, states, limit } => {
            runs(&mut connect(conn).await?, conn, pipeline, &states, limit).await
        }
        Command::Status { run, watch } => {
            let mut client = connect(conn).await?;
            if watch { follow(&mut client, conn, &run).await } else { status(&mut client, conn, &run).await }
        }
        Command::Logs { run, step, follow, attempt } => {
            logs(&mut connect(conn).await?, conn, &run, step, follow, attempt.unwrap_or(0)).await
        }
        Command::Cancel { run, reason } => cancel(&mut connect(conn).await?, conn, &run, reason).await,
        Command::Retry { run } => retry(&mut connect(conn).await?, conn, &run).await,
    }
}

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Client = WeirClientClient<InterceptedService<Channel, Auth>>;

impl ConnArgs {
    /// The token to send: `--token-file`'s contents, else `--token` or `WEIR_TOKEN`.
    fn auth(&self) -> Result<Auth, Failure> {
        let token = match &self.token_file {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    eprintln!("error: cannot read the token file `{}`: {e}", file.display());
                    Failure::Usage
                })?;
                let token = text.trim().to_string();
                if token.is_empty() {
                    eprintln!("error: the token file `{}` is empty", file.display());
                    return Err(Failure::Usage);
                }
                Some(token)
            }
            None => self.token.clone().filter(|t| !t.is_empty()),
        };
        let Some(token) = token else { return Ok(Auth(None)) };
        match MetadataValue::try_from(format!("Bearer {token}")) {
            Ok(mut value) => {
                value.set_sensitive(true);
                Ok(Auth(Some(value)))
            }
            Err(_) => {
                eprintln!("error: the token holds characters that cannot be sent in a header (visible ASCII only)");
                Err(Failure::Usage)
            }
        }
    }
}

/// Connects to the server named by `conn`, failing with exit 3 when nothing answers.
pub async fn connect(conn: &ConnArgs) -> Result<Client, Failure> {
    let auth = conn.auth()?;
    if let Some(scheme) = conn.server.split_once("://").map(|(s, _)| s) {
        if scheme == "https" {
            eprintln!(
                "error: --server `{}`: this weir is built without TLS; use http:// or a TLS-terminating proxy",
                conn.server
            );
            return Err(Failure::Usage);
        }
        if scheme != "http" {
            eprintln!("error: --server `{}` is not an http:// URL", conn.server);
            return Err(Failure::Usage);
        }
    } else {
        eprintln!("error: --server `{}` is not a URL; expected like http://127.0.0.1:7070", conn.server);
        return Err(Failure::Usage);
    }
    let endpoint = Endpoint::from_shared(conn.server.clone()).map_err(|e| {
        eprintln!("error: --server `{}` is not a URL ({e}); expected like http://127.0.0.1:7070", conn.server);
        Failure::Usage
    })?;
    let endpoint = endpoint.connect_timeout(Duration::from_secs(10)).tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| unreachable(conn, &e))?;
    Ok(WeirClientClient::with_interceptor(channel, auth))
}

/// The error and its causes, one after another, without repeats.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn unreachable(conn: &ConnArgs, e: &dyn std::error::Error) -> Failure {
    eprintln!(
        "error: cannot reach the weir server at {}: {}; start one with `weir server` or set --server / WEIR_SERVER",
        conn.server,
        chain(e)
    );
    Failure::Unreachable
}

/// What to suggest after a refusal, by status code.
#[derive(Default, Clone, Copy)]
struct Hints<'a> {
    not_found: &'a str,
    invalid: &'a str,
    precondition: &'a str,
}

const RUN_HINTS: Hints<'static> = Hints { not_found: "run `weir runs` to list run ids", invalid: "", precondition: "" };

/// Prints why the server refused a call and what to do next; returns the exit it means.
fn refused(status: &Status, conn: &ConnArgs, hints: Hints<'_>) -> Failure {
    let message = if status.message().is_empty() { status.code().description() } else { status.message() };
    match status.code() {
        Code::Unauthenticated => {
            eprintln!("error: the server refused the token: pass --token, WEIR_TOKEN or --token-file ({message})");
            Failure::Unauthenticated
        }
        Code::Unavailable => unreachable(conn, status),
        Code::Unimplemented => {
            eprintln!(
                "error: the server at {} does not serve this call ({message}); is it a weir server of this version?",
                conn.server
            );
            Failure::Refused
        }
        code => {
            eprintln!("error: {message}");
            let hint = match code {
                Code::NotFound => hints.not_found,
                Code::InvalidArgument => hints.invalid,
                Code::FailedPrecondition => hints.precondition,
                _ => "",
            };
            if !hint.is_empty() {
                eprintln!("help: {hint}");
            }
            Failure::Refused
        }
    }
}

fn print_out(text: &str) {
    let mut out = io::stdout().lock();
    // A closed pipe (`weir runs | head`) is not an error worth a message.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn color_on(tty: bool) -> bool {
    tty && std::env::var_os("NO_COLOR").is_none()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

// ---- submit ----

/// Sends the bundle archive as `bundle_chunk` messages of at most 1 MiB.
struct ChunkWriter {
    tx: mpsc::Sender<SubmitPipelineRequest>,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(SubmitPipelineRequest { part: Some(Part::BundleChunk(chunk)) })
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the server stopped reading the upload"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (CHUNK - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() { Ok(()) } else { self.send() }
    }
}

async fn submit(conn: &ConnArgs, path: &Path) -> Result<(), Failure> {
    // Validate before connecting: problems get exact positions and need no server.
    let file = offline::pipeline_file(path);
    let limits = Limits::default();
    let source = spec::read_source(&file, &limits).map_err(|d| {
        offline::report(&file, "", &[d]);
        Failure::Refused
    })?;
    let pipeline = spec::load(&source, &limits).map_err(|diags| {
        offline::report(&file, &source, &diags);
        Failure::Refused
    })?;
    let folder = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let bundle = Bundle::build(&folder, BundleLimits::default()).map_err(|e| {
        eprintln!("error: cannot bundle the pipeline folder `{}`: {e}", folder.display());
        Failure::Refused
    })?;
    tracing::debug!(pipeline = pipeline.name(), files = bundle.files().len(), bytes = bundle.archive_len(), "bundled");

    let mut client = connect(conn).await?;
    let file_name = file.file_name().map_or_else(|| "pipeline.yaml".into(), |n| n.to_string_lossy().into_owned());
    let header = SubmitPipelineHeader {
        yaml: source.clone(),
        file_name,
        bundle_size: bundle.archive_len(),
        bundle_digest: bundle.digest().to_string(),
    };
    let (tx, rx) = mpsc::channel(4);
    // The receiver is alive and the channel empty: this cannot fail.
    let _ = tx.send(SubmitPipelineRequest { part: Some(Part::Header(header)) }).await;
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter { tx, buf: Vec::with_capacity(CHUNK) };
        bundle.write_to(&mut out).map(|_| ())
    });
    let answer = client.submit_pipeline(ReceiverStream::new(rx)).await;
    let sent = writer.await;
    // A local failure explains a refused upload better than the server can.
    match sent {
        Ok(Err(bundle::Error::Stream(e))) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Ok(Err(e)) => {
            eprintln!("error: cannot send the bundle of `{}`: {e}", folder.display());
            return Err(Failure::Refused);
        }
        Err(e) => {
            eprintln!("error: sending the bundle failed: {e}");
            return Err(Failure::Refused);
        }
        Ok(Ok(())) => {}
    }
    let response = match answer {
        Ok(r) => r.into_inner(),
        Err(status) if status.code() == Code::InvalidArgument => {
            eprintln!("error: the server refused `{}`: {}", file.display(), status.message());
            report_server_diagnostics(&status, &file, &folder, &source);
            return Err(Failure::Refused);
        }
        Err(status) => return Err(refused(&status, conn, Hints::default())),
    };
    if !response.warnings.is_empty() {
        let warnings: Vec<_> = response.warnings.iter().map(diagnostic).collect();
        report_diagnostics(&file, &folder, &source, &response.warnings, &warnings);
    }
    print_out(&format!(
        "submitted {} version {} ({})\n",
        response.name,
        response.version,
        if response.created { "new" } else { "unchanged" }
    ));
    Ok(())
}

/// Renders the diagnostics an `InvalidArgument` status carries, if its details hold them.
fn report_server_diagnostics(status: &Status, file: &Path, folder: &Path, source: &str) {
    let Ok(decoded) = v1::Diagnostics::decode(status.details()) else { return };
    let diags: Vec<_> = decoded.diagnostics.iter().map(diagnostic).collect();
    report_diagnostics(file, folder, source, &decoded.diagnostics, &diags);
}

/// Renders diagnostics against the files they point into: the pipeline file we sent, or
/// another file of its folder read from disk (shown without a snippet if unreadable).
fn report_diagnostics(file: &Path, folder: &Path, source: &str, wire: &[v1::Diagnostic], diags: &[diag::Diagnostic]) {
    let sent_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut groups: Vec<(String, Vec<diag::Diagnostic>)> = Vec::new();
    for (w, d) in wire.iter().zip(diags) {
        let key = if w.file.is_empty() || w.file == sent_name { String::new() } else { w.file.clone() };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(d.clone()),
            None => groups.push((key, vec![d.clone()])),
        }
    }
    let color = color_on(io::stderr().is_terminal());
    for (key, list) in groups {
        let (path, text) = if key.is_empty() {
            (file.display().to_string(), source.to_string())
        } else {
            let other = folder.join(&key);
            (other.display().to_string(), std::fs::read_to_string(&other).unwrap_or_default())
        };
        let rendered = Renderer { path: &path, source: &text, color }.render_all(&list);
        let _ = io::stderr().write_all(rendered.as_bytes());
    }
}

/// A wire diagnostic as the engine's renderer takes it.
fn diagnostic(d: &v1::Diagnostic) -> diag::Diagnostic {
    let span =
        |line: u32, col: u32, end_line: u32, end_col: u32| diag::Span::new(line, col, end_line.max(line), end_col);
    diag::Diagnostic {
        severity: if d.severity == v1::Severity::Warning as i32 {
            diag::Severity::Warning
        } else {
            diag::Severity::Error
        },
        message: d.message.clone(),
        span: (d.line > 0).then(|| span(d.line, d.column, d.end_line, d.end_column)),
        label: d.label.clone(),
        related: d
            .related
            .iter()
            .filter(|r| r.line > 0)
            .map(|r| diag::Related { span: span(r.line, r.column, r.end_line, r.end_column), label: r.label.clone() })
            .collect(),
        notes: d.notes.clone(),
        help: (!d.help.is_empty()).then(|| d.help.clone()),
    }
}

// ---- pipelines, runs ----

async fn pipelines(client: &mut Client, conn: &ConnArgs) -> Result<(), Failure> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_pipelines(ListPipelinesRequest { page_size: 0, page_token: token.clone() })
            .await
            .map_err(|s| refused(&s, conn, Hints::default()))?
            .into_inner();
        all.extend(page.pipelines);
        if page.next_page_token.is_empty() || page.next_page_token == token {
            break;
        }
        token = page.next_page_token;
    }
    if all.is_empty() {
        eprintln!("no pipelines stored yet: `weir submit DIR` stores one");
        return Ok(());
    }
    print_out(&display::pipelines_table(&all));
    Ok(())
}

async fn runs(
    client: &mut Client,
    conn: &ConnArgs,
    pipeline: Option<String>,
    states: &[StateArg],
    limit: usize,
) -> Result<(), Failure> {
    let states: Vec<i32> = states.iter().map(|s| s.wire() as i32).collect();
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let want = if limit == 0 { 0 } else { (limit - all.len()).min(100) as u32 };
        let request = ListRunsRequest {
            pipeline: pipeline.clone().unwrap_or_default(),
            states: states.clone(),
            page_size: want,
            page_token: token.clone(),
        };
        let hints = Hints { not_found: "run `weir pipelines` to list pipeline names", ..Hints::default() };
        let page = client.list_runs(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
        all.extend(page.runs);
        if limit > 0 && all.len() >= limit {
            all.truncate(limit);
            break;
        }
        if page.next_page_token.is_empty() || page.next_page_token == token {
            break;
        }
        token = page.next_page_token;
    }
    if all.is_empty() {
        eprintln!("no runs found: `weir start NAME` starts one");
        return Ok(());
    }
    print_out(&display::runs_table(&all, now_ms()));
    Ok(())
}

// ---- start, status, watch ----

/// Whether `s` looks like a version hash rather than a pipeline name.
fn is_version(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

async fn start(
    client: &mut Client,
    conn: &ConnArgs,
    pipeline: String,
    params: Vec<(String, String)>,
) -> Result<String, Failure> {
    let which = if is_version(&pipeline) {
        v1::start_run_request::Pipeline::Version(pipeline)
    } else {
        v1::start_run_request::Pipeline::Name(pipeline)
    };
    let request = StartRunRequest { pipeline: Some(which), params: params.into_iter().collect() };
    let hints = Hints {
        not_found: "run `weir pipelines` to list stored pipelines, or `weir submit DIR` to store one",
        invalid: "`weir plan FILE -p NAME=VALUE` checks params against a pipeline file locally",
        precondition: "",
    };
    let response = client.start_run(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    let Some(run) = response.run else {
        eprintln!("error: the server started a run but did not say which");
        return Err(Failure::Refused);
    };
    print_out(&format!("{}\n", run.run_id));
    if io::stdout().is_terminal() {
        eprintln!("started run {} of {}; `weir status {} --watch` follows it", run.run_id, run.pipeline, run.run_id);
    }
    Ok(run.run_id)
}

/// The run with every page of its steps.
async fn get_run(client: &mut Client, conn: &ConnArgs, run_id: &str) -> Result<GetRunResponse, Failure> {
    let mut token = String::new();
    let mut all: Option<GetRunResponse> = None;
    loop {
        let request = GetRunRequest { run_id: run_id.to_string(), step_page_size: 0, step_page_token: token.clone() };
        let page = client.get_run(request).await.map_err(|s| refused(&s, conn, RUN_HINTS))?.into_inner();
        let next = page.next_step_page_token.clone();
        match &mut all {
            None => all = Some(page),
            Some(a) => {
                a.steps.extend(page.steps);
                a.run = page.run.or(a.run.take());
            }
        }
        if next.is_empty() || next == token {
            break;
        }
        token = next;
    }
    let mut all = all.unwrap_or_default();
    all.next_step_page_token.clear();
    Ok(all)
}

async fn status(client: &mut Client, conn: &ConnArgs, run_id: &str) -> Result<(), Failure> {
    let r = get_run(client, conn, run_id).await?;
    let now = now_ms();
    let mut text = r.run.as_ref().map(|run| display::run_header(run, now)).unwrap_or_default();
    text.push('\n');
    text.push_str(&display::steps_table(&r.steps, now));
    print_out(&text);
    Ok(())
}

/// How many times a broken watch is resumed before giving up.
const WATCH_RESUMES: u32 = 3;

/// Follows a run until it ends: a line per step change (or, on a terminal, a live block of
/// running steps), then the summary. Ok only when the run succeeded.
async fn follow(client: &mut Client, conn: &ConnArgs, run_id: &str) -> Result<(), Failure> {
    let first = get_run(client, conn, run_id).await?;
    let mut progress = Progress::from_run(&first);
    let tty = io::stdout().is_terminal();
    let color = color_on(tty);
    let width = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100usize);
    let request = |after_seq| WatchRunRequest { run_id: run_id.to_string(), after_seq };
    let mut stream = client.watch_run(request(0)).await.map_err(|s| refused(&s, conn, RUN_HINTS))?.into_inner();
    let mut last_seq = 0;
    let mut resumes = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(event)) => {
                    resumes = 0;
                    last_seq = event.seq;
                    // The server closes the stream after the run ends; no need to wait for it.
                    let ends = matches!(&event.kind, Some(Kind::Run(r))
                        if display::run_is_terminal(RunState::try_from(r.state).unwrap_or_default()));
                    let line = progress.apply(&event, color);
                    if tty {
                        print_out(&progress.frame(line.as_slice(), now_ms(), width, color));
                    } else if let Some(line) = line {
                        print_out(&format!("{line}\n"));
                    }
                    if ends {
                        break;
                    }
                }
                Ok(None) => break,
                Err(s) if matches!(s.code(), Code::Unavailable | Code::Unknown) && resumes < WATCH_RESUMES => {
                    resumes += 1;
                    tracing::debug!(error = %s, after_seq = last_seq, "watch broke; resuming");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match client.watch_run(request(last_seq)).await {
                        Ok(s) => stream = s.into_inner(),
                        Err(s) if resumes < WATCH_RESUMES && s.code() == Code::Unavailable => {}
                        Err(s) => {
                            print_out(&progress.erase());
                            return Err(refused(&s, conn, RUN_HINTS));
                        }
                    }
                }
                Err(s) => {
                    print_out(&progress.erase());
                    return Err(refused(&s, conn, RUN_HINTS));
                }
            },
            _ = tick.tick(), if tty => print_out(&progress.frame(&[], now_ms(), width, color)),
            _ = &mut ctrl_c => {
                print_out(&progress.erase());
                eprintln!("stopped watching; run {run_id} goes on (`weir cancel {run_id}` stops it)");
                return Err(Failure::Interrupted);
            }
        }
    }
    if tty {
        print_out(&progress.erase());
    }
    let last = get_run(client, conn, run_id).await?;
    print_out(&format!("\n{}", display::summary(&last)));
    let state = last.run.as_ref().and_then(|r| RunState::try_from(r.state).ok()).unwrap_or_default();
    match state {
        RunState::Succeeded => Ok(()),
        RunState::Failed | RunState::Cancelled => {
            eprintln!(
                "help: `weir logs {run_id}` prints its logs; `weir retry {run_id}` runs what did not succeed again"
            );
            Err(Failure::RunFailed)
        }
        other => {
            eprintln!(
                "error: the server ended the watch while run {run_id} is still {}; `weir status {run_id} --watch` resumes",
                display::run_state(other as i32)
            );
            Err(Failure::Refused)
        }
    }
}

// ---- logs, cancel, retry ----

async fn logs(
    client: &mut Client,
    conn: &ConnArgs,
    run_id: &str,
    step: Option<String>,
    follow: bool,
    attempt: u32,
) -> Result<(), Failure> {
    // The run's steps decide whether lines need a `[step] ` prefix, and name near misses.
    let first = client
        .get_run(GetRunRequest { run_id: run_id.to_string(), ..GetRunRequest::default() })
        .await
        .map_err(|s| refused(&s, conn, RUN_HINTS))?
        .into_inner();
    let complete = first.next_step_page_token.is_empty();
    let matching = first.steps.iter().filter(|s| step.as_ref().is_none_or(|w| s.name == *w || s.step == *w)).count();
    if let Some(wanted) = &step
        && matching == 0
        && complete
    {
        eprintln!("error: run {run_id} has no step `{wanted}`");
        let names = first.steps.iter().flat_map(|s| [s.name.as_str(), s.step.as_str()]);
        match diag::did_you_mean(wanted, names) {
            Some(help) => eprintln!("help: {help}"),
            None => eprintln!("help: `weir status {run_id}` lists its steps"),
        }
        return Err(Failure::Refused);
    }
    let prefix = matching != 1 || !complete;
    let request = StreamLogsRequest { run_id: run_id.to_string(), step: step.unwrap_or_default(), follow, attempt };
    let hints =
        Hints { not_found: "`weir status RUN` lists a run's steps; `weir runs` lists run ids", ..Hints::default() };
    let mut stream = client.stream_logs(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    let mut lines = LinePrefixer::default();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut out = io::stdout().lock();
    let result = loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(chunk)) => {
                    let written = if prefix {
                        out.write_all(&lines.push(&chunk.instance_name, &chunk.data))
                    } else {
                        out.write_all(&chunk.data)
                    };
                    // A closed pipe (`weir logs RUN | head`) ends the command quietly.
                    if written.and_then(|()| out.flush()).is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(s) => break Err(refused(&s, conn, hints)),
            },
            _ = &mut ctrl_c => break Ok(()),
        }
    };
    let _ = out.write_all(&lines.finish());
    let _ = out.flush();
    result
}

async fn cancel(client: &mut Client, conn: &ConnArgs, run_id: &str, reason: Option<String>) -> Result<(), Failure> {
    let request = v1::CancelRunRequest { run_id: run_id.to_string(), reason: reason.unwrap_or_default() };
    let hints =
        Hints { precondition: "the run has already finished; `weir status RUN` shows how it ended", ..RUN_HINTS };
    let response = client.cancel_run(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    let still = response.run.as_ref().is_some_and(|r| r.state == RunState::Running as i32);
    let tail = if still { "; running attempts are being stopped" } else { "" };
    print_out(&format!("cancelled run {run_id}{tail}\n"));
    Ok(())
}

async fn retry(client: &mut Client, conn: &ConnArgs, run_id: &str) -> Result<(), Failure> {
    let request = v1::RetryRunRequest { run_id: run_id.to_string() };
    let hints = Hints {
        precondition: "only a failed or cancelled run can be retried; `weir status RUN` shows its state",
        ..RUN_HINTS
    };
    let response = client.retry_run(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    let id = response.run.map_or_else(|| run_id.to_string(), |r| r.run_id);
    print_out(&format!("retrying run {id}; `weir status {id} --watch` follows it\n"));
    Ok(())
}
