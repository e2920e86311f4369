//! `when` conditions (docs/policy.md): CEL over `request`, `params`, `user`, `token` and
//! `service`, compiled once at load. Evaluation is pure. A condition that fails to
//! evaluate is reported as an error, and the engine denies (fail closed).

use super::Context;
use crate::principal::Principal;
use cel::common::ast::{operators, EntryExpr, Expr, IdedExpr, MapExpr, StructExpr};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use cel::{ExecutionError, FunctionContext, Program, Value};
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

/// The standard CEL functions and [`INDEX`], registered once; each evaluation
/// opens a child scope of it for its variables instead of building a whole context.
fn root() -> &'static cel::Context<'static, 'static> {
    static ROOT: std::sync::OnceLock<cel::Context<'static, 'static>> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let mut root = cel::Context::default();
        root.add_function(INDEX, index)
            .expect("`@index` is no standard function");
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
            // Built as CEL values directly: through `cel::to_value` (serde, then a
            // conversion of the whole tree) an evaluation took twice as long.
            let value: Box<dyn Val> = match *name {
                "request" => Box::new(strings([
                    ("method", string(ctx.request.method())),
                    ("host", string(ctx.request.host())),
                    ("path", string(ctx.path.to_string())),
                    (
                        "headers",
                        Box::new(string_map(ctx.request.headers().iter())),
                    ),
                    (
                        "query",
                        Box::new(string_map(query_pairs(ctx.request.path()))),
                    ),
                ])),
                "params" => Box::new(string_map(params.iter().map(|(k, v)| (k, v)))),
                "user" => nullable_object(user),
                "token" => nullable_object(token),
                _ => match cel::to_value(service) {
                    Ok(value) => {
                        cel.add_variable_from_value(*name, value);
                        continue;
                    }
                    Err(e) => return Verdict::Error(format!("cannot expose `{name}`: {e}")),
                },
            };
            cel.add_variable_as_val(*name, value);
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
/// The longest `when` accepted, and its deepest nesting: the CEL parser
/// recurses per operator and bracket; about 1,500 chained `+`, or 30 nested
/// parentheses in a debug build, overflow a 2 MiB thread stack (measured), which
/// aborts the process instead of failing.
const MAX_CONDITION_BYTES: usize = 1024;
const MAX_CONDITION_DEPTH: usize = 8;

