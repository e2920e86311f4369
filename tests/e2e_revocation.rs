//! Revocation end to end (docs/revocation.md): two portcullis processes sharing
//! the real Redis at 127.0.0.1:6379, Clerk-shaped RS256 tokens, the shipped
//! front proxy in front of the second replica.
//!
//! ```text
//! webhook / CLI / admin API ──► replica A (mTLS gRPC listener, admin.principals)
//!                                   │ Redis: keys + pub/sub
//! client ──► Envoy ──ext_authz──► replica B (plaintext)
//! ```
//!
//! A Clerk `session.revoked` delivered to A refuses that session's token on B
//! within a second (measured and printed); a replica started after a
//! revocation refuses it from its first check; a replica that cannot reach
//! Redis at start answers every token 503 through Envoy (which still sends it
//! checks) until it has loaded the set; an admin caller outside
//! `admin.principals` changes nothing. Revocation values are random: other
//! tests share the Redis.

mod support;

use portcullis::admin_pb::admin_client::AdminClient;
use portcullis::admin_pb::revoke_request::Target;
use portcullis::admin_pb::RevokeRequest;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::pki::TestPki;
use support::{
    ClerkClaims, EchoUpstream, Envoy, JwksServer, Portcullis, PortcullisConfig, SigningKey,
};

const ADMIN: &str = "spiffe://example.org/ns/default/sa/admin";

/// The replicas, their shared dependencies and the proxy in front of B.
struct Cluster {
    envoy: Envoy,
    a: Portcullis,
    b: Portcullis,
    pki: TestPki,
    key: SigningKey,
    /// What started A and B (without A's TLS), for a replica started later.
    config: PortcullisConfig,
    /// Delivers webhooks to A (one client, kept alive).
    webhooks: reqwest::Client,
    _upstream: EchoUpstream,
    _jwks: JwksServer,
    _secrets: tempfile::TempDir,
}

fn config(jwks: &JwksServer, webhook_secret: &std::path::Path) -> PortcullisConfig {
    config_with_redis(jwks, webhook_secret, "127.0.0.1:6379")
}

fn config_with_redis(
    jwks: &JwksServer,
    webhook_secret: &std::path::Path,
    redis: &str,
) -> PortcullisConfig {
    PortcullisConfig::user_traffic(jwks.uri()).with_extra(&format!(
        "webhooks:\n  clerk: {{ secret_file: {} }}\nstate:\n  redis: redis://{redis}\nrevocation:\n  sessions_from_webhooks: true\nadmin:\n  principals: [{ADMIN}]\n",
        webhook_secret.display()
    ))
}

impl Cluster {
    async fn start() -> Cluster {
        support::envoy::envoy_bin();
        let pki = TestPki::new("example.org");
        pki.issue("portcullis", &["localhost"]);
        pki.issue("admin", &[]);
        pki.issue("videos", &[]);
        let secrets = tempfile::tempdir().unwrap();
        let secret = secrets.path().join("clerk.secret");
        std::fs::write(&secret, support::svix::SECRET).unwrap();
        let key = SigningKey::generate(support::FIRST_KID);
        let jwks = JwksServer::start(&[&key]).await;
        let upstream = EchoUpstream::start().await;
        let server = pki.certs().join("portcullis");
        let a = Portcullis::start(&config(&jwks, &secret).with_tls(
            &server.join("chain.pem"),
            &server.join("key.pem"),
            Some(&pki.bundle()),
        ))
        .await;
        let b = Portcullis::start(&config(&jwks, &secret)).await;
        let envoy = Envoy::start(b.grpc_addr(), upstream.addr()).await;
        Cluster {
            envoy,
            a,
            b,
            config: config(&jwks, &secret),
            pki,
            key,
            webhooks: reqwest::Client::new(),
            _upstream: upstream,
            _jwks: jwks,
            _secrets: secrets,
        }
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.pki.certs().join(name)
    }

