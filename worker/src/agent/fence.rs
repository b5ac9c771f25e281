//! Self-fencing: a worker that has not heard from the engine for nearly a lease timeout stops
//! its steps itself, before the engine can give them to another worker.
//!
//! The engine declares a worker lost once it has heard nothing from it for `lease_timeout`
//! (counting Register, Heartbeat, Report and the start of a Lease poll: `worker_seen` in the
//! engine's `dispatch.rs`), and then hands its attempts out again. The worker cannot know when
//! the engine last heard from it, but it knows a lower bound: the send time of the last of those
//! calls that got an answer ([`Contact::answered`], fed by `Session::call`): a success, or an
//! error the engine marks as heard (`weir_proto::HEARD_HEADER`: it counted the call, then
//! failed to do what was asked, e.g. with its store unwritable on a full disk). So a worker whose
//! calls have gone unanswered for [`Window::fence_after`] since that instant stops every attempt
//! it holds ([`watch`]): SIGTERM, then SIGKILL after [`Window::kill_grace`], and never reports
//! them as succeeded (they report Lost, which the engine refuses if it already moved on). The
//! arithmetic is [`window`]: the kill grace plus a margin fit inside the lease timeout, so the
//! steps are gone before the engine's deadline even when they ignore SIGTERM.
//!
//! This module decides when, not how: stopping goes through the attempts' cancel tokens
//! (`Session::fence`), and it never talks to the engine.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::session::Session;

/// The calls whose answer proves the engine heard this worker when the call was sent.
pub(crate) const COUNTED: &[&str] = &["register", "heartbeat", "lease", "report"];

/// The timing of self-fencing for one lease timeout; see [`window`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// Silence (since the send time of the last answered call) after which attempts are stopped.
    pub fence_after: Duration,
    /// The longest SIGTERM-to-SIGKILL grace a step gets, so that a stop fits in the window.
    pub kill_grace: Duration,
}

/// The fencing window for `lease_timeout` and the worker's `--grace`: the kill grace is capped
/// at a third of the lease timeout, a margin of a tenth of it (between 100 ms and 5 s) covers
/// scheduling delays and the kill itself, and the rest is how long the worker waits for the
/// engine. With the defaults (30 s lease, 10 s grace) a worker fences after 17 s of silence
/// and its steps are gone by 27 s at the latest, 3 s before the engine may re-queue them.
pub(crate) fn window(lease_timeout: Duration, grace: Duration) -> Window {
    let margin = (lease_timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let kill_grace = grace.min(lease_timeout / 3);
    Window { fence_after: lease_timeout.saturating_sub(kill_grace + margin), kill_grace }
}

/// When this worker last provably reached the engine, and the lease timeout it was given.
pub(crate) struct Contact {
    inner: Mutex<(Instant, Option<Duration>)>,
}

impl Contact {
    pub(crate) fn new() -> Contact {
        Contact { inner: Mutex::new((crate::clock::instant(), None)) }
    }

    /// A call sent at `sent` was answered: the engine heard this worker at `sent` or later.
    pub(crate) fn answered(&self, sent: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0 = inner.0.max(sent);
    }

    /// The send time of the last answered call.
    pub(crate) fn last(&self) -> Instant {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// The engine's lease timeout, from the last RegisterResponse that named one.
    pub(crate) fn lease_timeout(&self) -> Option<Duration> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    pub(crate) fn set_lease_timeout(&self, lease_timeout: Option<Duration>) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1 = lease_timeout.filter(|d| !d.is_zero());
    }
}

/// Watches the contact with the engine until `stop` fires, stopping every held attempt while the
/// worker has been silent past the window (see the module docs).
pub(crate) async fn watch(session: Arc<Session>, grace: Duration, stop: CancellationToken) {
    // How often a worker past its window looks for attempts to stop (none can be added without
    // an answer from the engine, which moves the window; this is belt and braces).
    const RECHECK: Duration = Duration::from_millis(100);
    loop {
        let contact = session.contact();
        let (last, lease_timeout) = (contact.last(), contact.lease_timeout());
        let wake = match lease_timeout {
            None => crate::clock::instant() + Duration::from_secs(1),
            Some(lease_timeout) => {
                let w = window(lease_timeout, grace);
                let deadline = last + w.fence_after;
                if crate::clock::instant() >= deadline {
                    let stopped = session.fence();
                    if stopped > 0 {
                        tracing::warn!(
                            stopped,
                            silent = ?last.elapsed(),
                            lease_timeout = ?lease_timeout,
                            "no answer from the engine for most of the lease timeout: stopping every step (self-fencing)"
                        );
                    }
                    crate::clock::instant() + RECHECK
                } else {
                    deadline
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_fits_the_kill_in_the_lease_timeout() {
        let check = |lease_ms: u64, grace_ms: u64, fence_ms: u64, kill_ms: u64| {
            let w = window(Duration::from_millis(lease_ms), Duration::from_millis(grace_ms));
            assert_eq!(
                (w.fence_after.as_millis() as u64, w.kill_grace.as_millis() as u64),
                (fence_ms, kill_ms),
                "lease {lease_ms} ms, grace {grace_ms} ms"
            );
            assert!(w.fence_after + w.kill_grace < Duration::from_millis(lease_ms) || lease_ms == 0);
        };
        check(30_000, 10_000, 17_000, 10_000); // the defaults
        check(30_000, 60_000, 17_000, 10_000); // a long --grace is capped
        check(300_000, 10_000, 285_000, 10_000); // the margin is at most 5 s
        check(4_000, 1_000, 2_600, 1_000);
        check(1_500, 2_000, 850, 500); // weir-tests' Cluster
        check(500, 0, 400, 0); // the margin is at least 100 ms
        check(0, 1_000, 0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn contact_keeps_the_latest_send_time() {
        let c = Contact::new();
        let t0 = c.last();
        tokio::time::advance(Duration::from_secs(3)).await;
        let sent = crate::clock::instant();
        tokio::time::advance(Duration::from_secs(1)).await;
        c.answered(sent);
        // A slow answer to an older call does not move it back.
        c.answered(t0);
        assert_eq!(c.last(), sent);
        assert_eq!(c.lease_timeout(), None);
        c.set_lease_timeout(Some(Duration::ZERO));
        assert_eq!(c.lease_timeout(), None, "an engine naming no lease timeout is not fenced against");
        c.set_lease_timeout(Some(Duration::from_secs(30)));
        assert_eq!(c.lease_timeout(), Some(Duration::from_secs(30)));
    }
}
