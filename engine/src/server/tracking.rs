//! Tracking and lineage: a metric across a pipeline's runs, and the chain of artifacts, steps
//! and runs behind an artifact or a model version.

use weir_proto::v1;

use crate::artifact::Manifest;
use crate::run::{InstanceId, Millis};
use crate::store::Batch;

use super::core::{Engine, Live};
use super::error::ApiError;

impl Engine {
    /// Records which step made each of `outputs` and which artifacts went into it.
    pub(super) fn record_lineage(
        &self,
        _live: &Live,
        _instance: InstanceId,
        _outputs: &Manifest,
        _batch: &mut Batch,
        _now: Millis,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    pub(super) fn metric_history(&self, _r: v1::MetricHistoryRequest) -> Result<v1::MetricHistoryResponse, ApiError> {
        Err(ApiError::Precondition("MetricHistory is not implemented yet".into()))
    }

    pub(super) fn lineage(&self, _r: v1::GetLineageRequest) -> Result<v1::GetLineageResponse, ApiError> {
        Err(ApiError::Precondition("GetLineage is not implemented yet".into()))
    }
}