fn parse(source: &str) -> Result<Program, String> {
    if source.len() > MAX_CONDITION_BYTES {
        return Err(format!(
            "the condition is {} bytes long; at most {MAX_CONDITION_BYTES} are accepted: split it over several rules",
            source.len()
        ));
    }
    let mut depth = 0usize;
    for byte in source.bytes() {
        match byte {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_CONDITION_DEPTH {
                    return Err(format!(
                        "the condition nests deeper than {MAX_CONDITION_DEPTH} brackets"
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Program::compile(source).map_err(|e| {
        format!(
            "invalid CEL: {}",
            e.to_string().lines().next().unwrap_or_default()
        )
    })
}

/// What `a[b]` is compiled to (see [`missing_is_null`]). CEL names have no `@`,
/// so no condition can call it by name or mean something else by it.
const INDEX: &str = "@index";

/// Compiles every `a[b]` to `@index(a, b)`: [`index`], which reads a missing map
/// key or a list index past either end as `null`. Conditions index optional
/// entries (`request.headers['x-beta'] == 'on'`), and portcullis' first CEL
/// interpreter, cel-interpreter 0.10, read them so: without the header, the
/// comparison is false. CEL proper makes it an error, which would deny the
/// request instead.
fn missing_is_null(expr: &mut IdedExpr) {
    match &mut expr.expr {
        Expr::Call(call) => {
            if call.func_name == operators::INDEX && call.target.is_none() {
                call.func_name = INDEX.to_owned();
            }
            if let Some(target) = &mut call.target {
                missing_is_null(target);
            }
            call.args.iter_mut().for_each(missing_is_null);
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
        Expr::Map(MapExpr { entries }) | Expr::Struct(StructExpr { entries, .. }) => {
            for entry in entries {
                match &mut entry.expr {
                    EntryExpr::MapEntry(entry) => {
                        missing_is_null(&mut entry.key);
                        missing_is_null(&mut entry.value);
                    }
                    EntryExpr::StructField(field) => missing_is_null(&mut field.value),
                }
            }
        }
        Expr::Select(select) => missing_is_null(&mut select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// `@index(a, b)`: `a[b]`, or `null` where `a` has no entry `b`. Any other
/// failure (indexing a string, a key of the wrong type) stays an error.
fn index(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let [target, key] = ftx.args.as_slice() else {
        return Err(ExecutionError::invalid_argument_count(2, ftx.args.len()));
    };
    let (target, key) = (target.as_ref(), key.as_ref());
    let Some(indexer) = target.as_indexer() else {
        return Err(ExecutionError::no_such_overload(
            operators::INDEX,
            vec![
                target.get_type().name().to_owned(),
                key.get_type().name().to_owned(),
            ],
        ));
    };
    match indexer.get(key) {
        Ok(value) => Value::try_from(value.as_ref()),
        Err(ExecutionError::NoSuchKey(_) | ExecutionError::IndexOutOfBounds(_)) => Ok(Value::Null),
        Err(e) => Err(e),
    }
}

/// A map with string keys; a key given twice keeps its last value.
fn strings<K: AsRef<str>>(entries: impl IntoIterator<Item = (K, Box<dyn Val>)>) -> CelMap<'static> {
    CelMap::from(
        entries
            .into_iter()
            .map(|(k, v)| (CelMapKey::from(k.as_ref().to_owned()), v))
            .collect::<HashMap<_, _>>(),
    )
}

fn string_map<K: AsRef<str>, V: AsRef<str>>(
    entries: impl Iterator<Item = (K, V)>,
) -> CelMap<'static> {
    strings(entries.map(|(k, v)| (k, string(v.as_ref()))))
}

fn string(s: impl Into<String>) -> Box<dyn Val> {
    Box::new(CelString::from(s.into()))
}

/// A JSON object (claims, a user row) as CEL sees it. Numbers convert as serde
/// serializes them: non-negative integers are `uint`, negative ones `int`.
fn object(map: &serde_json::Map<String, serde_json::Value>) -> CelMap<'static> {
    strings(map.iter().map(|(k, v)| (k.as_str(), json(v))))
}

fn nullable_object(map: Option<&serde_json::Map<String, serde_json::Value>>) -> Box<dyn Val> {
    match map {
        Some(map) => Box::new(object(map)),
        None => Box::new(CelNull),
    }
}

fn json(value: &serde_json::Value) -> Box<dyn Val> {
    use serde_json::Value as Json;
    match value {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Box::new(CelUInt::from(u)),
            (None, Some(i)) => Box::new(CelInt::from(i)),
            _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => string(s.as_str()),
        Json::Array(items) => Box::new(CelList::from(items.iter().map(json).collect::<Vec<_>>())),
        Json::Object(map) => Box::new(object(map)),
    }
}

/// The query's `name=value` pairs, percent- and `+`-decoded.
fn query_pairs(raw_path: &str) -> impl Iterator<Item = (String, String)> + '_ {
    let query = raw_path.split_once('?').map_or("", |(_, query)| query);
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k), decode(v))
    })
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

    #[test]
    fn conditions_too_long_or_too_deep_are_refused_before_the_parser() {
        // 1,500 chained terms overflowed the parser's stack (a process abort).
        let long = vec!["1"; 1500].join("+");
        let err = Condition::compile(&long).unwrap_err();
        assert!(err.contains("at most 1024"), "{err}");
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        let err = Condition::compile(&deep).unwrap_err();
        assert!(err.contains("deeper than 8"), "{err}");
        let fine = format!("{}1{} == 1", "(".repeat(8), ")".repeat(8));
        assert!(Condition::compile(&fine).is_ok());
        // The longest chain accepted parses on a test thread's 2 MiB stack.
        let longest = vec!["1"; 512].join("+");
        assert!(longest.len() <= 1024);
        assert!(Condition::compile(&longest).is_ok());
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
    fn json_converts_as_serde_serializes_it() {
        let value = |json_value| Value::try_from(json(&json_value).as_ref());
        assert_eq!(value(serde_json::json!(3)), Ok(Value::UInt(3)));
        assert_eq!(value(serde_json::json!(-3)), Ok(Value::Int(-3)));
        assert_eq!(value(serde_json::json!(1.5)), Ok(Value::Float(1.5)));
        let claims = serde_json::json!({ "roles": ["a"], "n": null, "ok": true });
        assert_eq!(value(claims.clone()), Ok(cel::to_value(claims).unwrap()));
    }

    #[test]
    fn query_parameters() {
        let q: HashMap<_, _> = query_pairs("/p?a=1&b=x%20y&c&d=a+b").collect();
        assert_eq!(q["a"], "1");
        assert_eq!(q["b"], "x y");
        assert_eq!(q["c"], "");
        assert_eq!(q["d"], "a b");
    }
}
