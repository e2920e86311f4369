//! The user directory end to end: a real Envoy in front of portcullis, users in a
//! real PostgreSQL, Clerk-shaped RS256 tokens. The upstream receives the
//! database's `id`, `role` and `channel_id`; a role changed in the database is not
//! seen until a signed `user.updated` webhook arrives; `user.deleted` denies the
//! next request. A second portcullis process sharing real Redis hears both
//! webhooks, though they were delivered to the first.

mod support;

use sqlx::{Connection, Executor};
use std::time::{Duration, Instant};
use support::{
    ClerkClaims, EchoUpstream, Envoy, JwksServer, Portcullis, PortcullisConfig, SigningKey,
};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
use support::svix::SECRET as WEBHOOK_SECRET;

/// Delivers a Svix-signed Clerk event to portcullis' webhook endpoint.
async fn deliver(portcullis: &Portcullis, kind: &str, sub: &str) -> u16 {
    support::svix::deliver(portcullis.http_addr(), kind, sub).await
}

/// The role portcullis gives the token, or its deny status.
async fn role_at(portcullis: &Portcullis, token: &str) -> Result<String, i32> {
    support::check::role(portcullis.grpc_addr(), "/api/videos", token).await
}

/// Polls `portcullis` until it answers `want` for `token` (2 s at most).
async fn eventually(portcullis: &Portcullis, token: &str, want: Result<String, i32>) {
    let start = Instant::now();
    loop {
        let got = role_at(portcullis, token).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "still {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn database_context_webhooks_and_replicas() {
    let database = format!("portcullis_e2e_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(PG_ADMIN)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    admin
        .execute(format!("CREATE DATABASE {database}").as_str())
        .await
        .unwrap();
    let db_url = format!("postgres://postgres@127.0.0.1:5432/{database}");
    let mut db = sqlx::PgConnection::connect(&db_url).await.unwrap();
    let claims = ClerkClaims::user("IGNORED-CLAIM");
    db.execute(
        format!(
            "CREATE TABLE users (id TEXT, clerk_id TEXT UNIQUE, role TEXT, channel_id TEXT);
             INSERT INTO users VALUES ('42', '{}', 'USER', 'ch_9');",
            claims.sub
        )
        .as_str(),
    )
    .await
    .unwrap();

    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("clerk.secret");
    std::fs::write(&secret_file, WEBHOOK_SECRET).unwrap();
    let key = SigningKey::generate(support::FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let policy = format!(
        "{}  - name: clerk-webhook\n    to: {{ paths: [/api/webhook/clerk], methods: [POST] }}\n    from: {{ webhooks: [clerk] }}\n",
        support::portcullis::USER_TRAFFIC_POLICY
    );
    let config = PortcullisConfig::user_traffic(jwks.uri())
        .with_policy(&policy)
        .with_users(&format!(
            "  source: {db_url}\n  query: SELECT id, role, channel_id FROM users WHERE clerk_id = $1\n  cache: {{ ttl: 5m, negative_ttl: 30s }}\n"
        ))
        .with_user_headers("x-user-id: user.id, x-user-role: user.role, x-user-channel-id: user.channel_id")
        .with_extra(&format!(
            "webhooks:\n  clerk: {{ secret_file: {} }}\nstate:\n  redis: redis://127.0.0.1:6379\n",
            secret_file.display()
        ));
    let upstream = EchoUpstream::start().await;
    let first = Portcullis::start(&config).await;
    let second = Portcullis::start(&config).await;
    let envoy = Envoy::start(first.grpc_addr(), upstream.addr()).await;
    let token = claims.sign(&key);

    // The upstream receives the database's context, not the token's claims.
    let response = envoy.get("/api/videos").bearer(&token).send().await;
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.upstream().expect("reached the upstream");
    assert_eq!(seen.header("x-user-id"), Some("42"));
    assert_eq!(seen.header("x-user-role"), Some("USER"));
    assert_eq!(seen.header("x-user-channel-id"), Some("ch_9"));
    assert_eq!(
        role_at(&second, &token).await,
        Ok("USER".into()),
        "the replica caches it too"
    );

    // A role changed in the database: nothing changes until the webhook.
    db.execute(
        format!(
            "UPDATE users SET role = 'ADMIN' WHERE clerk_id = '{}'",
            claims.sub
        )
        .as_str(),
    )
    .await
    .unwrap();
    let response = envoy.get("/api/videos").bearer(&token).send().await;
    assert_eq!(
        response.upstream().unwrap().header("x-user-role"),
        Some("USER"),
        "cached"
    );
    assert_eq!(role_at(&second, &token).await, Ok("USER".into()));

    // user.updated, delivered to the first replica only.
    assert_eq!(deliver(&first, "user.updated", &claims.sub).await, 200);
    let response = envoy.get("/api/videos").bearer(&token).send().await;
    assert_eq!(
        response.upstream().unwrap().header("x-user-role"),
        Some("ADMIN"),
        "evicted"
    );
    eventually(&second, &token, Ok("ADMIN".into())).await;

    // user.deleted: the next request is refused, on both replicas.
    assert_eq!(deliver(&first, "user.deleted", &claims.sub).await, 200);
    let response = envoy.get("/api/videos").bearer(&token).send().await;
    assert_eq!(response.status, 401, "{}", response.text());
    assert!(response.upstream().is_none(), "never reaches the upstream");
    eventually(&second, &token, Err(401)).await;

    // An unrelated config change reloads the first replica: the deletion holds,
    // though the user is still in the database.
    let config_file = first.dir().join("portcullis.yaml");
    let text = std::fs::read_to_string(&config_file).unwrap();
    let changed = text.replace(
        "x-user-id: user.id,",
        "x-user-id: user.id, x-user-clerk-id: token.sub,",
    );
    assert_ne!(text, changed);
    std::fs::write(config_file.with_extension("tmp"), changed).unwrap();
    std::fs::rename(config_file.with_extension("tmp"), &config_file).unwrap();
    let start = Instant::now();
    while !first
        .http(http::Method::GET, "/metrics")
        .send()
        .await
        .text()
        .contains(r#"portcullis_policy_reload_total{result="success"} 2"#)
    {
        assert!(start.elapsed() < Duration::from_secs(3), "no reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = envoy.get("/api/videos").bearer(&token).send().await;
    assert_eq!(
        response.status,
        401,
        "still deleted after a reload: {}",
        response.text()
    );

    // A webhook route forwarded to the upstream: Envoy sends the body with the
    // Check (the route's with_request_body), a Svix signature makes the caller
    // the `clerk` webhook; unsigned or tampered deliveries never reach it.
    let body = support::svix::event("user.created", "user_new");
    let (id, ts) = ("msg_forwarded", support::svix::now());
    let signature = support::svix::sign(WEBHOOK_SECRET, id, ts, &body);
    let forward = |body: Vec<u8>, signature: &str| {
        envoy
            .request(http::Method::POST, "/api/webhook/clerk")
            .header("svix-id", id)
            .header("svix-timestamp", &ts.to_string())
            .header("svix-signature", signature)
            .header("content-type", "application/json")
            .body(body)
    };
    let response = forward(body.clone(), &signature).send().await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response.upstream().is_some(),
        "the signed delivery reaches the upstream"
    );
    let response = forward(support::svix::event("user.deleted", "user_a"), &signature)
        .send()
        .await;
    assert_eq!(response.status, 401, "a signature over another body");
    let response = envoy
        .request(http::Method::POST, "/api/webhook/clerk")
        .body(body)
        .send()
        .await;
    assert_eq!(response.status, 401, "unsigned");

    drop(envoy);
    drop(first);
    drop(second);
    let _ = admin
        .execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str())
        .await;
}
