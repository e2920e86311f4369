//! A rolling restart fails no request: two portcullis replicas behind a real
//! Envoy running the shipped front proxy (`mesh/envoy/front-proxy.yaml`: gRPC
//! health checks, retries on the ext_authz `grpc_service`, outlier detection),
//! a load loop through Envoy, and each replica stopped with SIGTERM and started
//! again in turn. SIGTERM says NOT_SERVING at once, keeps answering for
//! `server.drain_delay`, then closes with GOAWAY and exits 0 within
//! `drain_delay + shutdown_timeout`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::envoy::{both_healthy, front_proxy_for_two};
use support::{
    ClerkClaims, EchoUpstream, JwksServer, Portcullis, PortcullisConfig, RequestBuilder, SigningKey,
};

const DRAIN_DELAY: Duration = Duration::from_secs(3);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_turn_fails_no_request() {
    let key = SigningKey::generate(support::FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoUpstream::start().await;
    let config = PortcullisConfig::user_traffic(jwks.uri()).with_server(&format!(
        "  drain_delay: {}s\n  shutdown_timeout: {}s\n",
        DRAIN_DELAY.as_secs(),
        SHUTDOWN_TIMEOUT.as_secs()
    ));
    let mut replicas = [
        Portcullis::start(&config).await,
        Portcullis::start(&config).await,
    ];
    let grpc = [replicas[0].grpc_addr(), replicas[1].grpc_addr()];
    let envoy = front_proxy_for_two(grpc, upstream.addr()).await;

    // The load: four clients in a loop, each request a fresh connection to Envoy.
    let token = ClerkClaims::user("USER").sign(&key);
    let running = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (running, sent, failures) = (
            Arc::clone(&running),
            Arc::clone(&sent),
            Arc::clone(&failures),
        );
        let (listener, token) = (envoy.addr(), token.clone());
        clients.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let answer = RequestBuilder::new(listener, http::Method::GET, "/api/videos")
                    .bearer(&token)
                    .try_send()
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
                match answer {
                    Ok(response) if response.status == 200 => {}
                    Ok(response) => failures.lock().unwrap().push(format!(
                        "{}: {}",
                        response.status,
                        response.text()
                    )),
                    Err(e) => failures.lock().unwrap().push(e),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    for replica in &mut replicas {
        let before = sent.load(Ordering::Relaxed);
        let stopped = Instant::now();
        replica.signal("TERM");
        // Still answering during the drain delay: readiness says no at once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let readyz = replica
            .http(http::Method::GET, "/readyz")
            .try_send()
            .await
            .expect("the HTTP listener still answers while draining");
        assert_eq!(
            readyz.status,
            503,
            "draining is not ready: {}",
            readyz.text()
        );
        assert!(
            readyz.text().contains("\"draining\":true"),
            "{}",
            readyz.text()
        );

        // Envoy's health checks take it out of rotation within the drain delay:
        // from ~2 s after SIGTERM it decides nothing more (mesh/envoy/front-proxy.yaml,
        // `no_traffic_interval`).
        tokio::time::sleep(Duration::from_millis(1900)).await;
        let early = decisions(replica).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            decisions(replica).await,
            early,
            "a draining replica still got Checks 2 s after SIGTERM"
        );

        let status = replica
            .wait_exit(DRAIN_DELAY + SHUTDOWN_TIMEOUT + Duration::from_secs(2))
            .await;
        let took = stopped.elapsed();
        assert!(status.success(), "SIGTERM exits 0, not {status}");
        assert!(
            took >= DRAIN_DELAY,
            "exited after {took:?}, before the drain delay ended"
        );
        replica.restart().await;
        both_healthy(&envoy, grpc).await;
        assert!(
            sent.load(Ordering::Relaxed) > before + 20,
            "the load kept running through the restart"
        );
    }

    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during the rolling restart, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(sent > 100, "only {sent} requests were sent");
}

#[tokio::test]
async fn sigint_skips_the_drain_delay() {
    let key = SigningKey::generate(support::FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let config = PortcullisConfig::user_traffic(jwks.uri())
        .with_server("  drain_delay: 30s\n  shutdown_timeout: 5s\n");
    let mut portcullis = Portcullis::start(&config).await;
    let stopped = Instant::now();
    portcullis.signal("INT");
    let status = portcullis.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "SIGINT exits 0, not {status}");
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "Ctrl-C does not wait out the 30 s drain delay"
    );
}

/// Every decision `replica` has counted (`portcullis_decisions_total`).
async fn decisions(replica: &Portcullis) -> f64 {
    let metrics = replica
        .http(http::Method::GET, "/metrics")
        .send()
        .await
        .text();
    metrics
        .lines()
        .filter(|line| line.starts_with("portcullis_decisions_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
