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
    /// `policy`, or the stage that answered: `path`, `authentication`, `directory`.
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
        Self {
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
