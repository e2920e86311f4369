//! The tokens portcullis signs (docs/east-west.md), all with the one ES256 key of
//! `tokens.key_dir` (`kid` = its RFC 7638 thumbprint, public half served at
//! `/.well-known/jwks.json`):
//! - service tokens (the token service): JWT-SVIDs for the caller's own SPIFFE ID,
//!   `iss` = `spiffe://TD`, lifetime capped by `tokens.max_service_ttl`;
//! - internal tokens (`headers.internal_token: true`): the verified user context,
//!   `aud` = `portcullis-internal`, lifetime `tokens.ttl`;
//! - exchanged tokens (`POST /v1/token/exchange`): the same context claims, no
//!   `aud`, lifetime `tokens.ttl`.
//!
//! The claims format of user-context tokens is [`crate::identity::context_token`].
//! Signing is pure computation: no I/O here (the key was loaded with the config).

use crate::answer::Answer;
use crate::ca::token::TokenSigner;
use crate::config::TokensConfig;
use crate::headers::HeadersConfig;
use crate::identity::context_token::{
    self, InternalTokenVerifier, INTERNAL_AUDIENCE, INTERNAL_TOKEN_HEADER, INTERNAL_TYP,
};
use crate::identity::keys::KeySet;
use crate::identity::{SpiffeId, TrustDomain};
use crate::principal::{Principal, User};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// A service token was asked for without an audience (JWT-SVID: `aud` required).
    #[error("a service token needs at least one non-empty audience")]
    NoAudience,
    /// The subject is outside our trust domain.
    #[error("{0} is not in this mesh's trust domain")]
    ForeignSubject(String),
    /// The signature could not be made (a broken key).
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A signed token and how long it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub token: String,
    pub expires_in: Duration,
}

/// Signs the tokens of docs/east-west.md with the configured key.
#[derive(Debug)]
pub struct TokenMint {
    signer: Arc<TokenSigner>,
    public: Arc<KeySet>,
    issuer: String,
    service_issuer: String,
    trust_domain: TrustDomain,
    ttl: Duration,
    max_service_ttl: Duration,
}

impl TokenMint {
    pub fn new(config: &TokensConfig) -> Self {
        let jwks = config.signer.jwks().to_string();
        // Our own freshly serialized JWKS always parses; an empty set would only
        // make internal tokens fail to verify (401), never pass.
        let public = KeySet::from_jwks(jwks.as_bytes())
            .map(|(set, _)| set)
            .unwrap_or_else(|_| KeySet::new(Vec::new()));
        Self {
            signer: Arc::clone(&config.signer),
            public: Arc::new(public),
            issuer: config.issuer.clone(),
            service_issuer: config.service_issuer.clone(),
            trust_domain: config.trust_domain.clone(),
            ttl: config.ttl,
            max_service_ttl: config.max_service_ttl,
        }
    }

