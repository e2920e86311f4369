//! End to end, east-west under the same policy (issue 6), with real Envoys, real
//! mTLS and certificates from our own tool:
//!
//! ```text
//! test ──HTTP──► videos' sidecar (mesh/envoy/sidecar-videos.yaml)
//!                  │ mTLS with the videos SVID
//!                  ▼
//!                channels' sidecar (mesh/envoy/sidecar-channels.yaml) ──► EchoUpstream (the channels app)
//!                  │ ext_authz over mTLS, include_peer_certificate
//!                  ▼
//!                portcullis (server.tls with client_ca; TokenService on the same listener)
//! ```
//!
//! A `comments` sidecar is the videos template with the comments SVID. A plaintext
//! front proxy (mesh/envoy/front-proxy.yaml, told to forward any XFCC) with a
//! second portcullis proves that a forged XFCC names nobody, that service tokens
//! are checked in the JWT-SVID shape, and the token exchange. The internal token
//! is verified with `jsonwebtoken` directly against `/.well-known/jwks.json`.
//! Needs Envoy (`scripts/test`, or `ENVOY_BIN`).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::Method;
use portcullis::admin_pb::token_service_client::TokenServiceClient;
use portcullis::admin_pb::IssueServiceTokenRequest;
use serde_json::{json, Value};
use support::envoy::{render_template, SIDECAR_CHANNELS, SIDECAR_VIDEOS};
use support::pki::{portcullis_ok, tls_client, TestPki};
use support::{
    free_port, ClerkClaims, EchoUpstream, Envoy, JwksServer, Portcullis, PortcullisConfig,
    SigningKey,
};

const VIDEOS: &str = "spiffe://example.org/ns/default/sa/videos";
const COMMENTS: &str = "spiffe://example.org/ns/default/sa/comments";
const MESH: &str = "spiffe://example.org";

