//! The worker's side of its conversation with the engine: the gRPC client with the token and
//! the session secret on every call, the current worker id (kept in `session` in the work
//! folder, readable by this user only, so a restarted worker registers again as the same
//! worker and keeps its attempts), the attempts this worker holds, and the one retry rule
//! every call goes through. An engine that is away (UNAVAILABLE, a broken connection) is retried
//! with exponential backoff and jitter (an error the engine marks as heard, `HEARD_HEADER`,
//! counts as contact and is retried at least once a heartbeat interval); NOT_FOUND (the engine forgot this worker id, after a
//! restart) registers again and retries with the new id; FAILED_PRECONDITION and INVALID_ARGUMENT
//! are refusals the caller drops; UNAUTHENTICATED stops the agent. This module never runs steps
//! and never touches the work folder.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::wire;
use tokio_util::sync::CancellationToken;
use tonic::codegen::InterceptedService;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Code, Request, Response, Status};
use weir_proto::transport::Transport;
use weir_proto::v1;
use weir_proto::v1::weir_worker_client::WeirWorkerClient;

use super::AgentError;
use super::fence::{self, Contact};

/// The generated client, with the token interceptor.
pub(crate) type Client = WeirWorkerClient<InterceptedService<Transport, Auth>>;

/// How long a Lease call may be held by the engine.
pub(crate) const LEASE_WAIT: Duration = Duration::from_secs(20);
/// The deadline of a unary call other than Lease: a hung engine is retried like an absent one.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The heartbeat interval when the engine names none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// The session secret the engine handed out at Register, shared by the interceptor.
pub(crate) type SessionSlot = Arc<RwLock<Option<MetadataValue<Ascii>>>>;

/// Sets `authorization: Bearer <token>` and, once registered, the session secret
/// ([`weir_proto::SESSION_HEADER`]) on every call. Both values are marked sensitive so that tonic
/// and hyper never print them.
#[derive(Clone)]
pub(crate) struct Auth {
    token: Option<MetadataValue<Ascii>>,
    session: SessionSlot,
}

impl Auth {
    /// `None` when the token cannot be a header value (control characters, non-ASCII).
    pub(crate) fn new(token: Option<&str>) -> Option<Auth> {
        let session = SessionSlot::default();
        let Some(token) = token else { return Some(Auth { token: None, session }) };
        let mut value = MetadataValue::try_from(format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(Auth { token: Some(value), session })
    }

    /// Where [`Session`] puts the secret it registers with.
    pub(crate) fn session_slot(&self) -> SessionSlot {
        self.session.clone()
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.token {
            request.metadata_mut().insert("authorization", value.clone());
        }
        if let Some(value) = self.session.read().expect("session lock").as_ref() {
            request.metadata_mut().insert(weir_proto::SESSION_HEADER, value.clone());
        }
        Ok(request)
    }
}

/// This worker's identity as the engine issued it: kept in memory and in a file of the work
/// folder (mode 0600), so that registering again, even from a new process, keeps it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub id: String,
    pub secret: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("id", &self.id).field("secret", &"<hidden>").finish()
    }
}

impl Identity {
    /// The identity stored in `path`, if it holds one (anything unreadable is ignored: the
    /// worker then registers as a new worker).
    pub(crate) fn load(path: &std::path::Path) -> Option<Identity> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut lines = text.lines().map(str::trim);
        let (id, secret) = (lines.next()?, lines.next()?);
        let valid = |s: &str| !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic());
        (valid(id) && valid(secret)).then(|| Identity { id: id.to_string(), secret: secret.to_string() })
    }

    /// Writes the identity to `path`, readable and writable by this user only, atomically.
    pub(crate) fn store(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(format!("{}\n{}\n", self.id, self.secret).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

/// One attempt, as a map key: the run id and the attempt within it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    pub run_id: String,
    pub instance: u32,
    pub number: u32,
}

impl Key {
    pub(crate) fn of(r: Option<&v1::AttemptRef>) -> Result<Key, wire::BadField> {
        let (run_id, instance, number) = wire::from_attempt_ref(r)?;
        Ok(Key { run_id, instance, number })
    }

    pub(crate) fn to_ref(&self) -> v1::AttemptRef {
        v1::AttemptRef {
            run_id: self.run_id.clone(),
            attempt: Some(v1::AttemptId { instance: self.instance, number: self.number }),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}.{}", self.run_id, self.instance, self.number)
    }
}

/// Why a held attempt was told to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The engine's stop order, with its reason.
    Engine(String),
    /// This worker is shutting down.
    Shutdown,
    /// The engine has not answered for most of the lease timeout ([`fence`]).
    Fenced,
}

