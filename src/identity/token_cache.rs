//! The verified-token cache: a token seen before skips all signature work.
//! Keyed by 128 bits of the token's SHA-256 (the token itself is never stored),
//! bounded in bytes (`token_cache.max_bytes`), and no entry is handed out after
//! the token's `exp`. An entry holds the subject, `exp`, shared issuer names,
//! what a revocation matches it by (`jti`, `sid`, `idp_sub`, `iat`) and — only when
//! something reads claims — the payload JSON, parsed on use.

use crate::clock::Clock;
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
    /// What a revocation matches the token by, kept even without the payload.
    pub ids: TokenIds,
    /// The payload JSON, when the token was verified for a check that reads
    /// claims (`token.*`, `users.source: claims`, ...).
    pub payload: Option<Arc<str>>,
    /// The generation of the issuers that verified it: a reload that changes
    /// the issuers starts a new one, and older entries are verified again.
    pub generation: u64,
}

/// The claims revocation reads (docs/revocation.md), read once at
/// verification so a cache hit has them without the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenIds {
    /// `jti`.
    pub jti: Option<Arc<str>>,
    /// Clerk's session id `sid`, which portcullis' own tokens carry on.
    pub sid: Option<Arc<str>>,
    /// `idp_sub`: in a token portcullis signed, the subject of the IdP token
    /// it was made from (docs/east-west.md). A `sub` revocation matches it only
    /// in tokens of portcullis' own issuer.
    pub idp_sub: Option<Arc<str>>,
    /// `iat`, whole seconds since the epoch.
    pub issued_at: Option<u64>,
}

impl TokenIds {
    fn heap_bytes(&self) -> usize {
        let text = |s: &Option<Arc<str>>| s.as_ref().map_or(0, |s| s.len() + 16);
        text(&self.jti) + text(&self.sid) + text(&self.idp_sub)
    }
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

/// What an entry costs besides its subject and payload: the `VerifiedToken`
/// allocation, its `Arc`, the key and the cache's slot, rounded up to the
/// allocator's size class.
const ENTRY_OVERHEAD_BYTES: u64 = 192;

/// How big the cache may grow (`token_cache:` in docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCacheLimits {
    /// The bound of all entries together, in bytes (their estimated heap use).
    pub max_bytes: u64,
    /// A token longer than this is verified on every request, never cached: one
    /// huge token must not push out thousands of ordinary ones.
    pub max_token_bytes: usize,
}

impl Default for TokenCacheLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 * 1024 * 1024,
            max_token_bytes: 16 * 1024,
        }
    }
}

#[derive(Clone)]
struct EntryBytes;

impl quick_cache::Weighter<TokenKey, Arc<VerifiedToken>> for EntryBytes {
    fn weight(&self, _key: &TokenKey, token: &Arc<VerifiedToken>) -> u64 {
        token.heap_bytes()
    }
}

impl VerifiedToken {
    /// The estimated heap bytes of a cache entry holding this token.
    pub fn heap_bytes(&self) -> u64 {
        let payload = self.payload.as_ref().map_or(0, |p| p.len() + 16);
        ENTRY_OVERHEAD_BYTES + (self.subject.len() + 16 + payload + self.ids.heap_bytes()) as u64
    }
}

/// The verified-token cache, bounded in bytes. Lives as long as the process: a
/// reload does not empty it (entries carry their issuers' generation instead).
#[derive(Clone)]
pub struct TokenCache {
    cache: Arc<quick_cache::sync::Cache<TokenKey, Arc<VerifiedToken>, EntryBytes>>,
    limits: TokenCacheLimits,
    clock: Clock,
}

