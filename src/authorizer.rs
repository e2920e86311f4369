//! The pipeline of one check: request model → identity → policy →
//! answer. Adapters call [`Authorizer::check`]; it never fails: a request it cannot
//! decide is answered 503, never allowed.

use crate::answer::{Answer, DenyKind, RequestId};
use crate::clock::{Clock, ExpiringSet};
use crate::config::{Config, IssuerConfig, KeySpec};
use crate::directory::{DirectoryError, Lookup, OnUnknown, UserDirectory};
use crate::headers::{ContextField, HeadersConfig};
use crate::identity::caller::{Caller, EastWest, IdentityError};
use crate::identity::svix::{SvixHeaders, WebhookError, WebhookSecret};
use crate::identity::IssuerKind;
use crate::identity::{
    Authentication, Authenticator, Issuer, KeySource, TokenError, VerifiedToken,
};
use crate::metrics::{DecisionLabels, Metrics};
use crate::mint::TokenMint;
use crate::policy::{decide, Context, NormalizedPath, Policy, RateLimit};
use crate::principal::{Principal, User, Webhook};
use crate::ratelimit::{self, GlobalBuckets};
use crate::replicas::SharedState;
use crate::request::AuthzRequest;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Instant;

/// What the config decides about checks, apart from the policy: the issuers,
/// headers, east-west identity, the user directory and the tokens portcullis
/// signs. Built from a config and the [`Runtime`]'s long-lived parts (key sets,
/// caches, tombstones), so replacing it on a reload loses none of them.
pub struct Pipeline {
    authenticator: Authenticator,
    headers: HeadersConfig,
    /// mTLS identities, service tokens and forwarded user context.
    east_west: EastWest,
    /// The tokens portcullis signs, when `tokens` is configured.
    mint: Option<Arc<TokenMint>>,
    directory: Arc<UserDirectory>,
    /// Whether headers or the user context read token claims beyond `iss` and
    /// `sub`: verified tokens then keep their payload (the policy may ask too).
    keep_claims: bool,
    /// Where Clerk webhooks are verified (`webhooks.clerk`).
    clerk_webhook: Option<WebhookSecret>,
    /// Svix ids already seen within the tolerance window (the runtime's).
    webhook_ids: Arc<ExpiringSet>,
    /// Evictions shared with the other replicas (`state.redis`).
    shared: Option<Arc<SharedState>>,
    /// Where `scope: global` rate limits count (`state.redis`; the runtime's).
    global_limits: Option<Arc<GlobalBuckets>>,
    /// The `jwks_uri`s of the issuers, so the runtime keeps only their key sets.
    jwks_uris: Vec<String>,
    /// `revocation` and `admin` (docs/revocation.md).
    revocation: crate::config::RevocationConfig,
    clock: Clock,
}

/// The config-derived pipeline and the policy in force: swapped whole, so a check
/// never sees half of a reload.
pub struct Snapshot {
    pub pipeline: Arc<Pipeline>,
    pub policy: Arc<Policy>,
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

impl Pipeline {
    /// Builds the issuers of `config` from the runtime's parts: a key set, the
    /// directory and the Redis publisher are reused when their section is
    /// unchanged. Needs a tokio runtime (a new key set starts fetching).
    pub fn build(config: &Config, runtime: &Runtime) -> Result<Pipeline, DirectoryError> {
        let directory = runtime.directory(&config.users)?;
        let shared = config
            .redis
            .as_deref()
            .map(|url| runtime.shared(url))
            .transpose()?;
        let global_limits = config
            .redis
            .as_deref()
            .map(|url| runtime.rate_limits().global(url));
        if global_limits.is_none() {
            ratelimit::warn_global_without_redis(&config.policy);
        }
        let issuers = config
            .issuers
            .iter()
            .map(|issuer| build_issuer(issuer, runtime))
            .collect();
        let jwks_uris = config
            .issuers
            .iter()
            .filter_map(|issuer| match &issuer.keys {
                KeySpec::Remote { uri, .. } => Some(uri.clone()),
                KeySpec::Static { .. } => None,
            })
            .collect();
        let authenticator = Authenticator::new(
            issuers,
            runtime.token_cache().clone(),
            runtime.issuer_generation(&config.issuers),
            Arc::clone(runtime.metrics()),
        );
        let mint = config.tokens.as_ref().map(|t| Arc::new(TokenMint::new(t)));
        let keep_claims = mint.is_some()
            || directory.is_claims()
            || config.users.on_unknown == OnUnknown::Claims
            || config.headers.user.iter().any(|(_, field)| {
                matches!(field, ContextField::Token(name) if name != "sub" && name != "iss")
            });
        Ok(Pipeline {
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
            webhook_ids: Arc::clone(runtime.webhook_ids()),
            shared,
            global_limits,
            jwks_uris,
            revocation: config.revocation.clone(),
            clock: runtime.clock().clone(),
        })
    }

