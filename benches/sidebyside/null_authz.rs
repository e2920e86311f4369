//! `null-authz`: the floor any tonic ext_authz server pays (SPEC §11).
//!
//! The same tonic version and server settings as portcullis (`src/server.rs`: a
//! default `tonic::transport::Server::builder()` on a plaintext TCP listener, inside
//! the same multi-thread tokio runtime `portcullis serve` builds), and a `Check` that
//! answers OK without looking at the request. Built as `examples/null_authz.rs`, run
//! by the benchmark harness as its own process so its CPU time can be read apart.

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckRequest, CheckResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

/// Always OK.
pub struct NullAuthz;

#[tonic::async_trait]
impl Authorization for NullAuthz {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..Default::default()
        }))
    }
}

/// `null_authz ADDR`: serves on ADDR until killed; prints `ready` once listening.
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .ok_or("usage: null_authz ADDR")?
        .parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("ready {}", listener.local_addr()?);
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(NullAuthz))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await?;
        Ok(())
    })
}
