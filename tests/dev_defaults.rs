//! `portcullis serve` with no config: the embedded dev defaults work as the README
//! says — a seeded SQLite directory, demo tokens that pass the quick-start policy
//! with the database's context, and a secret that survives restarts.

use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context::{HttpRequest, Request as AttrRequest},
    authorization_client::AuthorizationClient,
    check_response::HttpResponse,
    AttributeContext, CheckRequest,
};
use portcullis::config::dev;
use portcullis::server::Server;
use std::collections::HashMap;

async fn check(client: &mut AuthorizationClient<tonic::transport::Channel>, path: &str, token: &str) -> Result<HashMap<String, String>, i32> {
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    headers: [("authorization".to_string(), format!("Bearer {token}"))].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    match client.check(request).await.unwrap().into_inner().http_response {
        Some(HttpResponse::OkResponse(ok)) => Ok(ok
            .headers
            .into_iter()
            .filter_map(|h| h.header)
            .map(|h| (h.key, h.value))
            .collect()),
        Some(HttpResponse::DeniedResponse(d)) => Err(d.status.unwrap().code),
        other => panic!("unexpected {other:?}"),
    }
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
    assert!(dir.path().join("portcullis-dev.db").exists(), "the demo directory is created");
    let mut config = setup.config;
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind(&config).await.unwrap();
    let grpc = server.grpc_addr();
    tokio::spawn(server.run(std::future::pending()));
    let mut client = AuthorizationClient::connect(format!("http://{grpc}")).await.unwrap();

    let user = &setup.tokens[0];
    let admin = &setup.tokens[1];
    let headers = check(&mut client, "/api/videos", &user.token).await.expect("demo-user reads videos");
    assert_eq!(headers.get("x-user-id").map(String::as_str), Some("1"));
    assert_eq!(headers.get("x-user-role").map(String::as_str), Some("USER"));
    assert_eq!(headers.get("x-user-channel-id").map(String::as_str), Some("channel-1"));
    assert_eq!(headers.get("x-user-clerk-id").map(String::as_str), Some("demo-user"));
    assert_eq!(check(&mut client, "/api/admin/x", &user.token).await, Err(403));
    let headers = check(&mut client, "/api/admin/x", &admin.token).await.expect("demo-admin");
    assert_eq!(headers.get("x-user-role").map(String::as_str), Some("ADMIN"));

    // A restart keeps the secret (and the database), so old tokens still work.
    let again = tokio::task::spawn_blocking({
        let path = dir.path().to_owned();
        move || dev::setup(&path).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(again.secret, setup.secret);
}
