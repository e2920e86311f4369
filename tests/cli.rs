//! The command line as a user meets it: `config check` verdicts and exit codes,
//! `serve` refusing a broken config, usage errors, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn portcullis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const GOOD_POLICY: &str =
    "default: deny\nrules:\n  - name: health\n    to: { paths: [/healthz] }\n    from: anyone\n";

#[test]
fn config_check_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "policy.yaml", GOOD_POLICY);
    write(dir.path(), "secret", "0123456789abcdef0123456789abcdef");
    write(
        dir.path(),
        "portcullis.yaml",
        "issuers:\n  - name: app\n    kind: user\n    issuer: example-auth\n    secret_file: secret\n    algorithms: [HS256]\npolicy: policy.yaml\n",
    );
    let out = portcullis()
        .args(["config", "check", "--config"])
        .arg(dir.path().join("portcullis.yaml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok (1 issuer(s), 1 policy rule(s))"),
        "{stdout}"
    );
}

#[test]
fn config_check_prints_every_error_with_its_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "policy.yaml",
        "rules:\n  - name: a\n    to: { paths: [no-slash] }\n  - name: a\n",
    );
    write(
        dir.path(),
        "portcullis.yaml",
        "issuers:\n  - name: clerk\n    kind: user\n    issuer: https://c\n    jwks_uri: http://clerk.example.com/jwks\n    algorithms: [RS256]\npolicy: policy.yaml\n",
    );
    let out = portcullis()
        .args(["config", "check", "--config"])
        .arg(dir.path().join("portcullis.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("portcullis.yaml:5: issuers[0].jwks_uri"),
        "{stderr}"
    );
    assert!(stderr.contains("policy.yaml:3:"), "{stderr}");
    assert!(
        stderr.contains("policy.yaml:4:") && stderr.contains("duplicate"),
        "{stderr}"
    );
    assert!(stderr.contains("3 error(s)"), "{stderr}");
}

#[test]
fn config_check_prints_unknown_keys_and_bad_values_together() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "policy.yaml", GOOD_POLICY);
    write(
        dir.path(),
        "portcullis.yaml",
        "\
server:
  grpc_listen: 127.0.0.1:9191
  bogus_key: 1            # unknown key
issuers:
  - name: app
    kind: user
    issuer: example-auth
    secret_env: APP_SECRET
    algorithms: [HS256, XS999]   # bad algorithm
    leeway: 30 seconds           # bad duration
users:
  cache: { ttl: forever }         # bad cache ttl
policy: policy.yaml
",
    );
    let out = portcullis()
        .args(["config", "check", "--config"])
        .arg(dir.path().join("portcullis.yaml"))
        .env("APP_SECRET", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (at, what) in [
        (
            "portcullis.yaml:3: server.bogus_key:",
            "unknown field `bogus_key`",
        ),
        ("portcullis.yaml:9: issuers[0].algorithms[1]:", "XS999"),
        ("portcullis.yaml:10: issuers[0].leeway:", "30 seconds"),
        ("portcullis.yaml:12: users.cache.ttl:", "forever"),
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(at) && l.contains(what)),
            "want {at} .. {what} in {stderr}"
        );
    }
    assert!(stderr.contains("4 error(s)"), "{stderr}");
}

#[test]
fn serve_refuses_a_broken_config_and_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "portcullis.yaml", "server:\n  grpc_listen: 127.0.0.1:0\n  http_listen: 127.0.0.1:0\n  surprise: true\npolicy: nope.yaml\n");
    let out = portcullis()
        .args(["serve", "--config"])
        .arg(dir.path().join("portcullis.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("portcullis.yaml:4:") && stderr.contains("unknown field `surprise`"),
        "{stderr}"
    );
    assert!(stderr.contains("did not start"), "{stderr}");

    let out = portcullis()
        .args(["serve", "--config"])
        .arg(dir.path().join("absent.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
}

#[test]
fn usage_errors_exit_2() {
    let out = portcullis().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = portcullis().args(["serve", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[cfg(unix)]
#[test]
fn serve_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "policy.yaml", GOOD_POLICY);
    write(
        dir.path(),
        "portcullis.yaml",
        "server:\n  grpc_listen: 127.0.0.1:0\n  http_listen: 127.0.0.1:0\npolicy: policy.yaml\n",
    );
    let mut child = portcullis()
        .args(["serve", "--config"])
        .arg(dir.path().join("portcullis.yaml"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the "serving" line, then SIGTERM.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = lines.next().expect("serve keeps running").unwrap();
        if line.contains("portcullis serving") {
            break;
        }
        assert!(Instant::now() < deadline, "never started");
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("portcullis stopped")),
        "{rest:?}"
    );
}
