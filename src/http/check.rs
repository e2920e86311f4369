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

use crate::answer::{self, Answer, DenyKind, RequestId};
use crate::authorizer::Authorizer;
use crate::config::TrustedProxies;
use crate::headers::HeadersConfig;
use crate::metrics::DecisionLabels;
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

/// Set by `mesh/nginx/` on its second check of a denied request, the one whose
/// whole answer goes to the client (and cleared on the first). That answer must
/// never be an allow: its context headers would reach the client, not the app.
const NGINX_REPLAY: &str = "x-portcullis-replay";

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
enum Dialect {
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
    fn of(path: &str) -> Option<Dialect> {
        match path {
            "/check/nginx" => Some(Dialect::Nginx),
            "/check/forward" => Some(Dialect::Forward),
            _ if path == ENVOY_PREFIX || path.starts_with("/check/envoy/") => Some(Dialect::Envoy),
            _ => None,
        }
    }

    /// The headers the dialect describes the original request with: read for
    /// the request line (or, for nginx, the replay mark), never passed on as
    /// the client's headers.
    fn own_headers(self) -> &'static [&'static str] {
        match self {
            Dialect::Nginx => &["x-original-method", "x-original-uri", NGINX_REPLAY],
            Dialect::Forward => &[
                "x-forwarded-method",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-forwarded-uri",
            ],
            Dialect::Envoy => &[],
        }
    }

    /// Whether this check is nginx's second one for a denied request
    /// ([`NGINX_REPLAY`]).
    fn is_replay(self, headers: &HeaderMap) -> bool {
        self == Dialect::Nginx && headers.contains_key(NGINX_REPLAY)
    }
}

/// Why a check cannot be read as its dialect's request: a 400, never an allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum DialectError {
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
    /// A `#` (or a byte outside printable ASCII) in the original request
    /// target: RFC 9112 allows none there, and where the path ends or what it
    /// spells is up to whoever reads it (portcullis cuts at `#`, an app behind
    /// nginx may not).
    #[error(
        "{header} holds '#' or a byte outside printable ASCII, which a request target never does"
    )]
    Target { header: &'static str },
    /// A client header whose name, with `_` read as `-`, is one only
    /// portcullis may set: frameworks that read headers as CGI variables
    /// (`HTTP_X_USER_ROLE`) cannot tell the two apart, and no gateway removes it.
    #[error("the header {name} reads as {dashed}, which only portcullis may set; use '-' in header names")]
    UnderscoredContextHeader { name: String, dashed: String },
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

/// The original request target from the dialect header `name`: printable
/// ASCII without `#`.
fn target<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
    endpoint: &'static str,
) -> Result<&'a [u8], DialectError> {
    let target = required(headers, name, endpoint)?;
    match target.iter().all(|&b| b.is_ascii_graphic() && b != b'#') {
        true => Ok(target),
        false => Err(DialectError::Target { header: name }),
    }
}

