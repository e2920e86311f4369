//! The one case table of the gateway end-to-end tests (`tests/e2e_gateways.rs`):
//! north-south user traffic through each way of asking portcullis — Envoy's
//! gRPC `ext_authz` (`mesh/envoy/front-proxy.yaml`), Envoy's HTTP `ext_authz`
//! (`mesh/envoy/front-proxy-http.yaml`), nginx `auth_request` (`mesh/nginx/`)
//! and Caddy `forward_auth` (`mesh/caddy/Caddyfile`). Every gateway must give
//! every row's answer: a behaviour that differs between modes is a failing row.
//!
//! Users come from an HTTP users service ([`UsersService`]) whose subjects carry
//! their role (`user_USER_…`); the subject `user_DOWN_…` is one the directory
//! cannot answer for (503), `user_BACK_…` one it fails once, then answers.
//!
//! Rows may send from another loopback address (`127.0.0.2`, …), so `per: ip`
//! limits see distinct clients; portcullis trusts only the gateways' `127.0.0.1`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::client::{RequestBuilder, Response, DEFAULT_HOST};
use super::echo::EchoUpstream;
use super::tokens::{ClerkClaims, SigningKey};
use super::LoopbackServer;

/// The policy behind every gateway: `/public` for anyone, video reads for
/// users, the admin API for admins, and a route limited per user and one per
/// client address.
pub fn policy() -> String {
    format!(
        "{}{}",
        super::portcullis::USER_TRAFFIC_POLICY,
        "  - name: per-ip
    to: { paths: [/api/per-ip] }
    from: anyone
    rate_limit: { per: ip, rate: 1/m, burst: 1, scope: local }
  - name: limited
    to: { paths: [/api/limited] }
    from: { users: { roles: [USER, ADMIN] } }
    rate_limit: { per: user, rate: 1/m, burst: 1, scope: local }
"
    )
}

/// What the request carries to say who sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    None,
    /// A valid Clerk session token of a user with this role (`USER`, `ADMIN`).
    User(&'static str),
    /// A USER token that expired two minutes ago.
    Expired,
    /// A valid token of a user the directory cannot answer for (503).
    DirectoryDown,
    /// A valid USER token whose first lookup fails (503) and every later one
    /// answers: a directory back between nginx's two checks.
    DirectoryBack,
}

/// What must happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The upstream answers, with the verified context of a user of this role
    /// (`None`: anonymous, no context header at all).
    Reached(Option<&'static str>),
    /// portcullis' deny with this status reaches the client: its JSON body, a
    /// Bearer challenge on 401, `Retry-After` on 429. The upstream sees nothing.
    Denied(u16),
    /// This status, and the upstream sees nothing; whose answer it is may
    /// differ (Envoy refuses an encoded slash itself).
    Refused(u16),
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub name: &'static str,
    pub method: &'static str,
    /// Sent byte-for-byte.
    pub path: &'static str,
    pub credential: Credential,
    /// More client headers: spoofed context, other dialects' headers, a request id.
    pub headers: &'static [(&'static str, &'static str)],
    /// The loopback address the request is sent from; `None`: `127.0.0.1`.
    pub from: Option<&'static str>,
    /// Requests sent first, each allowed (the rate-limit rows): the same
    /// request without `headers`, from `before_from` (`None`: `from`).
    pub before: usize,
    pub before_from: Option<&'static str>,
    pub want: Want,
}

/// A client pretending to be an admin service and user.
const SPOOFED: &[(&str, &str)] = &[
    ("x-user-id", "admin"),
    ("x-user-role", "ADMIN"),
    ("x-service-name", "admin"),
    (
        "x-caller-spiffe-id",
        "spiffe://example.org/ns/default/sa/admin",
    ),
];

/// A client describing another, allowed request in every gateway dialect.
const OTHER_DIALECTS: &[(&str, &str)] = &[
    ("x-original-method", "GET"),
    ("x-original-uri", "/public/x"),
    ("x-forwarded-method", "GET"),
    ("x-forwarded-uri", "/public/x"),
    ("x-forwarded-host", "api.example.test"),
    ("x-forwarded-proto", "https"),
];

