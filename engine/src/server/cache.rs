//! Step caching: a step with `cache:` whose key matches an earlier successful attempt is
//! `cached`, reusing that attempt's outputs and metrics.

use weir_proto::v1;

use crate::artifact::Manifest;
use crate::run::{InstanceId, Millis};
use crate::store::Batch;

use super::core::{Engine, Live};
use super::error::ApiError;

impl Engine {
    /// Records the cache entry of a fresh success of a step with `cache:`.
    pub(super) fn record_cache_entry(
        &self,
        _live: &Live,
        _instance: InstanceId,
        _outputs: &Manifest,
        _batch: &mut Batch,
        _now: Millis,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    pub(super) fn plan_run(&self, _r: v1::PlanRunRequest) -> Result<v1::PlanRunResponse, ApiError> {
        Err(ApiError::Precondition("PlanRun is not implemented yet".into()))
    }

    pub(super) fn explain_cache(&self, _r: v1::ExplainCacheRequest) -> Result<v1::ExplainCacheResponse, ApiError> {
        Err(ApiError::Precondition("ExplainCache is not implemented yet".into()))
    }
}
