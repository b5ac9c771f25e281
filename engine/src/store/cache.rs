//! The `cache` tree: one entry per (pipeline, step, cache key), the newest successful attempt
//! with that key. Key: `pipeline · NUL · step · NUL · key hex`, so every entry of one step is a
//! prefix scan (for `weir cache explain`'s closest entry) and a lookup is one get.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::append::Batch;
use super::db::{Store, TreeId};
use super::envelope::{decode, encode};
use super::records::CacheKey;
use super::{Error, keys};
use weir_core::run::Millis;
use weir_data::artifact::Manifest;

/// A successful attempt that a later ready attempt with the same key may reuse.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub key: CacheKey,
    /// The run and instance whose attempt made it.
    pub run: String,
    pub instance: u32,
    pub name: String,
    pub outputs: Manifest,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    pub created_at: Millis,
}

fn step_prefix(pipeline: &str, step: &str) -> Result<Vec<u8>, Error> {
    let mut k = keys::prefix(pipeline)?;
    k.extend_from_slice(&keys::prefix(step)?);
    Ok(k)
}

fn entry_key(pipeline: &str, step: &str, key: &str) -> Result<Vec<u8>, Error> {
    let mut k = step_prefix(pipeline, step)?;
    k.extend_from_slice(key.as_bytes());
    Ok(k)
}

impl Batch {
    /// Records `entry` for `pipeline`'s `step`, replacing an older one with the same key.
    pub fn put_cache_entry(&mut self, pipeline: &str, step: &str, entry: &CacheEntry) -> Result<&mut Batch, Error> {
        let v = encode(TreeId::Cache.name(), entry)?;
        self.put_raw(TreeId::Cache, entry_key(pipeline, step, &entry.key.key)?, v);
        Ok(self)
    }
}

impl Store {
    /// The entry of `pipeline`'s `step` with cache key `key`.
    pub fn cache_entry(&self, pipeline: &str, step: &str, key: &str) -> Result<Option<CacheEntry>, Error> {
        self.get(TreeId::Cache, &entry_key(pipeline, step, key)?)
    }

    /// Every entry of `pipeline`'s `step` (at most `limit`), in key order.
    pub fn cache_entries(&self, pipeline: &str, step: &str, limit: usize) -> Result<Vec<CacheEntry>, Error> {
        let prefix = step_prefix(pipeline, step)?;
        let tree = self.tree(TreeId::Cache)?;
        let mut out = Vec::new();
        for kv in tree.scan_prefix(&prefix).take(limit) {
            let (k, v) = kv?;
            out.push(decode(TreeId::Cache.name(), &k, &v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, run: &str) -> CacheEntry {
        CacheEntry {
            key: CacheKey { key: key.into(), parts: BTreeMap::from([("runtime".into(), "process".into())]) },
            run: run.into(),
            instance: 0,
            name: "train".into(),
            outputs: Manifest::default(),
            metrics: BTreeMap::from([("rmse".into(), 0.25)]),
            created_at: Millis(5),
        }
    }

    #[test]
    fn entries_are_found_by_key_and_listed_per_step() {
        let (_dir, store) = super::super::testkit::store();
        let mut b = Batch::new();
        b.put_cache_entry("p", "train", &entry("aa", "r1")).unwrap();
        b.put_cache_entry("p", "train", &entry("bb", "r2")).unwrap();
        b.put_cache_entry("p", "train2", &entry("cc", "r3")).unwrap();
        b.put_cache_entry("p", "train", &entry("aa", "r4")).unwrap(); // newer, same key
        store.write_batch(b).unwrap();
        assert_eq!(store.cache_entry("p", "train", "aa").unwrap().unwrap().run, "r4");
        assert_eq!(store.cache_entry("p", "train", "cc").unwrap(), None);
        let runs: Vec<String> = store.cache_entries("p", "train", 10).unwrap().into_iter().map(|e| e.run).collect();
        assert_eq!(runs, ["r4", "r2"], "one step's entries, not its neighbour's");
    }
}