/// The row nginx cannot pass (docs/gateways.md): it cannot remove headers by
/// prefix, so a client's context header that portcullis does not set by
/// default reaches the app.
pub const NGINX_LIMIT: &str = "a context header portcullis does not set";

/// The rows Envoy's HTTP `ext_authz` answers with its own 503: it takes any
/// 5xx of the authorization service for a failure, not an answer, and drops
/// its body (docs/gateways.md).
pub const DIRECTORY_DOWN: &str = "a user directory that is down";
pub const DIRECTORY_BACK: &str = "a user directory back between two checks";

/// The row nginx answers its own way: it drops a header name with `_`
/// (`underscores_in_headers off`) and lets the request through without it;
/// Envoy and portcullis (behind Caddy) refuse the request.
pub const UNDERSCORED: &str = "USER with an underscored context header";

/// The row Caddy answers its own way: Go escapes a raw `#` in the target, so
/// `X-Forwarded-Uri` and the app both get `%23`, and portcullis judges the
/// path the app gets (here the admin API: 401). nginx passes the `#` on and
/// portcullis refuses it (400); Envoy refuses it itself.
pub const RAW_FRAGMENT: &str = "a raw # in the target";

/// The shared table.
pub fn cases() -> Vec<Case> {
    use Credential::{DirectoryBack, DirectoryDown, Expired, User};
    let case = |name, method, path, credential, want| Case {
        name,
        method,
        path,
        credential,
        headers: &[],
        from: None,
        before: 0,
        before_from: None,
        want,
    };
    let user = Want::Reached(Some("USER"));
    let anonymous = Want::Reached(None);
    vec![
        case(
            "USER reads videos",
            "GET",
            "/api/videos?page=2",
            User("USER"),
            user,
        ),
        case(
            "ADMIN deletes through the admin API",
            "DELETE",
            "/api/admin/users/7",
            User("ADMIN"),
            Want::Reached(Some("ADMIN")),
        ),
        case(
            "anonymous on /public",
            "GET",
            "/public/x",
            Credential::None,
            anonymous,
        ),
        case(
            "no token",
            "GET",
            "/api/videos",
            Credential::None,
            Want::Denied(401),
        ),
        case(
            "an expired token",
            "GET",
            "/api/videos",
            Expired,
            Want::Denied(401),
        ),
        case(
            "USER on the admin API",
            "GET",
            "/api/admin/users",
            User("USER"),
            Want::Denied(403),
        ),
        case(
            "the original method decides",
            "POST",
            "/api/videos",
            User("USER"),
            Want::Denied(403),
        ),
        Case {
            headers: SPOOFED,
            ..case(
                "USER with spoofed context",
                "GET",
                "/api/videos",
                User("USER"),
                user,
            )
        },
        Case {
            headers: SPOOFED,
            ..case(
                "anonymous with spoofed context",
                "GET",
                "/public/x",
                Credential::None,
                anonymous,
            )
        },
        Case {
            headers: SPOOFED,
            ..case(
                "spoofed context alone on the admin API",
                "GET",
                "/api/admin/users",
                Credential::None,
                Want::Denied(401),
            )
        },
        Case {
            headers: &[("x-user-email", "admin@example.test")],
            ..case(NGINX_LIMIT, "GET", "/public/x", Credential::None, anonymous)
        },
        Case {
            headers: &[("X_User_Role", "ADMIN"), ("x_user_id", "admin")],
            ..case(
                UNDERSCORED,
                "GET",
                "/api/videos",
                User("USER"),
                Want::Refused(400),
            )
        },
        Case {
            headers: &[(
                "x-forwarded-client-cert",
                "By=spiffe://example.org/ns/default/sa/videos;URI=spiffe://example.org/ns/default/sa/admin",
            )],
            ..case(
                "a client's own certificate header",
                "GET",
                "/public/x",
                Credential::None,
                anonymous,
            )
        },
        Case {
            headers: &[("x-portcullis-replay", "1")],
            ..case(
                "a client's nginx replay mark",
                "GET",
                "/api/videos",
                User("USER"),
                user,
            )
        },
        Case {
            headers: OTHER_DIALECTS,
            ..case(
                "another request described in dialect headers",
                "GET",
                "/api/admin/users",
                Credential::None,
                Want::Denied(401),
            )
        },
        case(
            "dot segments",
            "GET",
            "/api/videos/../admin/users",
            User("USER"),
            Want::Denied(403),
        ),
        case(
            "encoded dot segments",
            "GET",
            "/api/videos/%2e%2e/admin/users",
            User("USER"),
            Want::Denied(403),
        ),
        case(
            "/public then dot segments",
            "GET",
            "/public/../api/admin/users",
            Credential::None,
            Want::Denied(401),
        ),
        case(
            "a double slash",
            "GET",
            "/api//admin/users",
            User("USER"),
            Want::Denied(403),
        ),
        case(
            "an encoded slash",
            "GET",
            "/api%2Fadmin/users",
            User("USER"),
            Want::Refused(400),
        ),
        case(
            RAW_FRAGMENT,
            "GET",
            "/public/x#/../../api/admin/users",
            Credential::None,
            Want::Refused(400),
        ),
        Case {
            headers: &[("x-request-id", "rid-gateway-case")],
            ..case(
                "the client's request id is kept",
                "GET",
                "/api/videos",
                User("USER"),
                user,
            )
        },
        case(
            DIRECTORY_DOWN,
            "GET",
            "/api/videos",
            DirectoryDown,
            Want::Denied(503),
        ),
        case(
            DIRECTORY_BACK,
            "GET",
            "/api/videos",
            DirectoryBack,
            Want::Denied(503),
        ),
        Case {
            before: 1,
            ..case(
                "over the rate limit",
                "GET",
                "/api/limited",
                User("USER"),
                Want::Denied(429),
            )
        },
        Case {
            from: Some("127.0.0.3"),
            before: 1,
            before_from: Some("127.0.0.2"),
            ..case(
                "another client has its own per-ip bucket",
                "GET",
                "/api/per-ip",
                Credential::None,
                anonymous,
            )
        },
        Case {
            headers: &[
                ("x-forwarded-for", "198.51.100.9"),
                ("x-real-ip", "198.51.100.9"),
            ],
            from: Some("127.0.0.4"),
            before: 1,
            ..case(
                "a forged X-Forwarded-For makes no other client",
                "GET",
                "/api/per-ip",
                Credential::None,
                Want::Denied(429),
            )
        },
    ]
}

