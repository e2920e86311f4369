//! `portcullis serve` with no config: the embedded dev defaults work as the README
//! says — a seeded SQLite directory, demo tokens that pass the quick-start policy
//! with the database's context, and a secret that survives restarts.

mod support;

use portcullis::config::dev;
use portcullis::server::Server;

async fn check(grpc: std::net::SocketAddr, path: &str, token: &str) -> support::check::Verdict {
    let bearer = format!("Bearer {token}");
    support::check::check(grpc, "GET", path, &[("authorization", &bearer)]).await
}

#[tokio::test]
async fn demo_tokens_get_the_database_context() {
    let dir = tempfile::tempdir().unwrap();
    let setup = tokio::task::spawn_blocking({
        let path = dir.path().to_owned();
        move || dev::setup(&path).unwrap()
    })
    .await
    .unwrap();
    assert!(
        dir.path().join("portcullis-dev.db").exists(),
        "the demo directory is created"
    );
    let mut config = setup.config;
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind(&config).await.unwrap();
    let grpc = server.grpc_addr();
    tokio::spawn(server.run(std::future::pending()));

    let user = &setup.tokens[0];
    let admin = &setup.tokens[1];
    let headers = check(grpc, "/api/videos", &user.token)
        .await
        .expect("demo-user reads videos");
    assert_eq!(headers.get("x-user-id").map(String::as_str), Some("1"));
    assert_eq!(headers.get("x-user-role").map(String::as_str), Some("USER"));
    assert_eq!(
        headers.get("x-user-channel-id").map(String::as_str),
        Some("channel-1")
    );
    assert_eq!(
        headers.get("x-user-clerk-id").map(String::as_str),
        Some("demo-user")
    );
    assert_eq!(check(grpc, "/api/admin/x", &user.token).await, Err(403));
    let headers = check(grpc, "/api/admin/x", &admin.token)
        .await
        .expect("demo-admin");
    assert_eq!(
        headers.get("x-user-role").map(String::as_str),
        Some("ADMIN")
    );

    // A restart keeps the secret (and the database), so old tokens still work.
    let again = tokio::task::spawn_blocking({
        let path = dir.path().to_owned();
        move || dev::setup(&path).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(again.secret, setup.secret);
}
