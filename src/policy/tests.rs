//! Table tests for `decide`: every `to`/`from` form, deny-overrides-allow, defaults.

use super::*;
use crate::principal::User;
use serde_json::{json, Map, Value};

const POLICY: &str = r#"
default: deny
rules:
  - name: health
    to: { paths: [/healthz], methods: [GET] }
    from: anyone
  - name: videos-read
    to: { hosts: [api.example.com], paths: [/api/videos, /api/videos/**], methods: [GET] }
    from: { users: { roles: [USER, ADMIN] } }
  - name: own-modules
    to: { paths: ["/user_modules/user/{user_id}"] }
    from: { users: {} }
  - name: admin
    to: [{ paths: [/api/admin/**] }, { paths: [/ops/**], methods: [POST] }]
    from: { users: { roles: [ADMIN] } }
  - name: me
    to: { paths: [/api/me] }
    from: authenticated
  - name: one-user
    to: { paths: [/api/special] }
    from: [{ users: { ids: [user_7] } }, { users: { issuers: [app] } }]
  - name: banned
    action: deny
    to: { paths: [/**] }
    from: { users: { roles: [BANNED] } }
  - name: no-delete
    action: deny
    to: { paths: [/api/videos/**], methods: [DELETE] }
  - name: watch-exports
    action: audit
    to: { paths: [/api/export] }
  - name: trial-block
    action: deny
    dry_run: true
    to: { paths: [/api/videos/trial] }
"#;

fn user(sub: &str, issuer: &str, fields: Value) -> Principal {
    let claims: Map<String, Value> = fields.as_object().cloned().unwrap_or_default();
    Principal::User(User::from_claims(issuer, sub, claims))
}

fn run(method: &str, host: &str, path: &str, principal: &Principal) -> Decision {
    let policy = Policy::parse("test.yaml", POLICY).expect("policy loads");
    let path = NormalizedPath::parse(path).unwrap();
    decide(
        &policy,
        &Context {
            method,
            host,
            path: &path,
            principal,
        },
    )
}

#[test]
fn decisions() {
    let anon = Principal::Anonymous;
    let usr = user("user_1", "clerk", json!({"role": "USER"}));
    let admin = user("user_2", "clerk", json!({"role": "ADMIN"}));
    let banned = user("user_3", "clerk", json!({"role": "BANNED"}));
    let multi = user("user_4", "clerk", json!({"roles": ["X", "ADMIN"]}));
    let seven = user("user_7", "clerk", json!({}));
    let app = user("u9", "app", json!({}));
    let host = "api.example.com";
    let cases: &[(&str, &str, &str, &Principal, Effect, &str)] = &[
        ("GET", host, "/healthz", &anon, Effect::Allow, "health"),
        ("POST", host, "/healthz", &anon, Effect::Deny, "default"),
        ("GET", host, "/api/videos", &anon, Effect::Deny, "default"),
        (
            "GET",
            host,
            "/api/videos",
            &usr,
            Effect::Allow,
            "videos-read",
        ),
        (
            "GET",
            host,
            "/api/videos/1",
            &admin,
            Effect::Allow,
            "videos-read",
        ),
        (
            "GET",
            "evil.com",
            "/api/videos",
            &usr,
            Effect::Deny,
            "default",
        ),
        (
            "GET",
            "api.example.com:443",
            "/api/videos",
            &usr,
            Effect::Allow,
            "videos-read",
        ),
        ("POST", host, "/api/videos", &usr, Effect::Deny, "default"),
        (
            "GET",
            host,
            "/api/admin/users",
            &usr,
            Effect::Deny,
            "default",
        ),
        (
            "GET",
            host,
            "/api/admin/users",
            &admin,
            Effect::Allow,
            "admin",
        ),
        (
            "GET",
            host,
            "/api/admin/users",
            &multi,
            Effect::Allow,
            "admin",
        ),
        ("POST", host, "/ops/restart", &admin, Effect::Allow, "admin"),
        ("GET", host, "/ops/restart", &admin, Effect::Deny, "default"),
        // Path tricks resolve before matching.
        (
            "GET",
            host,
            "/api/videos/../admin/x",
            &usr,
            Effect::Deny,
            "default",
        ),
        (
            "GET",
            host,
            "/api/videos/%2e%2e/admin",
            &usr,
            Effect::Deny,
            "default",
        ),
        ("GET", host, "/api/me", &anon, Effect::Deny, "default"),
        ("GET", host, "/api/me", &usr, Effect::Allow, "me"),
        (
            "GET",
            host,
            "/api/special",
            &seven,
            Effect::Allow,
            "one-user",
        ),
        ("GET", host, "/api/special", &app, Effect::Allow, "one-user"),
        ("GET", host, "/api/special", &usr, Effect::Deny, "default"),
        // Deny overrides allow, whatever the order of the rules.
        ("GET", host, "/healthz", &banned, Effect::Deny, "banned"),
        (
            "DELETE",
            host,
            "/api/videos/1",
            &admin,
            Effect::Deny,
            "no-delete",
        ),
        // Audit and dry-run rules never decide.
        ("GET", host, "/api/export", &usr, Effect::Deny, "default"),
        (
            "GET",
            host,
            "/api/videos/trial",
            &usr,
            Effect::Allow,
            "videos-read",
        ),
    ];
    for (method, host, path, principal, effect, rule) in cases {
        let d = run(method, host, path, principal);
        assert_eq!(
            (d.effect, d.rule_name()),
            (*effect, *rule),
            "{method} {host}{path} as {principal:?}: {}",
            d.reason
        );
    }
}

#[test]
fn captures_reach_the_decision() {
    let usr = user("user_1", "clerk", json!({}));
    let d = run("GET", "h", "/user_modules/user/42", &usr);
    assert_eq!(d.rule_name(), "own-modules");
    assert_eq!(d.params, vec![("user_id".into(), "42".into())]);
}

#[test]
fn audit_and_dry_run_are_observed() {
    let usr = user("user_1", "clerk", json!({"role": "USER"}));
    let d = run("GET", "api.example.com", "/api/videos/trial", &usr);
    assert_eq!(d.observed, vec![("trial-block".to_string(), Effect::Deny)]);
    let d = run("GET", "h", "/api/export", &usr);
    assert_eq!(
        d.observed,
        vec![("watch-exports".to_string(), Effect::Allow)]
    );
}

#[test]
fn rule_order_does_not_change_decisions() {
    let forward = Policy::parse("a.yaml", POLICY).unwrap();
    let mut reversed = forward.clone();
    reversed.rules.reverse();
    let banned = user("u", "clerk", json!({"role": "BANNED"}));
    let admin = user("u", "clerk", json!({"role": "ADMIN"}));
    for (path, principal) in [("/healthz", &banned), ("/api/admin/x", &admin)] {
        let path = NormalizedPath::parse(path).unwrap();
        let ctx = Context {
            method: "GET",
            host: "api.example.com",
            path: &path,
            principal,
        };
        let (a, b) = (decide(&forward, &ctx), decide(&reversed, &ctx));
        assert_eq!((a.effect, a.rule_name()), (b.effect, b.rule_name()));
    }
}

#[test]
fn default_allow_and_empty_policy() {
    let policy = Policy::parse("p.yaml", "default: allow\n").unwrap();
    let path = NormalizedPath::parse("/x").unwrap();
    let ctx = Context {
        method: "GET",
        host: "h",
        path: &path,
        principal: &Principal::Anonymous,
    };
    assert_eq!(decide(&policy, &ctx).effect, Effect::Allow);
    let empty = Policy::parse("p.yaml", "rules: []\n").unwrap();
    assert_eq!(decide(&empty, &ctx).effect, Effect::Deny);
}

#[test]
fn load_errors_name_file_line_and_fix() {
    let text = "\
default: deny
rules:
  - name: a
    to: { paths: [api/x] }
  - name: a
    to: { methods: [G E T] }
  - name: c
    action: deny
    forward_user: true
";
    let err = Policy::parse("policy.yaml", text).unwrap_err();
    let errors = err.errors();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors[0].starts_with("policy.yaml:4: rules[0].to.paths"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("policy.yaml:5: rules[1].name"),
        "{}",
        errors[1]
    );
    assert!(errors[1].contains("duplicate"), "{}", errors[1]);
    assert!(errors[2].starts_with("policy.yaml:6:"), "{}", errors[2]);
    assert!(errors[3].starts_with("policy.yaml:9:"), "{}", errors[3]);

    let err = Policy::parse("p.yaml", "rules:\n  - name: x\n    bogus: 1\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("p.yaml:3:"), "{msg}");
    assert!(msg.contains("unknown field `bogus`"), "{msg}");

    let err = Policy::parse("p.yaml", "rules:\n  - name: x\n    from: everyone\n").unwrap_err();
    assert!(err.to_string().contains("anyone"), "{err}");
}
