//! The policy engine (SPEC §7): parse, validate, compile, evaluate.
//!
//! Evaluation is Istio's: any matching `deny` rule denies; otherwise any matching
//! `allow` rule allows; otherwise the default. Rule order never changes the result.
//! This room is pure and synchronous — no I/O, no tonic, no tokio: everything a
//! decision needs (verified claims, the user's fields) is resolved before
//! [`decide`] runs.

mod load;
pub mod path;
pub mod pattern;

pub use load::{LoadError, PolicyError};
pub use path::{NormalizedPath, PathError};

use crate::principal::Principal;
use pattern::{HostPattern, Method, PathPattern};

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    /// Only logged: never changes the decision.
    Audit,
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// A compiled policy: immutable, shared behind an `Arc`, swapped whole on reload.
#[derive(Debug, Clone)]
pub struct Policy {
    default: Effect,
    rules: Vec<Rule>,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    /// Alternatives: any may match. Empty: every request.
    pub to: Vec<Target>,
    /// Alternatives: any may match. Empty: anyone.
    pub from: Vec<Source>,
    pub dry_run: bool,
    pub forward_user: bool,
}

/// One `to` entry: every non-empty list must match.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub hosts: Vec<HostPattern>,
    pub paths: Vec<PathPattern>,
    pub methods: Vec<Method>,
}

/// One `from` entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Anyone,
    /// Any principal but `anonymous`.
    Authenticated,
    /// A user principal; every non-empty list must match.
    Users(UserMatch),
}

/// `from: { users: {...} }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserMatch {
    pub roles: Vec<String>,
    pub ids: Vec<String>,
    pub issuers: Vec<String>,
}

/// Everything a decision reads. Built by the authorizer from the request and the
/// resolved principal.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a NormalizedPath,
    pub principal: &'a Principal,
}

/// A decision and why it was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub effect: Effect,
    /// The deciding rule; `None` when the default decided.
    pub rule: Option<String>,
    /// A short human reason (logged, and the message of a 403).
    pub reason: String,
    /// `{name}` captures of the deciding rule's path.
    pub params: Vec<(String, String)>,
    /// The deciding rule allows forwarding the caller's user context.
    pub forward_user: bool,
    /// Matching `audit` and `dry_run` rules: what they would have done.
    pub observed: Vec<(String, Effect)>,
}

impl Decision {
    /// The deciding rule's name, or `default`.
    pub fn rule_name(&self) -> &str {
        self.rule.as_deref().unwrap_or("default")
    }
}

impl Policy {
    /// A policy with no rules: everything gets `default`.
    pub fn empty(default: Effect) -> Self {
        Self {
            default,
            rules: Vec::new(),
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn default_effect(&self) -> Effect {
        self.default
    }
}

/// Decides one request. Pure: the same policy and context give the same decision.
pub fn decide(policy: &Policy, ctx: &Context<'_>) -> Decision {
    let mut observed = Vec::new();
    let mut allow: Option<(&Rule, Vec<(String, String)>)> = None;
    let mut params = Vec::new();
    for rule in &policy.rules {
        params.clear();
        if !rule.matches(ctx, &mut params) {
            continue;
        }
        let effect = match rule.action {
            Action::Audit => {
                observed.push((rule.name.clone(), Effect::Allow));
                continue;
            }
            Action::Allow => Effect::Allow,
            Action::Deny => Effect::Deny,
        };
        if rule.dry_run {
            observed.push((rule.name.clone(), effect));
            continue;
        }
        match effect {
            Effect::Deny => {
                return Decision {
                    effect: Effect::Deny,
                    rule: Some(rule.name.clone()),
                    reason: format!("denied by rule '{}'", rule.name),
                    params: std::mem::take(&mut params),
                    forward_user: false,
                    observed,
                };
            }
            Effect::Allow if allow.is_none() => allow = Some((rule, params.clone())),
            Effect::Allow => {}
        }
    }
    match allow {
        Some((rule, params)) => Decision {
            effect: Effect::Allow,
            rule: Some(rule.name.clone()),
            reason: format!("allowed by rule '{}'", rule.name),
            params,
            forward_user: rule.forward_user,
            observed,
        },
        None => Decision {
            effect: policy.default,
            rule: None,
            reason: match policy.default {
                Effect::Deny => "no rule allows this request".to_owned(),
                Effect::Allow => "allowed by the policy default".to_owned(),
            },
            params: Vec::new(),
            forward_user: false,
            observed,
        },
    }
}

impl Rule {
    fn matches(&self, ctx: &Context<'_>, params: &mut Vec<(String, String)>) -> bool {
        let to = self.to.is_empty() || self.to.iter().any(|t| t.matches(ctx, params));
        to && (self.from.is_empty() || self.from.iter().any(|s| s.matches(ctx.principal)))
    }
}

impl Target {
    fn matches(&self, ctx: &Context<'_>, params: &mut Vec<(String, String)>) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m.matches(ctx.method)))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(ctx.host)))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(ctx.path, params)))
    }
}

impl Source {
    fn matches(&self, principal: &Principal) -> bool {
        match self {
            Source::Anyone => true,
            Source::Authenticated => !matches!(principal, Principal::Anonymous),
            Source::Users(want) => {
                let Some(user) = principal.user() else {
                    return false;
                };
                (want.roles.is_empty() || user.roles().any(|r| want.roles.iter().any(|w| w == r)))
                    && (want.ids.is_empty() || want.ids.iter().any(|id| user_id(user) == Some(id)))
                    && (want.issuers.is_empty() || want.issuers.contains(&user.issuer))
            }
        }
    }
}

fn user_id(user: &crate::principal::User) -> Option<&String> {
    match user.fields.get("id") {
        Some(serde_json::Value::String(id)) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