/// One policy for north-south and east-west.
const POLICY: &str = "\
default: deny
rules:
  - name: public
    to: { paths: [/public, /public/**] }
    from: anyone
  - name: videos-read
    to: { paths: [/api/videos, /api/videos/**], methods: [GET] }
    from: { users: { roles: [USER, ADMIN] } }
  - name: channels-internal
    to: { paths: [/internal/channels/**] }
    from: { services: [spiffe://example.org/ns/default/sa/videos] }
    forward_user: true
  - name: channels-stats
    to: { paths: [/internal/stats/**] }
    from: { services: [spiffe://example.org/ns/default/sa/videos] }
  - name: channels-mtls-only
    to: { paths: [/internal/mtls-only/**] }
    from: { services: [spiffe://example.org/ns/default/sa/videos], mtls: required }
";

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The mesh's CA with SVIDs for portcullis, channels, videos and comments, and
/// the token signing key (`certs/tokens`).
fn mesh_pki() -> TestPki {
    let pki = TestPki::new("example.org");
    pki.issue("portcullis", &["localhost"]);
    pki.issue("channels", &["localhost"]);
    pki.issue("videos", &[]);
    pki.issue("comments", &[]);
    portcullis_ok(&["token", "jwks", "--dir", pki.certs_str()]);
    pki
}

/// portcullis' config for this mesh: the Clerk issuer at `jwks`, service tokens
/// and its own tokens from `certs/tokens`, the shared [`POLICY`].
fn config(pki: &TestPki, jwks: &JwksServer, internal_token: bool) -> PortcullisConfig {
    let tokens = pki.certs().join("tokens");
    PortcullisConfig::user_traffic(jwks.uri())
        .with_policy(POLICY)
        .with_issuers(&format!(
            "  - name: mesh\n    kind: service\n    issuer: {MESH}\n    jwks_file: {jwks}\n    algorithms: [ES256]\n    audiences: [{MESH}]\n  - name: portcullis\n    kind: user\n    issuer: portcullis\n    jwks_file: {jwks}\n    algorithms: [ES256]\n",
            jwks = tokens.join("jwks.json").display()
        ))
        .with_yaml(&format!(
            "tokens:\n  key_dir: {}\n  ttl: 5m\n  max_service_ttl: 10m\n",
            tokens.display()
        ))
        .with_internal_token(internal_token)
}

/// portcullis with mTLS on its gRPC listener (what the sidecars and the token
/// service need).
async fn start_mtls_portcullis(pki: &TestPki, jwks: &JwksServer, internal: bool) -> Portcullis {
    let certs = pki.certs().join("portcullis");
    let config = config(pki, jwks, internal).with_tls(
        &certs.join("chain.pem"),
        &certs.join("key.pem"),
        Some(&pki.bundle()),
    );
    Portcullis::start(&config).await
}

/// The channels sidecar in front of `app`, asking `portcullis`.
async fn start_channels(pki: &TestPki, portcullis: SocketAddr, app: SocketAddr) -> Envoy {
    let listener = local(free_port());
    let admin = local(free_port());
    let yaml = render_template(
        "sidecar-channels.yaml",
        SIDECAR_CHANNELS,
        &[
            (addr("0.0.0.0:9443"), listener),
            (addr("127.0.0.1:8002"), app),
            (addr("127.0.0.1:9191"), portcullis),
            (addr("127.0.0.1:15010"), admin),
        ],
        &[],
        &pki.certs(),
    );
    Envoy::start_bootstrap(tempfile::tempdir().unwrap(), &yaml, listener, admin).await
}

/// The outbound sidecar of `service` (the videos template with its SVID)
/// towards the channels sidecar at `channels`.
async fn start_caller(pki: &TestPki, service: &str, channels: SocketAddr) -> Envoy {
    let listener = local(free_port());
    let admin = local(free_port());
    let own = format!("certs/{service}/");
    let yaml = render_template(
        "sidecar-videos.yaml",
        SIDECAR_VIDEOS,
        &[
            (addr("127.0.0.1:15001"), listener),
            (addr("127.0.0.1:9443"), channels),
            (addr("127.0.0.1:15000"), admin),
        ],
        &[("certs/videos/", own.as_str())],
        &pki.certs(),
    );
    Envoy::start_bootstrap(tempfile::tempdir().unwrap(), &yaml, listener, admin).await
}

/// The shipped front proxy (plaintext) in front of `upstream`, with
/// `forward_client_cert_details: ALWAYS_FORWARD_ONLY`: any XFCC a client sends
/// reaches portcullis, which must not believe it.
async fn start_forwarding_front_proxy(portcullis: SocketAddr, upstream: SocketAddr) -> Envoy {
    let addrs = support::envoy::FrontProxyAddrs {
        listener: local(free_port()),
        admin: local(free_port()),
        portcullis,
        upstream,
    };
    let needle = "stat_prefix: front\n";
    let yaml = support::envoy::front_proxy_yaml(&addrs);
    assert!(yaml.contains(needle));
    let yaml = yaml.replace(
        needle,
        "stat_prefix: front\n                forward_client_cert_details: ALWAYS_FORWARD_ONLY\n",
    );
    Envoy::start_bootstrap(
        tempfile::tempdir().unwrap(),
        &yaml,
        addrs.listener,
        addrs.admin,
    )
    .await
}

/// A token service client presenting the SVID in `certs/NAME`.
async fn token_service(
    pki: &TestPki,
    portcullis: SocketAddr,
    name: &str,
) -> TokenServiceClient<tonic::transport::Channel> {
    let bundle = std::fs::read_to_string(pki.bundle()).unwrap();
    let dir = pki.certs().join(name);
    let tls = tonic::transport::ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(tonic::transport::Certificate::from_pem(&bundle))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(dir.join("chain.pem")).unwrap(),
            std::fs::read(dir.join("key.pem")).unwrap(),
        ));
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{portcullis}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("mTLS to portcullis");
    TokenServiceClient::new(channel)
}

/// The (unverified) claims of a compact JWS.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Signs `claims` with the ES256 key in `tokens_dir` under `kid`.
fn sign_es256(tokens_dir: &Path, kid: &str, claims: &Value) -> String {
    let pem = std::fs::read(tokens_dir.join("signing-key.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn our_kid(pki: &TestPki) -> String {
    let jwks: Value =
        serde_json::from_slice(&std::fs::read(pki.certs().join("tokens/jwks.json")).unwrap())
            .unwrap();
    jwks["keys"][0]["kid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_reaches_channels_with_its_identity_and_the_users_context_comments_does_not() {
    support::envoy::envoy_bin();
    let pki = mesh_pki();
    let jwks = JwksServer::start(&[&SigningKey::generate(support::FIRST_KID)]).await;
    let app = EchoUpstream::start().await;
    let portcullis = start_mtls_portcullis(&pki, &jwks, false).await;
    let channels = start_channels(&pki, portcullis.grpc_addr(), app.addr()).await;
    let videos = start_caller(&pki, "videos", channels.addr()).await;
    let comments = start_caller(&pki, "comments", channels.addr()).await;

    // videos → channels under a forward_user rule: allowed; channels sees who
    // called and, passed on, the user videos acts for. What videos claims about
    // its own identity is overwritten.
    let response = videos
        .get("/internal/channels/1")
        .header("x-user-id", "user_42")
        .header("x-user-role", "USER")
        .header("x-caller-spiffe-id", COMMENTS)
        .send()
        .await;
    assert_eq!(response.status, 200, "{response}\n{}", portcullis.log());
    let seen = response.upstream().expect("answered by channels");
    assert_eq!(seen.header("x-caller-spiffe-id"), Some(VIDEOS));
    assert_eq!(seen.header("x-service-name"), Some("videos"));
    assert_eq!(seen.header("x-user-id"), Some("user_42"));
    assert_eq!(seen.header("x-user-role"), Some("USER"));
    // The channels sidecar's own account of the peer is kept.
    let xfcc = seen.header("x-forwarded-client-cert").unwrap_or_default();
    assert!(xfcc.contains(&format!("URI={VIDEOS}")), "{xfcc}");

    // A rule without forward_user: videos may call, but the user it names is
    // stripped like any client-sent header.
    let response = videos
        .get("/internal/stats/1")
        .header("x-user-id", "user_42")
        .header("x-user-role", "ADMIN")
        .send()
        .await;
    assert_eq!(response.status, 200, "{response}");
    let seen = response.upstream().unwrap();
    assert_eq!(seen.header("x-caller-spiffe-id"), Some(VIDEOS));
    assert_eq!(seen.header("x-user-id"), None);
    assert_eq!(seen.header("x-user-role"), None);

    // mTLS proves the caller, so `mtls: required` is satisfied.
    let response = videos.get("/internal/mtls-only/1").send().await;
    assert_eq!(response.status, 200, "{response}");

    // comments → the same path: a known workload the policy does not allow.
    let response = comments
        .get("/internal/channels/1")
        .header("x-user-id", "user_42")
        .send()
        .await;
    assert_eq!(response.status, 403, "{response}");
    assert_eq!(response.json()["error"], "forbidden");

    // videos' certificate with a service token naming comments: one request, one
    // caller — 401 and why.
    let comments_token = portcullis_ok(&[
        "token",
        "issue",
        "--service",
        "comments",
        "--dir",
        pki.certs_str(),
    ]);
    let comments_token = String::from_utf8(comments_token.stdout).unwrap();
    let response = videos
        .get("/internal/channels/1")
        .bearer(comments_token.trim())
        .send()
        .await;
    assert_eq!(response.status, 401, "{response}");
    assert!(response.json()["message"]
        .as_str()
        .unwrap()
        .contains("a request has one caller"));

    // Without a client certificate, or without TLS, channels cannot be reached.
    let no_cert = channels
        .get("/internal/channels/1")
        .over_tls(tls_client(&pki.bundle(), None))
        .try_send()
        .await;
    assert!(no_cert.is_err(), "no client certificate got {no_cert:?}");
    let plaintext = channels.get("/internal/channels/1").try_send().await;
    assert!(plaintext.is_err(), "plaintext got {plaintext:?}");
    assert_eq!(
        app.seen().len(),
        3,
        "only the allowed calls reached channels"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_service_issues_tokens_only_for_the_callers_own_identity() {
    let pki = mesh_pki();
    let jwks = JwksServer::start(&[&SigningKey::generate(support::FIRST_KID)]).await;
    let portcullis = start_mtls_portcullis(&pki, &jwks, false).await;

    let mut videos = token_service(&pki, portcullis.grpc_addr(), "videos").await;
    let issued = videos
        .issue_service_token(IssueServiceTokenRequest {
            audiences: vec![MESH.into()],
            ttl_seconds: 86_400,
            spiffe_id: String::new(),
        })
        .await
        .expect("a token for videos")
        .into_inner();
    assert_eq!(issued.spiffe_id, VIDEOS);
    assert_eq!(issued.expires_in_seconds, 600, "capped by max_service_ttl");
    let c = claims(&issued.token);
    assert_eq!(c["sub"], VIDEOS);
    assert_eq!(c["iss"], MESH);
    assert_eq!(c["aud"], json!([MESH]));
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 600);

    // Asking for another workload's token is refused.
    let refused = videos
        .issue_service_token(IssueServiceTokenRequest {
            audiences: vec![MESH.into()],
            ttl_seconds: 60,
            spiffe_id: COMMENTS.into(),
        })
        .await
        .expect_err("a token for comments");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    // No audience: refused (JWT-SVIDs always name one).
    let refused = videos
        .issue_service_token(IssueServiceTokenRequest {
            audiences: vec![],
            ttl_seconds: 60,
            spiffe_id: String::new(),
        })
        .await
        .expect_err("a token without audience");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");

    // comments gets its own identity, whatever it asks for.
    let mut comments = token_service(&pki, portcullis.grpc_addr(), "comments").await;
    let issued_c = comments
        .issue_service_token(IssueServiceTokenRequest {
            audiences: vec![MESH.into()],
            ttl_seconds: 60,
            spiffe_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(claims(&issued_c.token)["sub"], COMMENTS);
    assert_eq!(issued_c.expires_in_seconds, 60);

    // The token portcullis issued is one portcullis accepts on a services rule
    // (through a front proxy, no mTLS: a token alone).
    let app = EchoUpstream::start().await;
    let edge = Portcullis::start(&config(&pki, &jwks, false)).await;
    let front = start_forwarding_front_proxy(edge.grpc_addr(), app.addr()).await;
    let response = front
        .get("/internal/stats/1")
        .bearer(&issued.token)
        .send()
        .await;
    assert_eq!(response.status, 200, "{response}\n{}", edge.log());
    assert_eq!(
        response.upstream().unwrap().header("x-caller-spiffe-id"),
        Some(VIDEOS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_callers_forged_xfcc_service_tokens_and_token_exchange() {
    support::envoy::envoy_bin();
    let pki = mesh_pki();
    let clerk = SigningKey::generate(support::FIRST_KID);
    let jwks = JwksServer::start(&[&clerk]).await;
    let app = EchoUpstream::start().await;
    let portcullis = Portcullis::start(&config(&pki, &jwks, false)).await;
    let front = start_forwarding_front_proxy(portcullis.grpc_addr(), app.addr()).await;

    // A plaintext caller claiming to be videos in XFCC is nobody: 401 on the
    // internal path, and on a public one the header never reaches the upstream.
    let forged = format!("By=spiffe://example.org/ns/default/sa/channels;URI={VIDEOS}");
    let response = front
        .get("/internal/channels/1")
        .header("x-forwarded-client-cert", &forged)
        .send()
        .await;
    assert_eq!(response.status, 401, "{response}");
    let response = front
        .get("/public/x")
        .header("x-forwarded-client-cert", &forged)
        .send()
        .await;
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(
        response
            .upstream()
            .unwrap()
            .header("x-forwarded-client-cert"),
        None
    );

    // A service token from `portcullis token issue` is accepted on a services
    // rule; it is not mTLS, so `mtls: required` is not met.
    let out = portcullis_ok(&[
        "token",
        "issue",
        "--service",
        "videos",
        "--dir",
        pki.certs_str(),
    ]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let response = front.get("/internal/stats/1").bearer(&token).send().await;
    assert_eq!(response.status, 200, "{response}\n{}", portcullis.log());
    let seen = response.upstream().unwrap();
    assert_eq!(seen.header("x-caller-spiffe-id"), Some(VIDEOS));
    let response = front
        .get("/internal/mtls-only/1")
        .bearer(&token)
        .send()
        .await;
    assert_eq!(response.status, 403, "{response}");

    // Not JWT-SVIDs of ours: 401 each.
    let tokens_dir = pki.certs().join("tokens");
    let kid = our_kid(&pki);
    let now = support::tokens::now();
    let good = json!({"iss": MESH, "sub": VIDEOS, "aud": [MESH], "iat": now, "exp": now + 300});
    let mut no_aud = good.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    let mut foreign = good.clone();
    foreign["sub"] = json!("spiffe://evil.org/ns/default/sa/videos");
    let other = tempfile::tempdir().unwrap();
    portcullis_ok(&["token", "jwks", "--dir", other.path().to_str().unwrap()]);
    let other_tokens = other.path().join("tokens");
    let cases = [
        ("no aud", sign_es256(&tokens_dir, &kid, &no_aud), "aud"),
        (
            "foreign trust domain",
            sign_es256(&tokens_dir, &kid, &foreign),
            "trust domain",
        ),
        (
            "unknown key",
            sign_es256(&other_tokens, "unknown-kid", &good),
            "key id",
        ),
        (
            "another key under our kid",
            sign_es256(&other_tokens, &kid, &good),
            "signature",
        ),
    ];
    for (what, token, why) in cases {
        let response = front.get("/internal/stats/1").bearer(&token).send().await;
        assert_eq!(response.status, 401, "{what}: {response}");
        let message = response.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(why), "{what}: {message}");
    }
    // The control: the same claims, our key, accepted.
    let response = front
        .get("/internal/stats/1")
        .bearer(&sign_es256(&tokens_dir, &kid, &good))
        .send()
        .await;
    assert_eq!(response.status, 200, "{response}");

    // Token exchange: a Clerk-shaped token in, a portcullis token out, carrying
    // the directory's context (here `users.source: claims`), which portcullis
    // then accepts as a user token.
    let clerk_claims = ClerkClaims::user("USER");
    let clerk_token = clerk_claims.sign(&clerk);
    let response = portcullis
        .http(Method::POST, "/v1/token/exchange")
        .bearer(&clerk_token)
        .send()
        .await;
    assert_eq!(response.status, 200, "{response}");
    let body = response.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    let exchanged = body["access_token"].as_str().unwrap().to_owned();
    let c = claims(&exchanged);
    assert_eq!(c["iss"], "portcullis");
    assert_eq!(c["sub"], clerk_claims.sub);
    assert_eq!(c["role"], "USER");
    assert_eq!(c["idp"], "clerk");
    // The session travels on, so revoking it refuses this token too
    // (docs/revocation.md); nothing else of the Clerk token's own claims does.
    assert_eq!(c["sid"], clerk_claims.sid);
    assert!(c.get("azp").is_none());
    let response = front.get("/api/videos/1").bearer(&exchanged).send().await;
    assert_eq!(response.status, 200, "{response}");
    let seen = response.upstream().unwrap();
    assert_eq!(seen.header("x-user-id"), Some(clerk_claims.sub.as_str()));
    assert_eq!(seen.header("x-user-role"), Some("USER"));
    // Our own token cannot be exchanged again (no endless sessions); no token,
    // no exchange.
    let response = portcullis
        .http(Method::POST, "/v1/token/exchange")
        .bearer(&exchanged)
        .send()
        .await;
    assert_eq!(response.status, 401, "{response}");
    let response = portcullis
        .http(Method::POST, "/v1/token/exchange")
        .send()
        .await;
    assert_eq!(response.status, 401, "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_token_verifies_against_the_jwks_and_carries_the_user_east_west() {
    support::envoy::envoy_bin();
    let pki = mesh_pki();
    let clerk = SigningKey::generate(support::FIRST_KID);
    let jwks = JwksServer::start(&[&clerk]).await;
    // The edge: front proxy → videos (an echo standing in for the videos app).
    let videos_app = EchoUpstream::start().await;
    let edge = Portcullis::start(&config(&pki, &jwks, true)).await;
    let front = start_forwarding_front_proxy(edge.grpc_addr(), videos_app.addr()).await;
    // East-west: videos' sidecar → channels' sidecar → channels.
    let channels_app = EchoUpstream::start().await;
    let mesh = start_mtls_portcullis(&pki, &jwks, true).await;
    let channels = start_channels(&pki, mesh.grpc_addr(), channels_app.addr()).await;
    let videos = start_caller(&pki, "videos", channels.addr()).await;

    let user = ClerkClaims::user("USER");
    let response = front
        .get("/api/videos/1")
        .bearer(&user.sign(&clerk))
        .header("x-portcullis-token", "forged")
        .send()
        .await;
    assert_eq!(response.status, 200, "{response}\n{}", edge.log());
    let seen = response.upstream().unwrap();
    let internal = seen
        .header("x-portcullis-token")
        .expect("an internal token")
        .to_owned();
    assert_ne!(internal, "forged");

    // Verified by an independent library against the published JWKS.
    let published = edge
        .http(Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .json();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(published).unwrap();
    let header = jsonwebtoken::decode_header(&internal).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("kid published");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&["portcullis"]);
    validation.set_audience(&["portcullis-internal"]);
    let verified = jsonwebtoken::decode::<Value>(
        &internal,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .expect("the internal token verifies")
    .claims;
    assert_eq!(verified["sub"], user.sub);
    assert_eq!(verified["role"], "USER");
    let lifetime = verified["exp"].as_u64().unwrap() - verified["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 300);

    // videos passes the token on to channels; under forward_user channels gets
    // the user from the token, not from the headers videos adds.
    let response = videos
        .get("/internal/channels/1")
        .header("x-portcullis-token", &internal)
        .header("x-user-role", "ADMIN")
        .send()
        .await;
    assert_eq!(response.status, 200, "{response}\n{}", mesh.log());
    let seen = response.upstream().unwrap();
    assert_eq!(seen.header("x-caller-spiffe-id"), Some(VIDEOS));
    assert_eq!(seen.header("x-user-id"), Some(user.sub.as_str()));
    assert_eq!(seen.header("x-user-role"), Some("USER"));
    assert!(seen.header("x-portcullis-token").is_some());

    // With internal tokens on, headers alone are no user context.
    let response = videos
        .get("/internal/channels/1")
        .header("x-user-id", "user_42")
        .send()
        .await;
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(response.upstream().unwrap().header("x-user-id"), None);
    // A bad internal token from an authenticated service: 401.
    let response = videos
        .get("/internal/channels/1")
        .header("x-portcullis-token", "forged")
        .send()
        .await;
    assert_eq!(response.status, 401, "{response}");
}
