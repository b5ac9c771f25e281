//! Worker identities: one [`WorkerRecord`] per worker id the engine ever handed out, holding a
//! hash of the session secret that came with it (never the secret). A worker that registers
//! again, after an engine restart or a restart of its own, proves it is the same worker with
//! that secret and keeps its id, so the attempts leased to it stay its own and no other
//! worker can claim them. This module only stores the records; the engine decides.

use serde::{Deserialize, Serialize};

use super::Error;
use super::db::{Store, TreeId};
use super::envelope::decode;
use weir_core::run::Millis;

/// `workers`: one worker identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: String,
    /// The name the worker gave (its host, usually), for people.
    pub name: String,
    /// Lowercase hex BLAKE3 of the session secret.
    pub session_hash: String,
    pub registered_at: Millis,
}

impl Store {
    /// Stores a worker identity, flushed: the secret is handed out only after this returns.
    pub fn put_worker(&self, record: &WorkerRecord) -> Result<(), Error> {
        self.put(TreeId::Workers, record.id.as_bytes().to_vec(), record)
    }

    /// One worker identity.
    pub fn worker(&self, id: &str) -> Result<Option<WorkerRecord>, Error> {
        self.get(TreeId::Workers, id.as_bytes())
    }

    /// Every stored worker identity; records that do not decode are skipped with a warning
    /// (such a worker registers anew and loses only its claim on what it held).
    pub fn workers(&self) -> Result<Vec<WorkerRecord>, Error> {
        let mut out = Vec::new();
        for kv in self.tree(TreeId::Workers)?.iter() {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read further worker identities; those workers register anew");
                    break;
                }
            };
            match decode(TreeId::Workers.name(), &k, &v) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(error = %e, "skipping a worker identity that does not decode"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let r = WorkerRecord {
            id: "host-1a".into(),
            name: "host".into(),
            session_hash: "ab".repeat(32),
            registered_at: Millis(7),
        };
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_worker(&r).unwrap();
        }
        let s = crate::store::testkit::reopen(dir.path());
        assert_eq!(s.worker("host-1a").unwrap(), Some(r.clone()));
        assert_eq!(s.workers().unwrap(), vec![r]);
        assert_eq!(s.worker("nope").unwrap(), None);
    }
}
