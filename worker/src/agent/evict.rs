//! The size bound of the worker's input cache (`--cache-max`): input blobs are fetched once per
//! worker into `work_dir/blobs` and kept for later attempts; past the bound, the least recently
//! used ones are removed. A blob an attempt is still preparing its inputs from is pinned
//! ([`Pins::pin`]) and never evicted; once materialized into the attempt's folder, the attempt
//! no longer needs it. A use of a cached blob touches it, so "least recently used" is the
//! file's modification time. Outputs are stored and pinned under a gate eviction waits for,
//! and stay pinned until uploaded. Eviction only removes files; it never decides an attempt's
//! outcome. Bundles (`work_dir/bundles`) are not bounded yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use weir_data::artifact::{self, Digest, Manifest, Store};

/// Digests in use by attempts, counted; and a gate that keeps eviction out while outputs are
/// being stored and not yet pinned.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pins(Arc<Mutex<HashMap<Digest, usize>>>, Arc<RwLock<()>>);

/// Unpins its digests when dropped.
pub(crate) struct Pinned {
    pins: Pins,
    digests: Vec<Digest>,
}

impl Pins {
    /// Pins `digests` until the returned guard is dropped.
    pub(crate) fn pin(&self, digests: Vec<Digest>) -> Pinned {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for d in &digests {
            *map.entry(*d).or_default() += 1;
        }
        Pinned { pins: self.clone(), digests }
    }

    /// Runs `collect` (which stores outputs) with eviction held off, and pins what it stored.
    pub(crate) fn collecting(
        &self,
        collect: impl FnOnce() -> Result<Manifest, artifact::Error>,
    ) -> Result<(Manifest, Pinned), artifact::Error> {
        let _gate = self.1.read().unwrap_or_else(|p| p.into_inner());
        let manifest = collect()?;
        let pinned = self.pin(manifest.entries().iter().map(|e| e.digest).collect());
        Ok((manifest, pinned))
    }

    fn pinned(&self, d: &Digest) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).contains_key(d)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let mut map = self.pins.0.lock().unwrap_or_else(|p| p.into_inner());
        for d in &self.digests {
            if let Some(n) = map.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    map.remove(d);
                }
            }
        }
    }
}

/// Removes least recently used, unpinned blobs of `store` until it holds at most `max` bytes.
/// Returns how many blobs and bytes went.
pub(crate) fn evict(store: &Store, max: u64, pins: &Pins) -> (u64, u64) {
    let _gate = pins.1.write().unwrap_or_else(|p| p.into_inner());
    let blobs = match store.blobs_by_age() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the input cache; nothing evicted");
            return (0, 0);
        }
    };
    let mut total: u64 = blobs.iter().map(|(_, size, _)| size).sum();
    let (mut count, mut freed) = (0, 0);
    for (digest, size, _) in blobs {
        if total <= max {
            break;
        }
        if pins.pinned(&digest) {
            continue;
        }
        match store.remove_blob(&digest) {
            Ok(_) => {
                total -= size;
                count += 1;
                freed += size;
            }
            Err(e) => tracing::warn!(error = %e, %digest, "cannot evict a cached input"),
        }
    }
    if count > 0 {
        tracing::info!(blobs = count, bytes = freed, max, "evicted cached inputs past --cache-max");
    }
    (count, freed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn eviction_removes_the_least_recently_used_unpinned_blobs_down_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = SystemTime::now();
        let mut ds = Vec::new();
        for (i, content) in [b"aaaa", b"bbbb", b"cccc", b"dddd"].into_iter().enumerate() {
            let d = store.put_bytes(content).unwrap();
            let at = now - Duration::from_secs(100 - i as u64 * 10);
            std::fs::File::open(store.path_of(&d)).unwrap().set_modified(at).unwrap();
            ds.push(d);
        }
        let pins = Pins::default();
        let held = pins.pin(vec![ds[0]]);
        // 16 bytes, bound 8: the oldest is pinned, so the next two go.
        assert_eq!(evict(&store, 8, &pins), (2, 8));
        let kept: Vec<bool> = ds.iter().map(|d| store.contains(d)).collect();
        assert_eq!(kept, [true, false, false, true]);
        drop(held);
        assert_eq!(evict(&store, 4, &pins), (1, 4));
        assert!(!store.contains(&ds[0]) && store.contains(&ds[3]));
        assert_eq!(evict(&store, 4, &pins), (0, 0));
    }
}
