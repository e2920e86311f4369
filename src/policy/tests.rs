//! Table tests for `decide`: every `to`/`from`/`when` form, deny-overrides-allow,
//! order independence, fail-closed conditions, and load-time validation.

use super::*;
use crate::principal::{Service, User, Webhook};
use serde_json::{json, Map, Value};

/// One rule per entry, so tests can shuffle them.
const RULES: &[&str] = &[
    "  - name: health\n    to: { paths: [/healthz], methods: [GET] }\n    from: anyone\n",
    "  - name: videos-read\n    to: { hosts: [api.example.com], paths: [/api/videos, /api/videos/**], methods: [GET] }\n    from: { users: { roles: [USER, ADMIN] } }\n",
    "  - name: own-modules\n    to: { paths: [\"/user_modules/user/{user_id}\"] }\n    from: { users: {} }\n    when: params.user_id == user.id\n",
    "  - name: admin\n    to: [{ paths: [/api/admin/**] }, { paths: [/ops/**], methods: [POST] }]\n    from: { users: { roles: [ADMIN] } }\n",
    "  - name: me\n    to: { paths: [/api/me] }\n    from: authenticated\n",
    "  - name: one-user\n    to: { paths: [/api/special] }\n    from: [{ users: { ids: [user_7] } }, { users: { issuers: [app] } }]\n",
    "  - name: reports\n    to: { paths: [/api/reports/**] }\n    from: { users: { permissions: [reports:read] } }\n",
    "  - name: channels-internal\n    to: { paths: [/internal/channels/**] }\n    from: { services: [spiffe://example.org/ns/default/sa/videos] }\n    forward_user: true\n",
    "  - name: any-in-prod\n    to: { paths: [/internal/status] }\n    from: [{ services: [spiffe://example.org/ns/*/sa/*], namespaces: [prod] }]\n",
    "  - name: clerk-webhook\n    to: { paths: [/api/webhook/clerk], methods: [POST] }\n    from: { webhooks: [clerk] }\n",
    "  - name: beta-header\n    to: { paths: [/api/beta/**] }\n    from: authenticated\n    when: request.headers['x-beta'] == 'on' && request.method == 'GET'\n",
    "  - name: query-flag\n    to: { paths: [/api/search] }\n    from: anyone\n    when: request.query.q != ''\n",
    "  - name: banned\n    action: deny\n    to: { paths: [/**] }\n    when: user.role == 'BANNED'\n",
    "  - name: no-delete\n    action: deny\n    to: { paths: [/api/videos/**], methods: [DELETE] }\n",
    "  - name: watch-exports\n    action: audit\n    to: { paths: [/api/export] }\n",
    "  - name: trial-block\n    action: deny\n    dry_run: true\n    to: { paths: [/api/videos/trial] }\n",
    "  - name: broken-condition\n    to: { paths: [/api/broken] }\n    from: anyone\n    when: request.method + 1 == 2\n",
];

fn policy_from(rules: &[&str]) -> Policy {
    let text = format!("default: deny\nrules:\n{}", rules.concat());
    Policy::parse("test.yaml", &text, &LoadOptions::default()).expect("policy loads")
}

fn user(sub: &str, issuer: &str, fields: Value) -> Principal {
    let claims: Map<String, Value> = fields.as_object().cloned().unwrap_or_default();
    Principal::User(User::from_claims(issuer, sub, claims))
}

fn service(id: &str) -> Principal {
    Principal::Service(Service::from_spiffe_id(id, true))
}

