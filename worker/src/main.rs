//! `weir-worker`: joins an engine and runs the steps it leases, until Ctrl-C or SIGTERM. A thin
//! shell around [`weir_worker::Agent`]: it parses arguments, sets up logging and signals, and
//! turns the agent's result into an exit code. All behaviour lives in the library.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use weir_proto::auth::{Role, TokenFile};
use weir_worker::agent::{DockerMode, connect_docker, cores, hostname};
use weir_worker::gpu::GpuChoice;
use weir_worker::otel::Tracer;
use weir_worker::runtime::ProcessRuntime;
use weir_worker::{Agent, AgentConfig};

const AFTER_HELP: &str = "\
The token comes from --token, else --token-file (its `worker=TOKEN` line, or its one line when
that holds a bare token), else the WEIR_WORKER_TOKEN environment variable; prefer the last two,
since other users can read a command line. A token file that group or others can read gets a
warning (`chmod 600` it). The token is sent on every call and never logged; steps never see it.

GPUs: by default the worker runs `nvidia-smi --query-gpu=index,name,memory.total
--format=csv,noheader,nounits` when it is on PATH and offers every GPU it lists (none without it).
`--gpus none` offers none; `--gpus 0,1` offers exactly those device indices. Each step that asks
for `resources: {gpus: N}` gets N of them to itself until it ends; a process step sees them in
CUDA_VISIBLE_DEVICES (`0,1`), and a step that asked for none gets CUDA_VISIBLE_DEVICES set empty,
so it sees no GPU.

Logging goes to stderr; set RUST_LOG to choose what (default `info`, for example
RUST_LOG=weir_worker=debug). Colours only on a terminal; `--log-format json` writes one JSON
object a line. `--metrics ADDR` serves Prometheus metrics at http://ADDR/metrics;
`--otlp-endpoint URL` exports OpenTelemetry traces of its attempts (docs/observability.md).

Docker steps run in containers named after their attempt. A worker killed outright (kill -9, a
crash) leaves them running; started again with the same --work-dir, it resumes those whose
attempt is still live and removes the others, so a restart does not run a live step twice.

Ctrl-C or SIGTERM stops the worker: it stops leasing, stops its running steps (SIGTERM, then
SIGKILL after --grace), reports them to the engine as lost so they run again elsewhere, and
exits. A second Ctrl-C exits at once with code 1, killing the steps.

Exit codes:
  0  stopped by Ctrl-C or SIGTERM
  1  fatal error: the engine refused the token or the worker, the work folder is unusable, or
     --docker on without an answering Docker engine
  2  usage error: bad arguments, unreadable token file, an --otlp-endpoint that is not an
     http:// URL";

/// Runs weir pipeline steps leased by a weir engine.
#[derive(Parser, Debug)]
#[command(name = "weir-worker", version, after_help = AFTER_HELP)]
struct Args {
    /// The engine's address, for example http://127.0.0.1:7070, or https://weir.internal:7070
    /// for an engine serving TLS (--ca for its CA, --tls-cert/--tls-key under mTLS).
    #[arg(long, value_name = "URL")]
    engine: String,
    /// Trust this PEM CA for an https:// engine (else the system's roots).
    #[arg(long, value_name = "FILE", env = "WEIR_CA")]
    ca: Option<PathBuf>,
    /// This worker's client certificate (PEM), for an engine started with --client-ca (mTLS).
    #[arg(long, value_name = "FILE", env = "WEIR_WORKER_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert. Keep it private (`chmod 600`).
    #[arg(long, value_name = "FILE", env = "WEIR_WORKER_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The worker token the engine expects [default: $WEIR_WORKER_TOKEN, unless --token-file].
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the worker token from this file.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Labels that steps' `runs_on` select on, as k=v pairs separated by commas; repeatable.
    #[arg(long = "labels", alias = "label", value_name = "K=V[,K=V]", value_delimiter = ',', value_parser = label)]
    labels: Vec<(String, String)>,
    /// How many steps to run at once [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    capacity: Option<u32>,
    /// How many attempts to hold beyond --capacity, each waiting for a running step to end: the
    /// next step starts the moment one exits, while that one's outcome is still reported, which
    /// keeps the cores busy through short steps (the fan-out of `true` steps runs ~15% faster).
    /// One held longer than 250 ms is given back to the engine for another worker, and this
    /// worker holds nothing more until one of its steps ends, so long steps are not hoarded.
    /// 0 turns holding off [default: --capacity].
    #[arg(long, value_name = "N")]
    ahead: Option<u32>,
    /// A name for people in the engine's listings [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// Where bundles, input blobs and attempt folders live [default: a folder per worker name
    /// under the system temporary folder].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Seconds a stopped step has between SIGTERM and SIGKILL.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    grace: u64,
    /// Whether to run `runtime: docker` steps on the local Docker engine (DOCKER_HOST or
    /// /var/run/docker.sock): `auto` when it answers at start, `on` or fail, `off`.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = DockerMode::Auto)]
    docker: DockerMode,
    /// GPUs to offer: `auto` (what nvidia-smi lists), `none`, or device indices like 0,1.
    #[arg(long, value_name = "auto|none|I,J", default_value = "auto")]
    gpus: GpuChoice,
    /// Run docker steps only: the engine sends this worker no process step. For a worker given
    /// the Docker socket (root on its host), so that no step runs beside it with that power.
    /// Implies --docker on.
    #[arg(long)]
    no_process_steps: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101). Unauthenticated:
    /// bind it where only your Prometheus reaches.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Export OpenTelemetry traces of the attempts it runs (fetch bundle, materialize inputs,
    /// run, collect and upload outputs) over OTLP/gRPC to URL, e.g. http://127.0.0.1:4317, as
    /// service `weir-worker`. They join the engine's run traces when the engine has an endpoint
    /// too. Off when unset.
    #[arg(long, value_name = "URL", env = "WEIR_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Log lines as plain text (colours only on a terminal) or as JSON objects, one a line,
    /// for log shippers.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The most bytes of fetched inputs and collected outputs kept in the work folder's blob
    /// cache between attempts (e.g. 10G, 500M, 2Gi, or bytes); past it the least recently used
    /// go, never one an attempt still needs. Bundles are not counted.
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    cache_max: u64,
}

