//! The `WeirSecrets` gRPC service (`secrets.proto`): decode, call `crate::server::secrets`,
//! encode. Behind the client token. No answer carries a value; a request's value is never
//! logged or put in an error.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use weir_proto::v1;
use weir_proto::v1::weir_secrets_server::WeirSecrets;

use super::convert::timestamp;
use crate::server::core::Engine;

pub struct SecretsApi(pub Arc<Engine>);

#[tonic::async_trait]
impl WeirSecrets for SecretsApi {
    async fn set_secret(&self, req: Request<v1::SetSecretRequest>) -> Result<Response<v1::SetSecretResponse>, Status> {
        let r = req.into_inner();
        let engine = self.0.clone();
        let replaced = tokio::task::spawn_blocking(move || engine.set_secret(&r.name, &r.value))
            .await
            .map_err(|e| Status::internal(format!("set secret: {e}")))??;
        Ok(Response::new(v1::SetSecretResponse { replaced }))
    }

    async fn list_secrets(
        &self,
        _req: Request<v1::ListSecretsRequest>,
    ) -> Result<Response<v1::ListSecretsResponse>, Status> {
        let secrets = self
            .0
            .list_secrets()?
            .into_iter()
            .map(|s| v1::SecretInfo {
                name: s.name,
                created_at: Some(timestamp(s.created_at)),
                updated_at: Some(timestamp(s.updated_at)),
            })
            .collect();
        Ok(Response::new(v1::ListSecretsResponse { secrets }))
    }

    async fn delete_secret(
        &self,
        req: Request<v1::DeleteSecretRequest>,
    ) -> Result<Response<v1::DeleteSecretResponse>, Status> {
        self.0.delete_secret(&req.into_inner().name)?;
        Ok(Response::new(v1::DeleteSecretResponse {}))
    }
}
