//! Revocation in-process (docs/revocation.md): by `jti`, by subject (tokens
//! issued before the revocation's second, and those without `iat`), by Clerk
//! session; refused with 401 "token revoked" on the gRPC listener, the HTTP
//! mode and at token exchange; made through the admin API (only by
//! `admin.principals` over mTLS — anyone else changes nothing), the CLI and
//! Clerk session webhooks; kept across a config reload; the tokens portcullis
//! signs (exchanged, internal) fall with the session and subject they came
//! from. The Redis tests use the real Redis at 127.0.0.1:6379: revocations
//! shared between two servers, Redis taken from one of them (a TCP proxy): not
//! ready and every token a 503 until loaded, with the reason; a copy kept while
//! away, what was announced meanwhile loaded on return; a later revocation
//! merged, never shortening an earlier one (in memory and in the key); a Redis
//! that never answers given up on and reported.

mod support;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use portcullis::admin_pb::admin_client::AdminClient;
use portcullis::admin_pb::revoke_request::Target;
use portcullis::admin_pb::{GetStatusRequest, ListRevocationsRequest, RevokeRequest};
use portcullis::clock::Clock;
use portcullis::config::Config;
use portcullis::server::Server;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::pki::TestPki;
use support::svix::{self, SECRET as WEBHOOK_SECRET};
use tonic::transport::Channel;

const HMAC: &str = "0123456789abcdef0123456789abcdef";
/// The one SPIFFE ID in `admin.principals`.
const ADMIN: &str = "spiffe://example.org/ns/default/sa/admin";

/// What a test's server is made of.
struct Setup {
    dir: tempfile::TempDir,
    pki: Option<TestPki>,
    clock: Clock,
    grpc: SocketAddr,
    http: SocketAddr,
}

/// The config text: an HS256 issuer (5 s leeway), claims users, Clerk
/// webhooks, `revocation`/`admin` as given, mTLS on the gRPC listener when
/// `pki` is given, and `extra` top-level YAML.
fn config_text(pki: Option<&TestPki>, sessions: bool, principals: &str, extra: &str) -> String {
    let tls = pki.map_or(String::new(), |pki| {
        let certs = pki.certs();
        format!(
            "  tls: {{ cert: {}, key: {}, client_ca: {} }}\n",
            certs.join("portcullis/chain.pem").display(),
            certs.join("portcullis/key.pem").display(),
            pki.bundle().display()
        )
    });
    format!(
        "\
server:
  grpc_listen: 127.0.0.1:0
  http_listen: 127.0.0.1:0
{tls}trust_domain: example.org
issuers:
  - name: app
    kind: user
    issuer: example-auth
    secret_file: secret
    algorithms: [HS256]
    leeway: 5s
    credentials: [{{ header: authorization, prefix: 'Bearer ' }}]
users:
  source: claims
headers:
  user: {{ x-user-id: user.id }}
webhooks:
  clerk: {{ secret_file: webhook-secret }}
revocation:
  sessions_from_webhooks: {sessions}
admin:
  principals: [{principals}]
policy: policy.yaml
{extra}"
    )
}

/// A PKI with the server's certificate (DNS `localhost`) and three clients:
/// `admin` (in `admin.principals`), `videos` (not) and `envoy` (for Checks).
fn pki() -> TestPki {
    let pki = TestPki::new("example.org");
    pki.issue("portcullis", &["localhost"]);
    for name in ["admin", "videos", "envoy"] {
        pki.issue(name, &[]);
    }
    pki
}

/// A directory with the secrets and the policy (`/public` open to anyone,
/// the rest to any authenticated principal).
fn prepare() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), HMAC).unwrap();
    std::fs::write(dir.path().join("webhook-secret"), WEBHOOK_SECRET).unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        "rules:\n  - name: public\n    to: { paths: [/public] }\n    from: anyone\n  - name: all\n    from: authenticated\n",
    )
    .unwrap();
    dir
}

async fn start(pki: Option<TestPki>, sessions: bool, extra: &str) -> Setup {
    let text = config_text(pki.as_ref(), sessions, ADMIN, extra);
    launch(prepare(), pki, &text).await
}

/// Serves `text` as `dir/portcullis.yaml` on a manual clock.
async fn launch(dir: tempfile::TempDir, pki: Option<TestPki>, text: &str) -> Setup {
    std::fs::write(dir.path().join("portcullis.yaml"), text).unwrap();
    let clock = Clock::manual();
    let (grpc, http) = serve(&dir.path().join("portcullis.yaml"), clock.clone()).await;
    Setup {
        dir,
        pki,
        clock,
        grpc,
        http,
    }
}

