//! `POST /webhooks/clerk` against a running server with a real SQLite directory:
//! only a correctly signed, fresh, first delivery changes anything. Wrong secret,
//! stale timestamp, replay, malformed JSON, a 1 MiB body and missing headers are
//! all refused and leave the cached user as it was; `user.updated` evicts,
//! `user.deleted` denies at once.

mod support;

use portcullis::config::Config;
use portcullis::server::Server;
use sqlx::{Connection, Executor};
use std::net::SocketAddr;

const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef";
use support::svix::{event, now, sign, SECRET as WEBHOOK_SECRET};

fn token(sub: &str) -> String {
    let claims = serde_json::json!({"iss": "app", "sub": sub, "exp": now() + 300});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

struct Harness {
    http: SocketAddr,
    grpc: SocketAddr,
    db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("users.db");
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display()))
                .await
                .unwrap();
        conn.execute("CREATE TABLE users (id TEXT, clerk_id TEXT, role TEXT); INSERT INTO users VALUES ('1', 'user_a', 'USER');")
            .await
            .unwrap();
        std::fs::write(dir.path().join("jwt.secret"), JWT_SECRET).unwrap();
        std::fs::write(dir.path().join("clerk.secret"), WEBHOOK_SECRET).unwrap();
        std::fs::write(
            dir.path().join("policy.yaml"),
            "rules:\n  - name: all\n    from: authenticated\n  - name: clerk-webhook\n    to: { paths: [/api/webhook/clerk], methods: [POST] }\n    from: { webhooks: [clerk] }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("portcullis.yaml"),
            "\
server: { grpc_listen: 127.0.0.1:0, http_listen: 127.0.0.1:0 }
issuers:
  - { name: app, kind: user, issuer: app, secret_file: jwt.secret, algorithms: [HS256] }
users:
  source: sqlite://users.db
  query: SELECT id, role FROM users WHERE clerk_id = $1
webhooks:
  clerk: { secret_file: clerk.secret }
policy: policy.yaml
",
        )
        .unwrap();
        let config = Config::load(&dir.path().join("portcullis.yaml")).unwrap();
        let server = Server::bind(&config).await.unwrap();
        let (grpc, http) = (server.grpc_addr(), server.http_addr());
        tokio::spawn(server.run(std::future::pending()));
        Harness {
            http,
            grpc,
            db,
            _dir: dir,
        }
    }

    /// The role the upstream would get for user_a, or the deny status.
    async fn role(&mut self) -> Result<String, i32> {
        support::check::role(self.grpc, "/x", &token("user_a")).await
    }

    async fn set_role(&self, role: &str) {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.db.display()))
            .await
            .unwrap();
        conn.execute(format!("UPDATE users SET role = '{role}'").as_str())
            .await
            .unwrap();
    }

    async fn deliver(&self, headers: &[(&str, String)], body: Vec<u8>) -> (u16, String) {
        support::svix::post(self.http, headers, body).await
    }

    async fn signed(&self, secret: &str, id: &str, ts: u64, body: &[u8]) -> (u16, String) {
        support::svix::signed(self.http, secret, id, ts, body).await
    }
}