struct Held {
    cancel: CancellationToken,
    stop: Option<StopReason>,
}

/// Why a call gave up.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The engine refused it for good (FAILED_PRECONDITION, INVALID_ARGUMENT and the like).
    Refused(Status),
    /// Retrying stopped: the agent is shutting down past its deadline, or it hit a fatal error.
    Abandoned,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Refused(s) => write!(f, "the engine refused it ({:?}): {}", s.code(), s.message()),
            CallError::Abandoned => f.write_str("gave up: the worker is stopping"),
        }
    }
}

/// What NOT_FOUND means for a call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotFound {
    /// Only the worker id can be unknown: register again and retry.
    Reregister,
    /// Either the worker id or the thing asked for (a blob) is unknown: a heartbeat tells which.
    Probe,
    /// A refusal like any other (Register itself).
    Refused,
}

enum Verdict {
    Retry,
    UnknownWorker,
    Refused,
    Fatal,
}

fn verdict(code: Code) -> Verdict {
    match code {
        Code::NotFound => Verdict::UnknownWorker,
        Code::Unauthenticated | Code::PermissionDenied => Verdict::Fatal,
        Code::FailedPrecondition
        | Code::InvalidArgument
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::Unimplemented => Verdict::Refused,
        _ => Verdict::Retry,
    }
}

/// Exponential backoff, 100 ms doubling to 5 s, each wait drawn between half and all of it.
struct Backoff {
    next: Duration,
    tries: u32,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: BACKOFF_FIRST, tries: 0 }
    }

    /// Waits the next backoff, but never longer than `most`.
    async fn wait(&mut self, most: Duration, abandon: &CancellationToken) -> Result<(), CallError> {
        let random = RandomState::new().hash_one(self.tries);
        let fraction = 0.5 + (random % 1000) as f64 / 2000.0;
        let wait = self.next.mul_f64(fraction).min(most);
        self.next = (self.next * 2).min(BACKOFF_MAX);
        self.tries += 1;
        tokio::select! {
            () = tokio::time::sleep(wait) => Ok(()),
            () = abandon.cancelled() => Err(CallError::Abandoned),
        }
    }
}

/// The connection to the engine and what the worker holds; shared by every task of the agent.
pub(crate) struct Session {
    client: Client,
    register: v1::RegisterRequest,
    capacity: u32,
    worker_id: RwLock<Arc<str>>,
    /// The identity to register again with, and the file that keeps it.
    identity: Mutex<Option<Identity>>,
    identity_file: Option<std::path::PathBuf>,
    slot: SessionSlot,
    heartbeat: Mutex<Duration>,
    registering: tokio::sync::Mutex<()>,
    held: Mutex<HashMap<Key, Held>>,
    /// Fired when retries must stop: past the shutdown deadline, or after a fatal error.
    abandon: CancellationToken,
    fatal: Mutex<Option<AgentError>>,
    /// When the engine last provably heard this worker ([`fence`]).
    contact: Contact,
}

impl Session {
    /// A session over `client`, whose interceptor reads `slot`. With `identity_file`, the
    /// identity stored there (from an earlier process of this worker) is claimed at Register
    /// and every new one is written there.
    pub(crate) fn new(
        client: Client,
        register: v1::RegisterRequest,
        slot: SessionSlot,
        identity_file: Option<std::path::PathBuf>,
    ) -> Session {
        let identity = identity_file.as_deref().and_then(Identity::load);
        Session {
            client,
            capacity: register.capacity,
            register,
            worker_id: RwLock::new(Arc::from("")),
            identity: Mutex::new(identity),
            identity_file,
            slot,
            heartbeat: Mutex::new(DEFAULT_HEARTBEAT),
            registering: tokio::sync::Mutex::new(()),
            held: Mutex::new(HashMap::new()),
            abandon: CancellationToken::new(),
            fatal: Mutex::new(None),
            contact: Contact::new(),
        }
    }

