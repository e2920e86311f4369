//! portcullis inside Envoy: the dynamic module (`envoy-module/`, docs/in-proxy.md)
//! loaded by the real Envoy 1.40 from the shipped `mesh/envoy/front-proxy-module.yaml`,
//! reading the same `portcullis.yaml` and policy as the portcullis server behind it.
//!
//! - the shared case table's edge rows (`tests/support/istio.rs`) get the same
//!   answers from Envoy + module as from Envoy + ext_authz (`front-proxy.yaml`),
//!   and every one of them is decided in the module: the ext_authz fallback is
//!   never asked;
//! - a request the module cannot decide without I/O (a token of a key it has not
//!   fetched yet) goes to the ext_authz fallback, and is answered as before;
//! - a config the module cannot load keeps Envoy from starting;
//! - with `state.redis`, the module hears the other replicas as the server does
//!   (the real Redis at 127.0.0.1:6379, random session ids): a Clerk
//!   `session.revoked` or `user.deleted` delivered to the server is refused by the
//!   module itself within a second; until the module has loaded the revocation
//!   set, a request with a token is never let through (503 without a fallback).
//!
//! The test builds the module first (`cargo build -p portcullis-envoy-module`) and
//! points Envoy at it with `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use http::Method;
use support::envoy::{envoy_bin, FrontProxyAddrs};
use support::istio::{self, Tokens, Via};
use support::{
    free_port, ClerkClaims, EchoUpstream, Envoy, JwksServer, Portcullis, PortcullisConfig,
    RequestBuilder, SigningKey, FIRST_KID,
};

/// The shipped module front proxy.
const FRONT_PROXY_MODULE: &str = include_str!("../mesh/envoy/front-proxy-module.yaml");
/// The config path the shipped file names.
const SHIPPED_CONFIG: &str = "config: /etc/portcullis/portcullis.yaml";

/// Builds the module once per test process and returns the directory holding
/// `libportcullis_envoy_module.so`; Envoy started after this finds it there.
fn module_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // This test binary is target/<profile>/deps/NAME: the library goes two up,
        // built in the same profile.
        let dir = std::env::current_exe()
            .expect("the test binary's path")
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "portcullis-envoy-module"]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let built = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for the module");
        assert!(built.success(), "building portcullis-envoy-module failed");
        assert!(
            dir.join("libportcullis_envoy_module.so").is_file(),
            "no libportcullis_envoy_module.so in {}",
            dir.display()
        );
        // Every Envoy this process starts inherits it; set once, before any.
        std::env::set_var("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", &dir);
        dir
    })
}

/// `mesh/envoy/front-proxy-module.yaml` with `addrs` and the module reading
/// `config` (`fallback` kept as shipped unless `fallback` is false).
fn module_yaml(addrs: &FrontProxyAddrs, config: &Path, fallback: bool) -> String {
    let shipped = FrontProxyAddrs::quickstart();
    let mut yaml = support::envoy::render_template(
        "front-proxy-module.yaml",
        FRONT_PROXY_MODULE,
        &[
            (shipped.listener, addrs.listener),
            (shipped.admin, addrs.admin),
            (shipped.portcullis, addrs.portcullis),
            (shipped.upstream, addrs.upstream),
        ],
        &[],
        Path::new("certs"),
    );
    assert_eq!(yaml.matches(SHIPPED_CONFIG).count(), 1);
    yaml = yaml.replace(SHIPPED_CONFIG, &format!("config: {}", config.display()));
    if !fallback {
        assert_eq!(yaml.matches("fallback: ext_authz\n").count(), 1);
        yaml = yaml.replace("fallback: ext_authz\n", "");
    }
    yaml
}

