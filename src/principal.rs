//! Who is asking: the verified identity a request carries, resolved before policy
//! runs (SPEC §4). Plain data, no I/O: `policy` reads it, `identity` builds it.

use serde_json::{Map, Value};

/// The principal of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// No credential was presented.
    Anonymous,
    /// An end user, from a token of a `kind: user` issuer.
    User(User),
}

impl Principal {
    /// The label used in logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User(_) => "user",
        }
    }

    pub fn user(&self) -> Option<&User> {
        match self {
            Principal::User(user) => Some(user),
            Principal::Anonymous => None,
        }
    }
}

/// A verified end user: the token's claims and the user directory's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// The configured name of the issuer that signed the token.
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    /// Every claim of the verified token (`token.*` in policy and headers).
    pub claims: Map<String, Value>,
    /// The user context (`user.*`): the directory's columns, or the claims with
    /// `id` = `sub` when `users.source` is `claims`.
    pub fields: Map<String, Value>,
}

impl User {
    /// Builds the user context of `users.source: claims` (SPEC §5): `user.id` is
    /// `sub` and every other claim keeps its name.
    pub fn from_claims(issuer: &str, subject: &str, claims: Map<String, Value>) -> Self {
        let mut fields = claims.clone();
        fields.insert("id".into(), Value::String(subject.to_owned()));
        Self {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            claims,
            fields,
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
