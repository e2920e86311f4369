//! The one case table of the gateway end-to-end tests (`tests/e2e_gateways.rs`):
//! north-south user traffic through each way of asking portcullis — Envoy's
//! gRPC `ext_authz` (`mesh/envoy/front-proxy.yaml`), Envoy's HTTP `ext_authz`
//! (`mesh/envoy/front-proxy-http.yaml`), nginx `auth_request` (`mesh/nginx/`)
//! and Caddy `forward_auth` (`mesh/caddy/Caddyfile`). Every gateway must give
//! every row's answer: a behaviour that differs between modes is a failing row.
//!
//! Users come from an HTTP users service ([`UsersService`]) whose subjects carry
//! their role (`user_USER_…`); the subject `user_DOWN_…` is one the directory
//! cannot answer for (503).

use std::net::SocketAddr;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::get;
use axum::{Json, Router};
use http::Method;

use super::client::{RequestBuilder, Response};
use super::echo::EchoUpstream;
use super::tokens::{ClerkClaims, SigningKey};
use super::LoopbackServer;

/// The policy behind every gateway: `/public` for anyone, video reads for
/// users, the admin API for admins, and one rate-limited route.
pub const POLICY: &str = "\
default: deny
rules:
  - name: public
    to: { paths: [/public, /public/**] }
    from: anyone
  - name: videos-read
    to: { paths: [/api/videos, /api/videos/**], methods: [GET] }
    from: { users: { roles: [USER, ADMIN] } }
  - name: admin
    to: { paths: [/api/admin, /api/admin/**] }
    from: { users: { roles: [ADMIN] } }
  - name: limited
    to: { paths: [/api/limited] }
    from: { users: { roles: [USER, ADMIN] } }
    rate_limit: { per: user, rate: 1/m, burst: 1, scope: local }
";

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
    /// Identical requests sent first, each allowed (the rate-limit row).
    pub before: usize,
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

/// The row Envoy's HTTP `ext_authz` answers with its own 503: it takes any
/// 5xx of the authorization service for a failure, not an answer, and drops
/// its body (docs/gateways.md).
pub const DIRECTORY_DOWN: &str = "a user directory that is down";

/// The shared table.
pub fn cases() -> Vec<Case> {
    use Credential::{DirectoryDown, Expired, User};
    let case = |name, method, path, credential, want| Case {
        name,
        method,
        path,
        credential,
        headers: &[],
        before: 0,
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
    ]
}

/// The table's tokens, signed once per gateway run (each run has its own
/// portcullis, so rate limits do not carry over).
pub struct Tokens {
    user: ClerkClaims,
    admin: ClerkClaims,
    signed: [String; 4],
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
/// `user_ROLE_…` is `{"id": sub, "role": ROLE}`; `user_DOWN_…` gets a 503.
pub struct UsersService {
    server: LoopbackServer,
}

impl UsersService {
    pub async fn start() -> Self {
        let router = Router::new().route("/users/{sub}", get(user));
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

async fn user(Path(sub): Path<String>) -> AxumResponse {
    match sub.split('_').nth(1) {
        Some("DOWN") => (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
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
    let request = || {
        let mut request =
            RequestBuilder::new(addr, case.method.parse::<Method>().unwrap(), case.path);
        if let Some(token) = tokens.token(case.credential) {
            request = request.bearer(token);
        }
        case.headers.iter().fold(request, |request, (name, value)| {
            request.header(name, value)
        })
    };
    for i in 0..case.before {
        let response = request().send().await;
        assert_eq!(
            response.status, 200,
            "{what}: request {i} before: {response}"
        );
    }
    let seen_before = upstream.seen().len();
    let response = request().send().await;
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
        let context = ["x-user-", "x-service-", "x-caller-", "x-portcullis-"]
            .iter()
            .any(|prefix| name.starts_with(prefix));
        if context {
            assert_ne!(
                seen.header(name),
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