/// Envoy on the module front proxy, in front of `upstream`, with `portcullis` as
/// its fallback and the module reading portcullis' own config file.
async fn module_envoy(portcullis: &Portcullis, upstream: SocketAddr, fallback: bool) -> Envoy {
    module_dir();
    let addrs = FrontProxyAddrs {
        listener: SocketAddr::from(([127, 0, 0, 1], free_port())),
        admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
        portcullis: portcullis.grpc_addr(),
        upstream,
    };
    let yaml = module_yaml(&addrs, &portcullis.dir().join("portcullis.yaml"), fallback);
    let dir = tempfile::tempdir().expect("a temporary directory");
    Envoy::start_bootstrap(dir, &yaml, addrs.listener, addrs.admin).await
}

/// How many Checks Envoy's ext_authz filter has sent (answered or not).
async fn ext_authz_checks(envoy: &Envoy) -> u64 {
    let stats = RequestBuilder::new(envoy.admin(), Method::GET, "/stats?filter=ext_authz")
        .send()
        .await
        .text();
    stats
        .lines()
        .filter_map(|line| line.split_once(": "))
        .filter(|(name, _)| {
            ["ok", "denied", "error", "failure_mode_allowed"]
                .iter()
                .any(|counter| *name == format!("http.front.ext_authz.{counter}"))
        })
        .map(|(_, value)| value.trim().parse::<u64>().unwrap_or(0))
        .sum()
}

