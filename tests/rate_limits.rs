//! Rate limits in-process (docs/rate-limits.md): the server on ephemeral ports
//! with a manual clock, driven by a tonic ext_authz client. Over the limit is a
//! 429 with `Retry-After`, `RateLimit-Policy` and `RateLimit` and the JSON body
//! of every deny; allows carry `RateLimit` for the client; each `per` counts its
//! own key; buckets outlive policy and config reloads; `scope: global` counts in
//! a (private) Redis shared by two servers, gives the same answers as a local
//! bucket at the same instants, falls back to local buckets while Redis is
//! down or frozen (visible in `/readyz` and the metrics) and counts in Redis
//! again once it is back; a TAT in Redis that no request could have left (a
//! slower rate, garbage) never locks a client out; an error Redis answers
//! counts that check locally and keeps the connection. IPv6 clients are
//! counted by their /64. Time is moved, never slept through.

mod support;

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, HeaderValueOption, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context::{HttpRequest, Peer, Request as AttrRequest, TlsSession},
    authorization_client::AuthorizationClient,
    check_response::HttpResponse,
    AttributeContext, CheckRequest, CheckResponse,
};
use portcullis::clock::Clock;
use portcullis::config::Config;
use portcullis::server::{Server, Stop};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::redis_server::RedisServer;
use support::RequestBuilder;
use tonic::transport::Channel;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