/// The request the gateway asks about, from a check request in `dialect`:
/// method, host and path from the dialect's own headers (or, for Envoy, the
/// check's request line), every other header as the client's, and the client
/// address the caller worked out ([`client_address`]). `owned` says which
/// header names only portcullis may set.
fn authz_request(
    dialect: Dialect,
    parts: &Parts,
    client_address: &str,
    body: Bytes,
    owned: &HeadersConfig,
) -> Result<AuthzRequest, DialectError> {
    let headers = &parts.headers;
    let mut builder = AuthzRequest::builder();
    match dialect {
        Dialect::Nginx => {
            let endpoint = "/check/nginx";
            builder.set_method_bytes(required(headers, "x-original-method", endpoint)?);
            builder.set_path_bytes(target(headers, "x-original-uri", endpoint)?);
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
            builder.set_path_bytes(target(headers, "x-forwarded-uri", endpoint)?);
        }
        Dialect::Envoy => {
            // A `#` never gets here: the HTTP parser ends the target before it.
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
        // Envoy refuses every underscored name (`headers_with_underscores_action`)
        // and nginx drops them; Caddy passes `X_User_Role` to us and the app.
        if name.contains('_') {
            let dashed = name.replace('_', "-");
            if answer::owns(owned, &dashed) {
                return Err(DialectError::UnderscoredContextHeader {
                    name: name.to_owned(),
                    dashed,
                });
            }
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

/// The client's IP address (docs/gateways.md, "The client address"): the TCP
/// peer, unless the peer is one of `server.trusted_proxies`; then, when any
/// `X-Forwarded-For` came, the rightmost address in it that is not itself a
/// trusted proxy (every hop appends the address it saw, so what lies left of
/// the first untrusted one is the client's to forge); only without any
/// `X-Forwarded-For`, `X-Real-IP`. Empty when the peer is unknown.
fn client_address(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> String {
    let Some(peer) = peer.map(|ip| ip.to_canonical()) else {
        return String::new();
    };
    if !trusted.contains(peer) {
        return peer.to_string();
    }
    if headers.contains_key("x-forwarded-for") {
        return forwarded_client(peer, headers, trusted).to_string();
    }
    // One X-Real-IP, set by the trusted peer itself.
    match single(headers, "x-real-ip") {
        Ok(Some(value)) => std::str::from_utf8(value)
            .ok()
            .and_then(parse_ip)
            .unwrap_or(peer)
            .to_string(),
        _ => peer.to_string(),
    }
}

/// The client in `X-Forwarded-For` (all such headers, in order), walked from
/// the nearest hop behind the trusted `peer`: the first address that is not a
/// trusted proxy; if all are, the farthest. An entry that is not an address
/// (a value that is not even text counts as one) ends the walk at the last
/// trusted hop: what lies left of it cannot be told from the client's own.
fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut entries: Vec<Option<IpAddr>> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        match value.to_str() {
            Ok(text) => entries.extend(text.split(',').map(parse_ip)),
            Err(_) => entries.push(None),
        }
    }
    let mut nearest_trusted = peer;
    for entry in entries.into_iter().rev() {
        match entry {
            Some(ip) if trusted.contains(ip) => nearest_trusted = ip,
            Some(ip) => return ip,
            None => break,
        }
    }
    nearest_trusted
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

/// A header of an answer that HTTP cannot carry (an invalid name or value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the answer header {0} is not valid in HTTP")]
struct UnencodableHeader(String);

/// The HTTP response for `answer` in `dialect`: on allow 200 with the context
/// headers and the client's response headers (and, for Envoy, the headers to
/// remove); on deny the gRPC mode's status, headers and JSON body. A header
/// that cannot be sent fails the whole answer: an allow without a header it
/// sets could let a client's own copy through.
fn response(answer: Answer, dialect: Dialect) -> Result<Response, UnencodableHeader> {
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
    http_response(status, headers, body)
}

/// `status` with `headers` and `body`, or the first header HTTP cannot carry.
fn http_response(
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: String,
) -> Result<Response, UnencodableHeader> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let map = response.headers_mut();
    for (name, value) in headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => return Err(UnencodableHeader(name)),
        }
    }
    Ok(response)
}

/// The JSON answer of a check that is not one (a 404 for an unknown `/check`
/// path, a 500 for an answer HTTP cannot carry): a deny's headers and body
/// (docs/answers.md) with its own status and error code.
fn refusal(status: StatusCode, error: &str, message: &str, request_id: &str) -> Response {
    let (headers, body) = answer::refusal(error, message, request_id);
    // Its headers are constants, which always encode.
    http_response(status, headers, body).unwrap_or_else(|_| {
        let mut response = Response::default();
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        response
    })
}

/// The request id a refusal echoes: the client's (under the configured
/// `headers.request_id`) when sane, else a new one.
fn request_id(parts: &Parts, authorizer: &Authorizer) -> String {
    let pipeline = authorizer.pipeline();
    let value = parts.headers.get(pipeline.headers().request_id.as_str());
    RequestId::from_value(value.map(HeaderValue::as_bytes)).value
}

async fn check(State(checks): State<Checks>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let authorizer = &*checks.authorizer;
    let Some(dialect) = Dialect::of(parts.uri.path()) else {
        count_unread(authorizer);
        return refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such check endpoint: use /check/nginx, /check/forward or /check/envoy/... (docs/gateways.md)",
            &request_id(&parts, authorizer),
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
                    return bad_request(&error, &parts, dialect, authorizer);
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
    let pipeline = authorizer.pipeline();
    let request = match authz_request(dialect, &parts, &address, body, pipeline.headers()) {
        Ok(request) => request,
        Err(e) => return bad_request(&e, &parts, dialect, authorizer),
    };
    let mut answer = authorizer.check(&request).await;
    if dialect.is_replay(&parts.headers) && matches!(answer, Answer::Allow { .. }) {
        // Denied a moment ago, allowed now (a bucket refilled, the directory
        // back, a reload): the answer goes to the client, not the app, so no
        // allow and no context; the client asks again.
        let id = RequestId::of(&request, &pipeline.headers().request_id).value;
        tracing::info!(request_id = %id, "nginx's second check allowed what its first denied: 503");
        answer = Answer::deny(
            DenyKind::Unavailable,
            "the decision changed while it was being answered; retry the request",
            &id,
        );
    }
    send(answer, dialect, &parts, authorizer)
}

/// [`response`], or a 500 when HTTP cannot carry the answer: never an allow
/// without a header it sets.
fn send(answer: Answer, dialect: Dialect, parts: &Parts, authorizer: &Authorizer) -> Response {
    response(answer, dialect).unwrap_or_else(|error| {
        tracing::error!(%error, "answer refused with 500");
        refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "portcullis could not encode its answer as HTTP",
            &request_id(parts, authorizer),
        )
    })
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
    count_unread(authorizer);
    let answer = Answer::deny(
        DenyKind::BadRequest,
        &error.to_string(),
        &request_id(parts, authorizer),
    );
    send(answer, dialect, parts, authorizer)
}

/// Counts a check that never reached the pipeline (a 400 or 404 here) as a
/// deny of stage `request` in `portcullis_decisions_total`, so a gateway
/// misconfigured into refusals shows on the dashboard.
fn count_unread(authorizer: &Authorizer) {
    authorizer
        .metrics()
        .decisions
        .get_or_create(&DecisionLabels {
            result: "deny",
            rule: String::new(),
            principal: "anonymous",
            stage: "request",
        })
        .inc();
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
        let owned = HeadersConfig::default();
        authz_request(
            dialect,
            &parts(target, headers),
            "192.0.2.7",
            Bytes::new(),
            &owned,
        )
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
    fn a_target_with_a_fragment_or_outside_printable_ascii_is_refused() {
        let nginx = |uri| {
            read(
                Dialect::Nginx,
                "/check/nginx",
                &[
                    ("host", "h"),
                    ("x-original-method", "GET"),
                    ("x-original-uri", uri),
                ],
            )
        };
        assert_eq!(
            nginx("/public/x#/../../api/admin").map(|_| ()),
            Err(DialectError::Target {
                header: "x-original-uri"
            })
        );
        assert!(
            nginx("/public/x?q=%23").is_ok(),
            "an encoded # is a character"
        );
        for raw in ["/public/\u{e9}", "/public/a b"] {
            assert_eq!(
                nginx(raw).map(|_| ()),
                Err(DialectError::Target {
                    header: "x-original-uri"
                }),
                "{raw}"
            );
        }
        let forward = read(
            Dialect::Forward,
            "/check/forward",
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "h"),
                ("x-forwarded-uri", "/public#x"),
            ],
        );
        assert_eq!(
            forward.map(|_| ()),
            Err(DialectError::Target {
                header: "x-forwarded-uri"
            })
        );
    }

    #[test]
    fn an_underscored_name_of_a_context_header_is_refused_in_every_dialect() {
        let checks = [
            (Dialect::Nginx, "/check/nginx"),
            (Dialect::Forward, "/check/forward"),
            (Dialect::Envoy, "/check/envoy/public"),
        ];
        let dialect_headers = [
            ("host", "h"),
            ("x-original-method", "GET"),
            ("x-original-uri", "/public"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "h"),
            ("x-forwarded-uri", "/public"),
        ];
        // (header, refused): under a stripped prefix or a configured name.
        for (name, refused) in [
            ("x_user_role", true),
            ("X_User_Id", true),
            ("x-user_email", true),
            ("x_service_name", true),
            ("x_portcullis_token", true),
            ("x_caller_spiffe_id", true),
            ("x_custom_header", false),
            ("x_request_id", false),
        ] {
            for (dialect, target) in checks {
                let mut headers = dialect_headers.to_vec();
                headers.push((name, "ADMIN"));
                let got = read(dialect, target, &headers);
                assert_eq!(
                    matches!(got, Err(DialectError::UnderscoredContextHeader { .. })),
                    refused,
                    "{name} at {target}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn only_nginx_reads_the_replay_mark_and_never_as_a_clients_header() {
        let replayed = [
            ("host", "h"),
            ("x-original-method", "GET"),
            ("x-original-uri", "/public"),
            (NGINX_REPLAY, "1"),
        ];
        let parts = parts("/check/nginx", &replayed);
        assert!(Dialect::Nginx.is_replay(&parts.headers));
        assert!(!Dialect::Forward.is_replay(&parts.headers));
        assert!(!Dialect::Envoy.is_replay(&parts.headers));
        let request = read(Dialect::Nginx, "/check/nginx", &replayed).expect("a check");
        assert_eq!(request.header(NGINX_REPLAY), None);
        let first = self::parts("/check/nginx", &replayed[..3]);
        assert!(!Dialect::Nginx.is_replay(&first.headers));
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
            (
                "with X-Forwarded-For, X-Real-IP is never read",
                "10.0.0.5",
                &[
                    ("x-forwarded-for", "nonsense"),
                    ("x-real-ip", "203.0.113.4"),
                ],
                "10.0.0.5",
            ),
            (
                "an empty X-Forwarded-For is still one",
                "10.0.0.5",
                &[("x-forwarded-for", ""), ("x-real-ip", "203.0.113.4")],
                "10.0.0.5",
            ),
        ] {
            assert_eq!(address(peer, headers, &trusted), want, "{case}");
        }
        assert_eq!(
            client_address(None, &HeaderMap::new(), &proxies(&[])),
            "",
            "unknown peer"
        );
    }

    #[test]
    fn an_x_forwarded_for_that_is_not_text_is_a_garbage_entry() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"198.51.100.\xff").unwrap(),
        );
        headers.append("x-forwarded-for", "10.2.2.2".parse().unwrap());
        headers.append("x-real-ip", "198.51.100.1".parse().unwrap());
        let peer = Some("10.0.0.5".parse().unwrap());
        assert_eq!(client_address(peer, &headers, &trusted), "10.2.2.2");
        headers.remove("x-forwarded-for");
        headers.append("x-forwarded-for", HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(
            client_address(peer, &headers, &trusted),
            "10.0.0.5",
            "never X-Real-IP once X-Forwarded-For came"
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
        let nginx = response(allow(), Dialect::Nginx).expect("encodes");
        assert_eq!(nginx.status(), 200);
        assert_eq!(header(&nginx, "x-user-id"), Some("u1"));
        assert_eq!(header(&nginx, "ratelimit"), Some(r#""r";r=4;t=1"#));
        assert_eq!(header(&nginx, ENVOY_HEADERS_TO_REMOVE), None);
        let envoy = response(allow(), Dialect::Envoy).expect("encodes");
        assert_eq!(
            header(&envoy, ENVOY_HEADERS_TO_REMOVE),
            Some("x-user-email,x-user-role")
        );
    }

    #[test]
    fn an_allow_whose_header_cannot_be_sent_is_no_allow() {
        for (name, value) in [("x-user-role", "a\nb"), ("bad name", "v")] {
            let allow = Answer::Allow {
                set: vec![
                    ("x-user-id".into(), "u1".into()),
                    (name.into(), value.into()),
                ],
                remove: vec![],
                response: vec![],
            };
            assert_eq!(
                response(allow, Dialect::Nginx).map(|_| ()),
                Err(UnencodableHeader(name.into()))
            );
        }
    }

    #[tokio::test]
    async fn a_deny_keeps_its_status_headers_and_body() {
        let deny = Answer::deny(DenyKind::InvalidCredentials, "token expired", "rid-1");
        let Answer::Deny { body, .. } = &deny else {
            unreachable!()
        };
        let body = body.clone();
        let response = response(deny, Dialect::Forward).expect("encodes");
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

/// Properties of the two readers a client reaches through any gateway: the
/// dialect reader and the client address, both parsers facing the network.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::arbitrary::any;
    use proptest::prelude::{prop, prop_assert, prop_assert_eq, prop_oneof, proptest};
    use proptest::prelude::{ProptestConfig, Strategy};

    /// Names a check may carry: every dialect's, the client address's,
    /// context headers dashed and underscored, and arbitrary ones.
    fn name() -> impl Strategy<Value = String> {
        let known = prop::sample::select(vec![
            "host",
            "x-original-method",
            "x-original-uri",
            "x-forwarded-method",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-uri",
            "x-forwarded-for",
            "x-real-ip",
            "x-user-role",
            "x_user_role",
            NGINX_REPLAY,
            "authorization",
            "x-request-id",
        ]);
        prop_oneof![known.prop_map(String::from), "[a-zA-Z_-]{1,12}"]
    }

    /// Values: addresses, paths and methods, lists of them, and any bytes.
    fn value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..32),
            "[0-9a-fA-F.:, \\[\\]/#?%]{0,40}".prop_map(String::into_bytes),
            prop::sample::select(vec![
                "10.0.0.1",
                "127.0.0.1",
                "203.0.113.9",
                "198.51.100.1, 10.0.0.2",
                "[2001:db8::1]:443",
                "GET",
                "/api/admin",
                "/public#/../api/admin",
            ])
            .prop_map(|v| v.as_bytes().to_vec()),
        ]
    }

    /// A header map from pairs, leaving out what HTTP cannot carry.
    fn headers() -> impl Strategy<Value = HeaderMap> {
        prop::collection::vec((name(), value()), 0..10).prop_map(|pairs| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(&value),
                ) {
                    map.append(name, value);
                }
            }
            map
        })
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ])
    }

    /// Any address, trusted or not (IPv4-heavy, so the trusted nets are hit).
    fn ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            3 => any::<[u8; 4]>().prop_map(IpAddr::from),
            2 => prop::sample::select(vec![[10, 1, 2, 3], [127, 0, 0, 1], [10, 0, 0, 5]])
                .prop_map(IpAddr::from),
            1 => any::<[u8; 16]>().prop_map(IpAddr::from),
        ]
    }

    /// An address no trusted proxy has.
    fn untrusted_ip() -> impl Strategy<Value = IpAddr> {
        ip().prop_filter("untrusted", |ip| !trusted().contains(*ip))
    }

    fn check_parts(dialect: Dialect, headers: HeaderMap) -> Parts {
        let target = match dialect {
            Dialect::Nginx => "/check/nginx",
            Dialect::Forward => "/check/forward",
            Dialect::Envoy => "/check/envoy/api/videos",
        };
        let mut parts = axum::http::Request::builder()
            .uri(target)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        parts.headers = headers;
        parts
    }

    fn dialect() -> impl Strategy<Value = Dialect> {
        prop::sample::select(vec![Dialect::Nginx, Dialect::Forward, Dialect::Envoy])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever the headers, the reader answers; what it reads as the
        /// request line is the dialect's own header, never a `#` target, and
        /// neither the dialect's headers nor an underscored owned name reach
        /// the model as the client's.
        #[test]
        fn the_dialect_reader_believes_only_its_own_headers(
            dialect in dialect(),
            headers in headers(),
            foreign in headers(),
            given in prop::collection::vec(prop::bool::weighted(0.9), 7),
        ) {
            let owned = HeadersConfig::default();
            // Every dialect's headers, most of the time (and maybe doubled,
            // empty or garbled by the generated ones).
            let mut headers = headers;
            let base = [
                ("host", "api.example.test"),
                ("x-original-method", "GET"),
                ("x-original-uri", "/api/videos"),
                ("x-forwarded-method", "DELETE"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "api.example.test"),
                ("x-forwarded-uri", "/api/admin"),
            ];
            for ((name, value), given) in base.into_iter().zip(given) {
                if given {
                    headers.append(name, HeaderValue::from_static(value));
                }
            }
            let parts = check_parts(dialect, headers.clone());
            let Ok(request) = authz_request(dialect, &parts, "192.0.2.1", Bytes::new(), &owned) else {
                return Ok(());
            };
            let own = dialect.own_headers();
            for name in request.header_names() {
                prop_assert!(!own.contains(&name) && !HOP_HEADERS.contains(&name), "{name}");
                prop_assert!(!(name.contains('_') && answer::owns(&owned, &name.replace('_', "-"))), "{name}");
            }
            let path_header = match dialect {
                Dialect::Nginx => Some("x-original-uri"),
                Dialect::Forward => Some("x-forwarded-uri"),
                Dialect::Envoy => None,
            };
            if let Some(path_header) = path_header {
                let sent = headers.get(path_header).expect("required");
                prop_assert!(!sent.as_bytes().contains(&b'#'));
                prop_assert_eq!(request.path().as_bytes(), sent.as_bytes());
            }
            // Another dialect's headers, added by a client, change nothing
            // (unless they make the check unreadable).
            let mut more = headers.clone();
            for (name, value) in &foreign {
                let theirs = [Dialect::Nginx, Dialect::Forward, Dialect::Envoy]
                    .into_iter()
                    .filter(|d| *d != dialect)
                    .any(|d| d.own_headers().contains(&name.as_str()));
                if theirs && !own.contains(&name.as_str()) {
                    more.append(name, value.clone());
                }
            }
            if let Ok(again) = authz_request(dialect, &check_parts(dialect, more), "192.0.2.1", Bytes::new(), &owned) {
                prop_assert_eq!(
                    (again.method(), again.host(), again.path()),
                    (request.method(), request.host(), request.path())
                );
            }
        }

        /// An untrusted peer is the client whatever it sends; the answer is
        /// always an address.
        #[test]
        fn an_untrusted_peer_is_the_client(peer in untrusted_ip(), headers in headers()) {
            let address = client_address(Some(peer), &headers, &trusted());
            prop_assert_eq!(address, peer.to_canonical().to_string());
        }

        /// Behind a trusted gateway that appends the client's address to
        /// whatever X-Forwarded-For the client sent (any bytes, any number of
        /// headers, X-Real-IP too), the client is the appended address.
        #[test]
        fn nothing_a_client_sends_moves_its_address(
            gateway in ip().prop_filter("trusted", |ip| trusted().contains(*ip)),
            client in untrusted_ip(),
            mut headers in headers(),
        ) {
            headers.append("x-forwarded-for", HeaderValue::from_str(&client.to_string()).unwrap());
            let address = client_address(Some(gateway), &headers, &trusted());
            prop_assert_eq!(address, client.to_canonical().to_string());
        }

        /// Any answer parses as an address; once an X-Forwarded-For came,
        /// X-Real-IP plays no part.
        #[test]
        fn the_client_address_is_an_address(peer in ip(), headers in headers(), real in ip()) {
            let address = client_address(Some(peer), &headers, &trusted());
            prop_assert!(address.parse::<IpAddr>().is_ok(), "{address}");
            if headers.contains_key("x-forwarded-for") {
                let mut other = headers.clone();
                other.insert("x-real-ip", HeaderValue::from_str(&real.to_string()).unwrap());
                prop_assert_eq!(client_address(Some(peer), &other, &trusted()), address);
            }
        }
    }
}
