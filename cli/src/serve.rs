//! `weir server`: the engine as a long-running gRPC server for a team, with workers joining
//! from other hosts (`weir-worker --engine URL`). Parses flags and the token file, starts
//! [`weir_engine::server`], and stops cleanly on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use weir_engine::server::{self, ServerConfig};
use weir_proto::auth::{self as tokens, TokenFile};

pub const SERVER_EXIT_CODES: &str = "\
Exit status:
  0  stopped by Ctrl-C or SIGTERM
  1  could not start (data folder in use, address taken, unsafe listen address, a bad token
     file: a duplicate or unknown line, one token for clients and workers, a token shorter
     than 32 characters off loopback, an --otlp-endpoint that is not an http:// URL, an
     unreadable --notify-secrets or --webhook-secrets file or a bad line in one, plain text
     off loopback without --insecure, a --tls-cert/--tls-key/--client-ca file that is missing
     or not PEM, a key that does not go with its certificate, a token file others can read
     while listening off loopback)
  2  usage error";

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on. Anything but loopback needs tokens and TLS (or --insecure).
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR", env = "WEIR_LISTEN")]
    listen: SocketAddr,
    /// Folder for the run database, artifacts and bundles.
    #[arg(long, default_value = ".weir", value_name = "DIR", env = "WEIR_DATA_DIR")]
    data_dir: PathBuf,
    /// File with the tokens: lines `client=TOKEN` and `worker=TOKEN`, two different tokens
    /// (`openssl rand -hex 32` each); off loopback each needs at least 32 characters. Clients
    /// send theirs as `authorization: Bearer TOKEN`. Keep the file private (`chmod 600`).
    #[arg(long, value_name = "FILE", env = "WEIR_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Listen off loopback without tokens or without TLS (only on a network you trust; a
    /// warning is logged at each start).
    #[arg(long)]
    insecure: bool,
    #[command(flatten)]
    tls: TlsArgs,
    /// A worker silent this long is lost and its steps run again elsewhere (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    lease_timeout: Duration,
    #[command(flatten)]
    otlp: crate::otlp::OtlpArgs,
    /// Apply every pipeline's `keep:` and sweep unreferenced blobs this often (e.g. 1h, 30m),
    /// or `off`; `weir gc` runs one now. The first runs one period after the start.
    #[arg(long, default_value = "1h", value_name = "DURATION|off", value_parser = parse_period)]
    gc_every: Period,
    /// Blobs (outputs, bundles) and unfinished uploads younger than this are never swept, so
    /// an upload whose run does not name it yet survives a collection (e.g. 1h, 15m).
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    gc_grace: Duration,
    /// File with webhook secrets for pipelines with `on: {webhook: ...}`: lines
    /// `PIPELINE = SECRET` (at least 16 characters; `openssl rand -hex 32`), `#` comments.
    /// Senders sign `TIMESTAMP.BODY` with HMAC-SHA256 under the secret and POST to
    /// /hooks/PIPELINE (docs/triggers.md). Read once at start, never logged. Keep it private.
    #[arg(long, value_name = "FILE", env = "WEIR_WEBHOOK_SECRETS")]
    webhook_secrets: Option<PathBuf>,
    /// How often `on:` triggers look for new files and upstream runs (e.g. 2s, 1m).
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse_duration)]
    trigger_every: Duration,
    /// File with the secrets that sign webhook notifications: lines `NAME = SECRET` (at least
    /// 16 characters; `openssl rand -hex 32`), `#` comments. A `notify:` entry names one with
    /// `secret: NAME`. Read once at start, never logged. Keep it private (`chmod 600`).
    #[arg(long, value_name = "FILE", env = "WEIR_NOTIFY_SECRETS")]
    notify_secrets: Option<PathBuf>,
    /// The key file step secrets are sealed with at rest (`weir secrets set`): 32 random bytes
    /// (`head -c 32 /dev/urandom > FILE && chmod 600 FILE`) or 64 hex digits, readable by its
    /// owner only. Read once at start, never logged. Without it the server keeps no secrets and
    /// a step naming one fails. Keep it: secrets set under a key do not open under another
    /// (docs/secrets.md).
    #[arg(long, value_name = "FILE", env = "WEIR_SECRETS_KEY")]
    secrets_key: Option<PathBuf>,
    /// Attempts at a notification before it becomes a dead letter (`weir notifications --dead`).
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    notify_attempts: u32,
    /// The wait after a notification's first failed attempt, doubled after each further one
    /// up to 5 minutes (tests shorten it).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration, hide = true)]
    notify_backoff: Duration,
    /// The server's address as people reach its web UI, e.g. https://weir.example.com: each
    /// notification then carries a `url` to the run, step or model page it is about. Unset:
    /// no `url` field.
    #[arg(long, value_name = "URL", env = "WEIR_PUBLIC_URL", value_parser = parse_public_url)]
    public_url: Option<String>,
    /// Dead letters kept (`weir notifications --dead`): when one more becomes dead, the
    /// oldest beyond this many are forgotten.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    notify_keep_dead: usize,
    /// The longest wait between a notification's attempts (tests shorten it).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration, hide = true)]
    notify_max_backoff: Duration,
}

