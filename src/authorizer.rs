//! The pipeline of one check (SPEC §12): request model → identity → policy →
//! answer. Adapters call [`Authorizer::check`]; it never fails: a request it cannot
//! decide is answered 503, never allowed.

use crate::answer::{Answer, DenyKind, RequestId};
use crate::config::{Config, ContextField, HeadersConfig, IssuerConfig, KeySpec};
use crate::directory::{DirectoryError, Lookup, OnUnknown, UserDirectory};
use crate::identity::caller::{EastWest, IdentityError};
use crate::identity::svix::{SvixHeaders, WebhookError, WebhookSecret};
use crate::identity::IssuerKind;
use crate::identity::{
    jwks::JwksCache, Authentication, Authenticator, Issuer, KeySource, TokenCache, TokenError,
    VerifiedToken,
};
use crate::metrics::{DecisionLabels, Metrics};
use crate::mint::TokenMint;
use crate::policy::{decide, Context, NormalizedPath, Policy};
use crate::principal::{Principal, User, Webhook};
use crate::request::AuthzRequest;
use crate::state::SharedState;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Bounded size of the verified-token cache.
const TOKEN_CACHE_ENTRIES: u64 = 100_000;

/// What the config decides about checks, apart from the policy: the issuers (with
/// their key refreshers) and the headers. Replaced whole when the config is
/// reloaded; dropping it stops its JWKS refreshers.
pub struct Engine {
    authenticator: Authenticator,
    headers: HeadersConfig,
    /// mTLS identities, service tokens and forwarded user context (SPEC §4).
    east_west: EastWest,
    /// The tokens portcullis signs (SPEC §6), when `tokens` is configured.
    mint: Option<Arc<TokenMint>>,
    directory: UserDirectory,
    /// Whether headers or the user context read token claims beyond `iss` and
    /// `sub`: verified tokens then keep their payload (the policy may ask too).
    keep_claims: bool,
    /// Where Clerk webhooks are verified (`webhooks.clerk`).
    clerk_webhook: Option<WebhookSecret>,
    /// Svix ids already seen within the tolerance window (replay protection).
    webhook_ids: moka::sync::Cache<String, ()>,
    /// Evictions shared with the other replicas (`state.redis`).
    shared: Option<Arc<SharedState>>,
    refreshers: Vec<JoinHandle<()>>,
}

/// Why a verified user token yields no user context.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UserError {
    /// The directory does not know the subject and `on_unknown` is `deny` (401).
    #[error("the user is not known to the user directory")]
    Unknown,
    /// The user was deleted (401).
    #[error("the user has been deleted")]
    Deleted,
    /// The directory could not answer (503).
    #[error(transparent)]
    Unavailable(#[from] DirectoryError),
}

