//! `when` conditions (SPEC §7): CEL over `request`, `params`, `user`, `token` and
//! `service`, compiled once at load. Evaluation is pure. A condition that fails to
//! evaluate is reported as an error, and the engine denies (fail closed).

use super::Context;
use crate::principal::Principal;
use cel::common::ast::{operators, CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::objects::{KeyRef, Map};
use cel::{Program, Value};
use serde::Serialize;
use std::collections::HashMap;

/// The variables a condition may use.
pub const VARIABLES: [&str; 5] = ["request", "params", "user", "token", "service"];

/// A compiled `when`.
pub struct Condition {
    source: String,
    /// The parsed condition, `[...]` rewritten by [`missing_is_null`].
    expr: IdedExpr,
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

/// The standard CEL functions and [`ABSENT`], registered once; each evaluation
/// opens a child scope of it for its variables instead of building a whole context.
fn root() -> &'static cel::Context<'static, 'static> {
    static ROOT: std::sync::OnceLock<cel::Context<'static, 'static>> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let mut root = cel::Context::default();
        root.add_function(ABSENT, absent)
            .expect("`@absent` is no standard function");
        root
    })
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
        let mut expr = program.expression().clone();
        missing_is_null(&mut expr);
        Ok(Self {
            source: source.to_owned(),
            needs_user: references.has_variable("user") || references.has_variable("token"),
            needs_service: references.has_variable("service"),
            params: params_used(source),
            uses: VARIABLES.map(|v| references.has_variable(v)),
            expr,
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
                "request" => cel::to_value(RequestVars {
                    method: ctx.request.method(),
                    host: ctx.request.host(),
                    path: ctx.path.to_string(),
                    headers: ctx.request.headers(),
                    query: query_map(ctx.request.path()),
                }),
                "params" => cel::to_value(
                    params
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect::<HashMap<&str, &str>>(),
                ),
                "user" => cel::to_value(user),
                "token" => cel::to_value(token),
                _ => cel::to_value(service),
            };
            match value {
                Ok(value) => cel.add_variable_from_value(*name, value),
                Err(e) => return Verdict::Error(format!("cannot expose `{name}`: {e}")),
            }
        }
        match Value::resolve(&self.expr, &cel) {
            Ok(Value::Bool(true)) => Verdict::True,
            Ok(Value::Bool(false)) => Verdict::False,
            Ok(other) => Verdict::Error(format!("the condition returned {other:?}, not a boolean")),
            Err(e) => Verdict::Error(e.to_string()),
        }
    }
}

/// Parses CEL. A malformed expression is an error, whose first line says where
/// and what the parser expected.
fn parse(source: &str) -> Result<Program, String> {
    Program::compile(source).map_err(|e| {
        format!(
            "invalid CEL: {}",
            e.to_string().lines().next().unwrap_or_default()
        )
    })
}

/// The function `a[b]` is compiled to call first (see [`missing_is_null`]). CEL
/// has no `@` in names, so no condition can call it or define it otherwise.
const ABSENT: &str = "@absent";

