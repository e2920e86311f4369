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

impl From<CheckRequest> for AuthzRequest {
    /// Moves the request's strings out of the message: no header is copied.
    fn from(check: CheckRequest) -> Self {
        let Some(mut attributes) = check.attributes else {
            return AuthzRequest::default();
        };
        let Some(mut http) = attributes.request.take().and_then(|r| r.http) else {
            // No HTTP attributes: an empty request, which fails path parsing and is
            // denied with 400.
            return AuthzRequest::default();
        };
        // `header_map` (Envoy's `encode_raw_headers: true`) keeps repeated headers
        // apart; join them like the `headers` map does.
        let headers = match http.header_map.take() {
            Some(map) if !map.headers.is_empty() => {
                let mut joined: HashMap<String, String> = HashMap::with_capacity(map.headers.len());
                for h in map.headers {
                    let value = if h.raw_value.is_empty() {
                        h.value
                    } else {
                        String::from_utf8(h.raw_value)
                            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
                    };
                    joined
                        .entry(lowercase(h.key))
                        .and_modify(|v| {
                            v.push(',');
                            v.push_str(&value);
                        })
                        .or_insert(value);
                }
                joined
            }
            // Envoy sends lower-case names; anything else is lowered here.
            _ if http
                .headers
                .keys()
                .any(|k| k.bytes().any(|b| b.is_ascii_uppercase())) =>
            {
                http.headers
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect()
            }
            _ => http.headers,
        };
        let (principal, certificate) = attributes
            .source
            .map(|peer| (peer.principal, peer.certificate))
            .unwrap_or_default();
        // `tls_session` is sent only with `include_tls_session`; a peer identity or
        // certificate also means the hop was TLS.
        let tls =
            attributes.tls_session.is_some() || !principal.is_empty() || !certificate.is_empty();
        AuthzRequest {
            method: http.method,
            host: http.host,
            path: http.path,
            headers,
            source: Source {
                principal,
                certificate,
                tls,
            },
            // `pack_as_bytes: true` sends `raw_body`; otherwise the body is a string.
            body: if http.raw_body.is_empty() {
                http.body.into_bytes()
            } else {
                http.raw_body
            },
        }
    }
}

fn lowercase(mut name: String) -> String {
    name.make_ascii_lowercase();
    name
}

fn header((key, value): (String, String)) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key,
            value,
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
                    headers: set.into_iter().map(header).collect(),
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
                        headers: headers.into_iter().map(header).collect(),
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
        let request = AuthzRequest::from(request.into_inner());
        let answer = self.authorizer.check(&request).await;
        Ok(Response::new(answer.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{Address, HeaderMap};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request as AttrRequest,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;

    fn check(http: HttpRequest, source: Option<Peer>) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source,
                request: Some(AttrRequest {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_request_model_takes_envoys_fields() {
        let http = HttpRequest {
            method: "POST".into(),
            host: "api.example.test".into(),
            path: "/api/x?y=1".into(),
            headers: [
                ("authorization".to_string(), "Bearer t".to_string()),
                ("X-User-Id".to_string(), "spoofed".to_string()),
            ]
            .into(),
            body: "{}".into(),
            ..Default::default()
        };
        let peer = Peer {
            principal: "spiffe://example.org/ns/a/sa/b".into(),
            address: Some(Address::default()),
            ..Default::default()
        };
        let request = AuthzRequest::from(check(http, Some(peer)));
        assert_eq!(
            (
                request.method.as_str(),
                request.host.as_str(),
                request.path.as_str()
            ),
            ("POST", "api.example.test", "/api/x?y=1")
        );
        assert_eq!(request.header("authorization"), Some("Bearer t"));
        // A name not lower-cased (no Envoy sends one) is lowered, so stripping sees it.
        assert_eq!(request.header("x-user-id"), Some("spoofed"));
        assert_eq!(request.body, b"{}");
        assert_eq!(request.source.principal, "spiffe://example.org/ns/a/sa/b");
        assert!(request.source.tls, "a peer principal means mTLS");
    }

    #[test]
    fn raw_header_map_joins_repeats_and_prefers_raw_values() {
        let raw = |key: &str, value: &[u8]| HeaderValue {
            key: key.into(),
            raw_value: value.to_vec(),
            ..Default::default()
        };
        let http = HttpRequest {
            path: "/".into(),
            header_map: Some(HeaderMap {
                headers: vec![
                    raw("x-user-role", b"ADMIN"),
                    raw("X-User-Role", b"USER"),
                    raw("cookie", b"a=1"),
                    HeaderValue {
                        key: "x-plain".into(),
                        value: "text".into(),
                        ..Default::default()
                    },
                    raw("x-bytes", b"caf\xe9"),
                ],
            }),
            raw_body: b"\x00\x01".to_vec(),
            ..Default::default()
        };
        let request = AuthzRequest::from(check(http, None));
        assert_eq!(request.header("x-user-role"), Some("ADMIN,USER"));
        assert_eq!(request.header("cookie"), Some("a=1"));
        assert_eq!(request.header("x-plain"), Some("text"));
        assert_eq!(request.header("x-bytes"), Some("caf\u{fffd}"));
        assert_eq!(request.body, b"\x00\x01");
        assert!(!request.source.tls);
    }

    #[test]
    fn a_check_without_http_attributes_is_an_empty_request() {
        assert_eq!(
            AuthzRequest::from(CheckRequest::default()),
            AuthzRequest::default()
        );
    }
}
