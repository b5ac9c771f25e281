//! The commands that talk to a weir server over its gRPC client API (`weir.v1.WeirClient`):
//! `submit`, `pipelines`, `start`, `runs` (and `runs compare`), `status`, `logs`, `cancel`,
//! `retry`, `approve`, `resume`, `schedules` (and `schedules pause|resume`), `backfill`, `metrics`,
//! `lineage`, `models` (and `models show|promote|rollback|get`), `runs delete`, `pipelines
//! delete` and `gc` (`retention`), `backup` (`WeirAdmin`), `tokens` and `audit`
//! (`WeirAccess`, in `access`). This module owns
//! the connection (URL, bearer token), turns gRPC statuses into messages with a next step and
//! into exit codes, and prints what the server answers through `display`. It must never decide
//! anything the server decides: a pipeline is validated locally only to fail fast with exact
//! positions, and the server's verdict is the one that counts.
//!
//! Code map: this file holds the command line (`Command`, `ConnArgs`), exit codes and dispatch;
//! `conn` the connection, the token and status-to-exit mapping; `submit` the upload;
//! `runs` everything about pipelines and runs once stored; `schedules` the cron schedules and
//! backfills; `tracking` comparing runs, metrics across runs and lineage; `models` the model
//! registry; `live_metrics` a step's live metrics (`weir metrics RUN STEP`); `resume` runs left
//! unfinished by a killed `weir run`, and `weir resume`.

pub(crate) mod access;
pub(crate) mod approvals;
pub(crate) mod artifacts;
mod backup;
pub(crate) mod cache;
pub(crate) mod config;
pub(crate) mod conn;
mod download;
pub(crate) mod live_metrics;
pub(crate) mod models;
pub(crate) mod notifications;
pub(crate) mod resume;
pub(crate) mod retention;
pub(crate) mod runs;
pub(crate) mod schedules;
pub(crate) mod secrets;
pub(crate) mod submit;
pub(crate) mod tracking;
pub(crate) mod workers;

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use weir_proto::v1::RunState;

use conn::connect;

use crate::offline;

pub const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  refused: the server knows no such pipeline or run, or refused the request (printed on stderr)
  2  usage error: unknown option, missing argument, bad --server URL or token file
  3  cannot reach the weir server (--server, WEIR_SERVER)
  4  the server refused the token (--token, WEIR_TOKEN, --token-file)";

pub const BACKUP_EXIT_CODES: &str = "\
Exit status:
  0  FILE holds the whole backup, checked
  1  FILE exists (pass --force), the server failed the backup, or the file received does not
     check out or cannot be written; FILE is then untouched and FILE.tmp removed
  2  usage error: unknown option, missing argument, bad --server URL or token file
  3  cannot reach the weir server (--server, WEIR_SERVER)
  4  the server refused the token (--token, WEIR_TOKEN, --token-file)";

pub const SUBMIT_EXIT_CODES: &str = "\
Exit status:
  0  stored (or already stored: submitting is idempotent); with --dry-run, valid on the server
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

pub const RESUME_EXIT_CODES: &str = "\
Exit status:
  0  the run succeeded
  1  the run failed or was cancelled, or there is no such run
  2  usage error: unknown option, missing argument, bad --server URL or token file
  3  cannot reach the weir server, or with --local the data folder is missing or in use by
     another weir (a `weir run` still running there)
  4  the server refused the token (--token, WEIR_TOKEN, --token-file)
  130  interrupted (Ctrl-C): with --local the run is left unfinished again, on a server it goes on";

