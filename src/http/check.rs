//! The HTTP mode for gateways that ask over HTTP (docs/gateways.md):
//! `/check/nginx` (nginx `auth_request`), `/check/forward` (the forward-auth
//! convention of Traefik and Caddy) and `/check/envoy/**` (Envoy's HTTP
//! `ext_authz` service). Each converts its dialect's request into the same
//! [`AuthzRequest`] the gRPC adapter builds, and the [`Answer`] back into an HTTP
//! response; the decision and every header come from the one pipeline.
//!
//! Each dialect believes only its own headers: gateways such as Caddy forward
//! every client header to the auth endpoint, so were a client-sent
//! `X-Original-URI` read by `/check/forward`, a client could have a different
//! request checked than the one the gateway routes. The dialect's headers are not
//! the client's and never reach the model as headers; every other header does.

use crate::answer::{Answer, DenyKind, RequestId};
use crate::authorizer::Authorizer;
use crate::config::TrustedProxies;
use crate::request::AuthzRequest;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::{request::Parts, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Where Envoy's `http_service` is told to send its checks (`path_prefix`).
const ENVOY_PREFIX: &str = "/check/envoy";

/// Envoy's HTTP `ext_authz` removes the request headers listed here (comma
/// separated) before it forwards an allowed request: the gRPC
/// `headers_to_remove` of this dialect.
const ENVOY_HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Headers of the hop from the gateway to portcullis, never the client's.
const HOP_HEADERS: [&str; 4] = ["host", "content-length", "connection", "transfer-encoding"];

/// The `/check` endpoints, served on `server.check_listen` or `server.http_listen`.
pub fn router(authorizer: Arc<Authorizer>, trusted_proxies: TrustedProxies) -> Router {
    let checks = Checks {
        authorizer,
        trusted_proxies: Arc::new(trusted_proxies),
    };
    Router::new()
        .route("/check", any(check))
        .route("/check/", any(check))
        .route("/check/{*rest}", any(check))
        .with_state(checks)
}

#[derive(Clone)]
struct Checks {
    authorizer: Arc<Authorizer>,
    trusted_proxies: Arc<TrustedProxies>,
}

/// One gateway's way of saying which request to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// nginx `auth_request`: `X-Original-Method`, `X-Original-URI`, `Host`.
    Nginx,
    /// Traefik and Caddy forward auth: `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`.
    Forward,
    /// Envoy's HTTP `ext_authz`: the check's own method, `Host`, and its path
    /// after [`ENVOY_PREFIX`].
    Envoy,
}

impl Dialect {
    /// The dialect of a `/check` path, `None` for any other path.
    pub fn of(path: &str) -> Option<Dialect> {
        match path {
            "/check/nginx" => Some(Dialect::Nginx),
            "/check/forward" => Some(Dialect::Forward),
            _ if path == ENVOY_PREFIX || path.starts_with("/check/envoy/") => Some(Dialect::Envoy),
            _ => None,
        }
    }

    /// The headers the dialect describes the original request with: read for
    /// the request line, never passed on as the client's headers.
    fn own_headers(self) -> &'static [&'static str] {
        match self {
            Dialect::Nginx => &["x-original-method", "x-original-uri"],
            Dialect::Forward => &[
                "x-forwarded-method",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-forwarded-uri",
            ],
            Dialect::Envoy => &[],
        }
    }
}

/// Why a check cannot be read as its dialect's request: a 400, never an allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialectError {
    /// The gateway did not send a header its dialect requires.
    #[error("{endpoint} needs the {header} header, set by the gateway (docs/gateways.md)")]
    Missing {
        endpoint: &'static str,
        header: &'static str,
    },
    /// A header the dialect reads once came twice: which one the gateway meant
    /// is not known.
    #[error("{header} was sent more than once")]
    Repeated { header: &'static str },
    /// `/check/envoy` without the original path after it.
    #[error("the path after /check/envoy must be the original request's, starting with /")]
    EnvoyPath,
    /// A body larger than portcullis reads (Envoy's `with_request_body`).
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
}

/// The one value of `name`: `None` when absent or empty.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a [u8]>, DialectError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => Ok(Some(value.as_bytes()).filter(|v| !v.is_empty())),
        (Some(_), Some(_)) => Err(DialectError::Repeated { header: name }),
    }
}

