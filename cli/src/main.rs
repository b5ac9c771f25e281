//! The `weir` binary. Each module owns its subcommands; this file only parses the command line,
//! sets up logging and dispatches.

// mimalloc instead of glibc malloc: loading a pipeline is allocation-bound (many small
// strings and vectors), and mimalloc cuts load + plan of 100k steps from ~1.1 s to ~0.65 s
// on the benchmark machine (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod offline;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "weir: workflow orchestration for machine-learning pipelines",
    long_about = "weir: workflow orchestration for machine-learning pipelines.\n\n\
                  A pipeline is a YAML file declaring a DAG of steps. `validate`, `plan`, `graph` and \
                  `schema` read pipeline files without running anything. Logs go to stderr, filtered by \
                  RUST_LOG.",
    after_help = offline::EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Offline(offline::Command),
}

fn main() -> ExitCode {
    init_tracing();
    match Cli::parse().command {
        Command::Offline(c) => offline::dispatch(c),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
