//! The answer to one request (docs/answers.md), independent of the wire: what to add to and
//! remove from the upstream request on allow, or the response the client gets on
//! deny. Both adapters (gRPC ext_authz and HTTP `/check`) only translate it.

use crate::headers::{ContextField, HeadersConfig, ServiceField};
use crate::identity::context_token::INTERNAL_TOKEN_HEADER;
use crate::policy::{Decision, Effect};
use crate::principal::Principal;
use crate::request::AuthzRequest;
use serde_json::Value;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Forward the request upstream, after removing `remove` and setting `set`
    /// (overwriting any value the client sent); `response` is added to the
    /// response the client gets (e.g. `RateLimit`, docs/rate-limits.md).
    Allow {
        set: Vec<(String, String)>,
        remove: Vec<String>,
        response: Vec<(String, String)>,
    },
    /// Answer the client directly, with `kind`'s status.
    Deny {
        kind: DenyKind,
        headers: Vec<(String, String)>,
        body: String,
    },
}

/// Why a request is denied, which decides the status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// 400: the request cannot be interpreted safely (an ambiguous path).
    BadRequest,
    /// 401: no credential, and none was presented.
    MissingCredentials,
    /// 401: a credential was presented and is not valid.
    InvalidCredentials,
    /// 403: authenticated, but the policy does not allow it.
    Forbidden,
    /// 429: allowed, but over the deciding rule's `rate_limit`.
    TooManyRequests,
    /// 503: a dependency needed for this decision is down.
    Unavailable,
}

impl DenyKind {
    pub fn status(self) -> u16 {
        match self {
            DenyKind::BadRequest => 400,
            DenyKind::MissingCredentials | DenyKind::InvalidCredentials => 401,
            DenyKind::Forbidden => 403,
            DenyKind::TooManyRequests => 429,
            DenyKind::Unavailable => 503,
        }
    }

    fn error_code(self) -> &'static str {
        match self {
            DenyKind::BadRequest => "bad_request",
            DenyKind::MissingCredentials => "unauthenticated",
            DenyKind::InvalidCredentials => "invalid_token",
            DenyKind::Forbidden => "forbidden",
            DenyKind::TooManyRequests => "rate_limited",
            DenyKind::Unavailable => "unavailable",
        }
    }
}

impl Answer {
    /// A deny of `kind` with a JSON body `{error, message, request_id}`. `message`
    /// must already be safe for the client (no token, key or backend detail).
    pub fn deny(kind: DenyKind, message: &str, request_id: &str) -> Answer {
        let (mut headers, body) = refusal(kind.error_code(), message, request_id);
        match kind {
            // RFC 6750 §3: no error code when no credential was presented.
            DenyKind::MissingCredentials => headers.push((
                "www-authenticate".into(),
                r#"Bearer realm="portcullis""#.into(),
            )),
            DenyKind::InvalidCredentials => headers.push((
                "www-authenticate".into(),
                format!(
                    r#"Bearer realm="portcullis", error="invalid_token", error_description="{}""#,
                    message.replace(['"', '\\'], "'")
                ),
            )),
            _ => {}
        }
        Answer::Deny {
            kind,
            headers,
            body,
        }
    }

    /// The answer to a policy decision: allow with the context headers, or 401 for
    /// an anonymous principal (credentials could help), 403 otherwise.
    pub fn for_decision(
        decision: &Decision,
        config: &HeadersConfig,
        request: &AuthzRequest,
        principal: &Principal,
        request_id: &RequestId,
    ) -> Answer {
        match (decision.effect, principal) {
            (Effect::Allow, _) => Answer::allow(
                config,
                request,
                principal,
                decision.forward_user,
                request_id,
            ),
            (Effect::Deny, Principal::Anonymous) => Answer::deny(
                DenyKind::MissingCredentials,
                "authentication is required for this resource",
                &request_id.value,
            ),
            (Effect::Deny, _) => Answer::deny(
                DenyKind::Forbidden,
                &format!("access denied: {}", decision.reason),
                &request_id.value,
            ),
        }
    }