    pub fn directory(&self) -> &UserDirectory {
        &self.directory
    }

    /// `headers:`: what an allow sets and strips, and the request id's name.
    pub fn headers(&self) -> &HeadersConfig {
        &self.headers
    }

    fn jwks_uri_list(&self) -> Vec<&str> {
        self.jwks_uris.iter().map(String::as_str).collect()
    }

    /// The Clerk webhook secret and the ids seen, when webhooks are configured.
    pub fn clerk_webhook(&self) -> Option<(&WebhookSecret, &ExpiringSet)> {
        self.clerk_webhook.as_ref().map(|s| (s, &*self.webhook_ids))
    }

    /// The webhook principal of a request carrying a Svix signature (docs/security.md: a
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
                .verify(headers, request.body(), self.clock.unix_secs())
                .map(|_| {
                    Principal::Webhook(Webhook {
                        name: "clerk".into(),
                    })
                }),
        )
    }

    /// Where global rate limits count, when `state.redis` is set.
    pub fn global_limits(&self) -> Option<&Arc<GlobalBuckets>> {
        self.global_limits.as_ref()
    }

    /// The state shared with other replicas, when `state.redis` is set.
    pub fn shared(&self) -> Option<&Arc<SharedState>> {
        self.shared.as_ref()
    }

    /// Who may revoke, and whether Clerk session webhooks revoke sessions.
    pub fn revocation(&self) -> &crate::config::RevocationConfig {
        &self.revocation
    }

    /// The time webhook timestamps are judged by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The signer of docs/east-west.md's tokens, when `tokens` is configured.
    pub fn mint(&self) -> Option<&Arc<TokenMint>> {
        self.mint.as_ref()
    }

    /// The user context of a verified user token (docs/configuration.md): what policy reads as
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
            // No lookup, but a `user.deleted` webhook still refuses the user.
            if self.directory.is_tombstoned(&token.subject) {
                return Err(UserError::Deleted);
            }
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

fn build_issuer(config: &IssuerConfig, runtime: &Runtime) -> Issuer {
    let keys = match &config.keys {
        KeySpec::Static { keys, .. } => KeySource::Static(Arc::clone(keys)),
        KeySpec::Remote { uri, timing } => {
            KeySource::Remote(runtime.jwks(&config.name, uri, *timing))
        }
    };
    Issuer {
        name: config.name.as_str().into(),
        kind: config.kind,
        rules: config.rules.clone(),
        algorithms: config.algorithms.clone(),
        credentials: config.credentials.clone(),
        keys,
    }
}

/// Decides requests. Shared by every adapter.
pub struct Authorizer {
    runtime: Arc<Runtime>,
    snapshot: ArcSwap<Snapshot>,
    /// `scope: global` limits in Redis are left to the server (the in-proxy
    /// module): see [`Authorizer::leaving_global_limits`].
    leaves_global_limits: bool,
}

impl Authorizer {
    pub fn new(runtime: Arc<Runtime>, pipeline: Pipeline, policy: Arc<Policy>) -> Self {
        runtime.adopt(&pipeline.directory, &pipeline.jwks_uri_list());
        Self {
            runtime,
            snapshot: ArcSwap::from_pointee(Snapshot {
                pipeline: Arc::new(pipeline),
                policy,
            }),
            leaves_global_limits: false,
        }
    }

