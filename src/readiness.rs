//! Readiness: every dependency a decision may need is loaded. Shared by
//! `/readyz` and the gRPC `Admin/GetStatus`.

use crate::authorizer::Authorizer;
use crate::reload::LastReload;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IssuerStatus {
    pub name: String,
    pub keys_loaded: bool,
    pub key_count: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub version: &'static str,
    pub policy_rules: usize,
    pub issuers: Vec<IssuerStatus>,
    /// Whether the user directory answers (always true for `claims`).
    pub directory_reachable: bool,
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
        Readiness {
            ready: issuers.iter().all(|i| i.keys_loaded) && directory_reachable && !draining,
            directory_reachable,
            draining,
            version: env!("CARGO_PKG_VERSION"),
            policy_rules: authorizer.policy().rules().len(),
            issuers,
            reload_error: last_reload.error().map(|e| e.to_string()),
        }
    }
}
