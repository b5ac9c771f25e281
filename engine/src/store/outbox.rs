//! The notification outbox: one [`Delivery`] per notification not yet delivered, keyed by its
//! delivery id. A delivery is written in the same [`Batch`](super::Batch) as the event that
//! causes it, so a crash never loses one nor keeps one without its cause; the delivery task
//! rewrites it after each failed attempt and removes it after a 2xx; after the last attempt it
//! stays, marked dead, until `weir notifications retry` re-queues it. This module only stores:
//! what to send, when and how is the engine's (`server/notify.rs`, `server/outbox.rs`).

use serde::{Deserialize, Serialize};

use super::Error;
use super::append::Batch;
use super::db::{Store, TreeId};
use super::envelope::{decode, encode};
use weir_core::run::Millis;
use weir_core::spec::{NotifyOn, NotifyTarget};

/// `outbox`: one notification on its way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The delivery id: sent with every attempt (`X-Weir-Delivery`), so a receiver that gets
    /// one twice can tell.
    pub id: String,
    pub event: NotifyOn,
    pub target: NotifyTarget,
    /// The name of the secret that signs it (resolved by the engine at each attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub pipeline: String,
    pub run_id: String,
    /// The exact body every attempt sends.
    pub body: String,
    pub created_at: Millis,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_at: Millis,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// No attempt is left: it waits for `weir notifications retry`.
    #[serde(default)]
    pub dead: bool,
}

impl Batch {
    /// Queues `delivery` with the batch's other writes.
    pub fn put_delivery(&mut self, delivery: &Delivery) -> Result<&mut Batch, Error> {
        let v = encode(TreeId::Outbox.name(), delivery)?;
        self.put_raw(TreeId::Outbox, delivery.id.as_bytes().to_vec(), v);
        Ok(self)
    }
}

impl Store {
    /// Rewrites one delivery (after an attempt, or re-queued), flushed.
    pub fn put_delivery(&self, delivery: &Delivery) -> Result<(), Error> {
        self.put(TreeId::Outbox, delivery.id.as_bytes().to_vec(), delivery)
    }

    pub fn delivery(&self, id: &str) -> Result<Option<Delivery>, Error> {
        self.get(TreeId::Outbox, id.as_bytes())
    }

    /// Forgets a delivered notification, flushed.
    pub fn remove_delivery(&self, id: &str) -> Result<(), Error> {
        self.writing("removing a delivery", || {
            self.tree(TreeId::Outbox)?.remove(id.as_bytes())?;
            Ok(())
        })?;
        self.flush()
    }

    /// Forgets the oldest dead letters (by creation, then id) beyond the newest `keep`, flushed;
    /// returns how many went. Pending deliveries are never touched.
    pub fn trim_dead(&self, keep: usize) -> Result<usize, Error> {
        let mut dead: Vec<Delivery> = self.deliveries()?.into_iter().filter(|d| d.dead).collect();
        if dead.len() <= keep {
            return Ok(0);
        }
        dead.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let excess = dead.len() - keep;
        self.writing("trimming dead letters", || {
            let tree = self.tree(TreeId::Outbox)?;
            for d in &dead[..excess] {
                tree.remove(d.id.as_bytes())?;
            }
            Ok(())
        })?;
        self.flush()?;
        Ok(excess)
    }

    /// Every delivery in the outbox, pending and dead; one that does not decode is skipped
    /// with a warning (it is kept as evidence for `weir store check`).
    pub fn deliveries(&self) -> Result<Vec<Delivery>, Error> {
        self.reading("listing deliveries", || {
            let mut out = Vec::new();
            for kv in self.tree(TreeId::Outbox)?.iter() {
                let (k, v) = kv?;
                match decode(TreeId::Outbox.name(), &k, &v) {
                    Ok(d) => out.push(d),
                    Err(e) => tracing::warn!(error = %e, "skipping a notification that does not decode"),
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testkit;

    fn delivery(id: &str) -> Delivery {
        Delivery {
            id: id.to_string(),
            event: NotifyOn::RunFailed,
            target: NotifyTarget::Webhook("http://127.0.0.1:9/h".into()),
            secret: Some("hooks".into()),
            pipeline: "p".into(),
            run_id: "r-1".into(),
            body: "{}".into(),
            created_at: Millis(1),
            attempts: 0,
            next_at: Millis(1),
            last_error: None,
            dead: false,
        }
    }

    #[test]
    fn deliveries_land_with_a_batch_survive_a_reopen_and_go_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let mut b = Batch::new();
            b.put_delivery(&delivery("a")).unwrap().put_delivery(&delivery("b")).unwrap();
            s.write_batch(b).unwrap();
            s.put_delivery(&Delivery { dead: true, attempts: 5, ..delivery("b") }).unwrap();
            s.tree(TreeId::Outbox).unwrap().insert("c", &b"junk"[..]).unwrap();
        }
        let s = testkit::reopen(dir.path());
        let ids: Vec<(String, bool)> = s.deliveries().unwrap().into_iter().map(|d| (d.id, d.dead)).collect();
        assert_eq!(ids, [("a".to_string(), false), ("b".to_string(), true)]);
        s.remove_delivery("a").unwrap();
        assert_eq!(s.delivery("a").unwrap(), None);
        assert_eq!(s.delivery("b").unwrap().unwrap().attempts, 5);
    }

    #[test]
    fn trimming_keeps_the_newest_dead_letters_and_every_pending_delivery() {
        let (_dir, s) = testkit::store();
        let mut b = Batch::new();
        for (id, at, dead) in [("d1", 1, true), ("d2", 2, true), ("p", 0, false), ("d3", 3, true), ("d0", 0, true)] {
            b.put_delivery(&Delivery { created_at: Millis(at), dead, ..delivery(id) }).unwrap();
        }
        s.write_batch(b).unwrap();
        assert_eq!(s.trim_dead(5).unwrap(), 0);
        assert_eq!(s.trim_dead(2).unwrap(), 2);
        let left: Vec<String> = s.deliveries().unwrap().into_iter().map(|d| d.id).collect();
        assert_eq!(left, ["d2", "d3", "p"]);
        assert_eq!(s.trim_dead(0).unwrap(), 2);
        assert_eq!(s.deliveries().unwrap().into_iter().map(|d| d.id).collect::<Vec<_>>(), ["p"]);
    }
}
