//! The `WeirAccess` service: named tokens (create, list, revoke) and the audit log, for
//! admins (the guard checks the role). Decode, ask `crate::access` or the store, encode.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use weir_proto::v1;
use weir_proto::v1::weir_access_server::WeirAccess;

use crate::access::{Access, Principal, Source, TokenError};
use crate::server::core::Engine;
use crate::store::AuditFilter;
use weir_core::run::Millis;

pub struct AccessApi {
    pub engine: Arc<Engine>,
    pub access: Arc<Access>,
}

/// Who called (the guard put it there; `anonymous` if somehow not).
fn caller<T>(req: &Request<T>) -> String {
    req.extensions().get::<Principal>().map_or_else(|| "anonymous".to_string(), |p| p.name.clone())
}

impl From<TokenError> for Status {
    fn from(e: TokenError) -> Status {
        match e {
            TokenError::BadName(_) | TokenError::BadRole(_) => Status::invalid_argument(e.to_string()),
            TokenError::Exists(_) => Status::already_exists(e.to_string()),
            TokenError::Unknown(_) => Status::not_found(e.to_string()),
            TokenError::FromFile(_) => Status::failed_precondition(e.to_string()),
            TokenError::Random(_) => Status::internal(e.to_string()),
            TokenError::Store(e) => Status::from(crate::server::error::ApiError::from(e)),
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, TokenError> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("token task: {e}")))?
        .map_err(Status::from)
}

#[tonic::async_trait]
impl WeirAccess for AccessApi {
    async fn create_token(
        &self,
        req: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let by = caller(&req);
        let r = req.into_inner();
        let (engine, access) = (self.engine.clone(), self.access.clone());
        let now = engine.clock.now();
        let (name, role) = (r.name.clone(), r.role.clone());
        let token = blocking(move || access.create(&engine.store, &name, &role, &by, now)).await?;
        Ok(Response::new(v1::CreateTokenResponse { name: r.name, role: r.role, token }))
    }

    async fn list_tokens(&self, _: Request<v1::ListTokensRequest>) -> Result<Response<v1::ListTokensResponse>, Status> {
        let tokens = self
            .access
            .list()
            .into_iter()
            .map(|t| {
                let (source, created_at_ms, created_by) = match t.source {
                    Source::File => ("file", 0, String::new()),
                    Source::Store { created_at, created_by } => ("store", created_at.0, created_by),
                };
                v1::TokenInfo {
                    name: t.name,
                    role: t.role.name().into(),
                    source: source.into(),
                    created_at_ms,
                    created_by,
                }
            })
            .collect();
        Ok(Response::new(v1::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        req: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let name = req.into_inner().name;
        let (engine, access) = (self.engine.clone(), self.access.clone());
        blocking(move || access.revoke(&engine.store, &name)).await?;
        Ok(Response::new(v1::RevokeTokenResponse {}))
    }

    async fn list_audit(&self, req: Request<v1::ListAuditRequest>) -> Result<Response<v1::ListAuditResponse>, Status> {
        let r = req.into_inner();
        let filter = AuditFilter {
            since: (r.since_ms > 0).then_some(Millis(r.since_ms)),
            who: (!r.who.is_empty()).then_some(r.who),
            limit: if r.limit == 0 { 1000 } else { (r.limit as usize).min(100_000) },
        };
        let engine = self.engine.clone();
        let entries = blocking(move || Ok(engine.store.audit(&filter)?)).await?;
        let entries = entries
            .into_iter()
            .map(|e| v1::AuditEntry {
                id: e.id,
                at_ms: e.at.0,
                who: e.who,
                role: e.role,
                action: e.action,
                target: e.target,
                outcome: e.outcome,
                method: e.method,
            })
            .collect();
        Ok(Response::new(v1::ListAuditResponse { entries }))
    }
}
