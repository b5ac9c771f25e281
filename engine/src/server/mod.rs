//! The engine's core services and the server that hosts them. [`start`] opens the data folder
//! (sled under `db/`, blobs and bundles under `artifacts/`), resumes unfinished runs, binds and
//! serves the gRPC adapter (`crate::api`) until [`Server::shutdown`]. `weir server` and the
//! embedded `weir run` both come through here, so the laptop and the team server share every
//! code path.
//!
//! Layout: `core` (state, the one place events are applied and made durable, recovery, timers),
//! `pipelines` (submitting, listing), `runs` (reading, starting, listing, cancelling and
//! retrying runs), `logs`, `scheduler` (firing `schedule:` ticks, backfill), `triggers` (firing
//! `on:` triggers: files, upstream pipelines, webhooks), `schedules` (what
//! clients ask of them), `dispatch` (leases, heartbeats, reports), `cache`, `registry`,
//! `tracking`, `error` (the domain error), and here configuration. The services take and return domain values; they
//! never name a proto type or a gRPC status (that is `crate::api`'s job).
//!
//! Authentication: bearer tokens, each naming a principal with a role (`crate::access`: the
//! client token is `client`, an admin; the worker token `worker`; `NAME:ROLE=` lines and
//! `weir tokens create` add more), checked by the adapter's guard against the role table;
//! health and reflection are open. Listening on anything but loopback without client-side and
//! worker tokens is refused unless `insecure` is set; so are two equal tokens, and, off
//! loopback, tokens shorter than [`tokens::MIN_TOKEN_LEN`]. Token files are read by `tokens`.
//! Off loopback, plain text (no `tls`) needs `insecure` too, and each such start logs a
//! warning; `crate::tls` terminates TLS for the whole port.

pub(crate) mod approvals;
pub(crate) mod backup;
pub(crate) mod browse;
pub(crate) mod cache;
pub(crate) mod compare;
pub(crate) mod core;
pub(crate) mod dispatch;
pub(crate) mod error;
pub(crate) mod explain;
mod heal;
pub(crate) mod live_metrics;
pub(crate) mod logs;
mod mlops;
mod model_notify;
pub(crate) mod notify;
#[cfg(test)]
mod notify_tests;
mod outbox;
pub(crate) mod pipelines;
#[cfg(test)]
mod prepare_tests;
pub(crate) mod protect;
pub(crate) mod ratelog;
pub(crate) mod registry;
pub(crate) mod retention;
pub(crate) mod run_view;
pub(crate) mod runs;
pub(crate) mod scheduler;
mod schedules;
pub(crate) mod secrets;
#[cfg(test)]
mod staged_tests;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod timing_tests;
pub use crate::api::tokens;
pub(crate) mod tracking;
pub(crate) mod triggers;
mod waiting;
pub(crate) mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

pub use self::core::{Engine, Terms};
use crate::access::{Access, Grant, Role};

pub use crate::tls::TlsConfig;
pub use cache::{PlannedStep, Verdict};
pub use dispatch::input_dir;
pub use error::ApiError;
pub use retention::GcConfig;
pub use secrets::{SecretInfo, ServerSecrets};
pub use triggers::{Delivery, Secrets, SecretsError};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Everything durable lives here.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Required from clients (`authorization: Bearer …`) when set.
    pub client_token: Option<String>,
    /// Required from workers when set.
    pub worker_token: Option<String>,
    /// Named tokens with roles (`NAME:ROLE=TOKEN` lines of the token file), beside
    /// `client_token` (named `client`, role admin) and `worker_token` (`worker`, role worker).
    pub grants: Vec<crate::access::Grant>,
    /// Allow listening off loopback without tokens or without TLS (a warning at each start).
    pub insecure: bool,
    /// TLS on the one port (gRPC, web UI, `/metrics`, `/hooks`), mTLS for workers with a
    /// client CA (`crate::tls`). `None`: plain text, which off loopback needs `insecure`.
    pub tls: Option<crate::tls::TlsConfig>,
    pub terms: Terms,
    /// How often timers, lost workers, unclaimed attempts and schedules are checked.
    pub tick: Duration,
    /// Fire pipelines' `schedule:` (`weir server`); `weir run` turns it off.
    pub scheduling: bool,
    /// Which unfinished runs found in the store to resume.
    pub resume: Resume,
    /// Where the engine's time comes from (tests pass a clock they move).
    pub clock: crate::clock::Clock,
    /// Export OpenTelemetry traces of runs to this OTLP/gRPC endpoint (`crate::otel`); off when
    /// unset.
    pub otlp_endpoint: Option<String>,
    /// Retention and blob sweeps: the grace, and how often a server runs them by itself.
    pub gc: GcConfig,
    /// Notification delivery: secrets, attempts, backoff.
    pub notify: crate::notify::NotifyConfig,
    /// How often `on:` triggers look for new files and upstream runs (with `scheduling`).
    pub trigger_every: Duration,
    /// The secrets webhook deliveries are signed with, by pipeline (`--webhook-secrets`).
    pub webhook_secrets: Secrets,
    /// The key step secrets are sealed with at rest (`--secrets-key`); `None`: the server keeps
    /// no secrets and refuses steps that name one.
    pub secrets_key: Option<crate::secrets::SecretsKey>,
}

