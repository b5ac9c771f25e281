//! The `files` trigger: a polling scan of an absolute folder on the engine's host, every
//! trigger pass. A regular file whose name matches the glob is taken once its size and
//! modification time have not changed for `settle` (`weir_core::trigger::Observed`); then it
//! is hashed (BLAKE3, the artifact store's digest), and its digest is the key the run fires
//! for: a new file or new content starts one run, the same bytes again (renamed, copied,
//! touched) none. Symbolic links, folders and hidden files are passed over.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_core::run::Millis;
use weir_core::spec::FilesTrigger;
use weir_core::trigger::{Observed, glob_match};
use weir_data::artifact::Digest;

use crate::store::{Trigger, TriggerFile};

use super::super::core::Engine;
use super::super::error::ApiError;

/// One file as the scans saw it.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    obs: Observed,
    /// Its digest, computed once it settled (for this size and time).
    digest: Option<Digest>,
    /// Its digest fired already (a run exists or was started): not looked up again.
    taken: bool,
}

/// Every files trigger's view of its folder: (pipeline, trigger) to path to what was seen.
#[derive(Default)]
pub(super) struct Watched(HashMap<(String, String), HashMap<PathBuf, Seen>>);

impl Watched {
    /// Keeps only the triggers `keep` names.
    pub(super) fn retain(&mut self, keep: impl Fn(&(String, String)) -> bool) {
        self.0.retain(|k, _| keep(k));
    }
}

/// A settled file ready to fire: its path, size and digest.
type Candidate = (PathBuf, u64, Digest);

fn digest_of(path: &Path) -> std::io::Result<Digest> {
    let mut hasher = blake3::Hasher::new();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

fn modified_nanos(m: &std::fs::Metadata) -> i128 {
    m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as i128)
}

/// One scan of `t`'s folder: what is seen now (from `prev`), and the settled files not taken.
fn scan(
    t: &FilesTrigger,
    prev: &HashMap<PathBuf, Seen>,
    now: Millis,
) -> std::io::Result<(HashMap<PathBuf, Seen>, Vec<Candidate>)> {
    let mut seen = HashMap::new();
    let mut ready = Vec::new();
    for entry in std::fs::read_dir(&t.path)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        if name.contains('\n') || !glob_match(&t.glob, &name) {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let path = entry.path();
        let before = prev.get(&path);
        let obs = Observed::next(before.map(|s| &s.obs), meta.len(), modified_nanos(&meta), now);
        let mut s = match before {
            Some(b) if b.obs == obs => b.clone(),
            _ => Seen { obs, digest: None, taken: false },
        };
        if s.obs.settled(t.settle, now) && s.digest.is_none() {
            let digest = digest_of(&path)?;
            // Written to while it was read: not settled after all.
            let after = path.symlink_metadata()?;
            if after.len() != s.obs.size || modified_nanos(&after) != s.obs.modified {
                s = Seen {
                    obs: Observed::next(None, after.len(), modified_nanos(&after), now),
                    digest: None,
                    taken: false,
                };
            } else {
                s.digest = Some(digest);
            }
        }
        if let (Some(d), false) = (s.digest, s.taken) {
            ready.push((path.clone(), s.obs.size, d));
        }
        seen.insert(path, s);
    }
    ready.sort();
    Ok((seen, ready))
}

impl Engine {
    /// One pass of files trigger `name` of `pipeline` (latest version `version`).
    pub(super) async fn fire_files(
        self: &Arc<Self>,
        pipeline: &str,
        version: &str,
        name: &str,
        t: &FilesTrigger,
    ) -> Result<(), ApiError> {
        let key = (pipeline.to_string(), name.to_string());
        let prev = self.triggers.files.lock().unwrap_or_else(|p| p.into_inner()).0.remove(&key).unwrap_or_default();
        let now = self.clock.now();
        let trigger = t.clone();
        let scanned = tokio::task::spawn_blocking(move || (scan(&trigger, &prev, now), prev))
            .await
            .map_err(|e| ApiError::Internal(format!("scanning failed: {e}")))?;
        let (mut seen, ready) = match scanned {
            (Ok(found), _) => found,
            (Err(e), prev) => {
                self.triggers.files.lock().unwrap_or_else(|p| p.into_inner()).0.insert(key, prev);
                return Err(ApiError::Internal(format!("cannot read {}: {e}", t.path)));
            }
        };
        let mut result = Ok(());
        for (path, size, digest) in ready {
            let fired_for = digest.to_string();
            let known = { self.fired(&self.lock(), pipeline, name, &fired_for)? };
            if known.is_none() {
                let id = weir_core::trigger::run_id(pipeline, name, &fired_for);
                tracing::info!(pipeline, trigger = name, path = %path.display(), digest = %digest, "new data noticed");
                self.pause_point(false, &id).await;
                let file = TriggerFile { path: path.display().to_string(), size, digest };
                let started = self.start_triggered(
                    pipeline,
                    version,
                    Trigger::Files { trigger: name.into(), files: vec![file] },
                    &[],
                );
                match started {
                    Ok((run, _)) => self.pause_point(true, &run).await,
                    Err(e) => {
                        result = Err(e);
                        continue; // tried again next pass
                    }
                }
            }
            if let Some(s) = seen.get_mut(&path) {
                s.taken = true;
            }
        }
        self.triggers.files.lock().unwrap_or_else(|p| p.into_inner()).0.insert(key, seen);
        result
    }
}
