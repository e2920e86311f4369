//! The Envoy ext_authz v3 gRPC adapter: `CheckRequest` → [`AuthzRequest`],
//! [`Answer`] → `CheckResponse`. Nothing else happens here.
//!
//! A deny is always an `Ok(CheckResponse)` carrying a deny status, never an
//! `Err(Status)`: Envoy treats gRPC errors under `failure_mode_allow`, which could
//! turn a deny into an allow (SPEC §8).

use crate::answer::Answer;
use crate::authorizer::Authorizer;
use crate::request::{AuthzRequest, Source};
use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// gRPC status codes (google.rpc.Code) Envoy reads from `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;
const UNAVAILABLE: i32 = 14;
const INVALID_ARGUMENT: i32 = 3;

impl From<&CheckRequest> for AuthzRequest {
    fn from(check: &CheckRequest) -> Self {
        let Some(http) = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
        else {
            // No HTTP attributes: an empty request, which fails path parsing and is
            // denied with 400.
            return AuthzRequest::default();
        };
        // `header_map` (Envoy's `encode_raw_headers: true`) keeps repeated headers
        // apart; join them like the `headers` map does.
        let headers = match &http.header_map {
            Some(map) if !map.headers.is_empty() => {
                let mut joined: HashMap<String, String> = HashMap::new();
                for h in &map.headers {
                    let value = if h.raw_value.is_empty() {
                        h.value.clone()
                    } else {
                        String::from_utf8_lossy(&h.raw_value).into_owned()
                    };
                    joined
                        .entry(h.key.to_ascii_lowercase())
                        .and_modify(|v| {
                            v.push(',');
                            v.push_str(&value);
                        })
                        .or_insert(value);
                }
                joined
            }
            _ => http
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        };
        let attributes = check.attributes.as_ref();
        let peer = attributes.and_then(|a| a.source.as_ref());
        let principal = peer.map(|p| p.principal.clone()).unwrap_or_default();
        let certificate = peer.map(|p| p.certificate.clone()).unwrap_or_default();
        // `tls_session` is sent only with `include_tls_session`; a peer identity or
        // certificate also means the hop was TLS.
        let tls = attributes.is_some_and(|a| a.tls_session.is_some())
            || !principal.is_empty()
            || !certificate.is_empty();
        AuthzRequest {
            method: http.method.clone(),
            host: http.host.clone(),
            path: http.path.clone(),
            headers,
            source: Source {
                principal,
                certificate,
                tls,
            },
            // `pack_as_bytes: true` sends `raw_body`; otherwise the body is a string.
            body: if http.raw_body.is_empty() {
                http.body.clone().into_bytes()
            } else {
                http.raw_body.clone()
            },
        }
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

impl From<Answer> for CheckResponse {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::Allow { set, remove } => CheckResponse {
                status: Some(rpc::Status {
                    code: OK,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: set.iter().map(|(k, v)| header(k, v)).collect(),
                    headers_to_remove: remove,
                    ..Default::default()
                })),
                ..Default::default()
            },
            Answer::Deny {
                status,
                headers,
                body,
            } => {
                let code = match status {
                    400 => INVALID_ARGUMENT,
                    401 => UNAUTHENTICATED,
                    503 => UNAVAILABLE,
                    _ => PERMISSION_DENIED,
                };
                CheckResponse {
                    status: Some(rpc::Status {
                        code,
                        ..Default::default()
                    }),
                    http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                        status: Some(HttpStatus {
                            code: i32::from(status),
                        }),
                        headers: headers.iter().map(|(k, v)| header(k, v)).collect(),
                        body,
                    })),
                    ..Default::default()
                }
            }
        }
    }
}

/// `envoy.service.auth.v3.Authorization`.
pub struct ExtAuthz {
    authorizer: Arc<Authorizer>,
}

impl ExtAuthz {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        Self { authorizer }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let request = AuthzRequest::from(request.get_ref());
        let answer = self.authorizer.check(&request).await;
        Ok(Response::new(answer.into()))
    }
}