    /// The public JWKS (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> Value {
        self.signer.jwks()
    }

    /// `iss` of the user-context tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The verifier of the internal tokens this mint signs.
    pub fn internal_verifier(&self) -> InternalTokenVerifier {
        InternalTokenVerifier::new(Arc::clone(&self.public), &self.issuer)
    }

    /// A service token for `subject` (the caller's own, authenticated identity)
    /// for `audiences`, living `requested` capped at `tokens.max_service_ttl`
    /// (the cap when `None`).
    pub fn service_token(
        &self,
        subject: &SpiffeId,
        audiences: &[String],
        requested: Option<Duration>,
        now: SystemTime,
    ) -> Result<Minted, MintError> {
        if audiences.is_empty() || audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(MintError::NoAudience);
        }
        if !subject.is_member_of(&self.trust_domain) {
            return Err(MintError::ForeignSubject(subject.to_string()));
        }
        let ttl = requested
            .filter(|ttl| !ttl.is_zero())
            .map_or(self.max_service_ttl, |ttl| ttl.min(self.max_service_ttl));
        let iat = seconds(now);
        let claims = json!({
            "iss": self.service_issuer,
            "sub": subject.to_string(),
            "aud": audiences,
            "iat": iat,
            "exp": iat + ttl.as_secs(),
            "jti": jti(),
        });
        self.sign(&claims, "JWT", ttl)
    }

    /// The internal token of `user`.
    pub fn internal_token(&self, user: &User, now: SystemTime) -> Result<Minted, MintError> {
        let mut claims = context_token::claims_of(user);
        let iat = seconds(now);
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("aud".into(), json!(INTERNAL_AUDIENCE));
        claims.insert("iat".into(), json!(iat));
        claims.insert("exp".into(), json!(iat + self.ttl.as_secs()));
        claims.insert("jti".into(), json!(jti()));
        self.sign(&Value::Object(claims), INTERNAL_TYP, self.ttl)
    }

    /// The exchanged token of `user` (seed 000, option 2).
    pub fn exchange_token(&self, user: &User, now: SystemTime) -> Result<Minted, MintError> {
        let mut claims = context_token::claims_of(user);
        let iat = seconds(now);
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("iat".into(), json!(iat));
        claims.insert("nbf".into(), json!(iat));
        claims.insert("exp".into(), json!(iat + self.ttl.as_secs()));
        claims.insert("jti".into(), json!(jti()));
        self.sign(&Value::Object(claims), "JWT", self.ttl)
    }

    /// With `headers.internal_token: true`, adds the internal token of the user
    /// the deciding rule sees to an allow.
    pub fn seal(
        &self,
        answer: &mut Answer,
        headers: &HeadersConfig,
        principal: &Principal,
        forward_user: bool,
    ) {
        if !headers.internal_token {
            return;
        }
        let Some(user) = principal.user_seen(forward_user) else {
            return;
        };
        match self.internal_token(user, SystemTime::now()) {
            Ok(minted) => answer.set_header(INTERNAL_TOKEN_HEADER, minted.token),
            // The context headers still go; the token is only missing.
            Err(error) => tracing::error!(%error, "cannot sign the internal token"),
        }
    }

    fn sign(&self, claims: &Value, typ: &str, ttl: Duration) -> Result<Minted, MintError> {
        let token = self
            .signer
            .sign(claims, typ)
            .map_err(|e| MintError::Sign(e.to_string()))?;
        Ok(Minted {
            token,
            expires_in: ttl,
        })
    }
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn jti() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mint(dir: &std::path::Path) -> TokenMint {
        let (signer, _) = TokenSigner::load_or_create(dir).unwrap();
        let td = TrustDomain::new("example.org").unwrap();
        TokenMint::new(&TokensConfig {
            key_dir: dir.to_owned(),
            signer: Arc::new(signer),
            issuer: "portcullis".into(),
            service_issuer: td.id().to_string(),
            trust_domain: td,
            ttl: Duration::from_secs(300),
            max_service_ttl: Duration::from_secs(3600),
        })
    }

    #[test]
    fn service_tokens_are_capped_and_need_an_audience() {
        let dir = tempfile::tempdir().unwrap();
        let mint = mint(dir.path());
        let videos = SpiffeId::new("spiffe://example.org/ns/default/sa/videos").unwrap();
        let now = SystemTime::now();
        let aud = vec!["spiffe://example.org".to_string()];
        let day = Some(Duration::from_secs(86400));
        assert_eq!(
            mint.service_token(&videos, &aud, day, now)
                .unwrap()
                .expires_in,
            Duration::from_secs(3600)
        );
        let short = Some(Duration::from_secs(60));
        assert_eq!(
            mint.service_token(&videos, &aud, short, now)
                .unwrap()
                .expires_in,
            Duration::from_secs(60)
        );
        assert_eq!(
            mint.service_token(&videos, &[], None, now),
            Err(MintError::NoAudience)
        );
        let foreign = SpiffeId::new("spiffe://other.org/ns/default/sa/videos").unwrap();
        assert!(matches!(
            mint.service_token(&foreign, &aud, None, now),
            Err(MintError::ForeignSubject(_))
        ));
    }

    #[test]
    fn internal_tokens_verify_and_exchanged_ones_are_not_internal() {
        let dir = tempfile::tempdir().unwrap();
        let mint = mint(dir.path());
        let claims = json!({"role": "USER"}).as_object().unwrap().clone();
        let user = User::from_claims("clerk", "user_1", claims);
        let now = SystemTime::now();
        let verifier = mint.internal_verifier();
        let internal = mint.internal_token(&user, now).unwrap();
        let back = verifier.verify(&internal.token, seconds(now)).unwrap();
        let back = context_token::user_of(back.claims().map()).unwrap();
        assert_eq!(back.fields, user.fields);
        let exchanged = mint.exchange_token(&user, now).unwrap();
        assert!(verifier.verify(&exchanged.token, seconds(now)).is_err());
        // Expired beyond the leeway.
        let later = seconds(now) + 300 + 31;
        assert!(verifier.verify(&internal.token, later).is_err());
    }

    #[test]
    fn exchanged_and_internal_tokens_carry_what_revocation_matches() {
        let dir = tempfile::tempdir().unwrap();
        let mint = mint(dir.path());
        let claims = json!({"sub": "user_2x", "sid": "sess_1", "jti": "upstream"});
        let mut user = User::from_claims("clerk", "user_2x", claims.as_object().unwrap().clone());
        user.fields = json!({"id": "42", "role": "USER"})
            .as_object()
            .unwrap()
            .clone();
        let now = SystemTime::now();
        let internal = mint.internal_token(&user, now).unwrap();
        let ids = mint
            .internal_verifier()
            .verify(&internal.token, seconds(now))
            .unwrap()
            .ids;
        assert_eq!(ids.sid.as_deref(), Some("sess_1"), "the session travels on");
        assert_eq!(ids.idp_sub.as_deref(), Some("user_2x"));
        assert_eq!(ids.issued_at, Some(seconds(now)));
        assert!(
            ids.jti.is_some_and(|jti| &*jti != "upstream"),
            "its own jti"
        );
        let exchanged = mint.exchange_token(&user, now).unwrap();
        let payload = exchanged.token.split('.').nth(1).unwrap();
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let claims: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(claims["sid"], "sess_1");
        assert_eq!(
            (claims["sub"].as_str(), claims["idp_sub"].as_str()),
            (Some("42"), Some("user_2x"))
        );
    }
}
