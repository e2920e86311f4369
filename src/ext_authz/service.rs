//! The gRPC service `envoy.service.auth.v3.Authorization`, written out by hand
//! (it is what `tonic-build` generates for one unary method) so that `Check`
//! reads its request with [`CheckCodec`] straight into the request model instead
//! of through `envoy-types`' copying `CheckRequest`. The response is
//! `envoy-types`' `CheckResponse`.

use super::CheckCodec;
use crate::authorizer::Authorizer;
use crate::request::AuthzRequest;
use envoy_types::ext_authz::v3::pb::CheckResponse;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

/// The one method, by its gRPC path.
const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// `envoy.service.auth.v3.Authorization`: answers `Check` with the authorizer.
#[derive(Clone)]
pub struct AuthorizationService {
    authorizer: Arc<Authorizer>,
}

impl AuthorizationService {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        Self { authorizer }
    }
}

impl NamedService for AuthorizationService {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

impl<B> Service<http::Request<B>> for AuthorizationService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK {
            return Box::pin(async {
                Ok(Status::unimplemented("Authorization has one method, Check").into_http())
            });
        }
        let check = Check(Arc::clone(&self.authorizer));
        Box::pin(async move { Ok(Grpc::new(CheckCodec).unary(check, request).await) })
    }
}

/// One `Check`: request model in, answer out. A deny is an `Ok` response too.
struct Check(Arc<Authorizer>);

impl UnaryService<AuthzRequest> for Check {
    type Response = CheckResponse;
    type Future = BoxFuture<Response<CheckResponse>, Status>;

    fn call(&mut self, request: Request<AuthzRequest>) -> Self::Future {
        let authorizer = Arc::clone(&self.0);
        Box::pin(async move {
            let request = request.into_inner();
            let answer = authorizer.check(&request).await;
            Ok(Response::new(answer.into()))
        })
    }
}
