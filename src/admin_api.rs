//! `portcullis.v1.Admin` (proto/portcullis/v1/admin.proto): the gRPC twin of
//! `/readyz`.

use crate::authorizer::Authorizer;
use crate::readiness::Readiness;
use crate::reload::LastReload;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Generated code of `proto/portcullis/v1`.
pub mod pb {
    tonic::include_proto!("portcullis.v1");

    /// Encoded descriptors, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/portcullis_descriptor.bin"));
}

use pb::admin_server::Admin;
use pb::{GetStatusRequest, GetStatusResponse, IssuerStatus};

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
        }))
    }
}
