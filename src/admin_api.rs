//! `portcullis.v1.Admin` (proto/portcullis/v1/admin.proto): the gRPC twin of
//! `/readyz`, and revocation (docs/revocation.md). `Revoke` and
//! `ListRevocations` answer only an mTLS client whose SPIFFE ID is in
//! `admin.principals` of the config in force (read at each call, so a reload
//! applies); rustls verified its certificate against `server.tls.client_ca`.

use crate::authorizer::Authorizer;
use crate::identity::mtls::svid_of_der;
use crate::identity::SpiffeId;
use crate::readiness::Readiness;
use crate::reload::LastReload;
use crate::revocation::{self, Kind, Revocation, RevocationError};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Generated code of `proto/portcullis/v1`.
pub mod pb {
    tonic::include_proto!("portcullis.v1");

    /// Encoded descriptors, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/portcullis_descriptor.bin"));
}

use pb::admin_server::Admin;
use pb::revoke_request::Target;
use pb::{
    GetStatusRequest, GetStatusResponse, IssuerStatus, ListRevocationsRequest,
    ListRevocationsResponse, RevocationStatus, RevokeRequest, RevokeResponse,
};

pub struct AdminApi {
    authorizer: Arc<Authorizer>,
    last_reload: Arc<LastReload>,
}

impl AdminApi {
    pub fn new(authorizer: Arc<Authorizer>, last_reload: Arc<LastReload>) -> Self {
        Self {
            authorizer,
            last_reload,
        }
    }

    /// The caller's SPIFFE ID when it is one of `admin.principals`; never an
    /// unauthenticated caller. Every refusal is logged.
    fn admin<T>(&self, request: &Request<T>, call: &str) -> Result<SpiffeId, Status> {
        let caller = peer_svid(request, "admin API", call)?;
        let pipeline = self.authorizer.pipeline();
        if !pipeline.revocation().admin_principals.contains(&caller) {
            tracing::info!(call, %caller, "admin API: refused a caller not in admin.principals");
            return Err(Status::permission_denied(format!(
                "{caller} is not in admin.principals"
            )));
        }
        Ok(caller)
    }
}

/// The SPIFFE ID of the client certificate of `request`'s connection, which
/// rustls verified against `server.tls.client_ca`: how the gRPC services
/// that answer only known workloads (`service`: the admin API, the token
/// service) authenticate a caller. A refusal is logged with `call`.
pub(crate) fn peer_svid<T>(
    request: &Request<T>,
    service: &'static str,
    call: &str,
) -> Result<SpiffeId, Status> {
    let Some(leaf) = request
        .peer_certs()
        .and_then(|certs| certs.first().cloned())
    else {
        tracing::info!(
            service,
            call,
            "refused a caller without a client certificate"
        );
        return Err(Status::unauthenticated(format!(
            "the {service} authenticates callers by their mTLS client certificate: connect with your SVID (server.tls.client_ca must be set)"
        )));
    };
    svid_of_der(&leaf).map_err(|error| {
        tracing::info!(service, call, %error, "refused a client certificate that is not an SVID");
        Status::unauthenticated(error.to_string())
    })
}

fn to_wire(revocation: &Revocation) -> pb::Revocation {
    pb::Revocation {
        kind: revocation.kind().as_str().to_owned(),
        value: revocation.value().to_owned(),
        revoked_at_unix_ms: revocation.revoked_at_ms(),
        expires_at_unix_ms: revocation.expires_at_ms(),
        by: revocation.by().to_owned(),
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let status = Readiness::of(&self.authorizer, &self.last_reload).await;
        Ok(Response::new(GetStatusResponse {
            version: status.version.to_owned(),
            ready: status.ready,
            policy_rules: u32::try_from(status.policy_rules).unwrap_or(u32::MAX),
            issuers: status
                .issuers
                .into_iter()
                .map(|i| IssuerStatus {
                    name: i.name,
                    keys_loaded: i.keys_loaded,
                    key_count: u32::try_from(i.key_count).unwrap_or(u32::MAX),
                })
                .collect(),
            revocations: Some(RevocationStatus {
                loaded: status.revocations.loaded,
                count: u32::try_from(status.revocations.count).unwrap_or(u32::MAX),
                error: status.revocations.error.unwrap_or_default(),
            }),
        }))
    }

    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevokeResponse>, Status> {
        let caller = self.admin(&request, "Revoke")?;
        let request = request.into_inner();
        let (kind, value) = match &request.target {
            Some(Target::Jti(jti)) => (Kind::Jti, jti),
            Some(Target::Sub(sub)) => (Kind::Sub, sub),
            Some(Target::Sid(sid)) => (Kind::Sid, sid),
            None => {
                return Err(Status::invalid_argument(
                    "name what to revoke: jti, sub or sid",
                ))
            }
        };
        let ttl = match request.ttl_seconds {
            0 => revocation::DEFAULT_TTL,
            seconds => Duration::from_secs(seconds.into()),
        };
        let runtime = self.authorizer.runtime();
        let revocations = runtime.revocations();
        let revocation = revocations
            .revocation(kind, value, ttl, format!("admin:{caller}"))
            .map_err(|e| {
                tracing::info!(%caller, kind = kind.as_str(), error = %e, "admin API: refused an invalid revocation");
                Status::invalid_argument(e.to_string())
            })?;
        let pipeline = self.authorizer.pipeline();
        let stored =
            revocation::store::revoke(revocations, pipeline.shared().map(|s| &**s), revocation)
                .await;
        tracing::info!(%caller, kind = kind.as_str(), %value, ttl_s = ttl.as_secs(),
            shared = stored.is_ok(), "admin API: revoked");
        match stored {
            // What is in force now: merged with an earlier revocation of the
            // same value, it may reach further than asked.
            Ok(in_force) => Ok(Response::new(RevokeResponse {
                revocation: Some(to_wire(&in_force)),
            })),
            Err(e @ RevocationError::NotShared(_)) => Err(Status::unavailable(e.to_string())),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }

    async fn list_revocations(
        &self,
        request: Request<ListRevocationsRequest>,
    ) -> Result<Response<ListRevocationsResponse>, Status> {
        let caller = self.admin(&request, "ListRevocations")?;
        let revocations = self.authorizer.runtime().revocations().list();
        tracing::info!(%caller, count = revocations.len(), "admin API: listed revocations");
        Ok(Response::new(ListRevocationsResponse {
            revocations: revocations.iter().map(to_wire).collect(),
        }))
    }
}
