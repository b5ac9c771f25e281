//! What happens when a step instance succeeds, beyond the run machine: the [`SuccessHook`]s.
//! The cache entry its key now has (`cache.rs`), the lineage of its outputs (`tracking.rs`),
//! the warnings of its `explain.json` (`explain.rs`) and the model version a `register:`
//! creates (`registry.rs`). Each writes into the same
//! [`Batch`] as the success itself, so all of it is durable together or not at all. This file
//! only names the hooks and calls them in order; what each records is in its own module.

use crate::store::Batch;
use weir_core::run::{InstanceId, Millis};
use weir_data::artifact::Manifest;

use super::core::{Engine, Live};
use super::error::ApiError;

/// An instance that ended with outputs, as the hooks see it.
pub(super) struct Success<'a> {
    pub live: &'a Live,
    pub instance: InstanceId,
    pub outputs: &'a Manifest,
    pub now: Millis,
    /// It ended `cached` (a cache hit or a retry's reuse: its outputs are a copy), rather than
    /// running and succeeding.
    pub cached: bool,
}

/// Records what a success means for one concern, into the success's batch. An `Err` fails
/// the whole event (nothing is written); a hook whose problems must not undo the success logs
/// them and returns `Ok`.
pub(super) trait SuccessHook: Sync {
    /// Whether it also runs for an instance that ends `cached`.
    fn on_cached(&self) -> bool {
        false
    }

    fn record(&self, engine: &Engine, success: &Success<'_>, batch: &mut Batch) -> Result<(), ApiError>;
}

/// The cache entry of a fresh success of a step with `cache:`.
struct CacheEntry;

impl SuccessHook for CacheEntry {
    fn record(&self, engine: &Engine, s: &Success<'_>, batch: &mut Batch) -> Result<(), ApiError> {
        engine.record_cache_entry(s.live, s.instance, s.outputs, batch, s.now)
    }
}

/// The lineage of its outputs, for a cached instance too: its outputs are indexed under its
/// own run as well, so lineage walks the run's own chain and `--down` sees what it took.
struct Lineage;

impl SuccessHook for Lineage {
    fn on_cached(&self) -> bool {
        true
    }

    fn record(&self, engine: &Engine, s: &Success<'_>, batch: &mut Batch) -> Result<(), ApiError> {
        engine.record_lineage(s.live, s.instance, s.outputs, batch, s.now)
    }
}

/// The warnings of a fresh success's `explain.json`, in its log. The explanation itself is
/// kept by the model version a `register:` makes (`Registry`, after this hook).
struct Explain;

impl SuccessHook for Explain {
    fn record(&self, engine: &Engine, s: &Success<'_>, batch: &mut Batch) -> Result<(), ApiError> {
        engine.check_explanation(s.live, s.instance, s.outputs, batch, s.now)
    }
}

/// The model version a `register:` creates. Only fresh successes: a reused step's version is
/// not registered twice.
struct Registry;

impl SuccessHook for Registry {
    fn record(&self, engine: &Engine, s: &Success<'_>, batch: &mut Batch) -> Result<(), ApiError> {
        engine.register_model(s.live, s.instance, s.outputs, batch, s.now)
    }
}

/// Every hook, in the order they record.
const HOOKS: &[&dyn SuccessHook] = &[&CacheEntry, &Lineage, &Explain, &Registry];

impl Engine {
    /// Called by `apply_at` for an instance that ended with outputs (succeeded, or `cached`),
    /// before the batch is written: runs every hook that applies.
    pub(super) fn on_succeeded(&self, success: &Success<'_>, batch: &mut Batch) -> Result<(), ApiError> {
        for hook in HOOKS.iter().filter(|h| !success.cached || h.on_cached()) {
            hook.record(self, success, batch)?;
        }
        Ok(())
    }
}
