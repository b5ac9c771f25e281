//! Retention and garbage collection: deleting runs (`weir runs delete`), pipelines (`weir
//! pipelines delete`), each pipeline's `keep:` applied to its finished runs, and the sweep of
//! blobs (outputs, bundles) nothing names any more (`weir gc`, and every `--gc-every` on a
//! server).
//!
//! What may go: only a finished run that is not live here (so nothing can still report, retry
//! or resume into it mid-flight), and never one that a registered model version came from
//! (which keeps its whole lineage: the producers and consumers of every instance of that run,
//! cached ones included, and the outputs they name) or whose outputs a cache entry reuses.
//!
//! Crash safety: the store deletes are one flushed batch per run, made before the mark; the
//! mark reads every record that names a blob after them; the sweep removes only blobs the mark
//! did not see and that are older than the grace (an upload in flight, or a put that found its
//! content already stored, is younger). Removing a blob nothing names is always safe, so a
//! crash at any point leaves a consistent store and at worst blobs the next sweep removes.
//! Blobs a running backup holds (`backup.rs`) are kept too, whatever the mark says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use weir_core::run::Millis;
use weir_data::artifact::Swept;

use super::core::Engine;
use super::error::ApiError;
use super::runs::require_run_id;

/// How often a server collects on its own, and the grace of the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcConfig {
    /// Blobs and temporary files younger than this are never swept.
    pub grace: Duration,
    /// Run retention and the sweep this often; never when unset (`weir run`).
    pub every: Option<Duration>,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { grace: Duration::from_secs(3600), every: None }
    }
}

/// The engine's collector state: its settings, when it last ran, and whether it runs now.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    pub config: GcConfig,
    last: Mutex<Option<Instant>>,
    running: AtomicBool,
}

/// What happened to one run `weir runs delete` named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunDeletion {
    pub run: String,
    /// Empty when deleted; else why not, with what to do.
    pub refused: String,
}

/// What a collection did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GcReport {
    /// Runs `keep:` let go, by pipeline.
    pub runs: BTreeMap<String, Vec<String>>,
    pub swept: Swept,
}

/// What keeps runs that are otherwise free to go.
struct Protection {
    /// Run -> why.
    reasons: BTreeMap<String, String>,
}

impl Protection {
    fn why(&self, run: &str) -> Option<&str> {
        self.reasons.get(run).map(String::as_str)
    }
}

impl Engine {
    fn protection(&self) -> Result<Protection, ApiError> {
        let mut reasons = BTreeMap::new();
        for v in self.store.all_model_versions()? {
            reasons.entry(v.run_id.clone()).or_insert_with(|| {
                format!(
                    "version {} of model {} came from it (its lineage needs the run); it is kept while \
                     that version is registered",
                    v.version, v.model
                )
            });
        }
        for (pipeline, e) in self.store.all_cache_entries()? {
            reasons.entry(e.run.clone()).or_insert_with(|| {
                format!(
                    "the step cache reuses its outputs for {} ({pipeline}); it is kept while that cache \
                     entry is the newest for its key",
                    e.name
                )
            });
        }
        Ok(Protection { reasons })
    }

    /// Why run `id` may not be deleted now, given `protection`; none when it may.
    fn refusal(&self, id: &str, protection: &Protection) -> Result<Option<String>, ApiError> {
        if self.lock().runs.contains_key(id) {
            return Ok(Some(format!(
                "run {id} is still running here: cancel it first (`weir cancel {id}`), then delete it"
            )));
        }
        let Some(record) = self.store.run(id)? else {
            return Ok(Some(format!("no run {id}: `weir runs` lists the runs this server knows")));
        };
        if !record.state.is_terminal() {
            return Ok(Some(format!(
                "run {id} has not finished ({}): it can still be resumed; cancel it first (`weir cancel {id}`)",
                record.state.as_str()
            )));
        }
        Ok(protection.why(id).map(|why| format!("run {id} is kept: {why}")))
    }

