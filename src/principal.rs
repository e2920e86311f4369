//! Who is asking: the verified identity a request carries, resolved before policy
//! runs (docs/security.md). Plain data, no I/O: `policy` reads it, `identity` builds it.

use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};

/// The principal of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// No credential was presented.
    Anonymous,
    /// An end user, from a token of a `kind: user` issuer.
    User(User),
    /// A workload: from its mTLS certificate or a service token (docs/security.md).
    Service(Service),
    /// A verified webhook sender (a Svix signature), by configured name.
    Webhook(Webhook),
}

impl Principal {
    /// The label used in logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User(_) => "user",
            Principal::Service(_) => "service",
            Principal::Webhook(_) => "webhook",
        }
    }

    pub fn user(&self) -> Option<&User> {
        match self {
            Principal::User(user) => Some(user),
            _ => None,
        }
    }

    pub fn service(&self) -> Option<&Service> {
        match self {
            Principal::Service(service) => Some(service),
            _ => None,
        }
    }

    /// The user a rule sees (`from.users`, `user.*`, the user headers): the
    /// principal's own, or — only under a rule with `forward_user: true` — the
    /// user an authenticated service says it calls for (docs/policy.md). Without that,
    /// a service's word about a user counts for nothing.
    pub fn user_seen(&self, forward_user: bool) -> Option<&User> {
        match self {
            Principal::User(user) => Some(user),
            Principal::Service(service) if forward_user => service.on_behalf_of.as_deref(),
            _ => None,
        }
    }
}

/// A calling workload, identified by its SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    /// The whole SPIFFE ID, e.g. `spiffe://example.org/ns/default/sa/videos`.
    pub spiffe_id: String,
    /// `NAME` of the `/ns/NS/sa/NAME` form, when the ID has it.
    pub name: Option<String>,
    /// `NS` of the `/ns/NS/sa/NAME` form, when the ID has it.
    pub namespace: Option<String>,
    /// True when the identity comes from an mTLS peer certificate (not a token).
    pub mtls: bool,
    /// The end user the call is made for, as the caller passed it on (its
    /// `x-user-*` headers or portcullis' internal token). Seen by policy and
    /// passed upstream only under a rule with `forward_user: true`
    /// ([`Principal::user_seen`]); never part of `service.*`.
    #[serde(skip)]
    pub on_behalf_of: Option<Box<User>>,
}

impl Service {
    /// A service principal from a SPIFFE ID string, reading the Kubernetes-style
    /// `/ns/NS/sa/NAME` path when present.
    pub fn from_spiffe_id(spiffe_id: &str, mtls: bool) -> Self {
        let path = spiffe_id
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, path)| path)
            .unwrap_or("");
        let segments: Vec<&str> = path.split('/').collect();
        let (namespace, name) = match segments.as_slice() {
            ["ns", ns, "sa", sa] => (Some((*ns).to_owned()), Some((*sa).to_owned())),
            _ => (None, None),
        };
        Self {
            spiffe_id: spiffe_id.to_owned(),
            name,
            namespace,
            mtls,
            on_behalf_of: None,
        }
    }
}

/// A webhook sender whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The configured webhook name, e.g. `clerk`.
    pub name: String,
}

/// A verified end user: the token's claims and the user directory's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The configured name of the issuer that signed the token.
    pub issuer: Arc<str>,
    /// The token's `sub`.
    pub subject: Arc<str>,
    /// Every claim of the verified token (`token.*` in policy and headers).
    pub claims: Claims,
    /// The user context (`user.*`): the directory's columns, or the claims with
    /// `id` = `sub` when `users.source` is `claims`.
    pub fields: Map<String, Value>,
}

/// A token's claims, parsed from the payload JSON only when first read: most
/// checks read none, and a cached token need not hold a parsed map.
#[derive(Clone, Default)]
pub struct Claims {
    source: ClaimsSource,
    parsed: OnceLock<Map<String, Value>>,
}

#[derive(Clone, Default)]
enum ClaimsSource {
    /// Given as a map (already in `parsed`).
    #[default]
    Parsed,
    /// A verified payload.
    Json(Arc<str>),
    /// A token cached without its payload: only `iss` and `sub` are known.
    Registered { iss: Arc<str>, sub: Arc<str> },
}

