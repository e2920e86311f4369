//! The policy engine (docs/policy.md): parse, validate, compile, evaluate.
//!
//! Evaluation is Istio's: any matching `deny` rule denies; otherwise any matching
//! `allow` rule allows; otherwise the default. Rule order never changes the
//! outcome. A `when` that fails to evaluate denies (fail closed). This room is pure
//! and synchronous — no I/O, no tonic, no tokio: everything a decision needs
//! (verified claims, the user's fields, the caller's SPIFFE ID) is resolved before
//! [`decide`] runs.

mod condition;
mod index;
mod load;
pub mod path;
pub mod pattern;

pub use condition::{Condition, Verdict};
pub use load::{LoadError, LoadOptions, PolicyError};
pub use path::{NormalizedPath, PathError};

use crate::principal::Principal;
use crate::request::AuthzRequest;
use index::RuleIndex;
use pattern::{HostPattern, Method, PathPattern, SpiffePattern};
use std::sync::Arc;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    /// Only logged: never changes the decision.
    Audit,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Audit => "audit",
        }
    }
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
#[derive(Debug)]
pub struct Policy {
    default: Effect,
    rules: Vec<Rule>,
    index: RuleIndex,
    /// Whether any rule's condition reads `token.*` (decided at load, read per
    /// check).
    reads_token_claims: bool,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    /// Alternatives: any may match. Empty: every request.
    pub to: Vec<Target>,
    /// Alternatives: any may match. Empty: anyone.
    pub from: Vec<Source>,
    pub when: Option<Condition>,
    pub dry_run: bool,
    pub forward_user: bool,
    /// `rate_limit`: counted after this (allow) rule allowed a request.
    pub rate_limit: Option<Arc<RateLimit>>,
}

/// `rate_limit` of an allow rule (docs/rate-limits.md): how often each key may
/// be allowed by the rule. The policy only says which limit applies; counting
/// happens after the decision, outside this pure room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// The rule's name: the bucket's namespace and the policy name of the
    /// `RateLimit` headers.
    pub rule: Arc<str>,
    pub per: LimitPer,
    pub rate: Rate,
    /// The most requests allowed at one instant (the bucket size).
    pub burst: u32,
    pub scope: LimitScope,
}

/// What one bucket counts (`per`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPer {
    /// The verified user (`user.id`).
    User,
    /// The calling service (its SPIFFE ID).
    Service,
    /// The client's IP address.
    Ip,
    /// The credential (a hash of the token).
    Token,
    /// Everyone the rule allows, together.
    Rule,
}

impl LimitPer {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitPer::User => "user",
            LimitPer::Service => "service",
            LimitPer::Ip => "ip",
            LimitPer::Token => "token",
            LimitPer::Rule => "rule",
        }
    }
}

/// Where the buckets are kept (`scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// In the process: each replica counts on its own.
    Local,
    /// In Redis (`state.redis`): every replica counts in the same bucket.
    Global,
}

/// `N/s`, `N/m` or `N/h`: the steady rate a bucket refills at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: RatePeriod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatePeriod {
    Second,
    Minute,
    Hour,
}

impl RatePeriod {
    pub fn micros(self) -> u64 {
        match self {
            RatePeriod::Second => 1_000_000,
            RatePeriod::Minute => 60_000_000,
            RatePeriod::Hour => 3_600_000_000,
        }
    }

    /// The unit as written in `rate` (`s`) and as said in a message (`second`).
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            RatePeriod::Second => ("s", "second"),
            RatePeriod::Minute => ("m", "minute"),
            RatePeriod::Hour => ("h", "hour"),
        }
    }
}

impl RateLimit {
    /// The longest a window (the time a whole burst takes to come back) may
    /// be: the Redis script computes in doubles, exact only to 2^53 µs, and a
    /// bucket that takes more than a day to refill is a quota, not a rate.
    pub const MAX_WINDOW_MICROS: u64 = 24 * 3_600 * 1_000_000;

