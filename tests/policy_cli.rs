//! `portcullis policy test` and `portcullis policy explain` as a user runs them:
//! the shipped quick-start cases pass; a wrong expectation fails with a readable
//! diff and exit 1; explain prints every rule and the decision.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap()
}

fn quickstart(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("mesh/quickstart")
        .join(file)
}

#[test]
fn the_shipped_quickstart_cases_pass() {
    let file = quickstart("policy_test.yaml");
    let out = portcullis(&["policy", "test", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("11 passed, 0 failed"), "{stdout}");
}

#[test]
fn a_wrong_expectation_fails_with_a_readable_diff() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(quickstart("policy.yaml"), dir.path().join("policy.yaml")).unwrap();
    let cases = "\
policy: policy.yaml
cases:
  - name: right
    request: { path: /healthz }
    expect: { decision: allow }
  - name: wrong on purpose
    request:
      path: /api/admin/users
      principal: { user: { sub: u1, claims: { role: USER } } }
    expect: { decision: allow, status: 200, rule: admin, headers: { x-user-id: u2 } }
";
    std::fs::write(dir.path().join("cases.yaml"), cases).unwrap();
    let out = portcullis(&[
        "policy",
        "test",
        dir.path().join("cases.yaml").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for want in [
        "ok    right",
        "FAIL  wrong on purpose",
        "decision: expected Allow, got Deny",
        "status: expected 200, got 403",
        "rule: expected \"admin\", got \"default\"",
        "header x-user-id: expected Some(\"u2\"), got None",
        "decided by: default (no rule allows this request)",
        "1 passed, 1 failed",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}

#[test]
fn explain_prints_every_rule_and_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let request = r#"{"method": "GET", "path": "/api/videos/../admin/x",
        "headers": {"x-user-role": "ADMIN"},
        "principal": {"user": {"sub": "demo-user", "claims": {"role": "USER"}}}}"#;
    std::fs::write(dir.path().join("request.json"), request).unwrap();
    let out = portcullis(&[
        "policy",
        "explain",
        "--request",
        dir.path().join("request.json").to_str().unwrap(),
        "--policy",
        quickstart("policy.yaml").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "allow  health: no match: the request is not in `to`",
        "allow  admin: no match: the principal is not in `from`",
        "deny   banned: no match: the principal is not in `from`",
        "decision: deny by default (principal: user): no rule allows this request",
        "answer: 403",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}

#[test]
fn a_broken_test_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cases.yaml"),
        "policy: p.yaml\ncases:\n  - name: x\n    requets: {}\n",
    )
    .unwrap();
    let out = portcullis(&[
        "policy",
        "test",
        dir.path().join("cases.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cases.yaml:4") && stderr.contains("unknown field `requets`"),
        "{stderr}"
    );
}

#[test]
fn explain_names_the_allowing_rules_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        "rules:\n  - name: videos-read\n    to: { paths: [/api/videos/**], methods: [GET] }\n    from: { users: { roles: [USER] } }\n    rate_limit: { per: user, rate: 20/s, burst: 40, scope: global }\n",
    )
    .unwrap();
    let request = r#"{"method": "GET", "path": "/api/videos/1",
        "principal": {"user": {"sub": "u1", "claims": {"role": "USER"}}}}"#;
    std::fs::write(dir.path().join("request.json"), request).unwrap();
    let out = portcullis(&[
        "policy",
        "explain",
        "--request",
        dir.path().join("request.json").to_str().unwrap(),
        "--policy",
        dir.path().join("policy.yaml").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("rate limit: 20/s per user, burst 40, global"),
        "{stdout}"
    );
}
