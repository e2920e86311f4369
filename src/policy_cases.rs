//! Policies run offline (docs/policy.md): `portcullis policy test` cases and the requests
//! of `portcullis policy explain`. A request here names its principal directly —
//! nothing is verified — so a policy can be exercised before it is deployed. The
//! answer comes from the same code the server uses ([`Answer::for_decision`]).

use crate::answer::{Answer, RequestId};
use crate::headers::HeadersConfig;
use crate::policy::{explain, Context, Decision, NormalizedPath, Policy, RuleTrace};
use crate::principal::{Principal, Service, User, Webhook};
use crate::request::AuthzRequest;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A request as written in a test case or an explain file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// YAML spells it `anonymous` or `{ user: {...} }` (a one-key map, not a tag).
    #[serde(default, with = "serde_yaml_ng::with::singleton_map")]
    pub principal: PrincipalSpec,
}

fn default_method() -> String {
    "GET".into()
}

fn default_host() -> String {
    "localhost".into()
}

/// `anonymous`, `{user: {...}}`, `{service: SPIFFE_ID}` or `{webhook: NAME}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PrincipalSpec {
    #[default]
    Anonymous,
    User(UserSpec),
    Service(String),
    Webhook(String),
}

/// A user: its token's `sub` and claims, and optionally directory fields (by
/// default the claims, as with `users.source: claims`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub sub: String,
    #[serde(default = "default_issuer")]
    pub issuer: String,
    #[serde(default)]
    pub claims: Map<String, Value>,
    pub fields: Option<Map<String, Value>>,
}

fn default_issuer() -> String {
    "test".into()
}

impl PrincipalSpec {
    pub fn to_principal(&self) -> Principal {
        match self {
            PrincipalSpec::Anonymous => Principal::Anonymous,
            PrincipalSpec::User(u) => {
                let mut user =
                    User::from_claims(u.issuer.as_str(), u.sub.as_str(), u.claims.clone());
                if let Some(fields) = &u.fields {
                    user.fields = fields.clone();
                    user.fields
                        .entry("id")
                        .or_insert_with(|| Value::String(u.sub.clone()));
                }
                Principal::User(user)
            }
            PrincipalSpec::Service(id) => Principal::Service(Service::from_spiffe_id(id, true)),
            PrincipalSpec::Webhook(name) => Principal::Webhook(Webhook { name: name.clone() }),
        }
    }
}

impl RequestSpec {
    fn to_request(&self) -> AuthzRequest {
        self.headers
            .iter()
            .fold(
                AuthzRequest::builder()
                    .method(&self.method)
                    .host(&self.host)
                    .path(&self.path),
                |request, (name, value)| request.header(name, value),
            )
            .build()
    }
}

/// The result of running one request through a policy offline.
#[derive(Debug)]
pub struct Evaluation {
    /// `None` when the path was rejected before policy (400).
    pub decision: Option<Decision>,
    pub trace: Vec<RuleTrace>,
    pub answer: Answer,
}

/// Decides `spec` against `policy` and builds the answer as the server would.
pub fn evaluate(policy: &Policy, headers: &HeadersConfig, spec: &RequestSpec) -> Evaluation {
    let request = spec.to_request();
    let request_id = RequestId::of(&request, &headers.request_id);
    let path = match NormalizedPath::parse(request.path()) {
        Ok(path) => path,
        Err(e) => {
            let answer = Answer::deny(
                crate::answer::DenyKind::BadRequest,
                &format!("the request path is rejected: {e}"),
                &request_id.value,
            );
            return Evaluation {
                decision: None,
                trace: Vec::new(),
                answer,
            };
        }
    };
    let principal = spec.principal.to_principal();
    let ctx = Context {
        request: &request,
        path: &path,
        principal: &principal,
    };
    let (explained, trace) = explain(policy, &ctx);
    let answer = Answer::for_decision(&explained, headers, &request, &principal, &request_id);
    Evaluation {
        decision: Some(explained),
        trace,
        answer,
    }
}

/// A test file: the policy under test and its cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The policy file, relative to the test file.
    pub policy: String,
    /// Optional: a portcullis.yaml whose headers and trust domain apply.
    pub config: Option<String>,
    pub cases: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    pub request: RequestSpec,
    pub expect: Expectation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub decision: ExpectedEffect,
    pub status: Option<u16>,
    /// The deciding rule, or `default`.
    pub rule: Option<String>,
    /// Headers the upstream must receive (allow), with these exact values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Client-sent headers that must be removed (allow).
    #[serde(default)]
    pub removed: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedEffect {
    Allow,
    Deny,
}

