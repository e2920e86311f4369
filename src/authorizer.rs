//! The pipeline of one check (SPEC §12): request model → identity → policy →
//! answer. Adapters call [`Authorizer::check`]; it never fails: a request it cannot
//! decide is answered 503, never allowed.

use crate::answer::{Answer, DenyKind, RequestId};
use crate::clock::{Clock, ExpiringSet};
use crate::config::{Config, IssuerConfig, KeySpec};
use crate::directory::{DirectoryError, Lookup, OnUnknown, UserDirectory};
use crate::headers::{ContextField, HeadersConfig};
use crate::identity::caller::{EastWest, IdentityError};
use crate::identity::svix::{SvixHeaders, WebhookError, WebhookSecret};
use crate::identity::IssuerKind;
use crate::identity::{
    Authentication, Authenticator, Issuer, KeySource, TokenError, VerifiedToken,
};
use crate::metrics::{DecisionLabels, Metrics};
use crate::mint::TokenMint;
use crate::policy::{decide, Context, NormalizedPath, Policy};
use crate::principal::{Principal, User, Webhook};
use crate::request::AuthzRequest;
use crate::runtime::Runtime;
use crate::state::SharedState;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::Arc;
use std::time::Instant;

/// What the config decides about checks, apart from the policy: the issuers,
/// headers, east-west identity, the user directory and the tokens portcullis
/// signs. Built from a config and the [`Runtime`]'s long-lived parts (key sets,
/// caches, tombstones), so replacing it on a reload loses none of them.
pub struct Engine {
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
    /// The `jwks_uri`s of the issuers, so the runtime keeps only their key sets.
    jwks_uris: Vec<String>,
    clock: Clock,
}

/// The config-derived engine and the policy in force: swapped whole, so a check
/// never sees half of a reload.
pub struct Snapshot {
    pub engine: Arc<Engine>,
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

impl Engine {
    /// Builds the issuers of `config` from the runtime's parts: a key set, the
    /// directory and the Redis publisher are reused when their section is
    /// unchanged. Needs a tokio runtime (a new key set starts fetching).
    pub fn build(config: &Config, runtime: &Runtime) -> Result<Engine, DirectoryError> {
        let directory = runtime.directory(&config.users)?;
        let shared = config
            .redis
            .as_deref()
            .map(|url| runtime.shared(url))
            .transpose()?;
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
            webhook_ids: Arc::clone(runtime.webhook_ids()),
            shared,
            jwks_uris,
            clock: runtime.clock().clone(),
        })
    }

    pub fn directory(&self) -> &UserDirectory {
        &self.directory
    }

    fn jwks_uri_list(&self) -> Vec<&str> {
        self.jwks_uris.iter().map(String::as_str).collect()
    }

    /// The Clerk webhook secret and the ids seen, when webhooks are configured.
    pub fn clerk_webhook(&self) -> Option<(&WebhookSecret, &ExpiringSet)> {
        self.clerk_webhook.as_ref().map(|s| (s, &*self.webhook_ids))
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
                .verify(headers, request.body(), self.clock.unix_secs())
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

    /// The time webhook timestamps are judged by.
    pub fn clock(&self) -> &Clock {
        &self.clock
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
    /// Why the last reload failed, while the previous policy/config serves.
    reload_error: ArcSwapOption<String>,
}

impl Authorizer {
    pub fn new(runtime: Arc<Runtime>, engine: Engine, policy: Arc<Policy>) -> Self {
        runtime.adopt(&engine.directory, &engine.jwks_uri_list());
        Self {
            runtime,
            snapshot: ArcSwap::from_pointee(Snapshot {
                engine: Arc::new(engine),
                policy,
            }),
            reload_error: ArcSwapOption::empty(),
        }
    }

    /// The config and policy in force, loaded once.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The engine in force (issuers, headers).
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.snapshot.load().engine)
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.snapshot.load().policy)
    }

    /// Swaps in a new engine and policy at once; checks in flight finish on the
    /// old ones.
    pub fn install(&self, engine: Engine, policy: Arc<Policy>) {
        self.runtime
            .adopt(&engine.directory, &engine.jwks_uri_list());
        self.snapshot.store(Arc::new(Snapshot {
            engine: Arc::new(engine),
            policy,
        }));
    }

    /// Swaps in a new policy, keeping the engine.
    pub fn set_policy(&self, policy: Arc<Policy>) {
        self.snapshot.rcu(|current| Snapshot {
            engine: Arc::clone(&current.engine),
            policy: Arc::clone(&policy),
        });
    }

    /// Records the outcome of a reload: `Some(why)` when it failed.
    pub fn set_reload_error(&self, error: Option<String>) {
        self.reload_error.store(error.map(Arc::new));
    }

    /// Why the last reload failed, if it did.
    pub fn reload_error(&self) -> Option<Arc<String>> {
        self.reload_error.load_full()
    }

    /// Whether every issuer in force has its keys (a remote JWKS was fetched).
    pub fn keys_loaded(&self) -> bool {
        self.engine()
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
        let request_id = RequestId::of(request, &snapshot.engine.headers.request_id);
        let (answer, rule, principal_kind) = self.decide(&snapshot, request, &request_id).await;
        let result = match &answer {
            Answer::Allow { .. } => "allow",
            Answer::Deny { .. } => "deny",
        };
        self.metrics()
            .decisions
            .get_or_create(&DecisionLabels {
                result,
                rule: rule.clone(),
                principal: principal_kind,
            })
            .inc();
        self.metrics()
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
        snapshot: &Snapshot,
        request: &AuthzRequest,
        request_id: &RequestId,
    ) -> (Answer, String, &'static str) {
        let (engine, policy) = (&*snapshot.engine, &*snapshot.policy);
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
                policy,
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
        let keep_claims = engine.keep_claims || policy.reads_token_claims();
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
        let decision = decide(
            policy,
            &Context {
                request,
                path: &path,
                principal: &principal,
            },
        );
        for (rule, would) in &decision.observed {
            tracing::info!(request_id = %rid, %rule, would = would.as_str(), principal = principal.kind(),
                method = %request.method(), path = %path, "dry-run/audit rule matched");
            self.metrics()
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
