//! The `weir` binary. Each module owns its subcommands; this file only parses the command line,
//! sets up logging and dispatches.

mod alloc;
mod client;
mod display;
mod local;
mod offline;
mod otlp;
mod restore;
mod serve;
mod source;
mod store;
mod ui;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit status:
  0  success: the files are valid, the request was done; with --watch, the run succeeded
  1  invalid or refused: a pipeline file or parameter has problems, the server knows no such
     pipeline or run or refuses the request; with --watch, the run failed or was cancelled
  2  usage error: unknown option, missing argument, bad --server URL or token file
  3  cannot reach the weir server (--server, WEIR_SERVER)
  4  the server refused the token (--token, WEIR_TOKEN, --token-file)
  130  interrupted (Ctrl-C) while watching a run
`weir run` differs: 0 succeeded, 1 failed or cancelled, 2 invalid, 3 the engine could not start.
`weir server`: 0 stopped by a signal, 1 could not start. See each command's --help.";

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "weir: workflow orchestration for machine-learning pipelines",
    long_about = "weir: workflow orchestration for machine-learning pipelines.\n\n\
                  A pipeline is a YAML file declaring a DAG of steps. `weir run FILE` runs one here \
                  (engine, store and workers in one process). `weir server` serves the engine to workers \
                  (`weir-worker --engine URL`) and clients on other hosts. `validate`, `plan`, `graph` and \
                  `schema` read pipeline files without running anything. `submit`, `pipelines`, `start`, \
                  `runs` (with `compare`), `status`, `approve`, `logs`, `cancel`, `retry`, `resume`, `cache explain`, `schedules` (with `pause` and \
                  `resume`), `backfill`, `metrics`, `lineage` and `models` talk to a weir server (--server, or a profile of the client config file: \
                  `weir config show`); \
                  only a server fires \
                  pipelines' cron schedules. `tokens` creates, lists and revokes named tokens with roles, \
                  and `audit` shows who did what (admin role). `backup FILE` saves a running server's store and blobs; \
                  `restore FILE --data-dir DIR` puts such a file into a new data folder. `store check`, `store export` and `store import` read \
                  and restore a data folder's database when something went wrong (README, \"When \
                  things go wrong\"). \
                  Logs go to stderr, filtered by RUST_LOG (`weir server`: info, others: warnings), \
                  as text or, with --log-format json, one JSON object a line.",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr as plain text (colours only on a terminal) or as JSON objects, one
    /// a line, for log shippers.
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    // Also accepted here, before the subcommand (`weir --local runs`).
    #[command(flatten)]
    conn: client::ConnArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Offline(offline::Command),
    /// Run a pipeline here and now: engine, store and workers in this process.
    ///
    /// The store lives in the data folder (--data-dir, default .weir), where runs accumulate;
    /// the client commands reach it with --local. Ctrl-C cancels the run. A `weir run` killed
    /// outright (kill -9, a crash) leaves its run unfinished there: the next `weir run` or
    /// `--local` command names it with how far it got and leaves it as it is, and `weir resume
    /// RUN --local` finishes it without running its succeeded steps again.
    #[command(after_help = local::RUN_EXIT_CODES)]
    Run(local::RunArgs),
    /// Serve the engine over gRPC for workers and clients on other hosts.
    #[command(after_help = serve::SERVER_EXIT_CODES)]
    Server(Box<serve::ServerArgs>),
    /// Check, export or import the data folder's database (with no engine running on it).
    Store(store::StoreArgs),
    /// Restore a `weir backup` file into a new data folder (missing or empty), with no engine
    /// running: every checksum is checked before anything is written, then the blobs and the
    /// records are written and flushed. Start `weir server --data-dir DIR` on it after.
    #[command(after_help = restore::RESTORE_EXIT_CODES)]
    Restore(restore::RestoreArgs),
    /// Open `weir run`'s data folder in the web UI (loopback only), with a local worker for
    /// runs started there. `weir run FILE --ui` shows one run live instead.
    #[command(after_help = ui::UI_EXIT_CODES)]
    Ui(ui::UiArgs),
    /// Show the settings the server commands connect with and where each came from: the
    /// config file read, the profile, the server URL and the token's source (never the token).
    #[command(after_help = client::config::CONFIG_HELP)]
    Config(client::config::ConfigArgs),
    #[command(flatten)]
    Client(client::Command),
}

