//! Writes the seed corpora of the fuzz targets, `fuzz/corpus/<target>/`, from
//! real inputs: Check requests encoded by `envoy-types` as Envoy sends them,
//! tokens and keys from Wycheproof (`tests/data/wycheproof`) and minted
//! with `jsonwebtoken`, the XFCC values and paths of the unit tests, the
//! quick-start policy and the configs of the tests. Run it again after changing
//! a seed: `cd fuzz && cargo run --example seed_corpus`.

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, HeaderMap, HeaderValue, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request, TlsSession,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use jsonwebtoken::{encode, EncodingKey, Header};
use prost::Message;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = fuzz.join("corpus");
    let repo = fuzz.join("..");
    write_all(&corpus.join("check_decode"), check_requests());
    write_all(&corpus.join("jws"), tokens(&repo));
    write_all(&corpus.join("xfcc"), texts(XFCC));
    write_all(&corpus.join("path"), texts(PATHS));
    write_all(&corpus.join("policy_load"), policies(&repo));
    write_all(&corpus.join("config_load"), texts(CONFIGS));
}

/// Replaces the seeds in `dir` with `seeds`.
fn write_all(dir: &Path, seeds: Vec<(String, Vec<u8>)>) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
}

fn texts(texts: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    texts
        .iter()
        .map(|(name, text)| ((*name).to_owned(), text.as_bytes().to_vec()))
        .collect()
}

fn socket(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn http(method: &str, path: &str, headers: &[(&str, &str)]) -> HttpRequest {
    let mut all = map(&[
        (":authority", "api.example.com"),
        (":method", method),
        (":path", path),
        (":scheme", "https"),
        ("x-request-id", "6f1c8a52-3c8e-4b8f-9b1e-5d2f4e0e7c11"),
    ]);
    all.extend(map(headers));
    HttpRequest {
        id: "12345".into(),
        method: method.into(),
        headers: all,
        path: path.into(),
        host: "api.example.com".into(),
        scheme: "https".into(),
        protocol: "HTTP/1.1".into(),
        ..Default::default()
    }
}

fn check(source: Option<Peer>, http: HttpRequest, tls: bool) -> Vec<u8> {
    CheckRequest {
        attributes: Some(AttributeContext {
            source,
            destination: Some(Peer {
                address: socket("10.0.0.2", 8080),
                ..Default::default()
            }),
            request: Some(Request {
                time: None,
                http: Some(http),
            }),
            tls_session: tls.then(|| TlsSession {
                sni: "api.example.com".into(),
            }),
            ..Default::default()
        }),
    }
    .encode_to_vec()
}

fn client(principal: &str, certificate: &str) -> Option<Peer> {
    Some(Peer {
        address: socket("10.0.0.1", 51234),
        principal: principal.into(),
        certificate: certificate.into(),
        ..Default::default()
    })
}

const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1c2VyXzEifQ.c2ln";

fn check_requests() -> Vec<(String, Vec<u8>)> {
    let videos = "spiffe://example.org/ns/default/sa/videos";
    let mut raw = http("POST", "/api/webhook/clerk", &[]);
    raw.headers.clear();
    raw.header_map = Some(HeaderMap {
        headers: vec![
            HeaderValue {
                key: ":path".into(),
                raw_value: b"/api/webhook/clerk".to_vec(),
                ..Default::default()
            },
            HeaderValue {
                key: "cookie".into(),
                raw_value: b"a=1".to_vec(),
                ..Default::default()
            },
            HeaderValue {
                key: "Cookie".into(),
                value: "__session=tok".into(),
                ..Default::default()
            },
            HeaderValue {
                key: "svix-signature".into(),
                raw_value: b"v1,c2ln".to_vec(),
                ..Default::default()
            },
        ],
    });
    raw.raw_body = br#"{"type":"user.updated","data":{"id":"user_1"}}"#.to_vec();
    let mut body = http(
        "POST",
        "/api/videos",
        &[("content-type", "application/json")],
    );
    body.body = r#"{"title":"caf\u00e9"}"#.into();
    let mut extensions = http("GET", "/public", &[]);
    extensions.query = "x=1".into();
    let with_extensions = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(extensions),
            }),
            context_extensions: map(&[("virtual_host", "api")]),
            ..Default::default()
        }),
    }
    .encode_to_vec();
    let bearer = format!("Bearer {TOKEN}");
    let cookie = format!("__session={TOKEN}");
    vec![
        ("empty".into(), Vec::new()),
        ("health".into(), check(None, http("GET", "/healthz", &[]), false)),
        (
            "bearer".into(),
            check(
                None,
                http("GET", "/api/videos/7?x=1", &[("authorization", &bearer)]),
                false,
            ),
        ),
        (
            "cookie".into(),
            check(None, http("GET", "/api/me", &[("cookie", &cookie)]), true),
        ),
        (
            "path-tricks".into(),
            check(None, http("GET", "/api/%2e%2e//admin/./x", &[]), false),
        ),
        (
            "east-west".into(),
            check(
                client(videos, "-----BEGIN%20CERTIFICATE-----%0AMIIB%0A-----END%20CERTIFICATE-----%0A"),
                http(
                    "GET",
                    "/internal/channels/1",
                    &[(
                        "x-forwarded-client-cert",
                        "By=spiffe://example.org/ns/default/sa/channels;URI=spiffe://example.org/ns/default/sa/videos",
                    )],
                ),
                true,
            ),
        ),
        ("raw-headers".into(), check(None, raw, false)),
        ("body".into(), check(client("", ""), body, false)),
        ("extensions".into(), with_extensions),
        // Hand-written edge cases of the reader's own tests.
        ("group".into(), vec![0x0b]),
        // A `headers` map entry with a field 3, which only `HeaderValue` has:
        // prost skips it, the reader reads it as `raw_value` (see the oracle).
        (
            "map-entry-field-3".into(),
            vec![
                0x0a, 0x0f, 0x22, 0x0d, 0x12, 0x0b, 0x1a, 0x09, 0x0a, 0x01, b'a', 0x12, 0x01,
                b'v', 0x1a, 0x01, b'w',
            ],
        ),
        (
            "map-entry-field-3-varint".into(),
            vec![
                0x0a, 0x0e, 0x22, 0x0c, 0x12, 0x0a, 0x1a, 0x08, 0x0a, 0x01, b'a', 0x12, 0x01,
                b'v', 0x18, 0x01,
            ],
        ),
        ("varint-where-message".into(), vec![0x08, 0x01]),
        (
            "skipped-numbers".into(),
            vec![0x10, 0x01, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0x25, 0, 0, 0, 0],
        ),
    ]
}

