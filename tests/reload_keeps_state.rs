//! A valid config reload keeps the runtime's long-lived state: a user refused by
//! `user.deleted` stays refused, a delivered `svix-id` stays spent, key sets
//! fetched before stay usable while the JWKS endpoint is down, and a cached user
//! keeps serving while the directory is down. Also the holes found beside them:
//! `user.deleted` with `users.source: claims`, and a cached token presented
//! where its issuer does not look for tokens.

mod support;

use axum::extract::Path as UrlPath;
use axum::Json;
use portcullis::config::Config;
use portcullis::server::Server;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::check::{check, Verdict};
use support::svix::{self, SECRET as WEBHOOK_SECRET};
use support::{ClerkClaims, JwksServer, LoopbackServer, SigningKey};

const HMAC: &str = "0123456789abcdef0123456789abcdef";

/// The config under test: an HS256 issuer (`authorization` only), `users` as
/// given, Clerk webhooks, and `headers.user` as given (what a reload changes).
fn config(users: &str, user_headers: &str, extra_issuer: &str) -> String {
    format!(
        "\
server: {{ grpc_listen: 127.0.0.1:0, http_listen: 127.0.0.1:0 }}
issuers:
  - name: app
    kind: user
    issuer: example-auth
    secret_file: secret
    algorithms: [HS256]
    credentials: [{{ header: authorization }}]
{extra_issuer}users:
{users}headers:
  user: {{ {user_headers} }}
webhooks:
  clerk: {{ secret_file: webhook-secret }}
policy: policy.yaml
"
    )
}

fn hs256(sub: &str) -> String {
    let claims = serde_json::json!({"iss": "example-auth", "sub": sub, "role": "USER",
        "exp": svix::now() + 300});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(HMAC.as_bytes()),
    )
    .unwrap()
}

async fn check_bearer(grpc: SocketAddr, token: &str) -> Verdict {
    let bearer = format!("Bearer {token}");
    check(grpc, "GET", "/x", &[("authorization", &bearer)]).await
}

/// A directory with `portcullis.yaml` (from `text`), the policy and secrets.
fn setup(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), HMAC).unwrap();
    std::fs::write(dir.path().join("webhook-secret"), WEBHOOK_SECRET).unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        "rules:\n  - name: all\n    from: authenticated\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("portcullis.yaml"), text).unwrap();
    dir
}

async fn serve(dir: &Path) -> (SocketAddr, SocketAddr) {
    let config = Config::load(&dir.join("portcullis.yaml")).unwrap();
    let server = Server::bind(&config).await.unwrap();
    let addrs = (server.grpc_addr(), server.http_addr());
    tokio::spawn(server.run(std::future::pending()));
    addrs
}