#[tokio::test]
async fn only_good_deliveries_change_the_cache() {
    let mut h = Harness::start().await;
    assert_eq!(h.role().await, Ok("USER".into()));
    h.set_role("ADMIN").await;
    assert_eq!(
        h.role().await,
        Ok("USER".into()),
        "cached until told otherwise"
    );

    let updated = event("user.updated", "user_a");
    let wrong_secret = "whsec_aGVsbG8gd29ybGQgdGhpcyBpcyBub3Q=";
    let cases: Vec<(&str, (u16, String))> = vec![
        (
            "wrong secret",
            h.signed(wrong_secret, "msg_1", now(), &updated).await,
        ),
        (
            "stale timestamp",
            h.signed(WEBHOOK_SECRET, "msg_2", now() - 600, &updated)
                .await,
        ),
        (
            "future timestamp",
            h.signed(WEBHOOK_SECRET, "msg_3", now() + 600, &updated)
                .await,
        ),
        (
            "malformed JSON",
            h.signed(WEBHOOK_SECRET, "msg_4", now(), b"{not json").await,
        ),
        (
            "1 MiB body",
            h.signed(WEBHOOK_SECRET, "msg_5", now(), &vec![b' '; 1024 * 1024])
                .await,
        ),
        ("no headers", h.deliver(&[], updated.clone()).await),
        (
            "signature over another body",
            h.deliver(
                &[
                    ("svix-id", "msg_6".into()),
                    ("svix-timestamp", now().to_string()),
                    (
                        "svix-signature",
                        sign(
                            WEBHOOK_SECRET,
                            "msg_6",
                            now(),
                            &event("user.updated", "user_z"),
                        ),
                    ),
                ],
                updated.clone(),
            )
            .await,
        ),
    ];
    let expected = [401, 401, 401, 400, 413, 400, 401];
    for ((name, (status, body)), want) in cases.into_iter().zip(expected) {
        assert_eq!(status, want, "{name}: {body}");
        assert_eq!(
            h.role().await,
            Ok("USER".into()),
            "{name} must change nothing"
        );
    }

    // A good user.updated evicts: the next check reads the new role.
    let (status, _) = h.signed(WEBHOOK_SECRET, "msg_ok", now(), &updated).await;
    assert_eq!(status, 200);
    assert_eq!(h.role().await, Ok("ADMIN".into()));

    // The same delivery again is a replay.
    h.set_role("USER").await;
    let (status, body) = h.signed(WEBHOOK_SECRET, "msg_ok", now(), &updated).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("replay"), "{body}");
    assert_eq!(
        h.role().await,
        Ok("ADMIN".into()),
        "a replay evicts nothing"
    );

    // user.created is accepted and ignored.
    let (status, _) = h
        .signed(
            WEBHOOK_SECRET,
            "msg_created",
            now(),
            &event("user.created", "user_new"),
        )
        .await;
    assert_eq!(status, 200);

    // user.deleted: refused at once (the row is still there).
    let (status, _) = h
        .signed(
            WEBHOOK_SECRET,
            "msg_del",
            now(),
            &event("user.deleted", "user_a"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(h.role().await, Err(401));
    let metrics = reqwest::get(format!("http://{}/metrics", h.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"portcullis_webhooks_total{webhook="clerk",result="accepted"} 3"#),
        "{metrics}"
    );
}

/// A webhook route forwarded to an upstream (docs/security.md): Envoy sends the body with
/// the Check (`with_request_body`), a valid Svix signature makes the caller the
/// `clerk` webhook principal for `from: { webhooks: [clerk] }`; a bad one is 401.
#[tokio::test]
async fn signed_webhooks_are_a_principal_on_forwarded_routes() {
    let h = Harness::start().await;
    let body = event("user.created", "user_new");
    let id = "msg_route";
    let ts = now();
    let route = |signature: String, body: Vec<u8>| {
        let mut request = support::check::request(
            "POST",
            "/api/webhook/clerk",
            &[
                ("svix-id", id),
                ("svix-timestamp", &ts.to_string()),
                ("svix-signature", &signature),
            ],
        );
        if let Some(http) = request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            http.raw_body = body;
        }
        request
    };
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://{}", h.grpc),
    )
    .await
    .unwrap();
    let status = |response: envoy_types::pb::envoy::service::auth::v3::CheckResponse| {
        use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
        match response.http_response {
            Some(HttpResponse::OkResponse(_)) => 200,
            Some(HttpResponse::DeniedResponse(d)) => d.status.unwrap().code,
            other => panic!("{other:?}"),
        }
    };
    let good = sign(WEBHOOK_SECRET, id, ts, &body);
    let ok = client
        .check(route(good.clone(), body.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status(ok),
        200,
        "a signed delivery is the clerk webhook principal"
    );
    // The same signature over another body, or no body at all: 401.
    let tampered = client
        .check(route(good.clone(), event("user.deleted", "user_a")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(tampered), 401);
    let empty = client
        .check(route(good, Vec::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(empty), 401);
    // Without a signature the caller is anonymous, and the webhook rule does not apply.
    let anonymous = support::check::check(h.grpc, "POST", "/api/webhook/clerk", &[]).await;
    assert_eq!(anonymous, Err(401));
}
