//! The config file is watched too: a valid change (headers, issuers) applies to the
//! next checks; a broken one is refused with the error on `/readyz` while the
//! previous config keeps serving.

use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context::{HttpRequest, Request as AttrRequest},
    authorization_client::AuthorizationClient,
    check_response::HttpResponse,
    AttributeContext, CheckRequest,
};
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

/// The headers an allowed check sets.
async fn set_headers(client: &mut AuthorizationClient<tonic::transport::Channel>) -> Vec<String> {
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/x".into(),
                    headers: [
                        ("authorization".to_string(), format!("Bearer {}", token())),
                        ("x-request-id".to_string(), "r-1".to_string()),
                    ]
                    .into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let response = client.check(request).await.unwrap().into_inner();
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok
            .headers
            .into_iter()
            .filter_map(|h| h.header)
            .map(|h| h.key)
            .collect(),
        other => panic!("expected allow: {other:?}"),
    }
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
    let mut client = AuthorizationClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    assert_eq!(set_headers(&mut client).await, vec!["x-user-id"]);

    let tmp = dir.path().join("portcullis.yaml.tmp");
    std::fs::write(&tmp, config("x-user-id: user.id, x-user-team: token.team")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let start = Instant::now();
    while set_headers(&mut client).await.len() != 2 {
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
    let mut headers = set_headers(&mut client).await;
    headers.sort();
    assert_eq!(
        headers,
        vec!["x-user-id", "x-user-team"],
        "the previous config still serves"
    );
}