    /// The time a whole burst takes to come back, `burst·period/count`, in
    /// µs, rounded up (the `w` of `RateLimit-Policy` is this in seconds).
    pub fn window_micros(&self) -> u64 {
        window_micros(self.rate, self.burst)
    }
}

/// `burst·period/count` µs, rounded up (saturating).
pub(crate) fn window_micros(rate: Rate, burst: u32) -> u64 {
    let exact =
        (u128::from(burst) * u128::from(rate.period.micros())).div_ceil(u128::from(rate.count));
    u64::try_from(exact).unwrap_or(u64::MAX)
}

impl Rate {
    /// Parses `N/s`, `N/m` or `N/h` (N a positive integer, at most one request
    /// per microsecond).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let usage = "write the rate as N/s, N/m or N/h, e.g. `20/s`";
        let (count, unit) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a rate: {usage}"))?;
        let period = match unit.trim() {
            "s" => RatePeriod::Second,
            "m" => RatePeriod::Minute,
            "h" => RatePeriod::Hour,
            other => return Err(format!("unknown unit `{other}` in `{text}`: {usage}")),
        };
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` does not start with a whole number: {usage}"))?;
        if count == 0 {
            return Err(format!(
                "a rate of 0 allows nothing: deny the requests with a deny rule instead ({usage})"
            ));
        }
        if u64::from(count) > period.micros() {
            return Err(format!(
                "`{text}` is more than one request per microsecond, which no bucket can count"
            ));
        }
        Ok(Rate { count, period })
    }

    /// The emission interval: the time between two requests at this rate, in
    /// microseconds, rounded up (never more than `count` per period).
    pub fn interval_micros(self) -> u64 {
        self.period.micros().div_ceil(u64::from(self.count))
    }

    /// The per-second equivalent, rounded down, at least 1: the default burst.
    pub fn default_burst(self) -> u32 {
        let per_second = u64::from(self.count) * 1_000_000 / self.period.micros();
        u32::try_from(per_second).unwrap_or(u32::MAX).max(1)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.count, self.period.names().0)
    }
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
    /// A map entry; every key given must match.
    Match(SourceMatch),
}

/// `from: { users: {...}, services: [...], namespaces: [...], webhooks: [...],
/// mtls: required }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceMatch {
    pub users: Option<UserMatch>,
    pub services: Vec<SpiffePattern>,
    pub namespaces: Vec<String>,
    pub webhooks: Vec<String>,
    /// `mtls: required`: the service must be proven by its mTLS certificate; a
    /// service token alone does not match.
    pub mtls_required: bool,
}

/// `users: {...}`: every non-empty list must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserMatch {
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub ids: Vec<String>,
    pub issuers: Vec<String>,
}

/// Everything a decision reads. Built by the authorizer from the request and the
/// resolved principal.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub request: &'a AuthzRequest,
    pub path: &'a NormalizedPath,
    pub principal: &'a Principal,
}

/// A decision and why it was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub effect: Effect,
    /// The deciding rule; `None` when the default decided.
    pub rule: Option<String>,
    /// The principal kind (`anonymous`, `user`, `service`, `webhook`).
    pub principal: &'static str,
    /// A short human reason (logged, and the message of a 403).
    pub reason: String,
    /// `{name}` captures of the deciding rule's path.
    pub params: Vec<(String, String)>,
    /// The deciding rule allows forwarding the caller's user context.
    pub forward_user: bool,
    /// The allowing rule's `rate_limit` (only on an allow by a rule that has one).
    pub rate_limit: Option<Arc<RateLimit>>,
    /// Matching `audit` and `dry_run` rules: what they would have done.
    pub observed: Vec<(String, Effect)>,
}

impl Decision {
    /// The deciding rule's name, or `default`.
    pub fn rule_name(&self) -> &str {
        self.rule.as_deref().unwrap_or("default")
    }
}

