//! One configured token issuer: where its tokens are found, which algorithms and
//! keys verify them, and what their claims must say.

use super::algorithm::Algorithm;
use super::claims::{ClaimRules, RegisteredClaims};
use super::error::TokenError;
use super::jwks::JwksCache;
use super::jws::CompactJws;
use super::keys::KeySet;
use super::token_cache::VerifiedToken;
use crate::request::AuthzRequest;
use std::sync::Arc;

/// `user` tokens identify end users; `service` tokens identify workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerKind {
    User,
    Service,
}

/// Where a token is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A header; `prefix` (e.g. `Bearer `, matched case-insensitively) is required
    /// and stripped when set.
    Header {
        name: String,
        prefix: Option<String>,
    },
    /// A cookie, e.g. Clerk's `__session`.
    Cookie { name: String },
    /// A query parameter, e.g. `access_token` (for WebSocket upgrades).
    Query { name: String },
}

impl Credential {
    /// The token this location holds in `request`, if any.
    pub fn extract<'r>(&self, request: &'r AuthzRequest) -> Option<&'r str> {
        let token = match self {
            Credential::Header { name, prefix } => {
                let value = request.header(name)?.trim();
                match prefix {
                    None => value,
                    Some(prefix) => {
                        let head = value.get(..prefix.len())?;
                        if !head.eq_ignore_ascii_case(prefix) {
                            return None;
                        }
                        value[prefix.len()..].trim()
                    }
                }
            }
            Credential::Cookie { name } => request.cookie(name)?,
            Credential::Query { name } => request.query_param(name)?,
        };
        (!token.is_empty()).then_some(token)
    }
}

/// Where an issuer's keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// `jwks_file` or an HMAC secret: loaded once at start.
    Static(Arc<KeySet>),
    /// `jwks_uri`: fetched and refreshed.
    Remote(Arc<JwksCache>),
}

/// A configured issuer, ready to verify.
#[derive(Clone)]
pub struct Issuer {
    pub name: Arc<str>,
    pub kind: IssuerKind,
    pub rules: ClaimRules,
    pub algorithms: Vec<Algorithm>,
    pub credentials: Vec<Credential>,
    pub keys: KeySource,
}

impl Issuer {
    /// Whether keys are loaded (readiness).
    pub fn keys_loaded(&self) -> Option<usize> {
        match &self.keys {
            KeySource::Static(set) => Some(set.len()),
            KeySource::Remote(cache) => cache.current().map(|set| set.len()),
        }
    }

    /// Verifies a parsed token of this issuer at `now`: its signature, then
    /// `claims`, read from `payload` (the token's own, decoded once by the
    /// caller). Keeps the payload when `keep_claims` (something will read claims
    /// beyond `iss` and `sub`).
    pub async fn verify(
        &self,
        jws: &CompactJws<'_>,
        payload: &str,
        claims: &RegisteredClaims<'_>,
        now: u64,
        keep_claims: bool,
    ) -> Result<VerifiedToken, TokenError> {
        // Refuse a disallowed `alg` before touching keys (no refetch for it).
        jws.algorithm(&self.algorithms)?;
        match &self.keys {
            KeySource::Static(set) => jws.verify_signature(set, &self.algorithms)?,
            KeySource::Remote(cache) => {
                let keys = match cache.current() {
                    Some(set) if jws.kid().is_none_or(|kid| set.has_kid(kid)) => Some(set),
                    _ => cache.refetch_for_kid(jws.kid()).await,
                };
                let keys =
                    keys.ok_or_else(|| TokenError::KeysUnavailable(self.name.to_string()))?;
                jws.verify_signature(&keys, &self.algorithms)?
            }
        }
        let expires_at = self.rules.validate(claims, now)?;
        let subject = claims.sub()?.as_ref().into();
        Ok(VerifiedToken {
            issuer: Arc::clone(&self.name),
            iss: Arc::clone(&self.rules.issuer),
            subject,
            expires_at,
            ids: claims.ids(),
            payload: keep_claims.then(|| payload.into()),
            generation: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_extraction() {
        let with_authorization = |value: &str| {
            AuthzRequest::builder()
                .header("authorization", value)
                .header("x-token", "raw")
                .header("cookie", "__session=c.o.k")
                .build()
        };
        let request = with_authorization("bearer  abc.def.ghi ");
        let bearer = Credential::Header {
            name: "authorization".into(),
            prefix: Some("Bearer ".into()),
        };
        assert_eq!(bearer.extract(&request), Some("abc.def.ghi"));
        let raw = Credential::Header {
            name: "x-token".into(),
            prefix: None,
        };
        assert_eq!(raw.extract(&request), Some("raw"));
        let cookie = Credential::Cookie {
            name: "__session".into(),
        };
        assert_eq!(cookie.extract(&request), Some("c.o.k"));
        let request = with_authorization("Basic dXNlcg==");
        assert_eq!(
            bearer.extract(&request),
            None,
            "other schemes are not our tokens"
        );
        assert_eq!(bearer.extract(&with_authorization("Bearer")), None);
    }
}
