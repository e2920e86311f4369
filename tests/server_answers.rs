//! The server in-process on ephemeral ports, driven by a tonic ext_authz client:
//! one test per answer of docs/answers.md (allow with context headers, 401 missing, 401
//! invalid, 403, 400 ambiguous path, 503 dependency down), plus health, admin
//! status and reflection on the same listener.

mod support;

use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::service::auth::v3::{
    authorization_client::AuthorizationClient, check_response::HttpResponse, CheckResponse,
};
use portcullis::config::Config;
use portcullis::server::Server;
use serde_json::Value;
use std::collections::HashMap;
use support::tokens::{jwk_set, ClerkClaims, SigningKey};
use tonic::transport::Channel;

const POLICY: &str = "\
default: deny
rules:
  - name: public
    to: { paths: [/public, /public/**] }
    from: anyone
  - name: videos-read
    to: { paths: [/api/videos, /api/videos/**], methods: [GET] }
    from: { users: { roles: [USER, ADMIN] } }
  - name: remote-only
    to: { paths: [/remote/**] }
    from: authenticated
";

struct Harness {
    client: AuthorizationClient<Channel>,
    http: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
    key: SigningKey,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start() -> Self {
        let key = SigningKey::generate("k1");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jwks.json"), jwk_set(&[&key]).to_string()).unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        std::fs::write(
            dir.path().join("app.secret"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        // A remote issuer whose JWKS endpoint is down: tokens for it cannot be
        // checked, which must be a 503, never a 401 or an allow.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = dead.local_addr().unwrap().port();
        drop(dead);
        let config = format!(
            "\
server: {{ grpc_listen: 127.0.0.1:0, http_listen: 127.0.0.1:0 }}
issuers:
  - name: clerk
    kind: user
    issuer: {iss}
    jwks_file: jwks.json
    algorithms: [RS256]
    authorized_parties: [{azp}]
    leeway: 5s
    credentials: [{{ header: authorization }}, {{ cookie: __session }}]
  - name: app
    kind: user
    issuer: example-auth
    secret_file: app.secret
    algorithms: [HS256]
    audiences: [example-api]
  - name: remote
    kind: user
    issuer: https://remote.example.test
    jwks_uri: http://127.0.0.1:{dead_port}/jwks.json
    jwks_timeout: 1s
    algorithms: [RS256]
headers:
  user: {{ x-user-id: user.id, x-user-role: user.role, x-user-session: token.sid }}
policy: policy.yaml
",
            iss = support::tokens::ISSUER,
            azp = support::tokens::AUTHORIZED_PARTY,
        );
        std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
        let config = Config::load(&dir.path().join("portcullis.yaml")).expect("config loads");
        let server = Server::bind(&config).await.expect("bind");
        let (grpc, http) = (server.grpc_addr(), server.http_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                    portcullis::server::Stop::Immediate
                })
                .await
                .expect("server runs");
        });
        let client = AuthorizationClient::connect(format!("http://{grpc}"))
            .await
            .expect("connect");
        Harness {
            client,
            http,
            grpc,
            key,
            _dir: dir,
            stop: Some(stop),
            server,
        }
    }

    async fn check(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> CheckResponse {
        let request = support::check::request(method, path, headers);
        // A deny is data: the RPC itself must succeed.
        self.client
            .check(request)
            .await
            .expect("Check never fails as an RPC")
            .into_inner()
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.await.unwrap();
    }
}

fn headers(options: &[HeaderValueOption]) -> HashMap<String, String> {
    options
        .iter()
        .filter_map(|o| o.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

/// (grpc code, http status, headers, json body) of a deny.
fn denied(response: &CheckResponse) -> (i32, i32, HashMap<String, String>, Value) {
    let code = response.status.as_ref().unwrap().code;
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => (
            code,
            d.status.as_ref().unwrap().code,
            headers(&d.headers),
            serde_json::from_str(&d.body).expect("deny bodies are JSON"),
        ),
        other => panic!("expected a deny, got {other:?}"),
    }
}

#[tokio::test]
async fn allow_sets_verified_context_and_strips_spoofed_headers() {
    let mut h = Harness::start().await;
    let claims = ClerkClaims::user("USER");
    let token = claims.sign(&h.key);
    let bearer = format!("Bearer {token}");
    let response = h
        .check(
            "GET",
            "/api/videos/7?x=1",
            &[
                ("authorization", &bearer),
                ("x-user-id", "admin"),
                ("x-user-role", "ADMIN"),
                ("x-user-email", "spoof@example.com"),
                ("x-service-name", "spoof"),
                ("x-request-id", "req-42"),
            ],
        )
        .await;
    assert_eq!(response.status.as_ref().unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("expected allow, got {response:?}")
    };
    let set = headers(&ok.headers);
    assert_eq!(set.get("x-user-id"), Some(&claims.sub));
    assert_eq!(set.get("x-user-role").map(String::as_str), Some("USER"));
    assert_eq!(set.get("x-user-session"), Some(&claims.sid));
    assert!(
        !set.contains_key("x-request-id"),
        "a client request id is kept as is"
    );
    for option in &ok.headers {
        assert_eq!(
            option.append_action, 2,
            "context headers overwrite (OVERWRITE_IF_EXISTS_OR_ADD)"
        );
    }
    let mut removed = ok.headers_to_remove.clone();
    removed.sort();
    assert_eq!(removed, vec!["x-service-name", "x-user-email"]);

    // The same token from the cookie.
    let cookie = format!("theme=dark; __session={token}");
    let response = h.check("GET", "/api/videos", &[("cookie", &cookie)]).await;
    assert!(matches!(
        response.http_response,
        Some(HttpResponse::OkResponse(_))
    ));

    // Anonymous on a public route: allowed, spoofed context removed, request id made.
    let response = h
        .check("GET", "/public/x", &[("x-user-role", "ADMIN")])
        .await;
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("expected allow")
    };
    assert_eq!(ok.headers_to_remove, vec!["x-user-role"]);
    let set = headers(&ok.headers);
    assert_eq!(set.get("x-request-id").map(String::len), Some(36));
    h.shutdown().await;
}

#[tokio::test]
async fn missing_credentials_are_401_with_a_bearer_challenge() {
    let mut h = Harness::start().await;
    let response = h
        .check("GET", "/api/videos", &[("x-request-id", "rid-1")])
        .await;
    let (code, status, headers, body) = denied(&response);
    assert_eq!((code, status), (16, 401));
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="portcullis""#);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["error"], "unauthenticated");
    assert_eq!(body["request_id"], "rid-1");
    h.shutdown().await;
}

#[tokio::test]
async fn invalid_tokens_are_401_even_on_open_routes() {
    let mut h = Harness::start().await;
    let key = SigningKey::generate("k1");
    let good = ClerkClaims::user("USER");
    let cases: Vec<(&str, String)> = vec![
        ("expired", good.clone().expired().sign(&h.key)),
        ("not yet valid", good.clone().not_yet_valid().sign(&h.key)),
        (
            "wrong iss",
            good.clone().issuer("https://evil.example").sign(&h.key),
        ),
        (
            "wrong azp",
            good.clone()
                .authorized_party("https://evil.example")
                .sign(&h.key),
        ),
        ("unknown signer, same kid", good.sign(&key)),
        ("alg none", support::tokens::alg_none(&good, "k1")),
        (
            "hs256 with the public key",
            support::tokens::hs256_with_public_key(&good, &h.key),
        ),
        (
            "tampered",
            support::tokens::tampered(&good.sign(&h.key), |c| c["role"] = "ADMIN".into()),
        ),
        ("garbage", "not-a-token".into()),
        ("huge", "A".repeat(40 * 1024)),
        (
            "json serialization",
            r#"{"payload":"e30","signatures":[]}"#.into(),
        ),
    ];
    for (name, token) in cases {
        for path in ["/api/videos", "/public/x"] {
            let bearer = format!("Bearer {token}");
            let response = h.check("GET", path, &[("authorization", &bearer)]).await;
            let (code, status, headers, body) = denied(&response);
            assert_eq!((code, status), (16, 401), "{name} on {path}: {body}");
            assert!(
                headers["www-authenticate"]
                    .starts_with(r#"Bearer realm="portcullis", error="invalid_token""#),
                "{name}: {headers:?}"
            );
            assert_eq!(body["error"], "invalid_token", "{name}");
            let text = body.to_string();
            assert!(
                !text.contains(&token[..token.len().min(40)]) || token.len() < 12,
                "{name}: the body must not echo the token"
            );
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn hs256_issuer_with_audience() {
    let mut h = Harness::start().await;
    let secret = jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
    let now = support::tokens::now();
    let mint = |aud: &str| {
        let claims = serde_json::json!({"iss": "example-auth", "sub": "u-1", "role": "USER", "aud": aud, "exp": now + 60});
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &secret).unwrap()
    };
    let ok = format!("Bearer {}", mint("example-api"));
    let response = h
        .check("GET", "/api/videos", &[("authorization", &ok)])
        .await;
    let Some(HttpResponse::OkResponse(allowed)) = &response.http_response else {
        panic!("expected allow: {response:?}")
    };
    assert_eq!(
        headers(&allowed.headers)
            .get("x-user-id")
            .map(String::as_str),
        Some("u-1")
    );
    let wrong = format!("Bearer {}", mint("other-api"));
    let (_, status, _, body) = denied(
        &h.check("GET", "/api/videos", &[("authorization", &wrong)])
            .await,
    );
    assert_eq!(status, 401);
    assert_eq!(body["message"], "the token's audience is not accepted");
    h.shutdown().await;
}

#[tokio::test]
async fn policy_denials_are_403() {
    let mut h = Harness::start().await;
    let bearer = format!("Bearer {}", ClerkClaims::user("GUEST").sign(&h.key));
    let (code, status, headers, body) = denied(
        &h.check("GET", "/api/videos", &[("authorization", &bearer)])
            .await,
    );
    assert_eq!((code, status), (7, 403));
    assert!(!headers.contains_key("www-authenticate"));
    assert_eq!(body["error"], "forbidden");
    let user = format!("Bearer {}", ClerkClaims::user("USER").sign(&h.key));
    let (_, status, _, _) = denied(
        &h.check("DELETE", "/api/videos/1", &[("authorization", &user)])
            .await,
    );
    assert_eq!(status, 403);
    h.shutdown().await;
}

#[tokio::test]
async fn ambiguous_paths_are_400_and_dot_segments_resolve_before_matching() {
    let mut h = Harness::start().await;
    let user = format!("Bearer {}", ClerkClaims::user("USER").sign(&h.key));
    for path in [
        "/api/videos/..%2fadmin",
        "/api%5cvideos",
        "/api/videos/%zz",
        "relative",
    ] {
        let (code, status, _, body) =
            denied(&h.check("GET", path, &[("authorization", &user)]).await);
        assert_eq!((code, status), (3, 400), "{path}: {body}");
    }
    // `/public/../api/admin` is `/api/admin`: not public, and not allowed for USER.
    let (_, status, _, _) = denied(
        &h.check("GET", "/public/../api/admin", &[("authorization", &user)])
            .await,
    );
    assert_eq!(status, 403);
    let (_, status, _, _) = denied(&h.check("GET", "/public/%2e%2e/api/admin", &[]).await);
    assert_eq!(status, 401);
    h.shutdown().await;
}

#[tokio::test]
async fn a_dependency_down_is_503_never_an_allow() {
    let mut h = Harness::start().await;
    let remote = ClerkClaims::user("USER").issuer("https://remote.example.test");
    let bearer = format!("Bearer {}", remote.sign(&h.key));
    let (code, status, _, body) = denied(
        &h.check("GET", "/remote/x", &[("authorization", &bearer)])
            .await,
    );
    assert_eq!((code, status), (14, 503), "{body}");
    assert_eq!(body["error"], "unavailable");
    h.shutdown().await;
}

#[tokio::test]
async fn health_readiness_status_and_metrics() {
    let h = Harness::start().await;
    // grpc.health.v1 on the ext_authz listener.
    let channel = Channel::from_shared(format!("http://{}", h.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32,
        "the remote issuer's keys never load: Envoy is told to send Checks elsewhere"
    );
    // Admin/GetStatus: the remote issuer's keys never load, so not ready.
    let mut admin = portcullis::admin_pb::admin_client::AdminClient::new(channel);
    let status = admin
        .get_status(portcullis::admin_pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.ready);
    assert_eq!(status.policy_rules, 3);
    let remote = status.issuers.iter().find(|i| i.name == "remote").unwrap();
    assert!(!remote.keys_loaded);
    let clerk = status.issuers.iter().find(|i| i.name == "clerk").unwrap();
    assert_eq!((clerk.keys_loaded, clerk.key_count), (true, 1));
    // /readyz says the same over HTTP, /healthz is up.
    let readyz = reqwest::get(format!("http://{}/readyz", h.http))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    let body: Value = readyz.json().await.unwrap();
    assert_eq!(body["ready"], false);
    let healthz = reqwest::get(format!("http://{}/healthz", h.http))
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    h.shutdown().await;
}

#[tokio::test]
async fn decisions_are_counted() {
    let mut h = Harness::start().await;
    h.check("GET", "/public/a", &[]).await;
    h.check("GET", "/api/videos", &[]).await;
    h.check(
        "GET",
        "/api/videos",
        &[("authorization", "Bearer not.a.token")],
    )
    .await;
    let metrics = reqwest::get(format!("http://{}/metrics", h.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"portcullis_decisions_total{result="allow",rule="public",principal="anonymous",stage="policy"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"portcullis_decisions_total{result="deny",rule="default",principal="anonymous",stage="policy"} 1"#
    ));
    assert!(
        metrics.contains(
            r#"portcullis_decisions_total{result="deny",rule="",principal="invalid",stage="authentication"} 1"#
        ),
        "a stage that answered is no rule: {metrics}"
    );
    assert!(metrics.contains("portcullis_check_duration_seconds_count 3"));
    h.shutdown().await;
}