fn request(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> AuthzRequest {
    AuthzRequest::builder()
        .method(method)
        .host(host)
        .path(path)
        .headers(headers.iter().copied())
        .build()
}

fn run_on(policy: &Policy, req: &AuthzRequest, principal: &Principal) -> Decision {
    let path = NormalizedPath::parse(req.path()).unwrap();
    decide(
        policy,
        &Context {
            request: req,
            path: &path,
            principal,
        },
    )
}

struct Case {
    req: AuthzRequest,
    principal: Principal,
    effect: Effect,
    rule: &'static str,
}

fn cases() -> Vec<Case> {
    let anon = Principal::Anonymous;
    let usr = user("user_1", "clerk", json!({"role": "USER"}));
    let admin = user("user_2", "clerk", json!({"role": "ADMIN"}));
    let banned = user("user_3", "clerk", json!({"role": "BANNED"}));
    let multi = user(
        "user_4",
        "clerk",
        json!({"role": "USER", "roles": ["X", "ADMIN"]}),
    );
    let seven = user("user_7", "clerk", json!({"role": "USER"}));
    let app = user("u9", "app", json!({"role": "USER"}));
    let reporter = user(
        "u5",
        "clerk",
        json!({"role": "USER", "permissions": ["reports:read", "x"]}),
    );
    let scoped = user(
        "u6",
        "clerk",
        json!({"role": "USER", "permissions": "openid reports:read"}),
    );
    let videos = service("spiffe://example.org/ns/default/sa/videos");
    let prod = service("spiffe://example.org/ns/prod/sa/billing");
    let hook = Principal::Webhook(Webhook {
        name: "clerk".into(),
    });
    let other_hook = Principal::Webhook(Webhook {
        name: "stripe".into(),
    });
    let h = "api.example.com";
    use Effect::{Allow, Deny};
    let c = |method: &str,
             host: &str,
             path: &str,
             headers: &[(&str, &str)],
             p: &Principal,
             effect,
             rule| Case {
        req: request(method, host, path, headers),
        principal: p.clone(),
        effect,
        rule,
    };
    vec![
        c("GET", h, "/healthz", &[], &anon, Allow, "health"),
        c("POST", h, "/healthz", &[], &anon, Deny, "default"),
        c("GET", h, "/api/videos", &[], &anon, Deny, "default"),
        c("GET", h, "/api/videos", &[], &usr, Allow, "videos-read"),
        c("GET", h, "/api/videos/1", &[], &admin, Allow, "videos-read"),
        c("GET", "evil.com", "/api/videos", &[], &usr, Deny, "default"),
        c(
            "GET",
            "api.example.com:443",
            "/api/videos",
            &[],
            &usr,
            Allow,
            "videos-read",
        ),
        c("POST", h, "/api/videos", &[], &usr, Deny, "default"),
        c("GET", h, "/api/admin/users", &[], &usr, Deny, "default"),
        c("GET", h, "/api/admin/users", &[], &admin, Allow, "admin"),
        c("GET", h, "/api/admin/users", &[], &multi, Allow, "admin"),
        c("POST", h, "/ops/restart", &[], &admin, Allow, "admin"),
        c("GET", h, "/ops/restart", &[], &admin, Deny, "default"),
        // Path tricks resolve before matching.
        c(
            "GET",
            h,
            "/api/videos/../admin/x",
            &[],
            &usr,
            Deny,
            "default",
        ),
        c(
            "GET",
            h,
            "/api/videos/%2e%2e/admin/x",
            &[],
            &usr,
            Deny,
            "default",
        ),
        c("GET", h, "/api/me", &[], &anon, Deny, "default"),
        c("GET", h, "/api/me", &[], &usr, Allow, "me"),
        c("GET", h, "/api/me", &[], &videos, Allow, "me"),
        c("GET", h, "/api/special", &[], &seven, Allow, "one-user"),
        c("GET", h, "/api/special", &[], &app, Allow, "one-user"),
        c("GET", h, "/api/special", &[], &usr, Deny, "default"),
        c(
            "GET",
            h,
            "/api/reports/q3",
            &[],
            &reporter,
            Allow,
            "reports",
        ),
        c("GET", h, "/api/reports/q3", &[], &scoped, Allow, "reports"),
        c("GET", h, "/api/reports/q3", &[], &usr, Deny, "default"),
        // Ownership: users only reach their own data (seed 002).
        c(
            "GET",
            h,
            "/user_modules/user/user_1",
            &[],
            &usr,
            Allow,
            "own-modules",
        ),
        c(
            "GET",
            h,
            "/user_modules/user/user_2",
            &[],
            &usr,
            Deny,
            "default",
        ),
        c(
            "GET",
            h,
            "/user_modules/user/user_1",
            &[],
            &anon,
            Deny,
            "default",
        ),
        // Services, by SPIFFE ID and namespace.
        c(
            "GET",
            h,
            "/internal/channels/1",
            &[],
            &videos,
            Allow,
            "channels-internal",
        ),
        c(
            "GET",
            h,
            "/internal/channels/1",
            &[],
            &prod,
            Deny,
            "default",
        ),
        c(
            "GET",
            h,
            "/internal/channels/1",
            &[],
            &admin,
            Deny,
            "default",
        ),
        c(
            "GET",
            h,
            "/internal/status",
            &[],
            &prod,
            Allow,
            "any-in-prod",
        ),
        c("GET", h, "/internal/status", &[], &videos, Deny, "default"),
        // Webhooks by name.
        c(
            "POST",
            h,
            "/api/webhook/clerk",
            &[],
            &hook,
            Allow,
            "clerk-webhook",
        ),
        c(
            "POST",
            h,
            "/api/webhook/clerk",
            &[],
            &other_hook,
            Deny,
            "default",
        ),
        c("POST", h, "/api/webhook/clerk", &[], &usr, Deny, "default"),
        // `when` over request headers, method and query.
        c(
            "GET",
            h,
            "/api/beta/x",
            &[("x-beta", "on")],
            &usr,
            Allow,
            "beta-header",
        ),
        c(
            "GET",
            h,
            "/api/beta/x",
            &[("x-beta", "off")],
            &usr,
            Deny,
            "default",
        ),
        c(
            "GET",
            h,
            "/api/search?q=cats",
            &[],
            &anon,
            Allow,
            "query-flag",
        ),
        c("GET", h, "/api/search?q=", &[], &anon, Deny, "default"),
        // A missing header indexes to no value: the condition is false.
        c("GET", h, "/api/beta/x", &[], &usr, Deny, "default"),
        // A condition that cannot be evaluated denies (fail closed): a missing
        // query parameter (member access), a type error.
        c("GET", h, "/api/search", &[], &anon, Deny, "query-flag"),
        c(
            "GET",
            h,
            "/api/broken",
            &[],
            &admin,
            Deny,
            "broken-condition",
        ),
        // Deny overrides allow, whatever the order of the rules.
        c("GET", h, "/healthz", &[], &banned, Deny, "banned"),
        c("DELETE", h, "/api/videos/1", &[], &admin, Deny, "no-delete"),
        // A condition about users does not apply to other principals.
        c("GET", h, "/healthz", &[], &videos, Allow, "health"),
        // Audit and dry-run rules never decide.
        c("GET", h, "/api/export", &[], &usr, Deny, "default"),
        c(
            "GET",
            h,
            "/api/videos/trial",
            &[],
            &usr,
            Allow,
            "videos-read",
        ),
    ]
}

#[test]
fn decisions() {
    let policy = policy_from(RULES);
    for case in cases() {
        let d = run_on(&policy, &case.req, &case.principal);
        assert_eq!(
            (d.effect, d.rule_name()),
            (case.effect, case.rule),
            "{} {}{} as {:?}: {}",
            case.req.method(),
            case.req.host(),
            case.req.path(),
            case.principal,
            d.reason
        );
        assert_eq!(d.principal, case.principal.kind());
    }
}

#[test]
fn explain_agrees_with_decide_on_every_case() {
    let policy = policy_from(RULES);
    for case in cases() {
        let path = NormalizedPath::parse(case.req.path()).unwrap();
        let ctx = Context {
            request: &case.req,
            path: &path,
            principal: &case.principal,
        };
        let (explained, trace) = explain(&policy, &ctx);
        let decided = decide(&policy, &ctx);
        assert_eq!(
            (explained.effect, explained.rule_name()),
            (decided.effect, decided.rule_name())
        );
        assert_eq!(trace.len(), RULES.len(), "explain looks at every rule");
    }
}

#[test]
fn rule_order_does_not_change_decisions() {
    let mut rules: Vec<&str> = RULES.to_vec();
    let base: Vec<(Effect, String)> = cases()
        .iter()
        .map(|c| {
            let d = run_on(&policy_from(&rules), &c.req, &c.principal);
            (d.effect, d.rule_name().to_owned())
        })
        .collect();
    // Deterministic shuffles (xorshift), and the reversal.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..8 {
        if round == 0 {
            rules.reverse();
        } else {
            for i in (1..rules.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                rules.swap(i, (seed % (i as u64 + 1)) as usize);
            }
        }
        let policy = policy_from(&rules);
        for (case, (effect, rule)) in cases().iter().zip(&base) {
            let d = run_on(&policy, &case.req, &case.principal);
            assert_eq!(
                d.effect,
                *effect,
                "round {round}: {} {}",
                case.req.method(),
                case.req.path()
            );
            // Which allow rule is named may depend on order only when two allow
            // rules match; in this table none do.
            assert_eq!(d.rule_name(), rule, "round {round}: {}", case.req.path());
        }
    }
}

