//! The user-context tokens portcullis signs (docs/east-west.md): one claims format for the
//! internal token (`headers.internal_token: true`, forwarded upstream in
//! [`INTERNAL_TOKEN_HEADER`]) and the token-exchange token (`POST
//! /v1/token/exchange`), and the way back from those claims to a [`User`].
//!
//! Claims: `iss` (`tokens.issuer`), `sub` = `user.id`, `idp` and `idp_sub` (the
//! issuer name and subject of the token the context was built from), `sid`
//! (that token's session, when it had one), `iat`, `exp`, `jti`, and every
//! other user field under its own name (`role`, `channel_id`, …). The internal
//! token also carries `aud` = [`INTERNAL_AUDIENCE`], so an exchanged token is
//! never taken for one. `idp_sub` and `sid` let a revocation of the original
//! subject or session reach these tokens too (docs/revocation.md).
//!
//! Verification of the internal token lives here too, so the format and its
//! reader cannot drift apart. Pure apart from the clock passed in.

use super::algorithm::Algorithm;
use super::claims::{ClaimRules, RegisteredClaims};
use super::jws::CompactJws;
use super::keys::KeySet;
use super::{TokenError, VerifiedToken};
use crate::principal::User;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The request header the internal token travels in. Under the default
/// `x-portcullis-` strip prefix, so a client-sent copy never reaches a service.
pub const INTERNAL_TOKEN_HEADER: &str = "x-portcullis-token";
/// `aud` of internal tokens.
pub const INTERNAL_AUDIENCE: &str = "portcullis-internal";
/// `typ` of internal tokens (RFC 8725 §3.11: explicit typing).
pub const INTERNAL_TYP: &str = "portcullis-context+jwt";
/// Clock skew tolerated on internal tokens.
const LEEWAY: Duration = Duration::from_secs(30);

/// Claims that describe the token, not the user: never copied from a user's
/// fields, and not turned back into fields.
const RESERVED: [&str; 12] = [
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "azp", "sid", "id", "idp", "idp_sub",
];

/// The context claims of `user` (no `iss`/`aud`/times: the signer adds them).
pub fn claims_of(user: &User) -> Map<String, Value> {
    let mut claims: Map<String, Value> = user
        .fields
        .iter()
        .filter(|(name, _)| !RESERVED.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let id = match user.fields.get("id") {
        Some(Value::String(id)) => id.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => user.subject.to_string(),
    };
    claims.insert("sub".into(), Value::String(id));
    claims.insert("idp".into(), Value::String(user.issuer.to_string()));
    claims.insert("idp_sub".into(), Value::String(user.subject.to_string()));
    if let Some(sid @ (Value::String(_) | Value::Number(_))) = user.claims.get("sid") {
        claims.insert("sid".into(), sid.clone());
    }
    claims
}

/// The user a verified context token describes: `user.id` = `sub`, the other
/// fields by name; `token.sub` is the original subject (`idp_sub`).
pub fn user_of(claims: &Map<String, Value>) -> Result<User, TokenError> {
    let sub = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        _ => return Err(TokenError::MissingClaim("sub")),
    };
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let subject = text("idp_sub").unwrap_or_else(|| sub.clone());
    let mut fields: Map<String, Value> = claims
        .iter()
        .filter(|(name, _)| !RESERVED.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let mut token = fields.clone();
    token.insert("sub".into(), Value::String(subject.clone()));
    // The session travels on, so a token minted from this one carries it too.
    if let Some(sid) = claims.get("sid") {
        token.insert("sid".into(), sid.clone());
    }
    fields.insert("id".into(), Value::String(sub));
    Ok(User {
        issuer: text("idp").unwrap_or_else(|| "portcullis".into()).into(),
        subject: subject.into(),
        claims: token.into(),
        fields,
    })
}

/// Verifies internal tokens against portcullis' own public keys.
#[derive(Debug, Clone)]
pub struct InternalTokenVerifier {
    keys: Arc<KeySet>,
    rules: ClaimRules,
}

impl InternalTokenVerifier {
    /// `keys`: the signer's public JWKS; `issuer`: `tokens.issuer`.
    pub fn new(keys: Arc<KeySet>, issuer: &str) -> Self {
        Self {
            keys,
            rules: ClaimRules {
                issuer: issuer.into(),
                audiences: vec![INTERNAL_AUDIENCE.to_owned()],
                authorized_parties: Vec::new(),
                leeway: LEEWAY,
            },
        }
    }

    /// An internal token that verifies at `now`, its payload kept: the user
    /// it carries is [`user_of`] its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        let jws = CompactJws::parse(token)?;
        jws.verify_signature(&self.keys, &[Algorithm::ES256])?;
        let payload = jws.unverified_payload_text()?;
        let claims = RegisteredClaims::parse(&payload)?;
        let expires_at = self.rules.validate(&claims, now)?;
        Ok(VerifiedToken {
            issuer: Arc::clone(&self.rules.issuer),
            iss: Arc::clone(&self.rules.issuer),
            subject: claims.sub()?.as_ref().into(),
            expires_at,
            ids: claims.ids(),
            payload: Some(Arc::from(payload.as_str())),
            generation: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn context_claims_round_trip() {
        let token_claims = json!({"iss": "https://clerk", "sub": "user_2x", "sid": "s", "azp": "a",
            "exp": 1, "role": "USER"});
        let mut user = User::from_claims(
            "clerk",
            "user_2x",
            token_claims.as_object().unwrap().clone(),
        );
        // A directory row: its own id and columns.
        user.fields = json!({"id": "42", "role": "USER", "channel_id": "ch_1"})
            .as_object()
            .unwrap()
            .clone();
        let claims = claims_of(&user);
        assert_eq!(
            Value::Object(claims.clone()),
            json!({"sub": "42", "idp": "clerk", "idp_sub": "user_2x", "sid": "s", "role": "USER", "channel_id": "ch_1"})
        );
        let back = user_of(&claims).unwrap();
        assert_eq!(back.fields, user.fields);
        assert_eq!(&*back.subject, "user_2x");
        assert_eq!(&*back.issuer, "clerk");
        assert_eq!(back.claims.get("sub"), Some(&json!("user_2x")));
        // A token minted again from this context keeps the session.
        assert_eq!(claims_of(&back).get("sid"), Some(&json!("s")));
        assert_eq!(user_of(&Map::new()), Err(TokenError::MissingClaim("sub")));
    }
}
