//! Credentials to principals: find the token a request carries, pick its issuer,
//! verify it (through the verified-token cache), and build the principal. This
//! room may do I/O (JWKS fetches); policy never does.

pub mod algorithm;
pub mod caller;
pub mod claims;
pub mod context_token;
mod error;
pub mod issuer;
pub mod jwks;
pub mod jws;
pub mod keys;
pub mod mtls;
pub mod spiffe;
pub mod svix;
pub mod token_cache;
pub mod x509;
pub mod xfcc;

pub use algorithm::Algorithm;
pub use error::TokenError;
pub use issuer::{Credential, Issuer, IssuerKind, KeySource};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
pub use token_cache::{TokenCache, VerifiedToken};

use crate::metrics::Metrics;
use crate::request::AuthzRequest;
use claims::RegisteredClaims;
use jws::CompactJws;
use std::sync::Arc;

/// The request's credential, verified, or why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Authentication {
    /// No credential of any issuer was presented.
    Anonymous,
    /// A verified token.
    Token(Arc<VerifiedToken>),
}

/// Verifies the credentials of requests against the configured issuers.
pub struct Authenticator {
    issuers: Vec<Issuer>,
    cache: TokenCache,
    /// The generation of `issuers` (a cached token of another one is verified
    /// again: the issuers that accepted it may have changed since).
    generation: u64,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    pub fn new(
        issuers: Vec<Issuer>,
        cache: TokenCache,
        generation: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            issuers,
            cache,
            generation,
            metrics,
        }
    }

    pub fn issuers(&self) -> &[Issuer] {
        &self.issuers
    }

    /// The kind of the issuer configured under `name`.
    pub fn kind_of(&self, name: &str) -> Option<IssuerKind> {
        self.issuers
            .iter()
            .find(|i| *i.name == *name)
            .map(|i| i.kind)
    }

    /// Finds and verifies the request's token. The first credential location (in
    /// issuer order, then credential order) that holds a token decides: a bad
    /// token there is an error even if another location holds a good one.
    /// `keep_claims`: the caller reads claims beyond `iss` and `sub`, so the
    /// payload must be kept (a cached entry without it is verified again).
    pub async fn authenticate(
        &self,
        request: &AuthzRequest,
        keep_claims: bool,
    ) -> Result<Authentication, TokenError> {
        let Some((found_in, token)) = self.credential(request) else {
            return Ok(Authentication::Anonymous);
        };
        let key = TokenCache::key(token);
        match self.cache.get(&key) {
            Some(hit)
                if hit.generation == self.generation
                    && (hit.payload.is_some() || !keep_claims)
                    && self.reads_from(&hit.issuer, found_in) =>
            {
                self.metrics.cache_lookup("token", true);
                return Ok(Authentication::Token(hit));
            }
            _ => self.metrics.cache_lookup("token", false),
        }
        let jws = CompactJws::parse(token)?;
        let payload = jws.unverified_payload_text()?;
        let claims = RegisteredClaims::parse(&payload)?;
        let issuer = self.issuer_for(&claims, token, request)?;
        let now = self.cache.clock().unix_secs();
        let mut verified = issuer
            .verify(&jws, &payload, &claims, now, keep_claims)
            .await?;
        verified.generation = self.generation;
        let verified = Arc::new(verified);
        self.cache.insert(key, token.len(), Arc::clone(&verified));
        Ok(Authentication::Token(verified))
    }

    /// The credential that decides (the first location, in issuer order then
    /// credential order, that holds a token) and where it was found: what
    /// [`Authenticator::authenticate`] verifies, and what `per: token` rate
    /// limits count.
    pub fn credential<'r>(&self, request: &'r AuthzRequest) -> Option<(&Credential, &'r str)> {
        self.issuers
            .iter()
            .flat_map(|issuer| issuer.credentials.iter())
            .find_map(|credential| credential.extract(request).map(|t| (credential, t)))
    }

    /// Whether the issuer named `name` looks for tokens in `location`: a cached
    /// verification is good only where the issuer reads it (an issuer reading
    /// only `Authorization` refuses its token in a cookie, cached or not).
    fn reads_from(&self, name: &str, location: &Credential) -> bool {
        self.issuers
            .iter()
            .find(|issuer| *issuer.name == *name)
            .is_some_and(|issuer| issuer.credentials.contains(location))
    }

    /// The issuer whose `iss` the (not yet verified) claims name and which looks
    /// for tokens where this one was found.
    fn issuer_for(
        &self,
        claims: &RegisteredClaims<'_>,
        token: &str,
        request: &AuthzRequest,
    ) -> Result<&Issuer, TokenError> {
        let iss = claims.iss().ok_or(TokenError::MissingClaim("iss"))?;
        self.issuers
            .iter()
            .filter(|issuer| *issuer.rules.issuer == *iss)
            .find(|issuer| {
                issuer
                    .credentials
                    .iter()
                    .any(|c| c.extract(request) == Some(token))
            })
            .ok_or(TokenError::UnknownIssuer)
    }
}