async fn serve(config: &Path, clock: Clock) -> (SocketAddr, SocketAddr) {
    let config = Config::load(config).unwrap();
    let server = Server::bind_with_clock(&config, clock).await.unwrap();
    let addrs = (server.grpc_addr(), server.http_addr());
    tokio::spawn(server.run(std::future::pending()));
    addrs
}

impl Setup {
    /// A gRPC channel to the server: plaintext, or mTLS as `identity`.
    async fn channel(&self, identity: &str) -> Channel {
        let Some(pki) = &self.pki else {
            return Channel::from_shared(format!("http://{}", self.grpc))
                .unwrap()
                .connect()
                .await
                .unwrap();
        };
        let dir = pki.certs().join(identity);
        let tls = tonic::transport::ClientTlsConfig::new()
            .domain_name("localhost")
            .ca_certificate(tonic::transport::Certificate::from_pem(
                std::fs::read(pki.bundle()).unwrap(),
            ))
            .identity(tonic::transport::Identity::from_pem(
                std::fs::read(dir.join("chain.pem")).unwrap(),
                std::fs::read(dir.join("key.pem")).unwrap(),
            ));
        Channel::from_shared(format!("https://{}", self.grpc))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .expect("mTLS to portcullis")
    }

    async fn admin(&self, identity: &str) -> AdminClient<Channel> {
        AdminClient::new(self.channel(identity).await)
    }

    /// The gRPC Check of `GET /x` with `token`: Ok, or the deny status and its
    /// `WWW-Authenticate`.
    async fn check(&self, token: &str) -> Result<(), (i32, String)> {
        let bearer = format!("Bearer {token}");
        let request = support::check::request("GET", "/x", &[("authorization", &bearer)]);
        match self.answer(request).await {
            Answer::Allow(_) => Ok(()),
            Answer::Deny {
                status, challenge, ..
            } => Err((status, challenge)),
        }
    }