/// `--public-url`: an `http://` or `https://` URL with a host, and no user, query or fragment
/// (notifications append `/runs/ID` to it); a trailing `/` is dropped.
fn parse_public_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Err("expected an http:// or https:// URL, e.g. https://weir.example.com".into());
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err("expected a host after the scheme, e.g. https://weir.example.com".into());
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@')) {
        return Err(format!("a public URL holds no {c:?}: give the scheme, host, port and path only"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// `--gc-every`: a period, or none.
#[derive(Clone, Copy, Debug)]
struct Period(Option<Duration>);

fn parse_period(s: &str) -> Result<Period, String> {
    if s == "off" { Ok(Period(None)) } else { parse_duration(s).map(|d| Period(Some(d))) }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    weir_core::spec::units::parse_duration(s)
}

/// The named tokens of `path` with their roles (`client=` as `client`, admin; `worker=` as
/// `worker`), checked for a server listening on `listen`; every problem with its line.
pub fn read_tokens(path: &Path, listen: SocketAddr) -> Result<Vec<weir_engine::access::Grant>, Vec<String>> {
    let show = |es: Vec<tokens::Error>| es.iter().map(ToString::to_string).collect::<Vec<_>>();
    let file = TokenFile::read(path).map_err(show)?;
    let named = file.server_principals(listen).map_err(show)?;
    let grant = |n: tokens::Named| {
        let role =
            weir_engine::access::Role::parse(&n.role).ok_or_else(|| vec![format!("unknown role `{}`", n.role)])?;
        Ok(weir_engine::access::Grant { name: n.name, role, token: n.token.into_secret() })
    };
    named.into_iter().map(grant).collect()
}

/// The notification secrets of `path`; an error names the file and line, never a secret.
fn read_notify_secrets(path: &Path) -> Result<weir_engine::notify::Secrets, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the notify secrets file {}: {e}", path.display()))?;
    weir_engine::notify::Secrets::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `weir server`'s TLS flags (docs/tls.md).
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// Serve TLS on the port (gRPC, web UI, /metrics, /hooks) with this PEM certificate chain
    /// (the server's certificate first); clients and workers then use https:// URLs.
    #[arg(long, value_name = "FILE", env = "WEIR_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, RSA or EC). Keep it private (`chmod 600`).
    #[arg(long, value_name = "FILE", env = "WEIR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// mTLS: verify client certificates against this PEM CA. Workers must present one signed
    /// by it (`weir-worker --tls-cert --tls-key`) or every worker call is refused; the CLI and
    /// browsers may connect without one (see --client-ca-required).
    #[arg(long, value_name = "FILE", env = "WEIR_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// With --client-ca: refuse every connection without a valid client certificate in the TLS
    /// handshake, the CLI's and browsers' too.
    #[arg(long, requires = "client_ca")]
    client_ca_required: bool,
}

impl TlsArgs {
    fn config(&self) -> Result<Option<server::TlsConfig>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        server::TlsConfig::from_files(cert, key, self.client_ca.as_deref(), self.client_ca_required)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// Off loopback a token file that group or others can read is refused: anyone with a shell on
/// the server host could act as any worker or client. On loopback (one user's laptop), and with
/// --insecure (a container's read-only secret mount is often 0444), it is only warned about
/// (`TokenFile::read`).
fn check_token_file_mode(path: &Path, listen: SocketAddr, insecure: bool) -> Result<(), String> {
    match tokens::loose_mode(path) {
        Some(mode) if !listen.ip().is_loopback() && !insecure => Err(format!(
            "{}: the token file can be read or changed by other users (mode {mode:03o}) and this server listens \
             on {listen}: `chmod 600 {}`",
            path.display(),
            path.display()
        )),
        _ => Ok(()),
    }
}

pub fn run(args: ServerArgs) -> ExitCode {
    let mut config = ServerConfig::new(&args.data_dir, args.listen);
    config.insecure = args.insecure;
    match args.tls.config() {
        Ok(tls) => config.tls = tls,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    config.otlp_endpoint = args.otlp.endpoint();
    config.gc = server::GcConfig { grace: args.gc_grace, every: args.gc_every.0 };
    config.notify.attempts = args.notify_attempts;
    config.notify.backoff = args.notify_backoff;
    config.notify.max_backoff = args.notify_max_backoff;
    config.notify.public_url = args.public_url.clone();
    config.notify.keep_dead = args.notify_keep_dead;
    if let Some(path) = &args.notify_secrets {
        match read_notify_secrets(path) {
            Ok(secrets) => config.notify.secrets = secrets,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if let Some(path) = &args.secrets_key {
        match weir_engine::secrets::SecretsKey::load(path) {
            Ok(key) => config.secrets_key = Some(key),
            Err(e) => {
                eprintln!("error: --secrets-key: {e}");
                return ExitCode::from(1);
            }
        }
    }
    config.terms.lease_timeout = args.lease_timeout;
    config.trigger_every = args.trigger_every.max(Duration::from_millis(100));
    if let Some(path) = &args.webhook_secrets {
        let read = std::fs::read_to_string(path).map_err(|e| e.to_string());
        match read.and_then(|text| server::Secrets::parse(&text).map_err(|e| e.to_string())) {
            Ok(secrets) => config.webhook_secrets = secrets,
            Err(e) => {
                eprintln!("error: --webhook-secrets {}: {e}", path.display());
                return ExitCode::from(1);
            }
        }
    }
    config.terms.heartbeat_interval = (args.lease_timeout / 6).max(Duration::from_millis(100));
    if let Some(path) = &args.token_file {
        if let Err(e) = check_token_file_mode(path, args.listen, args.insecure) {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
        match read_tokens(path, args.listen) {
            Ok(grants) => config.grants = grants,
            Err(problems) => {
                for p in problems {
                    eprintln!("error: {p}");
                }
                return ExitCode::from(1);
            }
        }
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %args.listen,
        data_dir = %args.data_dir.display(),
        tokens = args.token_file.is_some(),
        webhook_secrets = config.webhook_secrets.len(),
        insecure = args.insecure,
        tls = config.tls.is_some(),
        mtls = config.tls.as_ref().is_some_and(|t| t.mtls),
        lease_timeout = ?config.terms.lease_timeout,
        heartbeat_interval = ?config.terms.heartbeat_interval,
        "weir server starting"
    );
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        // Handlers first: a SIGTERM that arrives once the port answers must stop us cleanly,
        // not kill us with the default action.
        let mut signals = Signals::install();
        let server = match server::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        // Scripts (and the end-to-end tests) read the address from this line.
        say(std::io::stdout(), format_args!("weir server listening on {}", server.url()));
        say(std::io::stdout(), format_args!("data folder: {}", args.data_dir.display()));
        if args.token_file.is_none() {
            say(std::io::stdout(), format_args!("no tokens: only this host can connect"));
        }
        signals.wait().await;
        say(std::io::stderr(), format_args!("stopping..."));
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Writes a line to `out`, ignoring a closed or full output: a server whose stdout nobody
/// reads any more (a finished `| head`, a supervisor that closed the pipe) keeps serving.
pub fn say(mut out: impl std::io::Write, line: std::fmt::Arguments) {
    let _ = out.write_fmt(line).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush());
}

/// Ctrl-C and SIGTERM handlers, installed when created (tokio's `ctrl_c()` installs its own
/// only when first polled, which leaves a window where the default action still kills).
pub struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs both handlers; needs a running tokio runtime.
    pub fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals { int: signal(SignalKind::interrupt()).ok(), term: signal(SignalKind::terminate()).ok() }
    }

    /// Until Ctrl-C or SIGTERM.
    pub async fn wait(&mut self) {
        async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = recv(self.int.as_mut()) => {}
            _ = recv(self.term.as_mut()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_url_is_http_or_https_with_a_host_and_nothing_after_the_path() {
        assert_eq!(parse_public_url("https://weir.example.com/").unwrap(), "https://weir.example.com");
        assert_eq!(parse_public_url("http://10.0.0.5:7070/weir").unwrap(), "http://10.0.0.5:7070/weir");
        for bad in ["weir.example.com", "ftp://x", "https://", "https://u:p@host", "http://h/?a=1", "http://h/ x"] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }
}