fn main() -> ExitCode {
    alloc::tune();
    quiet_broken_pipe();
    let matches = command().get_matches_from(local_before_subcommand(std::env::args_os().collect()));
    let mut cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.format(&mut command()).exit(),
    };
    client::conn::note_given(&mut cli.conn, &matches);
    // The server is a service whose operators read its info lines (runs, workers, leases);
    // every other command speaks to its user on stdout and logs warnings only.
    let service = matches!(cli.command, Command::Server(_));
    init_tracing(cli.log_format, service);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "weir starting");
    match cli.command {
        Command::Offline(c) => offline::dispatch(c, &cli.conn),
        Command::Run(args) => local::run(args),
        Command::Server(args) => serve::run(*args),
        Command::Store(args) => store::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Ui(args) => ui::run(args),
        Command::Config(args) => client::config::run(args, &cli.conn),
        Command::Client(c) => client::dispatch(c, &cli.conn),
    }
}

/// The command line: `Cli` with the connection options on exactly the commands that talk to a
/// server (the client commands, `plan` for its `--remote` and `config`), so `weir server --help`
/// or `weir run --help` never offer a `--server` they would ignore.
fn command() -> clap::Command {
    use clap::{CommandFactory, Subcommand};
    // Told apart by name (`has_subcommand` matches names without building anything): building
    // the client commands a second time to list them cost a tenth of a one-step `weir run`.
    client::conn::with_connection_options(Cli::command(), |name| {
        client::Command::has_subcommand(name) || name == "plan" || name == "config"
    })
}

/// A reader that went away (`weir runs | head -1`) ends a command quietly with 141, the status
/// a shell gives a process that SIGPIPE ended, instead of a panic and a backtrace from
/// `println!`. Rust ignores SIGPIPE, and it stays ignored: restoring it would let a write to a
/// peer-reset socket (`writev` has no `MSG_NOSIGNAL`) kill a client mid-request. Long-running
/// commands (`weir server`, `weir ui`) write their lines without panicking at all.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if text.starts_with("failed printing to std") && text.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
}

/// `--local [DIR]` takes an optional value, so in `weir --local runs` clap would read `runs` as
/// DIR. A bare `--local` directly followed by a subcommand name means the default folder: it is
/// written `--local=.weir` before parsing. (A data folder named like a subcommand is still
/// reachable as `--local ./runs`.)
fn local_before_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    // The command is only built when there is a `--local` to judge.
    if !args.iter().any(|a| a == "--local") {
        return args;
    }
    let command = Cli::command();
    let is_subcommand = |a: &std::ffi::OsStr| {
        a.to_str().is_some_and(|a| {
            command.get_subcommands().any(|c| c.get_name() == a || c.get_all_aliases().any(|n| n == a))
        })
    };
    for i in 1..args.len().saturating_sub(1) {
        if args[i] == "--local" && is_subcommand(&args[i + 1]) {
            args[i] = "--local=.weir".into();
        }
        if !args[i].to_str().is_some_and(|a| a.starts_with('-')) && is_subcommand(&args[i]) {
            break;
        }
    }
    args
}

fn init_tracing(format: LogFormat, service: bool) {
    use std::io::IsTerminal;
    // sled logs one line per tree when a database whose writes failed is closed (the engine
    // reopens it after a full disk and says so itself).
    let default = if service { "warn,weir_engine=info,weir=info,sled::tree=off" } else { "warn,sled::tree=off" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // A closed stderr (a supervisor gone, `2>&-`) must not end the process: tracing would
    // report its failed write with `eprintln!`, which panics on that same closed stderr.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    let _ = match format {
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
        LogFormat::Text => {
            // No escape codes in a redirected log (or with NO_COLOR).
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).try_init()
        }
    };
}
