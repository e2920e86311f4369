//! ext_authz `Check` calls straight to a portcullis gRPC listener (no Envoy), for
//! tests that look at the answer itself.

use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context::{HttpRequest, Request as AttrRequest},
    authorization_client::AuthorizationClient,
    check_response::HttpResponse,
    AttributeContext, CheckRequest,
};
use std::collections::HashMap;
use std::net::SocketAddr;

/// A `CheckRequest` as Envoy sends it for `method path` with `headers`.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "api.example.test".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The upstream headers set on allow, or the deny status.
pub type Verdict = Result<HashMap<String, String>, i32>;

/// Sends one Check to `grpc` and reduces the answer to a [`Verdict`].
pub async fn check(
    grpc: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Verdict {
    let mut client = AuthorizationClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect to portcullis");
    let response = client
        .check(request(method, path, headers))
        .await
        .expect("Check never fails as an RPC")
        .into_inner();
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => Ok(ok
            .headers
            .into_iter()
            .filter_map(|h| h.header)
            .map(|h| (h.key, h.value))
            .collect()),
        Some(HttpResponse::DeniedResponse(denied)) => Err(denied.status.map_or(0, |s| s.code)),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The `x-user-role` an allowed GET of `path` with `token` carries, or the status.
pub async fn role(grpc: SocketAddr, path: &str, token: &str) -> Result<String, i32> {
    let bearer = format!("Bearer {token}");
    check(grpc, "GET", path, &[("authorization", &bearer)])
        .await
        .map(|headers| headers.get("x-user-role").cloned().unwrap_or_default())
}
