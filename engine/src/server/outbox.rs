//! The delivery task: its own tokio task that sends what the outbox holds. It wakes when a
//! notification is queued or the earliest retry is due (on the engine's [`Clock`], so paused
//! time moves it in tests), flushes the store before sending anything (so nothing is sent
//! whose cause could still be lost in a crash), POSTs each due delivery with its id, a fresh
//! timestamp and, when its entry names a secret, the HMAC-SHA256 signature, and then removes it
//! after a 2xx or records the failure and the next attempt's time (1 s, 2 s, 4 s … capped);
//! after the last attempt it stays as a dead letter, and only the newest `keep_dead` dead
//! letters are kept (`--notify-keep-dead`; the oldest are forgotten). Delivery is at least once: a crash after
//! the receiver answered and before the removal is flushed sends it again, with the same id.
//!
//! [`Clock`]: crate::clock::Clock

use std::sync::Arc;
use std::time::Duration;

use crate::notify::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, Sent, TIMESTAMP_HEADER, post, sign};
use crate::store::Delivery;

use super::core::Engine;
use super::notify::receiver;

/// The longest the task sleeps with nothing due: a safety net for a wake-up it missed.
const IDLE: Duration = Duration::from_secs(2);

/// Runs until aborted.
pub(crate) async fn run(engine: Arc<Engine>) {
    loop {
        let next = deliver_due(&engine).await;
        let now = engine.clock.now();
        let wait = next.map_or(IDLE, |at| Duration::from_millis(at.0.saturating_sub(now.0)).min(IDLE));
        tokio::select! {
            _ = engine.outbox_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends every due delivery once; returns when the earliest pending one is next due.
async fn deliver_due(engine: &Arc<Engine>) -> Option<weir_core::run::Millis> {
    let e = engine.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let all = e.store.deliveries()?;
        // Nothing goes out before its cause is durable (sled reads see unflushed writes).
        e.store.flush()?;
        Ok::<_, crate::store::Error>(all)
    })
    .await;
    let mut pending: Vec<Delivery> = match listed {
        Ok(Ok(all)) => all.into_iter().filter(|d| !d.dead).collect(),
        Ok(Err(e)) => {
            if let Some(suppressed) = super::ratelog::admit(&format!("outbox {e}")) {
                tracing::error!(error = %e, suppressed, "cannot read the notification outbox");
            }
            return None; // try again after the idle wait
        }
        Err(_) => return None,
    };
    pending.sort_by_key(|a| (a.next_at, a.created_at));
    let mut next: Option<weir_core::run::Millis> = None;
    for d in pending {
        let now = engine.clock.now();
        if d.next_at > now {
            next = Some(next.map_or(d.next_at, |n| n.min(d.next_at)));
            continue;
        }
        if let Some(at) = attempt(engine, d).await {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    next
}

/// One attempt at `d`; the time of its next attempt when it stays pending.
async fn attempt(engine: &Arc<Engine>, mut d: Delivery) -> Option<weir_core::run::Millis> {
    let config = &engine.notify;
    let timestamp = engine.clock.now().0 / 1000;
    let mut headers = vec![
        (DELIVERY_HEADER, d.id.clone()),
        (EVENT_HEADER, d.event.to_string()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
    ];
    let sent = match d.secret.as_deref().map(|name| (name, config.secrets.get(name))) {
        Some((name, None)) => Sent::Failed(format!(
            "secret `{name}` is not in the server's --notify-secrets file: add it and restart the server"
        )),
        Some((_, Some(secret))) => {
            headers.push((SIGNATURE_HEADER, sign(secret, timestamp, d.body.as_bytes())));
            post(d.target.url(), &headers, d.body.clone(), config.timeout).await
        }
        None => post(d.target.url(), &headers, d.body.clone(), config.timeout).await,
    };
    let to = receiver(d.target.url());
    let error = match sent {
        Sent::Status(s) if (200..300).contains(&s) => None,
        Sent::Status(s) => Some(format!("{to} answered {s}")),
        Sent::Failed(e) => Some(e),
    };
    d.attempts = d.attempts.saturating_add(1);
    let now = engine.clock.now();
    let next = match &error {
        None => None,
        Some(_) if d.attempts >= config.attempts => {
            d.dead = true;
            None
        }
        Some(_) => {
            Some(weir_core::run::Millis(now.0.saturating_add(config.backoff_after(d.attempts).as_millis() as u64)))
        }
    };
    let (id, event, attempts, dead) = (d.id.clone(), d.event, d.attempts, d.dead);
    match &error {
        None => tracing::info!(delivery = id, %event, receiver = to, attempts, "notification delivered"),
        Some(e) if dead => {
            tracing::warn!(delivery = id, %event, receiver = to, attempts, error = e, "notification dead-lettered")
        }
        Some(e) => {
            tracing::info!(delivery = id, %event, receiver = to, attempts, error = e, "notification not delivered; will retry")
        }
    }
    d.last_error = error.clone();
    if let Some(at) = next {
        d.next_at = at;
    }
    let e = engine.clone();
    let keep = config.keep_dead;
    let written = tokio::task::spawn_blocking(move || match error {
        None => e.store.remove_delivery(&d.id),
        Some(_) => {
            e.store.put_delivery(&d)?;
            if d.dead {
                let trimmed = e.store.trim_dead(keep)?;
                if trimmed > 0 {
                    tracing::info!(trimmed, keep, "oldest dead letters forgotten (--notify-keep-dead)");
                }
            }
            Ok(())
        }
    })
    .await;
    match written {
        Ok(Ok(())) => next,
        Ok(Err(e)) => {
            tracing::error!(delivery = id, error = %e, "cannot record a notification attempt; it will be attempted again");
            // Not at once: a store that cannot write would have the receiver hammered.
            Some(weir_core::run::Millis(now.0.saturating_add(IDLE.as_millis() as u64)))
        }
        Err(_) => None,
    }
}