    /// The HTTP status the client gets: 200 for an allow.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Allow { .. } => 200,
            Answer::Deny { kind, .. } => kind.status(),
        }
    }

    /// An allow: strips every client-sent header under the configured prefixes,
    /// then sets the verified context headers and the request id. The user
    /// headers carry the user the deciding rule sees: a service's forwarded user
    /// only when the rule has `forward_user` (docs/policy.md); otherwise a caller's
    /// `x-user-*` are stripped like any client-sent header.
    pub fn allow(
        config: &HeadersConfig,
        request: &AuthzRequest,
        principal: &Principal,
        forward_user: bool,
        request_id: &RequestId,
    ) -> Answer {
        let mut set = Vec::new();
        if let Some(service) = principal.service() {
            for (header, field) in &config.service {
                let value = match field {
                    ServiceField::Name => service.name.clone(),
                    ServiceField::Namespace => service.namespace.clone(),
                    ServiceField::SpiffeId => Some(service.spiffe_id.clone()),
                };
                if let Some(value) = value {
                    set.push((header.clone(), value));
                }
            }
        }
        if let Some(user) = principal.user_seen(forward_user) {
            for (header, field) in &config.user {
                let value = match field {
                    ContextField::User(name) => user.fields.get(name).and_then(header_value),
                    // Text claims (`sub`, `iss`) without parsing a payload for them.
                    ContextField::Token(name) => match user.claims.text(name) {
                        Some(text) => without_controls(text.into_owned()),
                        None => user.claims.get(name).and_then(header_value),
                    },
                };
                if let Some(value) = value {
                    set.push((header.clone(), value));
                }
            }
        }
        if request_id.generated {
            set.push((config.request_id.clone(), request_id.value.clone()));
        }
        // Remove what the client sent under our prefixes, and any header we own by
        // configuration, except those we set: Envoy applies removals after sets, so
        // removing a header we set would drop our own value.
        let owned = FirstBytes::of(config);
        let mut remove: Vec<String> = request
            .header_names()
            // Most request headers (accept-*, sec-*, user-agent) start with a
            // letter no stripped prefix or owned name starts with.
            .filter(|name| owned.may_hold(name))
            .filter(|name| owns(config, name))
            .filter(|name| !set.iter().any(|(h, _)| h == *name))
            .map(str::to_owned)
            .collect();
        remove.sort();
        remove.dedup();
        Answer::Allow {
            set,
            remove,
            response: Vec::new(),
        }
    }

    /// On an allow, sets `name` (replacing a value set before, and no longer
    /// removing it). A deny is left as it is.
    pub fn set_header(&mut self, name: &str, value: String) {
        if let Answer::Allow { set, remove, .. } = self {
            set.retain(|(h, _)| h != name);
            remove.retain(|h| h != name);
            set.push((name.to_owned(), value));
        }
    }

    /// Adds `name: value` to the client's response: on an allow through
    /// `response`, on a deny to its headers (replacing a value set before).
    pub fn add_response_header(&mut self, name: &str, value: String) {
        let headers = match self {
            Answer::Allow { response, .. } => response,
            Answer::Deny { headers, .. } => headers,
        };
        headers.retain(|(h, _)| h != name);
        headers.push((name.to_owned(), value));
    }

    /// On an allow, removes the client-sent header `name` unless portcullis sets
    /// it. A deny is left as it is.
    pub fn remove_header(&mut self, name: &str) {
        if let Answer::Allow { set, remove, .. } = self {
            if !set.iter().any(|(h, _)| h == name) && !remove.iter().any(|h| h == name) {
                remove.push(name.to_owned());
                remove.sort();
            }
        }
    }
}

/// The headers and JSON body `{error, message, request_id}` of every refusal,
/// whatever its status: a deny's, and the HTTP mode's 404 and 500 for a check
/// that is not one (docs/gateways.md).
pub(crate) fn refusal(
    error: &str,
    message: &str,
    request_id: &str,
) -> (Vec<(String, String)>, String) {
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("cache-control".to_owned(), "no-store".to_owned()),
    ];
    let body = serde_json::json!({
        "error": error,
        "message": message,
        "request_id": request_id,
    });
    (headers, body.to_string())
}

/// The request id of one request: the client's (kept) or a generated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    pub value: String,
    pub generated: bool,
}

impl RequestId {
    /// Keeps a sane client value; otherwise generates a random UUID-shaped id.
    pub fn of(request: &AuthzRequest, header: &str) -> RequestId {
        RequestId::from_value(request.header(header).map(str::as_bytes))
    }

    /// Keeps `value` when sane (1-128 printable ASCII characters, no `"` or
    /// `\`); otherwise generates a random UUID-shaped id.
    pub fn from_value(value: Option<&[u8]>) -> RequestId {
        match value {
            Some(v)
                if !v.is_empty()
                    && v.len() <= 128
                    && v.iter()
                        .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\') =>
            {
                RequestId {
                    // Printable ASCII: always UTF-8.
                    value: String::from_utf8_lossy(v).into_owned(),
                    generated: false,
                }
            }
            _ => RequestId {
                value: random_uuid(),
                generated: true,
            },
        }
    }
}

fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

/// A context value as a header value: strings as they are, numbers and booleans
/// printed, lists comma-joined; null, objects and values that could smuggle a
/// header (control characters) are not sent.
fn header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items
            .iter()
            .map(header_value)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        Value::Null | Value::Object(_) => return None,
    };
    without_controls(text)
}