/// How one rule fared for one request (for `policy explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request is not one of the rule's `to`.
    ToMismatch,
    /// The principal is not one of the rule's `from`.
    FromMismatch,
    /// `when` evaluated to false.
    WhenFalse,
    /// `when` is about a user (or service) and the principal has none.
    WhenNotApplicable,
    /// `when` failed to evaluate: the request is denied.
    WhenError(String),
    /// The rule matched.
    Matched,
}

/// One line of a decision trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    pub rule: String,
    pub action: Action,
    pub dry_run: bool,
    pub outcome: Outcome,
}

impl Policy {
    /// Whether any rule's condition reads `token.*` claims.
    pub fn reads_token_claims(&self) -> bool {
        self.reads_token_claims
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn default_effect(&self) -> Effect {
        self.default
    }

    fn new(default: Effect, rules: Vec<Rule>) -> Self {
        let index = RuleIndex::build(&rules);
        let reads_token_claims = rules
            .iter()
            .any(|rule| rule.when.as_ref().is_some_and(Condition::reads_token));
        Self {
            default,
            rules,
            index,
            reads_token_claims,
        }
    }
}

/// Decides one request. Pure: the same policy and context give the same decision.
/// Only the rules the index selects for the request's path are looked at.
pub fn decide(policy: &Policy, ctx: &Context<'_>) -> Decision {
    let candidates = policy.index.candidates(ctx.path);
    evaluate(policy, ctx, candidates.map(|i| &policy.rules[i]), None)
}

/// Decides one request looking at every rule, and reports how each fared.
pub fn explain(policy: &Policy, ctx: &Context<'_>) -> (Decision, Vec<RuleTrace>) {
    let mut trace = Vec::with_capacity(policy.rules.len());
    let decision = evaluate(policy, ctx, policy.rules.iter(), Some(&mut trace));
    (decision, trace)
}

fn evaluate<'p>(
    policy: &'p Policy,
    ctx: &Context<'_>,
    rules: impl Iterator<Item = &'p Rule>,
    mut trace: Option<&mut Vec<RuleTrace>>,
) -> Decision {
    type Params = Vec<(String, String)>;
    let mut observed = Vec::new();
    let mut allow: Option<(&Rule, Params)> = None;
    let mut deny: Option<(&Rule, String, Params)> = None;
    let mut params = Vec::new();
    for rule in rules {
        params.clear();
        let outcome = rule.outcome(ctx, &mut params);
        if let Some(trace) = trace.as_deref_mut() {
            trace.push(RuleTrace {
                rule: rule.name.clone(),
                action: rule.action,
                dry_run: rule.dry_run,
                outcome: outcome.clone(),
            });
        }
        let effect = match (&outcome, rule.action) {
            (Outcome::Matched, Action::Audit) => {
                observed.push((rule.name.clone(), Effect::Allow));
                continue;
            }
            (Outcome::Matched, Action::Allow) => Effect::Allow,
            (Outcome::Matched, Action::Deny) => Effect::Deny,
            (Outcome::WhenError(e), _) if !rule.dry_run && rule.action != Action::Audit => {
                // Fail closed: a condition we cannot evaluate never allows.
                if deny.is_none() {
                    let reason = format!("the condition of rule '{}' failed: {e}", rule.name);
                    deny = Some((rule, reason, params.clone()));
                }
                if trace.is_none() {
                    break;
                }
                continue;
            }
            _ => continue,
        };
        if rule.dry_run {
            observed.push((rule.name.clone(), effect));
            continue;
        }
        match effect {
            Effect::Deny => {
                if deny.is_none() {
                    deny = Some((
                        rule,
                        format!("denied by rule '{}'", rule.name),
                        params.clone(),
                    ));
                }
                // Without a trace to complete, the first deny decides.
                if trace.is_none() {
                    break;
                }
            }
            Effect::Allow if allow.is_none() => allow = Some((rule, params.clone())),
            Effect::Allow => {}
        }
    }
    let principal = ctx.principal.kind();
    if let Some((rule, reason, params)) = deny {
        return Decision {
            effect: Effect::Deny,
            rule: Some(rule.name.clone()),
            principal,
            reason,
            params,
            forward_user: false,
            rate_limit: None,
            observed,
        };
    }
    match allow {
        Some((rule, params)) => Decision {
            effect: Effect::Allow,
            rule: Some(rule.name.clone()),
            principal,
            reason: format!("allowed by rule '{}'", rule.name),
            params,
            forward_user: rule.forward_user,
            rate_limit: rule.rate_limit.clone(),
            observed,
        },
        None => Decision {
            effect: policy.default,
            rule: None,
            principal,
            reason: match policy.default {
                Effect::Deny => "no rule allows this request".to_owned(),
                Effect::Allow => "allowed by the policy default".to_owned(),
            },
            params: Vec::new(),
            forward_user: false,
            rate_limit: None,
            observed,
        },
    }
}