#[test]
fn captures_reach_the_decision() {
    let policy = policy_from(RULES);
    let usr = user("42", "clerk", json!({"role": "USER"}));
    let d = run_on(
        &policy,
        &request("GET", "h", "/user_modules/user/42", &[]),
        &usr,
    );
    assert_eq!(d.rule_name(), "own-modules");
    assert_eq!(d.params, vec![("user_id".into(), "42".into())]);
}

#[test]
fn audit_and_dry_run_are_observed() {
    let policy = policy_from(RULES);
    let usr = user("user_1", "clerk", json!({"role": "USER"}));
    let d = run_on(
        &policy,
        &request("GET", "api.example.com", "/api/videos/trial", &[]),
        &usr,
    );
    assert_eq!(d.observed, vec![("trial-block".to_string(), Effect::Deny)]);
    let d = run_on(&policy, &request("GET", "h", "/api/export", &[]), &usr);
    assert_eq!(
        d.observed,
        vec![("watch-exports".to_string(), Effect::Allow)]
    );
}

#[test]
fn failing_conditions_say_why() {
    let policy = policy_from(RULES);
    let d = run_on(
        &policy,
        &request("GET", "h", "/api/broken", &[]),
        &Principal::Anonymous,
    );
    assert_eq!(d.effect, Effect::Deny);
    assert!(
        d.reason
            .starts_with("the condition of rule 'broken-condition' failed"),
        "{}",
        d.reason
    );
    let path = NormalizedPath::parse("/api/broken").unwrap();
    let req = request("GET", "h", "/api/broken", &[]);
    let (_, trace) = explain(
        &policy,
        &Context {
            request: &req,
            path: &path,
            principal: &Principal::Anonymous,
        },
    );
    let line = trace.iter().find(|t| t.rule == "broken-condition").unwrap();
    assert!(matches!(line.outcome, Outcome::WhenError(_)));
    let banned = trace.iter().find(|t| t.rule == "banned").unwrap();
    assert_eq!(banned.outcome, Outcome::WhenNotApplicable);
    let health = trace.iter().find(|t| t.rule == "health").unwrap();
    assert_eq!(health.outcome, Outcome::ToMismatch);
}

