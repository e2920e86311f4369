//! The Envoy ext_authz v3 gRPC adapter: `CheckRequest` → [`AuthzRequest`]
//! ([`decode`]), [`Answer`] → `CheckResponse`. Nothing else happens here.
//!
//! A deny is always an `Ok(CheckResponse)` carrying a deny status, never an
//! `Err(Status)`: Envoy treats gRPC errors under `failure_mode_allow`, which could
//! turn a deny into an allow (docs/answers.md).

mod decode;
mod service;

pub use decode::{check_request, CheckCodec, WireError};
pub use service::AuthorizationService;

use crate::answer::{Answer, DenyKind};
use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc;

/// What every allow sets as dynamic metadata: Envoy's ext_authz filter emits it
/// under its namespace (`envoy.filters.http.ext_authz`), where the in-proxy
/// module's guard reads that portcullis, not a fail-open path, let the request
/// through (docs/in-proxy.md). A client cannot set dynamic metadata.
pub const ALLOWED_METADATA: (&str, &str) = ("portcullis", "allowed");

fn allowed_metadata() -> Struct {
    let (key, value) = ALLOWED_METADATA;
    Struct {
        fields: [(
            key.to_owned(),
            Value {
                kind: Some(Kind::StringValue(value.to_owned())),
            },
        )]
        .into(),
    }
}

/// gRPC status codes (google.rpc.Code) Envoy reads from `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;
const UNAVAILABLE: i32 = 14;
const INVALID_ARGUMENT: i32 = 3;
const RESOURCE_EXHAUSTED: i32 = 8;

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
            Answer::Allow {
                set,
                remove,
                response,
            } => CheckResponse {
                status: Some(rpc::Status {
                    code: OK,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: set.into_iter().map(header).collect(),
                    headers_to_remove: remove,
                    response_headers_to_add: response.into_iter().map(header).collect(),
                    ..Default::default()
                })),
                dynamic_metadata: Some(allowed_metadata()),
            },
            Answer::Deny {
                kind,
                headers,
                body,
            } => {
                let code = match kind {
                    DenyKind::BadRequest => INVALID_ARGUMENT,
                    DenyKind::MissingCredentials | DenyKind::InvalidCredentials => UNAUTHENTICATED,
                    DenyKind::Unavailable => UNAVAILABLE,
                    DenyKind::Forbidden => PERMISSION_DENIED,
                    DenyKind::TooManyRequests => RESOURCE_EXHAUSTED,
                };
                CheckResponse {
                    status: Some(rpc::Status {
                        code,
                        ..Default::default()
                    }),
                    http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                        status: Some(HttpStatus {
                            code: i32::from(kind.status()),
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
    use crate::request::AuthzRequest;
    use envoy_types::pb::envoy::config::core::v3::{
        address, socket_address, Address, HeaderMap, Metadata, SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request as AttrRequest, TlsSession,
    };
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    use prost::Message as _;

    /// Envoy's message as Envoy encodes it (`envoy-types`' generated code), read
    /// the way the server reads it ([`decode`]).
    fn model(check: &CheckRequest) -> AuthzRequest {
        decoded(check.encode_to_vec())
    }

    fn decoded(wire: Vec<u8>) -> AuthzRequest {
        check_request(&wire).expect("Envoy's CheckRequest is read")
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
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "203.0.113.7".into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(4711)),
                    ..Default::default()
                })),
            }),
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
            (request.method(), request.host(), request.path()),
            ("POST", "api.example.test", "/api/x?y=1")
        );
        assert_eq!(request.header("authorization"), Some("Bearer t"));
        // A name not lower-cased (no Envoy sends one) is lowered, so stripping sees it.
        assert_eq!(request.header("x-user-id"), Some("spoofed"));
        assert_eq!(request.header_names().count(), 2);
        assert_eq!(request.body(), b"{}");
        assert_eq!(request.source().principal, "spiffe://example.org/ns/a/sa/b");
        assert!(request.source().tls, "a peer principal means mTLS");
        assert_eq!(request.client_address(), "203.0.113.7");
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
            // Ignored when `header_map` is sent.
            headers: [("x-user-role".to_string(), "OWNER".to_string())].into(),
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
        assert_eq!(request.body(), b"\x00\x01");
        assert!(!request.source().tls);
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
        assert!(model(&check).source().tls);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_not_refused() {
        // Envoy's strings are UTF-8; a sender that is not Envoy gets a decision on
        // the replaced text (never equal to a configured name), not a failed Check.
        let http = HttpRequest {
            path: "/caf@".into(),
            headers: [
                ("x-user-role".to_string(), "ADMIN#".to_string()),
                ("X-Mixed%".to_string(), "v".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let wire: Vec<u8> = check(http, None)
            .encode_to_vec()
            .into_iter()
            .map(|b| match b {
                b'@' => 0xe9,
                b'#' | b'%' => 0xff,
                b => b,
            })
            .collect();
        let request = decoded(wire);
        assert_eq!(request.path(), "/caf\u{fffd}");
        assert_eq!(request.header("x-user-role"), Some("ADMIN\u{fffd}"));
        assert_eq!(request.header("x-mixed\u{fffd}"), Some("v"));
    }

    #[test]
    fn a_message_sent_in_two_parts_merges() {
        // Protobuf: concatenated messages are one message, merged; a repeated
        // scalar's last value wins and map entries add up.
        let first = check(
            HttpRequest {
                method: "GET".into(),
                path: "/first".into(),
                headers: [("a".to_string(), "1".to_string())].into(),
                ..Default::default()
            },
            None,
        );
        let second = check(
            HttpRequest {
                path: "/second".into(),
                headers: [("b".to_string(), "2".to_string())].into(),
                ..Default::default()
            },
            None,
        );
        let mut wire = first.encode_to_vec();
        wire.extend(second.encode_to_vec());
        let request = decoded(wire);
        assert_eq!((request.method(), request.path()), ("GET", "/second"));
        assert_eq!(
            (request.header("a"), request.header("b")),
            (Some("1"), Some("2"))
        );
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_request() {
        let wire = check(
            HttpRequest {
                path: "/admin".into(),
                ..Default::default()
            },
            None,
        )
        .encode_to_vec();
        for cut in 1..wire.len() {
            assert_eq!(
                check_request(&wire[..cut]).err(),
                Some(WireError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_check_without_http_attributes_is_an_empty_request() {
        assert_eq!(model(&CheckRequest::default()), AuthzRequest::default());
    }
}
