//! Global rate limits across replicas, end to end: two portcullis processes
//! behind the shipped front proxy (`mesh/envoy/front-proxy.yaml`, round robin
//! over both), counting in a private `redis-server` this test stops and starts
//! again (docs/rate-limits.md).
//!
//! - the client sees `RateLimit-Policy`/`RateLimit` on allowed responses, and a
//!   429 with `Retry-After`, both headers and the JSON body, through Envoy;
//! - a global `10/s` holds across the two: a quick burst of 20 gets at most 10
//!   plus what the rate refills while it runs through, not 20;
//! - with Redis stopped, each replica counts locally: limits still apply (some
//!   429s, some allows, never all of one), `/readyz` and the metrics say so;
//! - with Redis back, both count in it again: a burst is held to the global limit;
//! - with Redis frozen (SIGSTOP), checks still answer from the local buckets and
//!   `/readyz` says so; thawed, both count in Redis again.
//!
//! Answers are asserted, never timings: the slack for refills during a burst
//! is generous (the burst itself takes a few milliseconds).

mod support;

use std::time::{Duration, Instant};
use support::envoy::front_proxy_for_two;
use support::redis_server::RedisServer;
use support::{
    ClerkClaims, EchoUpstream, Envoy, JwksServer, Portcullis, PortcullisConfig, SigningKey,
};

const POLICY: &str = "\
default: deny
rules:
  - name: videos-read
    to: { paths: [/api/videos, /api/videos/**], methods: [GET] }
    from: { users: { roles: [USER, ADMIN] } }
    rate_limit: { per: user, rate: 1/m, burst: 2, scope: global }
  - name: burst
    to: { paths: [/burst] }
    from: anyone
    rate_limit: { per: rule, rate: 10/s, scope: global }
";

/// The burst a quick run may get through beyond `burst: 10`: what 10/s refills
/// in 400 ms. Two replicas counting apart would let 20 through.
const REFILL_SLACK: usize = 4;

/// Waits until `/readyz` of `replica` says global limits count as `counting`.
async fn counting(replica: &Portcullis, counting: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = replica
            .http(http::Method::GET, "/readyz")
            .send()
            .await
            .json();
        if ready["rate_limits"]["counting"] == counting {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "never counting as {counting}: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `n` GETs of `/burst` through Envoy at once; returns (allowed, refused).
async fn burst(envoy: &Envoy, n: usize) -> (usize, usize) {
    let sends = (0..n).map(|_| envoy.get("/burst").send());
    let statuses: Vec<u16> = futures_join(sends).await;
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(allowed + refused, n, "only 200 and 429: {statuses:?}");
    (allowed, refused)
}

async fn futures_join(
    sends: impl Iterator<
        Item = impl std::future::Future<Output = support::client::Response> + Send + 'static,
    >,
) -> Vec<u16> {
    let tasks: Vec<_> = sends.map(tokio::spawn).collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap().status);
    }
    statuses
}

/// `name`'s value in a Prometheus text exposition (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_limit_holds_across_two_replicas_through_envoy() {
    support::envoy::envoy_bin();
    let mut redis = RedisServer::start().await;
    let key = SigningKey::generate(support::FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoUpstream::start().await;
    let config = PortcullisConfig::user_traffic(jwks.uri())
        .with_policy(POLICY)
        .with_extra(&format!("state:\n  redis: {}\n", redis.url()));
    let replicas = [
        Portcullis::start(&config).await,
        Portcullis::start(&config).await,
    ];
    let envoy = front_proxy_for_two(
        [replicas[0].grpc_addr(), replicas[1].grpc_addr()],
        upstream.addr(),
    )
    .await;
    for replica in &replicas {
        counting(replica, "redis").await;
    }

    // The client's view: RateLimit on allows, then a 429 with Retry-After.
    let token = ClerkClaims::user("USER").sign(&key);
    let first = envoy.get("/api/videos").bearer(&token).send().await;
    assert_eq!(first.status, 200, "{first}");
    assert!(first.upstream().is_some(), "the upstream answered");
    // 1/m, burst 2: two at once, the bucket full again after 60 s per request.
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"videos-read\";q=2;w=120")
    );
    assert_eq!(first.header("ratelimit"), Some("\"videos-read\";r=1;t=60"));
    // The second goes to the other replica (round robin): the same bucket.
    let second = envoy.get("/api/videos").bearer(&token).send().await;
    assert_eq!(
        second.header("ratelimit"),
        Some("\"videos-read\";r=0;t=120"),
        "{second}"
    );
    let refused = envoy.get("/api/videos").bearer(&token).send().await;
    assert_eq!(refused.status, 429, "{refused}");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{refused}");
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"videos-read\";q=2;w=120")
    );
    assert!(refused
        .header("ratelimit")
        .unwrap()
        .starts_with("\"videos-read\";r=0;t="));
    assert_eq!(refused.json()["error"], "rate_limited");

    // 10/s across both replicas: a quick burst of 20 gets ten (plus refills).
    let (allowed, refused) = burst(&envoy, 20).await;
    assert!(
        (10..=10 + REFILL_SLACK).contains(&allowed),
        "{allowed} allowed, {refused} refused: the two replicas must share one bucket"
    );
    for replica in &replicas {
        let metrics = replica
            .http(http::Method::GET, "/metrics")
            .send()
            .await
            .text();
        let decided = metric(
            &metrics,
            r#"portcullis_decisions_total{result="allow",rule="burst",principal="anonymous",stage="policy"}"#,
        ) + metric(
            &metrics,
            r#"portcullis_decisions_total{result="deny",rule="burst",principal="anonymous",stage="policy"}"#,
        );
        assert!(decided > 0.0, "both replicas took part:\n{metrics}");
    }

    // Redis stops: each replica counts on its own — limits hold, nobody is shut out.
    redis.stop();
    for replica in &replicas {
        let ready = counting(replica, "local-fallback").await;
        assert_eq!(ready["ready"], true, "{ready}");
    }
    let (allowed, refused) = burst(&envoy, 40).await;
    assert!(
        allowed >= 10 && refused > 0 && allowed <= 20 + 2 * REFILL_SLACK,
        "{allowed} allowed, {refused} refused while counting locally"
    );
    let mut fallbacks = 0.0;
    for replica in &replicas {
        let metrics = replica
            .http(http::Method::GET, "/metrics")
            .send()
            .await
            .text();
        fallbacks += metric(&metrics, "portcullis_rate_limit_fallbacks_total");
    }
    assert!(
        fallbacks >= 40.0,
        "every check of the burst fell back: {fallbacks}"
    );

    // Redis is back: both count in it again, one bucket between them.
    redis.restart().await;
    for replica in &replicas {
        counting(replica, "redis").await;
    }
    let (allowed, refused) = burst(&envoy, 20).await;
    assert!(
        (10..=10 + REFILL_SLACK).contains(&allowed),
        "{allowed} allowed, {refused} refused after Redis came back"
    );

    // Redis freezes (SIGSTOP: connections open, nothing answered): every
    // check still answers, from the local buckets, and `/readyz` says so.
    redis.pause();
    let (allowed, refused) = burst(&envoy, 40).await;
    assert!(
        allowed >= 1 && refused > 0,
        "{allowed} allowed, {refused} refused while Redis was frozen"
    );
    for replica in &replicas {
        let ready = counting(replica, "local-fallback").await;
        assert_eq!(ready["ready"], true, "{ready}");
    }
    // Thawed (SIGCONT): a probe answers in time and both count in Redis again.
    redis.resume();
    for replica in &replicas {
        counting(replica, "redis").await;
    }
}
