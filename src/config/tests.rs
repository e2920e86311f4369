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
        ("server:\n  grpc_listen: 'unix:'\n", "portcullis.yaml:2:", "unix: needs a path"),
        ("server:\n  grpc_listen: unix:/run/p.sock\n  tls: { cert: c.pem, key: k.pem }\npolicy: policy.yaml\n", "portcullis.yaml:3:", "a unix: socket is guarded by its file permissions"),
        ("server:\n  check_listen: 127.0.0.1:8181\npolicy: policy.yaml\n", "portcullis.yaml:2:", "check_listen must differ"),
        ("server:\n  trusted_proxies: [10.0.0.0/33]\npolicy: policy.yaml\n", "portcullis.yaml:2:", "is not an IP address or CIDR"),
        ("admin:\n  principals: [not-an-id]\npolicy: policy.yaml\n", "portcullis.yaml:2:", "admin.principals"),
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

/// Writes `policy.yaml` and a 32-byte HMAC secret `secret` into a new directory.
fn dir_with_policy_and_secret() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), "default: deny\nrules: []\n").unwrap();
    std::fs::write(
        dir.path().join("secret"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    dir
}

/// Asserts that `errors` are exactly these, in order: each starts with its
/// `file:line: key.path:` and mentions what to do.
fn assert_errors(errors: &[String], expect: &[(&str, &str)]) {
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (error, (at, what)) in errors.iter().zip(expect) {
        assert!(
            error.starts_with(at) && error.contains(what),
            "{error:?} should start with {at:?} and mention {what:?}"
        );
    }
}

#[test]
fn unknown_keys_and_bad_values_are_all_reported_together() {
    let dir = dir_with_policy_and_secret();
    let text = "\
server:
  grpc_listen: 127.0.0.1:9191
  bogus_key: 1            # unknown key
issuers:
  - name: app
    kind: user
    issuer: example-auth
    secret_file: secret
    algorithms: [HS256, XS999]   # bad algorithm
    leeway: 30 seconds           # bad duration
users:
  cache: { ttl: forever }         # bad cache ttl
policy: policy.yaml
";
    let err = Config::parse("portcullis.yaml", text, dir.path(), None).unwrap_err();
    assert_errors(
        &err.errors(),
        &[
            (
                "portcullis.yaml:3: server.bogus_key: ",
                "unknown field `bogus_key`: remove it, or use one of `grpc_listen`, `http_listen`",
            ),
            (
                "portcullis.yaml:9: issuers[0].algorithms[1]: ",
                "unsupported algorithm \"XS999\"",
            ),
            (
                "portcullis.yaml:10: issuers[0].leeway: ",
                "invalid duration \"30 seconds\": write a number and a unit",
            ),
            (
                "portcullis.yaml:12: users.cache.ttl: ",
                "invalid duration \"forever\"",
            ),
        ],
    );
}

#[test]
fn missing_required_keys_are_collected_errors() {
    let dir = dir_with_policy_and_secret();
    std::fs::write(dir.path().join("cert.pem"), "").unwrap();
    let text = "\
server:
  tls: { cert: cert.pem }
  surprise: 1
issuers:
  - issuer: example-auth
    secret_file: secret
    algorithms: [HS256]
  - name: other
    kind: robot
    issuer: other
    secret_file: secret
tokens: { ttl: 5m }
policy: policy.yaml
";
    let err = Config::parse("portcullis.yaml", text, dir.path(), None).unwrap_err();
    assert_errors(
        &err.errors(),
        &[
            ("portcullis.yaml:2: server.tls.key: ", "`key` is required"),
            (
                "portcullis.yaml:3: server.surprise: ",
                "unknown field `surprise`",
            ),
            // An item's missing keys are found at its first line.
            ("portcullis.yaml:5: issuers[0].kind: ", "`kind` is required"),
            (
                "portcullis.yaml:5: issuers[0].name: ",
                "every issuer needs a name",
            ),
            (
                "portcullis.yaml:8: issuers[1].algorithms: ",
                "list the algorithms",
            ),
            (
                "portcullis.yaml:9: issuers[1].kind: ",
                "unknown variant `robot`, expected `user` or `service`",
            ),
            (
                "portcullis.yaml:12: tokens.key_dir: ",
                "`key_dir` is required",
            ),
        ],
    );
}

#[test]
fn a_text_that_is_not_the_config_shape_stops_at_its_line() {
    let dir = dir_with_policy_and_secret();
    for (text, expect) in [
        (
            "server:\n  grpc_listen: [127.0.0.1\npolicy: policy.yaml\n",
            &[(
                "portcullis.yaml:3: ",
                "the rest of the config was not checked",
            )][..],
        ),
        (
            // What was read before the wrong-typed section is still reported.
            "server:\n  bogus: 1\nissuers: 5\n",
            &[
                ("portcullis.yaml:2: server.bogus: ", "unknown field `bogus`"),
                (
                    "portcullis.yaml:3: ",
                    "invalid type: integer `5`, expected a sequence",
                ),
            ][..],
        ),
    ] {
        let err = Config::parse("portcullis.yaml", text, dir.path(), None).unwrap_err();
        assert_errors(&err.errors(), expect);
    }
}

#[test]
fn listen_addresses_and_typed_values_name_what_to_write() {
    let dir = dir_with_policy_and_secret();
    let text = "\
server:
  grpc_listen: nowhere
  http_listen: 127.0.0.1:8181
users:
  cache: { max_entries: lots }
  on_unknown: maybe
headers:
  internal_token: sometimes
policy: policy.yaml
";
    let err = Config::parse("portcullis.yaml", text, dir.path(), None).unwrap_err();
    assert_errors(
        &err.errors(),
        &[
            (
                "portcullis.yaml:2: server.grpc_listen: ",
                "invalid socket address syntax: write IP:PORT or unix:PATH",
            ),
            (
                "portcullis.yaml:5: users.cache.max_entries: ",
                "expected u64",
            ),
            (
                "portcullis.yaml:6: users.on_unknown: ",
                "unknown variant `maybe`",
            ),
            (
                "portcullis.yaml:8: headers.internal_token: ",
                "expected a boolean",
            ),
        ],
    );
}

#[test]
fn shutdown_http_limits_and_token_cache_keys() {
    let dir = dir_with_policy_and_secret();
    let config = parse("policy: policy.yaml\n").unwrap();
    assert_eq!(config.drain_delay, DEFAULT_DRAIN_DELAY);
    assert_eq!(config.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
    assert_eq!(config.http_limits, HttpLimits::default());
    assert_eq!(config.token_cache, TokenCacheConfig::default());
    assert_eq!(
        (config.drain_delay, config.shutdown_timeout),
        (Duration::from_secs(5), Duration::from_secs(20))
    );
    assert_eq!(
        HttpLimits::default(),
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    );
    assert_eq!(
        TokenCacheConfig::default(),
        TokenCacheConfig {
            max_bytes: 32 * 1024 * 1024,
            max_token_bytes: 16 * 1024,
        }
    );

    let text = "\
server:
  drain_delay: 0s
  shutdown_timeout: 1m
  http:
    header_read_timeout: 2s
    idle_timeout: 90s
    max_connections: 10
token_cache:
  max_bytes: 1073741824
  max_token_bytes: 8KiB
policy: policy.yaml
";
    let config = Config::parse("portcullis.yaml", text, dir.path(), None).unwrap();
    assert_eq!(config.drain_delay, Duration::ZERO, "a drain delay may be 0");
    assert_eq!(config.shutdown_timeout, Duration::from_secs(60));
    assert_eq!(
        config.http_limits,
        HttpLimits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(90),
            max_connections: 10,
        }
    );
    assert_eq!(
        config.token_cache,
        TokenCacheConfig {
            max_bytes: 1 << 30,
            max_token_bytes: 8 << 10,
        }
    );

    let text = "\
server:
  drain_delay: soon
  shutdown_timeout: 0s
  http:
    header_read_timeout: 0ms
    idle_timeout: 0s
    max_connections: 0
token_cache:
  max_bytes: 512KiB
  max_token_bytes: 100
policy: policy.yaml
";
    let err = Config::parse("portcullis.yaml", text, dir.path(), None).unwrap_err();
    assert_errors(
        &err.errors(),
        &[
            (
                "portcullis.yaml:2: server.drain_delay: ",
                "invalid duration \"soon\"",
            ),
            (
                "portcullis.yaml:3: server.shutdown_timeout: ",
                "must be longer than zero (the default is 20s)",
            ),
            (
                "portcullis.yaml:5: server.http.header_read_timeout: ",
                "must be longer than zero (the default is 10s)",
            ),
            (
                "portcullis.yaml:6: server.http.idle_timeout: ",
                "must be longer than zero",
            ),
            (
                "portcullis.yaml:7: server.http.max_connections: ",
                "must be at least 1 (the default is 4096)",
            ),
            (
                "portcullis.yaml:9: token_cache.max_bytes: ",
                "512KiB is too small: at least 1MiB (the default is 32MiB)",
            ),
            (
                "portcullis.yaml:10: token_cache.max_token_bytes: ",
                "100 bytes is too small: at least 1KiB (the default is 16KiB)",
            ),
        ],
    );

    let err = Config::parse(
        "portcullis.yaml",
        "server:\n  http: { max_connections: -1 }\ntoken_cache: { max_bytes: 32MB }\npolicy: policy.yaml\n",
        dir.path(),
        None,
    )
    .unwrap_err();
    assert_errors(
        &err.errors(),
        &[
            (
                "portcullis.yaml:2: server.http.max_connections: ",
                "expected usize",
            ),
            (
                "portcullis.yaml:3: token_cache.max_bytes: ",
                "KiB, MiB or GiB",
            ),
        ],
    );
}

#[test]
fn issuers_compare_equal_only_when_their_section_and_keys_are_the_same() {
    let dir = dir_with_policy_and_secret();
    crate::ca::token::TokenSigner::load_or_create(&dir.path().join("tokens")).unwrap();
    let text = "\
issuers:
  - name: app
    kind: user
    issuer: example-auth
    secret_file: secret
    algorithms: [HS256]
  - name: mesh
    kind: service
    issuer: spiffe://example.org
    jwks_file: tokens/jwks.json
    algorithms: [ES256]
    audiences: [spiffe://example.org]
  - name: clerk
    kind: user
    issuer: https://clerk.example.com
    jwks_uri: https://clerk.example.com/.well-known/jwks.json
    algorithms: [RS256]
policy: policy.yaml
";
    let load = |text: &str| {
        Config::parse("portcullis.yaml", text, dir.path(), None)
            .unwrap()
            .issuers
    };
    let first = load(text);
    assert_eq!(first, load(text), "the same files load to equal issuers");
    assert_eq!(first[1].keys, load(text)[1].keys);

    std::fs::write(
        dir.path().join("secret"),
        "fedcba9876543210fedcba9876543210\n",
    )
    .unwrap();
    let changed = load(text);
    assert_ne!(first[0], changed[0], "a changed secret file");
    assert_eq!(first[1..], changed[1..], "the other issuers did not change");

    let refresh = load(&text.replace(
        "    algorithms: [RS256]\n",
        "    algorithms: [RS256]\n    jwks_refresh: 5m\n",
    ));
    assert_ne!(changed[2], refresh[2], "a changed JWKS timing");
    let leeway = load(&text.replace(
        "    algorithms: [RS256]\n",
        "    algorithms: [RS256]\n    leeway: 1m\n",
    ));
    assert_ne!(changed[2], leeway[2], "a changed claim rule");

    let debug = format!("{:?}", changed[0].keys);
    assert!(
        debug.starts_with("Static {") && !debug.contains("fingerprint"),
        "{debug}"
    );
}

#[test]
fn the_redis_password_comes_from_the_environment_and_is_never_printed() {
    let with = |state: &str| {
        parse(&format!(
            "server: {{ grpc_listen: 127.0.0.1:0, http_listen: 127.0.0.1:1 }}\nstate: {state}\npolicy: policy.yaml\n"
        ))
    };
    let errors = with("{ redis: 'redis://:hunter2@127.0.0.1:6379' }")
        .unwrap_err()
        .errors();
    assert!(
        errors.iter().any(|e| e.contains("holds a password")),
        "{errors:?}"
    );
    let errors = with("{ redis: 'rediss://127.0.0.1:6379' }")
        .unwrap_err()
        .errors();
    assert!(errors.iter().any(|e| e.contains("rediss://")), "{errors:?}");
    let errors = with("{ redis: 'redis://127.0.0.1:6379', password_env: PORTCULLIS_TEST_UNSET_1 }")
        .unwrap_err()
        .errors();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("PORTCULLIS_TEST_UNSET_1 is not set")),
        "{errors:?}"
    );

    std::env::set_var("PORTCULLIS_TEST_REDIS_PASSWORD", "s3cret pass");
    let config =
        with("{ redis: 'redis://127.0.0.1:6379/0', password_env: PORTCULLIS_TEST_REDIS_PASSWORD }")
            .unwrap();
    let url = config.redis.as_deref().unwrap();
    assert_eq!(
        redis::Client::open(url)
            .unwrap()
            .get_connection_info()
            .redis
            .password
            .as_deref(),
        Some("s3cret pass"),
        "the client gets the password"
    );
    let printed = format!("{config:?}");
    assert!(!printed.contains("s3cret"), "never printed: {printed}");
}
