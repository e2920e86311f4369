//! The verified-token cache (SPEC §4): a token seen before skips all signature
//! work. Keyed by a SHA-256 of the token (the token itself is never stored), bounded
//! in size, and no entry outlives the token's `exp`.

use aws_lc_rs::digest;
use moka::sync::Cache;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A token whose signature and claims were verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The configured name of the issuer.
    pub issuer: String,
    pub subject: String,
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

pub type TokenKey = [u8; 32];

/// Bounded cache of verified tokens.
#[derive(Clone)]
pub struct TokenCache {
    cache: Cache<TokenKey, Arc<VerifiedToken>>,
}

struct UntilExpiry;

impl moka::Expiry<TokenKey, Arc<VerifiedToken>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Arc<VerifiedToken>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.expires_at.saturating_sub(unix_now()),
        ))
    }
}

impl TokenCache {
    pub fn new(max_entries: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilExpiry)
                .build(),
        }
    }

    pub fn key(token: &str) -> TokenKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
        key
    }

    /// A cached, still unexpired verification of the token with this key.
    pub fn get(&self, key: &TokenKey) -> Option<Arc<VerifiedToken>> {
        // The expiry policy evicts lazily; never hand out an expired entry.
        self.cache.get(key).filter(|t| t.expires_at > unix_now())
    }

    pub fn insert(&self, key: TokenKey, token: Arc<VerifiedToken>) {
        if token.expires_at > unix_now() {
            self.cache.insert(key, token);
        }
    }

    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
