//! Config validation: every error at once, with file:line and what to do.

use super::*;

fn parse(text: &str) -> Result<Config, Error> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), "default: deny\nrules: []\n").unwrap();
    Config::parse("portcullis.yaml", text, dir.path(), None)
}

#[test]
fn a_valid_config() {
    let config = parse(
        "\
server:
  grpc_listen: 127.0.0.1:19191
  http_listen: 127.0.0.1:18181
issuers:
  - name: clerk
    kind: user
    issuer: https://clerk.example.com
    jwks_uri: https://clerk.example.com/.well-known/jwks.json
    algorithms: [RS256]
    authorized_parties: [https://app.example.com]
    leeway: 30s
    credentials: [{ header: authorization }, { cookie: __session }]
users:
  source: claims
headers:
  user: { x-user-id: user.id, x-user-role: user.role, x-user-clerk-id: token.sub }
policy: policy.yaml
",
    )
    .unwrap();
    assert_eq!(config.issuers.len(), 1);
    let issuer = &config.issuers[0];
    assert_eq!(issuer.rules.leeway, std::time::Duration::from_secs(30));
    assert_eq!(
        issuer.credentials,
        vec![
            Credential::Header {
                name: "authorization".into(),
                prefix: Some("Bearer ".into())
            },
            Credential::Cookie {
                name: "__session".into()
            },
        ]
    );
    assert!(config
        .headers
        .user
        .contains(&("x-user-clerk-id".into(), ContextField::Token("sub".into()))));
}

#[test]
fn every_error_is_reported_with_its_line() {
    let err = parse(
        "\
issuers:
  - name: clerk
    kind: user
    issuer: https://clerk.example.com
    jwks_uri: http://clerk.example.com/jwks.json
    algorithms: [RS256]
  - name: app
    kind: user
    issuer: example-auth
    secret_env: PORTCULLIS_TEST_UNSET_SECRET
    algorithms: [HS256]
  - name: confused
    kind: user
    issuer: other
    jwks_uri: https://x/jwks.json
    algorithms: [HS256]
headers:
  user: { X-User-Id: user.id, x-user-role: role }
policy: policy.yaml
",
    )
    .unwrap_err();
    let errors = err.errors();
    let expect = [
        ("portcullis.yaml:5:", "https"),
        ("portcullis.yaml:10:", "PORTCULLIS_TEST_UNSET_SECRET"),
        ("portcullis.yaml:16:", "algorithm-confusion"),
        ("portcullis.yaml:18:", "lower-case header name"),
        ("portcullis.yaml:18:", "user.<field>"),
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (error, (at, what)) in errors.iter().zip(expect) {
        assert!(
            error.starts_with(at) && error.contains(what),
            "{error} should start with {at} and mention {what}"
        );
    }
}

#[test]
fn unknown_keys_and_bad_values_name_the_line() {
    let cases = [
        ("server:\n  grpc_listen: 127.0.0.1:1\n  bogus: 1\npolicy: policy.yaml\n", "portcullis.yaml:3:", "unknown field `bogus`"),
        ("issuers:\n  - name: a\n    kind: user\n    issuer: i\n    secret_env: X\n    algorithms: [none]\npolicy: policy.yaml\n", "portcullis.yaml:6:", "unsupported algorithm"),
        ("issuers:\n  - name: a\n    kind: robot\n", "portcullis.yaml:3:", "unknown variant `robot`"),
        ("issuers:\n  - name: a\n    kind: user\n    issuer: i\n    secret_env: X\n    algorithms: [HS256]\n    leeway: 30 seconds\npolicy: policy.yaml\n", "portcullis.yaml:7:", "invalid duration"),
        ("server:\n  grpc_listen: nowhere\n", "portcullis.yaml:2:", "invalid socket address"),
        ("users:\n  source: sqlite://users.db\npolicy: policy.yaml\n", "portcullis.yaml:2:", "needs `users.query`"),
        ("trust_domain: example.org\n", "portcullis.yaml", "`policy:` is required"),
    ];
    for (text, at, what) in cases {
        let msg = parse(text).unwrap_err().to_string();
        assert!(
            msg.lines().any(|l| l.starts_with(at) && l.contains(what)),
            "for {text:?}: want {at} .. {what}, got {msg}"
        );
    }
}

#[test]
fn policy_errors_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        "rules:\n  - name: x\n    to: { paths: [nope] }\n",
    )
    .unwrap();
    let err = Config::parse("c.yaml", "policy: policy.yaml\n", dir.path(), None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("policy.yaml:3:") && msg.contains("must start with '/'"),
        "{msg}"
    );
}

#[test]
fn embedded_dev_defaults_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let setup = dev::setup(dir.path()).unwrap();
    assert_eq!(setup.tokens.len(), 2);
    assert!(setup.config.policy.rules().len() >= 4);
    let again = dev::setup(dir.path()).unwrap();
    assert_eq!(
        setup.secret, again.secret,
        "the dev secret survives restarts"
    );
    let env = std::fs::read_to_string(dir.path().join("tokens.env")).unwrap();
    assert!(env.contains("USER_TOKEN=") && env.contains("ADMIN_TOKEN="));
}