/// Sends a USER request until one is decided without the fallback: the module's
/// key set has been fetched (it starts fetching when Envoy loads the config).
async fn until_decided_in_module(envoy: &Envoy, token: &str) {
    for _ in 0..100 {
        let before = ext_authz_checks(envoy).await;
        let response = envoy.get("/api/videos").bearer(token).send().await;
        assert_eq!(response.status, 200, "{response}");
        if ext_authz_checks(envoy).await == before {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the module never decided a request itself");
}

#[tokio::test]
async fn the_module_answers_the_case_table_like_ext_authz_without_asking_it() {
    envoy_bin();
    let key = SigningKey::generate(FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoUpstream::start().await;
    let portcullis = Portcullis::start(&PortcullisConfig::user_traffic(jwks.uri())).await;
    let plain = Envoy::start(portcullis.grpc_addr(), upstream.addr()).await;
    let module = module_envoy(&portcullis, upstream.addr(), true).await;
    let tokens = Tokens::new(&key);
    until_decided_in_module(
        &module,
        tokens.token(istio::Credential::User("USER")).unwrap(),
    )
    .await;

    let edge = |envoy: &Envoy| istio::Entrances {
        edge: envoy.addr(),
        callers: Default::default(),
    };
    let mut differences = Vec::new();
    for case in istio::cases().iter().filter(|case| case.via == Via::Edge) {
        let by_server = istio::run_case("Envoy + ext_authz", case, &edge(&plain), &tokens).await;
        let asked_before = ext_authz_checks(&module).await;
        let by_module = istio::run_case("Envoy + module", case, &edge(&module), &tokens).await;
        if by_server != by_module {
            differences.push(format!(
                "{}: ext_authz {by_server}, module {by_module}",
                case.name
            ));
        }
        // A kid the module has not seen makes it fetch the JWKS (I/O, unless a
        // fetch just happened): that one row may go to the fallback.
        let asked = ext_authz_checks(&module).await - asked_before;
        if asked != 0 && case.credential != istio::Credential::UnknownKey {
            differences.push(format!("{}: decided by the fallback", case.name));
        }
    }
    assert!(differences.is_empty(), "{differences:#?}");
}

/// One row of the repeated-headers table: its name, the path, the headers in order.
type Row<'a> = (&'a str, &'a str, Vec<(&'a str, String)>);

/// How a request with repeated headers fared: the status, whether the upstream
/// saw it, and the verified role it got.
async fn repeated(envoy: &Envoy, path: &str, headers: &[(&str, String)]) -> String {
    let mut request = envoy.get(path);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await;
    let seen = response.upstream();
    format!(
        "{} reached={} x-user-role={:?}",
        response.status,
        seen.is_some(),
        seen.as_ref().and_then(|seen| seen.header("x-user-role"))
    )
}

#[tokio::test]
async fn repeated_headers_and_header_conditions_are_read_as_the_server_reads_them() {
    envoy_bin();
    let key = SigningKey::generate(FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoUpstream::start().await;
    // `x-user-tier` is under an `allowed_headers` prefix of both front proxies.
    let policy = format!(
        "{}  - name: gold\n    to: {{ paths: [/api/gold] }}\n    from: anyone\n    when: request.headers['x-user-tier'] == 'gold'\n",
        support::portcullis::USER_TRAFFIC_POLICY
    );
    let portcullis =
        Portcullis::start(&PortcullisConfig::user_traffic(jwks.uri()).with_policy(&policy)).await;
    let plain = Envoy::start(portcullis.grpc_addr(), upstream.addr()).await;
    let module = module_envoy(&portcullis, upstream.addr(), true).await;
    let user = ClerkClaims::user("USER").sign(&key);
    until_decided_in_module(&module, &user).await;

    let bearer = format!("Bearer {user}");
    let session = format!("__session={user}");
    let rows: Vec<Row> = vec![
        (
            "the same token twice in authorization",
            "/api/videos",
            vec![
                ("authorization", bearer.clone()),
                ("authorization", bearer.clone()),
            ],
        ),
        (
            "garbage, then a good token, in authorization",
            "/api/videos",
            vec![
                ("authorization", "Bearer garbage".to_owned()),
                ("authorization", bearer.clone()),
            ],
        ),
        (
            "the same session cookie twice",
            "/api/videos",
            vec![("cookie", session.clone()), ("cookie", session.clone())],
        ),
        (
            "a garbage session cookie, then a good one",
            "/api/videos",
            vec![
                ("cookie", "__session=garbage".to_owned()),
                ("cookie", session.clone()),
            ],
        ),
        (
            "when on a header: gold",
            "/api/gold",
            vec![("x-user-tier", "gold".to_owned())],
        ),
        (
            "when on a header: silver, then gold",
            "/api/gold",
            vec![
                ("x-user-tier", "silver".to_owned()),
                ("x-user-tier", "gold".to_owned()),
            ],
        ),
    ];
    let mut differences = Vec::new();
    for (name, path, headers) in &rows {
        let by_server = repeated(&plain, path, headers).await;
        let by_module = repeated(&module, path, headers).await;
        println!("{name}: ext_authz {by_server}, module {by_module}");
        if by_server != by_module {
            differences.push(format!("{name}: ext_authz {by_server}, module {by_module}"));
        }
    }
    assert!(differences.is_empty(), "{differences:#?}");
}

#[tokio::test]
async fn the_module_sends_the_servers_deny_answer_and_strips_spoofed_headers() {
    envoy_bin();
    let key = SigningKey::generate(FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoUpstream::start().await;
    let portcullis = Portcullis::start(&PortcullisConfig::user_traffic(jwks.uri())).await;
    let plain = Envoy::start(portcullis.grpc_addr(), upstream.addr()).await;
    let module = module_envoy(&portcullis, upstream.addr(), true).await;
    let user = ClerkClaims::user("USER").sign(&key);
    until_decided_in_module(&module, &user).await;

    // A deny: the same status, headers and JSON body (the request id is the
    // caller's, so the bodies are equal byte for byte).
    for envoy in [&plain, &module] {
        let denied = envoy
            .get("/api/admin/users")
            .bearer(&user)
            .header("x-request-id", "req-1")
            .send()
            .await;
        assert_eq!(denied.status, 403, "{denied}");
        assert_eq!(denied.header("content-type"), Some("application/json"));
        assert_eq!(denied.header("cache-control"), Some("no-store"));
        assert_eq!(denied.json()["request_id"], "req-1");
        assert_eq!(denied.json()["error"], "forbidden");
    }
    let bodies = [
        plain
            .get("/api/admin/users")
            .bearer(&user)
            .header("x-request-id", "r")
            .send()
            .await,
        module
            .get("/api/admin/users")
            .bearer(&user)
            .header("x-request-id", "r")
            .send()
            .await,
    ];
    assert_eq!(bodies[0].text(), bodies[1].text());

    // An allow: every client-sent header under the stripped prefixes is gone,
    // the verified ones are set.
    let allowed = module
        .get("/api/videos")
        .bearer(&user)
        .header("x-user-id", "admin")
        .header("x-portcullis-anything", "spoofed")
        .header("x-service-name", "spoofed")
        .send()
        .await;
    assert_eq!(allowed.status, 200, "{allowed}");
    let seen = allowed.upstream().expect("the upstream answered");
    assert_eq!(seen.header("x-user-role"), Some("USER"));
    assert_ne!(seen.header("x-user-id"), Some("admin"));
    assert_eq!(seen.header("x-portcullis-anything"), None);
    assert_eq!(seen.header("x-service-name"), None);
}

#[tokio::test]
async fn a_request_the_module_cannot_decide_alone_goes_to_the_ext_authz_fallback() {
    envoy_bin();
    let key = SigningKey::generate(FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoUpstream::start().await;
    let portcullis = Portcullis::start(&PortcullisConfig::user_traffic(jwks.uri())).await;
    let module = module_envoy(&portcullis, upstream.addr(), true).await;
    until_decided_in_module(&module, &ClerkClaims::user("USER").sign(&key)).await;

    // A new key: the module must fetch the JWKS first (I/O), so the server decides.
    let rotated = SigningKey::generate("key-2");
    jwks.set_keys(&[&key, &rotated]);
    let before = ext_authz_checks(&module).await;
    let token = ClerkClaims::user("USER").sign(&rotated);
    let response = module.get("/api/videos").bearer(&token).send().await;
    assert_eq!(response.status, 200, "{response}");
    let seen = response.upstream().expect("the upstream answered");
    assert_eq!(seen.header("x-user-role"), Some("USER"));
    let stats = RequestBuilder::new(module.admin(), Method::GET, "/stats?filter=ext_authz")
        .send()
        .await
        .text();
    assert_eq!(
        ext_authz_checks(&module).await,
        before + 1,
        "the fallback decided it: {stats}\nportcullis: {}",
        portcullis.log()
    );
    // The module finished that check in the background: the new key is now its
    // own, and the next request with it is decided in the module.
    until_decided_in_module(&module, &token).await;
}

#[tokio::test]
async fn without_a_fallback_an_undecidable_request_is_refused_with_503() {
    envoy_bin();
    let key = SigningKey::generate(FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoUpstream::start().await;
    let portcullis = Portcullis::start(&PortcullisConfig::user_traffic(jwks.uri())).await;
    // The module's first JWKS fetch is slow: until it returns, a token needs I/O.
    jwks.set_delay(std::time::Duration::from_secs(4));
    let module = module_envoy(&portcullis, upstream.addr(), false).await;
    let user = ClerkClaims::user("USER").sign(&key);
    let refused = module.get("/api/videos").bearer(&user).send().await;
    assert_eq!(refused.status, 503, "{refused}");
    assert_eq!(refused.json()["error"], "unavailable", "{refused}");
    assert!(refused.upstream().is_none());
    // Once the keys are in, the same request is decided in the module.
    jwks.set_delay(std::time::Duration::ZERO);
    let mut decided = false;
    for _ in 0..400 {
        let response = module.get("/api/videos").bearer(&user).send().await;
        match response.status {
            200 => {
                decided = true;
                break;
            }
            503 => {}
            other => panic!("unexpected {other}: {response}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(decided, "the module never had its keys");
}

/// Starts Envoy on `yaml` (the module from [`module_dir`]) and returns its log,
/// asserting it refused to start.
fn envoy_refuses(yaml: &str) -> String {
    let dir = module_dir();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let config = tmp.path().join("envoy.yaml");
    std::fs::write(&config, yaml).expect("write envoy.yaml");
    let mut envoy = Command::new(envoy_bin())
        .arg("-c")
        .arg(&config)
        .args(["--disable-hot-restart", "-l", "warning"])
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn envoy");
    let deadline = std::time::Instant::now() + support::READY_TIMEOUT;
    let status = loop {
        if let Some(status) = envoy.try_wait().expect("poll envoy") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = envoy.kill();
            panic!("Envoy started on a config the module cannot load");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let output = envoy.wait_with_output().expect("envoy's output");
    let log = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!status.success(), "Envoy accepted it: {log}");
    log
}

/// Ephemeral addresses nothing listens on (Envoy never gets that far).
fn unused_addrs() -> FrontProxyAddrs {
    let addr = || SocketAddr::from(([127, 0, 0, 1], free_port()));
    FrontProxyAddrs {
        listener: addr(),
        admin: addr(),
        portcullis: addr(),
        upstream: addr(),
    }
}

#[tokio::test]
async fn envoy_refuses_a_config_the_module_cannot_load() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let broken = tmp.path().join("portcullis.yaml");
    std::fs::write(&broken, "issuers: [\n").expect("write the broken config");
    let log = envoy_refuses(&module_yaml(&unused_addrs(), &broken, true));
    assert!(
        log.contains("portcullis: ") && log.contains("portcullis.yaml"),
        "Envoy's log names the module's error: {log}"
    );
}

/// A policy whose `/api/limited` allows USERs `LIMIT` requests a minute per
/// user, counted in Redis by every replica (`scope: global`).
fn global_limit_policy() -> String {
    format!(
        "{}  - name: limited\n    to: {{ paths: [/api/limited] }}\n    from: {{ users: {{ roles: [USER] }} }}\n    rate_limit: {{ per: user, rate: {LIMIT}/m, burst: {LIMIT}, scope: global }}\n",
        support::portcullis::USER_TRAFFIC_POLICY
    )
}

/// The burst of [`global_limit_policy`].
const LIMIT: u32 = 3;

#[tokio::test]
async fn envoy_refuses_global_rate_limits_without_a_fallback() {
    let key = SigningKey::generate(FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let portcullis = Portcullis::start(
        &PortcullisConfig::user_traffic(jwks.uri())
            .with_policy(&global_limit_policy())
            .with_extra("state:\n  redis: redis://127.0.0.1:6379\n"),
    )
    .await;
    let log = envoy_refuses(&module_yaml(
        &unused_addrs(),
        &portcullis.dir().join("portcullis.yaml"),
        false,
    ));
    assert!(
        log.contains("scope: global") && log.contains("fallback: ext_authz"),
        "Envoy's log says why: {log}"
    );
}

#[tokio::test]
async fn a_global_rate_limit_is_counted_once_by_the_server_not_by_the_module() {
    envoy_bin();
    let key = SigningKey::generate(FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoUpstream::start().await;
    let portcullis = Portcullis::start(
        &PortcullisConfig::user_traffic(jwks.uri())
            .with_policy(&global_limit_policy())
            .with_extra("state:\n  redis: redis://127.0.0.1:6379\n"),
    )
    .await;
    let module = module_envoy(&portcullis, upstream.addr(), true).await;
    // A new user: a bucket of its own in the shared Redis.
    let user = ClerkClaims::user("USER").sign(&key);
    until_decided_in_module(&module, &user).await;
    for n in 1..=LIMIT {
        let before = ext_authz_checks(&module).await;
        let allowed = module.get("/api/limited").bearer(&user).send().await;
        assert_eq!(allowed.status, 200, "request {n} of {LIMIT}: {allowed}");
        assert_eq!(
            ext_authz_checks(&module).await,
            before + 1,
            "the server decided it"
        );
    }
    let limited = module.get("/api/limited").bearer(&user).send().await;
    assert_eq!(limited.status, 429, "{limited}");
    assert!(limited.upstream().is_none());
}

#[tokio::test]
async fn the_guard_refuses_a_request_that_got_past_ext_authz_without_an_allow() {
    envoy_bin();
    module_dir();
    let key = SigningKey::generate(FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoUpstream::start().await;
    let portcullis = Portcullis::start(&PortcullisConfig::user_traffic(jwks.uri())).await;
    // The module's keys are slow to come: a token needs I/O, so it goes to the
    // ext_authz filter, which is built wrong: its server is down and it fails
    // open.
    jwks.set_delay(std::time::Duration::from_secs(30));
    let addrs = FrontProxyAddrs {
        listener: SocketAddr::from(([127, 0, 0, 1], free_port())),
        admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
        portcullis: SocketAddr::from(([127, 0, 0, 1], free_port())),
        upstream: upstream.addr(),
    };
    let shipped = module_yaml(&addrs, &portcullis.dir().join("portcullis.yaml"), true);
    let fail_open = shipped.replace("failure_mode_allow: false", "failure_mode_allow: true");
    assert_ne!(fail_open, shipped);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let envoy = Envoy::start_bootstrap(dir, &fail_open, addrs.listener, addrs.admin).await;

    let user = ClerkClaims::user("USER").sign(&key);
    let refused = envoy
        .get("/api/videos")
        .bearer(&user)
        .header("x-request-id", "req-guard")
        .send()
        .await;
    assert_eq!(refused.status, 503, "{refused}");
    assert!(refused.upstream().is_none(), "the upstream was reached");
    assert_eq!(refused.json()["error"], "unavailable", "{refused}");
    assert_eq!(refused.json()["request_id"], "req-guard", "{refused}");
    // What the module decides itself passes the guard.
    let public = envoy.get("/public/index.html").send().await;
    assert_eq!(public.status, 200, "{public}");
    assert!(public.upstream().is_some());
}

/// The user-traffic config with Clerk webhooks (secret [`support::svix::SECRET`]
/// in `secrets`), session revocation from webhooks, and `state.redis` at `redis`.
fn with_replicas(jwks: &JwksServer, secrets: &Path, redis: &str) -> PortcullisConfig {
    let secret = secrets.join("clerk.secret");
    std::fs::write(&secret, support::svix::SECRET).expect("write the webhook secret");
    PortcullisConfig::user_traffic(jwks.uri()).with_extra(&format!(
        "webhooks:\n  clerk: {{ secret_file: {} }}\nstate:\n  redis: redis://{redis}\nrevocation:\n  sessions_from_webhooks: true\n",
        secret.display()
    ))
}

/// Delivers a Svix-signed Clerk event to the server's webhook endpoint.
async fn deliver(portcullis: &Portcullis, client: &reqwest::Client, event: serde_json::Value) {
    let body = event.to_string();
    let id = format!("msg_{:016x}", rand::random::<u64>());
    let ts = support::svix::now();
    let signature = support::svix::sign(support::svix::SECRET, &id, ts, body.as_bytes());
    let status = client
        .post(format!("http://{}/webhooks/clerk", portcullis.http_addr()))
        .header("svix-id", id)
        .header("svix-timestamp", ts.to_string())
        .header("svix-signature", signature)
        .body(body)
        .send()
        .await
        .expect("deliver the webhook")
        .status();
    assert_eq!(
        status,
        200,
        "the server took the webhook: {}",
        portcullis.log()
    );
}

/// Asks the module with `token` until it answers 401 `reason`, within a second of
/// `since`, without the fallback being asked; returns how long it took.
async fn refused_by_module_within_a_second(
    module: &Envoy,
    token: &str,
    reason: &str,
    since: std::time::Instant,
) -> std::time::Duration {
    loop {
        let before = ext_authz_checks(module).await;
        let response = module.get("/api/videos").bearer(token).send().await;
        let asked = ext_authz_checks(module).await - before;
        assert_eq!(asked, 0, "decided by the fallback: {response}");
        if response.status == 401 {
            assert!(response.text().contains(reason), "{response}");
            assert!(response.upstream().is_none());
            return since.elapsed();
        }
        assert_eq!(response.status, 200, "{response}");
        assert!(
            since.elapsed() < std::time::Duration::from_secs(1),
            "the module still allows it after 1 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_hears_revocations_and_deletions_made_on_the_server_within_a_second() {
    envoy_bin();
    let key = SigningKey::generate(FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoUpstream::start().await;
    let secrets = tempfile::tempdir().expect("a temporary directory");
    let portcullis =
        Portcullis::start(&with_replicas(&jwks, secrets.path(), "127.0.0.1:6379")).await;
    let module = module_envoy(&portcullis, upstream.addr(), true).await;
    let client = reqwest::Client::new();
    // Decided in the module: its revocation set is loaded, it is subscribed.
    let session = ClerkClaims::user("USER");
    let session_token = session.sign(&key);
    until_decided_in_module(&module, &session_token).await;

    let started = std::time::Instant::now();
    deliver(
        &portcullis,
        &client,
        serde_json::json!({"type": "session.revoked", "object": "event",
            "data": {"id": session.sid, "object": "session", "status": "revoked"}}),
    )
    .await;
    let took =
        refused_by_module_within_a_second(&module, &session_token, "token revoked", started).await;
    println!(
        "session revoked on the server, refused in the module after {:.1} ms",
        took.as_secs_f64() * 1e3
    );

    // A deleted user (`source: claims`: the tombstone is all that refuses it).
    let mut deleted = ClerkClaims::user("USER");
    deleted.sub = format!("user_{:016x}", rand::random::<u64>());
    let deleted_token = deleted.sign(&key);
    let allowed = module
        .get("/api/videos")
        .bearer(&deleted_token)
        .send()
        .await;
    assert_eq!(allowed.status, 200, "{allowed}");
    let started = std::time::Instant::now();
    deliver(
        &portcullis,
        &client,
        serde_json::json!({"type": "user.deleted", "object": "event",
            "data": {"id": deleted.sub, "object": "user", "deleted": true}}),
    )
    .await;
    let took = refused_by_module_within_a_second(&module, &deleted_token, "deleted", started).await;
    println!(
        "user deleted on the server, refused in the module after {:.1} ms",
        took.as_secs_f64() * 1e3
    );
}

#[tokio::test]
async fn until_the_module_has_loaded_the_revocations_no_token_gets_through() {
    envoy_bin();
    let key = SigningKey::generate(FIRST_KID);
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoUpstream::start().await;
    let secrets = tempfile::tempdir().expect("a temporary directory");
    // A Redis nobody listens on: the set is never loaded.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let portcullis =
        Portcullis::start_unready(&with_replicas(&jwks, secrets.path(), &nowhere)).await;
    let module = module_envoy(&portcullis, upstream.addr(), false).await;
    let user = ClerkClaims::user("USER").sign(&key);
    // The server is not ready either (the same Redis): the module must refuse
    // these itself, never pass them on to the ext_authz filter after it.
    for _ in 0..20 {
        let before = ext_authz_checks(&module).await;
        let refused = module.get("/api/videos").bearer(&user).send().await;
        assert_eq!(refused.status, 503, "{refused}");
        assert_eq!(refused.json()["error"], "unavailable", "{refused}");
        assert!(refused.upstream().is_none());
        assert_eq!(
            ext_authz_checks(&module).await,
            before,
            "refused by the server, not the module"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Without a token there is nothing to look up: the policy decides.
    let anonymous = module.get("/public").send().await;
    assert_eq!(anonymous.status, 200, "{anonymous}");
}
