//! `when` conditions (SPEC §7): CEL over `request`, `params`, `user`, `token` and
//! `service`, compiled once at load. Evaluation is pure. A condition that fails to
//! evaluate is reported as an error, and the engine denies (fail closed).

use super::Context;
use crate::principal::Principal;
use cel_interpreter::{Program, Value};
use serde::Serialize;
use std::collections::HashMap;

/// The variables a condition may use.
pub const VARIABLES: [&str; 5] = ["request", "params", "user", "token", "service"];

/// A compiled `when`.
pub struct Condition {
    source: String,
    program: Program,
    /// The condition is about users (`user`/`token`): it cannot hold for a
    /// principal without a user, so the rule does not apply to one.
    needs_user: bool,
    /// Likewise for `service`.
    needs_service: bool,
    /// The `params.NAME` it reads (checked against the rule's captures at load).
    params: Vec<String>,
    /// Which of [`VARIABLES`] it reads: only those are built per evaluation.
    uses: [bool; 5],
}

/// The standard CEL functions, registered once; each evaluation opens a child
/// scope of it for its variables instead of building a whole context.
fn root() -> &'static cel_interpreter::Context<'static> {
    static ROOT: std::sync::OnceLock<cel_interpreter::Context<'static>> =
        std::sync::OnceLock::new();
    ROOT.get_or_init(cel_interpreter::Context::default)
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

/// What a condition said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    True,
    False,
    /// The principal lacks the context the condition is about.
    NotApplicable,
    /// Evaluation failed: the engine denies.
    Error(String),
}

