//! The pipeline of one check (SPEC §12): request model → identity → policy →
//! answer. Adapters call [`Authorizer::check`]; it never fails: a request it cannot
//! decide is answered 503, never allowed.

use crate::answer::{Answer, DenyKind, RequestId};
use crate::config::{Config, HeadersConfig, IssuerConfig, KeySpec};
use crate::identity::{
    jwks::JwksCache, Authentication, Authenticator, Issuer, KeySource, TokenCache, TokenError,
    VerifiedToken,
};
use crate::metrics::{DecisionLabels, Metrics};
use crate::policy::{decide, Context, NormalizedPath, Policy};
use crate::principal::{Principal, User};
use crate::request::AuthzRequest;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;

/// Bounded size of the verified-token cache.
const TOKEN_CACHE_ENTRIES: u64 = 100_000;

/// What the config decides about checks, apart from the policy: the issuers (with
/// their key refreshers) and the headers. Replaced whole when the config is
/// reloaded; dropping it stops its JWKS refreshers.
pub struct Engine {
    authenticator: Authenticator,
    headers: HeadersConfig,
    refreshers: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Builds the issuers of `config` and starts their JWKS fetches (start does
    /// not wait for them; readiness does). Needs a tokio runtime.
    pub fn build(config: &Config, metrics: &Arc<Metrics>) -> Engine {
        let mut refreshers = Vec::new();
        let issuers = config
            .issuers
            .iter()
            .map(|issuer| {
                let (issuer, refresher) = build_issuer(issuer, metrics);
                refreshers.extend(refresher);
                issuer
            })
            .collect();
        let authenticator = Authenticator::new(
            issuers,
            TokenCache::new(TOKEN_CACHE_ENTRIES),
            Arc::clone(metrics),
        );
        Engine {
            authenticator,
            headers: config.headers.clone(),
            refreshers,
        }
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The user context of a verified user token (SPEC §5): what policy reads as
    /// `user.*` and what headers and issued tokens carry. Every path that needs a
    /// user's context (checks, token exchange) goes through here.
    pub fn user_for(&self, token: &VerifiedToken) -> User {
        User::from_claims(&token.issuer, &token.subject, token.claims.clone())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for refresher in &self.refreshers {
            refresher.abort();
        }
    }
}

fn build_issuer(config: &IssuerConfig, metrics: &Arc<Metrics>) -> (Issuer, Option<JoinHandle<()>>) {
    let (keys, refresher) = match &config.keys {
        KeySpec::Static(set) => (KeySource::Static(Arc::clone(set)), None),
        KeySpec::Remote { uri, timing } => {
            let cache = JwksCache::new(&config.name, uri, *timing, Arc::clone(metrics));
            let refresher = cache.spawn_refresher();
            (KeySource::Remote(cache), Some(refresher))
        }
    };
    let issuer = Issuer {
        name: config.name.clone(),
        kind: config.kind,
        rules: config.rules.clone(),
        algorithms: config.algorithms.clone(),
        credentials: config.credentials.clone(),
        keys,
    };
    (issuer, refresher)
}

/// Decides requests. Shared by every adapter.
pub struct Authorizer {
    engine: ArcSwap<Engine>,
    policy: ArcSwap<Policy>,
    /// Why the last reload failed, while the previous policy/config serves.
    reload_error: ArcSwapOption<String>,
    metrics: Arc<Metrics>,
}

impl Authorizer {
    pub fn new(engine: Engine, policy: Arc<Policy>, metrics: Arc<Metrics>) -> Self {
        Self {
            engine: ArcSwap::from_pointee(engine),
            policy: ArcSwap::new(policy),
            reload_error: ArcSwapOption::empty(),
            metrics,
        }
    }

    /// The engine in force (issuers, headers).
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// Swaps in a new engine atomically; checks in flight finish on the old one.
    pub fn set_engine(&self, engine: Engine) {
        self.engine.store(Arc::new(engine));
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Swaps in a new policy atomically; checks in flight finish on the old one.
    pub fn set_policy(&self, policy: Arc<Policy>) {
        self.policy.store(policy);
    }

    /// Records the outcome of a reload: `Some(why)` when it failed.
    pub fn set_reload_error(&self, error: Option<String>) {
        self.reload_error.store(error.map(Arc::new));
    }

    /// Why the last reload failed, if it did.
    pub fn reload_error(&self) -> Option<Arc<String>> {
        self.reload_error.load_full()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Decides one request.
    pub async fn check(&self, request: &AuthzRequest) -> Answer {
        let started = Instant::now();
        let engine = self.engine.load();
        let request_id = RequestId::of(request, &engine.headers.request_id);
        let (answer, rule, principal_kind) = self.decide(&engine, request, &request_id).await;
        let result = match &answer {
            Answer::Allow { .. } => "allow",
            Answer::Deny { .. } => "deny",
        };
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                result,
                rule: rule.clone(),
                principal: principal_kind,
            })
            .inc();
        self.metrics
            .check_duration
            .observe(started.elapsed().as_secs_f64());
        match &answer {
            Answer::Allow { .. } => tracing::debug!(
                request_id = %request_id.value, %result, %rule, principal = principal_kind,
                method = %request.method, path = %request.path, "decision"
            ),
            Answer::Deny { status, .. } => tracing::info!(
                request_id = %request_id.value, %result, %rule, principal = principal_kind,
                status, method = %request.method, path = %request.path, "decision"
            ),
        }
        answer
    }

    /// The answer, the deciding rule (or the stage that answered) and the
    /// principal kind, for logs and metrics.
    async fn decide(
        &self,
        engine: &Engine,
        request: &AuthzRequest,
        request_id: &RequestId,
    ) -> (Answer, String, &'static str) {
        let rid = request_id.value.as_str();
        let path = match NormalizedPath::parse(&request.path) {
            Ok(path) => path,
            Err(e) => {
                let message = format!("the request path is rejected: {e}");
                return (
                    Answer::deny(DenyKind::BadRequest, &message, rid),
                    "path".into(),
                    "anonymous",
                );
            }
        };
        let principal = match engine.authenticator.authenticate(request).await {
            Ok(Authentication::Anonymous) => Principal::Anonymous,
            Ok(Authentication::Token(token)) => Principal::User(engine.user_for(&token)),
            Err(e) => return (token_error(&e, rid), "authentication".into(), "invalid"),
        };
        let policy = self.policy.load();
        let decision = decide(
            &policy,
            &Context {
                request,
                path: &path,
                principal: &principal,
            },
        );
        for (rule, would) in &decision.observed {
            tracing::info!(request_id = %rid, %rule, would = would.as_str(), principal = principal.kind(),
                method = %request.method, path = %path, "dry-run/audit rule matched");
            self.metrics
                .observed
                .get_or_create(&DecisionLabels {
                    result: would.as_str(),
                    rule: rule.clone(),
                    principal: principal.kind(),
                })
                .inc();
        }
        let answer =
            Answer::for_decision(&decision, &engine.headers, request, &principal, request_id);
        (answer, decision.rule_name().to_owned(), principal.kind())
    }
}

fn token_error(error: &TokenError, request_id: &str) -> Answer {
    let kind = if error.is_unavailable() {
        DenyKind::Unavailable
    } else {
        DenyKind::InvalidCredentials
    };
    Answer::deny(kind, &error.to_string(), request_id)
}