/// Checks one case; `Ok` or the readable list of differences.
pub fn check_case(policy: &Policy, headers: &HeadersConfig, case: &TestCase) -> Result<(), String> {
    let eval = evaluate(policy, headers, &case.request);
    let mut diff = String::new();
    let (effect, set, removed) = match &eval.answer {
        Answer::Allow { set, remove, .. } => (ExpectedEffect::Allow, set.clone(), remove.clone()),
        Answer::Deny { .. } => (ExpectedEffect::Deny, Vec::new(), Vec::new()),
    };
    let rule = eval
        .decision
        .as_ref()
        .map_or("(path rejected)".to_owned(), |d| d.rule_name().to_owned());
    let reason = eval
        .decision
        .as_ref()
        .map_or(String::new(), |d| format!(" ({})", d.reason));
    let mut line = |what: &str, want: &dyn std::fmt::Debug, got: &dyn std::fmt::Debug| {
        let _ = writeln!(diff, "    {what}: expected {want:?}, got {got:?}");
    };
    if effect != case.expect.decision {
        line("decision", &case.expect.decision, &effect);
    }
    if let Some(status) = case.expect.status {
        if status != eval.answer.status() {
            line("status", &status, &eval.answer.status());
        }
    }
    if let Some(want) = &case.expect.rule {
        if *want != rule {
            line("rule", want, &rule);
        }
    }
    for (name, want) in &case.expect.headers {
        let got = set.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        if got != Some(want.as_str()) {
            line(&format!("header {name}"), &Some(want), &got);
        }
    }
    for name in &case.expect.removed {
        if !removed.contains(name) {
            line(&format!("removal of {name}"), &"removed", &"kept");
        }
    }
    if diff.is_empty() {
        Ok(())
    } else {
        Err(format!("{diff}    decided by: {rule}{reason}"))
    }
}

/// Renders a decision trace, one rule per line, for `policy explain`.
pub fn render_trace(eval: &Evaluation) -> String {
    use crate::policy::Outcome;
    let mut out = String::new();
    for t in &eval.trace {
        let what = match &t.outcome {
            Outcome::ToMismatch => "no match: the request is not in `to`".to_owned(),
            Outcome::FromMismatch => "no match: the principal is not in `from`".to_owned(),
            Outcome::WhenFalse => "no match: `when` is false".to_owned(),
            Outcome::WhenNotApplicable => {
                "no match: `when` needs a principal of another kind".to_owned()
            }
            Outcome::WhenError(e) => format!("ERROR in `when` (denies): {e}"),
            Outcome::Matched => "MATCH".to_owned(),
        };
        let mode = if t.dry_run { " (dry run)" } else { "" };
        let _ = writeln!(out, "  {:<6} {}{mode}: {what}", t.action.as_str(), t.rule);
    }
    match &eval.decision {
        Some(d) => {
            let _ = writeln!(
                out,
                "decision: {} by {} (principal: {}): {}",
                d.effect.as_str(),
                d.rule_name(),
                d.principal,
                d.reason
            );
            if let Some(limit) = &d.rate_limit {
                let _ = writeln!(
                    out,
                    "rate limit: {} per {}, burst {}, {} (counted by the server, not here)",
                    limit.rate,
                    limit.per.as_str(),
                    limit.burst,
                    match limit.scope {
                        crate::policy::LimitScope::Local => "local",
                        crate::policy::LimitScope::Global => "global",
                    }
                );
            }
            for (rule, would) in &d.observed {
                let _ = writeln!(out, "observed: rule {rule} would {}", would.as_str());
            }
        }
        None => {
            let _ = writeln!(out, "decision: deny before policy: the path is rejected");
        }
    }
    match &eval.answer {
        Answer::Allow { set, remove, .. } => {
            let _ = writeln!(out, "answer: 200, upstream gets:");
            for (k, v) in set {
                let _ = writeln!(out, "  set    {k}: {v}");
            }
            for k in remove {
                let _ = writeln!(out, "  remove {k}");
            }
        }
        Answer::Deny { kind, body, .. } => {
            let _ = writeln!(out, "answer: {} {body}", kind.status());
        }
    }
    out
}