impl TokenCache {
    pub fn new(limits: TokenCacheLimits, clock: Clock) -> Self {
        let estimated_entries = usize::try_from(limits.max_bytes / 256).unwrap_or(usize::MAX);
        Self {
            cache: Arc::new(quick_cache::sync::Cache::with_weighter(
                estimated_entries.max(16),
                limits.max_bytes,
                EntryBytes,
            )),
            limits,
            clock,
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
        let now = self.clock.unix_secs();
        match self.cache.get(key) {
            Some(token) if token.expires_at > now => Some(token),
            Some(_) => {
                self.cache.remove_if(key, |t| t.expires_at <= now);
                None
            }
            None => None,
        }
    }

    /// Caches the verification of a token of `token_len` bytes, unless the token
    /// is over the size limit or already expired.
    pub fn insert(&self, key: TokenKey, token_len: usize, token: Arc<VerifiedToken>) {
        if token_len <= self.limits.max_token_bytes && token.expires_at > self.clock.unix_secs() {
            self.cache.insert(key, token);
        }
    }

    pub fn len(&self) -> u64 {
        self.cache.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The estimated heap bytes of all entries (at most `max_bytes`).
    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }

    /// The time entries are judged by.
    pub fn clock(&self) -> &Clock {
        &self.clock
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
    use std::time::Duration;

    fn token(expires_at: u64, payload: usize) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken {
            issuer: "app".into(),
            iss: "https://idp".into(),
            subject: "u1".into(),
            expires_at,
            ids: TokenIds::default(),
            payload: (payload > 0).then(|| "x".repeat(payload).into()),
            generation: 0,
        })
    }

    #[test]
    fn no_entry_outlives_its_token() {
        let clock = Clock::manual();
        let cache = TokenCache::new(TokenCacheLimits::default(), clock.clone());
        let now = clock.unix_secs();
        let (expired, live, soon) = (
            TokenCache::key("a.b.c"),
            TokenCache::key("d.e.f"),
            TokenCache::key("g.h.i"),
        );
        assert_ne!(expired, live, "distinct tokens, distinct keys");
        cache.insert(expired, 5, token(now - 1, 0));
        assert!(
            cache.get(&expired).is_none(),
            "an expired token is never cached"
        );
        cache.insert(live, 5, token(now + 600, 0));
        assert!(cache.get(&live).is_some());
        cache.insert(soon, 5, token(now + 2, 0));
        clock.advance(Duration::from_millis(1_999));
        assert!(cache.get(&soon).is_some(), "until `exp`");
        clock.advance(Duration::from_millis(1_000));
        assert!(cache.get(&soon).is_none(), "handed out only until `exp`");
        assert_eq!(cache.len(), 1, "and dropped once seen expired");
    }

    #[test]
    fn bounded_in_bytes_not_entries() {
        let clock = Clock::manual();
        let limits = TokenCacheLimits {
            max_bytes: 1024 * 1024,
            max_token_bytes: 16 * 1024,
        };
        let cache = TokenCache::new(limits, clock.clone());
        let exp = clock.unix_secs() + 600;
        // 2,000 tokens of ~11 KB with their payload kept: ~22 MB unbounded.
        for i in 0..2_000u32 {
            let key = TokenCache::key(&format!("token-{i}"));
            cache.insert(key, 11_000, token(exp, 8_000));
        }
        assert!(
            cache.bytes() <= limits.max_bytes,
            "{} bytes held, bound {}",
            cache.bytes(),
            limits.max_bytes
        );
        assert!(cache.len() > 50, "the bound is filled, not emptied");
        assert!(
            cache.len() < 200,
            "{} entries of 8 KB in 1 MiB",
            cache.len()
        );

        // Small entries: many more fit in the same bound.
        let small = TokenCache::new(limits, clock.clone());
        for i in 0..2_000u32 {
            small.insert(TokenCache::key(&format!("t-{i}")), 600, token(exp, 0));
        }
        assert_eq!(small.len(), 2_000);
    }

    #[test]
    fn a_token_over_the_size_limit_is_never_cached() {
        let clock = Clock::manual();
        let limits = TokenCacheLimits {
            max_bytes: 1024 * 1024,
            max_token_bytes: 4096,
        };
        let cache = TokenCache::new(limits, clock.clone());
        let exp = clock.unix_secs() + 600;
        cache.insert(TokenCache::key("big"), 4097, token(exp, 100));
        cache.insert(TokenCache::key("fits"), 4096, token(exp, 100));
        assert!(cache.get(&TokenCache::key("big")).is_none());
        assert!(cache.get(&TokenCache::key("fits")).is_some());
    }
}
