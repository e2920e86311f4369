//! The Envoy ext_authz v3 gRPC adapter: `CheckRequest` → [`AuthzRequest`],
//! [`Answer`] → `CheckResponse`. Nothing else happens here.
//!
//! A deny is always an `Ok(CheckResponse)` carrying a deny status, never an
//! `Err(Status)`: Envoy treats gRPC errors under `failure_mode_allow`, which could
//! turn a deny into an allow (SPEC §8).

mod service;
pub mod wire;

pub use service::AuthorizationService;

use crate::answer::Answer;
use crate::request::{AuthzRequest, Headers, Source, Text};
use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;

/// gRPC status codes (google.rpc.Code) Envoy reads from `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;
const UNAVAILABLE: i32 = 14;
const INVALID_ARGUMENT: i32 = 3;

impl From<wire::CheckRequest> for AuthzRequest {
    /// Takes the request's strings as they lie in the received buffer: no header
    /// is copied.
    fn from(check: wire::CheckRequest) -> Self {
        let Some(attributes) = check.attributes else {
            return AuthzRequest::default();
        };
        let Some(http) = attributes.request.and_then(|r| r.http) else {
            // No HTTP attributes: an empty request, which fails path parsing and is
            // denied with 400.
            return AuthzRequest::default();
        };
        let headers = match http.header_map {
            // `header_map` (Envoy's `encode_raw_headers: true`) keeps repeated
            // headers apart; join them like the `headers` map does.
            Some(map) if !map.headers.is_empty() => {
                let mut joined = Headers::with_capacity(map.headers.len());
                for h in map.headers {
                    let value = text(if h.raw_value.is_empty() {
                        h.value
                    } else {
                        h.raw_value
                    });
                    let name = header_name(h.key);
                    match joined.get_mut(&name) {
                        Some(earlier) => *earlier = Text::from(format!("{earlier},{value}")),
                        None => joined.push(name, value),
                    }
                }
                joined
            }
            _ => {
                let mut headers = Headers::with_capacity(http.headers.len());
                for entry in http.headers {
                    headers.push(header_name(entry.key), text(entry.value));
                }
                headers
            }
        };
        let (principal, certificate) = attributes
            .source
            .map(|peer| (text(peer.principal), text(peer.certificate)))
            .unwrap_or_default();
        // `tls_session` is sent only with `include_tls_session`; a peer identity or
        // certificate also means the hop was TLS.
        let tls =
            attributes.tls_session.is_some() || !principal.is_empty() || !certificate.is_empty();
        AuthzRequest {
            method: text(http.method),
            host: text(http.host),
            path: text(http.path),
            headers,
            source: Source {
                principal,
                certificate,
                tls,
            },
            // `pack_as_bytes: true` sends `raw_body`; otherwise the body is a string.
            body: if http.raw_body.is_empty() {
                http.body
            } else {
                http.raw_body
            },
        }
    }
}

/// A wire string as text, sharing its buffer. Envoy sends UTF-8 (protobuf strings
/// are); anything else is not refused but has each bad sequence replaced by
/// U+FFFD, so it can never equal a configured name or value by accident.
fn text(bytes: Bytes) -> Text {
    Text::try_from(bytes.clone())
        .unwrap_or_else(|_| Text::from(String::from_utf8_lossy(&bytes).into_owned()))
}

/// A header name, lower-cased: Envoy sends lower-case names; anything else is
/// lowered here, so stripping and lookups see it.
fn header_name(bytes: Bytes) -> Text {
    if bytes.iter().any(u8::is_ascii_uppercase) {
        Text::from(String::from_utf8_lossy(&bytes).to_ascii_lowercase())
    } else {
        text(bytes)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{Address, HeaderMap, Metadata};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request as AttrRequest, TlsSession,
    };
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    use prost::Message as _;

    /// Envoy's message as Envoy encodes it, decoded the way the server does
    /// ([`wire`]), into the request model.
    fn model(check: &CheckRequest) -> AuthzRequest {
        let wire = wire::CheckRequest::decode(check.encode_to_vec().as_slice())
            .expect("Envoy's CheckRequest decodes as portcullis' wire::CheckRequest");
        AuthzRequest::from(wire)
    }

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
        let mut check = check(http, Some(peer));
        // Fields portcullis never reads are skipped, whatever they hold.
        let attributes = check.attributes.as_mut().expect("attributes");
        attributes.destination = Some(Peer {
            principal: "spiffe://example.org/ns/x/sa/dest".into(),
            ..Default::default()
        });
        attributes.context_extensions = [("k".to_string(), "v".to_string())].into();
        attributes.metadata_context = Some(Metadata::default());
        let request = model(&check);
        assert_eq!(
            (&*request.method, &*request.host, &*request.path),
            ("POST", "api.example.test", "/api/x?y=1")
        );
        assert_eq!(request.header("authorization"), Some("Bearer t"));
        // A name not lower-cased (no Envoy sends one) is lowered, so stripping sees it.
        assert_eq!(request.header("x-user-id"), Some("spoofed"));
        assert_eq!(&request.body[..], b"{}");
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
        let request = model(&check(http, None));
        assert_eq!(request.header("x-user-role"), Some("ADMIN,USER"));
        assert_eq!(request.header("cookie"), Some("a=1"));
        assert_eq!(request.header("x-plain"), Some("text"));
        assert_eq!(request.header("x-bytes"), Some("caf\u{fffd}"));
        assert_eq!(&request.body[..], b"\x00\x01");
        assert!(!request.source.tls);
    }

    #[test]
    fn a_tls_session_alone_marks_the_hop_tls() {
        let mut check = check(
            HttpRequest {
                path: "/".into(),
                ..Default::default()
            },
            None,
        );
        check.attributes.as_mut().expect("attributes").tls_session = Some(TlsSession {
            sni: "api.example.test".into(),
        });
        assert!(model(&check).source.tls);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_not_refused() {
        // Envoy's strings are UTF-8; a sender that is not Envoy gets a decision on
        // the replaced text (never equal to a configured name), not a failed Check.
        let check = wire::CheckRequest {
            attributes: Some(wire::AttributeContext {
                request: Some(wire::Request {
                    http: Some(wire::HttpRequest {
                        path: Bytes::from_static(b"/caf\xe9"),
                        headers: vec![
                            wire::MapEntry {
                                key: Bytes::from_static(b"x-user-role"),
                                value: Bytes::from_static(b"ADMIN\xff"),
                            },
                            wire::MapEntry {
                                key: Bytes::from_static(b"X-Mixed\xff"),
                                value: Bytes::from_static(b"v"),
                            },
                        ],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
        };
        let decoded = wire::CheckRequest::decode(check.encode_to_vec().as_slice())
            .expect("decodes: bytes fields take any byte");
        let request = AuthzRequest::from(decoded);
        assert_eq!(&*request.path, "/caf\u{fffd}");
        assert_eq!(request.header("x-user-role"), Some("ADMIN\u{fffd}"));
        assert_eq!(request.header("x-mixed\u{fffd}"), Some("v"));
    }

    #[test]
    fn a_check_without_http_attributes_is_an_empty_request() {
        assert_eq!(model(&CheckRequest::default()), AuthzRequest::default());
    }
}