    /// An authorizer that never counts a `scope: global` limit in Redis: an
    /// allow by such a rule is answered 503 `unavailable` instead, before Redis
    /// is asked, for the ext_authz server behind the in-proxy module to decide
    /// and count once (docs/in-proxy.md). Without `state.redis` the limit counts
    /// in the process as usual.
    pub fn leaving_global_limits(mut self) -> Self {
        self.leaves_global_limits = true;
        self
    }

    /// The 503 `unavailable` answer to `request`, carrying its request id (the
    /// configured header's, or a new one): for an adapter that cannot run the
    /// check at all (docs/answers.md).
    pub fn unavailable(&self, request: &AuthzRequest, why: &str) -> Answer {
        let pipeline = self.pipeline();
        let request_id = RequestId::of(request, &pipeline.headers.request_id);
        Answer::deny(DenyKind::Unavailable, why, &request_id.value)
    }

    /// The config and policy in force, loaded once.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The pipeline in force (issuers, headers).
    pub fn pipeline(&self) -> Arc<Pipeline> {
        Arc::clone(&self.snapshot.load().pipeline)
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.snapshot.load().policy)
    }

    /// Swaps in a new pipeline and policy at once; checks in flight finish on the
    /// old ones.
    pub fn install(&self, pipeline: Pipeline, policy: Arc<Policy>) {
        self.runtime
            .adopt(&pipeline.directory, &pipeline.jwks_uri_list());
        self.snapshot.store(Arc::new(Snapshot {
            pipeline: Arc::new(pipeline),
            policy,
        }));
    }

    /// Swaps in a new policy, keeping the pipeline.
    pub fn set_policy(&self, policy: Arc<Policy>) {
        self.snapshot.rcu(|current| Snapshot {
            pipeline: Arc::clone(&current.pipeline),
            policy: Arc::clone(&policy),
        });
    }

    /// Whether every issuer in force has its keys (a remote JWKS was fetched).
    pub fn keys_loaded(&self) -> bool {
        self.pipeline()
            .authenticator()
            .issuers()
            .iter()
            .all(|issuer| issuer.keys_loaded().is_some())
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.runtime.metrics()
    }

    /// Decides one request.
    pub async fn check(&self, request: &AuthzRequest) -> Answer {
        let started = Instant::now();
        let snapshot = self.snapshot.load();
        let request_id = RequestId::of(request, &snapshot.pipeline.headers.request_id);
        let outcome = match self.decide(&snapshot, request, &request_id).await {
            Ok(outcome) => outcome,
            Err(error) => CheckOutcome::refused(&error, &request_id),
        };
        let result = match &outcome.answer {
            Answer::Allow { .. } => "allow",
            Answer::Deny { .. } => "deny",
        };
        let (rule, stage) = match &outcome.decided_by {
            DecidedBy::Rule(rule) => (rule.as_str(), "policy"),
            DecidedBy::Stage(stage) => ("", stage.as_str()),
        };
        self.metrics()
            .decisions
            .get_or_create(&DecisionLabels {
                result,
                rule: rule.to_owned(),
                principal: outcome.principal,
                stage,
            })
            .inc();
        self.metrics()
            .check_duration
            .observe(started.elapsed().as_secs_f64());
        match &outcome.answer {
            Answer::Allow { .. } => tracing::debug!(
                request_id = %request_id.value, %result, %rule, stage, principal = outcome.principal,
                method = %request.method(), path = %request.path(), "decision"
            ),
            Answer::Deny { kind, .. } => tracing::info!(
                request_id = %request_id.value, %result, %rule, stage, principal = outcome.principal,
                status = kind.status(), method = %request.method(), path = %request.path(), "decision"
            ),
        }
        outcome.answer
    }

    /// The policy's answer, or why the check stopped before the policy.
    async fn decide(
        &self,
        snapshot: &Snapshot,
        request: &AuthzRequest,
        request_id: &RequestId,
    ) -> Result<CheckOutcome, CheckError> {
        let (pipeline, policy) = (&*snapshot.pipeline, &*snapshot.policy);
        let path = NormalizedPath::parse(request.path())?;
        if let Some(webhook) = pipeline.webhook_caller(request) {
            let principal = webhook?;
            let mut outcome =
                self.apply_policy(snapshot, request, &path, &principal, None, request_id);
            self.limit_rate(pipeline, request, &principal, &mut outcome, request_id)
                .await;
            return Ok(outcome);
        }
        let caller = pipeline
            .east_west
            .caller(request, &**self.runtime.revocations())?;
        let keep_claims = pipeline.keep_claims || policy.reads_token_claims();
        let authentication = pipeline
            .authenticator
            .authenticate(request, keep_claims)
            .await?;
        if let Authentication::Token(token) = &authentication {
            let own_issuer = pipeline.mint.as_ref().map(|mint| mint.issuer());
            self.runtime.revocations().check(token, own_issuer)?;
        }
        let principal = match authentication {
            Authentication::Anonymous => caller.without_token()?,
            Authentication::Token(token)
                if pipeline.authenticator.kind_of(&token.issuer) == Some(IssuerKind::Service) =>
            {
                caller.with_service_token(&token)?
            }
            Authentication::Token(token) => caller.with_user(pipeline.user_for(&token).await?)?,
        };
        let mut outcome = self.apply_policy(
            snapshot,
            request,
            &path,
            &principal,
            Some(&caller),
            request_id,
        );
        self.limit_rate(pipeline, request, &principal, &mut outcome, request_id)
            .await;
        if let Some(mint) = &pipeline.mint {
            let forward_user = outcome.forward_user;
            mint.seal(
                &mut outcome.answer,
                &pipeline.headers,
                &principal,
                forward_user,
            );
        }
        Ok(outcome)
    }

    /// Counts an allow by a rule with a `rate_limit` (docs/rate-limits.md): the
    /// client gets the `RateLimit` headers, or a 429 when over the limit.
    async fn limit_rate(
        &self,
        pipeline: &Pipeline,
        request: &AuthzRequest,
        principal: &Principal,
        outcome: &mut CheckOutcome,
        request_id: &RequestId,
    ) {
        if let Some(limit) = outcome.rate_limit.take() {
            if self.leaves_global_limits
                && limit.scope == crate::policy::LimitScope::Global
                && pipeline.global_limits().is_some()
            {
                outcome.answer = Answer::deny(
                    DenyKind::Unavailable,
                    "a scope: global rate limit is counted by the server",
                    &request_id.value,
                );
                return;
            }
            let token = pipeline
                .authenticator
                .credential(request)
                .map(|(_, token)| token);
            let bucket =
                ratelimit::bucket_id(&limit, request, principal, outcome.forward_user, token);
            self.runtime
                .rate_limits()
                .enforce(
                    &limit,
                    bucket,
                    pipeline.global_limits(),
                    &mut outcome.answer,
                    &request_id.value,
                )
                .await;
        }
    }

    /// Runs the policy for `principal` and turns its decision into an answer;
    /// audit and dry-run rules that matched are logged and counted.
    fn apply_policy(
        &self,
        snapshot: &Snapshot,
        request: &AuthzRequest,
        path: &NormalizedPath,
        principal: &Principal,
        caller: Option<&Caller<'_>>,
        request_id: &RequestId,
    ) -> CheckOutcome {
        let decision = decide(
            &snapshot.policy,
            &Context {
                request,
                path,
                principal,
            },
        );
        for (rule, would) in &decision.observed {
            tracing::info!(request_id = %request_id.value, %rule, would = would.as_str(), principal = principal.kind(),
                method = %request.method(), path = %path, "dry-run/audit rule matched");
            self.metrics()
                .observed
                .get_or_create(&DecisionLabels {
                    result: would.as_str(),
                    rule: rule.clone(),
                    principal: principal.kind(),
                    stage: "policy",
                })
                .inc();
        }
        let mut answer = Answer::for_decision(
            &decision,
            &snapshot.pipeline.headers,
            request,
            principal,
            request_id,
        );
        if let Some(header) = caller.and_then(Caller::untrusted_header) {
            answer.remove_header(header);
        }
        CheckOutcome {
            answer,
            decided_by: DecidedBy::Rule(decision.rule_name().to_owned()),
            principal: principal.kind(),
            forward_user: decision.forward_user,
            rate_limit: decision.rate_limit.clone(),
        }
    }
}