impl Engine {
    /// Builds the issuers of `config` and starts their JWKS fetches (start does
    /// not wait for them; readiness does). Needs a tokio runtime.
    pub fn build(config: &Config, metrics: &Arc<Metrics>) -> Result<Engine, DirectoryError> {
        let mut refreshers = Vec::new();
        let directory = UserDirectory::open(config.users.clone(), Arc::clone(metrics))?;
        let shared = config
            .redis
            .as_deref()
            .map(SharedState::new)
            .transpose()?
            .map(Arc::new);
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
        let mint = config.tokens.as_ref().map(|t| Arc::new(TokenMint::new(t)));
        let keep_claims = mint.is_some()
            || directory.is_claims()
            || config.users.on_unknown == OnUnknown::Claims
            || config.headers.user.iter().any(|(_, field)| {
                matches!(field, ContextField::Token(name) if name != "sub" && name != "iss")
            });
        Ok(Engine {
            keep_claims,
            authenticator,
            headers: config.headers.clone(),
            east_west: EastWest::new(
                config.mtls.clone(),
                config.headers.user.clone(),
                mint.as_ref()
                    .filter(|_| config.headers.internal_token)
                    .map(|mint| mint.internal_verifier()),
            ),
            mint,
            directory,
            clerk_webhook: config.clerk_webhook.clone(),
            webhook_ids: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(
                    2 * crate::identity::svix::TOLERANCE_SECS,
                ))
                .build(),
            shared,
            refreshers,
        })
    }

    pub fn directory(&self) -> &UserDirectory {
        &self.directory
    }

    /// The Clerk webhook secret and the ids seen, when webhooks are configured.
    pub fn clerk_webhook(&self) -> Option<(&WebhookSecret, &moka::sync::Cache<String, ()>)> {
        self.clerk_webhook.as_ref().map(|s| (s, &self.webhook_ids))
    }

    /// The webhook principal of a request carrying a Svix signature (SPEC §4: a
    /// webhook route forwarded to an upstream, with Envoy sending the body):
    /// `None` when the request carries no `svix-signature` or no webhook is
    /// configured. No replay check here: Svix retries a delivery the upstream
    /// failed with the same id, so the upstream deduplicates by `svix-id`; the
    /// five-minute timestamp tolerance bounds replays.
    pub fn webhook_caller(
        &self,
        request: &AuthzRequest,
    ) -> Option<Result<Principal, WebhookError>> {
        let secret = self.clerk_webhook.as_ref()?;
        let signature = request.header("svix-signature")?;
        let headers = SvixHeaders {
            id: request.header("svix-id"),
            timestamp: request.header("svix-timestamp"),
            signature: Some(signature),
        };
        Some(
            secret
                .verify(
                    headers,
                    request.body(),
                    crate::identity::token_cache::unix_now(),
                )
                .map(|_| {
                    Principal::Webhook(Webhook {
                        name: "clerk".into(),
                    })
                }),
        )
    }

    /// The state shared with other replicas, when `state.redis` is set.
    pub fn shared(&self) -> Option<&Arc<SharedState>> {
        self.shared.as_ref()
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The signer of SPEC §6's tokens, when `tokens` is configured.
    pub fn mint(&self) -> Option<&Arc<TokenMint>> {
        self.mint.as_ref()
    }

    /// The user context of a verified user token (SPEC §5): what policy reads as
    /// `user.*` and what headers and issued tokens carry. Every path that needs a
    /// user's context (checks, token exchange) goes through here.
    pub async fn user_for(&self, token: &VerifiedToken) -> Result<User, UserError> {
        let from_claims = || {
            User::from_claims(
                Arc::clone(&token.issuer),
                Arc::clone(&token.subject),
                token.claims(),
            )
        };
        // A token portcullis signed itself (token exchange) already carries the
        // directory's context, and its `sub` is `user.id`, not the IdP subject the
        // directory is keyed by: it is read back, never looked up again.
        if let Some(mint) = &self.mint {
            if *token.iss == *mint.issuer() {
                return crate::identity::context_token::user_of(token.claims().map())
                    .map_err(|_| UserError::Unknown);
            }
        }
        if self.directory.is_claims() {
            return Ok(from_claims());
        }
        match self.directory.lookup(&token.subject).await? {
            Lookup::Found(fields) => Ok(User {
                issuer: Arc::clone(&token.issuer),
                subject: Arc::clone(&token.subject),
                claims: token.claims(),
                fields,
            }),
            Lookup::Deleted => Err(UserError::Deleted),
            Lookup::Unknown => match self.directory.config().on_unknown {
                OnUnknown::Claims => Ok(from_claims()),
                OnUnknown::Deny => Err(UserError::Unknown),
            },
        }
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
        name: config.name.as_str().into(),
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
                method = %request.method(), path = %request.path(), "decision"
            ),
            Answer::Deny { status, .. } => tracing::info!(
                request_id = %request_id.value, %result, %rule, principal = principal_kind,
                status, method = %request.method(), path = %request.path(), "decision"
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
        let path = match NormalizedPath::parse(request.path()) {
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
        if let Some(webhook) = engine.webhook_caller(request) {
            let principal = match webhook {
                Ok(principal) => principal,
                Err(e) => {
                    let message = format!("the webhook signature is not accepted: {e}");
                    let answer = Answer::deny(DenyKind::InvalidCredentials, &message, rid);
                    return (answer, "authentication".into(), "invalid");
                }
            };
            let decision = decide(
                &self.policy.load(),
                &Context {
                    request,
                    path: &path,
                    principal: &principal,
                },
            );
            let answer =
                Answer::for_decision(&decision, &engine.headers, request, &principal, request_id);
            return (answer, decision.rule_name().to_owned(), principal.kind());
        }
        let caller = match engine.east_west.caller(request) {
            Ok(caller) => caller,
            Err(e) => return (identity_error(&e, rid), "authentication".into(), "invalid"),
        };
        let keep_claims = engine.keep_claims || self.policy.load().reads_token_claims();
        let principal = match engine
            .authenticator
            .authenticate(request, keep_claims)
            .await
        {
            Ok(Authentication::Anonymous) => caller.without_token(),
            Ok(Authentication::Token(token))
                if engine.authenticator.kind_of(&token.issuer) == Some(IssuerKind::Service) =>
            {
                caller.with_service_token(&token)
            }
            Ok(Authentication::Token(token)) => match engine.user_for(&token).await {
                Ok(user) => caller.with_user(user),
                Err(UserError::Unavailable(e)) => {
                    // The detail (maybe an SQL error) is logged, never sent.
                    tracing::warn!(request_id = %rid, error = %e, "no decision: user directory unavailable");
                    let answer = Answer::deny(
                        DenyKind::Unavailable,
                        "the user directory is unavailable; try again shortly",
                        rid,
                    );
                    return (answer, "directory".into(), "user");
                }
                Err(e) => {
                    let answer = Answer::deny(DenyKind::InvalidCredentials, &e.to_string(), rid);
                    return (answer, "directory".into(), "user");
                }
            },
            Err(e) => return (token_error(&e, rid), "authentication".into(), "invalid"),
        };
        let principal = match principal {
            Ok(principal) => principal,
            Err(e) => return (identity_error(&e, rid), "authentication".into(), "invalid"),
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
                method = %request.method(), path = %path, "dry-run/audit rule matched");
            self.metrics
                .observed
                .get_or_create(&DecisionLabels {
                    result: would.as_str(),
                    rule: rule.clone(),
                    principal: principal.kind(),
                })
                .inc();
        }
        let mut answer =
            Answer::for_decision(&decision, &engine.headers, request, &principal, request_id);
        if let Some(header) = caller.untrusted_header() {
            answer.remove_header(header);
        }
        if let Some(mint) = &engine.mint {
            mint.seal(
                &mut answer,
                &engine.headers,
                &principal,
                decision.forward_user,
            );
        }
        (answer, decision.rule_name().to_owned(), principal.kind())
    }
}

/// An identity that is presented but not accepted (mTLS, service token, internal
/// token): 401 with the reason.
fn identity_error(error: &IdentityError, request_id: &str) -> Answer {
    Answer::deny(DenyKind::InvalidCredentials, &error.to_string(), request_id)
}

fn token_error(error: &TokenError, request_id: &str) -> Answer {
    let kind = if error.is_unavailable() {
        DenyKind::Unavailable
    } else {
        DenyKind::InvalidCredentials
    };
    Answer::deny(kind, &error.to_string(), request_id)
}