/// Rewrites every `a[b]` into `@absent(a, b) ? null : a[b]`. Conditions index
/// optional entries (`request.headers['x-beta'] == 'on'`), and portcullis has read
/// a missing map key or a list index past the end as `null` since its first CEL
/// interpreter (cel-interpreter 0.10) did: the comparison is then false. CEL proper
/// makes it an error, which would deny the request instead. Any other failure of
/// `a[b]` (indexing a string, a key of the wrong type) stays an error.
fn missing_is_null(expr: &mut IdedExpr) {
    match &mut expr.expr {
        Expr::Call(call) => {
            if let Some(target) = &mut call.target {
                missing_is_null(target);
            }
            call.args.iter_mut().for_each(missing_is_null);
            if call.func_name == operators::INDEX && call.target.is_none() && call.args.len() == 2 {
                let absent = Expr::Call(CallExpr {
                    func_name: ABSENT.to_owned(),
                    target: None,
                    args: call.args.clone(),
                });
                let id = expr.id;
                let node = |expr| IdedExpr { id, expr };
                let index = std::mem::take(&mut expr.expr);
                expr.expr = Expr::Call(CallExpr {
                    func_name: operators::CONDITIONAL.to_owned(),
                    target: None,
                    args: vec![
                        node(absent),
                        node(Expr::Literal(LiteralValue::Null)),
                        node(index),
                    ],
                });
            }
        }
        Expr::Comprehension(c) => {
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                missing_is_null(part);
            }
        }
        Expr::List(list) => list.elements.iter_mut().for_each(missing_is_null),
        Expr::Map(map) => map.entries.iter_mut().for_each(|e| match &mut e.expr {
            EntryExpr::MapEntry(entry) => {
                missing_is_null(&mut entry.key);
                missing_is_null(&mut entry.value);
            }
            EntryExpr::StructField(field) => missing_is_null(&mut field.value),
        }),
        Expr::Struct(s) => s.entries.iter_mut().for_each(|e| match &mut e.expr {
            EntryExpr::MapEntry(entry) => {
                missing_is_null(&mut entry.key);
                missing_is_null(&mut entry.value);
            }
            EntryExpr::StructField(field) => missing_is_null(&mut field.value),
        }),
        Expr::Select(select) => missing_is_null(&mut select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// `@absent(a, b)`: `a` is a map without the key `b`, or a list `b` is not an
/// index of.
fn absent(target: Value, key: Value) -> bool {
    match (&target, &key) {
        (Value::Map(map), key) => key_ref(key).is_some_and(|k| Map::get(map, &k).is_none()),
        (Value::List(list), Value::Int(i)) => usize::try_from(*i).map_or(true, |i| i >= list.len()),
        (Value::List(list), Value::UInt(i)) => {
            usize::try_from(*i).map_or(true, |i| i >= list.len())
        }
        _ => false,
    }
}

fn key_ref(key: &Value) -> Option<KeyRef<'_>> {
    match key {
        Value::String(s) => Some(KeyRef::String(s)),
        Value::Int(i) => Some(KeyRef::Int(*i)),
        Value::UInt(u) => Some(KeyRef::Uint(*u)),
        Value::Bool(b) => Some(KeyRef::Bool(*b)),
        _ => None,
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
    fn malformed_conditions_are_errors_not_panics() {
        // Each of these panicked inside cel-interpreter 0.10's parser.
        for source in ["a ==", "user.role ==", "(", "{'a':", "1 +", "!"] {
            let err = Condition::compile(source).unwrap_err();
            assert!(err.starts_with("invalid CEL: "), "{source}: {err}");
        }
    }

    /// Evaluates `source` over `request` = `{headers: {x-beta: on}, roles: [a]}`.
    fn eval(source: &str) -> Result<Value, String> {
        let condition = Condition::compile(source)?;
        let request = serde_json::json!({ "headers": { "x-beta": "on" }, "roles": ["a"] });
        let mut ctx = root().new_inner_scope();
        ctx.add_variable_from_value("request", cel::to_value(request).unwrap());
        Value::resolve(&condition.expr, &ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn a_missing_entry_indexes_to_null() {
        for (source, want) in [
            ("request.headers['x-beta'] == 'on'", true),
            ("request.headers['x-other'] == 'on'", false),
            ("request.headers['x-other'] == null", true),
            ("request.headers[1] == 'on'", false),
            ("request.roles[0] == 'a'", true),
            ("request.roles[1] == 'a'", false),
            ("request.roles[-1] == 'a'", false),
            ("request.roles.exists(r, request.headers[r] == 'on')", false),
            ("has(request.headers.other)", false),
            ("'x-beta' in request.headers", true),
        ] {
            assert_eq!(eval(source), Ok(Value::Bool(want)), "{source}");
        }
        // Member access to a missing field, and indexes of the wrong kind, stay errors.
        for source in [
            "request.headers.other == 'on'",
            "request.roles['a'] == 'a'",
            "'abc'[0] == 'a'",
        ] {
            assert!(eval(source).is_err(), "{source}: {:?}", eval(source));
        }
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
