//! What happens when a step instance succeeds, beyond the run machine: the cache entry its key
//! now has (`cache.rs`), the lineage of its outputs (`tracking.rs`), and the model version a
//! `register:` creates (`registry.rs`). Each writes into the same [`Batch`] as the success
//! itself, so all of it is durable together or not at all.

use crate::store::Batch;
use weir_core::run::{InstanceId, Millis};
use weir_data::artifact::Manifest;

use super::core::{Engine, Live};
use super::error::ApiError;

impl Engine {
    /// Called by `apply_at` for an instance whose attempt really ran and succeeded (not for a
    /// cached or reused one), with the outputs it reported, before the batch is written.
    pub(crate) fn on_succeeded(
        &self,
        live: &Live,
        instance: InstanceId,
        outputs: &Manifest,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<(), ApiError> {
        self.record_cache_entry(live, instance, outputs, batch, now)?;
        self.record_lineage(live, instance, outputs, batch, now)?;
        self.register_model(live, instance, outputs, batch, now)?;
        Ok(())
    }
}
