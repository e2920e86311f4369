//! Prometheus metrics (docs/operations.md), one registry per process, served at `/metrics`.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub result: &'static str,
    /// The deciding rule (`default` when none matched); empty when a stage
    /// before the policy answered.
    pub rule: String,
    pub principal: &'static str,
    /// `policy`, or the stage that answered: `request` (an HTTP-mode check its
    /// dialect cannot read), `path`, `authentication`, `directory`.
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    pub issuer: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Every metric portcullis exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub decisions: Family<DecisionLabels, Counter>,
    /// Audit and dry-run rules that matched: what they would have done.
    pub observed: Family<DecisionLabels, Counter>,
    pub check_duration: Histogram,
    pub jwks_fetches: Family<FetchLabels, Counter>,
    pub cache: Family<CacheLabels, Counter>,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub directory_queries: Family<ResultLabels, Counter>,
    pub directory_query_duration: Histogram,
    pub webhooks: Family<WebhookLabels, Counter>,
    /// Credentials refused because a revocation names them.
    pub revoked: Family<RevokedLabels, Counter>,
    /// Requests answered 429 (docs/rate-limits.md).
    pub rate_limited: Family<RateLimitLabels, Counter>,
    /// One global rate-limit check in Redis (the script's round trip).
    pub rate_limit_redis_duration: Histogram,
    /// Global rate-limit checks counted locally because Redis did not answer.
    pub rate_limit_fallbacks: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    /// The rule whose `rate_limit` refused the request.
    pub rule: String,
    /// Its `per`: `user`, `service`, `ip`, `token` or `rule`.
    pub per: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevokedLabels {
    /// What the revocation matched: `jti`, `sub` or `sid`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: &'static str,
    pub result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "portcullis_decisions",
            "Decisions by result, deciding rule and principal kind",
            decisions.clone(),
        );
        let observed = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "portcullis_observed_decisions",
            "Audit and dry-run rules that matched, by what they would have done",
            observed.clone(),
        );
        // 25 µs .. ~0.8 s: the interesting range for an authorization hop.
        let check_duration = Histogram::new(exponential_buckets(0.000_025, 2.0, 16));
        registry.register(
            "portcullis_check_duration_seconds",
            "Time spent deciding one Check, from request model to answer",
            check_duration.clone(),
        );
        let jwks_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "portcullis_jwks_fetch",
            "JWKS fetches by issuer and result",
            jwks_fetches.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "portcullis_cache_requests",
            "Cache lookups by cache and result (hit/miss)",
            cache.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "portcullis_policy_reload",
            "Policy loads and reloads by result",
            policy_reloads.clone(),
        );
        let directory_queries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "portcullis_directory_queries",
            "User directory backend queries by result (success/error)",
            directory_queries.clone(),
        );
        let directory_query_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "portcullis_directory_query_duration_seconds",
            "Time of one user directory backend query",
            directory_query_duration.clone(),
        );
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "portcullis_webhooks",
            "Webhook deliveries by webhook and result",
            webhooks.clone(),
        );
        let revoked = Family::<RevokedLabels, Counter>::default();
        registry.register(
            "portcullis_revoked",
            "Credentials refused as revoked, by what the revocation matched (jti, sub, sid)",
            revoked.clone(),
        );
        let rate_limited = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "portcullis_rate_limited",
            "Requests refused with 429 by a rule's rate_limit, by rule and per",
            rate_limited.clone(),
        );
        // 50 µs .. ~0.8 s: a loopback round trip up to the 100 ms timeout and beyond.
        let rate_limit_redis_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 15));
        registry.register(
            "portcullis_rate_limit_redis_duration_seconds",
            "Time of one global rate-limit check in Redis",
            rate_limit_redis_duration.clone(),
        );
        let rate_limit_fallbacks = Counter::default();
        registry.register(
            "portcullis_rate_limit_fallbacks",
            "Global rate-limit checks counted in the local bucket because Redis did not answer",
            rate_limit_fallbacks.clone(),
        );
        Self {
            rate_limited,
            rate_limit_redis_duration,
            rate_limit_fallbacks,
            revoked,
            registry: Mutex::new(registry),
            directory_queries,
            directory_query_duration,
            webhooks,
            decisions,
            observed,
            check_duration,
            jwks_fetches,
            cache,
            policy_reloads,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    pub fn cache_lookup(&self, cache: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache
            .get_or_create(&CacheLabels { cache, result })
            .inc();
    }
}