    /// A fresh user token, issued two seconds ago (before any revocation made now).
    fn token(&self) -> (ClerkClaims, String) {
        let mut claims = ClerkClaims::user("USER");
        claims.iat -= 2;
        claims.nbf -= 2;
        let token = claims.sign(&self.key);
        (claims, token)
    }

    /// A session webhook, Svix-signed, delivered to A.
    async fn end_session(&self, sid: &str) -> u16 {
        let body = serde_json::json!({"type": "session.revoked", "object": "event",
            "data": {"id": sid, "object": "session", "status": "revoked"}})
        .to_string();
        let (id, ts) = (
            format!("msg_{:016x}", rand::random::<u64>()),
            support::svix::now(),
        );
        let signature = support::svix::sign(support::svix::SECRET, &id, ts, body.as_bytes());
        // One client, connected before the clock starts: the timings measure
        // portcullis, not a client's set-up.
        self.webhooks
            .post(format!("http://{}/webhooks/clerk", self.a.http_addr()))
            .header("svix-id", id)
            .header("svix-timestamp", ts.to_string())
            .header("svix-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `portcullis revoke --server A --cert certs/NAME ARGS...` (off the runtime).
    async fn cli(&self, name: &str, args: &[&str]) -> std::process::Output {
        let mut all = vec![
            "revoke".to_owned(),
            "--server".to_owned(),
            self.a.grpc_addr().to_string(),
            "--cert".to_owned(),
            self.cert(name).display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            support::pki::portcullis(&args)
        })
        .await
        .unwrap()
    }
}

/// The status of `GET /api/videos` with `token` through `envoy`.
async fn status(envoy: &Envoy, token: &str) -> u16 {
    envoy.get("/api/videos").bearer(token).send().await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_webhook_to_one_replica_refuses_the_session_on_the_other_within_a_second() {
    let cluster = Cluster::start().await;
    // Warms the webhook client's connection to A.
    assert_eq!(
        cluster
            .end_session(&format!("sess_warm_up_{:016x}", rand::random::<u64>()))
            .await,
        200
    );
    let mut timings = Vec::new();
    for _ in 0..5 {
        let (claims, token) = cluster.token();
        assert_eq!(status(&cluster.envoy, &token).await, 200);
        let started = Instant::now();
        assert_eq!(cluster.end_session(&claims.sid).await, 200);
        let delivered = started.elapsed();
        loop {
            let response = cluster.envoy.get("/api/videos").bearer(&token).send().await;
            if response.status == 401 {
                assert!(
                    response.text().contains("token revoked"),
                    "{}",
                    response.text()
                );
                assert!(response
                    .header("www-authenticate")
                    .is_some_and(|c| c.contains(r#"error="invalid_token""#)));
                assert!(response.upstream().is_none());
                break;
            }
            assert_eq!(response.status, 200, "{}", response.text());
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "B still allows the revoked session after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let refused = started.elapsed();
        println!(
            "session revoked on A, refused on B through Envoy after {:.1} ms (webhook answered after {:.1} ms)",
            refused.as_secs_f64() * 1e3,
            delivered.as_secs_f64() * 1e3
        );
        timings.push(refused);
    }
    let max = timings.iter().max().unwrap();
    println!(
        "cross-replica revocation: max {:.1} ms over {} sessions",
        max.as_secs_f64() * 1e3,
        timings.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_after_a_revocation_refuses_it_from_its_first_check() {
    let cluster = Cluster::start().await;
    let (claims, token) = cluster.token();
    let (_, other) = cluster.token();
    // Signed out everywhere through the CLI, against A.
    let revoked = cluster
        .cli("admin", &["--sub", &claims.sub, "--ttl", "10m"])
        .await;
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );

    let upstream = EchoUpstream::start().await;
    let c = Portcullis::start(&cluster.config).await;
    let envoy = Envoy::start(c.grpc_addr(), upstream.addr()).await;
    let first = envoy.get("/api/videos").bearer(&token).send().await;
    assert_eq!(first.status, 401, "the first check of C: {}", first.text());
    assert!(first.text().contains("token revoked"));
    assert_eq!(status(&envoy, &other).await, 200, "another user");
    let readyz = c.http(http::Method::GET, "/readyz").send().await.json();
    assert_eq!(readyz["revocations"]["loaded"], true, "{readyz}");
    assert!(readyz["revocations"]["count"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_has_not_loaded_the_revocations_lets_no_token_through() {
    let cluster = Cluster::start().await;
    let (claims, token) = cluster.token();
    let revoked = cluster
        .cli(
            "admin",
            &[
                "--sid",
                &claims.sid,
                "--server-id",
                "spiffe://example.org/ns/default/sa/portcullis",
            ],
        )
        .await;
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    // C starts while its Redis is away: NOT_SERVING, yet Envoy (its only
    // host, in panic mode) still sends it the checks.
    let mut redis = support::proxy::Proxy::start("127.0.0.1:6379".parse().unwrap()).await;
    redis.stop();
    let secret = cluster._secrets.path().join("clerk.secret");
    let c = Portcullis::start_unready(&config_with_redis(
        &cluster._jwks,
        &secret,
        &redis.addr.to_string(),
    ))
    .await;
    let upstream = EchoUpstream::start().await;
    let envoy = Envoy::start(c.grpc_addr(), upstream.addr()).await;
    let (_, other) = cluster.token();
    for token in [&token, &other] {
        let response = envoy.get("/api/videos").bearer(token).send().await;
        assert_eq!(response.status, 503, "{}", response.text());
        assert!(
            response.text().contains("revocations are not loaded yet"),
            "portcullis' answer: {}",
            response.text()
        );
        assert!(response.upstream().is_none());
    }
    let readyz = c.http(http::Method::GET, "/readyz").send().await.json();
    assert_eq!(readyz["revocations"]["loaded"], false, "{readyz}");

    // Redis back: the revoked session stays refused, the other user passes.
    redis.restart().await;
    let started = Instant::now();
    while status(&envoy, &other).await != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "C never loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = envoy.get("/api/videos").bearer(&token).send().await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert!(refused.text().contains("token revoked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_admin_caller_changes_nothing() {
    let cluster = Cluster::start().await;
    let (claims, token) = cluster.token();
    assert_eq!(status(&cluster.envoy, &token).await, 200);

    // A certificate of the mesh, not in admin.principals: CLI and API.
    let cli = cluster.cli("videos", &["--sid", &claims.sid]).await;
    assert_eq!(cli.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&cli.stderr).contains("PermissionDenied"));
    let tls = tonic::transport::ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(cluster.pki.bundle()).unwrap(),
        ))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(cluster.cert("videos").join("chain.pem")).unwrap(),
            std::fs::read(cluster.cert("videos").join("key.pem")).unwrap(),
        ));
    let channel =
        tonic::transport::Channel::from_shared(format!("https://{}", cluster.a.grpc_addr()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
    let refused = AdminClient::new(channel)
        .revoke(RevokeRequest {
            target: Some(Target::Sub(claims.sub.clone())),
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    // No certificate at all: B's plaintext listener.
    let refused = AdminClient::connect(format!("http://{}", cluster.b.grpc_addr()))
        .await
        .unwrap()
        .revoke(RevokeRequest {
            target: Some(Target::Sid(claims.sid.clone())),
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // A revocation made after the refused ones reaches B: had those changed
    // anything, it would show by now.
    let (marker, marker_token) = cluster.token();
    assert_eq!(cluster.end_session(&marker.sid).await, 200);
    let started = Instant::now();
    while status(&cluster.envoy, &marker_token).await != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "marker never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        status(&cluster.envoy, &token).await,
        200,
        "the token the refused callers named is still allowed"
    );
    let listed = cluster.cli("admin", &["--list"]).await;
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        !listed.contains(&claims.sid) && !listed.contains(&claims.sub),
        "{listed}"
    );
    assert!(listed.contains(&marker.sid), "{listed}");
}
