//! The verified-token cache (SPEC §4): a token seen before skips all signature
//! work. Keyed by 128 bits of the token's SHA-256 (the token itself is never
//! stored: finding another token with a cached key is a 2^128 second preimage),
//! bounded in size, and no entry is handed out after the token's `exp`.
//!
//! An entry is small (SPEC §11: 100,000 users and tokens in under 64 MiB): the
//! subject, `exp`, shared issuer names and — only when something reads claims —
//! the payload JSON, parsed on use.

use crate::principal::Claims;
use aws_lc_rs::digest;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A token whose signature and claims were verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The configured name of the issuer.
    pub issuer: Arc<str>,
    /// The token's `iss` (the issuer's configured `issuer`).
    pub iss: Arc<str>,
    pub subject: Arc<str>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// The payload JSON, when the token was verified for a check that reads
    /// claims (`token.*`, `users.source: claims`, ...).
    pub payload: Option<Arc<str>>,
}

impl VerifiedToken {
    /// Every claim (`token.*`), parsed on first use. Without a kept payload only
    /// `iss` and `sub` are known.
    pub fn claims(&self) -> Claims {
        match &self.payload {
            Some(json) => Claims::from_json(Arc::clone(json)),
            None => Claims::registered(Arc::clone(&self.iss), Arc::clone(&self.subject)),
        }
    }
}

pub type TokenKey = u128;

/// Bounded cache of verified tokens.
#[derive(Clone)]
pub struct TokenCache {
    cache: Arc<quick_cache::sync::Cache<TokenKey, Arc<VerifiedToken>>>,
}

impl TokenCache {
    pub fn new(max_entries: u64) -> Self {
        Self {
            cache: Arc::new(quick_cache::sync::Cache::new(
                usize::try_from(max_entries).unwrap_or(usize::MAX),
            )),
        }
    }

    pub fn key(token: &str) -> TokenKey {
        let digest = digest::digest(&digest::SHA256, token.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest.as_ref()[..16]);
        u128::from_le_bytes(key)
    }

    /// A cached, still unexpired verification of the token with this key.
    pub fn get(&self, key: &TokenKey) -> Option<Arc<VerifiedToken>> {
        let now = unix_now();
        match self.cache.get(key) {
            Some(token) if token.expires_at > now => Some(token),
            Some(_) => {
                self.cache.remove_if(key, |t| t.expires_at <= now);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: TokenKey, token: Arc<VerifiedToken>) {
        if token.expires_at > unix_now() {
            self.cache.insert(key, token);
        }
    }

    pub fn len(&self) -> u64 {
        self.cache.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires_at: u64) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken {
            issuer: "app".into(),
            iss: "https://idp".into(),
            subject: "u1".into(),
            expires_at,
            payload: None,
        })
    }

    #[test]
    fn no_entry_outlives_its_token() {
        let cache = TokenCache::new(10);
        let (expired, live, soon) = (
            TokenCache::key("a.b.c"),
            TokenCache::key("d.e.f"),
            TokenCache::key("g.h.i"),
        );
        assert_ne!(expired, live, "distinct tokens, distinct keys");
        cache.insert(expired, token(unix_now() - 1));
        assert!(
            cache.get(&expired).is_none(),
            "an expired token is never cached"
        );
        cache.insert(live, token(unix_now() + 600));
        assert_eq!(
            cache.get(&live).map(|t| t.expires_at > unix_now()),
            Some(true)
        );
        cache.insert(soon, token(unix_now() + 1));
        assert!(cache.get(&soon).is_some());
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(cache.get(&soon).is_none(), "handed out only until `exp`");
        assert_eq!(cache.len(), 1, "and dropped once seen expired");
    }
}
