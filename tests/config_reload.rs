//! The config file is watched too: a valid change (headers, issuers) applies to the
//! next checks; a broken one is refused with the error on `/readyz` while the
//! previous config keeps serving.

mod support;

use portcullis::config::Config;
use portcullis::server::Server;
use std::time::{Duration, Instant};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn config(headers: &str) -> String {
    format!(
        "\
server: {{ grpc_listen: 127.0.0.1:0, http_listen: 127.0.0.1:0 }}
issuers:
  - name: app
    kind: user
    issuer: example-auth
    secret_file: secret
    algorithms: [HS256]
headers:
  user: {{ {headers} }}
policy: policy.yaml
"
    )
}

fn token() -> String {
    let claims = serde_json::json!({"iss": "example-auth", "sub": "u-1", "role": "USER", "team": "blue",
        "exp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The headers an allowed check sets, sorted.
async fn set_headers(grpc: std::net::SocketAddr) -> Vec<String> {
    let bearer = format!("Bearer {}", token());
    let headers = support::check::check(
        grpc,
        "GET",
        "/x",
        &[("authorization", &bearer), ("x-request-id", "r-1")],
    )
    .await
    .expect("allowed");
    let mut names: Vec<String> = headers.into_keys().collect();
    names.sort();
    names
}

#[tokio::test]
async fn config_changes_apply_and_broken_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        "rules:\n  - name: all\n    from: authenticated\n",
    )
    .unwrap();
    let file = dir.path().join("portcullis.yaml");
    std::fs::write(&file, config("x-user-id: user.id")).unwrap();
    let server = Server::bind(&Config::load(&file).unwrap()).await.unwrap();
    let (grpc, http) = (server.grpc_addr(), server.http_addr());
    tokio::spawn(server.run(std::future::pending()));
    assert_eq!(set_headers(grpc).await, vec!["x-user-id"]);

    let tmp = dir.path().join("portcullis.yaml.tmp");
    std::fs::write(&tmp, config("x-user-id: user.id, x-user-team: token.team")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let start = Instant::now();
    while set_headers(grpc).await.len() != 2 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the new header mapping never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::write(&tmp, config("x-user-id: user.id, X-Bad: nope")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let start = Instant::now();
    let body = loop {
        let body = reqwest::get(format!("http://{http}/readyz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains("config reload failed") {
            break body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no reload error: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        body.contains("portcullis.yaml:9"),
        "the error names file and line: {body}"
    );
    let headers = set_headers(grpc).await;
    assert_eq!(
        headers,
        vec!["x-user-id", "x-user-team"],
        "the previous config still serves"
    );
}

/// With a user directory and no header reading claims, a verified token is
/// cached without its claims; a policy reloaded to read `token.*` must still
/// see every claim of it.
#[tokio::test]
async fn a_policy_that_starts_reading_claims_sees_tokens_cached_before() {
    use sqlx::{Connection as _, Executor as _};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let db = dir.path().join("users.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    conn.execute("CREATE TABLE users (sub TEXT, id TEXT, role TEXT); INSERT INTO users VALUES ('u-1', '1', 'USER');")
        .await
        .unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules:\n  - name: all\n    from: authenticated\n").unwrap();
    let file = dir.path().join("portcullis.yaml");
    std::fs::write(
        &file,
        format!(
            "{}users:\n  source: sqlite://{}\n  query: SELECT id, role FROM users WHERE sub = $1\n",
            config("x-user-id: user.id"),
            db.display()
        ),
    )
    .unwrap();
    let server = Server::bind(&Config::load(&file).unwrap()).await.unwrap();
    let grpc = server.grpc_addr();
    tokio::spawn(server.run(std::future::pending()));
    let bearer = format!("Bearer {}", token());
    let check = |path: &'static str| {
        let bearer = bearer.clone();
        async move {
            support::check::check(grpc, "GET", path, &[("authorization", &bearer)])
                .await
                .map(|_| ())
        }
    };
    assert_eq!(check("/blue").await, Ok(()), "cached, no claim read");

    let tmp = dir.path().join("policy.yaml.tmp");
    std::fs::write(
        &tmp,
        "rules:\n  - name: blue-team\n    to: { paths: [/blue] }\n    from: authenticated\n    when: token.team == \"blue\" && token.role == \"USER\"\n",
    )
    .unwrap();
    std::fs::rename(&tmp, &policy).unwrap();
    let start = Instant::now();
    while check("/other").await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the new policy never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        check("/blue").await,
        Ok(()),
        "the cached token's claims are read by the new rule"
    );
}