fn tokens(repo: &Path) -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let path = repo.join("tests/data/wycheproof/json_web_signature_test.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let vectors: Value = serde_json::from_str(&text).expect("the vectors are JSON");
    for (i, group) in vectors["testGroups"]
        .as_array()
        .expect("testGroups")
        .iter()
        .enumerate()
    {
        let tests = group["tests"].as_array().expect("tests");
        let first = |result: &str| tests.iter().find(|t| t["result"] == result);
        let public = group.get("public").or_else(|| group.get("private"));
        if let Some(valid) = first("valid").and_then(|t| t["jws"].as_str()) {
            seeds.push((format!("wycheproof-{i}-valid"), valid.as_bytes().to_vec()));
            if let Some(key) = public {
                let jwks = json!({ "keys": [key] }).to_string();
                seeds.push((
                    format!("wycheproof-{i}-token-and-keys"),
                    format!("{valid}\n{jwks}").into_bytes(),
                ));
            }
        }
        if let Some(invalid) = first("invalid").and_then(|t| t["jws"].as_str()) {
            seeds.push((
                format!("wycheproof-{i}-invalid"),
                invalid.as_bytes().to_vec(),
            ));
        }
    }
    // Clerk-shaped session tokens and a service token, with their keys.
    let secret = b"a-32-byte-hmac-secret-for-seeds!";
    let oct = json!({ "keys": [{ "kty": "oct", "kid": "hs", "alg": "HS256",
        "k": "YS0zMi1ieXRlLWhtYWMtc2VjcmV0LWZvci1zZWVkcyE" }] });
    let claims = [
        json!({ "iss": "https://clerk.example.test", "sub": "user_1",
            "azp": "https://app.example.test", "sid": "sess_1", "role": "ADMIN",
            "iat": 1_799_999_990u64, "nbf": 1_799_999_990u64, "exp": 1_800_000_060u64 }),
        json!({ "iss": "spiffe://example.org", "sub": "spiffe://example.org/ns/default/sa/videos",
            "aud": ["spiffe://example.org", "https://api.example.test"],
            "iat": 1_799_999_990.5, "exp": 1_800_000_060u64 }),
        json!({ "iss": "https://clerk.example.test", "sub": "", "exp": null, "aud": "x" }),
    ];
    for (i, claims) in claims.iter().enumerate() {
        let header = Header {
            kid: Some("hs".into()),
            ..Header::new(jsonwebtoken::Algorithm::HS256)
        };
        let token =
            encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign a seed token");
        seeds.push((format!("claims-{i}"), token.clone().into_bytes()));
        seeds.push((
            format!("claims-{i}-token-and-keys"),
            format!("{token}\n{oct}").into_bytes(),
        ));
    }
    seeds.push(("jwks-oct".into(), oct.to_string().into_bytes()));
    seeds
}