#[test]
fn default_allow_and_empty_policy() {
    let options = LoadOptions::default();
    let policy = Policy::parse("p.yaml", "default: allow\n", &options).unwrap();
    let req = request("GET", "h", "/x", &[]);
    assert_eq!(
        run_on(&policy, &req, &Principal::Anonymous).effect,
        Effect::Allow
    );
    let empty = Policy::parse("p.yaml", "rules: []\n", &options).unwrap();
    assert_eq!(
        run_on(&empty, &req, &Principal::Anonymous).effect,
        Effect::Deny
    );
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
  - name: d
    to: { paths: [\"/u/{id}\"] }
    when: params.user_id == user.id
  - name: e
    when: usr.role == 'X'
  - name: f
    from: { services: [spiffe://other.org/ns/a/sa/b] }
  - name: g
    when: user.role ==
  - name: h
    from: {}
";
    let err = Policy::parse("policy.yaml", text, &LoadOptions::default()).unwrap_err();
    let errors = err.errors();
    let expect: &[(&str, &str)] = &[
        ("policy.yaml:4: rules[0].to.paths", "must start with '/'"),
        ("policy.yaml:5: rules[1].name", "duplicate"),
        ("policy.yaml:6:", "HTTP method"),
        ("policy.yaml:9:", "forward_user"),
        (
            "policy.yaml:12: rules[3].when",
            "`params.user_id` is never captured",
        ),
        ("policy.yaml:14: rules[4].when", "unknown variable(s) usr"),
        (
            "policy.yaml:16: rules[5].from.services",
            "outside the trust domain",
        ),
        ("policy.yaml:18: rules[6].when", "invalid CEL"),
        ("policy.yaml:20:", "empty `from` entry"),
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (error, (at, what)) in errors.iter().zip(expect) {
        assert!(
            error.starts_with(at) && error.contains(what),
            "{error}\n  should start with {at} and say {what}"
        );
    }

    let options = LoadOptions::default();
    let err = Policy::parse("p.yaml", "rules:\n  - name: x\n    bogus: 1\n", &options).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("p.yaml:3:"), "{msg}");
    assert!(msg.contains("unknown field `bogus`"), "{msg}");

    let err = Policy::parse(
        "p.yaml",
        "rules:\n  - name: x\n    from: everyone\n",
        &options,
    )
    .unwrap_err();
    assert!(err.to_string().contains("anyone"), "{err}");

    let err = Policy::parse(
        "p.yaml",
        "rules:\n  - name: x\n    to: { paths: [/u/{id}] }\n",
        &options,
    )
    .unwrap_err();
    assert!(err.to_string().contains("hint: quote paths"), "{err}");
}

/// East-west (docs/policy.md): a service's forwarded user counts as a user only under
/// `forward_user: true`, for `from.users` and for `when`; `mtls: required`
/// refuses a service proven by a token alone.
#[test]
fn forwarded_users_and_mtls_requirements() {
    let policy = policy_from(&[
        "  - name: for-users\n    to: { paths: [/internal/orders/**] }\n    from: { services: [spiffe://example.org/ns/default/sa/videos], users: { roles: [USER] } }\n    forward_user: true\n",
        "  - name: no-forward\n    to: { paths: [/internal/stats/**] }\n    from: { users: { roles: [USER] } }\n",
        "  - name: own-orders\n    to: [{ paths: [\"/internal/mine/{id}\"] }]\n    from: { services: [spiffe://example.org/ns/default/sa/videos] }\n    forward_user: true\n    when: params.id == user.id\n",
        "  - name: mtls-only\n    to: { paths: [/internal/secure] }\n    from: { services: [spiffe://example.org/ns/default/sa/*], mtls: required }\n",
    ]);
    let videos = "spiffe://example.org/ns/default/sa/videos";
    let forwarded = |mtls: bool, role: &str| {
        let mut s = Service::from_spiffe_id(videos, mtls);
        let claims = json!({ "role": role }).as_object().cloned().unwrap();
        s.on_behalf_of = Some(Box::new(User::from_claims("forwarded", "u1", claims)));
        Principal::Service(s)
    };
    let get = |path: &str| request("GET", "h", path, &[]);
    let cases: Vec<(&str, Principal, Effect)> = vec![
        ("/internal/orders/1", forwarded(true, "USER"), Effect::Allow),
        (
            "/internal/orders/1",
            forwarded(true, "BANNED"),
            Effect::Deny,
        ),
        ("/internal/orders/1", service(videos), Effect::Deny),
        // Without forward_user the service's word about a user counts for nothing.
        ("/internal/stats/1", forwarded(true, "USER"), Effect::Deny),
        ("/internal/mine/u1", forwarded(true, "USER"), Effect::Allow),
        ("/internal/mine/u2", forwarded(true, "USER"), Effect::Deny),
        ("/internal/secure", service(videos), Effect::Allow),
        ("/internal/secure", forwarded(false, "USER"), Effect::Deny),
    ];
    for (path, principal, want) in cases {
        let decision = run_on(&policy, &get(path), &principal);
        assert_eq!(decision.effect, want, "{path} {principal:?}");
    }
    // `mtls: required` alone is a valid source; other values are not.
    policy_from(&["  - name: m\n    from: { mtls: required }\n"]);
    let err = Policy::parse(
        "t.yaml",
        "rules:\n  - name: m\n    from: { mtls: maybe }\n",
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown variant"), "{err}");
    // Federated trust domains may be named in `services`.
    let options = LoadOptions {
        federated_trust_domains: vec!["partner.net".into()],
        ..LoadOptions::default()
    };
    let text = "rules:\n  - name: p\n    from: { services: [spiffe://partner.net/ns/a/sa/b] }\n";
    assert!(Policy::parse("t.yaml", text, &options).is_ok());
    assert!(Policy::parse("t.yaml", text, &LoadOptions::default()).is_err());
}

/// `rate_limit` (docs/rate-limits.md): parsed with its defaults, carried by the
/// allow decisions of its rule only, and every mistake reported with its line.
#[test]
fn rate_limits_parse_and_ride_on_allow_decisions() {
    let policy = policy_from(&[
        "  - name: videos-read\n    to: { paths: [/api/videos/**] }\n    from: authenticated\n    rate_limit: { per: user, rate: 20/s, burst: 40, scope: global }\n",
        "  - name: search\n    to: { paths: [/api/search] }\n    from: anyone\n    rate_limit:\n      per: ip\n      rate: 90/m\n",
        "  - name: no-delete\n    action: deny\n    to: { paths: [/api/videos/**], methods: [DELETE] }\n",
    ]);
    let limit = policy.rules()[0].rate_limit.as_deref().unwrap();
    assert_eq!(
        *limit,
        RateLimit {
            rule: "videos-read".into(),
            per: LimitPer::User,
            rate: Rate {
                count: 20,
                period: RatePeriod::Second
            },
            burst: 40,
            scope: LimitScope::Global,
        }
    );
    let search = policy.rules()[1].rate_limit.as_deref().unwrap();
    assert_eq!(
        (search.per, search.burst, search.scope),
        (LimitPer::Ip, 1, LimitScope::Local),
        "burst defaults to the per-second rate (1.5 → 1), scope to local"
    );
    assert_eq!(search.rate.to_string(), "90/m");

    let someone = user("u1", "app", json!({"role": "USER"}));
    let allowed = run_on(
        &policy,
        &request("GET", "h", "/api/videos/1", &[]),
        &someone,
    );
    assert_eq!(allowed.rate_limit.as_deref(), Some(limit));
    let denied = run_on(
        &policy,
        &request("DELETE", "h", "/api/videos/1", &[]),
        &someone,
    );
    assert_eq!(denied.effect, Effect::Deny);
    assert_eq!(denied.rate_limit, None, "a deny is never counted");
    let default = run_on(&policy, &request("GET", "h", "/other", &[]), &someone);
    assert_eq!(default.rate_limit, None);
}

#[test]
fn rate_limit_errors_name_file_line_and_fix() {
    let text = "\
rules:
  - name: a
    rate_limit: { per: session, rate: 20/s }
  - name: b
    rate_limit: { per: user, rate: 20 per second }
  - name: c
    rate_limit: { per: user, rate: 0/s }
  - name: d
    rate_limit: { per: user, rate: 5/d }
  - name: e
    rate_limit: { per: user, rate: 5/s, burst: 0 }
  - name: f
    rate_limit: { per: user, rate: 5/s, scope: cluster }
  - name: g
    action: deny
    rate_limit: { per: user, rate: 5/s }
  - name: h
    dry_run: true
    rate_limit: { per: user, rate: 5/s }
  - name: i
    rate_limit: { per: rule, rate: 2000000/s }
  - name: j
    rate_limit: { per: rule, rate: 1/h, burst: 25 }
  - name: k
    rate_limit: { per: rule, rate: 1/h, burst: 24 }
";
    let err = Policy::parse("policy.yaml", text, &LoadOptions::default()).unwrap_err();
    let errors = err.errors();
    let expect: &[(&str, &str)] = &[
        (
            "policy.yaml:3: rules[0].rate_limit.per",
            "use user, service, ip, token or rule",
        ),
        ("policy.yaml:5: rules[1].rate_limit.rate", "N/s, N/m or N/h"),
        (
            "policy.yaml:7: rules[2].rate_limit.rate",
            "a rate of 0 allows nothing",
        ),
        (
            "policy.yaml:9: rules[3].rate_limit.rate",
            "unknown unit `d`",
        ),
        ("policy.yaml:11: rules[4].rate_limit.burst", "at least 1"),
        ("policy.yaml:13: rules[5].rate_limit.scope", "use local"),
        (
            "policy.yaml:16: rules[6].rate_limit",
            "no meaning on a deny",
        ),
        (
            "policy.yaml:19: rules[7].rate_limit",
            "dry_run rule never decides",
        ),
        (
            "policy.yaml:21: rules[8].rate_limit.rate",
            "more than one request per microsecond",
        ),
        (
            "policy.yaml:23: rules[9].rate_limit.burst",
            "takes 25 h to come back; at most 24 h",
        ),
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (error, (at, what)) in errors.iter().zip(expect) {
        assert!(
            error.starts_with(at) && error.contains(what),
            "{error}\n  should start with {at} and say {what}"
        );
    }
    let err = Policy::parse(
        "p.yaml",
        "rules:\n  - name: x\n    rate_limit:\n      per: user\n      rate: 5/s\n      window: 1s\n",
        &LoadOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("p.yaml:6:") && msg.contains("unknown field `window`"),
        "{msg}"
    );
}