    pub(crate) fn worker_id(&self) -> Arc<str> {
        self.worker_id.read().expect("worker id lock").clone()
    }

    pub(crate) fn heartbeat_interval(&self) -> Duration {
        *self.heartbeat.lock().expect("heartbeat lock")
    }

    /// Fired when retrying stopped for good: see [`Session::abandon`].
    pub(crate) fn abandoned(&self) -> &CancellationToken {
        &self.abandon
    }

    /// Makes every retry loop give up.
    pub(crate) fn abandon(&self) {
        self.abandon.cancel();
    }

    pub(crate) fn take_fatal(&self) -> Option<AgentError> {
        self.fatal.lock().expect("fatal lock").take()
    }

    fn set_fatal(&self, what: &'static str, status: &Status) {
        tracing::error!(call = what, code = ?status.code(), error = status.message(), "the engine refused this worker");
        let mut fatal = self.fatal.lock().expect("fatal lock");
        fatal.get_or_insert_with(|| AgentError::Refused { code: status.code(), message: status.message().to_string() });
        self.abandon.cancel();
    }

    /// Calls `f` with a client and the current worker id until it succeeds, following the
    /// module's retry rule. `f` builds its request afresh on each try.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: &'static str,
        not_found: NotFound,
        mut f: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Client, Arc<str>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut backoff = Backoff::new();
        loop {
            if self.abandon.is_cancelled() {
                return Err(CallError::Abandoned);
            }
            let id = self.worker_id();
            let sent = crate::clock::instant();
            let status = match f(self.client.clone(), id.clone()).await {
                Ok(value) => {
                    if fence::COUNTED.contains(&what) {
                        self.contact.answered(sent);
                    }
                    if backoff.tries > 0 {
                        tracing::info!(call = what, "the engine answers again");
                    }
                    return Ok(value);
                }
                Err(status) => status,
            };
            // An error the engine marks as heard still proves it heard this worker when the
            // call was sent (its store cannot write, say): the lease clock restarted there, so
            // it restarts here, and the retries come at least once a heartbeat interval.
            let heard = fence::COUNTED.contains(&what) && status.metadata().contains_key(weir_proto::HEARD_HEADER);
            if heard {
                self.contact.answered(sent);
            }
            match (verdict(status.code()), not_found) {
                (Verdict::Refused, _) | (Verdict::UnknownWorker, NotFound::Refused) => {
                    return Err(CallError::Refused(status));
                }
                (Verdict::Fatal, _) => {
                    self.set_fatal(what, &status);
                    return Err(CallError::Abandoned);
                }
                (Verdict::UnknownWorker, NotFound::Reregister) => self.reregister(&id).await?,
                (Verdict::UnknownWorker, NotFound::Probe) => {
                    if !self.probe(&id).await? {
                        return Err(CallError::Refused(status));
                    }
                }
                (Verdict::Retry, _) => {
                    if backoff.tries == 0 {
                        // The transport's causes too: a TLS refusal is only there.
                        let error = weir_proto::tls::causes(&status);
                        let hint = weir_proto::tls::hint("", &error);
                        tracing::warn!(call = what, code = ?status.code(), error, hint, "engine unreachable, retrying");
                    } else {
                        tracing::debug!(call = what, code = ?status.code(), error = status.message(), "engine still unreachable");
                    }
                    let most = if heard { self.heartbeat_interval() } else { BACKOFF_MAX };
                    backoff.wait(most, &self.abandon).await?;
                }
            }
        }
    }

    /// Registers, retrying while the engine is away, and takes the id and lease terms it gets.
    pub(crate) async fn register(&self) -> Result<(), CallError> {
        let previous = self.identity.lock().expect("identity lock").clone();
        let response = self
            .call("register", NotFound::Refused, |mut client, _| {
                let mut register = self.register.clone();
                if let Some(previous) = &previous {
                    register.previous_worker_id.clone_from(&previous.id);
                    register.previous_session.clone_from(&previous.secret);
                }
                let mut request = Request::new(register);
                request.set_timeout(CALL_TIMEOUT);
                async move { client.register(request).await.map(Response::into_inner) }
            })
            .await?;
        let identity = Identity { id: response.worker_id.clone(), secret: response.session.clone() };
        let mut value = MetadataValue::try_from(identity.secret.as_str()).map_err(|_| {
            self.set_fatal("register", &Status::internal("the engine sent a session that is not a header value"));
            CallError::Abandoned
        })?;
        value.set_sensitive(true);
        *self.slot.write().expect("session lock") = Some(value);
        if previous.as_ref() != Some(&identity) {
            if let Some(path) = &self.identity_file
                && let Err(e) = identity.store(path)
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot keep the worker identity; a restarted worker registers as a new one");
            }
            if previous.is_some() {
                tracing::info!("the engine did not know this worker's identity: registered as a new worker");
            }
        }
        *self.identity.lock().expect("identity lock") = Some(identity);
        let interval = wire::from_duration(response.heartbeat_interval.as_ref())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_HEARTBEAT)
            .max(Duration::from_millis(10));
        let lease_timeout = wire::from_duration(response.lease_timeout.as_ref());
        tracing::info!(worker_id = %response.worker_id, heartbeat = ?interval, lease_timeout = ?lease_timeout, "registered with the engine");
        *self.heartbeat.lock().expect("heartbeat lock") = interval;
        self.contact.set_lease_timeout(lease_timeout);
        *self.worker_id.write().expect("worker id lock") = Arc::from(response.worker_id);
        Ok(())
    }

    /// Registers again unless another task already replaced `stale`, then heartbeats at once so
    /// that the engine re-adopts the held attempts before their reports arrive. Boxed: it calls
    /// [`Session::call`], which calls it.
    fn reregister<'a>(&'a self, stale: &'a str) -> Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + 'a>> {
        Box::pin(async move {
            let _one_at_a_time = self.registering.lock().await;
            if *self.worker_id() != *stale {
                return Ok(());
            }
            tracing::info!(worker_id = stale, "the engine does not know this worker any more, registering again");
            self.register().await?;
            let mut client = self.client.clone();
            match client.heartbeat(self.heartbeat_request(&self.worker_id())).await {
                Ok(response) => self.apply_stops(response.into_inner().stop),
                Err(status) => tracing::debug!(code = ?status.code(), "heartbeat after registering failed"),
            }
            Ok(())
        })
    }

    /// After a NOT_FOUND from a call that can also mean "no such thing": heartbeats (registering
    /// again if the id was forgotten) and says whether the id changed, so the call is worth
    /// retrying. Boxed for the same reason as [`Session::reregister`].
    fn probe<'a>(&'a self, id: &'a str) -> Pin<Box<dyn Future<Output = Result<bool, CallError>> + Send + 'a>> {
        Box::pin(async move {
            self.beat().await?;
            Ok(*self.worker_id() != *id)
        })
    }

    fn heartbeat_request(&self, id: &str) -> Request<v1::HeartbeatRequest> {
        let held = self.held.lock().expect("held lock");
        let mut attempts: Vec<&Key> = held.keys().collect();
        attempts.sort();
        let mut request = Request::new(v1::HeartbeatRequest {
            worker_id: id.to_string(),
            attempts: attempts.into_iter().map(Key::to_ref).collect(),
            free: self.capacity.saturating_sub(held.len() as u32),
        });
        request.set_timeout(CALL_TIMEOUT);
        request
    }

    /// One heartbeat, retried until the engine answers; applies the stop orders it returns.
    pub(crate) async fn beat(&self) -> Result<(), CallError> {
        let response = self
            .call("heartbeat", NotFound::Reregister, |mut client, id| {
                let request = self.heartbeat_request(&id);
                async move { client.heartbeat(request).await.map(Response::into_inner) }
            })
            .await?;
        self.apply_stops(response.stop);
        Ok(())
    }

    fn apply_stops(&self, stops: Vec<v1::StopOrder>) {
        let mut held = self.held.lock().expect("held lock");
        for order in stops {
            let Ok(key) = Key::of(order.attempt.as_ref()) else {
                tracing::warn!("ignoring a stop order without a valid attempt");
                continue;
            };
            match held.get_mut(&key) {
                Some(h) => {
                    tracing::info!(attempt = %key, reason = %order.reason, "the engine stops an attempt");
                    h.stop.get_or_insert(StopReason::Engine(order.reason));
                    h.cancel.cancel();
                }
                None => tracing::debug!(attempt = %key, "stop order for an attempt this worker does not hold"),
            }
        }
    }

    /// Long-polls for one assignment.
    /// An assignment comes with the W3C `traceparent` of its attempt's span when the engine
    /// traces runs (`crate::otel`).
    pub(crate) async fn lease(&self, free: u32) -> Result<Option<(v1::Assignment, Option<String>)>, CallError> {
        self.call("lease", NotFound::Reregister, |mut client, id| {
            let mut request = Request::new(v1::LeaseRequest {
                worker_id: id.to_string(),
                free,
                wait: Some(wire::duration(LEASE_WAIT)),
            });
            request.set_timeout(LEASE_WAIT + Duration::from_secs(10));
            async move {
                client.lease(request).await.map(|r| {
                    let traceparent = r.metadata().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string);
                    r.into_inner().assignment.map(|a| (a, traceparent))
                })
            }
        })
        .await
    }

    /// Reports on an attempt until the engine accepts or refuses it.
    pub(crate) async fn report(
        &self,
        key: &Key,
        at: std::time::SystemTime,
        outcome: v1::report_request::Outcome,
    ) -> Result<(), CallError> {
        self.report_and_lease(key, at, outcome, false).await.map(drop)
    }

    /// [`Session::report`]; with `lease_next`, the engine leases the next attempt that fits in
    /// the same call (ReportRequest.lease_next), returned as [`Session::lease`] returns one.
    pub(crate) async fn report_and_lease(
        &self,
        key: &Key,
        at: std::time::SystemTime,
        outcome: v1::report_request::Outcome,
        lease_next: bool,
    ) -> Result<Option<(v1::Assignment, Option<String>)>, CallError> {
        self.call("report", NotFound::Reregister, |mut client, id| {
            let mut request = Request::new(v1::ReportRequest {
                worker_id: id.to_string(),
                attempt: Some(key.to_ref()),
                time: Some(wire::system_time(at)),
                outcome: Some(outcome.clone()),
                lease_next,
            });
            request.set_timeout(CALL_TIMEOUT);
            async move {
                client.report(request).await.map(|r| {
                    let traceparent = r.metadata().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string);
                    r.into_inner().next.map(|a| (a, traceparent))
                })
            }
        })
        .await
    }

    /// How many more steps this worker can take.
    pub(crate) fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.held.lock().expect("held lock").len() as u32)
    }

    /// Records a newly leased attempt; `None` if it is already held (a duplicate lease).
    pub(crate) fn hold(&self, key: &Key) -> Option<CancellationToken> {
        let mut held = self.held.lock().expect("held lock");
        if held.contains_key(key) {
            return None;
        }
        let cancel = CancellationToken::new();
        held.insert(key.clone(), Held { cancel: cancel.clone(), stop: None });
        Some(cancel)
    }

    pub(crate) fn release(&self, key: &Key) {
        self.held.lock().expect("held lock").remove(key);
    }

    /// Why the attempt was stopped, if it was.
    pub(crate) fn stop_reason(&self, key: &Key) -> Option<StopReason> {
        self.held.lock().expect("held lock").get(key).and_then(|h| h.stop.clone())
    }

    /// Stops every held attempt because the worker is shutting down.
    pub(crate) fn stop_all(&self) {
        for h in self.held.lock().expect("held lock").values_mut() {
            h.stop.get_or_insert(StopReason::Shutdown);
            h.cancel.cancel();
        }
    }

    /// Stops every held attempt not stopped yet because the engine is out of reach; returns how
    /// many.
    pub(crate) fn fence(&self) -> usize {
        let mut stopped = 0;
        for (key, h) in self.held.lock().expect("held lock").iter_mut().filter(|(_, h)| h.stop.is_none()) {
            tracing::warn!(attempt = %key, "stopping the attempt: no answer from the engine (self-fencing)");
            h.stop = Some(StopReason::Fenced);
            h.cancel.cancel();
            stopped += 1;
        }
        stopped
    }

    pub(crate) fn contact(&self) -> &Contact {
        &self.contact
    }

    pub(crate) fn held_count(&self) -> usize {
        self.held.lock().expect("held lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn status_codes_sort_into_verdicts() {
        let check = |code, want: &str| {
            let got = match verdict(code) {
                Verdict::Retry => "retry",
                Verdict::UnknownWorker => "register",
                Verdict::Refused => "refused",
                Verdict::Fatal => "fatal",
            };
            assert_eq!(got, want, "{code:?}");
        };
        check(Code::Unavailable, "retry");
        check(Code::Unknown, "retry");
        check(Code::Internal, "retry");
        check(Code::DeadlineExceeded, "retry");
        check(Code::Cancelled, "retry");
        check(Code::NotFound, "register");
        check(Code::FailedPrecondition, "refused");
        check(Code::InvalidArgument, "refused");
        check(Code::Unauthenticated, "fatal");
        check(Code::PermissionDenied, "fatal");
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_five_seconds_with_jitter() {
        let never = CancellationToken::new();
        let mut b = Backoff::new();
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let ceiling = b.next;
            let start = tokio::time::Instant::now();
            b.wait(BACKOFF_MAX, &never).await.unwrap();
            let waited = start.elapsed();
            assert!(waited >= ceiling / 2 && waited <= ceiling, "{waited:?} vs {ceiling:?}");
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let gone = CancellationToken::new();
        gone.cancel();
        assert!(matches!(b.wait(BACKOFF_MAX, &gone).await, Err(CallError::Abandoned)));
    }

    /// A session whose calls the test answers itself (the client is never used: it points at
    /// a port nobody listens on and connects only when called).
    fn session() -> Session {
        let auth = Auth::new(None).unwrap();
        let slot = auth.session_slot();
        let settings = weir_proto::direct::Settings {
            connect_timeout: Duration::from_secs(1),
            keep_alive_interval: None,
            keep_alive_timeout: Duration::from_secs(1),
        };
        let direct = weir_proto::direct::Direct::new("http://127.0.0.1:9", settings, None).unwrap();
        let client = WeirWorkerClient::with_interceptor(Transport::from(direct), auth);
        Session::new(client, v1::RegisterRequest::default(), slot, None)
    }

    /// `what` failing with UNAVAILABLE `failures` times, then answered: for each try, its
    /// instant and the contact the session counted when it was made.
    async fn tries(s: &Session, what: &'static str, heard: bool, failures: usize) -> Vec<(Instant, Instant)> {
        let mut tries = Vec::new();
        s.call(what, NotFound::Reregister, |_, _| {
            tries.push((Instant::now(), s.contact.last()));
            let n = tries.len();
            async move {
                if n > failures {
                    return Ok(());
                }
                let mut status = Status::unavailable("the store cannot write");
                if heard {
                    status.metadata_mut().insert(weir_proto::HEARD_HEADER, MetadataValue::from_static("1"));
                }
                Err(status)
            }
        })
        .await
        .unwrap();
        tries
    }

    fn gaps(tries: &[(Instant, Instant)]) -> Vec<Duration> {
        tries.windows(2).map(|w| w[1].0 - w[0].0).collect()
    }

    /// An error the engine marks as heard (its store could not write, say, after it counted
    /// the call) counts as contact as of its send time, and its retries come at least once a
    /// heartbeat interval, so the worker keeps the engine hearing it instead of backing off to
    /// 5 s and fencing its steps. An unmarked error (an engine away) counts for nothing and
    /// backs off as before; neither does a marked error of a call that is no sign of life.
    #[tokio::test(start_paused = true)]
    async fn an_error_the_engine_heard_counts_as_contact_and_is_retried_each_heartbeat() {
        let s = session();
        *s.heartbeat.lock().unwrap() = Duration::from_secs(1);
        let heard = tries(&s, "heartbeat", true, 7).await;
        for w in heard.windows(2) {
            assert_eq!(w[1].1, w[0].0, "each failed try counted as contact by the next");
        }
        assert!(gaps(&heard).iter().all(|g| *g <= Duration::from_secs(1)), "{:?}", gaps(&heard));

        let s = session();
        *s.heartbeat.lock().unwrap() = Duration::from_secs(1);
        let away = tries(&s, "heartbeat", false, 7).await;
        assert!(away.iter().all(|t| t.1 == away[0].1), "no failed try counts: {away:?}");
        assert!(gaps(&away).iter().any(|g| *g > Duration::from_secs(2)), "{:?}", gaps(&away));

        let s = session();
        tokio::time::advance(Duration::from_secs(1)).await;
        let other = tries(&s, "upload logs", true, 2).await;
        assert!(other.iter().all(|t| t.1 == other[0].1), "not a sign of life: {other:?}");
    }
}