/// A check's answer and what decided it (for logs and metrics).
pub struct CheckOutcome {
    pub answer: Answer,
    pub decided_by: DecidedBy,
    /// The principal's kind (`anonymous`, `user`, `service`, `webhook`), or
    /// `invalid` when its credential was refused.
    pub principal: &'static str,
    /// The deciding rule passes the caller's user context on.
    forward_user: bool,
    /// The allowing rule's `rate_limit`, until counted.
    rate_limit: Option<Arc<RateLimit>>,
}

impl CheckOutcome {
    /// The deny answering `error`.
    fn refused(error: &CheckError, request_id: &RequestId) -> CheckOutcome {
        let kind = DenyKind::from(error);
        let message = match error {
            CheckError::User(UserError::Unavailable(detail)) => {
                // The detail (maybe an SQL error) is logged, never sent.
                tracing::warn!(request_id = %request_id.value, error = %detail,
                    "no decision: user directory unavailable");
                "the user directory is unavailable; try again shortly".to_owned()
            }
            other => other.to_string(),
        };
        CheckOutcome {
            answer: Answer::deny(kind, &message, &request_id.value),
            decided_by: DecidedBy::Stage(error.stage()),
            principal: error.principal_kind(),
            forward_user: false,
            rate_limit: None,
        }
    }
}