/// Which of the unfinished runs in the store [`start`] resumes. A run it leaves stays as it was
/// (`running` in the store, not live): its events are refused as "not running here".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Resume {
    /// All of them: `weir server`, whose runs go on after a crash or a restart.
    #[default]
    All,
    /// Only these: `weir run` and `--local`, where an unfinished run was left by a `weir run`
    /// that was killed, and waits until `weir resume RUN --local` asks for it.
    Only(std::collections::BTreeSet<String>),
}

impl Resume {
    /// Whether run `id` is to be resumed.
    pub fn includes(&self, id: &str) -> bool {
        match self {
            Resume::All => true,
            Resume::Only(ids) => ids.contains(id),
        }
    }
}

impl ServerConfig {
    /// Defaults for `data_dir` on `listen`: 30 s lease timeout, 5 s heartbeats.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            data_dir: data_dir.into(),
            listen,
            client_token: None,
            worker_token: None,
            grants: Vec::new(),
            insecure: false,
            tls: None,
            terms: Terms {
                lease_timeout: Duration::from_secs(30),
                heartbeat_interval: Duration::from_secs(5),
                max_wait: Duration::from_secs(30),
            },
            tick: Duration::from_millis(100),
            scheduling: true,
            resume: Resume::All,
            clock: crate::clock::Clock::system(),
            otlp_endpoint: None,
            gc: GcConfig::default(),
            notify: Default::default(),
            trigger_every: Duration::from_secs(2),
            webhook_secrets: Secrets::default(),
            secrets_key: None,
        }
    }

    /// Whether step secrets may travel over this server's transport when it is not TLS: when it
    /// listens on loopback only, or `insecure` says the network is trusted. (A TLS transport
    /// carries them whatever this says.) Otherwise `SetSecret` is refused and a step naming a
    /// secret fails instead of receiving it.
    pub fn secrets_over_plaintext_ok(&self) -> bool {
        self.listen.ip().is_loopback() || self.insecure
    }

    /// Whether step secrets may travel to workers: over TLS, or where plaintext is acceptable
    /// ([`ServerConfig::secrets_over_plaintext_ok`]).
    pub fn secrets_may_travel(&self) -> bool {
        self.tls.is_some() || self.secrets_over_plaintext_ok()
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to listen on {0} without authentication: give client and worker tokens \
         (--token-file), listen on 127.0.0.1, or pass --insecure if the network is trusted"
    )]
    Unauthenticated(SocketAddr),
    #[error(
        "refusing to listen on {0} in plain text: tokens and pages would cross the network readable by anyone \
         on it; give --tls-cert and --tls-key (docs/tls.md), listen on 127.0.0.1, or pass --insecure if the \
         network is trusted"
    )]
    PlainText(SocketAddr),
    #[error(
        "the client and worker tokens are the same: any worker could act as a client and any client as a \
         worker; give each its own (`openssl rand -hex 32`)"
    )]
    SameTokens,
    #[error(
        "a token shorter than {min} characters cannot guard a server listening on {0}: generate one with \
         `openssl rand -hex 32`",
        min = tokens::MIN_TOKEN_LEN
    )]
    WeakToken(SocketAddr),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("artifact store: {0}")]
    Artifact(#[from] weir_data::artifact::Error),
    #[error("cannot resume runs: {0}")]
    Recover(ApiError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Otel(#[from] crate::otel::Error),
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    engine: Arc<Engine>,
    stop: watch::Sender<bool>,
    serve: JoinHandle<Result<(), tonic::transport::Error>>,
    ticker: JoinHandle<()>,
    outbox: JoinHandle<()>,
    triggering: Option<JoinHandle<()>>,
    /// The gRPC routes (guard included) for callers in this process ([`Server::transport`]).
    local: tonic::service::Routes,
}

impl Server {
    /// The address it listens on (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, or `https://ADDR` with TLS, for clients and workers.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// A transport for a client in this process (`weir run`'s embedded worker): its calls go
    /// straight into the gRPC routes, guard included, without a socket. It holds the engine:
    /// drop it (stop the worker) before [`Server::shutdown`], which otherwise waits for it.
    pub fn transport(&self) -> weir_proto::transport::Transport {
        weir_proto::transport::Transport::local(self.local.clone())
    }

    /// Whether it speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Fires what is due now (lost workers, unclaimed orphans, timers, schedules) without
    /// waiting for the periodic tick: for tests that move the server's clock.
    pub fn tick(&self) {
        self.engine.tick()
    }

    /// Stops accepting calls, ends open streams and timers, and waits for them. Unless a
    /// caller still holds the engine (then when it drops it), the data folder is unlocked
    /// once the returned future completes.
    pub async fn shutdown(self) {
        drop(self.local);
        let _ = self.stop.send(true);
        self.ticker.abort();
        let _ = self.ticker.await;
        self.outbox.abort();
        let _ = self.outbox.await;
        if let Some(t) = self.triggering {
            t.abort();
            let _ = t.await;
        }
        match tokio::time::timeout(Duration::from_secs(5), self.serve).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
            Ok(_) => {}
            Err(_) => tracing::warn!("server did not stop within 5s"),
        }
        if let Some(otel) = self.engine.otel.get() {
            otel.drain(Duration::from_secs(5)).await;
        }
        // A blocking store call that an aborted task had started (the outbox's flush, a
        // trigger's scan) still holds the engine and so the store; wait for it (bounded), so the
        // data folder can be opened again as soon as this returns.
        // Polled from 50 µs up, doubling to 2 ms: usually the last holder lets go within a
        // fraction of a millisecond, and a `weir run` exits only after this.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut pause = Duration::from_micros(50);
        while Arc::strong_count(&self.engine) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(2));
        }
        if Arc::strong_count(&self.engine) > 1 {
            tracing::warn!("the engine is still in use 5s after shutdown; its store stays open until released");
            return;
        }
        // Dropping the last handle closes the store, but sled's own background tasks let go of
        // the folder's lock a moment later: wait for that too (bounded), off the async threads.
        let dir = self.engine.store.dir().to_path_buf();
        drop(self.engine);
        let unlocked =
            tokio::task::spawn_blocking(move || crate::store::Store::wait_unlocked(&dir, Duration::from_secs(5))).await;
        if !matches!(unlocked, Ok(true)) {
            tracing::warn!("the data folder is still locked 5s after shutdown");
        }
    }

    /// Waits until the server stops by itself (it does not, short of an error).
    pub async fn wait(&mut self) -> Result<(), String> {
        match (&mut self.serve).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Every token `config` names: the client token as `client` (admin), the worker token as
/// `worker`, then the named ones.
fn grants(config: &ServerConfig) -> Vec<Grant> {
    let mut out = Vec::new();
    if let Some(t) = &config.client_token {
        out.push(Grant { name: "client".into(), role: Role::Admin, token: t.clone() });
    }
    if let Some(t) = &config.worker_token {
        out.push(Grant { name: "worker".into(), role: Role::Worker, token: t.clone() });
    }
    out.extend(config.grants.iter().cloned());
    out
}

/// Opens the data folder, resumes unfinished runs and serves on `config.listen`.
pub async fn start(config: ServerConfig) -> Result<Server, StartError> {
    let grants = grants(&config);
    // A side without any token of its own is open (`crate::access`).
    let open = !grants.iter().any(|g| g.role == Role::Worker) || !grants.iter().any(|g| g.role != Role::Worker);
    if open && !config.listen.ip().is_loopback() && !config.insecure {
        return Err(StartError::Unauthenticated(config.listen));
    }
    if config.tls.is_none() && !config.listen.ip().is_loopback() {
        if !config.insecure {
            return Err(StartError::PlainText(config.listen));
        }
        tracing::warn!(
            listen = %config.listen,
            "listening off loopback WITHOUT TLS (--insecure): tokens, logs and pages cross the network in clear text"
        );
    }
    // `weir server` checks its token file with lines to point at (`tokens`); this guards
    // every other way of configuring a server.
    for (i, g) in grants.iter().enumerate() {
        if grants[..i].iter().any(|h| h.token == g.token) {
            return Err(StartError::SameTokens);
        }
        if !config.listen.ip().is_loopback() && g.token.len() < tokens::MIN_TOKEN_LEN {
            return Err(StartError::WeakToken(config.listen));
        }
    }
    if let Some(endpoint) = &config.otlp_endpoint {
        crate::otel::check(endpoint)?;
    }
    let db_dir = config.data_dir.join("db");
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::Store(crate::store::Error::Io(source)))?;
    let store = crate::store::Store::open(&db_dir)?;
    let blobs = weir_data::artifact::Store::open(&config.data_dir.join("artifacts"))?;
    let mut engine = Engine::new(store, blobs, config.terms, config.clock.clone());
    engine.scheduling = config.scheduling;
    engine.collector.config = config.gc;
    engine.notify = config.notify.clone();
    engine.triggers = triggers::Triggers::new(config.webhook_secrets.clone());
    engine.secrets =
        secrets::ServerSecrets { key: config.secrets_key.clone(), plaintext_ok: config.secrets_may_travel() };
    let engine = Arc::new(engine);
    if let Some(endpoint) = &config.otlp_endpoint {
        let _ = engine.otel.set(crate::otel::Otel::start(endpoint, Arc::downgrade(&engine))?);
    }
    let resumed = engine.recover(&config.resume).map_err(StartError::Recover)?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed unfinished runs");
    }
    if config.scheduling {
        let schedules = engine.start_schedules(engine.clock.calendar()).map_err(StartError::Recover)?;
        tracing::info!(schedules, "schedules loaded");
    }
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;

    let worker_cert = config.tls.as_ref().is_some_and(|t| t.mtls);
    let access = Arc::new(Access::load(&grants, &engine.store)?);
    let grpc = crate::api::routes(engine.clone(), access.clone(), worker_cert).await;
    let key_material: String = grants.iter().map(|g| g.token.as_str()).collect::<Vec<_>>().join("\n");
    let web = crate::web::router(engine.clone(), access, (!grants.is_empty()).then_some(key_material.as_str()))
        .map_err(|e| StartError::Recover(ApiError::Internal(e)))?;
    // One port: gRPC services by their `/package.Service/` paths, the web UI by the rest.
    // HTTP/1.1 is accepted for browsers (gRPC stays on HTTP/2).
    let local = grpc.clone();
    let routes = tonic::service::Routes::from(grpc.into_axum_router().merge(web).fallback(crate::web::not_found));
    let router = tonic::transport::Server::builder()
        .accept_http1(true)
        // Every call runs in a span naming its RPC, so what `status` logs says which call failed.
        .trace_fn(|req| tracing::info_span!("rpc", method = req.uri().path()))
        .add_routes(routes);
    let (stop, mut stopped) = watch::channel(false);
    // TCP_NODELAY: without it, Nagle's algorithm meets delayed ACKs on small replies and every
    // call of a short step waits ~40 ms (measured: 50 ms per `true` step before, BENCHMARKS.md).
    // Keepalive probes notice a worker host that vanished without closing its connection.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(Duration::from_secs(20)));
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    // With TLS, the engine's own acceptor (ALPN h2 and http/1.1, so browsers keep HTTP/1.1).
    // Each connection's writes as one (`api::coalesce`): a unary answer leaves in one write.
    use crate::api::coalesce::Coalesced;
    use tokio_stream::StreamExt as _;
    let serve = match &config.tls {
        None => tokio::spawn(router.serve_with_incoming_shutdown(incoming.map(|io| io.map(Coalesced)), shutdown)),
        Some(tls) => {
            let incoming = crate::tls::incoming(incoming, tls).map(|io| io.map(Coalesced));
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown))
        }
    };
    let ticker = {
        let engine = engine.clone();
        let every = config.tick;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                engine.tick();
                engine.collect_if_due();
            }
        })
    };
    let outbox = tokio::spawn(outbox::run(engine.clone()));
    // `on:` triggers read folders and the store: their own task, so a slow disk or a big file
    // being hashed never delays the engine's timers.
    let triggering = config.scheduling.then(|| {
        let engine = engine.clone();
        let every = config.trigger_every;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                engine.fire_triggers().await;
            }
        })
    });
    let tls = config.tls.is_some();
    tracing::info!(%addr, tls, mtls = worker_cert, data_dir = %config.data_dir.display(), "weir server listening");
    Ok(Server { addr, tls, engine, stop, serve, ticker, outbox, triggering, local })
}