const POLICY: &str = "\
default: deny
rules:
  - name: videos-read
    to: { paths: [/api/videos/**], methods: [GET] }
    from: authenticated
    rate_limit: { per: user, rate: 2/s, burst: 3 }
  - name: by-token
    to: { paths: [/by-token] }
    from: authenticated
    rate_limit: { per: token, rate: 1/m }
  - name: by-ip
    to: { paths: [/by-ip] }
    from: anyone
    rate_limit: { per: ip, rate: 1/m }
  - name: by-service
    to: { paths: [/by-service] }
    from: authenticated
    rate_limit: { per: service, rate: 1/m }
  - name: by-rule
    to: { paths: [/by-rule] }
    from: anyone
    rate_limit: { per: rule, rate: 1/m }
  - name: global
    to: { paths: [/global] }
    from: anyone
    rate_limit: { per: rule, rate: 10/s, scope: global }
  - name: local-twin
    to: { paths: [/local-twin] }
    from: anyone
    rate_limit: { per: rule, rate: 10/s }
  - name: free
    to: { paths: [/free] }
    from: anyone
";

fn config(redis: Option<&str>, user_headers: &str) -> String {
    let state = redis.map_or(String::new(), |url| format!("state:\n  redis: {url}\n"));
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
users:
  source: claims
headers:
  user: {{ {user_headers} }}
{state}policy: policy.yaml
"
    )
}

fn token(sub: &str, jti: &str) -> String {
    let claims = serde_json::json!({"iss": "example-auth", "sub": sub, "jti": jti,
        "exp": support::svix::now() + 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A Check as Envoy sends it, from `address`, with `spiffe` as the mTLS peer.
#[derive(Default, Clone)]
struct Ask {
    path: &'static str,
    bearer: Option<String>,
    address: Option<&'static str>,
    spiffe: Option<&'static str>,
}

impl Ask {
    fn to(path: &'static str) -> Self {
        Ask {
            path,
            ..Ask::default()
        }
    }
    fn bearer(mut self, token: &str) -> Self {
        self.bearer = Some(format!("Bearer {token}"));
        self
    }
    fn at_ip(mut self, address: &'static str) -> Self {
        self.address = Some(address);
        self
    }
    fn by_service_id(mut self, spiffe: &'static str) -> Self {
        self.spiffe = Some(spiffe);
        self
    }

    fn request(&self) -> CheckRequest {
        let mut headers = HashMap::from([("x-request-id".to_owned(), "rid-1".to_owned())]);
        if let Some(bearer) = &self.bearer {
            headers.insert("authorization".into(), bearer.clone());
        }
        let source = Peer {
            principal: self.spiffe.unwrap_or_default().into(),
            address: self.address.map(|ip| Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(40_000)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(source),
                tls_session: self.spiffe.map(|_| TlsSession::default()),
                request: Some(AttrRequest {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        path: self.path.into(),
                        host: "api.example.test".into(),
                        headers,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
}

/// What the client gets: the status, the headers added to its response, the body.
#[derive(Debug, PartialEq)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn of(response: CheckResponse) -> Reply {
        let pairs = |headers: Vec<HeaderValueOption>| {
            headers
                .into_iter()
                .filter_map(|h| h.header)
                .map(|h| (h.key, h.value))
                .collect::<Vec<_>>()
        };
        match response.http_response {
            Some(HttpResponse::OkResponse(ok)) => Reply {
                status: 200,
                headers: pairs(ok.response_headers_to_add),
                body: String::new(),
            },
            Some(HttpResponse::DeniedResponse(denied)) => {
                let status = u16::try_from(denied.status.unwrap().code).unwrap();
                if status == 429 {
                    let grpc = response.status.map(|s| s.code);
                    assert_eq!(grpc, Some(8), "429 is RESOURCE_EXHAUSTED");
                }
                Reply {
                    status,
                    headers: pairs(denied.headers),
                    body: denied.body,
                }
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(h, _)| h == name)
            .map(|(_, v)| v.as_str())
    }

    /// `RateLimit`'s value, or the status when there is none.
    fn ratelimit(&self) -> (u16, Option<&str>) {
        (self.status, self.header("ratelimit"))
    }
}

struct Replica {
    client: AuthorizationClient<Channel>,
    http: SocketAddr,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Replica {
    async fn start(clock: &Clock, redis: Option<&str>) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), SECRET).unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        std::fs::write(
            dir.path().join("portcullis.yaml"),
            config(redis, "x-user-id: user.id"),
        )
        .unwrap();
        let config = Config::load(&dir.path().join("portcullis.yaml")).expect("config loads");
        let server = Server::bind_with_clock(&config, clock.clone())
            .await
            .expect("bind");
        let (grpc, http) = (server.grpc_addr(), server.http_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
            Stop::Immediate
        }));
        let client = AuthorizationClient::connect(format!("http://{grpc}"))
            .await
            .expect("connect");
        Replica {
            client,
            http,
            dir,
            _stop: stop,
        }
    }

    async fn ask(&mut self, ask: &Ask) -> Reply {
        let response = self
            .client
            .check(ask.request())
            .await
            .expect("Check never fails as an RPC")
            .into_inner();
        Reply::of(response)
    }

    /// The answer with the headers set on the upstream request (allow) instead.
    async fn ask_upstream(&mut self, ask: &Ask) -> Reply {
        let response = self.client.check(ask.request()).await.unwrap().into_inner();
        match response.http_response {
            Some(HttpResponse::OkResponse(ok)) => Reply {
                status: 200,
                headers: ok
                    .headers
                    .into_iter()
                    .filter_map(|h| h.header)
                    .map(|h| (h.key, h.value))
                    .collect(),
                body: String::new(),
            },
            _ => Reply::of(response),
        }
    }

    async fn statuses(&mut self, ask: &Ask, n: usize) -> Vec<u16> {
        let mut statuses = Vec::with_capacity(n);
        for _ in 0..n {
            statuses.push(self.ask(ask).await.status);
        }
        statuses
    }

    async fn readyz(&self) -> Value {
        RequestBuilder::new(self.http, http::Method::GET, "/readyz")
            .send()
            .await
            .json()
    }

    async fn metrics(&self) -> String {
        RequestBuilder::new(self.http, http::Method::GET, "/metrics")
            .send()
            .await
            .text()
    }

    /// Waits until `/readyz` says global limits count as `counting` (10 s at
    /// most), and the revocations are loaded (until then a token is a 503).
    async fn counting(&self, counting: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = self.readyz().await;
            if ready["rate_limits"]["counting"] == counting
                && ready["revocations"]["loaded"] == true
            {
                return ready;
            }
            assert!(
                Instant::now() < deadline,
                "global limits never counted as {counting}: {ready}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn over_the_limit_is_a_429_with_retry_after_and_the_draft_headers() {
    let clock = Clock::manual();
    let mut replica = Replica::start(&clock, None).await;
    let alice = Ask::to("/api/videos/1").bearer(&token("alice", "a1"));
    // 2/s, burst 3: three at one instant, the remaining count going down.
    for (remaining, reset) in [(2, 1), (1, 1), (0, 2)] {
        let reply = replica.ask(&alice).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.headers,
            [
                (
                    "ratelimit-policy".to_owned(),
                    "\"videos-read\";q=3;w=2".to_owned()
                ),
                (
                    "ratelimit".to_owned(),
                    format!("\"videos-read\";r={remaining};t={reset}")
                ),
            ]
        );
    }
    let refused = replica.ask(&alice).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"videos-read\";q=3;w=2")
    );
    assert_eq!(refused.header("ratelimit"), Some("\"videos-read\";r=0;t=2"));
    assert_eq!(refused.header("content-type"), Some("application/json"));
    assert_eq!(
        json(&refused.body),
        serde_json::json!({
            "error": "rate_limited",
            "message": "rate limit of rule 'videos-read' exceeded (2 per second, burst 3); retry after 1 s",
            "request_id": "rid-1",
        })
    );
    // Another user has a bucket of their own; a rule without a limit says nothing.
    let bob = Ask::to("/api/videos/1").bearer(&token("bob", "b1"));
    assert_eq!(
        replica.ask(&bob).await.ratelimit(),
        (200, Some("\"videos-read\";r=2;t=1"))
    );
    let free = replica.ask(&Ask::to("/free")).await;
    assert_eq!((free.status, free.headers.len()), (200, 0));
    // 499 ms later still refused; at 500 ms one more (one every 500 ms).
    clock.advance(Duration::from_millis(499));
    assert_eq!(replica.ask(&alice).await.status, 429);
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        replica.ask(&alice).await.ratelimit(),
        (200, Some("\"videos-read\";r=0;t=2"))
    );
    assert_eq!(replica.ask(&alice).await.status, 429);
    // After a whole window the burst is back.
    clock.advance(Duration::from_millis(1_500));
    assert_eq!(replica.statuses(&alice, 4).await, [200, 200, 200, 429]);
    let metrics = replica.metrics().await;
    assert!(
        metrics.contains(r#"portcullis_rate_limited_total{rule="videos-read",per="user"} 4"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn each_per_counts_its_own_key() {
    let clock = Clock::manual();
    let mut replica = Replica::start(&clock, None).await;
    let (one, other) = (token("carol", "c1"), token("carol", "c2"));
    // per: user — one user, two tokens: one bucket.
    let videos = |t: &str| Ask::to("/api/videos/x").bearer(t);
    assert_eq!(replica.statuses(&videos(&one), 2).await, [200, 200]);
    assert_eq!(replica.statuses(&videos(&other), 2).await, [200, 429]);
    // per: token — the same user's second token is a bucket of its own.
    let by_token = |t: &str| Ask::to("/by-token").bearer(t);
    assert_eq!(replica.statuses(&by_token(&one), 2).await, [200, 429]);
    assert_eq!(replica.statuses(&by_token(&other), 2).await, [200, 429]);
    // per: ip — Envoy's source address.
    let by_ip = |ip| Ask::to("/by-ip").at_ip(ip);
    assert_eq!(replica.statuses(&by_ip("203.0.113.1"), 2).await, [200, 429]);
    assert_eq!(replica.statuses(&by_ip("203.0.113.2"), 2).await, [200, 429]);
    // per: service — the caller's SPIFFE ID.
    let by_service = |id| Ask::to("/by-service").by_service_id(id);
    let videos_svc = "spiffe://example.org/ns/default/sa/videos";
    let channels_svc = "spiffe://example.org/ns/default/sa/channels";
    assert_eq!(
        replica.statuses(&by_service(videos_svc), 2).await,
        [200, 429]
    );
    assert_eq!(
        replica.statuses(&by_service(channels_svc), 2).await,
        [200, 429]
    );
    // per: service on a user: the user's own identity is the key.
    assert_eq!(
        replica
            .statuses(&Ask::to("/by-service").bearer(&one), 2)
            .await,
        [200, 429]
    );
    // per: rule — everyone together.
    assert_eq!(
        replica
            .ask(&Ask::to("/by-rule").at_ip("203.0.113.1"))
            .await
            .status,
        200
    );
    assert_eq!(
        replica
            .ask(&Ask::to("/by-rule").at_ip("203.0.113.2"))
            .await
            .status,
        429
    );
    // A minute later (1/m) every bucket has one again.
    clock.advance(Duration::from_secs(60));
    assert_eq!(replica.ask(&by_ip("203.0.113.1")).await.status, 200);
    assert_eq!(replica.ask(&by_token(&one)).await.status, 200);
    assert_eq!(replica.ask(&Ask::to("/by-rule")).await.status, 200);
}

/// Replaces `name` in `dir` by a rename (as an editor or a ConfigMap does) and
/// waits until `reloaded` says the new version decides.
async fn replace(
    dir: &Path,
    name: &str,
    text: &str,
    replica: &mut Replica,
    probe: &Ask,
    reloaded: impl Fn(&Reply) -> bool,
) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !reloaded(&replica.ask_upstream(probe).await) {
        assert!(Instant::now() < deadline, "{name} never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn buckets_outlive_policy_and_config_reloads() {
    let clock = Clock::manual();
    let mut replica = Replica::start(&clock, None).await;
    let dave = Ask::to("/api/videos/1").bearer(&token("dave", "d1"));
    assert_eq!(replica.statuses(&dave, 4).await, [200, 200, 200, 429]);
    let dir = replica.dir.path().to_owned();

    let policy =
        format!("{POLICY}  - name: added\n    to: {{ paths: [/added] }}\n    from: anyone\n");
    let added = Ask::to("/added");
    replace(&dir, "policy.yaml", &policy, &mut replica, &added, |r| {
        r.status == 200
    })
    .await;
    assert_eq!(
        replica.ask(&dave).await.status,
        429,
        "a policy reload keeps the bucket"
    );

    // A config reload (one more user header), seen on an unlimited route.
    let config = config(None, "x-user-id: user.id, x-user-sub: token.sub");
    let free = Ask::to("/free").bearer(&token("frank", "f1"));
    replace(&dir, "portcullis.yaml", &config, &mut replica, &free, |r| {
        r.header("x-user-sub") == Some("frank")
    })
    .await;
    assert_eq!(
        replica.ask(&dave).await.status,
        429,
        "a config reload keeps the bucket"
    );
    clock.advance(Duration::from_millis(500));
    assert_eq!(replica.ask(&dave).await.status, 200);
    assert_eq!(replica.ask(&dave).await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limits_hold_across_replicas_fall_back_and_recover() {
    let mut redis = RedisServer::start().await;
    let clock = Clock::manual();
    let mut a = Replica::start(&clock, Some(&redis.url())).await;
    let mut b = Replica::start(&clock, Some(&redis.url())).await;
    a.counting("redis").await;
    b.counting("redis").await;
    let global = Ask::to("/global");

    // The same answers as a local bucket at the same instants (the script is
    // gcra.rs): a burst of ten and two refused, then the steady rate.
    let twin = Ask::to("/local-twin");
    let steps = [0; 12].into_iter().chain([99, 1, 0, 250, 1_000, 0, 0, 0]);
    for step in steps {
        clock.advance(Duration::from_millis(step));
        let (remote, local) = (a.ask(&global).await, a.ask(&twin).await);
        let renamed: Vec<(String, String)> = local
            .headers
            .iter()
            .map(|(h, v)| (h.clone(), v.replace("local-twin", "global")))
            .collect();
        assert_eq!(
            (remote.status, &remote.headers),
            (local.status, &renamed),
            "+{step} ms"
        );
    }

    // 10/s, burst 10, one bucket in Redis: ten between the two, then 429 on both.
    clock.advance(Duration::from_secs(2));
    assert_eq!(a.statuses(&global, 5).await, [200; 5]);
    assert_eq!(b.statuses(&global, 5).await, [200; 5]);
    assert_eq!(a.ask(&global).await.status, 429);
    assert_eq!(b.ask(&global).await.status, 429);
    let mut keys = redis.connection().await;
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg("portcullis:ratelimit:*")
        .query_async(&mut keys)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        stored[0].starts_with("portcullis:ratelimit:global:rule:"),
        "{stored:?}"
    );

    // Redis goes away: limits still hold, per replica, from the local bucket.
    redis.stop();
    a.counting("local-fallback").await;
    b.counting("local-fallback").await;
    clock.advance(Duration::from_secs(1));
    let first = a.ask(&global).await;
    assert_eq!(first.status, 200, "never deny-all");
    assert_eq!(a.statuses(&global, 10).await[9], 429, "never unlimited");
    let ready = a.counting("local-fallback").await;
    assert_eq!(ready["ready"], true, "{ready}");
    let metrics = a.metrics().await;
    let fallbacks: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_rate_limit_fallbacks_total "))
        .expect("the fallback counter")
        .parse()
        .unwrap();
    assert!(fallbacks >= 11.0, "{metrics}");

    // Redis is back: both replicas count in it again (an empty one: restarted).
    redis.restart().await;
    a.counting("redis").await;
    b.counting("redis").await;
    clock.advance(Duration::from_secs(1));
    assert_eq!(a.statuses(&global, 6).await, [200; 6]);
    assert_eq!(b.statuses(&global, 5).await, [200, 200, 200, 200, 429]);
}

#[tokio::test]
async fn ipv6_clients_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
    let clock = Clock::manual();
    let mut replica = Replica::start(&clock, None).await;
    let by_ip = |ip| Ask::to("/by-ip").at_ip(ip);
    // Another address of the same /64 is the same client: no fresh bucket.
    assert_eq!(replica.ask(&by_ip("2001:db8:1:2::1")).await.status, 200);
    assert_eq!(
        replica
            .ask(&by_ip("2001:db8:1:2:dead:beef:0:7"))
            .await
            .status,
        429
    );
    assert_eq!(
        replica
            .ask(&by_ip("2001:0DB8:0001:0002::ffff"))
            .await
            .status,
        429,
        "any spelling"
    );
    // The next /64 is someone else.
    assert_eq!(replica.ask(&by_ip("2001:db8:1:3::1")).await.status, 200);
    // An IPv4 client seen through a dual-stack socket is the IPv4 client.
    assert_eq!(replica.ask(&by_ip("198.51.100.4")).await.status, 200);
    assert_eq!(replica.ask(&by_ip("::ffff:198.51.100.4")).await.status, 429);
}

/// The Redis key of the `global` rule's one bucket.
async fn global_key(redis: &RedisServer) -> String {
    let mut connection = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("portcullis:ratelimit:global:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys.into_iter().next().unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tat_no_request_could_leave_never_locks_a_client_out() {
    let redis = RedisServer::start().await;
    let clock = Clock::manual();
    let mut a = Replica::start(&clock, Some(&redis.url())).await;
    a.counting("redis").await;
    let global = Ask::to("/global");
    assert_eq!(a.ask(&global).await.status, 200);
    let key = global_key(&redis).await;
    let mut connection = redis.connection().await;
    let set = |value: &'static str| {
        let mut connection = connection.clone();
        let key = key.clone();
        async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .query_async::<()>(&mut connection)
                .await
                .unwrap();
        }
    };
    // 10/s, burst 10 (a window of 1 s): a TAT 9e12 s ahead (garbage, or a
    // clock stepped back, or a slower rate before a reload) is read as one
    // window ahead — refused for one interval, not for 285,000 years.
    set("1e300").await;
    let refused = a.ask(&global).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("ratelimit"), Some("\"global\";r=0;t=1"));
    clock.advance(Duration::from_millis(100));
    assert_eq!(a.ask(&global).await.status, 200, "refilled from the window");
    // Not a number, not finite, negative: a fresh bucket.
    for garbage in ["nan", "inf", "-5", "tomorrow"] {
        set(garbage).await;
        assert_eq!(
            a.statuses(&global, 11).await[..],
            [[200; 10].as_slice(), &[429]].concat(),
            "{garbage}"
        );
    }
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_redis_answers_counts_that_check_locally_and_keeps_the_connection() {
    let redis = RedisServer::start().await;
    let clock = Clock::manual();
    let mut a = Replica::start(&clock, Some(&redis.url())).await;
    a.counting("redis").await;
    let global = Ask::to("/global");
    assert_eq!(a.ask(&global).await.status, 200);
    let key = global_key(&redis).await;
    // The bucket's key holds a list: the script's GET answers WRONGTYPE.
    let mut connection = redis.connection().await;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(&key)
        .arg("x")
        .query_async(&mut connection)
        .await
        .unwrap();
    let before = metric(&a.metrics().await, "portcullis_rate_limit_fallbacks_total");
    // Counted locally: the local bucket of the rule is fresh (burst 10).
    assert_eq!(a.statuses(&global, 11).await[10], 429, "never unlimited");
    let after = metric(&a.metrics().await, "portcullis_rate_limit_fallbacks_total");
    assert_eq!(after - before, 11.0);
    // The connection stays: global limits still count in Redis.
    let ready = a.readyz().await;
    assert_eq!(ready["rate_limits"]["counting"], "redis", "{ready}");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(a.ask(&global).await.status, 200);
    assert_eq!(
        metric(&a.metrics().await, "portcullis_rate_limit_fallbacks_total"),
        after,
        "counted in Redis again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_opens_the_breaker_and_a_probe_closes_it() {
    let redis = RedisServer::start().await;
    let clock = Clock::manual();
    let mut a = Replica::start(&clock, Some(&redis.url())).await;
    a.counting("redis").await;
    let global = Ask::to("/global");
    assert_eq!(a.ask(&global).await.status, 200);

    // SIGSTOP: the connection is open, nothing answers. Checks still answer,
    // from the local bucket; `/readyz` says so and stays ready.
    redis.pause();
    let first = a.ask(&global).await;
    assert_eq!(first.status, 200, "never deny-all");
    let ready = a.counting("local-fallback").await;
    assert_eq!(ready["ready"], true, "{ready}");
    assert!(
        ready["rate_limits"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no answer")),
        "{ready}"
    );
    // While the breaker is open, checks are counted locally, the first one
    // included: ten of the local burst, then refused.
    assert_eq!(
        a.statuses(&global, 12).await[..],
        [[200; 9].as_slice(), &[429; 3]].concat()
    );
    assert_eq!(
        a.readyz().await["rate_limits"]["counting"],
        "local-fallback"
    );

    // SIGCONT: a probe answers in time, global limits count in Redis again.
    redis.resume();
    a.counting("redis").await;
    clock.advance(Duration::from_secs(2));
    let before = metric(&a.metrics().await, "portcullis_rate_limit_fallbacks_total");
    assert_eq!(a.statuses(&global, 11).await[10], 429);
    assert_eq!(
        metric(&a.metrics().await, "portcullis_rate_limit_fallbacks_total"),
        before,
        "counted in Redis"
    );
}
