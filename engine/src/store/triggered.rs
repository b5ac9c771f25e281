//! The `triggered` tree: what each `on:` trigger has fired for, so it fires once per key (a
//! file's digest, an upstream run, a webhook's idempotency key) even after the run it started
//! was deleted by retention. Written in the batch that creates the run; read by the engine's
//! triggers before they start one. It decides nothing about when a trigger fires.
//!
//! Key: `pipeline · trigger · key` (`·` the NUL separator; none of the three holds a NUL).

use serde::{Deserialize, Serialize};

use super::append::Batch;
use super::db::{Store, TreeId};
use super::envelope::encode;
use super::{Error, keys};
use weir_core::run::Millis;

/// What a trigger fired for one key: the run it started and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    pub run: String,
    pub at: Millis,
}

fn key(pipeline: &str, trigger: &str, fired_for: &str) -> Result<Vec<u8>, Error> {
    if trigger.as_bytes().contains(&0) || fired_for.as_bytes().contains(&0) {
        return Err(Error::BadRunId(format!("{trigger}/{fired_for}")));
    }
    let mut k = keys::prefix(pipeline)?;
    k.extend_from_slice(trigger.as_bytes());
    k.push(0);
    k.extend_from_slice(fired_for.as_bytes());
    Ok(k)
}

impl Batch {
    /// Records that `trigger` of `pipeline` fired for `fired_for`.
    pub fn put_triggered(
        &mut self,
        pipeline: &str,
        trigger: &str,
        fired_for: &str,
        f: &Fired,
    ) -> Result<&mut Batch, Error> {
        let value = encode(TreeId::Triggered.name(), f)?;
        self.put_raw(TreeId::Triggered, key(pipeline, trigger, fired_for)?, value);
        Ok(self)
    }
}

impl Store {
    /// What `trigger` of `pipeline` fired for `fired_for`, if it did.
    pub fn triggered(&self, pipeline: &str, trigger: &str, fired_for: &str) -> Result<Option<Fired>, Error> {
        self.get(TreeId::Triggered, &key(pipeline, trigger, fired_for)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fired_key_reads_back_after_a_reopen_and_keys_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let mut b = Batch::new();
            b.put_triggered("p", "files", "d1", &Fired { run: "r1".into(), at: Millis(5) }).unwrap();
            s.write_batch(b).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.triggered("p", "files", "d1").unwrap(), Some(Fired { run: "r1".into(), at: Millis(5) }));
        assert_eq!(s.triggered("p", "files", "d2").unwrap(), None);
        assert_eq!(s.triggered("p", "files-1", "d1").unwrap(), None);
        assert_eq!(s.triggered("pp", "files", "d1").unwrap(), None);
    }
}