fn policies(repo: &Path) -> Vec<(String, Vec<u8>)> {
    let quickstart = repo.join("mesh/quickstart/policy.yaml");
    let mut seeds = texts(POLICIES);
    seeds.push((
        "quickstart".into(),
        std::fs::read(&quickstart)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", quickstart.display())),
    ));
    seeds
}

/// From the XFCC parser's tests and the east-west end-to-end tests.
const XFCC: &[(&str, &str)] = &[
    ("envoy-docs", r#"By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com"#),
    ("two-elements", "By=spiffe://example.org/ns/istio-system/sa/gw;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;URI=spiffe://example.org/ns/default/sa/videos;DNS=a.example;DNS=b.example,By=spiffe://example.org/ns/default/sa/channels;URI=spiffe://example.org/ns/istio-system/sa/gw"),
    ("quoted", r#"subject="CN=a,O=b;c=\"d\"";uri=spiffe://example.org/x, URI="spiffe://example.org/y""#),
    ("cert-chain", "Cert=\"-----BEGIN%20CERTIFICATE-----%0AMIIB\";Chain=-----BEGIN%20CERTIFICATE-----"),
    ("empty-value", "URI="),
    ("forged", "By=spiffe://example.org/ns/default/sa/channels;URI=spiffe://example.org/ns/default/sa/videos"),
    ("unterminated", r#"Subject="CN=a\"#),
    ("after-quote", r#"Subject="a"b;URI=x"#),
    ("duplicate", "Hash=a;hash=b"),
    ("empty-element", "URI=a,,URI=b"),
];

/// From the path normalization tests.
const PATHS: &[(&str, &str)] = &[
    ("root", "/"),
    ("plain", "/api/videos/"),
    ("query", "/api/videos?x=/admin#frag"),
    ("slashes", "//api///admin//"),
    ("dots", "/api/./videos/../admin"),
    ("encoded-dots", "/api/videos/%2e%2e/%2E%2E/api/admin"),
    ("above-root", "/../../etc/passwd"),
    ("utf8", "/caf%C3%A9/a%20b"),
    ("double-encoded", "/api/%252e%252e/admin"),
    ("grpc", "/pkg.Service/Method"),
    ("encoded-slash", "/api/videos/..%2fadmin"),
    ("backslash", "/api\\..\\admin"),
    ("bad-percent", "/api/%zz/%2"),
    ("nul", "/api/%00"),
    ("not-utf8", "/api/%ff"),
    ("relative", "api/videos"),
];

/// From the policy tests: every `to`/`from`/`when` form.
const POLICIES: &[(&str, &str)] = &[
    ("users-and-conditions", "default: deny\nrules:\n  - name: videos-read\n    to: { hosts: [api.example.com], paths: [/api/videos, /api/videos/**], methods: [GET] }\n    from: { users: { roles: [USER, ADMIN] } }\n  - name: own-modules\n    to: { paths: [\"/user_modules/user/{user_id}\"] }\n    from: { users: {} }\n    when: params.user_id == user.id\n  - name: admin\n    to: [{ paths: [/api/admin/**] }, { paths: [/ops/**], methods: [POST] }]\n    from: { users: { roles: [ADMIN] } }\n  - name: one-user\n    to: { paths: [/api/special] }\n    from: [{ users: { ids: [user_7] } }, { users: { issuers: [app] } }]\n  - name: reports\n    to: { paths: [/api/reports/**] }\n    from: { users: { permissions: [reports:read] } }\n"),
    ("services", "default: deny\nrules:\n  - name: channels-internal\n    to: { paths: [/internal/channels/**] }\n    from: { services: [spiffe://example.org/ns/default/sa/videos] }\n    forward_user: true\n  - name: any-in-prod\n    to: { paths: [/internal/status] }\n    from: [{ services: [spiffe://example.org/ns/*/sa/*], namespaces: [prod] }]\n  - name: mtls-only\n    to: { paths: [/internal/secure] }\n    from: { services: [spiffe://example.org/ns/default/sa/*], mtls: required }\n  - name: partner\n    from: { services: [spiffe://partner.example/ns/a/sa/b] }\n"),
    ("actions", "default: allow\nrules:\n  - name: clerk-webhook\n    to: { paths: [/api/webhook/clerk], methods: [POST] }\n    from: { webhooks: [clerk] }\n  - name: beta-header\n    to: { paths: [/api/beta/**] }\n    from: authenticated\n    when: request.headers['x-beta'] == 'on' && request.method == 'GET'\n  - name: query-flag\n    to: { paths: [/api/search] }\n    from: anyone\n    when: request.query.q != ''\n  - name: banned\n    action: deny\n    to: { paths: [/**] }\n    when: user.role == 'BANNED'\n  - name: watch-exports\n    action: audit\n    to: { paths: [/api/export] }\n  - name: trial-block\n    action: deny\n    dry_run: true\n    to: { paths: [/api/videos/trial] }\n"),
    ("invalid", "default: deny\nrules:\n  - name: a\n    when: params.user_id == user.id\n  - name: a\n    when: usr.role == 'X'\n    from: { services: [spiffe://other.org/ns/a/sa/b] }\n  - name: c\n    when: user.role ==\n    from: { mtls: maybe }\n"),
    ("flow", "{default: deny, rules: [{name: x, to: {paths: [/a]}, from: anyone}]}"),
];

/// From the config tests and the end-to-end harness (`tests/support/portcullis.rs`).
const CONFIGS: &[(&str, &str)] = &[
    ("north-south", "\
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
"),
    ("dev", "\
server:
  grpc_listen: 127.0.0.1:9191
  http_listen: 127.0.0.1:8181
issuers:
  - name: dev
    kind: user
    issuer: portcullis-dev
    secret_file: secret
    algorithms: [HS256]
    leeway: 30s
    credentials: [{ header: authorization }, { cookie: __session }]
users:
  source: sqlite://portcullis-dev.db
  query: SELECT id, role, channel_id FROM users WHERE clerk_id = $1
  cache: { ttl: 5m, negative_ttl: 30s, max_entries: 100000 }
  on_unknown: deny
headers:
  strip_prefixes: [x-user-, x-service-, x-portcullis-]
  user: { x-user-id: user.id, x-user-role: user.role, x-user-channel-id: user.channel_id, x-user-clerk-id: token.sub }
"),
    ("east-west", "\
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
"),
    ("e2e-harness", "\
server:
  grpc_listen: 127.0.0.1:0
  http_listen: 127.0.0.1:0
  tls:
    cert: certs/server.pem
    key: certs/server.key
    client_ca: certs/ca.pem
trust_domain: example.org
issuers:
  - name: clerk
    kind: user
    issuer: https://clerk.example.test
    jwks_uri: http://127.0.0.1:1/.well-known/jwks.json
    algorithms: [RS256]
    audiences: []
    authorized_parties: [https://app.example.test]
    leeway: 5s
    credentials: [{ header: authorization }, { cookie: __session }]
  - name: app
    kind: user
    issuer: example-auth
    secret_env: PORTCULLIS_FUZZ_UNSET_SECRET
    algorithms: [HS256]
users:
  source: claims
headers:
  strip_prefixes: [x-user-, x-service-, x-portcullis-]
  user: { x-user-id: user.id }
  request_id: x-request-id
  internal_token: false
webhooks:
  clerk: { secret_file: whsec }
state:
  redis: redis://127.0.0.1:6379
policy: policy.yaml
"),
    ("errors", "\
issuers:
  - name: clerk
    kind: user
    issuer: https://clerk.example.com
    jwks_uri: http://clerk.example.com/jwks.json
    algorithms: [RS256]
  - name: confused
    kind: user
    issuer: other
    jwks_uri: https://x/jwks.json
    algorithms: [HS256]
headers:
  user: { X-User-Id: user.id, x-user-role: role }
policy: policy.yaml
"),
];
