//! `weir ui`: the web UI on `weir run`'s data folder, with a local worker, so the runs a
//! laptop made can be browsed, compared, retried and started from a browser without a
//! server. Loopback only (there are no tokens here); the folder is held while it runs, as by
//! any engine, so a `weir run` on the same folder meanwhile is refused: `weir run --ui`
//! watches a run live instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;
use weir_engine::server;
use weir_worker::agent::{Agent, AgentConfig, DockerMode, connect_docker};
use weir_worker::runtime::ProcessRuntime;

use crate::local::local_config;

/// Where `weir ui` and `weir run --ui` listen unless told otherwise.
pub const DEFAULT_UI: &str = "127.0.0.1:7080";

pub const UI_EXIT_CODES: &str = "\
Exit status:
  0  stopped by Ctrl-C
  3  the engine could not start (data folder in use by another weir, address taken, an
     address off loopback, an --otlp-endpoint that is not an http:// URL)";

#[derive(Args, Debug)]
pub struct UiArgs {
    /// `weir run`'s data folder to show.
    #[arg(long, default_value = ".weir", value_name = "DIR", env = "WEIR_DATA_DIR")]
    data_dir: PathBuf,
    /// Address for the browser; loopback only (this engine has no tokens).
    #[arg(long, default_value = DEFAULT_UI, value_name = "ADDR")]
    listen: SocketAddr,
    /// Steps run at once by the local worker, for runs started from the UI (default: the
    /// number of cores); 0 starts no worker (browse only).
    #[arg(long, value_name = "N")]
    workers: Option<u32>,
    #[command(flatten)]
    otlp: crate::otlp::OtlpArgs,
}

pub fn run(args: UiArgs) -> ExitCode {
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "error: --listen {}: `weir ui` serves loopback only, with no tokens; for a team use `weir server --token-file F`",
            args.listen
        );
        return ExitCode::from(3);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    rt.block_on(serve(args))
}

async fn serve(args: UiArgs) -> ExitCode {
    let mut signals = crate::serve::Signals::install();
    let mut config = local_config(&args.data_dir, args.listen);
    config.otlp_endpoint = args.otlp.endpoint();
    let server = match server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start the engine on {}: {e}", args.data_dir.display());
            return ExitCode::from(3);
        }
    };
    let stop = CancellationToken::new();
    let agent = if args.workers == Some(0) {
        None
    } else {
        let mut agent_config = AgentConfig::new(server.url(), args.data_dir.join("worker"));
        if let Some(n) = args.workers {
            agent_config.capacity = n;
        }
        agent_config.name = "local".into();
        agent_config.runtime = Arc::new(ProcessRuntime::new());
        agent_config.docker = connect_docker(DockerMode::Auto).await.unwrap_or_default();
        let tracer = match args.otlp.worker_tracer() {
            Ok(tracer) => tracer,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(3);
            }
        };
        Some(tokio::spawn(crate::otlp::run_agent(Agent::new(agent_config), tracer, stop.clone())))
    };
    crate::serve::say(
        std::io::stderr(),
        format_args!(
            "weir UI on {}/runs for {} (a local worker runs what you start there); Ctrl-C (or SIGTERM) stops it",
            server.url(),
            args.data_dir.display()
        ),
    );
    signals.wait().await;
    stop.cancel();
    if let Some(agent) = agent {
        let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}