/// Replaces `portcullis.yaml` (a rename, as an editor or a ConfigMap does) and
/// waits until `probe` says the new version decides (3 s at most).
async fn reload(dir: &Path, text: &str, mut probe: impl AsyncFnMut() -> bool) {
    let tmp = dir.join("portcullis.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("portcullis.yaml")).unwrap();
    let start = Instant::now();
    while !probe().await {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the new config never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sqlite_users(dir: &Path, rows: &[(&str, &str)]) -> String {
    use sqlx::{Connection, Executor};
    let url = format!("sqlite://{}?mode=rwc", dir.join("users.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    db.execute("CREATE TABLE users (id TEXT, role TEXT)")
        .await
        .unwrap();
    for (sub, role) in rows {
        db.execute(
            sqlx::query("INSERT INTO users VALUES (?, ?)")
                .bind(sub)
                .bind(role),
        )
        .await
        .unwrap();
    }
    db.close().await.unwrap();
    "  source: sqlite://users.db\n  query: SELECT id, role FROM users WHERE id = $1\n".into()
}

#[tokio::test]
async fn a_deleted_user_stays_refused_after_a_reload() {
    let dir = setup("");
    let users = sqlite_users(dir.path(), &[("u-1", "USER"), ("u-2", "USER")]).await;
    std::fs::write(
        dir.path().join("portcullis.yaml"),
        config(&users, "x-user-id: user.id", ""),
    )
    .unwrap();
    let (grpc, http) = serve(dir.path()).await;
    assert!(check_bearer(grpc, &hs256("u-1")).await.is_ok());
    assert_eq!(svix::deliver(http, "user.deleted", "u-1").await, 200);
    assert_eq!(check_bearer(grpc, &hs256("u-1")).await, Err(401));

    // An unrelated change: one more header.
    let changed = config(&users, "x-user-id: user.id, x-user-role: user.role", "");
    reload(dir.path(), &changed, async || {
        check_bearer(grpc, &hs256("u-2"))
            .await
            .is_ok_and(|h| h.contains_key("x-user-role"))
    })
    .await;
    assert_eq!(
        check_bearer(grpc, &hs256("u-1")).await,
        Err(401),
        "the deleted user (still in the database) is still refused"
    );
}

#[tokio::test]
async fn a_delivered_svix_id_stays_spent_after_a_reload() {
    let dir = setup(&config("  source: claims\n", "x-user-id: user.id", ""));
    let (grpc, http) = serve(dir.path()).await;
    let body = svix::event("user.updated", "u-1");
    let ts = svix::now();
    let first = svix::signed(http, WEBHOOK_SECRET, "msg_reload", ts, &body).await;
    assert_eq!(first.0, 200, "{}", first.1);

    let changed = config(
        "  source: claims\n",
        "x-user-id: user.id, x-user-role: token.role",
        "",
    );
    reload(dir.path(), &changed, async || {
        check_bearer(grpc, &hs256("u-9"))
            .await
            .is_ok_and(|h| h.contains_key("x-user-role"))
    })
    .await;
    let replay = svix::signed(http, WEBHOOK_SECRET, "msg_reload", ts, &body).await;
    assert_eq!(
        replay.0, 401,
        "a replay after a reload is refused: {}",
        replay.1
    );
    assert!(replay.1.contains("replay"), "{}", replay.1);
}

#[tokio::test]
async fn fetched_keys_survive_a_reload_while_the_jwks_endpoint_is_down() {
    let key = SigningKey::generate("k1");
    let mut jwks = JwksServer::start(&[&key]).await;
    let uri = jwks.uri();
    let clerk = |leeway: &str| {
        format!(
            "  - name: clerk\n    kind: user\n    issuer: {}\n    jwks_uri: {uri}\n    algorithms: [RS256]\n    leeway: {leeway}\n",
            support::tokens::ISSUER,
        )
    };
    let dir = setup(&config(
        "  source: claims\n",
        "x-user-id: user.id",
        &clerk("5s"),
    ));
    let (grpc, _) = serve(dir.path()).await;
    let start = Instant::now();
    while check_bearer(grpc, &ClerkClaims::user("USER").sign(&key))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "keys never loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    jwks.stop().await;

    // The clerk issuer itself changes (its leeway), its jwks_uri does not.
    let changed = config(
        "  source: claims\n",
        "x-user-id: user.id, x-user-role: token.role",
        &clerk("10s"),
    );
    reload(dir.path(), &changed, async || {
        // Fresh tokens every time: none of them is in the token cache.
        match check_bearer(grpc, &ClerkClaims::user("USER").sign(&key)).await {
            Ok(headers) => headers.contains_key("x-user-role"),
            Err(status) => panic!("a valid token got {status} during the reload"),
        }
    })
    .await;
    assert!(check_bearer(grpc, &ClerkClaims::user("USER").sign(&key))
        .await
        .is_ok());
}

#[tokio::test]
async fn a_cached_user_keeps_serving_after_a_reload_while_the_directory_is_down() {
    let router = axum::Router::new().route(
        "/users/{sub}",
        axum::routing::get(|UrlPath(sub): UrlPath<String>| async move {
            Json(serde_json::json!({"id": sub, "role": "USER"}))
        }),
    );
    let mut users_service = LoopbackServer::start(router).await;
    let users = format!("  source: http://{}/users/{{sub}}\n", users_service.addr());
    let dir = setup(&config(&users, "x-user-id: user.id", ""));
    let (grpc, _) = serve(dir.path()).await;
    assert!(check_bearer(grpc, &hs256("cached")).await.is_ok());
    users_service.stop().await;
    assert_eq!(
        check_bearer(grpc, &hs256("uncached")).await,
        Err(503),
        "an uncached user needs the directory"
    );

    let changed = config(&users, "x-user-id: user.id, x-user-role: user.role", "");
    reload(dir.path(), &changed, async || {
        match check_bearer(grpc, &hs256("cached")).await {
            Ok(headers) => headers.get("x-user-role").is_some_and(|r| r == "USER"),
            Err(status) => panic!("the cached user got {status} during the reload"),
        }
    })
    .await;
}

#[tokio::test]
async fn user_deleted_refuses_a_user_of_a_claims_directory() {
    let dir = setup(&config("  source: claims\n", "x-user-id: user.id", ""));
    let (grpc, http) = serve(dir.path()).await;
    let token = hs256("u-claims");
    assert!(check_bearer(grpc, &token).await.is_ok());
    assert_eq!(svix::deliver(http, "user.deleted", "u-claims").await, 200);
    assert_eq!(check_bearer(grpc, &token).await, Err(401), "cached token");
    assert_eq!(
        check_bearer(grpc, &hs256("u-claims")).await,
        Err(401),
        "fresh token"
    );
    assert!(check_bearer(grpc, &hs256("u-other")).await.is_ok());
}

#[tokio::test]
async fn a_cached_token_is_refused_where_its_issuer_does_not_look() {
    // Another issuer reads the `__session` cookie; `app` reads only Authorization.
    let cookie_issuer = "  - name: other\n    kind: user\n    issuer: other-auth\n    secret_file: secret\n    algorithms: [HS256]\n    credentials: [{ cookie: __session }]\n";
    let dir = setup(&config(
        "  source: claims\n",
        "x-user-id: user.id",
        cookie_issuer,
    ));
    let (grpc, _) = serve(dir.path()).await;
    let token = hs256("u-cookie");
    let in_cookie = |token: &str| {
        let cookie = format!("__session={token}");
        async move { check(grpc, "GET", "/x", &[("cookie", &cookie)]).await }
    };
    assert_eq!(
        in_cookie(&token).await,
        Err(401),
        "app's token in a cookie only `other` reads"
    );
    assert!(check_bearer(grpc, &token).await.is_ok());
    assert_eq!(
        in_cookie(&token).await,
        Err(401),
        "still not, once the token is cached from Authorization"
    );
}