/// The one value of `name`, which `endpoint` requires.
fn required<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
    endpoint: &'static str,
) -> Result<&'a [u8], DialectError> {
    single(headers, name)?.ok_or(DialectError::Missing {
        endpoint,
        header: name,
    })
}

/// The request the gateway asks about, from a check request in `dialect`:
/// method, host and path from the dialect's own headers (or, for Envoy, the
/// check's request line), every other header as the client's, and the client
/// address the caller worked out ([`client_address`]).
pub fn authz_request(
    dialect: Dialect,
    parts: &Parts,
    client_address: &str,
    body: Bytes,
) -> Result<AuthzRequest, DialectError> {
    let headers = &parts.headers;
    let mut builder = AuthzRequest::builder();
    match dialect {
        Dialect::Nginx => {
            let endpoint = "/check/nginx";
            builder.set_method_bytes(required(headers, "x-original-method", endpoint)?);
            builder.set_path_bytes(required(headers, "x-original-uri", endpoint)?);
            builder.set_host_bytes(host(parts).ok_or(DialectError::Missing {
                endpoint,
                header: "host",
            })?);
        }
        Dialect::Forward => {
            let endpoint = "/check/forward";
            builder.set_method_bytes(required(headers, "x-forwarded-method", endpoint)?);
            // Believed to be the gateway's, though the model has no scheme.
            required(headers, "x-forwarded-proto", endpoint)?;
            builder.set_host_bytes(required(headers, "x-forwarded-host", endpoint)?);
            builder.set_path_bytes(required(headers, "x-forwarded-uri", endpoint)?);
        }
        Dialect::Envoy => {
            let target = parts
                .uri
                .path_and_query()
                .map_or(parts.uri.path(), |pq| pq.as_str());
            let original = target
                .strip_prefix(ENVOY_PREFIX)
                .filter(|path| path.starts_with('/'))
                .ok_or(DialectError::EnvoyPath)?;
            builder.set_method_bytes(parts.method.as_str().as_bytes());
            builder.set_path_bytes(original.as_bytes());
            builder.set_host_bytes(host(parts).unwrap_or_default());
            builder.set_body(body);
        }
    }
    let own = dialect.own_headers();
    for (name, value) in headers {
        let name = name.as_str();
        if own.contains(&name) || HOP_HEADERS.contains(&name) {
            continue;
        }
        // A repeated header is one value joined with `,`, as Envoy sends it.
        builder.join_header_bytes(name.as_bytes(), value.as_bytes());
    }
    builder.set_address_bytes(client_address.as_bytes());
    Ok(builder.build())
}

/// `Host`, or the authority of an HTTP/2 check.
fn host(parts: &Parts) -> Option<&[u8]> {
    parts
        .headers
        .get(axum::http::header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()))
        .filter(|h| !h.is_empty())
}