/// Where the server is and how to prove who we are. Only the commands that talk to a server
/// take these (`conn::with_connection_options`), before or after their subcommand; each may also
/// come from the config file (`config`). The token is never printed, not even by `Debug`.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Connection")]
pub struct ConnArgs {
    /// The weir server's URL; else the config file's `server` (of --profile's table, then the
    /// top level), else http://127.0.0.1:7070.
    #[arg(long, value_name = "URL", env = "WEIR_SERVER", hide_env_values = true, default_value = config::DEFAULT_SERVER)]
    pub server: String,
    /// Bearer token for the server's client API. Other users can see it in `ps`: prefer
    /// --token-file, WEIR_TOKEN_FILE or the config file's `token_file`.
    #[arg(long, value_name = "TOKEN", env = "WEIR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the bearer token from a file: its `client=TOKEN` line, or its one line when that
    /// holds a bare token; wins over --token. Warns when others can read the file.
    #[arg(long, value_name = "FILE", env = "WEIR_TOKEN_FILE", hide_env_values = true, value_parser = any_path())]
    pub token_file: Option<PathBuf>,
    /// Trust this PEM CA for an https:// server (else the system's roots, or the config file's
    /// `ca`): for a server certificate from your own CA (docs/tls.md).
    #[arg(long, value_name = "FILE", env = "WEIR_CA", hide_env_values = true, value_parser = any_path())]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) for a server that requires one (`--client-ca-required`).
    #[arg(long, value_name = "FILE", env = "WEIR_CLIENT_CERT", hide_env_values = true, value_parser = any_path(), requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", env = "WEIR_CLIENT_KEY", hide_env_values = true, value_parser = any_path(), requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Take the server and the token file from this `[profiles.NAME]` table of the config file.
    #[arg(long, value_name = "NAME", env = "WEIR_PROFILE", hide_env_values = true)]
    pub profile: Option<String>,
    /// The client config file; default $XDG_CONFIG_HOME/weir/config.toml, else
    /// ~/.config/weir/config.toml (`weir config show` says which was read).
    #[arg(long, value_name = "FILE", env = "WEIR_CONFIG", hide_env_values = true, value_parser = any_path())]
    pub config: Option<PathBuf>,
    /// Instead of a server, use the data folder of `weir run` (DIR, default `.weir`): an engine
    /// and a worker start in this process on it for the one command, so `weir runs`, `status`,
    /// `cache explain`, `models`, `lineage`, ... see what `weir run` did there, and `retry` and
    /// `start` run their steps here (and follow them to the end). Refused while a `weir run`
    /// uses the folder. Runs left unfinished by a `weir run` that was killed are named and left
    /// as they are: `weir resume RUN --local` finishes one.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".weir")]
    pub local: Option<PathBuf>,
    /// The data folder of the `weir run` this connection belongs to (set by `weir run`, never on
    /// the command line), so that the commands it suggests carry `--local`.
    #[arg(skip)]
    pub weir_run: Option<PathBuf>,
    /// What the command line and the environment set, and from where (`conn::note_given`).
    #[arg(skip)]
    pub(crate) given: config::Given,
    /// `weir run`'s engine, in this process: calls go straight into its router (no socket).
    #[arg(skip)]
    pub(crate) transport: Option<weir_proto::transport::Transport>,
}

/// A path, empty included: an empty WEIR_TOKEN_FILE or WEIR_CONFIG (`VAR=` in a script or a
/// compose file) means unset (`conn::note_given`), not a usage error.
fn any_path() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

impl ConnArgs {
    /// What a suggested command needs to reach the same runs: ` --local [DIR]` for a data
    /// folder of `weir run`, nothing for a server.
    pub fn local_flag(&self) -> String {
        self.local.as_ref().or(self.weir_run.as_ref()).map(|d| resume::local_flag(d)).unwrap_or_default()
    }
}