impl Condition {
    /// Compiles `source`, rejecting variables other than [`VARIABLES`].
    pub fn compile(source: &str) -> Result<Self, String> {
        let program = parse(source)?;
        let references = program.references();
        let bound = comprehension_variables(source);
        let mut unknown: Vec<&str> = references
            .variables()
            .into_iter()
            .filter(|v| !VARIABLES.contains(v) && !bound.iter().any(|b| b == v))
            .collect();
        unknown.sort_unstable();
        if !unknown.is_empty() {
            return Err(format!(
                "unknown variable(s) {}: a condition may use {}",
                unknown.join(", "),
                VARIABLES.join(", ")
            ));
        }
        Ok(Self {
            source: source.to_owned(),
            needs_user: references.has_variable("user") || references.has_variable("token"),
            needs_service: references.has_variable("service"),
            params: params_used(source),
            uses: VARIABLES.map(|v| references.has_variable(v)),
            program,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn params(&self) -> &[String] {
        &self.params
    }

    /// Whether the condition reads `token.*` (the claims must then be kept).
    pub fn reads_token(&self) -> bool {
        VARIABLES
            .iter()
            .position(|name| *name == "token")
            .is_some_and(|i| self.uses[i])
    }

    /// Evaluates the condition for `ctx` with the rule's path captures. `user` is
    /// the user the rule sees ([`Principal::user_seen`]): a service's forwarded
    /// user only under `forward_user: true`.
    pub fn evaluate(
        &self,
        ctx: &Context<'_>,
        user: Option<&crate::principal::User>,
        params: &[(String, String)],
    ) -> Verdict {
        let service = match ctx.principal {
            Principal::Service(service) => Some(service),
            _ => None,
        };
        let (user, token) = match user {
            Some(user) => (Some(&user.fields), Some(user.claims.map())),
            None => (None, None),
        };
        if (self.needs_user && user.is_none()) || (self.needs_service && service.is_none()) {
            return Verdict::NotApplicable;
        }
        let mut cel = root().new_inner_scope();
        for (i, name) in VARIABLES.iter().enumerate() {
            if !self.uses[i] {
                continue;
            }
            let value = match *name {
                "request" => cel_interpreter::to_value(RequestVars {
                    method: ctx.request.method(),
                    host: ctx.request.host(),
                    path: ctx.path.to_string(),
                    headers: ctx.request.headers(),
                    query: query_map(ctx.request.path()),
                }),
                "params" => cel_interpreter::to_value(
                    params
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect::<HashMap<&str, &str>>(),
                ),
                "user" => cel_interpreter::to_value(user),
                "token" => cel_interpreter::to_value(token),
                _ => cel_interpreter::to_value(service),
            };
            match value {
                Ok(value) => cel.add_variable_from_value(*name, value),
                Err(e) => return Verdict::Error(format!("cannot expose `{name}`: {e}")),
            }
        }
        match self.program.execute(&cel) {
            Ok(Value::Bool(true)) => Verdict::True,
            Ok(Value::Bool(false)) => Verdict::False,
            Ok(other) => Verdict::Error(format!("the condition returned {other:?}, not a boolean")),
            Err(e) => Verdict::Error(e.to_string()),
        }
    }
}

thread_local! {
    /// Set while this thread parses CEL: the panic hook stays quiet then.
    static PARSING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Parses CEL. The parser (cel-parser 0.10) can panic on some malformed input
/// (e.g. `a ==`); a policy file is input, so the panic is caught and turned into
/// an error. A panic hook, installed once, keeps such a panic quiet on the parsing
/// thread and hands every other panic to the previous hook. Load time only.
fn parse(source: &str) -> Result<Program, String> {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PARSING.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    PARSING.with(|p| p.set(true));
    let parsed = std::panic::catch_unwind(|| Program::compile(source));
    PARSING.with(|p| p.set(false));
    match parsed {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(e)) => Err(format!(
            "invalid CEL: {}",
            e.to_string().lines().next().unwrap_or_default()
        )),
        Err(_) => Err("invalid CEL: the expression is incomplete or malformed".into()),
    }
}

#[derive(Serialize)]
struct RequestVars<'a> {
    method: &'a str,
    host: &'a str,
    /// The normalized path, query excluded.
    path: String,
    headers: crate::request::Headers<'a>,
    query: HashMap<String, String>,
}

fn query_map(raw_path: &str) -> HashMap<String, String> {
    let Some((_, query)) = raw_path.split_once('?') else {
        return HashMap::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// Identifier characters outside string literals, as (start, identifier) pairs.
fn identifiers(source: &str) -> Vec<(usize, &str)> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' || c == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != c {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((start, &source[start..i]));
        } else {
            i += 1;
        }
    }
    out
}

/// Variables bound by CEL macros: `list.all(x, ...)`, `exists`, `exists_one`,
/// `map`, `filter`.
fn comprehension_variables(source: &str) -> Vec<String> {
    let ids = identifiers(source);
    ids.windows(2)
        .filter(|w| {
            matches!(w[0].1, "all" | "exists" | "exists_one" | "map" | "filter")
                && source[w[0].0 + w[0].1.len()..w[1].0].trim() == "("
        })
        .map(|w| w[1].1.to_owned())
        .collect()
}

/// `params.NAME` and `params["NAME"]` references.
fn params_used(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (start, id) in identifiers(source) {
        if id != "params" {
            continue;
        }
        let rest = source[start + id.len()..].trim_start();
        let name = if let Some(after) = rest.strip_prefix('.') {
            let after = after.trim_start();
            let end = after
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .unwrap_or(after.len());
            &after[..end]
        } else if let Some(after) = rest.strip_prefix('[') {
            let after = after.trim_start();
            let quote = after.chars().next().unwrap_or(' ');
            if quote != '"' && quote != '\'' {
                continue;
            }
            let inner = &after[1..];
            &inner[..inner.find(quote).unwrap_or(0)]
        } else {
            continue;
        };
        if !name.is_empty() && !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_params_and_bound_variables() {
        assert_eq!(
            params_used(r#"params.user_id == user.id && params["b"] != 'params.c'"#),
            vec!["user_id", "b"]
        );
        assert_eq!(
            comprehension_variables("user.roles.exists(r, r == 'X')"),
            vec!["r"]
        );
    }

    #[test]
    fn compile_errors_are_explained() {
        assert!(Condition::compile("user.role ==")
            .unwrap_err()
            .contains("invalid CEL"));
        let err = Condition::compile("usr.role == 'A' && requests.x").unwrap_err();
        assert!(err.contains("requests, usr"), "{err}");
        assert!(Condition::compile("user.roles.exists(r, r == 'ADMIN')").is_ok());
    }

    #[test]
    fn query_parameters() {
        let q = query_map("/p?a=1&b=x%20y&c&d=a+b");
        assert_eq!(q["a"], "1");
        assert_eq!(q["b"], "x y");
        assert_eq!(q["c"], "");
        assert_eq!(q["d"], "a b");
    }
}