    /// The gRPC Check of `request`, as Envoy sends it.
    async fn answer(&self, request: CheckRequest) -> Answer {
        let mut client = AuthorizationClient::new(self.channel("envoy").await);
        let response = client
            .check(request)
            .await
            .expect("Check never fails as an RPC")
            .into_inner();
        match response.http_response {
            Some(HttpResponse::OkResponse(ok)) => Answer::Allow(
                ok.headers
                    .into_iter()
                    .filter_map(|h| h.header)
                    .map(|h| (h.key, h.value))
                    .collect(),
            ),
            Some(HttpResponse::DeniedResponse(denied)) => {
                let challenge = denied
                    .headers
                    .iter()
                    .filter_map(|h| h.header.as_ref())
                    .find(|h| h.key.eq_ignore_ascii_case("www-authenticate"))
                    .map(|h| h.value.clone())
                    .unwrap_or_default();
                Answer::Deny {
                    status: denied.status.map_or(0, |s| s.code),
                    challenge,
                    body: denied.body,
                }
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// `POST /v1/token/exchange` with `token`: the status and the body.
    async fn exchange(&self, token: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("http://{}/v1/token/exchange", self.http))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The status of the HTTP mode's `/check/forward` for `GET /x` with `token`.
    async fn check_http(&self, token: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .get(format!("http://{}/check/forward", self.http))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.example.test")
            .header("x-forwarded-uri", "/x")
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn list(&self, identity: &str) -> Vec<(String, String)> {
        self.admin(identity)
            .await
            .list_revocations(ListRevocationsRequest {})
            .await
            .unwrap()
            .into_inner()
            .revocations
            .into_iter()
            .map(|r| (r.kind, r.value))
            .collect()
    }

    /// Replaces `portcullis.yaml` and waits until `probe` holds (3 s at most).
    async fn reload(&self, text: &str, mut probe: impl AsyncFnMut() -> bool) {
        let path = self.dir.path().join("portcullis.yaml");
        std::fs::write(path.with_extension("tmp"), text).unwrap();
        std::fs::rename(path.with_extension("tmp"), &path).unwrap();
        let start = Instant::now();
        while !probe().await {
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "the new config never applied"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A gRPC Check's answer.
#[derive(Debug)]
enum Answer {
    /// The headers set on the upstream request.
    Allow(HashMap<String, String>),
    Deny {
        status: i32,
        challenge: String,
        body: String,
    },
}

impl Answer {
    fn status(&self) -> i32 {
        match self {
            Answer::Allow(_) => 200,
            Answer::Deny { status, .. } => *status,
        }
    }
}

/// An HS256 token of the `app` issuer at `now` (seconds): `claims` over
/// `iss`, `exp` (five minutes on) and a random `jti`; a `null` claim is left
/// out.
fn token(now: u64, claims: Value) -> String {
    let mut all = json!({"iss": "example-auth", "exp": now + 300,
        "jti": format!("jti-{:016x}", rand::random::<u64>())});
    for (name, value) in claims.as_object().unwrap() {
        match value {
            Value::Null => {
                all.as_object_mut().unwrap().remove(name);
            }
            value => {
                all[name] = value.clone();
            }
        }
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &all,
        &jsonwebtoken::EncodingKey::from_secret(HMAC.as_bytes()),
    )
    .unwrap()
}

fn random(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

fn revoked((status, challenge): (i32, String)) -> bool {
    status == 401
        && challenge.contains(r#"error="invalid_token""#)
        && challenge.contains("token revoked")
}

async fn revoke(admin: &mut AdminClient<Channel>, target: Target) -> Result<(), tonic::Status> {
    admin
        .revoke(RevokeRequest {
            target: Some(target),
            ttl_seconds: 0,
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_jti_is_refused_on_both_listeners_and_at_token_exchange() {
    let exchange = "tokens:\n  key_dir: tokens\n";
    let setup = start(Some(pki()), true, "").await;
    // Token exchange needs a signing key: reload with one.
    support::pki::portcullis_ok(&["token", "jwks", "--dir", setup.dir.path().to_str().unwrap()]);
    let now = setup.clock.unix_secs();
    let sub = random("user_");
    let (jti, other_jti) = (random("j-"), random("j-"));
    let revoked_token = token(now, json!({"sub": sub, "jti": jti, "iat": now}));
    let other = token(now, json!({"sub": sub, "jti": other_jti, "iat": now}));
    let text = config_text(setup.pki.as_ref(), true, ADMIN, exchange);
    setup
        .reload(&text, async || {
            let response = reqwest::Client::new()
                .post(format!("http://{}/v1/token/exchange", setup.http))
                .bearer_auth(&other)
                .send()
                .await
                .unwrap();
            response.status() == 200
        })
        .await;
    assert_eq!(setup.check(&revoked_token).await, Ok(()));
    assert_eq!(setup.check_http(&revoked_token).await.0, 200);

    let mut admin = setup.admin("admin").await;
    revoke(&mut admin, Target::Jti(jti.clone())).await.unwrap();

    let refusal = setup.check(&revoked_token).await.unwrap_err();
    assert!(revoked(refusal.clone()), "gRPC: {refusal:?}");
    let (status, body) = setup.check_http(&revoked_token).await;
    assert_eq!(status, 401, "HTTP mode: {body}");
    assert!(body.contains("token revoked"), "{body}");
    let exchanged = reqwest::Client::new()
        .post(format!("http://{}/v1/token/exchange", setup.http))
        .bearer_auth(&revoked_token)
        .send()
        .await
        .unwrap();
    assert_eq!(exchanged.status(), 401, "a revoked token is not exchanged");
    assert!(exchanged.text().await.unwrap().contains("token revoked"));

    assert_eq!(
        setup.check(&other).await,
        Ok(()),
        "another jti of the subject"
    );
    assert_eq!(
        setup.list("admin").await,
        vec![("jti".to_owned(), jti.clone())]
    );
    let metrics = setup.metrics().await;
    assert!(
        metrics.contains(r#"portcullis_revoked_total{kind="jti"} 3"#),
        "{metrics}"
    );

    // The entry lasts its TTL (24 h by default), then the token is accepted.
    setup.clock.advance(Duration::from_secs(24 * 3600 - 60));
    let again = token(setup.clock.unix_secs(), json!({"sub": sub, "jti": jti}));
    assert!(revoked(setup.check(&again).await.unwrap_err()));
    setup.clock.advance(Duration::from_secs(60));
    let after = token(setup.clock.unix_secs(), json!({"sub": sub, "jti": "ended"}));
    assert_eq!(setup.check(&after).await, Ok(()));
    assert!(setup.list("admin").await.is_empty(), "over at its end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_is_refused_for_tokens_issued_before_the_revocations_second() {
    let setup = start(Some(pki()), true, "").await;
    let sub = random("user_");
    setup.clock.advance(Duration::from_millis(600));
    let second = setup.clock.unix_secs();
    let issued = |iat: Option<u64>| {
        token(
            second,
            json!({"sub": sub, "iat": iat.map_or(Value::Null, Value::from)}),
        )
    };
    let (before, same, after, none) = (
        issued(Some(second - 1)),
        issued(Some(second)),
        issued(Some(second + 1)),
        issued(None),
    );
    for token in [&before, &same, &after, &none] {
        assert_eq!(setup.check(token).await, Ok(()), "not revoked yet");
    }
    let mut admin = setup.admin("admin").await;
    revoke(&mut admin, Target::Sub(sub.clone())).await.unwrap();
    assert!(
        revoked(setup.check(&before).await.unwrap_err()),
        "issued the second before"
    );
    assert_eq!(
        setup.check(&same).await,
        Ok(()),
        "issued in the revocation's second"
    );
    assert_eq!(setup.check(&after).await, Ok(()), "issued after");
    assert!(revoked(setup.check(&none).await.unwrap_err()), "no iat");
    let stranger = token(second, json!({"sub": random("user_"), "iat": second - 1}));
    assert_eq!(setup.check(&stranger).await, Ok(()), "another subject");
    assert!(setup
        .metrics()
        .await
        .contains(r#"portcullis_revoked_total{kind="sub"} 2"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_refused_whenever_its_tokens_were_minted() {
    let setup = start(Some(pki()), true, "").await;
    let (sub, sid) = (random("user_"), random("sess_"));
    let now = setup.clock.unix_secs();
    let minted_before = token(now, json!({"sub": sub, "sid": sid, "iat": now}));
    let mut admin = setup.admin("admin").await;
    revoke(&mut admin, Target::Sid(sid.clone())).await.unwrap();
    setup.clock.advance(Duration::from_secs(30));
    let later = setup.clock.unix_secs();
    let minted_after = token(later, json!({"sub": sub, "sid": sid, "iat": later}));
    let other_session = token(
        later,
        json!({"sub": sub, "sid": random("sess_"), "iat": later}),
    );
    assert!(revoked(setup.check(&minted_before).await.unwrap_err()));
    assert!(revoked(setup.check(&minted_after).await.unwrap_err()));
    assert_eq!(setup.check(&other_session).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_callers_outside_admin_principals_change_nothing() {
    let setup = start(Some(pki()), true, "").await;
    let now = setup.clock.unix_secs();
    let (sub, jti) = (random("user_"), random("j-"));
    let token = token(now, json!({"sub": sub, "jti": jti, "iat": now - 5}));

    let mut stranger = setup.admin("videos").await;
    for target in [
        Target::Jti(jti.clone()),
        Target::Sub(sub.clone()),
        Target::Sid(random("sess_")),
    ] {
        let refused = revoke(&mut stranger, target).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("not in admin.principals"));
    }
    let listed = stranger
        .list_revocations(ListRevocationsRequest {})
        .await
        .unwrap_err();
    assert_eq!(listed.code(), tonic::Code::PermissionDenied);
    assert_eq!(setup.check(&token).await, Ok(()), "nothing changed");
    assert!(setup.list("admin").await.is_empty());

    // Without TLS on the listener nobody is authenticated: never open.
    let plain = start(None, true, "").await;
    let mut anonymous = plain.admin("").await;
    let refused = revoke(&mut anonymous, Target::Sub(sub.clone()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let listed = anonymous
        .list_revocations(ListRevocationsRequest {})
        .await
        .unwrap_err();
    assert_eq!(listed.code(), tonic::Code::Unauthenticated);
    assert_eq!(plain.check(&token).await, Ok(()), "nothing changed");
    // GetStatus (read-only) stays open.
    let status = anonymous
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.ready && status.revocations.unwrap().loaded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_the_admin_principals_follow_a_config_reload() {
    let setup = start(Some(pki()), true, "").await;
    let now = setup.clock.unix_secs();
    let sub = random("user_");
    let token = token(now, json!({"sub": sub, "iat": now - 5}));
    let mut admin = setup.admin("admin").await;
    revoke(&mut admin, Target::Sub(sub.clone())).await.unwrap();

    // admin.principals now names videos instead of admin.
    let videos = "spiffe://example.org/ns/default/sa/videos";
    let text = config_text(setup.pki.as_ref(), true, videos, "");
    let mut by_videos = setup.admin("videos").await;
    setup
        .reload(&text, async || {
            by_videos
                .list_revocations(ListRevocationsRequest {})
                .await
                .is_ok()
        })
        .await;
    assert!(
        revoked(setup.check(&token).await.unwrap_err()),
        "the revocation survives the reload"
    );
    let refused = revoke(&mut admin, Target::Jti(random("j-")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(setup.list("videos").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clerk_session_webhooks_revoke_their_session() {
    let setup = start(Some(pki()), true, "").await;
    let now = setup.clock.unix_secs();
    for kind in ["session.revoked", "session.ended", "session.removed"] {
        let sid = random("sess_");
        let token = token(now, json!({"sub": random("user_"), "sid": sid, "iat": now}));
        assert_eq!(setup.check(&token).await, Ok(()));
        assert_eq!(deliver_session(setup.http, kind, &sid).await, 200, "{kind}");
        assert!(revoked(setup.check(&token).await.unwrap_err()), "{kind}");
    }
    let listed = setup.list("admin").await;
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|(kind, _)| kind == "sid"));
    assert_eq!(
        deliver_session(setup.http, "session.created", &random("sess_")).await,
        200
    );
    assert_eq!(
        setup.list("admin").await.len(),
        3,
        "other events revoke nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clerk_session_webhooks_are_ignored_without_sessions_from_webhooks() {
    let setup = start(None, false, "").await;
    let now = setup.clock.unix_secs();
    let sid = random("sess_");
    let token = token(now, json!({"sub": random("user_"), "sid": sid, "iat": now}));
    for kind in ["session.revoked", "session.ended", "session.removed"] {
        assert_eq!(
            deliver_session(setup.http, kind, &sid).await,
            200,
            "acknowledged"
        );
    }
    assert_eq!(setup.check(&token).await, Ok(()), "and ignored");
}

/// A signed Clerk session event for `sid`; its status.
async fn deliver_session(http: SocketAddr, kind: &str, sid: &str) -> u16 {
    let body = json!({"type": kind, "object": "event",
        "data": {"id": sid, "object": "session", "user_id": "user_x", "status": "revoked"}})
    .to_string();
    let id = random("msg_");
    svix::signed(http, WEBHOOK_SECRET, &id, svix::now(), body.as_bytes())
        .await
        .0
}

/// Runs `portcullis ARGS...` off the test's runtime (the server runs on it).
async fn cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::pki::portcullis(&args)
    })
    .await
    .unwrap()
}

fn args(setup: &Setup, cert: &Path, rest: &[&str]) -> Vec<String> {
    let mut all = vec![
        "revoke".to_owned(),
        "--server".to_owned(),
        setup.grpc.to_string(),
        "--cert".to_owned(),
        cert.display().to_string(),
    ];
    all.extend(rest.iter().map(|s| s.to_string()));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_revokes_lists_and_checks_the_server_identity() {
    let setup = start(Some(pki()), true, "").await;
    let certs: PathBuf = setup.pki.as_ref().unwrap().certs();
    let now = setup.clock.unix_secs();
    let sub = random("user_");
    let token = token(now, json!({"sub": sub, "iat": now - 5}));

    // The wrong server identity: refused before anything is sent.
    let pinned = cli(args(
        &setup,
        &certs.join("admin"),
        &[
            "--sub",
            &sub,
            "--server-id",
            "spiffe://example.org/ns/default/sa/videos",
        ],
    ))
    .await;
    assert_eq!(pinned.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&pinned.stderr);
    assert!(
        stderr.contains("the server is spiffe://example.org/ns/default/sa/portcullis"),
        "{stderr}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    // A caller not in admin.principals.
    let stranger = cli(args(&setup, &certs.join("videos"), &["--sub", &sub])).await;
    assert_eq!(stranger.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&stranger.stderr);
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    assert!(
        stderr.contains("warning: without --server-id, any SVID of example.org"),
        "an unpinned server identity is said: {stderr}"
    );
    // A bundle of another CA: the server does not verify.
    let other = TestPki::new("example.org");
    let foreign = other.issue("admin", &[]);
    let foreign = cli(args(&setup, &foreign, &["--sub", &sub])).await;
    assert_eq!(foreign.status.code(), Some(1));
    assert_eq!(setup.check(&token).await, Ok(()), "nothing changed");

    // The admin, checking the server's exact SPIFFE ID.
    let revoked_out = cli(args(
        &setup,
        &certs.join("admin"),
        &[
            "--sub",
            &sub,
            "--ttl",
            "1h",
            "--server-id",
            "spiffe://example.org/ns/default/sa/portcullis",
        ],
    ))
    .await;
    assert!(
        revoked_out.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked_out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&revoked_out.stdout).starts_with(&format!("revoked sub {sub} "))
    );
    assert!(revoked(setup.check(&token).await.unwrap_err()));
    let listed = cli(args(&setup, &certs.join("admin"), &["--list"])).await;
    assert!(listed.status.success());
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        stdout.contains(&format!("sub {sub} since "))
            && stdout.contains(&format!("by admin:{ADMIN}")),
        "{stdout}"
    );
    // One hour, not the default day.
    setup.clock.advance(Duration::from_secs(3600));
    assert!(setup.list("admin").await.is_empty());

    // Usage errors: exit 2.
    let none = cli(args(&setup, &certs.join("admin"), &[])).await;
    assert_eq!(none.status.code(), Some(2));
    let two = cli(args(
        &setup,
        &certs.join("admin"),
        &["--sub", "a", "--sid", "b"],
    ))
    .await;
    assert_eq!(two.status.code(), Some(2));
}

/// GET `/readyz` of `http`: (status, body).
async fn readyz(http: SocketAddr) -> (u16, Value) {
    let response = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn eventually(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !probe().await {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_revocations_through_redis_and_catch_up_after_an_outage() {
    let mut proxy = support::proxy::Proxy::start("127.0.0.1:6379".parse().unwrap()).await;
    proxy.stop();
    let direct = "state:\n  redis: redis://127.0.0.1:6379\n";
    let a = start(None, true, direct).await;
    // B starts while its Redis is away: not ready, and says why.
    let b = start(
        None,
        true,
        &format!("state:\n  redis: redis://{}\n", proxy.addr),
    )
    .await;
    eventually(
        "B says why it is not ready",
        Duration::from_secs(5),
        async || {
            let (status, body) = readyz(b.http).await;
            status == 503
                && body["revocations"]["loaded"] == false
                && body["revocations"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("not loaded from Redis"))
        },
    )
    .await;
    let status = b
        .admin("")
        .await
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.ready && !status.revocations.unwrap().loaded);

    let now = a.clock.unix_secs();
    let (first, second) = (random("sess_"), random("sess_"));
    let first_token = token(now, json!({"sub": random("user_"), "sid": first}));
    let second_token = token(now, json!({"sub": random("user_"), "sid": second}));
    assert_eq!(
        deliver_session(a.http, "session.revoked", &first).await,
        200
    );
    assert!(revoked(a.check(&first_token).await.unwrap_err()));

    // Redis reachable: B loads the set (it was announced before B subscribed).
    proxy.restart().await;
    eventually(
        "B loads the revocations",
        Duration::from_secs(10),
        async || readyz(b.http).await.0 == 200,
    )
    .await;
    assert!(revoked(b.check(&first_token).await.unwrap_err()));

    // B loses Redis: it keeps its copy and stays ready; it misses an announcement...
    proxy.stop();
    assert_eq!(deliver_session(a.http, "session.ended", &second).await, 200);
    assert!(
        revoked(b.check(&first_token).await.unwrap_err()),
        "copy kept"
    );
    assert_eq!(readyz(b.http).await.0, 200, "still serving");
    assert_eq!(b.check(&second_token).await, Ok(()), "missed while away");
    // ...and loads it when Redis returns.
    proxy.restart().await;
    eventually("B catches up", Duration::from_secs(40), async || {
        b.check(&second_token).await.is_err()
    })
    .await;
    assert!(revoked(b.check(&second_token).await.unwrap_err()));
}

/// The config of [`exchanged_and_internal_tokens_fall_with_the_session_and_subject_they_came_from`]:
/// tokens portcullis signs (internal ones on every allow with a user, exchanged
/// ones accepted by the `exchanged` issuer), mTLS on the gRPC listener.
fn signing_config(pki: &TestPki) -> String {
    let certs = pki.certs();
    format!(
        "\
server:
  grpc_listen: 127.0.0.1:0
  http_listen: 127.0.0.1:0
  tls: {{ cert: {}, key: {}, client_ca: {} }}
trust_domain: example.org
issuers:
  - {{ name: app, kind: user, issuer: example-auth, secret_file: secret, algorithms: [HS256], leeway: 5s }}
  - {{ name: exchanged, kind: user, issuer: portcullis, jwks_file: tokens/jwks.json, algorithms: [ES256], leeway: 30s }}
users:
  source: claims
headers:
  user: {{ x-user-id: user.id }}
  internal_token: true
tokens:
  key_dir: tokens
webhooks:
  clerk: {{ secret_file: webhook-secret }}
revocation:
  sessions_from_webhooks: true
admin:
  principals: [{ADMIN}]
policy: policy.yaml
",
        certs.join("portcullis/chain.pem").display(),
        certs.join("portcullis/key.pem").display(),
        pki.bundle().display()
    )
}

/// A Check of `GET /x` from the mTLS workload `videos` (Envoy's
/// `source.principal`) passing on the internal token `internal`.
fn from_videos(internal: &str) -> CheckRequest {
    let mut request = support::check::request("GET", "/x", &[("x-portcullis-token", internal)]);
    request.attributes.as_mut().unwrap().source = Some(Peer {
        principal: "spiffe://example.org/ns/default/sa/videos".into(),
        ..Default::default()
    });
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanged_and_internal_tokens_fall_with_the_session_and_subject_they_came_from() {
    let dir = prepare();
    support::pki::portcullis_ok(&["token", "jwks", "--dir", dir.path().to_str().unwrap()]);
    let pki = pki();
    let text = signing_config(&pki);
    let setup = launch(dir, Some(pki), &text).await;
    let now = setup.clock.unix_secs();
    // Two users: one whose session ends, one signed out everywhere.
    let (sid, sub) = (random("sess_"), random("user_"));
    let in_session = token(
        now,
        json!({"sub": random("user_"), "sid": sid, "iat": now - 5}),
    );
    let of_subject = token(now, json!({"sub": sub, "iat": now - 5}));
    let mut signed = Vec::new();
    for upstream in [&in_session, &of_subject] {
        let (status, body) = setup.exchange(upstream).await;
        assert_eq!(status, 200, "{body}");
        let exchanged = body["access_token"].as_str().unwrap().to_owned();
        let bearer = format!("Bearer {upstream}");
        let Answer::Allow(headers) = setup
            .answer(support::check::request(
                "GET",
                "/x",
                &[("authorization", &bearer)],
            ))
            .await
        else {
            panic!("the upstream token is allowed");
        };
        let internal = headers["x-portcullis-token"].clone();
        assert_eq!(
            setup.check(&exchanged).await,
            Ok(()),
            "exchanged, not revoked yet"
        );
        let east_west = setup.answer(from_videos(&internal)).await;
        assert_eq!(
            east_west.status(),
            200,
            "internal, not revoked yet: {east_west:?}"
        );
        signed.push((exchanged, internal));
    }

    // The session ends (Clerk's webhook): its exchanged and internal tokens
    // fall with it — they carry its `sid`.
    assert_eq!(
        deliver_session(setup.http, "session.ended", &sid).await,
        200
    );
    let (exchanged, internal) = &signed[0];
    assert!(
        revoked(setup.check(exchanged).await.unwrap_err()),
        "exchanged"
    );
    match setup.answer(from_videos(internal)).await {
        Answer::Deny { status, body, .. } => {
            assert_eq!(status, 401);
            assert!(body.contains("token revoked"), "{body}");
        }
        allowed => panic!("a revoked session's internal token was believed: {allowed:?}"),
    }

    // The subject is signed out everywhere, a minute later: its portcullis
    // tokens (`sub` = user.id, the IdP subject in `idp_sub`) fall too.
    setup.clock.advance(Duration::from_secs(60));
    let mut admin = setup.admin("admin").await;
    revoke(&mut admin, Target::Sub(sub.clone())).await.unwrap();
    let (exchanged, internal) = &signed[1];
    assert!(
        revoked(setup.check(&of_subject).await.unwrap_err()),
        "upstream"
    );
    assert!(
        revoked(setup.check(exchanged).await.unwrap_err()),
        "exchanged"
    );
    assert_eq!(
        setup.answer(from_videos(internal)).await.status(),
        401,
        "internal"
    );
    // A sign-in after the revocation's second is a new session: its token is
    // exchanged, and the exchanged one accepted.
    let later = setup.clock.unix_secs();
    let fresh = token(later, json!({"sub": sub, "iat": later}));
    assert_eq!(setup.check(&fresh).await, Ok(()));
    let metrics = setup.metrics().await;
    assert!(
        metrics.contains(r#"portcullis_revoked_total{kind="sid"} 2"#)
            && metrics.contains(r#"portcullis_revoked_total{kind="sub"} 3"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_revocation_never_shortens_an_earlier_one_in_memory_or_in_redis() {
    let direct = "state:\n  redis: redis://127.0.0.1:6379\n";
    let a = start(Some(pki()), true, direct).await;
    eventually("A loads", Duration::from_secs(10), async || {
        readyz(a.http).await.0 == 200
    })
    .await;
    let now = a.clock.unix_secs();
    let sub = random("user_");
    let token = token(now, json!({"sub": sub, "iat": now - 5}));
    let mut admin = a.admin("admin").await;
    let revoke_for = async |admin: &mut AdminClient<Channel>, ttl_seconds: u32| {
        admin
            .revoke(RevokeRequest {
                target: Some(Target::Sub(sub.clone())),
                ttl_seconds,
            })
            .await
            .unwrap()
            .into_inner()
            .revocation
            .unwrap()
    };
    let first = revoke_for(&mut admin, 3600).await;
    a.clock.advance(Duration::from_secs(5));
    // Later, for a minute: it moves the second on, and keeps the hour.
    let second = revoke_for(&mut admin, 60).await;
    assert_eq!(second.revoked_at_unix_ms, first.revoked_at_unix_ms + 5_000);
    assert_eq!(
        second.expires_at_unix_ms, first.expires_at_unix_ms,
        "the answer: what is in force"
    );
    let key = format!("portcullis:revocation:sub:{sub}");
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["revoked_at_ms"], second.revoked_at_unix_ms);
    assert_eq!(
        stored["expires_at_ms"], first.expires_at_unix_ms,
        "{stored}"
    );
    let expires_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        expires_at as u64, first.expires_at_unix_ms,
        "the key lives the hour"
    );

    // A replica that loads the set later gets the merged entry too.
    let b = start(None, true, direct).await;
    eventually("B loads", Duration::from_secs(10), async || {
        readyz(b.http).await.0 == 200
    })
    .await;
    b.clock.advance(Duration::from_secs(120));
    a.clock.advance(Duration::from_secs(120));
    assert!(
        revoked(a.check(&token).await.unwrap_err()),
        "A, after the minute"
    );
    assert!(
        revoked(b.check(&token).await.unwrap_err()),
        "B, after the minute"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_its_revocations_load_a_replica_answers_tokens_503_and_says_why() {
    let mut proxy = support::proxy::Proxy::start("127.0.0.1:6379".parse().unwrap()).await;
    proxy.stop();
    let tokens = "tokens:\n  key_dir: tokens\n";
    let dir = prepare();
    support::pki::portcullis_ok(&["token", "jwks", "--dir", dir.path().to_str().unwrap()]);
    let text = config_text(
        None,
        true,
        ADMIN,
        &format!("{tokens}state:\n  redis: redis://{}\n", proxy.addr),
    );
    let setup = launch(dir, None, &text).await;
    let now = setup.clock.unix_secs();
    let user = token(now, json!({"sub": random("user_"), "iat": now - 5}));

    // Why: the connection error itself, not only "not loaded".
    eventually("readiness says why", Duration::from_secs(5), async || {
        let (status, body) = readyz(setup.http).await;
        status == 503
            && body["revocations"]["subscription"] != "subscribed"
            && body["revocations"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("not loaded from Redis:") && e.contains("refused"))
    })
    .await;
    // A token cannot be told revoked or not: 503 everywhere it is read.
    let bearer = format!("Bearer {user}");
    let grpc = setup
        .answer(support::check::request(
            "GET",
            "/x",
            &[("authorization", &bearer)],
        ))
        .await;
    let Answer::Deny { status, body, .. } = &grpc else {
        panic!("a token was allowed before the revocations loaded: {grpc:?}");
    };
    assert_eq!(*status, 503);
    assert!(body.contains("revocations are not loaded yet"), "{body}");
    let (status, body) = setup.check_http(&user).await;
    assert_eq!(status, 503, "HTTP mode: {body}");
    let (status, body) = setup.exchange(&user).await;
    assert_eq!(status, 503, "token exchange: {body}");
    // Anonymous requests are decided as always.
    let public = setup
        .answer(support::check::request("GET", "/public", &[]))
        .await;
    assert_eq!(public.status(), 200, "{public:?}");
    let anonymous = setup
        .answer(support::check::request("GET", "/x", &[]))
        .await;
    assert_eq!(anonymous.status(), 401, "{anonymous:?}");

    proxy.restart().await;
    eventually(
        "the revocations load",
        Duration::from_secs(10),
        async || {
            let (status, body) = readyz(setup.http).await;
            status == 200 && body["revocations"]["subscription"] == "subscribed"
        },
    )
    .await;
    assert_eq!(setup.check(&user).await, Ok(()));
    assert_eq!(setup.exchange(&user).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_is_given_up_on_and_reported() {
    // Accepts connections and never says a word (a blackholed Redis).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let setup = start(None, true, &format!("state:\n  redis: redis://{addr}\n")).await;
    eventually("readiness says why", Duration::from_secs(10), async || {
        let (status, body) = readyz(setup.http).await;
        status == 503
            && body["revocations"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("timed out"))
    })
    .await;
}
