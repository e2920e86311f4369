//! The pipeline of one check (SPEC §12): request model → identity → policy →
//! answer. Adapters call [`Authorizer::check`]; it never fails: a request it cannot
//! decide is answered 503, never allowed.

use crate::answer::{Answer, DenyKind, RequestId};
use crate::config::HeadersConfig;
use crate::identity::{Authentication, Authenticator, TokenError};
use crate::metrics::{DecisionLabels, Metrics};
use crate::policy::{decide, Context, NormalizedPath, Policy};
use crate::principal::{Principal, User};
use crate::request::AuthzRequest;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Instant;

/// Decides requests. Shared by every adapter.
pub struct Authorizer {
    authenticator: Authenticator,
    policy: ArcSwap<Policy>,
    headers: HeadersConfig,
    metrics: Arc<Metrics>,
}

impl Authorizer {
    pub fn new(
        authenticator: Authenticator,
        policy: Arc<Policy>,
        headers: HeadersConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            authenticator,
            policy: ArcSwap::new(policy),
            headers,
            metrics,
        }
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Swaps in a new policy atomically; checks in flight finish on the old one.
    pub fn set_policy(&self, policy: Arc<Policy>) {
        self.policy.store(policy);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Decides one request.
    pub async fn check(&self, request: &AuthzRequest) -> Answer {
        let started = Instant::now();
        let request_id = RequestId::of(request, &self.headers.request_id);
        let (answer, rule, principal_kind) = self.decide(request, &request_id).await;
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
        let principal = match self.authenticator.authenticate(request).await {
            Ok(Authentication::Anonymous) => Principal::Anonymous,
            Ok(Authentication::Token(token)) => Principal::User(User::from_claims(
                &token.issuer,
                &token.subject,
                token.claims.clone(),
            )),
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
            Answer::for_decision(&decision, &self.headers, request, &principal, request_id);
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