/// What decided a check: a policy rule (or the default), or a stage before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    Rule(String),
    Stage(Stage),
}

/// The stages a check goes through before the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The request path is ambiguous (400).
    Path,
    /// A credential was presented and refused (401), or its keys are out of
    /// reach (503).
    Authentication,
    /// The user directory refused the user (401) or could not answer (503).
    Directory,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Path => "path",
            Stage::Authentication => "authentication",
            Stage::Directory => "directory",
        }
    }
}

/// Why a check was answered before the policy could decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The path is ambiguous (400).
    #[error("the request path is rejected: {0}")]
    Path(#[from] crate::policy::PathError),
    /// A Svix signature that does not verify (401).
    #[error("the webhook signature is not accepted: {0}")]
    Webhook(#[from] WebhookError),
    /// An mTLS identity, service token or forwarded context not accepted (401).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A token that does not verify (401), or whose keys are unavailable (503).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A verified user without a user context (401), or the directory down (503).
    #[error(transparent)]
    User(#[from] UserError),
}

impl CheckError {
    pub fn stage(&self) -> Stage {
        match self {
            CheckError::Path(_) => Stage::Path,
            CheckError::Webhook(_) | CheckError::Identity(_) | CheckError::Token(_) => {
                Stage::Authentication
            }
            CheckError::User(_) => Stage::Directory,
        }
    }

    fn principal_kind(&self) -> &'static str {
        match self {
            CheckError::Path(_) => "anonymous",
            CheckError::User(_) => "user",
            _ => "invalid",
        }
    }
}

impl From<&CheckError> for DenyKind {
    fn from(error: &CheckError) -> DenyKind {
        match error {
            CheckError::Path(_) => DenyKind::BadRequest,
            CheckError::Token(e) if e.is_unavailable() => DenyKind::Unavailable,
            CheckError::Identity(IdentityError::InternalToken(e)) if e.is_unavailable() => {
                DenyKind::Unavailable
            }
            CheckError::User(UserError::Unavailable(_)) => DenyKind::Unavailable,
            CheckError::Webhook(_)
            | CheckError::Identity(_)
            | CheckError::Token(_)
            | CheckError::User(_) => DenyKind::InvalidCredentials,
        }
    }
}
