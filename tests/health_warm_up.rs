//! gRPC health says NOT_SERVING until every issuer's keys are loaded, so Envoy
//! sends a replica that just started (a rolling restart) no Check it would
//! answer 503; once the JWKS answers, SERVING.

mod support;

use axum::http::StatusCode;
use portcullis::config::Config;
use portcullis::server::Server;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{LoopbackServer, SigningKey};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

#[tokio::test]
async fn not_serving_until_the_keys_are_loaded() {
    let key = SigningKey::generate("k1");
    let jwks = support::tokens::jwk_set(&[&key]).to_string();
    let up = Arc::new(AtomicBool::new(false));
    let router = {
        let up = Arc::clone(&up);
        axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (up, jwks) = (up.load(Ordering::SeqCst), jwks.clone());
                async move {
                    if up {
                        (StatusCode::OK, jwks)
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, String::new())
                    }
                }
            }),
        )
    };
    let endpoint = LoopbackServer::start(router).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), "rules: []\n").unwrap();
    let file = dir.path().join("portcullis.yaml");
    std::fs::write(
        &file,
        format!(
            "server: {{ grpc_listen: 127.0.0.1:0, http_listen: 127.0.0.1:0 }}\nissuers:\n  - name: clerk\n    kind: user\n    issuer: https://clerk.example.test\n    jwks_uri: http://{}/jwks.json\n    algorithms: [RS256]\npolicy: policy.yaml\n",
            endpoint.addr()
        ),
    )
    .unwrap();
    let server = Server::bind(&Config::load(&file).unwrap()).await.unwrap();
    let grpc = server.grpc_addr();
    tokio::spawn(server.run(std::future::pending()));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let answer = health.check(status(service)).await.unwrap().into_inner();
        assert_eq!(
            answer.status,
            ServingStatus::NotServing as i32,
            "{service:?} without keys"
        );
    }

    up.store(true, Ordering::SeqCst);
    // The refresher retries after 1 s.
    let start = Instant::now();
    loop {
        let answer = health.check(status("")).await.unwrap().into_inner();
        if answer.status == ServingStatus::Serving as i32 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never SERVING once the JWKS answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = health
        .check(status("envoy.service.auth.v3.Authorization"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status, ServingStatus::Serving as i32);
}