    /// Deletes each of `ids` that has finished and nothing protects, and says why not for the
    /// others. Each deletion is one flushed batch.
    pub(crate) fn delete_runs(&self, ids: &[String]) -> Result<Vec<RunDeletion>, ApiError> {
        let protection = self.protection()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            require_run_id(id)?;
            let refused = match self.refusal(id, &protection)? {
                Some(why) => why,
                None => {
                    self.delete_one(id)?;
                    String::new()
                }
            };
            out.push(RunDeletion { run: id.clone(), refused });
        }
        Ok(out)
    }

    /// Deletes run `id` unless it became live meanwhile (checked under the state lock, which
    /// is held across the store delete so no resume can slip in).
    fn delete_one(&self, id: &str) -> Result<bool, ApiError> {
        let st = self.lock();
        if st.runs.contains_key(id) {
            return Ok(false);
        }
        let deleted = self.store.delete_run(id)?;
        drop(st);
        tracing::info!(run = id, "run deleted");
        Ok(deleted)
    }

    /// Deletes pipeline `name` with every run of it: refused while one of its runs is
    /// unfinished or a registered model version came from one. Its cache entries go with it.
    /// Returns how many runs were deleted.
    pub(crate) fn delete_pipeline(&self, name: &str) -> Result<usize, ApiError> {
        if self.store.pipeline(name)?.is_none() {
            return Err(self.no_pipeline(name));
        }
        let runs = self.store.runs_of(name)?;
        let mut protection = self.protection()?;
        // Its own cache entries go with it: they protect nothing here.
        let own: BTreeSet<String> =
            self.store.all_cache_entries()?.into_iter().filter(|(p, _)| p == name).map(|(_, e)| e.run).collect();
        let models: BTreeSet<String> = self.store.all_model_versions()?.into_iter().map(|v| v.run_id).collect();
        protection.reasons.retain(|run, _| !own.contains(run) || models.contains(run));
        for r in &runs {
            if let Some(why) = self.refusal(&r.id, &protection)? {
                return Err(ApiError::Precondition(format!(
                    "pipeline {name} is not deleted: {why}. Nothing was deleted"
                )));
            }
        }
        let mut deleted = 0;
        for r in &runs {
            if self.delete_one(&r.id)? {
                deleted += 1;
            }
        }
        {
            let mut st = self.lock();
            self.store.delete_pipeline(name)?;
            st.schedules.remove(name);
            st.pipelines.forget_pipeline(name);
        }
        tracing::info!(pipeline = name, runs = deleted, "pipeline deleted");
        Ok(deleted)
    }

    /// The finished runs of each pipeline that its `keep:` lets go and nothing protects, as
    /// of `now`, oldest first.
    fn expired(&self, now: Millis) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
        let protection = self.protection()?;
        let mut out = BTreeMap::new();
        for (name, index) in self.store.pipelines()? {
            let keep = {
                let mut st = self.lock();
                match self.pipeline(&mut st, &index.latest) {
                    Ok((p, _)) => p.keep().cloned(),
                    Err(e) => {
                        tracing::warn!(pipeline = %name, error = %e, "retention skips a pipeline it cannot read");
                        None
                    }
                }
            };
            let Some(keep) = keep else { continue };
            let finished: Vec<_> = {
                let st = self.lock();
                let mut all = self.store.runs_of(&name)?;
                all.retain(|r| r.record.state.is_terminal() && !st.runs.contains_key(&r.id));
                all
            };
            let count = finished.len();
            let cutoff = keep.days().map(|d| now.0.saturating_sub(u64::from(d) * 86_400_000));
            let mut gone = Vec::new();
            for (i, r) in finished.iter().enumerate() {
                // `finished` is oldest first: the newest `runs` are the last ones.
                let too_many = keep.runs().is_some_and(|n| count - i > n as usize);
                let ended = r.record.finished_at.unwrap_or(r.record.created_at).0;
                let too_old = cutoff.is_some_and(|c| ended < c);
                if (too_many || too_old) && protection.why(&r.id).is_none() {
                    gone.push(r.id.clone());
                }
            }
            if !gone.is_empty() {
                out.insert(name, gone);
            }
        }
        Ok(out)
    }

    /// Applies every pipeline's `keep:`, then sweeps unreferenced blobs older than the grace.
    /// With `dry_run` deletes nothing and says what would go (marking as if the expired runs
    /// were deleted).
    pub(crate) fn collect(&self, dry_run: bool) -> Result<GcReport, ApiError> {
        let now = self.clock.now();
        let mut runs = self.expired(now)?;
        if !dry_run {
            for ids in runs.values_mut() {
                let mut kept = Vec::new();
                for id in ids.drain(..) {
                    if self.delete_one(&id)? {
                        kept.push(id);
                    }
                }
                *ids = kept;
            }
            runs.retain(|_, ids| !ids.is_empty());
        }
        // Mark after the deletes are flushed; sweep only what the mark did not see.
        let marked = if dry_run {
            let gone = runs.values().flatten().cloned().collect();
            self.store.referenced_blobs_without(&gone)?
        } else {
            self.store.referenced_blobs()?
        };
        let cutoff = UNIX_EPOCH + Duration::from_millis(now.0);
        let cutoff = cutoff.checked_sub(self.collector.config.grace).unwrap_or(SystemTime::UNIX_EPOCH);
        // A blob a running backup still has to copy is kept even when its run just went.
        let swept = self.blobs.sweep(|d| marked.contains(d) || self.holds.holds(d), cutoff, dry_run)?;
        let n: usize = runs.values().map(Vec::len).sum();
        tracing::info!(dry_run, runs = n, blobs = swept.blobs, bytes = swept.bytes, "garbage collected");
        Ok(GcReport { runs, swept })
    }

    /// Starts a collection on a blocking thread when `--gc-every` says one is due and none is
    /// running. Called by the server's ticker.
    pub(crate) fn collect_if_due(self: &std::sync::Arc<Self>) {
        let Some(every) = self.collector.config.every else { return };
        let now = self.clock.instant();
        {
            let mut last = self.collector.last.lock().unwrap_or_else(|p| p.into_inner());
            match *last {
                None => {
                    // The first collection waits one period after the start.
                    *last = Some(now);
                    return;
                }
                Some(at) if now.duration_since(at) < every => return,
                Some(_) => *last = Some(now),
            }
        }
        if self.collector.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let engine = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = engine.collect(false) {
                tracing::warn!(error = %e, "garbage collection failed; retried at the next period");
            }
            engine.collector.running.store(false, Ordering::Release);
        });
    }
}
