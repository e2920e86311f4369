//! How long `decide` takes with 50 and 500 rules (issue: "evaluation with 500 rules
//! stays in the low microseconds"). Run: `cargo bench --bench policy`.
//!
//! The rule sets look like a real mesh: each service owns a path prefix with a
//! read rule for users, a write rule for admins, an ownership rule with a CEL
//! condition, and a few global deny rules. Requests: one allowed deep in the
//! file, one denied by default, one through a CEL condition.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use portcullis::policy::{decide, Context, LoadOptions, NormalizedPath, Policy};
use portcullis::principal::{Principal, User};
use portcullis::request::AuthzRequest;
use std::hint::black_box;

fn policy(rules: usize) -> Policy {
    let mut text = String::from(
        "default: deny\nrules:\n  - name: banned\n    action: deny\n    to: { paths: [/**] }\n    from: { users: { roles: [BANNED] } }\n  - name: health\n    to: { paths: [/healthz] }\n    from: anyone\n",
    );
    let services = (rules - 2) / 3;
    for i in 0..services {
        text.push_str(&format!(
            "  - name: svc{i}-read\n    to: {{ paths: [/svc{i}, /svc{i}/**], methods: [GET] }}\n    from: {{ users: {{ roles: [USER, ADMIN] }} }}\n"
        ));
        text.push_str(&format!(
            "  - name: svc{i}-write\n    to: {{ paths: [/svc{i}/**], methods: [POST, PUT, DELETE] }}\n    from: {{ users: {{ roles: [ADMIN] }} }}\n"
        ));
        text.push_str(&format!(
            "  - name: svc{i}-own\n    to: {{ paths: [\"/svc{i}/users/{{user_id}}/settings\"] }}\n    from: {{ users: {{}} }}\n    when: params.user_id == user.id\n"
        ));
    }
    Policy::parse("bench.yaml", &text, &LoadOptions::default()).expect("bench policy loads")
}

fn request(method: &str, path: &str) -> AuthzRequest {
    AuthzRequest::builder()
        .method(method)
        .host("api.example.com")
        .path(path)
        .header("authorization", "Bearer x")
        .build()
}

fn bench_decide(c: &mut Criterion) {
    let claims = serde_json::json!({"role": "USER"})
        .as_object()
        .cloned()
        .unwrap();
    let user = Principal::User(User::from_claims("clerk", "u42", claims));
    let mut group = c.benchmark_group("decide");
    for rules in [50, 500] {
        let policy = policy(rules);
        let last = (rules - 2) / 3 - 1;
        let cases = [
            (
                "allow-last-service",
                request("GET", &format!("/svc{last}/items/7")),
            ),
            ("deny-default", request("GET", "/nowhere/at/all")),
            (
                "cel-ownership",
                request("PUT", &format!("/svc{last}/users/u42/settings")),
            ),
        ];
        for (name, req) in &cases {
            let path = NormalizedPath::parse(req.path()).unwrap();
            let ctx = Context {
                request: req,
                path: &path,
                principal: &user,
            };
            group.bench_with_input(BenchmarkId::new(*name, rules), &ctx, |b, ctx| {
                b.iter(|| decide(black_box(&policy), black_box(ctx)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
