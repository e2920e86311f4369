//! Why a credential was not accepted. Every message is safe to send to the client:
//! none quotes the token, a key or a claim value.

/// A token that is not accepted (401), or one that cannot be checked right now
/// because its keys are unavailable (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not three base64url parts, bad JSON, or JSON serialization.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// Longer than any legitimate token.
    #[error("the token is too large")]
    TooLarge,
    /// `alg` is not in the issuer's allow-list (`none` never is).
    #[error("the token's algorithm is not accepted")]
    AlgorithmNotAllowed,
    /// `jwk`, `jku`, `x5u`, `x5c` or `crit` in the header.
    #[error("the token header carries '{0}', which portcullis never trusts")]
    ForbiddenHeader(&'static str),
    /// No key of the issuer has this `kid` (after a refetch where allowed).
    #[error("no key of the issuer matches the token's key id")]
    UnknownKey,
    /// The signature does not verify with any candidate key.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// A required claim is absent or of the wrong type.
    #[error("the token lacks a valid '{0}' claim")]
    MissingClaim(&'static str),
    /// `iss` names no configured issuer.
    #[error("the token's issuer is not accepted")]
    UnknownIssuer,
    /// `aud` names none of the configured audiences.
    #[error("the token's audience is not accepted")]
    WrongAudience,
    /// `azp` is not an authorized party.
    #[error("the token's authorized party is not accepted")]
    WrongAuthorizedParty,
    /// The token, its subject or its session was revoked (docs/revocation.md).
    #[error("token revoked")]
    Revoked,
    /// The issuer's keys could not be loaded: a dependency is down (503, not 401).
    #[error("the keys of issuer '{0}' are unavailable")]
    KeysUnavailable(String),
    /// With `state.redis`, the revocations have not been loaded from Redis
    /// since start: a token cannot be told revoked or not (503, never an
    /// allow; docs/revocation.md).
    #[error("revocations are not loaded yet; try again shortly")]
    RevocationsNotLoaded,
}

impl TokenError {
    /// True when the failure is ours (keys or revocations unavailable), not
    /// the token's.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            TokenError::KeysUnavailable(_) | TokenError::RevocationsNotLoaded
        )
    }
}
