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

#[test]
fn east_west_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), "default: deny\nrules: []\n").unwrap();
    crate::ca::token::TokenSigner::load_or_create(&dir.path().join("tokens")).unwrap();
    let base = "\
issuers:
  - name: mesh
    kind: service
    issuer: spiffe://example.org
    jwks_file: tokens/jwks.json
    algorithms: [ES256]
    audiences: [spiffe://example.org]
federated_trust_domains: [partner.net]
mtls:
  identity_from: [source_principal, xfcc]
  xfcc_trusted_from: [spiffe://example.org/ns/istio-system/sa/istio-ingressgateway]
tokens: { key_dir: tokens, ttl: 2m, max_service_ttl: 30m }
headers:
  service: { x-service-name: service.name, x-caller-spiffe-id: service.spiffe_id }
  internal_token: true
policy: policy.yaml
";
    let config = Config::parse("portcullis.yaml", base, dir.path(), None).unwrap();
    assert_eq!(config.mtls.xfcc_trusted_from.len(), 1);
    assert_eq!(config.mtls.trust_domains.federated.len(), 1);
    let tokens = config.tokens.as_ref().unwrap();
    assert_eq!(tokens.ttl, std::time::Duration::from_secs(120));
    assert_eq!(tokens.issuer, "portcullis");
    assert!(config.headers.internal_token);
    assert_eq!(config.headers.service.len(), 2);

    for (text, at, what) in [
        (
            base.replace("[ES256]", "[HS256]")
                .replace("jwks_file: tokens/jwks.json", "secret_env: NOPE_NOT_SET"),
            "portcullis.yaml:6:",
            "JWT-SVIDs",
        ),
        (
            base.replace("    audiences: [spiffe://example.org]\n", ""),
            "portcullis.yaml:2:",
            "must name their audience",
        ),
        (
            base.replace(
                "tokens: { key_dir: tokens, ttl: 2m, max_service_ttl: 30m }\n",
                "",
            ),
            "portcullis.yaml:14:",
            "add `tokens:",
        ),
        (
            base.replace("key_dir: tokens,", "key_dir: missing,"),
            "portcullis.yaml:12:",
            "portcullis token jwks",
        ),
        (
            base.replace("istio-system/sa/istio-ingressgateway", "x/")
                .replace("spiffe://example.org/ns/x/", "spiffe://evil.org/ns/x"),
            "portcullis.yaml:11:",
            "not in trust_domain",
        ),
        (
            base.replace("source_principal, xfcc", "source_principal, header"),
            "portcullis.yaml:10:",
            "use source_principal",
        ),
        (
            base.replace("service.spiffe_id", "service.owner"),
            "portcullis.yaml:14:",
            "not a service field",
        ),
    ] {
        let msg = Config::parse("portcullis.yaml", &text, dir.path(), None)
            .unwrap_err()
            .to_string();
        assert!(
            msg.lines().any(|l| l.starts_with(at) && l.contains(what)),
            "want {at} .. {what}, got {msg}"
        );
    }
}
