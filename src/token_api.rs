//! `portcullis.v1.TokenService` (proto/portcullis/v1/token.proto): the gRPC
//! adapter of the token service. It converts: the caller's identity comes from
//! its verified mTLS client certificate (tonic's `peer_certs`, which rustls
//! checked against `server.tls.client_ca`), the token from [`TokenMint`].
//! A caller only ever gets a token for its own SPIFFE ID.

use crate::admin_api::pb::token_service_server::TokenService;
use crate::admin_api::pb::{IssueServiceTokenRequest, IssueServiceTokenResponse};
use crate::admin_api::peer_svid;
use crate::authorizer::Authorizer;
use crate::mint::MintError;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::{Request, Response, Status};

pub struct TokenApi {
    authorizer: Arc<Authorizer>,
}

impl TokenApi {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        Self { authorizer }
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn issue_service_token(
        &self,
        request: Request<IssueServiceTokenRequest>,
    ) -> Result<Response<IssueServiceTokenResponse>, Status> {
        let caller = peer_svid(&request, "token service", "IssueServiceToken")?;
        let request = request.into_inner();
        if !request.spiffe_id.is_empty() && request.spiffe_id != caller.to_string() {
            tracing::info!(%caller, requested = %request.spiffe_id, "token service: refused a token for another identity");
            return Err(Status::permission_denied(format!(
                "you are {caller}: a token can only be issued for the caller's own SPIFFE ID"
            )));
        }
        let pipeline = self.authorizer.pipeline();
        let mint = pipeline.mint().ok_or_else(|| {
            Status::failed_precondition(
                "portcullis signs no tokens: configure `tokens: { key_dir: ... }`",
            )
        })?;
        let ttl =
            (request.ttl_seconds > 0).then(|| Duration::from_secs(request.ttl_seconds.into()));
        let minted = mint
            .service_token(&caller, &request.audiences, ttl, SystemTime::now())
            .map_err(|e| match e {
                MintError::NoAudience => Status::invalid_argument(e.to_string()),
                MintError::ForeignSubject(_) => Status::permission_denied(e.to_string()),
                MintError::Sign(_) => Status::internal("the token could not be signed"),
            })?;
        tracing::info!(%caller, audiences = ?request.audiences, ttl_s = minted.expires_in.as_secs(), "token service: issued a service token");
        Ok(Response::new(IssueServiceTokenResponse {
            token: minted.token,
            spiffe_id: caller.to_string(),
            expires_in_seconds: u32::try_from(minted.expires_in.as_secs()).unwrap_or(u32::MAX),
        }))
    }
}
