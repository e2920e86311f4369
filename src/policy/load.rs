//! Policy files: YAML → raw rules → validated, compiled [`Policy`]. Every problem
//! is reported at once, each with `file:line` and what to change.

use super::condition::Condition;
use super::pattern::{HostPattern, Method, PathPattern, SpiffePattern};
use super::{
    Action, Effect, LimitPer, LimitScope, Policy, Rate, RateLimit, Rule, Source, SourceMatch,
    Target, UserMatch,
};
use crate::yaml::{line_of, render, Key};
use serde::Deserialize;
use std::sync::Arc;
use std::{fmt, path::Path};

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// What a policy is checked against while loading.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `services` patterns must name this SPIFFE trust domain...
    pub trust_domain: String,
    /// ...or one of these federated ones (`federated_trust_domains`).
    pub federated_trust_domains: Vec<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            trust_domain: "example.org".into(),
            federated_trust_domains: Vec::new(),
        }
    }
}

/// A policy that could not be loaded: every error found.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read policy {file}: {reason}")]
    Read { file: String, reason: String },
    /// The file was read but is invalid.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<PolicyError>),
}

impl LoadError {
    /// Every individual problem, one per line.
    pub fn errors(&self) -> Vec<String> {
        match self {
            LoadError::Read { .. } => vec![self.to_string()],
            LoadError::Invalid(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default = "default_deny")]
    default: RawEffect,
    #[serde(default)]
    rules: Vec<RawRule>,
}

fn default_deny() -> RawEffect {
    RawEffect::Deny
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawEffect {
    Allow,
    Deny,
}

#[derive(Debug, Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "lowercase")]
enum RawAction {
    #[default]
    Allow,
    Deny,
    Audit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    action: RawAction,
    #[serde(default)]
    to: Option<OneOrMany<RawTarget>>,
    #[serde(default)]
    from: Option<OneOrMany<RawSource>>,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    forward_user: bool,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
}

/// `rate_limit: { per, rate, burst, scope }` (docs/rate-limits.md). Words are
/// read as strings so that a wrong one gets a message naming the right ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per: String,
    rate: String,
    burst: Option<u64>,
    scope: Option<String>,
}

/// A key that takes one entry or a list of alternatives (`to`, `from`). Written by
/// hand rather than `#[serde(untagged)]` so that an error inside an entry keeps its
/// own message and position.
#[derive(Debug)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{self, value, IntoDeserializer};
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Visitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("one entry or a list of entries")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(value::MapAccessDeserializer::new(map)).map(OneOrMany::One)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(value::SeqAccessDeserializer::new(seq)).map(OneOrMany::Many)
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

impl<T> OneOrMany<T> {
    fn entries(&self) -> Vec<&T> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many.iter().collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
}

/// One `from` entry: a keyword or a map (hand-written for precise errors).
#[derive(Debug)]
enum RawSource {
    Anyone,
    Authenticated,
    Map(RawSourceMap),
}

impl<'de> Deserialize<'de> for RawSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{self, value};
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = RawSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "`anyone`, `authenticated`, or a map like `{ users: { roles: [USER] } }`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSource, E> {
                match v {
                    "anyone" => Ok(RawSource::Anyone),
                    "authenticated" => Ok(RawSource::Authenticated),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawSource, A::Error> {
                RawSourceMap::deserialize(value::MapAccessDeserializer::new(map))
                    .map(RawSource::Map)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSourceMap {
    users: Option<RawUsers>,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    webhooks: Vec<String>,
    /// `mtls: required`: only a service proven by its mTLS certificate matches.
    mtls: Option<RawMtls>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawMtls {
    Required,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUsers {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    issuers: Vec<String>,
}

impl Policy {
    /// Loads and compiles a policy file.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Policy, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Read {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Policy::parse(&path.display().to_string(), &text, options)
    }

    /// Parses and compiles policy text; `file` names it in errors.
    pub fn parse(file: &str, text: &str, options: &LoadOptions) -> Result<Policy, LoadError> {
        let raw: RawPolicy = serde_yaml_ng::from_str(text).map_err(|e| {
            LoadError::Invalid(vec![PolicyError {
                file: file.to_owned(),
                line: e.location().map(|l| l.line()),
                message: with_flow_hint(e.to_string()),
            }])
        })?;
        let mut errors = Vec::new();
        let mut rules = Vec::with_capacity(raw.rules.len());
        let mut seen: Vec<&str> = Vec::new();
        for (index, rule) in raw.rules.iter().enumerate() {
            let mut problem = |keys: &[Key], message: String| {
                let mut path = vec![Key::field("rules"), Key::Index(index)];
                path.extend_from_slice(keys);
                errors.push(PolicyError {
                    file: file.to_owned(),
                    line: line_of(text, &path),
                    message: format!("{} (rule '{}'): {message}", render(&path), rule.name),
                });
            };
            if rule.name.trim().is_empty() {
                problem(
                    &[Key::field("name")],
                    "every rule needs a non-empty name".into(),
                );
            } else if seen.contains(&rule.name.as_str()) {
                problem(
                    &[Key::field("name")],
                    "duplicate rule name; names identify the deciding rule in logs and metrics, make it unique".into(),
                );
            }
            seen.push(&rule.name);
            match compile_rule(rule, options) {
                Ok(compiled) => rules.push(compiled),
                Err(problems) => {
                    for (keys, message) in problems {
                        problem(&keys, message);
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(LoadError::Invalid(errors));
        }
        let default = match raw.default {
            RawEffect::Allow => Effect::Allow,
            RawEffect::Deny => Effect::Deny,
        };
        Ok(Policy::new(default, rules))
    }
}

/// YAML reads `[/users/{id}]` as a sequence holding a map: `{` opens a flow
/// mapping. Say so, since every path with a capture hits it once.
fn with_flow_hint(message: String) -> String {
    if message.contains("flow") {
        format!("{message} (hint: quote paths with '{{name}}' captures inside [...], e.g. [\"/users/{{id}}\"])")
    } else {
        message
    }
}

type Problems = Vec<(Vec<Key>, String)>;

fn compile_rule(raw: &RawRule, options: &LoadOptions) -> Result<Rule, Problems> {
    let mut problems: Problems = Vec::new();
    let mut to = Vec::new();
    let targets = raw.to.as_ref().map(OneOrMany::entries).unwrap_or_default();
    for (i, target) in targets.into_iter().enumerate() {
        let at = |field: &str| {
            let mut keys = vec![Key::field("to")];
            if matches!(raw.to, Some(OneOrMany::Many(_))) {
                keys.push(Key::Index(i));
            }
            keys.push(Key::field(field));
            keys
        };
        let mut compiled = Target::default();
        for host in &target.hosts {
            match HostPattern::parse(host) {
                Ok(h) => compiled.hosts.push(h),
                Err(e) => problems.push((at("hosts"), e.to_string())),
            }
        }
        for path in &target.paths {
            match PathPattern::parse(path) {
                Ok(p) => compiled.paths.push(p),
                Err(e) => problems.push((at("paths"), e.to_string())),
            }
        }
        for method in &target.methods {
            match Method::parse(method) {
                Ok(m) => compiled.methods.push(m),
                Err(e) => problems.push((at("methods"), e.to_string())),
            }
        }
        to.push(compiled);
    }
    let sources = raw
        .from
        .as_ref()
        .map(OneOrMany::entries)
        .unwrap_or_default();
    let mut from = Vec::with_capacity(sources.len());
    for (i, source) in sources.into_iter().enumerate() {
        let at = |field: &str| {
            let mut keys = vec![Key::field("from")];
            if matches!(raw.from, Some(OneOrMany::Many(_))) {
                keys.push(Key::Index(i));
            }
            keys.push(Key::field(field));
            keys
        };
        let map = match source {
            RawSource::Anyone => {
                from.push(Source::Anyone);
                continue;
            }
            RawSource::Authenticated => {
                from.push(Source::Authenticated);
                continue;
            }
            RawSource::Map(map) => map,
        };
        let empty = map.users.is_none()
            && map.services.is_empty()
            && map.namespaces.is_empty()
            && map.webhooks.is_empty()
            && map.mtls.is_none();
        if empty {
            problems.push((
                vec![Key::field("from")],
                "an empty `from` entry matches nobody: name users, services, namespaces or webhooks (or write `anyone`)".into(),
            ));
            continue;
        }
        let mut services = Vec::new();
        for pattern in &map.services {
            let federated = options.federated_trust_domains.iter().find(|td| {
                pattern
                    .strip_prefix("spiffe://")
                    .and_then(|rest| rest.strip_prefix(td.as_str()))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            });
            let trust_domain = federated.unwrap_or(&options.trust_domain);
            match SpiffePattern::parse(pattern, trust_domain) {
                Ok(p) => services.push(p),
                Err(e) => problems.push((at("services"), e.to_string())),
            }
        }
        from.push(Source::Match(SourceMatch {
            users: map.users.as_ref().map(|u| UserMatch {
                roles: u.roles.clone(),
                permissions: u.permissions.clone(),
                ids: u.ids.clone(),
                issuers: u.issuers.clone(),
            }),
            services,
            namespaces: map.namespaces.clone(),
            webhooks: map.webhooks.clone(),
            mtls_required: map.mtls == Some(RawMtls::Required),
        }));
    }
    let when = match &raw.when {
        None => None,
        Some(source) => match Condition::compile(source) {
            Ok(condition) => {
                let captured: Vec<&str> = to
                    .iter()
                    .flat_map(|t: &Target| t.paths.iter())
                    .flat_map(PathPattern::captures)
                    .collect();
                for param in condition.params() {
                    if !captured.contains(&param.as_str()) {
                        problems.push((
                            vec![Key::field("when")],
                            format!("`params.{param}` is never captured: add a `{{{param}}}` segment to one of this rule's paths"),
                        ));
                    }
                }
                Some(condition)
            }
            Err(e) => {
                problems.push((vec![Key::field("when")], e));
                None
            }
        },
    };
    if raw.forward_user && matches!(raw.action, RawAction::Deny | RawAction::Audit) {
        problems.push((
            vec![Key::field("forward_user")],
            "forward_user only makes sense on an allow rule".into(),
        ));
    }
    let rate_limit = raw
        .rate_limit
        .as_ref()
        .and_then(|limit| compile_rate_limit(raw, limit, &mut problems));
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Rule {
        name: raw.name.clone(),
        action: match raw.action {
            RawAction::Allow => Action::Allow,
            RawAction::Deny => Action::Deny,
            RawAction::Audit => Action::Audit,
        },
        to,
        from,
        when,
        dry_run: raw.dry_run,
        forward_user: raw.forward_user,
        rate_limit,
    })
}

fn compile_rate_limit(
    rule: &RawRule,
    raw: &RawRateLimit,
    problems: &mut Problems,
) -> Option<Arc<RateLimit>> {
    let at = |field: &str| vec![Key::field("rate_limit"), Key::field(field)];
    let before = problems.len();
    if !matches!(rule.action, RawAction::Allow) {
        problems.push((
            vec![Key::field("rate_limit")],
            "rate_limit counts the requests an allow rule lets through; it has no meaning on a deny or audit rule".into(),
        ));
    } else if rule.dry_run {
        problems.push((
            vec![Key::field("rate_limit")],
            "a dry_run rule never decides, so its rate_limit would never count: remove one of them"
                .into(),
        ));
    }
    let per = match raw.per.trim() {
        "user" => Some(LimitPer::User),
        "service" => Some(LimitPer::Service),
        "ip" => Some(LimitPer::Ip),
        "token" => Some(LimitPer::Token),
        "rule" => Some(LimitPer::Rule),
        other => {
            problems.push((
                at("per"),
                format!("unknown `per: {other}`: use user, service, ip, token or rule"),
            ));
            None
        }
    };
    let rate = Rate::parse(&raw.rate)
        .map_err(|e| problems.push((at("rate"), e)))
        .ok();
    let burst = match raw.burst {
        None => rate.map(Rate::default_burst),
        Some(0) => {
            problems.push((
                at("burst"),
                "a burst of 0 allows nothing: the burst is the most requests allowed at one instant, at least 1".into(),
            ));
            None
        }
        Some(n) => match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                problems.push((
                    at("burst"),
                    format!("a burst of {n} is too large (at most {})", u32::MAX),
                ));
                None
            }
        },
    };
    let scope = match raw.scope.as_deref().map(str::trim) {
        None | Some("local") => Some(LimitScope::Local),
        Some("global") => Some(LimitScope::Global),
        Some(other) => {
            problems.push((
                at("scope"),
                format!("unknown `scope: {other}`: use local (this process) or global (Redis, shared by every replica)"),
            ));
            None
        }
    };
    if let (Some(rate), Some(burst)) = (rate, burst) {
        let window = super::window_micros(rate, burst);
        if window > RateLimit::MAX_WINDOW_MICROS {
            problems.push((
                at("burst"),
                format!(
                    "a burst of {burst} at {rate} takes {} h to come back; at most 24 h is counted (lower the burst or raise the rate)",
                    window.div_ceil(3_600_000_000)
                ),
            ));
        }
    }
    if problems.len() != before {
        return None;
    }
    Some(Arc::new(RateLimit {
        rule: rule.name.as_str().into(),
        per: per?,
        rate: rate?,
        burst: burst?,
        scope: scope?,
    }))
}