impl Rule {
    fn outcome(&self, ctx: &Context<'_>, params: &mut Vec<(String, String)>) -> Outcome {
        if !(self.to.is_empty() || self.to.iter().any(|t| t.matches(ctx, params))) {
            return Outcome::ToMismatch;
        }
        let from_ok = self.from.is_empty()
            || self
                .from
                .iter()
                .any(|s| s.matches(ctx.principal, self.forward_user));
        if !from_ok {
            return Outcome::FromMismatch;
        }
        let user = ctx.principal.user_seen(self.forward_user);
        match self.when.as_ref().map(|c| c.evaluate(ctx, user, params)) {
            None | Some(Verdict::True) => Outcome::Matched,
            Some(Verdict::False) => Outcome::WhenFalse,
            Some(Verdict::NotApplicable) => Outcome::WhenNotApplicable,
            Some(Verdict::Error(e)) => Outcome::WhenError(e),
        }
    }
}

impl Target {
    fn matches(&self, ctx: &Context<'_>, params: &mut Vec<(String, String)>) -> bool {
        let request = ctx.request;
        (self.methods.is_empty() || self.methods.iter().any(|m| m.matches(request.method())))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(request.host())))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(ctx.path, params)))
    }
}

impl Source {
    /// `forward_user`: the rule lets a service's forwarded user count as a user.
    fn matches(&self, principal: &Principal, forward_user: bool) -> bool {
        match self {
            Source::Anyone => true,
            Source::Authenticated => !matches!(principal, Principal::Anonymous),
            Source::Match(m) => m.matches(principal, forward_user),
        }
    }
}

impl SourceMatch {
    fn matches(&self, principal: &Principal, forward_user: bool) -> bool {
        let users = self.users.as_ref().is_none_or(|want| {
            principal.user_seen(forward_user).is_some_and(|user| {
                let roles_ok = want.roles.is_empty()
                    || user.roles().any(|r| want.roles.iter().any(|w| w == r));
                let permissions = user.permissions();
                let permissions_ok = want.permissions.is_empty()
                    || want
                        .permissions
                        .iter()
                        .any(|p| permissions.contains(&p.as_str()));
                let ids_ok = want.ids.is_empty()
                    || user
                        .fields
                        .get("id")
                        .and_then(serde_json::Value::as_str)
                        .is_some_and(|id| want.ids.iter().any(|w| w == id));
                let issuers_ok =
                    want.issuers.is_empty() || want.issuers.iter().any(|i| **i == *user.issuer);
                roles_ok && permissions_ok && ids_ok && issuers_ok
            })
        });
        let wants_service =
            !self.services.is_empty() || !self.namespaces.is_empty() || self.mtls_required;
        let services = !wants_service
            || principal.service().is_some_and(|service| {
                (service.mtls || !self.mtls_required)
                    && (self.services.is_empty()
                        || self.services.iter().any(|p| p.matches(&service.spiffe_id)))
                    && (self.namespaces.is_empty()
                        || service
                            .namespace
                            .as_ref()
                            .is_some_and(|ns| self.namespaces.contains(ns)))
            });
        let webhooks = self.webhooks.is_empty()
            || matches!(principal, Principal::Webhook(w) if self.webhooks.contains(&w.name));
        users && services && webhooks
    }
}

#[cfg(test)]
mod tests;
