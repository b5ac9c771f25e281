//! The lineage index: which step instance made each artifact (`producers`) and which took it
//! as an input (`consumers`), keyed by the artifact's digest so both questions are one prefix
//! scan. Written by the engine inside the batch that records an instance's success; read by
//! the lineage walk (`server/tracking.rs`). It decides nothing about runs.
//!
//! | tree        | key                                        | value        |
//! |-------------|--------------------------------------------|--------------|
//! | `producers` | digest (32 bytes) · run · instance u32     | [`Produced`] |
//! | `consumers` | input digest (32 bytes) · run · instance u32 | [`Consumed`] |
//!
//! (`·` after the run is the NUL separator; the digest is fixed-length, so no separator is
//! needed after it.) Identical bytes made by several instances have one entry each, so the
//! index keeps every run that made them; the walk picks among them.

use serde::{Deserialize, Serialize};

use super::append::Batch;
use super::db::{Store, TreeId};
use super::envelope::{decode, encode};
use super::{Error, keys};
use weir_core::run::{InstanceId, Millis};
use weir_data::artifact::Digest;

/// `producers`: one output file of one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Produced {
    /// Its path in the instance's manifest (the first, when the same bytes sit at several).
    pub path: String,
    pub size: u64,
    /// When the instance succeeded (or was found cached).
    pub at: Millis,
    /// The instance's name (`train[lr=0.1]`).
    pub step: String,
    /// The instances of the same run whose outputs were its inputs, in instance order.
    pub needs: Vec<u32>,
}

/// `consumers`: one input file of one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumed {
    /// Its path in the manifest of the instance that made it.
    pub path: String,
    /// The consuming instance's name.
    pub step: String,
    /// The instance of the same run that made it.
    pub from: u32,
    pub at: Millis,
}

/// One index entry: the run and instance it is about, and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indexed<T> {
    pub run: String,
    pub instance: InstanceId,
    pub value: T,
}

fn key(digest: &Digest, run: &str, i: InstanceId) -> Result<Vec<u8>, Error> {
    let mut k = digest.as_bytes().to_vec();
    k.extend_from_slice(&keys::instance(run, i)?);
    Ok(k)
}

/// `(run, instance)` of a key, when it has the layout above.
pub(super) fn split(k: &[u8]) -> Option<(String, InstanceId)> {
    let rest = k.get(32..)?;
    let cut = rest.len().checked_sub(5)?;
    if rest[cut] != 0 {
        return None;
    }
    let run = std::str::from_utf8(&rest[..cut]).ok()?.to_string();
    Some((run, InstanceId(keys::tail_u32(k, 0)?)))
}

impl Batch {
    /// Records that instance `i` of `run` made `digest`.
    pub fn put_produced(
        &mut self,
        digest: &Digest,
        run: &str,
        i: InstanceId,
        p: &Produced,
    ) -> Result<&mut Batch, Error> {
        let v = encode(TreeId::Producers.name(), p)?;
        self.put_raw(TreeId::Producers, key(digest, run, i)?, v);
        Ok(self)
    }

    /// Records that instance `i` of `run` took `digest` as an input.
    pub fn put_consumed(
        &mut self,
        digest: &Digest,
        run: &str,
        i: InstanceId,
        c: &Consumed,
    ) -> Result<&mut Batch, Error> {
        let v = encode(TreeId::Consumers.name(), c)?;
        self.put_raw(TreeId::Consumers, key(digest, run, i)?, v);
        Ok(self)
    }
}

impl Store {
    fn scan_digest<T: serde::de::DeserializeOwned>(
        &self,
        t: TreeId,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<Indexed<T>>, Error> {
        let mut out = Vec::new();
        for kv in self.tree(t)?.scan_prefix(digest.as_bytes()).take(limit) {
            let (k, v) = kv?;
            let Some((run, instance)) = split(&k) else {
                return Err(Error::Corrupt {
                    tree: t.name(),
                    key: keys::show(&k),
                    reason: "key is not digest · run · instance".into(),
                });
            };
            out.push(Indexed { run, instance, value: decode(t.name(), &k, &v)? });
        }
        Ok(out)
    }

    /// Up to `limit` instances that made `digest`, by run id and instance.
    pub fn producers(&self, digest: &Digest, limit: usize) -> Result<Vec<Indexed<Produced>>, Error> {
        self.scan_digest(TreeId::Producers, digest, limit)
    }

    /// The entry for instance `i` of `run` making `digest`, if it did.
    pub fn produced(&self, digest: &Digest, run: &str, i: InstanceId) -> Result<Option<Produced>, Error> {
        self.get(TreeId::Producers, &key(digest, run, i)?)
    }

    /// The entry for instance `i` of `run` taking `digest` as an input, if it did.
    pub fn consumed(&self, digest: &Digest, run: &str, i: InstanceId) -> Result<Option<Consumed>, Error> {
        self.get(TreeId::Consumers, &key(digest, run, i)?)
    }

    /// Up to `limit` instances that took `digest` as an input, by run id and instance.
    pub fn consumers(&self, digest: &Digest, limit: usize) -> Result<Vec<Indexed<Consumed>>, Error> {
        self.scan_digest(TreeId::Consumers, digest, limit)
    }

    /// The distinct digests some instance made whose lowercase hex starts with `hex` (at least
    /// two characters), in order, at most `limit`.
    pub fn produced_digests(&self, hex: &str, limit: usize) -> Result<Vec<Digest>, Error> {
        self.digests(TreeId::Producers, hex, limit)
    }

    /// The distinct digests some instance took as an input whose lowercase hex starts with
    /// `hex`, in order, at most `limit`: with [`Store::produced_digests`], every digest lineage
    /// knows (a trigger's file is taken but made by no step).
    pub fn consumed_digests(&self, hex: &str, limit: usize) -> Result<Vec<Digest>, Error> {
        self.digests(TreeId::Consumers, hex, limit)
    }

    fn digests(&self, t: TreeId, hex: &str, limit: usize) -> Result<Vec<Digest>, Error> {
        let even = &hex[..hex.len() & !1];
        let Some(prefix) = keys::from_hex(even) else { return Ok(Vec::new()) };
        let tree = self.tree(t)?;
        let mut out: Vec<Digest> = Vec::new();
        let mut start = prefix.clone();
        while out.len() < limit {
            // One seek per distinct digest: the other producers of a digest are skipped.
            let Some(kv) = tree.range(start..).next() else { break };
            let (k, _) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            let Some(bytes) = k.get(..32).and_then(|b| <[u8; 32]>::try_from(b).ok()) else { break };
            let d = Digest::from_bytes(bytes);
            if d.to_string().starts_with(hex) {
                out.push(d);
            }
            let mut after = bytes.to_vec();
            if !increment(&mut after) {
                break;
            }
            start = after;
        }
        Ok(out)
    }
}

/// The next byte string of the same length (big-endian + 1); false when it overflows.
fn increment(bytes: &mut [u8]) -> bool {
    for b in bytes.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return true;
        }
    }
    false
}