/// Whether `name` is one only portcullis may set: under `strip_prefixes`, a
/// configured context header, or the internal token. A client's copy is
/// removed on every allow.
pub(crate) fn owns(config: &HeadersConfig, name: &str) -> bool {
    config
        .strip_prefixes
        .iter()
        .any(|p| name.starts_with(p.as_str()))
        || config.user.iter().any(|(h, _)| h == name)
        || config.service.iter().any(|(h, _)| h == name)
        || name == INTERNAL_TOKEN_HEADER
}

/// The first bytes of every header name an allow removes (stripped prefixes,
/// configured names, the internal token): a scan of the request's headers skips
/// the rest without comparing strings.
struct FirstBytes([u64; 4]);

impl FirstBytes {
    fn of(config: &HeadersConfig) -> Self {
        let mut set = FirstBytes([0; 4]);
        let names = config
            .strip_prefixes
            .iter()
            .chain(config.user.iter().map(|(h, _)| h))
            .chain(config.service.iter().map(|(h, _)| h))
            .map(String::as_str)
            .chain([INTERNAL_TOKEN_HEADER]);
        for name in names {
            match name.as_bytes().first() {
                Some(&b) => set.0[usize::from(b >> 6)] |= 1 << (b & 63),
                // An empty prefix strips every header.
                None => return FirstBytes([u64::MAX; 4]),
            }
        }
        set
    }

    fn may_hold(&self, name: &str) -> bool {
        name.as_bytes()
            .first()
            .is_some_and(|&b| self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0)
    }
}