/// The table's tokens, signed once per gateway run (each run has its own
/// portcullis, so rate limits do not carry over).
pub struct Tokens {
    user: ClerkClaims,
    admin: ClerkClaims,
    signed: [String; 5],
}

/// A Clerk user whose subject names its role, as [`UsersService`] reads it.
fn claims(role: &str) -> ClerkClaims {
    let mut claims = ClerkClaims::user(role);
    claims.sub = format!("user_{role}_{:016x}", rand::random::<u64>());
    claims
}

impl Tokens {
    pub fn new(key: &SigningKey) -> Self {
        let (user, admin) = (claims("USER"), claims("ADMIN"));
        let signed = [
            user.sign(key),
            admin.sign(key),
            claims("USER").expired().sign(key),
            claims("DOWN").sign(key),
            claims("BACK").sign(key),
        ];
        Self {
            user,
            admin,
            signed,
        }
    }

    fn token(&self, credential: Credential) -> Option<&str> {
        let i = match credential {
            Credential::None => return None,
            Credential::User("USER") => 0,
            Credential::User("ADMIN") => 1,
            Credential::User(other) => panic!("no user with role {other}"),
            Credential::Expired => 2,
            Credential::DirectoryDown => 3,
            Credential::DirectoryBack => 4,
        };
        Some(&self.signed[i])
    }