/// A size: bytes, or a number with K, M, G or T (powers of 1024; `Ki`, `Mi`... and a trailing
/// `B` are accepted too).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown unit in {s:?}: use K, M, G or T (e.g. 10G)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("{s:?} is not a size like 10G, 500M or 1048576"))?;
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("`{s}` is not a label: expected key=value")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logs(args.log_format);

    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(file)) => match TokenFile::read(file).and_then(|f| f.token(Role::Worker).map_err(|e| vec![e])) {
            Ok(token) => Some(token.into_secret()),
            Err(problems) => {
                for p in problems {
                    eprintln!("error: {p}");
                }
                return ExitCode::from(2);
            }
        },
        (None, None) => std::env::var("WEIR_WORKER_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    let name = args.name.clone().unwrap_or_else(hostname);
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        // SAFETY: getuid cannot fail and has no preconditions.
        let uid = unsafe { libc::getuid() };
        let safe: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
        std::env::temp_dir().join(format!("weir-worker-{uid}-{safe}"))
    });
    let config = AgentConfig {
        engine: args.engine.clone(),
        token,
        tls: weir_proto::tls::ClientTls { ca: args.ca.clone(), cert: args.tls_cert.clone(), key: args.tls_key.clone() },
        name,
        labels: args.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        capacity: args.capacity.unwrap_or_else(cores),
        ahead: args.ahead.unwrap_or_else(|| args.capacity.unwrap_or_else(cores)),
        hold: Some(weir_worker::DEFAULT_HOLD),
        work_dir,
        runtime: Arc::new(ProcessRuntime::new()),
        docker: None,
        process_steps: !args.no_process_steps,
        grace: Duration::from_secs(args.grace),
        gpus: args.gpus.clone(),
        cache_max: args.cache_max,
        local: None,
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        // Listen before the agent starts, so that an early SIGTERM is never the default (fatal) one.
        let signals = signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)));
        let (term, int) = match signals {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("error: cannot listen for SIGTERM and SIGINT: {e}");
                return ExitCode::from(1);
            }
        };
        tokio::spawn(on_signals(term, int, shutdown.clone()));
        let mut config = config;
        if args.no_process_steps && args.docker == DockerMode::Off {
            eprintln!("error: --no-process-steps with --docker off leaves this worker nothing to run");
            return ExitCode::from(2);
        }
        let docker = if args.no_process_steps { DockerMode::On } else { args.docker };
        config.docker = match connect_docker(docker).await {
            Ok(docker) => docker,
            Err(e) => {
                eprintln!(
                    "error: --docker on, but {e}\nstart the Docker engine, point DOCKER_HOST at it, or use --docker off"
                );
                return ExitCode::from(1);
            }
        };
        if let Some(addr) = args.metrics {
            match weir_worker::metrics::serve(addr).await {
                Ok(bound) => tracing::info!(%bound, "serving metrics at /metrics"),
                Err(e) => {
                    eprintln!("error: cannot serve metrics on {addr}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        let mut agent = Agent::new(config);
        let tracer = match args.otlp_endpoint.as_deref().filter(|e| !e.is_empty()).map(Tracer::start).transpose() {
            Ok(tracer) => tracer,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        if let Some(tracer) = &tracer {
            agent = agent.traced(tracer.clone());
        }
        let ran = agent.run(shutdown).await;
        if let Some(tracer) = tracer {
            tracer.drain(Duration::from_secs(5)).await;
        }
        match ran {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                if e.to_string().contains("client certificate") {
                    eprintln!(
                        "hint: the engine requires mTLS: give this worker a certificate signed by the engine's \
                         --client-ca (--tls-cert and --tls-key)"
                    );
                } else if e.is_auth() {
                    eprintln!(
                        "hint: give the worker the token the engine was started with \
                         (--token-file, or WEIR_WORKER_TOKEN)"
                    );
                }
                ExitCode::from(1)
            }
        }
    })
}

/// Logs to stderr: text with colours only on a terminal (and without NO_COLOR), or JSON lines.
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A closed stderr (a supervisor gone, `2>&-`) must not end the process: tracing would
    // report its failed write with `eprintln!`, which panics on that same closed stderr.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    match format {
        LogFormat::Json => builder.json().with_ansi(false).init(),
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).init()
        }
    }
}

/// Fires `shutdown` on the first Ctrl-C or SIGTERM; exits at once on the second.
async fn on_signals(mut term: Signal, mut int: Signal, shutdown: CancellationToken) {
    for n in 0.. {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if n == 0 {
            tracing::info!("stopping: stopping running steps and reporting them (again to exit at once)");
            shutdown.cancel();
        } else {
            tracing::warn!("second stop signal, exiting at once");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_units_and_refuse_what_is_not_one() {
        for (text, want) in
            [("1048576", 1 << 20), ("10G", 10 << 30), ("500M", 500 << 20), ("2Gi", 2 << 30), ("1KB", 1024)]
        {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for bad in ["", "G", "10X", "-1", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