/// The client's IP address (docs/gateways.md, "Client address"): the TCP peer,
/// unless the peer is one of `server.trusted_proxies`; then the rightmost
/// `X-Forwarded-For` address that is not itself a trusted proxy (every hop
/// appends the address it saw, so what lies left of the first untrusted one is
/// the client's to forge), else `X-Real-IP`. Empty when the peer is unknown.
pub fn client_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> String {
    let Some(peer) = peer.map(|ip| ip.to_canonical()) else {
        return String::new();
    };
    if !trusted.contains(peer) {
        return peer.to_string();
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    if !forwarded.is_empty() {
        // Walk from the nearest hop; an entry that is not an address ends the
        // walk at the last trusted hop seen.
        let mut nearest_trusted = peer;
        for entry in forwarded.iter().rev() {
            match parse_ip(entry) {
                Some(ip) if trusted.contains(ip) => nearest_trusted = ip,
                Some(ip) => return ip.to_string(),
                None => break,
            }
        }
        return nearest_trusted.to_string();
    }
    match single(headers, "x-real-ip") {
        Ok(Some(value)) => std::str::from_utf8(value)
            .ok()
            .and_then(parse_ip)
            .unwrap_or(peer)
            .to_string(),
        _ => peer.to_string(),
    }
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, with a port
/// (`192.0.2.1:443`, `[2001:db8::1]:443`) or surrounding spaces.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The HTTP response for `answer` in `dialect`: on allow 200 with the context
/// headers and the client's response headers (and, for Envoy, the headers to
/// remove); on deny the gRPC mode's status, headers and JSON body.
pub fn response(answer: Answer, dialect: Dialect) -> Response {
    let status = StatusCode::from_u16(answer.status()).unwrap_or(StatusCode::FORBIDDEN);
    let (headers, body) = match answer {
        Answer::Allow {
            set,
            remove,
            response,
        } => {
            let mut headers: Vec<(String, String)> = set.into_iter().chain(response).collect();
            // nginx and forward auth cannot remove by a list: their configs name
            // each context header (docs/gateways.md).
            if dialect == Dialect::Envoy && !remove.is_empty() {
                headers.push((ENVOY_HEADERS_TO_REMOVE.to_owned(), remove.join(",")));
            }
            (headers, String::new())
        }
        Answer::Deny { headers, body, .. } => (headers, body),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let map = response.headers_mut();
    for (name, value) in headers {
        // The answer's names are configured and validated, its values free of
        // control characters; anything else is left out rather than sent broken.
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => tracing::warn!(header = %name, "answer header not valid in HTTP; left out"),
        }
    }
    response
}

/// The JSON answer of a check that is not one: a 404 for an unknown `/check`
/// path, a 400 for a request its dialect cannot read.
fn refusal(status: StatusCode, error: &str, message: &str, request_id: &str) -> Response {
    let body = serde_json::json!({
        "error": error,
        "message": message,
        "request_id": request_id,
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// The request id a refusal echoes: the client's (under the configured
/// `headers.request_id`) when sane, else a new one.
fn request_id(parts: &Parts, authorizer: &Authorizer) -> String {
    let pipeline = authorizer.pipeline();
    let name = pipeline.headers().request_id.as_str();
    let mut builder = AuthzRequest::builder();
    if let Some(id) = parts.headers.get(name) {
        builder.push_header_bytes(name.as_bytes(), id.as_bytes());
    }
    RequestId::of(&builder.build(), name).value
}

async fn check(State(checks): State<Checks>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(dialect) = Dialect::of(parts.uri.path()) else {
        return refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such check endpoint: use /check/nginx, /check/forward or /check/envoy/... (docs/gateways.md)",
            &request_id(&parts, &checks.authorizer),
        );
    };
    // Only Envoy sends a body (`with_request_body`, on webhook routes).
    let body = match dialect {
        Dialect::Envoy => {
            let limit = super::webhooks::MAX_BODY;
            match axum::body::to_bytes(body, limit).await {
                Ok(body) => body,
                Err(_) => {
                    let error = DialectError::BodyTooLarge { limit };
                    return bad_request(&error, &parts, dialect, &checks.authorizer);
                }
            }
        }
        Dialect::Nginx | Dialect::Forward => Bytes::new(),
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let address = client_address(peer, &parts.headers, &checks.trusted_proxies);
    match authz_request(dialect, &parts, &address, body) {
        Ok(request) => response(checks.authorizer.check(&request).await, dialect),
        Err(e) => bad_request(&e, &parts, dialect, &checks.authorizer),
    }
}

/// A check its dialect cannot read: the deny body of a 400, as for a path
/// portcullis refuses to interpret.
fn bad_request(
    error: &DialectError,
    parts: &Parts,
    dialect: Dialect,
    authorizer: &Authorizer,
) -> Response {
    tracing::info!(path = %parts.uri.path(), %error, "check request refused");
    let answer = Answer::deny(
        DenyKind::BadRequest,
        &error.to_string(),
        &request_id(parts, authorizer),
    );
    response(answer, dialect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request as HttpRequest;

    fn parts(target: &str, headers: &[(&str, &str)]) -> Parts {
        let mut request = HttpRequest::builder().method("GET").uri(target);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).expect("a request").into_parts().0
    }

    fn read(
        dialect: Dialect,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<AuthzRequest, DialectError> {
        authz_request(dialect, &parts(target, headers), "192.0.2.7", Bytes::new())
    }

    #[test]
    fn each_path_has_its_dialect() {
        for (path, dialect) in [
            ("/check/nginx", Some(Dialect::Nginx)),
            ("/check/forward", Some(Dialect::Forward)),
            ("/check/envoy", Some(Dialect::Envoy)),
            ("/check/envoy/api/videos", Some(Dialect::Envoy)),
            ("/check/envoyx", None),
            ("/check/nginx/", None),
            ("/check", None),
            ("/check/", None),
            ("/check/traefik", None),
        ] {
            assert_eq!(Dialect::of(path), dialect, "{path}");
        }
    }

    #[test]
    fn nginx_reads_its_headers_and_passes_the_rest_as_the_clients() {
        let request = read(
            Dialect::Nginx,
            "/check/nginx",
            &[
                ("host", "api.example.test"),
                ("x-original-method", "POST"),
                ("x-original-uri", "/api/videos?page=2"),
                ("authorization", "Bearer t"),
                ("x-user-role", "ADMIN"),
                ("x-forwarded-uri", "/public"),
                ("content-length", "0"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
            ],
        )
        .expect("a complete nginx check");
        assert_eq!(
            (request.method(), request.host(), request.path()),
            ("POST", "api.example.test", "/api/videos?page=2")
        );
        assert_eq!(request.header("authorization"), Some("Bearer t"));
        assert_eq!(request.header("x-user-role"), Some("ADMIN"));
        // Another dialect's header is only a client header here.
        assert_eq!(request.header("x-forwarded-uri"), Some("/public"));
        assert_eq!(request.header("cookie"), Some("a=1,b=2"));
        for own in [
            "x-original-method",
            "x-original-uri",
            "host",
            "content-length",
        ] {
            assert_eq!(request.header(own), None, "{own}");
        }
        assert_eq!(request.client_address(), "192.0.2.7");
    }

    #[test]
    fn forward_reads_only_its_own_headers() {
        let request = read(
            Dialect::Forward,
            "/check/forward",
            &[
                ("host", "portcullis.internal"),
                ("x-forwarded-method", "DELETE"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "api.example.test"),
                ("x-forwarded-uri", "/api/admin/users"),
                // A client's attempt to have another request checked.
                ("x-original-uri", "/public"),
                ("x-original-method", "GET"),
            ],
        )
        .expect("a complete forward-auth check");
        assert_eq!(
            (request.method(), request.host(), request.path()),
            ("DELETE", "api.example.test", "/api/admin/users")
        );
        assert_eq!(request.header("x-original-uri"), Some("/public"));
        assert_eq!(request.header("x-forwarded-uri"), None);
        assert_eq!(request.header("host"), None);
    }

    #[test]
    fn envoy_takes_the_path_after_the_prefix_and_its_own_method() {
        let request = read(
            Dialect::Envoy,
            "/check/envoy/api/%2e%2e/admin?x=1",
            &[("host", "api.example.test"), ("x-original-uri", "/public")],
        )
        .expect("an Envoy check");
        assert_eq!(
            (request.method(), request.host(), request.path()),
            ("GET", "api.example.test", "/api/%2e%2e/admin?x=1")
        );
        assert_eq!(
            read(Dialect::Envoy, "/check/envoy", &[]),
            Err(DialectError::EnvoyPath)
        );
        assert_eq!(
            read(Dialect::Envoy, "/check/envoy?x=1", &[]),
            Err(DialectError::EnvoyPath)
        );
    }

    #[test]
    fn a_check_without_its_dialects_headers_is_refused() {
        let missing = |endpoint, header| Err(DialectError::Missing { endpoint, header });
        // nginx headers on the forward endpoint, and the other way round.
        let nginx_headers = [
            ("host", "h"),
            ("x-original-method", "GET"),
            ("x-original-uri", "/public"),
        ];
        assert_eq!(
            read(Dialect::Forward, "/check/forward", &nginx_headers),
            missing("/check/forward", "x-forwarded-method")
        );
        let forward_headers = [
            ("host", "h"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "h"),
            ("x-forwarded-uri", "/public"),
        ];
        assert_eq!(
            read(Dialect::Nginx, "/check/nginx", &forward_headers),
            missing("/check/nginx", "x-original-method")
        );
        for left_out in 1..forward_headers.len() {
            let headers: Vec<_> = forward_headers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != left_out)
                .map(|(_, h)| *h)
                .collect();
            assert!(
                read(Dialect::Forward, "/check/forward", &headers).is_err(),
                "without {}",
                forward_headers[left_out].0
            );
        }
        assert_eq!(
            read(
                Dialect::Nginx,
                "/check/nginx",
                &[
                    ("host", "h"),
                    ("x-original-method", "GET"),
                    ("x-original-uri", "")
                ]
            ),
            missing("/check/nginx", "x-original-uri")
        );
        assert_eq!(
            read(
                Dialect::Nginx,
                "/check/nginx",
                &[
                    ("host", "h"),
                    ("x-original-method", "GET"),
                    ("x-original-uri", "/public"),
                    ("x-original-uri", "/api/admin"),
                ]
            ),
            Err(DialectError::Repeated {
                header: "x-original-uri"
            })
        );
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn address(peer: &str, headers: &[(&str, &str)], trusted: &[&str]) -> String {
        let parts = parts("/", headers);
        client_address(
            Some(peer.parse().unwrap()),
            &parts.headers,
            &proxies(trusted),
        )
    }

    #[test]
    fn the_client_address_is_the_peer_unless_the_peer_is_trusted() {
        let xff = [("x-forwarded-for", "198.51.100.1, 203.0.113.9")];
        let trusted = ["10.0.0.0/8", "127.0.0.1/32"];
        for (case, peer, headers, want) in [
            (
                "untrusted peer: its headers are ignored",
                "192.0.2.1",
                &xff[..],
                "192.0.2.1",
            ),
            (
                "trusted peer: the rightmost forwarded",
                "10.0.0.5",
                &xff,
                "203.0.113.9",
            ),
            (
                "trusted hops are skipped",
                "10.0.0.5",
                &[("x-forwarded-for", "203.0.113.9, 10.1.1.1,10.2.2.2")],
                "203.0.113.9",
            ),
            (
                "repeated headers are one list",
                "127.0.0.1",
                &[
                    ("x-forwarded-for", "203.0.113.9"),
                    ("x-forwarded-for", "10.1.1.1"),
                ],
                "203.0.113.9",
            ),
            (
                "only trusted hops: the farthest",
                "10.0.0.5",
                &[("x-forwarded-for", "10.1.1.1, 10.2.2.2")],
                "10.1.1.1",
            ),
            (
                "garbage ends the walk at the last trusted hop",
                "10.0.0.5",
                &[("x-forwarded-for", "203.0.113.9, nonsense, 10.2.2.2")],
                "10.2.2.2",
            ),
            (
                "ports and brackets",
                "10.0.0.5",
                &[("x-forwarded-for", "[2001:db8::1]:443")],
                "2001:db8::1",
            ),
            (
                "X-Real-IP without X-Forwarded-For",
                "10.0.0.5",
                &[("x-real-ip", "203.0.113.4")],
                "203.0.113.4",
            ),
            ("neither: the peer", "10.0.0.5", &[], "10.0.0.5"),
            ("a mapped IPv4 peer", "::ffff:10.0.0.5", &xff, "203.0.113.9"),
        ] {
            assert_eq!(address(peer, headers, &trusted), want, "{case}");
        }
        assert_eq!(
            client_address(None, &HeaderMap::new(), &proxies(&[])),
            "",
            "unknown peer"
        );
    }

    fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn an_allow_is_200_with_the_context_and_envoy_also_gets_the_removals() {
        let allow = || Answer::Allow {
            set: vec![("x-user-id".into(), "u1".into())],
            remove: vec!["x-user-email".into(), "x-user-role".into()],
            response: vec![("ratelimit".into(), r#""r";r=4;t=1"#.into())],
        };
        let nginx = response(allow(), Dialect::Nginx);
        assert_eq!(nginx.status(), 200);
        assert_eq!(header(&nginx, "x-user-id"), Some("u1"));
        assert_eq!(header(&nginx, "ratelimit"), Some(r#""r";r=4;t=1"#));
        assert_eq!(header(&nginx, ENVOY_HEADERS_TO_REMOVE), None);
        let envoy = response(allow(), Dialect::Envoy);
        assert_eq!(
            header(&envoy, ENVOY_HEADERS_TO_REMOVE),
            Some("x-user-email,x-user-role")
        );
    }

    #[tokio::test]
    async fn a_deny_keeps_its_status_headers_and_body() {
        let deny = Answer::deny(DenyKind::InvalidCredentials, "token expired", "rid-1");
        let Answer::Deny { body, .. } = &deny else {
            unreachable!()
        };
        let body = body.clone();
        let response = response(deny, Dialect::Forward);
        assert_eq!(response.status(), 401);
        assert!(header(&response, "www-authenticate")
            .is_some_and(|c| c.contains(r#"error="invalid_token""#)));
        assert_eq!(header(&response, "content-type"), Some("application/json"));
        let sent = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the body");
        assert_eq!(sent, body.as_bytes());
    }
}