    /// The subject (and `x-user-id`) of the user of `role`.
    fn subject(&self, role: &str) -> &str {
        match role {
            "USER" => &self.user.sub,
            "ADMIN" => &self.admin.sub,
            other => panic!("no user with role {other}"),
        }
    }
}

/// The HTTP users service (`users.source: http://…/users/{sub}`): a subject
/// `user_ROLE_…` is `{"id": sub, "role": ROLE}`; `user_DOWN_…` gets a 503;
/// `user_BACK_…` a 503 the first time, then the role USER.
pub struct UsersService {
    server: LoopbackServer,
}

/// The `user_BACK_…` subjects asked for once.
type Asked = Arc<Mutex<HashSet<String>>>;

impl UsersService {
    pub async fn start() -> Self {
        let router = Router::new()
            .route("/users/{sub}", get(user))
            .with_state(Asked::default());
        Self {
            server: LoopbackServer::start(router).await,
        }
    }

    /// The `users:` section for portcullis (lines indented by two spaces).
    pub fn users_yaml(&self) -> String {
        format!(
            "  source: http://{}/users/{{sub}}\n  on_unknown: deny\n",
            self.server.addr()
        )
    }
}

async fn user(State(asked): State<Asked>, Path(sub): Path<String>) -> AxumResponse {
    match sub.split('_').nth(1) {
        Some("DOWN") => (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
        Some("BACK") if asked.lock().unwrap().insert(sub.clone()) => {
            (StatusCode::SERVICE_UNAVAILABLE, "down, once").into_response()
        }
        Some("BACK") => Json(serde_json::json!({ "id": sub, "role": "USER" })).into_response(),
        Some(role) => Json(serde_json::json!({ "id": sub, "role": role })).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Sends `case` to the gateway listening at `addr` (named `gateway` in
/// messages) in front of `upstream`, and asserts the row's answer.
pub async fn run_case(
    gateway: &str,
    addr: SocketAddr,
    upstream: &EchoUpstream,
    case: &Case,
    tokens: &Tokens,
) {
    let what = format!("{gateway}: {}", case.name);
    let token = tokens.token(case.credential).map(|t| format!("Bearer {t}"));
    let request = |headers: &'static [(&'static str, &'static str)], from: Option<&'static str>| {
        let mut all: Vec<(&str, &str)> = token
            .as_deref()
            .map(|t| ("authorization", t))
            .into_iter()
            .collect();
        all.extend_from_slice(headers);
        send(addr, from, case.method, case.path, all)
    };
    for i in 0..case.before {
        let response = request(&[], case.before_from.or(case.from)).await;
        assert_eq!(
            response.status, 200,
            "{what}: request {i} before: {response}"
        );
    }
    let seen_before = upstream.seen().len();
    let response = request(case.headers, case.from).await;
    match case.want {
        Want::Reached(role) => assert_reached(&what, case, &response, role, tokens),
        Want::Denied(status) => {
            assert_eq!(response.status, status, "{what}: {response}");
            assert_portcullis_deny(&what, case, &response);
        }
        Want::Refused(status) => {
            assert_eq!(response.status, status, "{what}: {response}");
        }
    }
    if !matches!(case.want, Want::Reached(_)) {
        assert_eq!(
            upstream.seen().len(),
            seen_before,
            "{what}: the upstream was reached: {response}"
        );
    }
}

/// Sends `method target` with `headers` to `addr` from the loopback address
/// `from`. The usual client when it can; otherwise (another local address, or
/// a `#` in the target, which `http::Uri` would cut off) the request is
/// written by hand, byte for byte, over a connection of its own.
async fn send(
    addr: SocketAddr,
    from: Option<&str>,
    method: &str,
    target: &str,
    headers: Vec<(&str, &str)>,
) -> Response {
    if from.is_none() && !target.contains('#') {
        let request = RequestBuilder::new(addr, method.parse::<Method>().unwrap(), target);
        return headers
            .iter()
            .fold(request, |request, (name, value)| {
                request.header(name, value)
            })
            .send()
            .await;
    }
    let from: IpAddr = from
        .unwrap_or("127.0.0.1")
        .parse()
        .expect("a loopback address");
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    let mut stream = socket
        .connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr} from {from}: {e}"));
    let mut head = format!("{method} {target} HTTP/1.1\r\nhost: {DEFAULT_HOST}\r\n");
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .expect("read the response");
    parse_response(&raw).unwrap_or_else(|| {
        panic!(
            "{method} {target} from {from}: not an HTTP response: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// A whole HTTP/1.1 response read until the server closed the connection.
fn parse_response(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
            HeaderValue::from_str(value.trim()).ok()?,
        );
    }
    let mut rest = &raw[end + 4..];
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size = std::str::from_utf8(&rest[..line_end]).ok()?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break body;
            }
            body.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
    } else {
        rest.to_vec()
    };
    Some(Response {
        status,
        headers,
        body: body.into(),
    })
}

fn assert_reached(
    what: &str,
    case: &Case,
    response: &Response,
    role: Option<&str>,
    tokens: &Tokens,
) {
    assert_eq!(response.status, 200, "{what}: {response}");
    let seen = response
        .upstream()
        .unwrap_or_else(|| panic!("{what}: not the upstream's answer: {response}"));
    assert_eq!(
        seen.method, case.method,
        "{what}: the method the upstream saw"
    );
    assert_eq!(seen.header("x-user-role"), role, "{what}: x-user-role");
    assert_eq!(
        seen.header("x-user-id"),
        role.map(|role| tokens.subject(role)),
        "{what}: x-user-id"
    );
    for (name, value) in case.headers {
        if only_for_the_gateway(name) {
            assert_ne!(
                seen.header(&name.to_ascii_lowercase()),
                Some(*value),
                "{what}: the client's {name} arrived"
            );
        }
    }
    if role.is_none() {
        let context: Vec<_> = seen
            .headers
            .keys()
            .filter(|name| {
                name.starts_with("x-user-")
                    || name.starts_with("x-service-")
                    || *name == "x-caller-spiffe-id"
            })
            .collect();
        assert!(
            context.is_empty(),
            "{what}: context headers on an anonymous request: {context:?}"
        );
    }
    for (name, value) in &seen.headers {
        assert!(
            !value.starts_with('{'),
            "{what}: {name} is a gateway placeholder: {value}"
        );
    }
    let request_id = seen.header("x-request-id").unwrap_or_default();
    assert!(
        !request_id.is_empty(),
        "{what}: the upstream got no x-request-id"
    );
    if let Some((_, sent)) = case
        .headers
        .iter()
        .find(|(name, _)| *name == "x-request-id")
    {
        assert_eq!(request_id, *sent, "{what}: the client's request id");
    }
}

/// A header only portcullis or the gateway may say, also spelled with `_`
/// (which CGI-style apps read as `-`): a client's copy never reaches the app.
fn only_for_the_gateway(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('_', "-");
    ["x-user-", "x-service-", "x-caller-", "x-portcullis-"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || name == "x-forwarded-client-cert"
}

fn assert_portcullis_deny(what: &str, case: &Case, response: &Response) {
    assert!(
        response.upstream().is_none(),
        "{what}: the upstream answered: {response}"
    );
    let body: serde_json::Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("{what}: not a JSON body ({e}): {response}"));
    for field in ["error", "message", "request_id"] {
        assert!(
            body[field].as_str().is_some_and(|v| !v.is_empty()),
            "{what}: not portcullis' deny body ({field}): {body}"
        );
    }
    if let Some((_, sent)) = case
        .headers
        .iter()
        .find(|(name, _)| *name == "x-request-id")
    {
        assert_eq!(body["request_id"], *sent, "{what}: request id");
    }
    match response.status {
        401 => {
            let challenge = response.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer ") && challenge.contains(r#"realm="portcullis""#),
                "{what}: challenge {challenge:?}"
            );
        }
        429 => assert!(
            response.header("retry-after").is_some(),
            "{what}: 429 without Retry-After: {response}"
        ),
        _ => {}
    }
}