impl fmt::Debug for ConnArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnArgs")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("profile", &self.profile)
            .field("config", &self.config)
            .field("local", &self.local)
            .field("weir_run", &self.weir_run)
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
        /// Have the server check the file with its own limits and say the version it would
        /// store (new or already stored) and how many steps it has; store nothing and upload no
        /// bundle bytes (only the bundle's digest and size are sent).
        #[arg(long)]
        dry_run: bool,
    },
    /// List the pipelines stored on the server, or delete one (`weir pipelines delete NAME`).
    #[command(after_help = EXIT_CODES, args_conflicts_with_subcommands = true)]
    Pipelines {
        /// Delete a pipeline; lists pipelines when left out.
        #[command(subcommand)]
        action: Option<PipelinesAction>,
    },
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
        /// Run every step, even those with `cache:` whose key matches an earlier success.
        #[arg(long)]
        no_cache: bool,
    },
    /// List runs, by pipeline name and then start time (run ids sort that way), compare some
    /// (`weir runs compare RUN RUN...`) or delete some (`weir runs delete RUN...`).
    #[command(after_help = EXIT_CODES, args_conflicts_with_subcommands = true)]
    Runs {
        /// Compare or delete runs; lists runs when left out.
        #[command(subcommand)]
        action: Option<RunsAction>,
        /// Only runs of this pipeline.
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
        /// Only runs in this state; repeatable.
        #[arg(long = "state", value_name = "STATE", value_enum)]
        states: Vec<StateArg>,
        /// Only runs started this way.
        #[arg(long, value_name = "KIND", value_parser = ["manual", "cron", "backfill", "retry", "files", "pipeline", "webhook"])]
        trigger: Option<String>,
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
    /// Cancel a run: ready steps are withdrawn, running attempts stopped. With --local, also a
    /// run that a killed `weir run` left unfinished.
    #[command(after_help = EXIT_CODES)]
    Cancel {
        /// The run's id.
        #[arg(value_name = "RUN")]
        run: String,
        /// Why, recorded with the cancellation.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Approve or reject a step awaiting approval (a step with `approval:` in its pipeline).
    ///
    /// Approved, the step runs as soon as a worker takes it; rejected, it fails with "rejected
    /// by NAME: COMMENT" and the steps that need it are skipped. Who decided, when and why are
    /// stored and `weir status RUN` shows them. Refused (exit 1) when the step is not awaiting
    /// approval: not yet, decided already, timed out, or the run is over.
    #[command(after_help = EXIT_CODES)]
    Approve {
        /// The run's id.
        #[arg(value_name = "RUN")]
        run: String,
        /// The step instance awaiting approval, as `weir status RUN` names it (`deploy`,
        /// `deploy[region=eu]`).
        #[arg(value_name = "STEP")]
        step: String,
        /// Reject instead of approving: the step fails.
        #[arg(long)]
        reject: bool,
        /// Why; stored and shown with the decision.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// Who decides, as recorded; default $USER. Not verified: the server records it beside
        /// "client token", since tokens carry no name.
        #[arg(long = "as", value_name = "NAME")]
        name: Option<String>,
    },
    /// Run a failed or cancelled run's unfinished steps again, keeping the succeeded ones; or,
    /// with --from, re-run one step and everything downstream of it in any finished run.
    ///
    /// A new run is started with the same pipeline version and params. Steps it does not run
    /// again are `cached`: their outputs and metrics are reused from RUN.
    #[command(after_help = WATCH_EXIT_CODES)]
    Retry {
        /// The run's id.
        #[arg(value_name = "RUN")]
        run: String,
        /// Re-run this step (all its instances) and everything downstream of it; every other
        /// step that succeeded in RUN is reused. The step runs even if the cache holds its key.
        #[arg(long, value_name = "STEP")]
        from: Option<String>,
        /// List what would run again and what would be reused; start nothing.
        #[arg(long)]
        dry_run: bool,
        /// Follow the new run until it ends, like `weir status RUN --watch`.
        #[arg(long)]
        watch: bool,
    },
    /// Finish a run that a killed `weir run` left unfinished (with --local), or follow a run on
    /// a server to its end.
    ///
    /// A `weir run` killed outright (kill -9, a crash, a closed terminal) leaves its run
    /// `running` in its data folder with nothing running it. Later `weir run`s and `--local`
    /// commands name such runs and leave them as they are. `weir resume RUN --local [DIR]`
    /// starts an engine and a worker here, resumes RUN and follows it to its end like `weir
    /// run`: steps that succeeded are not run again, ready ones run now, and one that was
    /// running when the process died runs again as a new attempt once its lease expires (10
    /// s). Ctrl-C leaves it unfinished again. A server resumes every run itself when it
    /// restarts after a crash; there `weir resume RUN` follows it like `weir status RUN --watch`.
    #[command(after_help = RESUME_EXIT_CODES)]
    Resume {
        /// The run's id, as `weir runs` (or the note naming unfinished runs) printed it.
        #[arg(value_name = "RUN")]
        run: String,
    },
    /// Ask the step cache: `weir cache explain RUN STEP` says why a step was or was not taken
    /// from the cache.
    #[command(after_help = EXIT_CODES, subcommand)]
    Cache(CacheAction),
    /// List the pipelines' cron schedules (`schedule:` in a pipeline file), or pause or resume
    /// one. Only `weir server` fires schedules, never `weir run`.
    ///
    /// Each schedule shows its expression and zone, concurrency and catchup, whether it is
    /// paused, its next three fire times in its own zone, its last tick and run, recently skipped
    /// ticks and a backfill in progress.
    #[command(after_help = EXIT_CODES, args_conflicts_with_subcommands = true)]
    Schedules {
        /// Pause or resume a schedule; lists schedules when left out.
        #[command(subcommand)]
        action: Option<ScheduleAction>,
        /// Only this pipeline's schedule.
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
    },
    /// Create the runs a pipeline's schedule would have started for its ticks in a past range.
    ///
    /// Each tick gets the run id the schedule would give it, so a tick that already has a run
    /// (fired by the schedule or an earlier backfill) is not run again. With `concurrency:
    /// allow` the runs all start at once; with `forbid` or `replace` they run one at a time,
    /// oldest first.
    #[command(after_help = EXIT_CODES)]
    Backfill {
        /// The pipeline's name; it must have a schedule.
        #[arg(value_name = "NAME")]
        pipeline: String,
        /// The range's start, inclusive: RFC 3339 (`2026-11-01T00:00:00Z`), or a date or a date
        /// and time in the schedule's zone (`2026-11-01`, `2026-11-01T06:00`).
        #[arg(long, value_name = "TIME")]
        from: String,
        /// The range's end, inclusive, in the same forms; a date alone means the end of that
        /// day. Not after now: later ticks fire by themselves.
        #[arg(long, value_name = "TIME")]
        to: String,
        /// List the ticks and what would happen to each, creating nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show one metric of a pipeline across its runs (`weir metrics PIPELINE METRIC`), or the
    /// live metrics of one step of a run (`weir metrics RUN STEP`).
    ///
    /// Two forms, told apart by the first argument: when it is the id of a run the server
    /// knows (or --attempt or --json is given), it is `RUN STEP`; otherwise `PIPELINE METRIC`
    /// (always, when --step is given).
    ///
    /// `weir metrics PIPELINE METRIC`: a table (time, run, step, value; `(cached)` when a
    /// cached step reused it), then the count, min, max, the latest value and its change from
    /// the one before, and a sparkline when it fits. A step's metrics are the numbers of its
    /// `metrics.json` and the last value of each series it wrote to `$WEIR_METRICS`. One
    /// series is one step's: when several steps write METRIC (a train's and a validate's
    /// `rmse`), the command is refused, naming them, until --step picks one.
    ///
    /// `weir metrics RUN STEP`: every series the step wrote to `$WEIR_METRICS` while it ran
    /// (one JSON object a line, docs/step-contract.md), for its latest attempt or --attempt N:
    /// per series its points, first, last, min and max value, then a sparkline each, and how
    /// many lines were malformed or points refused past the bound per attempt. STEP is an
    /// instance name (`train[lr=0.1]`) or a step's name when it has one instance.
    #[command(after_help = EXIT_CODES)]
    Metrics {
        /// A pipeline's name (the `PIPELINE METRIC` form) or a run's id (`RUN STEP`).
        #[arg(value_name = "PIPELINE|RUN")]
        target: String,
        /// After PIPELINE: the metric's name (`rmse`). After RUN: the step or instance name.
        #[arg(value_name = "METRIC|STEP")]
        name: String,
        /// `PIPELINE METRIC` only: only this step (all its matrix instances) or one instance
        /// (`train[lr=0.1]`).
        #[arg(long, value_name = "STEP", conflicts_with_all = ["attempt", "json"])]
        step: Option<String>,
        /// `PIPELINE METRIC` only: the most recent points to show.
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// `RUN STEP` only: this attempt (from 1) instead of the latest.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        attempt: Option<u32>,
        /// `RUN STEP` only: every point as a JSON object a line (name, value, step, time_ms).
        #[arg(long)]
        json: bool,
    },
    /// Show where an artifact came from: the step and run that made it, the artifacts that
    /// went in, theirs, and so on back to the ingested data; with --down, what it fed.
    ///
    /// Each line: short digest, path, size, run/step. An artifact met twice is shown once.
    #[command(after_help = EXIT_CODES)]
    Lineage {
        /// An artifact digest (at least 8 of its hex characters; `weir status RUN` lists each
        /// step's outputs), or a registered model as MODEL@ALIAS, MODEL@VERSION or MODEL.
        #[arg(value_name = "TARGET")]
        target: String,
        /// Walk downstream: the steps that took the artifact and what they made.
        #[arg(long)]
        down: bool,
        /// How many steps to walk; 0 walks to the end.
        #[arg(long, value_name = "N", default_value_t = 0)]
        depth: u32,
        /// One JSON object instead of the tree, for scripts: `digest`, `model`, `truncated`
        /// (the reason, or null) and `nodes` (`digest`, `path`, `size`, `run_id`, `step`,
        /// `depth`, `links`: the digests it came from, or fed with --down), the target first.
        #[arg(long)]
        json: bool,
    },
    /// List the model registry's models (name, latest version, aliases, last registration),
    /// or show, promote, roll back or download one.
    ///
    /// A step with `register: {model, file, alias?, when?}` creates the next version of its
    /// model each time it succeeds (not when cached or reused), and moves `alias` to it when the
    /// `when:` gate holds. See docs/registry.md.
    #[command(after_help = EXIT_CODES, args_conflicts_with_subcommands = true)]
    Models {
        /// Show, promote, roll back or download; lists the models when left out.
        #[command(subcommand)]
        action: Option<models::ModelAction>,
    },
    /// List a run's step outputs, or download one checked against its digest.
    #[command(subcommand, after_help = EXIT_CODES)]
    Artifacts(artifacts::ArtifactAction),
    /// List the workers connected to the server: labels, runtimes, CPUs, memory and GPUs
    /// (free/total), the attempts each holds (RUN/STEP#ATTEMPT, marked `(leased)` while its step
    /// has not started: held ahead or being prepared) and when the engine last heard from it.
    /// The web UI's workers page shows the same, and how many of a worker's attempts run at once.
    #[command(after_help = EXIT_CODES)]
    Workers,
    /// Collect garbage now: apply every pipeline's `keep:` (deleting the finished runs it lets
    /// go, but never one a registered model version came from or whose outputs a cache entry
    /// reuses), then delete blobs (step outputs, pipeline bundles) that nothing references
    /// any more and that are older than the server's --gc-grace, and unfinished uploads.
    ///
    /// Prints the runs deleted by pipeline, then the counts and bytes freed. `weir server`
    /// also collects every --gc-every by itself. See docs/retention.md.
    #[command(after_help = EXIT_CODES)]
    Gc {
        /// Say what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the notifications the server has yet to deliver to `notify:` receivers (id, event,
    /// run, receiver, attempts made, when the next is due, the last error), or with --dead the
    /// dead letters whose every attempt failed; `weir notifications retry ID` re-queues one.
    /// Delivered notifications are not kept. See docs/notifications.md.
    #[command(after_help = EXIT_CODES, args_conflicts_with_subcommands = true)]
    Notifications {
        #[command(subcommand)]
        action: Option<NotificationsAction>,
        /// The dead letters instead of the pending deliveries.
        #[arg(long)]
        dead: bool,
    },
    /// Manage the server's step secrets: `set NAME` (value from stdin), `list`, `rm NAME`.
    ///
    /// A step receives the secrets it names (`secrets: [NAME]`) as environment variables of
    /// those names; the server keeps them encrypted under its --secrets-key and the worker masks
    /// them in logs as `***`. No command ever prints a value. See docs/secrets.md.
    #[command(after_help = EXIT_CODES)]
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Manage named tokens with roles: `create NAME --role ROLE`, `list`, `revoke NAME`
    /// (admin role). See docs/auth.md.
    Tokens {
        #[command(subcommand)]
        action: access::TokensAction,
    },
    /// Show the audit log: every mutating request (submit, start, cancel, retry, approve,
    /// promote, rollback, schedule pause/resume/backfill, token changes, deletes, backups) with
    /// when, who (and their role), what and the outcome, oldest first (admin role).
    #[command(after_help = EXIT_CODES)]
    Audit(access::AuditArgs),
    /// Save a backup of the server's store and blobs to FILE, while it runs.
    ///
    /// The server reads every record at one instant (its writes pause meanwhile; runs go on),
    /// then streams them and every blob they name (step outputs, pipeline bundles), each
    /// section checksummed. The file is written as FILE.tmp, checked end to end, fsynced and
    /// renamed to FILE. Progress goes to stderr every few seconds. With --local DIR, backs up
    /// `weir run`'s data folder instead (no `weir run` may be using it). Restore with `weir
    /// restore FILE --data-dir NEW`. See docs/operations.md.
    #[command(after_help = BACKUP_EXIT_CODES)]
    Backup {
        /// Where to save the backup.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// What `weir secrets` does.
#[derive(Subcommand, Debug)]
pub enum SecretsAction {
    /// Create or replace secret NAME with the value read from stdin (to its end; one trailing
    /// newline is dropped). On a terminal the value is read without echo, up to Enter.
    #[command(after_help = EXIT_CODES)]
    Set {
        /// The secret's name, which is also the environment variable a step sees:
        /// `[A-Za-z_][A-Za-z0-9_]*`, not `WEIR_…`.
        name: String,
    },
    /// List the secrets: names, when each was created and last set. Never values.
    #[command(after_help = EXIT_CODES)]
    List,
    /// Delete secret NAME. Runs whose steps name it fail until it is set again.
    #[command(after_help = EXIT_CODES)]
    Rm {
        /// The secret's name, as `weir secrets list` shows it.
        name: String,
    },
}

/// What `weir notifications` does besides listing.
#[derive(Subcommand, Debug)]
pub enum NotificationsAction {
    /// Re-queue a dead letter for a fresh series of attempts, with the same delivery id.
    #[command(after_help = EXIT_CODES)]
    Retry {
        /// The delivery id, as `weir notifications --dead` lists it.
        id: String,
    },
}

/// What `weir pipelines` does besides listing.
#[derive(Subcommand, Debug)]
pub enum PipelinesAction {
    /// Delete a pipeline: every stored version, its schedule, its cache entries and all its
    /// runs (with their logs and outputs; the blobs go at the next `weir gc`).
    ///
    /// Refused, deleting nothing, while one of its runs has not finished (cancel it first) or
    /// a registered model version came from one of its runs.
    #[command(after_help = EXIT_CODES)]
    Delete {
        /// The pipeline's name, as `weir pipelines` lists it.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// What `weir runs` does besides listing.
#[derive(Subcommand, Debug)]
pub enum RunsAction {
    /// Show runs side by side: pipeline version, state, duration, every param, every step's
    /// metrics and output digests, with a `*` before each row that differs between them.
    ///
    /// A param, metric or output missing from a run shows `-` (and marks its row). Duration is
    /// never marked: it always differs. On a terminal the differing rows are coloured, unless
    /// NO_COLOR is set.
    #[command(after_help = EXIT_CODES)]
    Compare {
        /// Two or more run ids, as `weir runs` lists them.
        #[arg(value_name = "RUN", num_args = 2.., required = true)]
        runs: Vec<String>,
    },
    /// Delete finished runs: their records, steps, events, logs, output manifests and
    /// lineage (the output blobs go at the next `weir gc`, unless something else names them).
    ///
    /// A run that has not finished is refused (cancel it first: it could still be resumed or
    /// retried into), and so is one that a registered model version came from or whose
    /// outputs a cache entry reuses. Each refusal says why on stderr; the others are deleted.
    #[command(after_help = "Exit status:
  0  every run was deleted
  1  some run was not deleted (unfinished, unknown or kept; each says why), the others were
  2  usage error: unknown option, missing argument, bad --server URL or token file
  3  cannot reach the weir server (--server, WEIR_SERVER)
  4  the server refused the token (--token, WEIR_TOKEN, --token-file)")]
    Delete {
        /// One or more run ids, as `weir runs` lists them.
        #[arg(value_name = "RUN", num_args = 1.., required = true)]
        runs: Vec<String>,
    },
}

/// What `weir cache` does.
#[derive(Subcommand, Debug)]
pub enum CacheAction {
    /// Say why a step of a run was or was not taken from the cache: its key's parts (runtime,
    /// image, command, env, the params it uses, its inputs' digests, the bundle), and for a miss
    /// the parts that differ from the closest earlier entry of the same step.
    #[command(after_help = EXIT_CODES)]
    Explain {
        /// The run's id.
        #[arg(value_name = "RUN")]
        run: String,
        /// A step instance (`train[lr=0.1]`), or a step name when it has one instance.
        #[arg(value_name = "STEP")]
        step: String,
    },
}

/// What `weir schedules` does to one schedule.
#[derive(Subcommand, Debug)]
pub enum ScheduleAction {
    /// Stop a schedule firing: its ticks pass without runs until it is resumed. Running runs
    /// go on. Pausing a paused schedule is fine.
    #[command(after_help = EXIT_CODES)]
    Pause {
        /// The pipeline whose schedule to pause.
        #[arg(value_name = "NAME")]
        pipeline: String,
    },
    /// Let a paused schedule fire again from its next tick; ticks that passed while it was
    /// paused do not run (`weir backfill` runs them).
    #[command(after_help = EXIT_CODES)]
    Resume {
        /// The pipeline whose schedule to resume.
        #[arg(value_name = "NAME")]
        pipeline: String,
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
    pub(super) fn wire(self) -> RunState {
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
        ExitCode::from(self.status())
    }

    /// The process exit status `exit_code` stands for.
    pub fn status(self) -> u8 {
        match self {
            Failure::Refused | Failure::RunFailed => 1,
            Failure::Usage => 2,
            Failure::Unreachable => 3,
            Failure::Unauthenticated => 4,
            Failure::Interrupted => 130,
        }
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
    let result = runtime.block_on(async {
        let result = match conn.resolved() {
            Ok(conn) => run(command, &conn).await,
            Err(f) => Err(f),
        };
        crate::local::detach().await;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit_code(),
    }
}

/// `weir plan FILE --remote`: what the server's cache would do for a run of `pipeline`'s
/// latest stored version.
pub fn plan_remote(conn: &ConnArgs, pipeline: String, params: Vec<(String, String)>, no_cache: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let conn = &conn.resolved()?;
        let mut client = connect(conn).await?;
        cache::plan_remote(&mut client, conn, pipeline, params, no_cache).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit_code(),
    }
}

async fn run(command: Command, conn: &ConnArgs) -> Result<(), Failure> {
    match command {
        Command::Submit { path, dry_run } => submit::submit(conn, &path, dry_run).await,
        Command::Pipelines { action: None } => runs::pipelines(&mut connect(conn).await?, conn).await,
        Command::Pipelines { action: Some(PipelinesAction::Delete { name }) } => {
            retention::delete_pipeline(&mut connect(conn).await?, conn, name).await
        }
        Command::Backup { file, force } => {
            backup::backup(&mut conn::connect_admin(conn).await?, conn, file, force).await
        }
        Command::Secrets { action } => secrets::dispatch(&mut conn::connect_secrets(conn).await?, conn, action).await,
        Command::Tokens { action } => access::tokens(&mut conn::connect_access(conn).await?, conn, action).await,
        Command::Audit(args) => access::audit(&mut conn::connect_access(conn).await?, conn, args).await,
        Command::Gc { dry_run } => retention::gc(&mut connect(conn).await?, conn, dry_run).await,
        Command::Runs { action: Some(RunsAction::Delete { runs }), .. } => {
            retention::delete_runs(&mut connect(conn).await?, conn, runs).await
        }
        Command::Start { pipeline, params, watch, no_cache } => {
            let mut client = connect(conn).await?;
            let run_id = runs::start(&mut client, conn, pipeline, params.params, no_cache).await?;
            // With --local the steps run in this process: follow them, or they would stop.
            if watch || conn.local.is_some() { runs::follow(&mut client, conn, &run_id).await } else { Ok(()) }
        }
        Command::Runs { action: Some(RunsAction::Compare { runs }), .. } => {
            tracking::compare(&mut connect(conn).await?, conn, &runs).await
        }
        Command::Runs { action: None, pipeline, states, trigger, limit } => {
            runs::runs(&mut connect(conn).await?, conn, pipeline, &states, trigger, limit).await
        }
        Command::Metrics { target, name, step, limit, attempt, json } => {
            let mut client = connect(conn).await?;
            let run_form = step.is_none()
                && (attempt.is_some() || json || live_metrics::is_run(&mut client, conn, &target).await?);
            if run_form {
                live_metrics::show(&mut client, conn, &target, &name, attempt.unwrap_or(0), json).await
            } else {
                tracking::metrics(&mut client, conn, target, name, step, limit).await
            }
        }
        Command::Lineage { target, down, depth, json } => {
            tracking::lineage(&mut connect(conn).await?, conn, target, down, depth, json).await
        }
        Command::Status { run, watch } => {
            let mut client = connect(conn).await?;
            if watch {
                resume::refuse_interrupted(conn, &run)?;
                runs::follow(&mut client, conn, &run).await
            } else {
                runs::status(&mut client, conn, &run).await
            }
        }
        Command::Logs { run, step, follow, attempt } => {
            let mut client = connect(conn).await?;
            if follow {
                resume::refuse_interrupted(conn, &run)?; // nothing would ever end it
            }
            runs::logs(&mut client, conn, &run, step, follow, attempt.unwrap_or(0)).await
        }
        Command::Cancel { run, reason } => {
            // With --local a run a killed `weir run` left can be cancelled too: resumed without
            // a worker, so that none of its steps starts before the cancel.
            let resume = if conn.local.is_some() { std::slice::from_ref(&run) } else { &[] };
            runs::cancel(&mut conn::connect_resuming(conn, resume, false).await?, conn, &run, reason).await
        }
        Command::Approve { run, step, reject, comment, name } => {
            let a = approvals::Approve { run, step, reject, comment, name };
            approvals::approve(&mut connect(conn).await?, conn, a).await
        }
        Command::Retry { run, from, dry_run, watch } => {
            let mut client = connect(conn).await?;
            resume::refuse_interrupted(conn, &run)?;
            match cache::retry(&mut client, conn, &run, from, dry_run).await? {
                Some(new) if watch || conn.local.is_some() => runs::follow(&mut client, conn, &new).await,
                _ => Ok(()),
            }
        }
        Command::Resume { run } => {
            let mut client = conn::connect_resuming(conn, std::slice::from_ref(&run), true).await?;
            resume::resume(&mut client, conn, &run).await
        }
        Command::Cache(CacheAction::Explain { run, step }) => {
            cache::explain(&mut connect(conn).await?, conn, &run, &step).await
        }
        Command::Schedules { action, pipeline } => {
            let mut client = connect(conn).await?;
            match action {
                None => schedules::list(&mut client, conn, pipeline).await,
                Some(ScheduleAction::Pause { pipeline }) => {
                    schedules::set_paused(&mut client, conn, pipeline, true).await
                }
                Some(ScheduleAction::Resume { pipeline }) => {
                    schedules::set_paused(&mut client, conn, pipeline, false).await
                }
            }
        }
        Command::Models { action } => models::dispatch(&mut connect(conn).await?, conn, action).await,
        Command::Workers => workers::list(&mut connect(conn).await?, conn).await,
        Command::Notifications { action, dead } => {
            let mut client = connect(conn).await?;
            match action {
                None => notifications::list(&mut client, conn, dead).await,
                Some(NotificationsAction::Retry { id }) => notifications::retry(&mut client, conn, id).await,
            }
        }
        Command::Artifacts(action) => artifacts::dispatch(&mut connect(conn).await?, conn, action).await,
        Command::Backfill { pipeline, from, to, dry_run } => {
            schedules::backfill(&mut connect(conn).await?, conn, pipeline, from, to, dry_run).await
        }
    }
}

pub(super) fn print_out(text: &str) {
    let mut out = io::stdout().lock();
    // A closed pipe (`weir runs | head`) is not an error worth a message.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

pub(super) fn color_on(tty: bool) -> bool {
    tty && std::env::var_os("NO_COLOR").is_none()
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
