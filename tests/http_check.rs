//! The gateways' HTTP mode in-process (docs/gateways.md): `/check/nginx`,
//! `/check/forward` and `/check/envoy/**` on a server bound on ephemeral ports.
//! Every dialect gives the gRPC `Check`'s answer for the same request (status,
//! context headers, deny headers and body); each believes only its own headers;
//! a check without them is a 400, any other `/check` path a 404 (both counted);
//! so is an underscored spelling of a context header and a `#` in the target;
//! nginx's replay of a denied check never answers an allow; the checks move
//! to `server.check_listen` when it is set; the client address follows
//! `server.trusted_proxies`.

mod support;

use envoy_types::pb::envoy::service::auth::v3::{
    authorization_client::AuthorizationClient, check_response::HttpResponse,
};
use http::Method;
use portcullis::config::Config;
use portcullis::server::{Server, Stop};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use support::tokens::{jwk_set, ClerkClaims, SigningKey};
use support::{RequestBuilder, Response};

fn policy() -> String {
    format!(
        "{}{}",
        support::portcullis::USER_TRAFFIC_POLICY,
        "  - name: remote-only
    to: { paths: [/remote/**] }
    from: authenticated
  - name: limited
    to: { paths: [/limited] }
    from: anyone
    rate_limit: { per: ip, rate: 1/m, burst: 1, scope: local }
"
    )
}

struct Harness {
    http: SocketAddr,
    grpc: SocketAddr,
    check: SocketAddr,
    key: SigningKey,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// A server whose `server:` section also holds `server` (YAML flow-map
    /// entries, e.g. `check_listen: 127.0.0.1:0`).
    async fn start(server: &str) -> Self {
        let key = SigningKey::generate("k1");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jwks.json"), jwk_set(&[&key]).to_string()).unwrap();
        std::fs::write(dir.path().join("policy.yaml"), policy()).unwrap();
        // A remote issuer whose JWKS endpoint is down: its tokens get 503.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = dead.local_addr().unwrap().port();
        drop(dead);
        let config = format!(
            "\
server: {{ grpc_listen: 127.0.0.1:0, http_listen: 127.0.0.1:0{server} }}
issuers:
  - name: clerk
    kind: user
    issuer: {iss}
    jwks_file: jwks.json
    algorithms: [RS256]
    authorized_parties: [{azp}]
    leeway: 5s
    credentials: [{{ header: authorization }}, {{ cookie: __session }}]
  - name: remote
    kind: user
    issuer: https://remote.example.test
    jwks_uri: http://127.0.0.1:{dead_port}/jwks.json
    jwks_timeout: 1s
    algorithms: [RS256]
users: {{ source: claims }}
headers:
  user: {{ x-user-id: user.id, x-user-role: user.role }}
policy: policy.yaml
",
            iss = support::tokens::ISSUER,
            azp = support::tokens::AUTHORIZED_PARTY,
        );
        std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
        let config = Config::load(&dir.path().join("portcullis.yaml")).expect("config loads");
        let server = Server::bind(&config).await.expect("bind");
        let (grpc, http, check) = (server.grpc_addr(), server.http_addr(), server.check_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                    Stop::Immediate
                })
                .await
                .expect("server runs");
        });
        Harness {
            http,
            grpc,
            check,
            key,
            _dir: dir,
            stop: Some(stop),
            server,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.await.unwrap();
    }

    /// A request to the check endpoints.
    fn to_check(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder::new(self.check, method, path)
    }

    /// `method path` with `headers` asked the way `dialect` asks.
    async fn ask(
        &self,
        dialect: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        let request = match dialect {
            "nginx" => self
                .to_check(Method::GET, "/check/nginx")
                .header("x-original-method", method)
                .header("x-original-uri", path),
            "forward" => self
                .to_check(Method::GET, "/check/forward")
                .header("x-forwarded-method", method)
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", support::client::DEFAULT_HOST)
                .header("x-forwarded-uri", path),
            "envoy" => self.to_check(method.parse().unwrap(), &format!("/check/envoy{path}")),
            other => panic!("no dialect {other}"),
        };
        let request = headers.iter().fold(request, |request, (name, value)| {
            request.header(name, value)
        });
        request.send().await
    }
}

const DIALECTS: [&str; 3] = ["nginx", "forward", "envoy"];

/// An answer reduced to what the client and the upstream get from it.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    status: u16,
    /// On allow the context headers set; on deny the response headers.
    headers: BTreeMap<String, String>,
    body: Option<serde_json::Value>,
}

/// The gRPC `Check` answer to the same request.
async fn grpc_verdict(
    grpc: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Verdict {
    let mut client = AuthorizationClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    let response = client
        .check(support::check::request(method, path, headers))
        .await
        .expect("Check never fails as an RPC")
        .into_inner();
    let pairs = |options: Vec<envoy_types::pb::envoy::config::core::v3::HeaderValueOption>| {
        options
            .into_iter()
            .filter_map(|o| o.header)
            .map(|h| (h.key, h.value))
            .collect::<BTreeMap<_, _>>()
    };
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => Verdict {
            status: 200,
            headers: pairs(ok.headers),
            body: None,
        },
        Some(HttpResponse::DeniedResponse(denied)) => Verdict {
            status: u16::try_from(denied.status.unwrap().code).unwrap(),
            headers: pairs(denied.headers),
            body: Some(serde_json::from_str(&denied.body).expect("a JSON deny body")),
        },
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The HTTP answer as a [`Verdict`]: the headers of the answer itself, without
/// the transport's (`content-length`, `date`) and Envoy's removal list.
fn http_verdict(response: &Response) -> Verdict {
    let headers = response
        .headers
        .iter()
        .filter(|(name, _)| {
            !["content-length", "date", "x-envoy-auth-headers-to-remove"].contains(&name.as_str())
        })
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    Verdict {
        status: response.status,
        headers,
        body: (response.status != 200).then(|| response.json()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dialect_gives_the_grpc_answer() {
    let h = Harness::start("").await;
    let user = ClerkClaims::user("USER").sign(&h.key);
    let admin = ClerkClaims::user("ADMIN").sign(&h.key);
    // The remote issuer's keys never load: its tokens cannot be checked (503).
    let remote = ClerkClaims::user("USER")
        .issuer("https://remote.example.test")
        .sign(&h.key);
    let bearer = |token: &str| format!("Bearer {token}");
    let (user, admin, remote) = (bearer(&user), bearer(&admin), bearer(&remote));
    // (case, method, path, client headers)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "USER reads videos",
            "GET",
            "/api/videos?page=2",
            vec![("authorization", &user)],
        ),
        (
            "spoofed context is overwritten",
            "GET",
            "/api/videos",
            vec![
                ("authorization", &user),
                ("x-user-role", "ADMIN"),
                ("x-user-id", "admin"),
            ],
        ),
        (
            "ADMIN on the admin API",
            "DELETE",
            "/api/admin/users/7",
            vec![("authorization", &admin)],
        ),
        (
            "USER on the admin API",
            "GET",
            "/api/admin/users",
            vec![("authorization", &user)],
        ),
        (
            "the method decides",
            "POST",
            "/api/videos",
            vec![("authorization", &user)],
        ),
        ("no token", "GET", "/api/videos", vec![]),
        (
            "a bad token",
            "GET",
            "/public/x",
            vec![("authorization", "Bearer not.a.token")],
        ),
        (
            "anonymous on /public",
            "GET",
            "/public/x",
            vec![("x-user-role", "ADMIN")],
        ),
        (
            "dot segments",
            "GET",
            "/api/videos/../admin/users",
            vec![("authorization", &user)],
        ),
        (
            "an encoded slash",
            "GET",
            "/api%2Fadmin/users",
            vec![("authorization", &user)],
        ),
        (
            "a directory that is down",
            "GET",
            "/remote/x",
            vec![("authorization", &remote)],
        ),
    ];
    for (case, method, path, headers) in &cases {
        // A fixed request id, so both answers carry the same one.
        let mut headers = headers.clone();
        headers.push(("x-request-id", "rid-7"));
        let want = grpc_verdict(h.grpc, method, path, &headers).await;
        for dialect in DIALECTS {
            let got = http_verdict(&h.ask(dialect, method, path, &headers).await);
            assert_eq!(got, want, "{case} via /check/{dialect}");
        }
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_is_told_which_client_headers_to_remove() {
    let h = Harness::start("").await;
    let response = h
        .ask(
            "envoy",
            "GET",
            "/public/x",
            &[("x-user-role", "ADMIN"), ("x-user-email", "a@b")],
        )
        .await;
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(
        response.header("x-envoy-auth-headers-to-remove"),
        Some("x-user-email,x-user-role")
    );
    // nginx and forward auth have no such list: their configs name each header.
    let response = h
        .ask("nginx", "GET", "/public/x", &[("x-user-role", "ADMIN")])
        .await;
    assert_eq!(response.header("x-envoy-auth-headers-to-remove"), None);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dialect_believes_only_its_own_headers() {
    let h = Harness::start("").await;
    let user = format!("Bearer {}", ClerkClaims::user("USER").sign(&h.key));
    // Through Caddy, a USER asks for the admin API and adds nginx's headers for
    // an allowed path: forward auth must check the admin API.
    let response = h
        .ask(
            "forward",
            "GET",
            "/api/admin/users",
            &[
                ("authorization", &user),
                ("x-original-uri", "/api/videos"),
                ("x-original-method", "GET"),
            ],
        )
        .await;
    assert_eq!(response.status, 403, "{response}");
    // The other way round at nginx's endpoint.
    let response = h
        .ask(
            "nginx",
            "GET",
            "/api/admin/users",
            &[
                ("authorization", &user),
                ("x-forwarded-uri", "/api/videos"),
                ("x-forwarded-method", "GET"),
            ],
        )
        .await;
    assert_eq!(response.status, 403, "{response}");
    // And at Envoy's, neither kind steers it.
    let response = h
        .ask(
            "envoy",
            "GET",
            "/api/admin/users",
            &[
                ("authorization", &user),
                ("x-original-uri", "/api/videos"),
                ("x-forwarded-uri", "/api/videos"),
            ],
        )
        .await;
    assert_eq!(response.status, 403, "{response}");
    h.shutdown().await;
}

fn assert_json_refusal(case: &str, response: &Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status, status, "{case}: {response}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{case}"
    );
    let body = response.json();
    for field in ["error", "message", "request_id"] {
        assert!(
            body[field].as_str().is_some_and(|v| !v.is_empty()),
            "{case}: no {field}: {body}"
        );
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_without_its_dialects_headers_is_400_never_an_allow() {
    let h = Harness::start("").await;
    let cases = [
        (
            "nginx without headers",
            h.to_check(Method::GET, "/check/nginx"),
        ),
        (
            "nginx with forward-auth headers",
            h.to_check(Method::GET, "/check/nginx")
                .header("x-forwarded-method", "GET")
                .header("x-forwarded-proto", "http")
                .header("x-forwarded-host", "h")
                .header("x-forwarded-uri", "/public"),
        ),
        (
            "forward with nginx headers",
            h.to_check(Method::GET, "/check/forward")
                .header("x-original-method", "GET")
                .header("x-original-uri", "/public"),
        ),
        (
            "forward without X-Forwarded-Uri",
            h.to_check(Method::GET, "/check/forward")
                .header("x-forwarded-method", "GET")
                .header("x-forwarded-proto", "http")
                .header("x-forwarded-host", "h"),
        ),
        (
            "nginx with two URIs",
            h.to_check(Method::GET, "/check/nginx")
                .header("x-original-method", "GET")
                .header("x-original-uri", "/public")
                .header("x-original-uri", "/api/admin"),
        ),
        (
            "envoy without a path",
            h.to_check(Method::GET, "/check/envoy"),
        ),
        (
            "nginx with a # in the URI",
            h.to_check(Method::GET, "/check/nginx")
                .header("x-original-method", "GET")
                .header("x-original-uri", "/public/x#/../../api/admin"),
        ),
        (
            "forward with a # in the URI",
            h.to_check(Method::GET, "/check/forward")
                .header("x-forwarded-method", "GET")
                .header("x-forwarded-proto", "http")
                .header("x-forwarded-host", "h")
                .header("x-forwarded-uri", "/public/x#/../../api/admin"),
        ),
        (
            "an underscored context header at nginx",
            h.to_check(Method::GET, "/check/nginx")
                .header("x-original-method", "GET")
                .header("x-original-uri", "/public/x")
                .header("x_user_role", "ADMIN"),
        ),
        (
            "an underscored context header at forward",
            h.to_check(Method::GET, "/check/forward")
                .header("x-forwarded-method", "GET")
                .header("x-forwarded-proto", "http")
                .header("x-forwarded-host", "h")
                .header("x-forwarded-uri", "/public/x")
                .header("X_User_Id", "admin"),
        ),
        (
            "an underscored context header at envoy",
            h.to_check(Method::GET, "/check/envoy/public/x")
                .header("x_portcullis_token", "t"),
        ),
    ];
    for (case, request) in cases {
        let response = request.header("x-request-id", "rid-400").send().await;
        let body = assert_json_refusal(case, &response, 400);
        assert_eq!(body["error"], "bad_request", "{case}");
        assert_eq!(body["request_id"], "rid-400", "{case}");
    }
    for path in [
        "/check",
        "/check/",
        "/check/traefik",
        "/check/nginx/x",
        "/check/envoyx",
    ] {
        let response = h.to_check(Method::GET, path).send().await;
        let body = assert_json_refusal(path, &response, 404);
        let message = body["message"].as_str().unwrap();
        for endpoint in ["/check/nginx", "/check/forward", "/check/envoy"] {
            assert!(message.contains(endpoint), "{path}: {message}");
        }
    }
    // Each counted as a deny before the pipeline: 11 refused, 5 unknown.
    let metrics = RequestBuilder::new(h.http, Method::GET, "/metrics")
        .send()
        .await
        .text();
    let counted = metrics
        .lines()
        .find(|line| {
            line.starts_with("portcullis_decisions_total{")
                && line.contains(r#"stage="request""#)
                && line.contains(r#"result="deny""#)
        })
        .unwrap_or_else(|| panic!("no stage=\"request\" count:\n{metrics}"));
    assert!(counted.ends_with(" 16"), "{counted}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginxs_replay_of_a_denied_check_never_answers_an_allow() {
    let h = Harness::start("").await;
    let user = format!("Bearer {}", ClerkClaims::user("USER").sign(&h.key));
    let replay = [
        ("authorization", user.as_str()),
        ("x-portcullis-replay", "1"),
    ];
    // An allow by now: 503 "retry", without the context it would have set.
    let response = h.ask("nginx", "GET", "/api/videos", &replay).await;
    let body = assert_json_refusal("allowed on replay", &response, 503);
    assert_eq!(body["error"], "unavailable");
    for name in ["x-user-id", "x-user-role", "x-portcullis-token"] {
        assert_eq!(response.header(name), None, "{name}: {response}");
    }
    // Still a deny: the deny itself.
    let response = h.ask("nginx", "GET", "/api/admin/users", &replay).await;
    assert_eq!(response.status, 403, "{response}");
    // Only nginx's dialect reads the mark; at the others it is a client's
    // header under x-portcullis-, removed like any.
    for dialect in ["forward", "envoy"] {
        let response = h.ask(dialect, "GET", "/api/videos", &replay).await;
        assert_eq!(response.status, 200, "{dialect}: {response}");
        assert!(response.header("x-user-id").is_some(), "{dialect}");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_listen_moves_the_checks_off_the_http_listener() {
    let h = Harness::start("").await;
    assert_eq!(h.check, h.http, "without check_listen, on http_listen");
    h.shutdown().await;

    let h = Harness::start(", check_listen: 127.0.0.1:0").await;
    assert_ne!(h.check, h.http);
    let asked = h.ask("nginx", "GET", "/public/x", &[]).await;
    assert_eq!(asked.status, 200, "{asked}");
    let on_http = RequestBuilder::new(h.http, Method::GET, "/check/nginx")
        .header("x-original-method", "GET")
        .header("x-original-uri", "/public/x")
        .send()
        .await;
    assert_eq!(on_http.status, 404, "not on http_listen: {on_http}");
    let health = RequestBuilder::new(h.http, Method::GET, "/healthz")
        .send()
        .await;
    assert_eq!(health.status, 200, "the rest stays on http_listen");
    let health = h.to_check(Method::GET, "/healthz").send().await;
    assert_eq!(health.status, 404, "only the checks on check_listen");
    h.shutdown().await;
}

/// `/limited` allows one request per client address a minute.
async fn limited(h: &Harness, forwarded_for: &str) -> u16 {
    h.ask(
        "nginx",
        "GET",
        "/limited",
        &[("x-forwarded-for", forwarded_for)],
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_is_forwarded_only_by_trusted_proxies() {
    // The test's connections come from 127.0.0.1.
    let h = Harness::start(", trusted_proxies: [127.0.0.1/32]").await;
    assert_eq!(limited(&h, "198.51.100.1").await, 200);
    assert_eq!(limited(&h, "198.51.100.2").await, 200, "another client");
    assert_eq!(
        limited(&h, "203.0.113.9, 198.51.100.1").await,
        429,
        "the rightmost counts"
    );
    // With an X-Forwarded-For that names nobody, the client is the peer,
    // whatever X-Real-IP says.
    for (real_ip, want) in [("198.51.100.3", 200), ("198.51.100.4", 429)] {
        let headers = [("x-forwarded-for", "unknown"), ("x-real-ip", real_ip)];
        let response = h.ask("nginx", "GET", "/limited", &headers).await;
        assert_eq!(response.status, want, "X-Real-IP {real_ip}: {response}");
    }
    h.shutdown().await;

    let h = Harness::start("").await;
    assert_eq!(limited(&h, "198.51.100.1").await, 200);
    let response = h
        .ask(
            "nginx",
            "GET",
            "/limited",
            &[("x-forwarded-for", "198.51.100.2")],
        )
        .await;
    assert_eq!(
        response.status, 429,
        "an untrusted peer's X-Forwarded-For is ignored"
    );
    assert!(response.header("retry-after").is_some(), "{response}");
    h.shutdown().await;
}
