//! The remote key set against a loopback JWKS endpoint: one fetch shared by
//! concurrent requests for a new `kid`, the refetch interval, the last good key set
//! kept through bad responses (oversized, not JSON, 500), and the fetch counter.

mod support;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use portcullis::identity::jwks::{JwksCache, JwksTiming, MAX_JWKS_BYTES};
use portcullis::metrics::Metrics;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::tokens::{jwk_set, SigningKey};

#[derive(Clone)]
enum Reply {
    Jwks(String),
    Status(u16),
    Body(String),
}

#[derive(Clone, Default)]
struct Endpoint {
    reply: Arc<Mutex<Option<Reply>>>,
    fetches: Arc<AtomicUsize>,
}

async fn serve(State(e): State<Endpoint>) -> impl IntoResponse {
    e.fetches.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    match e.reply.lock().unwrap().clone().unwrap() {
        Reply::Jwks(body) => {
            (StatusCode::OK, [("cache-control", "max-age=300")], body).into_response()
        }
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::Body(body) => (StatusCode::OK, body).into_response(),
    }
}

async fn endpoint() -> (Endpoint, String) {
    let endpoint = Endpoint::default();
    let router = Router::new()
        .route("/jwks.json", get(serve))
        .with_state(endpoint.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (endpoint, format!("http://{addr}/jwks.json"))
}

fn set_reply(e: &Endpoint, reply: Reply) {
    *e.reply.lock().unwrap() = Some(reply);
}

#[tokio::test]
async fn concurrent_requests_for_a_new_kid_share_one_fetch() {
    let (endpoint, uri) = endpoint().await;
    let (a, b) = (SigningKey::generate("a"), SigningKey::generate("b"));
    set_reply(&endpoint, Reply::Jwks(jwk_set(&[&a]).to_string()));
    let timing = JwksTiming {
        min_refetch: Duration::from_secs(30),
        ..JwksTiming::default()
    };
    let cache = JwksCache::new("clerk", &uri, timing, Arc::new(Metrics::default()));
    assert!(cache.current().is_none(), "nothing before the first fetch");
    let keys = cache.refetch_for_kid(Some("a")).await.expect("first fetch");
    assert!(keys.has_kid("a"));
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 1);

    // The issuer rotates to `b`; 500 requests name it at once.
    set_reply(&endpoint, Reply::Jwks(jwk_set(&[&a, &b]).to_string()));
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.refetch_for_kid(Some("b")).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().unwrap().has_kid("b"));
    }
    assert_eq!(
        endpoint.fetches.load(Ordering::SeqCst),
        2,
        "one fetch for 500 waiters"
    );

    // Another unknown kid within the interval: no fetch, the current set answers.
    let keys = cache.refetch_for_kid(Some("c")).await.unwrap();
    assert!(!keys.has_kid("c"));
    assert_eq!(
        endpoint.fetches.load(Ordering::SeqCst),
        2,
        "refetch interval honoured"
    );
}

/// The refetch interval is measured on tokio's clock, which the test moves:
/// nothing sleeps through the 30 s.
#[tokio::test]
async fn an_unknown_kid_refetches_once_the_interval_has_passed() {
    let (endpoint, uri) = endpoint().await;
    let (a, b) = (SigningKey::generate("a"), SigningKey::generate("b"));
    set_reply(&endpoint, Reply::Jwks(jwk_set(&[&a]).to_string()));
    let timing = JwksTiming {
        min_refetch: Duration::from_secs(30),
        ..JwksTiming::default()
    };
    let cache = JwksCache::new("clerk", &uri, timing, Arc::new(Metrics::default()));
    cache.refetch_for_kid(Some("a")).await.expect("first fetch");
    // An unknown kid: one refetch, which does not find it.
    assert!(!cache.refetch_for_kid(Some("b")).await.unwrap().has_kid("b"));
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 2);
    set_reply(&endpoint, Reply::Jwks(jwk_set(&[&a, &b]).to_string()));

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(29)).await;
    tokio::time::resume();
    assert!(
        !cache.refetch_for_kid(Some("b")).await.unwrap().has_kid("b"),
        "29 s later: still within the interval"
    );
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 2);

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(2)).await;
    tokio::time::resume();
    assert!(
        cache.refetch_for_kid(Some("b")).await.unwrap().has_kid("b"),
        "31 s later: refetched"
    );
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_last_good_key_set_survives_bad_responses() {
    let (endpoint, uri) = endpoint().await;
    let a = SigningKey::generate("a");
    set_reply(&endpoint, Reply::Jwks(jwk_set(&[&a]).to_string()));
    let metrics = Arc::new(Metrics::default());
    // No refetch interval, so every unknown kid fetches.
    let timing = JwksTiming {
        min_refetch: Duration::ZERO,
        ..JwksTiming::default()
    };
    let cache = JwksCache::new("clerk", &uri, timing, Arc::clone(&metrics));
    cache.refetch_for_kid(None).await.expect("loaded");
    let oversized = format!(
        "{{\"keys\": [], \"pad\": \"{}\"}}",
        "x".repeat(MAX_JWKS_BYTES)
    );
    for bad in [
        Reply::Body(oversized),
        Reply::Body("<html>not json</html>".into()),
        Reply::Body(r#"{"keys": []}"#.into()),
        Reply::Status(500),
        Reply::Status(302),
    ] {
        set_reply(&endpoint, bad);
        let keys = cache.refetch_for_kid(Some("new")).await.expect("keys kept");
        assert!(keys.has_kid("a"), "the last good set is still served");
    }
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 6);
    let text = metrics.encode();
    assert!(
        text.contains(r#"portcullis_jwks_fetch_total{issuer="clerk",result="success"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_jwks_fetch_total{issuer="clerk",result="error"} 5"#),
        "{text}"
    );
}

#[tokio::test]
async fn the_refresher_loads_keys_in_the_background() {
    let (endpoint, uri) = endpoint().await;
    let a = SigningKey::generate("a");
    set_reply(&endpoint, Reply::Status(503));
    let cache = JwksCache::new(
        "clerk",
        &uri,
        JwksTiming::default(),
        Arc::new(Metrics::default()),
    );
    let refresher = cache.spawn_refresher();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cache.current().is_none(), "still down: not ready");
    set_reply(&endpoint, Reply::Jwks(jwk_set(&[&a]).to_string()));
    // The refresher retries with backoff (1 s, then 2 s, ...).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cache.current().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "refresher never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cache.current().unwrap().has_kid("a"));
    refresher.abort();
}