impl Claims {
    /// Claims to be parsed from `json` (a verified payload: a JSON object that
    /// names no member twice, checked at verification, so the last-wins map
    /// `serde_json` builds here never had two values to pick from).
    pub fn from_json(json: Arc<str>) -> Self {
        Self {
            source: ClaimsSource::Json(json),
            parsed: OnceLock::new(),
        }
    }

    /// Only `iss` and `sub`: a token verified when no claim was to be read.
    pub fn registered(iss: Arc<str>, sub: Arc<str>) -> Self {
        Self {
            source: ClaimsSource::Registered { iss, sub },
            parsed: OnceLock::new(),
        }
    }

    pub fn from_map(map: Map<String, Value>) -> Self {
        Self {
            source: ClaimsSource::Parsed,
            parsed: OnceLock::from(map),
        }
    }

    /// Every claim. A payload that is not a JSON object (never one that
    /// verified) reads as no claims.
    pub fn map(&self) -> &Map<String, Value> {
        self.parsed.get_or_init(|| match &self.source {
            ClaimsSource::Parsed => Map::new(),
            ClaimsSource::Json(json) => serde_json::from_str(json).unwrap_or_default(),
            ClaimsSource::Registered { iss, sub } => [
                ("iss".to_owned(), Value::from(iss.as_ref())),
                ("sub".to_owned(), Value::from(sub.as_ref())),
            ]
            .into_iter()
            .collect(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map().get(name)
    }

    /// A claim as text, without parsing the payload for `iss` and `sub` when
    /// those are all that is known.
    pub fn text(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        if let ClaimsSource::Registered { iss, sub } = &self.source {
            return match name {
                "iss" => Some(iss.as_ref().into()),
                "sub" => Some(sub.as_ref().into()),
                _ => None,
            };
        }
        self.get(name)?.as_str().map(Into::into)
    }
}

impl From<Map<String, Value>> for Claims {
    fn from(map: Map<String, Value>) -> Self {
        Claims::from_map(map)
    }
}

impl PartialEq for Claims {
    fn eq(&self, other: &Self) -> bool {
        self.map() == other.map()
    }
}

impl Eq for Claims {}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map().fmt(f)
    }
}

impl User {
    /// Builds the user context of `users.source: claims` (docs/configuration.md): `user.id` is
    /// `sub` and every other claim keeps its name.
    pub fn from_claims(
        issuer: impl Into<Arc<str>>,
        subject: impl Into<Arc<str>>,
        claims: impl Into<Claims>,
    ) -> Self {
        let (issuer, subject, claims) = (issuer.into(), subject.into(), claims.into());
        let mut fields = claims.map().clone();
        fields.insert("id".into(), Value::String(subject.as_ref().to_owned()));
        Self {
            issuer,
            subject,
            claims,
            fields,
        }
    }

    /// The user's permissions: `user.permissions` as a list, or as one string of
    /// space- or comma-separated permissions (the OAuth `scope` style).
    pub fn permissions(&self) -> Vec<&str> {
        match self.fields.get("permissions") {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => s.split([' ', ',']).filter(|p| !p.is_empty()).collect(),
            _ => Vec::new(),
        }
    }

    /// The user's roles: `user.role` (a string) and/or `user.roles` (a list).
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        let single = self.fields.get("role").and_then(Value::as_str);
        let many = self
            .fields
            .get("roles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        single.into_iter().chain(many)
    }
}

#[cfg(test)]
mod claims_tests {
    use super::*;

    #[test]
    fn claims_parse_on_use_and_registered_ones_need_no_payload() {
        let json = Claims::from_json(r#"{"sub":"u1","iss":"https://idp","n":7,"sid":"s"}"#.into());
        assert_eq!(json.text("sid").as_deref(), Some("s"));
        assert_eq!(json.text("n"), None, "not text");
        assert_eq!(json.get("n"), Some(&Value::from(7)));

        let registered = Claims::registered("https://idp".into(), "u1".into());
        assert_eq!(registered.text("sub").as_deref(), Some("u1"));
        assert_eq!(registered.text("iss").as_deref(), Some("https://idp"));
        assert_eq!(registered.text("sid"), None);
        assert_eq!(registered.map().len(), 2);
        assert_eq!(registered.get("sub"), Some(&Value::from("u1")));

        assert!(
            Claims::from_json("[1]".into()).map().is_empty(),
            "never a verified payload; reads as no claims"
        );
    }
}
