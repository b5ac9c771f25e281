//! The model registry: versions of named models created by steps with `register:`, aliases
//! that move (every move recorded with time and reason), gated promotion.

use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use weir_proto::v1;

use crate::artifact::Manifest;
use crate::run::{InstanceId, Millis};
use crate::store::Batch;

use super::core::{Engine, Live};
use super::error::ApiError;

/// A model version as lineage needs it: where its file came from.
#[allow(dead_code)] // used by lineage (tracking.rs) once it lands
#[derive(Clone, Debug)]
pub(super) struct ModelRef {
    pub model: String,
    pub version: u64,
    pub digest: String,
    pub run_id: String,
    pub step: String,
}

impl Engine {
    /// Creates the next version of the model a succeeded step's `register:` names (and moves
    /// its alias when the `when:` gate allows).
    pub(super) fn register_model(
        &self,
        _live: &Live,
        _instance: InstanceId,
        _outputs: &Manifest,
        _batch: &mut Batch,
        _now: Millis,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    #[allow(dead_code)]
    /// Resolves `MODEL@ALIAS`, `MODEL@VERSION` or `MODEL` (its latest version).
    pub(super) fn resolve_model(&self, target: &str) -> Result<ModelRef, ApiError> {
        Err(ApiError::NotFound(format!("no model {target}: the registry is not implemented yet")))
    }

    pub(super) fn list_models(&self, _r: v1::ListModelsRequest) -> Result<v1::ListModelsResponse, ApiError> {
        Err(ApiError::Precondition("ListModels is not implemented yet".into()))
    }

    pub(super) fn get_model(&self, _r: v1::GetModelRequest) -> Result<v1::GetModelResponse, ApiError> {
        Err(ApiError::Precondition("GetModel is not implemented yet".into()))
    }

    pub(super) fn promote_model(&self, _r: v1::PromoteModelRequest) -> Result<v1::PromoteModelResponse, ApiError> {
        Err(ApiError::Precondition("PromoteModel is not implemented yet".into()))
    }

    pub(super) fn rollback_model(&self, _r: v1::RollbackModelRequest) -> Result<v1::RollbackModelResponse, ApiError> {
        Err(ApiError::Precondition("RollbackModel is not implemented yet".into()))
    }
}

type ArtifactStream = ReceiverStream<Result<v1::GetModelArtifactResponse, Status>>;

/// Streams a model version's file: the version first, then its bytes.
pub(super) fn model_artifact(
    _engine: &std::sync::Arc<Engine>,
    _r: v1::GetModelArtifactRequest,
) -> Result<ArtifactStream, ApiError> {
    Err(ApiError::Precondition("GetModelArtifact is not implemented yet".into()))
}
