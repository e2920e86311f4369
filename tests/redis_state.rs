//! Shared state through real Redis when Redis goes away: a replica that loses
//! Redis keeps deciding (its cache bounds staleness, no 503), misses what is
//! published meanwhile, and resubscribes when Redis returns — after which it
//! hears evictions again.

mod support;

use portcullis::config::Config;
use portcullis::server::Server;
use sqlx::{Connection, Executor};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::proxy::Proxy;
use support::svix::{deliver, now, SECRET};

const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef";

async fn start(dir: &Path, name: &str, redis: &str) -> (SocketAddr, SocketAddr) {
    std::fs::write(
        dir.join(format!("{name}.yaml")),
        format!(
            "\
server: {{ grpc_listen: 127.0.0.1:0, http_listen: 127.0.0.1:0 }}
issuers:
  - {{ name: app, kind: user, issuer: app, secret_file: jwt.secret, algorithms: [HS256] }}
users:
  source: sqlite://users.db
  query: SELECT id, role FROM users WHERE clerk_id = $1
webhooks:
  clerk: {{ secret_file: clerk.secret }}
state:
  redis: {redis}
policy: policy.yaml
"
        ),
    )
    .unwrap();
    let server = Server::bind(&Config::load(&dir.join(format!("{name}.yaml"))).unwrap())
        .await
        .unwrap();
    let addrs = (server.grpc_addr(), server.http_addr());
    tokio::spawn(server.run(std::future::pending()));
    // Ready: with `state.redis` a token is answered only once the revocations
    // are loaded (503 before; docs/revocation.md).
    let started = Instant::now();
    while !reqwest::get(format!("http://{}/readyz", addrs.1))
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} never ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    addrs
}

async fn role(grpc: SocketAddr, sub: &str) -> Result<String, i32> {
    let claims = serde_json::json!({"iss": "app", "sub": sub, "exp": now() + 300});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    support::check::role(grpc, "/x", &token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_survives_a_redis_outage_and_resubscribes() {
    let dir = tempfile::tempdir().unwrap();
    let sub = format!("user_{:016x}", rand::random::<u64>());
    let db_path = dir.path().join("users.db");
    let mut db =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db_path.display()))
            .await
            .unwrap();
    db.execute(format!("CREATE TABLE users (id TEXT, clerk_id TEXT, role TEXT); INSERT INTO users VALUES ('1', '{sub}', 'USER');").as_str())
        .await
        .unwrap();
    std::fs::write(dir.path().join("jwt.secret"), JWT_SECRET).unwrap();
    std::fs::write(dir.path().join("clerk.secret"), SECRET).unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        "rules:\n  - name: all\n    from: authenticated\n",
    )
    .unwrap();

    let mut proxy = Proxy::start("127.0.0.1:6379".parse().unwrap()).await;
    let (grpc_a, http_a) = start(dir.path(), "a", "redis://127.0.0.1:6379").await;
    let (grpc_b, _) = start(dir.path(), "b", &format!("redis://{}", proxy.addr)).await;
    assert_eq!(role(grpc_a, &sub).await, Ok("USER".into()));
    assert_eq!(role(grpc_b, &sub).await, Ok("USER".into()));

    // B loses Redis. A hears a webhook; B misses it but keeps serving from cache.
    proxy.stop();
    db.execute(format!("UPDATE users SET role = 'EDITOR' WHERE clerk_id = '{sub}'").as_str())
        .await
        .unwrap();
    assert_eq!(deliver(http_a, "user.updated", &sub).await, 200);
    assert_eq!(role(grpc_a, &sub).await, Ok("EDITOR".into()));
    assert_eq!(
        role(grpc_b, &sub).await,
        Ok("USER".into()),
        "B keeps serving, stale but bounded by TTL"
    );

    // Redis returns: B resubscribes (backoff up to a few seconds) and hears the
    // next eviction.
    proxy.restart().await;
    db.execute(format!("UPDATE users SET role = 'ADMIN' WHERE clerk_id = '{sub}'").as_str())
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        assert_eq!(deliver(http_a, "user.updated", &sub).await, 200);
        if role(grpc_b, &sub).await == Ok("ADMIN".into()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "B never resubscribed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