/// `text`, unless it holds a control character (which could smuggle a header).
fn without_controls(text: String) -> Option<String> {
    (!text.chars().any(char::is_control)).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::User;
    use serde_json::json;

    fn config() -> HeadersConfig {
        HeadersConfig {
            strip_prefixes: vec!["x-user-".into(), "x-portcullis-".into()],
            user: vec![
                ("x-user-id".into(), ContextField::User("id".into())),
                ("x-user-role".into(), ContextField::User("role".into())),
                ("x-user-groups".into(), ContextField::User("groups".into())),
                ("x-clerk-session".into(), ContextField::Token("sid".into())),
            ],
            service: vec![
                ("x-service-name".into(), ServiceField::Name),
                ("x-caller-spiffe-id".into(), ServiceField::SpiffeId),
            ],
            request_id: "x-request-id".into(),
            internal_token: false,
        }
    }

    fn request(headers: &[(&str, &str)]) -> AuthzRequest {
        AuthzRequest::builder()
            .headers(headers.iter().copied())
            .build()
    }

    #[test]
    fn allow_strips_spoofed_headers_and_sets_context() {
        let req = request(&[
            ("x-user-id", "admin"),
            ("x-user-email", "a@b"),
            ("x-clerk-session", "spoof"),
            ("x-portcullis-debug", "1"),
            ("x-request-id", "abc-123"),
            ("accept", "*/*"),
        ]);
        let claims = json!({"role": "USER", "groups": ["a", "b"], "sid": "sess_1"});
        let user = Principal::User(User::from_claims(
            "clerk",
            "user_1",
            claims.as_object().unwrap().clone(),
        ));
        let id = RequestId::of(&req, "x-request-id");
        assert_eq!(
            id,
            RequestId {
                value: "abc-123".into(),
                generated: false
            }
        );
        let Answer::Allow { set, remove, .. } = Answer::allow(&config(), &req, &user, false, &id)
        else {
            panic!("allow expected")
        };
        assert_eq!(
            set,
            vec![
                ("x-user-id".to_string(), "user_1".to_string()),
                ("x-user-role".to_string(), "USER".to_string()),
                ("x-user-groups".to_string(), "a,b".to_string()),
                ("x-clerk-session".to_string(), "sess_1".to_string()),
            ]
        );
        assert_eq!(
            remove,
            vec!["x-portcullis-debug".to_string(), "x-user-email".to_string()]
        );
    }

    #[test]
    fn owned_names_of_any_first_letter_are_removed() {
        let config = HeadersConfig {
            strip_prefixes: vec!["internal-".into()],
            user: vec![("session-id".into(), ContextField::Token("sid".into()))],
            service: vec![("caller".into(), ServiceField::Name)],
            ..config()
        };
        let req = request(&[
            ("session-id", "spoof"),
            ("internal-debug", "1"),
            ("caller", "billing"),
            ("x-portcullis-token", "forged"),
            ("accept", "*/*"),
            ("x-user-id", "not ours here"),
        ]);
        let id = RequestId::of(&req, "x-request-id");
        let Answer::Allow { remove, .. } =
            Answer::allow(&config, &req, &Principal::Anonymous, false, &id)
        else {
            panic!("allow expected")
        };
        assert_eq!(
            remove,
            [
                "caller",
                "internal-debug",
                "session-id",
                "x-portcullis-token"
            ]
            .map(String::from)
        );
        let everything = HeadersConfig {
            strip_prefixes: vec![String::new()],
            ..config
        };
        let Answer::Allow { remove, .. } =
            Answer::allow(&everything, &req, &Principal::Anonymous, false, &id)
        else {
            panic!("allow expected")
        };
        assert_eq!(remove.len(), 6, "an empty prefix strips every header");
    }

    #[test]
    fn anonymous_allow_removes_every_context_header() {
        let req = request(&[("x-user-id", "admin"), ("x-clerk-session", "s")]);
        let id = RequestId::of(&req, "x-request-id");
        assert!(id.generated);
        let Answer::Allow { set, remove, .. } =
            Answer::allow(&config(), &req, &Principal::Anonymous, false, &id)
        else {
            panic!("allow expected")
        };
        assert_eq!(set, vec![("x-request-id".to_string(), id.value.clone())]);
        assert_eq!(
            remove,
            vec!["x-clerk-session".to_string(), "x-user-id".to_string()]
        );
    }

    #[test]
    fn service_calls_forward_the_user_only_under_forward_user() {
        let req = request(&[
            ("x-user-id", "u1"),
            ("x-user-role", "ADMIN"),
            (
                "x-caller-spiffe-id",
                "spiffe://example.org/ns/default/sa/admin",
            ),
            ("x-portcullis-token", "forged"),
            ("x-request-id", "r"),
        ]);
        let id = RequestId::of(&req, "x-request-id");
        let mut service = crate::principal::Service::from_spiffe_id(
            "spiffe://example.org/ns/default/sa/videos",
            true,
        );
        let claims = json!({"role": "USER"}).as_object().unwrap().clone();
        service.on_behalf_of = Some(Box::new(User::from_claims("forwarded", "u1", claims)));
        let principal = Principal::Service(service);
        let caller = vec![
            ("x-service-name".to_string(), "videos".to_string()),
            (
                "x-caller-spiffe-id".to_string(),
                "spiffe://example.org/ns/default/sa/videos".to_string(),
            ),
        ];
        // Without forward_user: the caller's identity, and no user context.
        let Answer::Allow { set, remove, .. } =
            Answer::allow(&config(), &req, &principal, false, &id)
        else {
            panic!("allow expected")
        };
        assert_eq!(set, caller);
        assert_eq!(
            remove,
            vec!["x-portcullis-token", "x-user-id", "x-user-role"]
        );
        // With it: the forwarded user's context is passed on (as verified
        // values, never the caller's extra headers).
        let Answer::Allow { set, remove, .. } =
            Answer::allow(&config(), &req, &principal, true, &id)
        else {
            panic!("allow expected")
        };
        assert_eq!(set[..2], caller[..]);
        assert!(set.contains(&("x-user-id".into(), "u1".into())));
        assert!(set.contains(&("x-user-role".into(), "USER".into())));
        assert_eq!(remove, vec!["x-portcullis-token"]);
    }

    #[test]
    fn deny_bodies_and_challenges() {
        let Answer::Deny {
            kind,
            headers,
            body,
        } = Answer::deny(
            DenyKind::InvalidCredentials,
            "the token has expired",
            "rid-1",
        )
        else {
            panic!()
        };
        assert_eq!(kind.status(), 401);
        let challenge = &headers
            .iter()
            .find(|(k, _)| k == "www-authenticate")
            .unwrap()
            .1;
        assert_eq!(
            challenge,
            r#"Bearer realm="portcullis", error="invalid_token", error_description="the token has expired""#
        );
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            json!({"error": "invalid_token", "message": "the token has expired", "request_id": "rid-1"})
        );
        let denied = Answer::deny(DenyKind::Forbidden, "no", "r");
        assert_eq!(denied.status(), 403);
        let Answer::Deny { headers, .. } = denied else {
            panic!()
        };
        assert!(!headers.iter().any(|(k, _)| k == "www-authenticate"));
        assert_eq!(DenyKind::Unavailable.status(), 503);
    }

    #[test]
    fn request_ids() {
        for bad in ["", "has space", "quote\"", &"x".repeat(200)] {
            assert!(
                RequestId::of(&request(&[("x-request-id", bad)]), "x-request-id").generated,
                "{bad:?}"
            );
        }
        let a = random_uuid();
        assert_eq!(a.len(), 36);
        assert_ne!(a, random_uuid());
    }

    #[test]
    fn header_values() {
        assert_eq!(header_value(&json!("a")), Some("a".into()));
        assert_eq!(header_value(&json!(42)), Some("42".into()));
        assert_eq!(header_value(&json!(true)), Some("true".into()));
        assert_eq!(header_value(&json!(null)), None);
        assert_eq!(header_value(&json!({"a": 1})), None);
        assert_eq!(header_value(&json!("evil\r\nx-user-role: ADMIN")), None);
    }
}
