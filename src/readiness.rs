//! Readiness: every dependency a decision may need is loaded. Shared by
//! `/readyz` and the gRPC `Admin/GetStatus`.

use crate::authorizer::Authorizer;
use crate::ratelimit::GlobalStatus;
use crate::reload::LastReload;
use crate::replicas::Subscription;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IssuerStatus {
    pub name: String,
    pub keys_loaded: bool,
    pub key_count: usize,
}

/// The revocation set: with `state.redis`, not ready until loaded from Redis.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RevocationStatus {
    pub loaded: bool,
    /// The revocations in force (once loaded).
    pub count: usize,
    /// With `state.redis`: `connecting`, `catching_up`, `subscribed` or
    /// `down` — whether revocations made on other replicas arrive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    /// Why they are not loaded, or why the subscription is down (still
    /// ready then: the copy is kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub version: &'static str,
    pub policy_rules: usize,
    pub issuers: Vec<IssuerStatus>,
    /// Whether the user directory answers (always true for `claims`).
    pub directory_reachable: bool,
    /// Whether the revocations are loaded (docs/revocation.md).
    pub revocations: RevocationStatus,
    /// How `scope: global` rate limits count, when `state.redis` is set: in
    /// Redis, or each replica locally while Redis is unreachable (still
    /// ready: limits hold, per replica; docs/rate-limits.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<GlobalStatus>,
    /// Shutting down: not ready, so traffic moves to other replicas.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// Why the last policy/config reload failed; the previous one still serves,
    /// so this does not make the process unready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload_error: Option<String>,
}

impl Readiness {
    pub async fn of(authorizer: &Authorizer, last_reload: &LastReload) -> Readiness {
        let pipeline = authorizer.pipeline();
        let issuers: Vec<IssuerStatus> = pipeline
            .authenticator()
            .issuers()
            .iter()
            .map(|issuer| {
                let keys = issuer.keys_loaded();
                IssuerStatus {
                    name: issuer.name.to_string(),
                    keys_loaded: keys.is_some(),
                    key_count: keys.unwrap_or(0),
                }
            })
            .collect();
        let directory_reachable = pipeline.directory().ping().await;
        let draining = authorizer.runtime().is_draining();
        let status = authorizer.runtime().revocations().status();
        let revocations = RevocationStatus {
            loaded: status.loaded,
            count: status.count,
            subscription: status.subscription,
            error: status.error,
        };
        Readiness {
            ready: issuers.iter().all(|i| i.keys_loaded)
                && directory_reachable
                && revocations.loaded
                && !draining,
            revocations,
            rate_limits: pipeline.global_limits().map(|global| global.status()),
            directory_reachable,
            draining,
            version: env!("CARGO_PKG_VERSION"),
            policy_rules: authorizer.policy().rules().len(),
            issuers,
            reload_error: last_reload.error().map(|e| e.to_string()),
        }
    }
}
