//! The runtime: what lives as long as the process, whatever a reload swaps —
//! metrics, the verified-token cache, user tombstones, webhook replay ids,
//! revocations, the JWKS key sets (keyed by URI), the user directory with its cache (kept while
//! `users:` is unchanged), the Redis publisher (by URL), and whether the process
//! is draining. A reload builds a new [`Pipeline`](crate::authorizer::Pipeline) from
//! these parts, so nothing that did not change starts empty (docs/operations.md,
//! "Reload").

use crate::clock::{Clock, ExpiringSet};
use crate::config::IssuerConfig;
use crate::directory::{DirectoryConfig, DirectoryError, Tombstones, UserDirectory};
use crate::identity::jwks::{JwksCache, JwksTiming};
use crate::identity::svix::TOLERANCE_SECS;
use crate::identity::token_cache::{TokenCache, TokenCacheLimits};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimits;
use crate::replicas::SharedState;
use crate::revocation::Revocations;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long a delivered Svix id is remembered: twice the timestamp tolerance,
/// after which the timestamp check alone refuses the delivery.
pub const WEBHOOK_ID_TTL: Duration = Duration::from_secs(2 * TOLERANCE_SECS);
/// At most this many ids and tombstones are remembered.
const MAX_REMEMBERED: usize = 100_000;

struct JwksEntry {
    cache: Arc<JwksCache>,
    refresher: JoinHandle<()>,
}

/// The process-lived state of one portcullis.
pub struct Runtime {
    metrics: Arc<Metrics>,
    clock: Clock,
    tokens: TokenCache,
    tombstones: Arc<Tombstones>,
    webhook_ids: Arc<ExpiringSet>,
    /// Revoked tokens, subjects and sessions (docs/revocation.md).
    revocations: Arc<Revocations>,
    /// Rate-limit buckets, local and in Redis (docs/rate-limits.md).
    rate_limits: RateLimits,
    jwks: Mutex<HashMap<String, JwksEntry>>,
    directory: Mutex<Option<Arc<UserDirectory>>>,
    shared: Mutex<Option<Arc<SharedState>>>,
    /// The issuers of the last build and their generation (see
    /// [`Runtime::issuer_generation`]).
    issuers: Mutex<(Vec<IssuerConfig>, u64)>,
    draining: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data behind.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Runtime {
    pub fn new(metrics: Arc<Metrics>, clock: Clock, token_cache: TokenCacheLimits) -> Self {
        Self {
            tokens: TokenCache::new(token_cache, clock.clone()),
            tombstones: Arc::new(Tombstones::new(MAX_REMEMBERED, clock.clone())),
            webhook_ids: Arc::new(ExpiringSet::new(MAX_REMEMBERED, clock.clone())),
            revocations: Arc::new(Revocations::new(clock.clone(), Arc::clone(&metrics))),
            rate_limits: RateLimits::new(Arc::clone(&metrics), clock.clone()),
            jwks: Mutex::new(HashMap::new()),
            directory: Mutex::new(None),
            shared: Mutex::new(None),
            issuers: Mutex::new((Vec::new(), 0)),
            draining: AtomicBool::new(false),
            metrics,
            clock,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn token_cache(&self) -> &TokenCache {
        &self.tokens
    }

    pub fn tombstones(&self) -> &Arc<Tombstones> {
        &self.tombstones
    }

    /// Svix ids already delivered (replay protection of `/webhooks/clerk`).
    pub fn webhook_ids(&self) -> &Arc<ExpiringSet> {
        &self.webhook_ids
    }

    /// The rate-limit buckets: they outlive every reload.
    pub fn rate_limits(&self) -> &RateLimits {
        &self.rate_limits
    }

    /// The revocations every check consults.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// The generation of `issuers`: the same as the last build's when they are
    /// equal, else a new one. Cached tokens carry the generation that verified
    /// them, so a reload that changes an issuer (its audiences, keys,
    /// algorithms) has every token verified again, and one that does not keeps
    /// the cache warm.
    pub fn issuer_generation(&self, issuers: &[IssuerConfig]) -> u64 {
        let mut last = lock(&self.issuers);
        if last.0 != issuers {
            last.0 = issuers.to_vec();
            last.1 += 1;
        }
        last.1
    }

    /// The key set of `uri`: the one already held (its keys kept, its refresher
    /// running) when the issuer's name and timing are unchanged; otherwise a new
    /// cache that starts with the old one's keys.
    pub fn jwks(&self, issuer: &str, uri: &str, timing: JwksTiming) -> Arc<JwksCache> {
        let mut held = lock(&self.jwks);
        let old = held.get(uri).map(|entry| Arc::clone(&entry.cache));
        if let Some(cache) = &old {
            if cache.issuer() == issuer && cache.timing() == timing {
                return Arc::clone(cache);
            }
        }
        let keys = old.and_then(|cache| cache.current());
        let cache = JwksCache::seeded(issuer, uri, timing, Arc::clone(&self.metrics), keys);
        let refresher = cache.spawn_refresher();
        if let Some(replaced) = held.insert(
            uri.to_owned(),
            JwksEntry {
                cache: Arc::clone(&cache),
                refresher,
            },
        ) {
            replaced.refresher.abort();
        }
        cache
    }

    /// Stops the refreshers of the key sets no issuer in force uses any more.
    pub fn retain_jwks(&self, uris: &[&str]) {
        lock(&self.jwks).retain(|uri, entry| {
            let keep = uris.contains(&uri.as_str());
            if !keep {
                entry.refresher.abort();
            }
            keep
        });
    }

    /// The user directory of `config`: the one in force (with its cache) when
    /// `users:` is unchanged, else a new one sharing the tombstones.
    pub fn directory(
        &self,
        config: &DirectoryConfig,
    ) -> Result<Arc<UserDirectory>, DirectoryError> {
        let current = lock(&self.directory);
        if let Some(directory) = current.as_ref().filter(|d| d.config() == config) {
            return Ok(Arc::clone(directory));
        }
        Ok(Arc::new(UserDirectory::open_with(
            config.clone(),
            Arc::clone(&self.metrics),
            Arc::clone(&self.tombstones),
            self.clock.clone(),
        )?))
    }

    /// The Redis publisher of `url`, reused while the URL is the same.
    pub fn shared(&self, url: &str) -> Result<Arc<SharedState>, DirectoryError> {
        let mut current = lock(&self.shared);
        if let Some(shared) = current.as_ref().filter(|s| s.url() == url) {
            return Ok(Arc::clone(shared));
        }
        let shared = Arc::new(SharedState::new(url)?);
        *current = Some(Arc::clone(&shared));
        Ok(shared)
    }

    /// Records what a swapped-in pipeline uses: its directory is the one to reuse,
    /// key sets of issuers it no longer has are stopped.
    pub fn adopt(&self, directory: &Arc<UserDirectory>, jwks_uris: &[&str]) {
        *lock(&self.directory) = Some(Arc::clone(directory));
        self.retain_jwks(jwks_uris);
    }

    /// From now on health checks say NOT_SERVING (shutdown has begun).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for entry in lock(&self.jwks).values() {
            entry.refresher.abort();
        }
    }
}
