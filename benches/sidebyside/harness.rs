//! The side-by-side benchmark (`BENCHMARKS.md`): sets up keys, tokens, a
//! SQLite user directory and a 50-rule policy; starts each reference point as its
//! own process; offers the load; reads CPU time from `/proc`, portcullis' handler
//! histogram from `/metrics`, and RSS; and reports medians over rounds and the
//! ratios against their targets.
//!
//! CPU layout on a 2-core machine (`pin`): Envoy runs one worker thread on CPU 0,
//! the authorizer under test (null-authz or portcullis) on CPU 1, `wrk` on CPU 1,
//! and this process (the gRPC and fixed-rate load generators) on CPU 0 (set by
//! `scripts/bench`). A tokio runtime sized by `available_parallelism` therefore runs
//! one worker in both null-authz and portcullis: the same settings for both.

use super::envoy::{bootstrap, Auth, Endpoint};
use super::interleave::{self, Side, Traffic};
use super::load::{self, Load, LoadResult, Requests};
use super::nginx;
use super::procs::{self, Process};
use super::report;
use super::tokens::{self, ClerkClaims, SigningKey};
use bytes::Bytes;
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context::{HttpRequest, Peer, Request as AttrRequest},
    AttributeContext, CheckRequest,
};
use prost::Message as _;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much to run, and where the programs are.
#[derive(Clone, Debug)]
pub struct Options {
    pub rounds: usize,
    /// Length of one measurement (a run with a fresh-token pool may end earlier).
    pub duration: Duration,
    /// Unmeasured load before each measurement.
    pub warmup: Duration,
    /// Fresh RS256 tokens per scenario-(b) measurement.
    pub fresh_tokens: usize,
    /// Users and tokens the RSS scenario puts in the caches.
    pub fill: usize,
    /// Closed-loop concurrency (wrk connections, in-flight gRPC Checks).
    pub concurrency: usize,
    /// Pin processes with `taskset` (see the module doc).
    pub pin: bool,
    pub portcullis: PathBuf,
    pub null_authz: PathBuf,
    pub envoy: PathBuf,
    /// The directory holding `libportcullis_envoy_module.so` (docs/in-proxy.md),
    /// built in release by `scripts/bench`; without it the module's rows are
    /// skipped.
    pub envoy_module: Option<PathBuf>,
    /// Where `results.json` and the logs go.
    pub out: PathBuf,
    /// Run only the measurements whose name contains this (`fill` names the RSS
    /// fill): for profiling one scenario. The ratios of the others are NaN.
    pub only: Option<String>,
    /// Keep the fixture directory (config, keys, directory, policy) in `out`
    /// (`fixture-*`) and write the framed gRPC bodies of scenarios (a) and (c)
    /// into it, for profiling a server outside the harness (`h2load -d
    /// check-a.grpc`, valgrind, perf).
    pub keep: bool,
}

impl Options {
    fn wanted(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| name.contains(only))
    }
}

/// The gRPC status codes and HTTP statuses the scenarios expect.
const GRPC_OK: i32 = 0;
const GRPC_UNAUTHENTICATED: i32 = 16;
/// The route every scenario asks for: allowed for users by the last service's read
/// rule of the 50-rule policy (so the rule index is crossed, not short-cut).
const PATH: &str = "/svc14/items/7";
/// The same read under a rule with a local `rate_limit`, and with a global one
/// (Redis at 127.0.0.1:6379 when it answers): the rate-limit rows. The limits are
/// far above any load here, so every Check is counted and none refused.
const PATH_LOCAL_LIMIT: &str = "/limited-local/items/7";
const PATH_GLOBAL_LIMIT: &str = "/limited-global/items/7";
/// The Redis the global limit counts in.
const REDIS: &str = "127.0.0.1:6379";
const RATE: u32 = 1000;
/// A browser's usual request headers, sent end to end in every scenario (what
/// `allowed_headers` keeps away from the authorizer).
const BROWSER_HEADERS: &[(&str, &str)] = &[
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"),
    ("accept", "application/json, text/plain, */*"),
    ("accept-language", "en-GB,en-US;q=0.9,en;q=0.8"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("referer", "https://app.example.com/videos/7"),
    ("origin", "https://app.example.com"),
    ("sec-ch-ua", "\"Chromium\";v=\"126\", \"Not.A/Brand\";v=\"24\""),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", "\"Linux\""),
    ("sec-fetch-site", "same-site"),
    ("sec-fetch-mode", "cors"),
    ("sec-fetch-dest", "empty"),
];

/// One measurement, as reported.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Measured {
    pub name: String,
    pub load: LoadResult,
    /// CPU µs per request, by process (`envoy`, `authz`).
    pub cpu_us: BTreeMap<String, f64>,
    pub handler_p50_us: Option<f64>,
    pub handler_p99_us: Option<f64>,
}

/// Everything a run produced.
pub struct Report {
    pub json: Value,
    pub markdown: String,
}

/// Setup shared by all rounds.
struct Fixture {
    dir: tempfile::TempDir,
    key: SigningKey,
    cached_token: String,
    /// Two disjoint pools of fresh tokens: end to end, and direct gRPC.
    fresh_e2e: Vec<String>,
    fresh_grpc: Vec<String>,
    fill_tokens: Vec<String>,
    config_text: String,
    mtls: bool,
}

pub fn run(opts: &Options) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&opts.out)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(opts))
}

async fn run_async(opts: &Options) -> anyhow::Result<Report> {
    let fixture = Fixture::build(opts).await?;
    if opts.keep {
        fixture.keep()?;
    }
    let mut rounds: Vec<Vec<Measured>> = Vec::new();
    let mut rss = Vec::new();
    let mut verify_us = Vec::new();
    for round in 1..=opts.rounds {
        eprintln!("== round {round}/{}", opts.rounds);
        let (measured, round_rss, verify) = run_round(opts, &fixture).await?;
        for m in &measured {
            eprintln!("  {}", summary_line(m));
        }
        eprintln!("  bare RS256 verification (jsonwebtoken, aws-lc-rs): {verify:.1} µs");
        rss.push(round_rss);
        rounds.push(measured);
        verify_us.push(verify);
    }
    let fill = if opts.wanted("fill") {
        fill_rss(opts, &fixture).await?
    } else {
        f64::NAN
    };
    eprintln!(
        "RSS with {} cached users and tokens: {:.1} MiB",
        opts.fill,
        fill / 1048576.0
    );
    let report = report::report(opts, fixture.mtls, &rounds, &verify_us, &rss, fill);
    if opts.keep {
        let _ = fixture.dir.keep();
    }
    Ok(report)
}

impl Fixture {
    async fn build(opts: &Options) -> anyhow::Result<Self> {
        // Kept (`--keep`) beside the results; otherwise removed after the run.
        let dir = if opts.keep {
            tempfile::Builder::new()
                .prefix("fixture-")
                .tempdir_in(&opts.out)?
        } else {
            tempfile::Builder::new()
                .prefix("portcullis-bench")
                .tempdir()?
        };
        let key = SigningKey::generate("bench-1");
        std::fs::write(
            dir.path().join("jwks.json"),
            tokens::jwk_set(&[&key]).to_string(),
        )?;
        let secret = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        std::fs::write(dir.path().join("fill-secret"), &secret)?;
        let cached_token = clerk("user_bench", &key);
        let started = Instant::now();
        let mut fresh = mint_parallel(opts.fresh_tokens * 2, &key);
        let fresh_grpc = fresh.split_off(opts.fresh_tokens);
        eprintln!(
            "minted {} fresh RS256 tokens in {:.1} s",
            opts.fresh_tokens * 2,
            started.elapsed().as_secs_f64()
        );
        let fill_tokens = (0..opts.fill)
            .map(|i| fill_token(&format!("user_{i:06}"), &secret))
            .collect();
        directory(&dir.path().join("users.db"), opts.fill).await?;
        std::fs::write(dir.path().join("policy.yaml"), policy())?;
        if !redis_answers() {
            eprintln!("NOTICE: no Redis at {REDIS}: the global rate-limit rows count in the local fallback");
        }
        let mut fixture = Self {
            config_text: String::new(),
            dir,
            key,
            cached_token,
            fresh_e2e: fresh,
            fresh_grpc,
            fill_tokens,
            mtls: false,
        };
        fixture.mtls = fixture.mtls_supported(opts)?;
        if !fixture.mtls {
            eprintln!(
                "NOTICE: scenario (d) east-west mTLS skipped: this build's `portcullis config check` refuses an `mtls:` section"
            );
        }
        Ok(fixture)
    }

    /// `portcullis.yaml` for listeners `grpc` and `http`.
    /// `grpc`: `IP:PORT` or `unix:PATH`.
    fn config(&self, grpc: impl std::fmt::Display, http: SocketAddr, mtls: bool) -> String {
        let d = self.dir.path().display();
        format!(
            r#"server:
  grpc_listen: {grpc}
  http_listen: {http}
trust_domain: example.org
issuers:
  - name: clerk
    kind: user
    issuer: {iss}
    jwks_file: {d}/jwks.json
    algorithms: [RS256]
    audiences: []
    authorized_parties: [{azp}]
    leeway: 5s
    credentials: [{{ header: authorization }}, {{ cookie: __session }}]
  - name: fill
    kind: user
    issuer: bench-fill
    secret_file: {d}/fill-secret
    algorithms: [HS256]
    audiences: [bench]
users:
  source: sqlite://{d}/users.db
  query: SELECT id, role, channel_id FROM users WHERE clerk_id = $1
  cache: {{ ttl: 5m, negative_ttl: 30s, max_entries: 200000 }}
  on_unknown: deny
headers:
  strip_prefixes: [x-user-, x-service-, x-portcullis-]
  user: {{ x-user-id: user.id, x-user-role: user.role, x-user-channel-id: user.channel_id, x-user-clerk-id: token.sub }}
  request_id: x-request-id
policy: {d}/policy.yaml
{mtls}{redis}"#,
            iss = tokens::ISSUER,
            azp = tokens::AUTHORIZED_PARTY,
            mtls = if mtls { "mtls: {}\n" } else { "" },
            redis = if redis_answers() {
                format!("state:\n  redis: redis://{REDIS}\n")
            } else {
                String::new()
            },
        )
    }

    /// Writes what profiling a server outside the harness needs into the fixture
    /// directory and keeps it after the run (`--keep`).
    fn keep(&self) -> anyhow::Result<()> {
        let d = self.dir.path();
        // gRPC's length-prefixed message framing, as h2load sends a body file.
        let framed = |message: Bytes| {
            let mut body = vec![0u8];
            body.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
            body.extend_from_slice(&message);
            body
        };
        let cached = Some(self.cached_token.as_str());
        std::fs::write(
            d.join("check-a.grpc"),
            framed(check_request(PATH, cached, None)),
        )?;
        std::fs::write(
            d.join("check-c.grpc"),
            framed(check_request(PATH, None, None)),
        )?;
        let (grpc, http) = (
            SocketAddr::from(([127, 0, 0, 1], 9191)),
            SocketAddr::from(([127, 0, 0, 1], 9190)),
        );
        std::fs::write(d.join("profile.yaml"), self.config(grpc, http, self.mtls))?;
        eprintln!(
            "kept the fixture in {} (profile.yaml: portcullis on 127.0.0.1:9191/9190, check-a.grpc, check-c.grpc)",
            d.display()
        );
        Ok(())
    }

    /// Whether this build knows the east-west `mtls:` section (scenario d).
    fn mtls_supported(&mut self, opts: &Options) -> anyhow::Result<bool> {
        let (addr, other) = (
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
        );
        let plain = self.dir.path().join("check-plain.yaml");
        std::fs::write(&plain, self.config(addr, other, false))?;
        let check = |file: &Path| {
            std::process::Command::new(&opts.portcullis)
                .args(["config", "check", "--config"])
                .arg(file)
                .output()
        };
        let out = check(&plain)?;
        anyhow::ensure!(
            out.status.success(),
            "the benchmark's portcullis.yaml is refused: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let with = self.dir.path().join("check-mtls.yaml");
        std::fs::write(&with, self.config(addr, other, true))?;
        let ok = check(&with)?.status.success();
        self.config_text = self.config(addr, other, ok);
        Ok(ok)
    }
}

/// Whether Redis answers at [`REDIS`]: without it the global-limit rows count
/// in the local fallback (the report says so).
fn redis_answers() -> bool {
    let addr: SocketAddr = REDIS.parse().expect("a socket address");
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A Clerk-shaped RS256 session token for `sub`, valid for an hour.
fn clerk(sub: &str, key: &SigningKey) -> String {
    let mut claims = ClerkClaims::user("USER");
    claims.sub = sub.to_owned();
    claims.exp = claims.iat + 3600;
    claims.sign(key)
}

/// `n` distinct tokens of the directory's `user_bench`, minted on every core.
fn mint_parallel(n: usize, key: &SigningKey) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = n.div_ceil(threads.max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let count = per.min(n.saturating_sub(t * per));
                s.spawn(move || {
                    (0..count)
                        .map(|_| clerk("user_bench", key))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("minting thread"))
            .collect()
    })
}

/// An HS256 token of the `fill` issuer for `sub` (cheap to mint by the 100,000).
fn fill_token(sub: &str, secret: &str) -> String {
    let now = tokens::now();
    let claims = json!({ "sub": sub, "iss": "bench-fill", "aud": "bench", "iat": now, "nbf": now, "exp": now + 3600 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 encode")
}

/// The SQLite directory: `user_bench` plus `fill` users `user_000000`...
async fn directory(path: &Path, fill: usize) -> anyhow::Result<()> {
    use sqlx::{Connection as _, Executor as _};
    let mut db =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display())).await?;
    db.execute(
        "CREATE TABLE users (id TEXT, clerk_id TEXT PRIMARY KEY, role TEXT, channel_id TEXT)",
    )
    .await?;
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO users VALUES ('42', 'user_bench', 'USER', 'ch_42')")
        .execute(&mut *tx)
        .await?;
    for i in 0..fill {
        sqlx::query("INSERT INTO users VALUES (?1, ?2, 'USER', ?3)")
            .bind(format!("{i}"))
            .bind(format!("user_{i:06}"))
            .bind(format!("ch_{i}"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// 50 rules shaped like a mesh (as in `benches/policy.rs`): global denies, health,
/// an east-west rule, and 15 services with read, write and ownership rules; plus
/// the two rate-limited reads of the rate-limit rows.
fn policy() -> String {
    let mut text = String::from(
        "default: deny\nrules:\n  - name: banned\n    action: deny\n    to: { paths: [/**] }\n    from: { users: { roles: [BANNED] } }\n  - name: no-debug\n    action: deny\n    to: { paths: [/debug/**] }\n    from: anyone\n  - name: health\n    to: { paths: [/healthz] }\n    from: anyone\n  - name: internal-videos\n    to: { paths: [/internal/**] }\n    from: { services: [spiffe://example.org/ns/default/sa/videos] }\n  - name: admin\n    to: { paths: [/admin/**] }\n    from: { users: { roles: [ADMIN] } }\n",
    );
    // The rate-limit rows: svc14-read again, counted per user.
    for scope in ["local", "global"] {
        text.push_str(&format!(
            "  - name: limited-{scope}\n    to: {{ paths: [/limited-{scope}/**], methods: [GET] }}\n    from: {{ users: {{ roles: [USER, ADMIN] }} }}\n    rate_limit: {{ per: user, rate: 1000000/s, burst: 1000000, scope: {scope} }}\n"
        ));
    }
    for i in 0..15 {
        text.push_str(&format!(
            r#"  - name: svc{i}-read
    to: {{ paths: [/svc{i}, /svc{i}/**], methods: [GET] }}
    from: {{ users: {{ roles: [USER, ADMIN] }} }}
  - name: svc{i}-write
    to: {{ paths: [/svc{i}/**], methods: [POST, PUT, DELETE] }}
    from: {{ users: {{ roles: [ADMIN] }} }}
  - name: svc{i}-own
    to: {{ paths: ["/svc{i}/users/{{user_id}}/settings"] }}
    from: {{ users: {{}} }}
    when: params.user_id == user.id
"#
        ));
    }
    text
}

/// A serialized `CheckRequest` as Envoy sends it for `GET path` with `headers`
/// (pseudo-headers included, as Envoy does), from `principal` when given.
fn check_request(path: &str, token: Option<&str>, principal: Option<&str>) -> Bytes {
    let mut headers: std::collections::HashMap<String, String> = [
        (":authority", "api.example.com"),
        (":method", "GET"),
        (":path", path),
        (":scheme", "http"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "6f1c8a52-3c8e-4b8f-9b1e-5d2f4e0e7c11"),
    ]
    .into_iter()
    .chain(BROWSER_HEADERS.iter().copied())
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(token) = token {
        headers.insert("authorization".into(), format!("Bearer {token}"));
    }
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            source: principal.map(|p| Peer {
                principal: p.to_owned(),
                ..Default::default()
            }),
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    id: "1".into(),
                    method: "GET".into(),
                    path: path.into(),
                    host: "api.example.com".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    Bytes::from(request.encode_to_vec())
}

/// HTTP request headers for the end-to-end loaders.
fn http_headers(token: Option<&str>) -> Vec<(String, String)> {
    BROWSER_HEADERS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(token.map(|t| ("authorization".to_owned(), format!("Bearer {t}"))))
        .collect()
}

fn wrk_headers(token: Option<&str>) -> Vec<String> {
    http_headers(token)
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect()
}

/// The authorizers of one round, on CPU 1.
struct Authorizers {
    null: Process,
    null_addr: SocketAddr,
    /// null-authz doing one bare RS256 verification per Check: the floor of (b).
    null_rs256: Process,
    null_rs256_addr: SocketAddr,
    /// null-authz setting the four context headers portcullis sets in (a): what
    /// passing a user context costs Envoy.
    null_context: Process,
    null_context_addr: SocketAddr,
    portcullis: Process,
    grpc: SocketAddr,
    http: SocketAddr,
    /// A second portcullis, its gRPC listener on a Unix domain socket
    /// (docs/in-pod.md): the same check without the TCP loopback hop.
    portcullis_uds: Process,
    uds: std::path::PathBuf,
    uds_http: SocketAddr,
}

/// Slices of an interleaved measurement of length `d`: about one a second.
fn slice_count(d: Duration) -> usize {
    (d.as_secs_f64().round() as usize).max(1)
}

fn cpus(opts: &Options, which: &str) -> Option<String> {
    opts.pin.then(|| which.to_owned())
}

fn start_portcullis(
    opts: &Options,
    fixture: &Fixture,
    name: &str,
) -> anyhow::Result<(Process, SocketAddr, SocketAddr)> {
    let grpc = procs::free_port();
    let (mut process, http) = spawn_portcullis(opts, fixture, name, grpc)?;
    procs::wait_listening(grpc, &mut process)?;
    wait_ready(&mut process, http)?;
    Ok((process, grpc, http))
}

/// portcullis with its gRPC listener on the Unix socket `name.sock` in the
/// fixture directory.
fn start_portcullis_uds(
    opts: &Options,
    fixture: &Fixture,
    name: &str,
) -> anyhow::Result<(Process, std::path::PathBuf, SocketAddr)> {
    let socket = fixture.dir.path().join(format!("{name}.sock"));
    let listen = format!("unix:{}", socket.display());
    let (mut process, http) = spawn_portcullis(opts, fixture, name, listen)?;
    wait_ready(&mut process, http)?;
    Ok((process, socket, http))
}

/// `portcullis serve` on the fixture's config with gRPC at `grpc` (`IP:PORT`
/// or `unix:PATH`) and HTTP on a free port, on CPU 1.
fn spawn_portcullis(
    opts: &Options,
    fixture: &Fixture,
    name: &str,
    grpc: impl std::fmt::Display,
) -> anyhow::Result<(Process, SocketAddr)> {
    let http = procs::free_port();
    let config = fixture.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&config, fixture.config(grpc, http, fixture.mtls))?;
    let process = Process::spawn(
        "portcullis",
        &opts.portcullis,
        &[
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        &opts.out.join(format!("{name}.log")),
        cpus(opts, "1").as_deref(),
    )?;
    Ok((process, http))
}

fn wait_ready(process: &mut Process, http: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while procs::http_get(http, "/readyz").map(|r| r.0).unwrap_or(0) != 200 {
        process.alive()?;
        anyhow::ensure!(Instant::now() < deadline, "portcullis never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A null-authz process on a free port, with `args` after its address.
fn start_null_authz(
    opts: &Options,
    name: &str,
    args: &[String],
) -> anyhow::Result<(Process, SocketAddr)> {
    let addr = procs::free_port();
    let mut argv = vec![addr.to_string()];
    argv.extend_from_slice(args);
    let mut process = Process::spawn(
        name,
        &opts.null_authz,
        &argv,
        &opts.out.join(format!("{name}.log")),
        cpus(opts, "1").as_deref(),
    )?;
    procs::wait_listening(addr, &mut process)?;
    Ok((process, addr))
}

impl Authorizers {
    fn start(opts: &Options, fixture: &Fixture) -> anyhow::Result<Self> {
        let (null, null_addr) = start_null_authz(opts, "null-authz", &[])?;
        let jwks = fixture.dir.path().join("jwks.json");
        let (null_rs256, null_rs256_addr) = start_null_authz(
            opts,
            "null-authz-rs256",
            &["--verify-rs256".into(), jwks.display().to_string()],
        )?;
        let (null_context, null_context_addr) =
            start_null_authz(opts, "null-authz-context", &["--context-headers".into()])?;
        let (portcullis, grpc, http) = start_portcullis(opts, fixture, "portcullis")?;
        let (portcullis_uds, uds, uds_http) =
            start_portcullis_uds(opts, fixture, "portcullis-uds")?;
        Ok(Self {
            portcullis_uds,
            uds,
            uds_http,
            null,
            null_addr,
            null_rs256,
            null_rs256_addr,
            null_context,
            null_context_addr,
            portcullis,
            grpc,
            http,
        })
    }
}

fn start_envoy(opts: &Options, auth: &Auth, name: &str) -> anyhow::Result<(Process, SocketAddr)> {
    let (listener, admin) = (procs::free_port(), procs::free_port());
    let file = opts.out.join(format!("envoy-{name}.yaml"));
    std::fs::write(&file, bootstrap(listener, admin, auth))?;
    let module = match (auth, &opts.envoy_module) {
        (Auth::Module { .. }, Some(dir)) => {
            vec![("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", dir.as_path())]
        }
        _ => Vec::new(),
    };
    let mut envoy = Process::spawn_with_env(
        "envoy",
        &opts.envoy,
        &[
            "-c".into(),
            file.display().to_string(),
            "--concurrency".into(),
            "1".into(),
            "--disable-hot-restart".into(),
            "-l".into(),
            "error".into(),
        ],
        &module,
        &opts.out.join(format!("envoy-{name}.log")),
        cpus(opts, "0").as_deref(),
    )?;
    procs::wait_listening(listener, &mut envoy)?;
    // The listener may accept before the ext_authz cluster is up.
    std::thread::sleep(Duration::from_millis(300));
    Ok((envoy, listener))
}

/// Measures `load` while reading the CPU time of `watched` and, with `metrics`,
/// portcullis' handler histogram.
pub async fn measure<F, Fut>(
    name: &str,
    watched: &[(&str, &Process)],
    metrics: Option<SocketAddr>,
    load: F,
) -> anyhow::Result<Measured>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<LoadResult>>,
{
    let before_hist = metrics.map(procs::check_histogram).transpose()?;
    let before: Vec<_> = watched
        .iter()
        .map(|(_, p)| p.cpu())
        .collect::<Result<_, _>>()?;
    let result = load().await?;
    let after: Vec<_> = watched
        .iter()
        .map(|(_, p)| p.cpu())
        .collect::<Result<_, _>>()?;
    let mut cpu_us = BTreeMap::new();
    for (((label, _), b), a) in watched.iter().zip(before).zip(after) {
        let n = result.requests.max(1) as f64;
        cpu_us.insert(label.to_string(), (a - b).as_secs_f64() * 1e6 / n);
    }
    let (mut p50, mut p99) = (None, None);
    if let (Some(addr), Some(before)) = (metrics, before_hist) {
        let after = procs::check_histogram(addr)?;
        p50 = procs::quantile(&before, &after, 0.50).map(|q| q.0 * 1e6);
        p99 = procs::quantile(&before, &after, 0.99).map(|q| q.0 * 1e6);
    }
    Ok(Measured {
        name: name.to_owned(),
        load: result,
        cpu_us,
        handler_p50_us: p50,
        handler_p99_us: p99,
    })
}

fn write_tokens(dir: &Path, name: &str, tokens: &[String]) -> anyhow::Result<PathBuf> {
    let file = dir.join(name);
    std::fs::write(&file, tokens.join("\n") + "\n")?;
    Ok(file)
}

/// Every measurement of one round. Returns them, portcullis' RSS at the end and
/// the bare RS256 verification's cost, timed in shares between (b)'s slices.
async fn run_round(opts: &Options, fx: &Fixture) -> anyhow::Result<(Vec<Measured>, f64, f64)> {
    let authz = Authorizers::start(opts, fx)?;
    let mut out = Vec::new();
    let d = opts.duration;
    let c = opts.concurrency;
    let cached = Some(fx.cached_token.as_str());
    let wrk_pin = cpus(opts, "1");
    let e2e_fresh = write_tokens(fx.dir.path(), "fresh-e2e.txt", &fx.fresh_e2e)?;

    // Direct gRPC Check, pre-serialized requests, fixed concurrency.
    let grpc_a = Requests::cycle(vec![check_request(PATH, cached, None)]);
    let grpc_c = Requests::cycle(vec![check_request(PATH, None, None)]);
    let grpc_local = Requests::cycle(vec![check_request(PATH_LOCAL_LIMIT, cached, None)]);
    let grpc_global = Requests::cycle(vec![check_request(PATH_GLOBAL_LIMIT, cached, None)]);
    let grpc_d = Requests::cycle(vec![check_request(
        "/internal/videos/7",
        None,
        Some("spiffe://example.org/ns/default/sa/videos"),
    )]);
    let fresh_checks: Vec<Bytes> = fx
        .fresh_grpc
        .iter()
        .map(|t| check_request(PATH, Some(t), None))
        .collect();
    // The same pool for both: null-authz keeps no cache.
    // Warm both servers (connections, directory cache, token cache for `a`).
    for addr in [authz.null_addr, authz.null_rs256_addr, authz.grpc] {
        let r = load::grpc_check(
            addr,
            Arc::clone(&grpc_a),
            Load::Concurrency(c),
            opts.warmup,
            GRPC_OK,
        )
        .await?;
        anyhow::ensure!(
            r.unexpected == 0,
            "warm-up of {addr}: {} unexpected answers (see {})",
            r.unexpected,
            opts.out.display()
        );
    }
    // The pairs with a target on their ratio, side by side in alternating slices
    // (`interleave`): (a) against null-authz in slices of about a second; (b)
    // against its floor in chunks of the fresh pool, the same chunks for both.
    let slices = slice_count(d);
    let grpc = |name, addr, process, slices: Vec<Arc<Requests<Bytes>>>| Side {
        name,
        watched: vec![("authz", process)],
        metrics: (addr == authz.grpc).then_some(authz.http),
        traffic: Traffic::Grpc {
            addr,
            slices,
            concurrency: c,
            expect: GRPC_OK,
        },
    };
    // Each side its own copy of the chunks: a pool is used up as it is sent.
    let chunks = || -> Vec<Arc<Requests<Bytes>>> {
        fresh_checks
            .chunks(fresh_checks.len().div_ceil(slices).max(1))
            .map(|chunk| Requests::once(chunk.to_vec()))
            .collect()
    };
    let mut sides = vec![
        grpc(
            "grpc null-authz",
            authz.null_addr,
            &authz.null,
            vec![Arc::clone(&grpc_a)],
        ),
        grpc(
            "grpc portcullis (a) cached token",
            authz.grpc,
            &authz.portcullis,
            vec![Arc::clone(&grpc_a)],
        ),
        grpc(
            "grpc portcullis (a) + local rate limit",
            authz.grpc,
            &authz.portcullis,
            vec![Arc::clone(&grpc_local)],
        ),
        grpc(
            "grpc portcullis (a) + global rate limit (Redis)",
            authz.grpc,
            &authz.portcullis,
            vec![Arc::clone(&grpc_global)],
        ),
    ];
    sides.retain(|side| opts.wanted(side.name));
    out.extend(interleave::run(&sides, slices, d / slices as u32, || Ok(())).await?);
    // The bare RS256 verification runs in the same windows as (b): a share of it
    // after each slice.
    let mut bare = BareRs256::new(fx)?;
    let mut sides = vec![
        grpc(
            "grpc null-authz + bare RS256 (b) fresh RS256",
            authz.null_rs256_addr,
            &authz.null_rs256,
            chunks(),
        ),
        grpc(
            "grpc portcullis (b) fresh RS256",
            authz.grpc,
            &authz.portcullis,
            chunks(),
        ),
    ];
    sides.retain(|side| opts.wanted(side.name));
    out.extend(interleave::run(&sides, slices, d, || bare.verify(BARE_RS256_RUNS / slices)).await?);
    let verify_us = bare.us_each();
    /// (name, address, process, requests, expected gRPC code)
    type GrpcCase<'a> = (&'a str, SocketAddr, &'a Process, Arc<Requests<Bytes>>, i32);
    let mut grpc_cases: Vec<GrpcCase> = vec![(
        "grpc portcullis (c) no token, 401",
        authz.grpc,
        &authz.portcullis,
        grpc_c,
        GRPC_UNAUTHENTICATED,
    )];
    if fx.mtls {
        grpc_cases.push((
            "grpc portcullis (d) mTLS principal",
            authz.grpc,
            &authz.portcullis,
            grpc_d,
            GRPC_OK,
        ));
    }
    grpc_cases.retain(|case| opts.wanted(case.0));
    for (name, addr, process, requests, expect) in grpc_cases {
        let metrics = (addr == authz.grpc).then_some(authz.http);
        let m = measure(name, &[("authz", process)], metrics, || {
            load::grpc_check(addr, requests, Load::Concurrency(c), d, expect)
        })
        .await?;
        out.push(m);
    }
    // Fixed rate, direct gRPC: the handler time BENCHMARKS.md bounds.
    for (name, addr, process, requests) in [
        (
            "grpc @1000/s null-authz",
            authz.null_addr,
            &authz.null,
            &grpc_a,
        ),
        (
            "grpc @1000/s portcullis (a)",
            authz.grpc,
            &authz.portcullis,
            &grpc_a,
        ),
        (
            "grpc @1000/s portcullis (a) + local rate limit",
            authz.grpc,
            &authz.portcullis,
            &grpc_local,
        ),
        (
            "grpc @1000/s portcullis (a) + global rate limit (Redis)",
            authz.grpc,
            &authz.portcullis,
            &grpc_global,
        ),
    ] {
        if !opts.wanted(name) {
            continue;
        }
        let metrics = (addr == authz.grpc).then_some(authz.http);
        let requests = Arc::clone(requests);
        out.push(
            measure(name, &[("authz", process)], metrics, || {
                load::grpc_check(
                    addr,
                    requests,
                    Load::Rate {
                        per_second: RATE,
                        connections: 2,
                    },
                    d,
                    GRPC_OK,
                )
            })
            .await?,
        );
    }

    // End to end through Envoy with wrk (fixed connections and duration).
    let jwks = tokens::jwk_set(&[&fx.key]).to_string();
    let jwt = |cache| Auth::JwtAuthn {
        issuer: tokens::ISSUER.to_owned(),
        jwks: jwks.clone(),
        cache,
    };
    let to = |authz: SocketAddr, allowed_headers| Auth::ExtAuthz {
        authz: authz.into(),
        allowed_headers,
    };
    // (name, envoy config, authorizer process, token, fresh pool, expect 2xx)
    type Case<'a> = (
        &'a str,
        Auth,
        Option<&'a Process>,
        Option<&'a str>,
        Option<&'a Path>,
        bool,
        Option<SocketAddr>,
    );
    let mut e2e: Vec<Case> = vec![
        (
            "e2e envoy, no auth",
            Auth::None,
            None,
            cached,
            None,
            true,
            None,
        ),
        (
            "e2e envoy jwt_authn (a), no JWT cache",
            jwt(false),
            None,
            cached,
            None,
            true,
            None,
        ),
        (
            "e2e envoy jwt_authn (a), JWT cache",
            jwt(true),
            None,
            cached,
            None,
            true,
            None,
        ),
        (
            "e2e envoy jwt_authn (b) fresh RS256",
            jwt(false),
            None,
            None,
            Some(&e2e_fresh),
            true,
            None,
        ),
        (
            "e2e envoy+null-authz",
            to(authz.null_addr, false),
            Some(&authz.null),
            cached,
            None,
            true,
            None,
        ),
        (
            "e2e envoy+null-authz, context headers",
            to(authz.null_context_addr, false),
            Some(&authz.null_context),
            cached,
            None,
            true,
            None,
        ),
        (
            "e2e envoy+portcullis (a)",
            to(authz.grpc, false),
            Some(&authz.portcullis),
            cached,
            None,
            true,
            Some(authz.http),
        ),
        (
            MODULE_ROW,
            Auth::Module {
                config: fx.dir.path().join("portcullis.yaml"),
                fallback: authz.grpc.into(),
            },
            // The fallback: its CPU is that of the requests the module left to it.
            Some(&authz.portcullis),
            cached,
            None,
            true,
            None,
        ),
        (
            "e2e envoy+portcullis (a) over a Unix socket",
            Auth::ExtAuthz {
                authz: Endpoint::Pipe(authz.uds.clone()),
                allowed_headers: false,
            },
            Some(&authz.portcullis_uds),
            cached,
            None,
            true,
            Some(authz.uds_http),
        ),
        (
            "e2e envoy+portcullis (a), allowed_headers",
            to(authz.grpc, true),
            Some(&authz.portcullis),
            cached,
            None,
            true,
            Some(authz.http),
        ),
        (
            "e2e envoy+null-authz, allowed_headers",
            to(authz.null_addr, true),
            Some(&authz.null),
            cached,
            None,
            true,
            None,
        ),
        (
            "e2e envoy+portcullis (b) fresh RS256",
            to(authz.grpc, false),
            Some(&authz.portcullis),
            None,
            Some(&e2e_fresh),
            true,
            Some(authz.http),
        ),
        (
            "e2e envoy+portcullis (c) no token, 401",
            to(authz.grpc, false),
            Some(&authz.portcullis),
            None,
            None,
            false,
            Some(authz.http),
        ),
    ];
    e2e.retain(|case| opts.wanted(case.0));
    if opts.envoy_module.is_none() && e2e.iter().any(|case| case.0 == MODULE_ROW) {
        eprintln!("NOTICE: {MODULE_ROW} skipped: no Envoy module given (scripts/bench builds it)");
        e2e.retain(|case| case.0 != MODULE_ROW);
    }
    let order: Vec<&str> = e2e.iter().map(|case| case.0).collect();
    let first_e2e = out.len();
    // The pairs with a target on their ratio (portcullis against null-authz;
    // the module against jwt_authn), null-authz answering with portcullis'
    // context headers, and portcullis over a Unix socket, run side by side in
    // alternating slices (`interleave`), each behind its own Envoy.
    let pair: Vec<Case> = e2e
        .extract_if(.., |case| {
            [
                "e2e envoy+null-authz",
                "e2e envoy+null-authz, context headers",
                "e2e envoy+portcullis (a)",
                "e2e envoy+portcullis (a) over a Unix socket",
                "e2e envoy jwt_authn (a), JWT cache",
                MODULE_ROW,
            ]
            .contains(&case.0)
        })
        .collect();
    let mut envoys = Vec::new();
    for (name, auth, process, token, _, _, metrics) in &pair {
        let (envoy, listener) = start_envoy(opts, auth, &format!("pair-{}", envoys.len()))?;
        let headers = wrk_headers(*token);
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        load::wrk(
            listener,
            PATH,
            &refs,
            None,
            c,
            opts.warmup,
            &opts.out,
            wrk_pin.as_deref(),
        )?;
        envoys.push((envoy, listener, *name, *process, headers, *metrics));
    }
    let sides: Vec<Side> = envoys
        .iter()
        .map(|(envoy, listener, name, process, headers, metrics)| Side {
            name,
            watched: std::iter::once(("envoy", envoy))
                .chain(process.map(|p| ("authz", p)))
                .collect(),
            metrics: *metrics,
            traffic: Traffic::Wrk {
                listener: *listener,
                path: PATH,
                headers: headers.clone(),
                concurrency: c,
                out: &opts.out,
                pin: wrk_pin.clone(),
            },
        })
        .collect();
    out.extend(interleave::run(&sides, slice_count(d), Duration::from_secs(1), || Ok(())).await?);
    // Stop the pair's Envoys before the measurements that follow.
    drop(sides);
    drop(envoys);
    for (i, (name, auth, process, token, fresh, ok, metrics)) in e2e.into_iter().enumerate() {
        let (envoy, listener) = start_envoy(opts, &auth, &format!("{i}"))?;
        let headers = wrk_headers(token);
        let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        let dir = opts.out.clone();
        let pin = wrk_pin.clone();
        // Warm-up (always with the cached token: fresh pools are for measuring).
        let warm_headers = wrk_headers(cached);
        let warm_refs: Vec<&str> = warm_headers.iter().map(String::as_str).collect();
        load::wrk(
            listener,
            PATH,
            &warm_refs,
            None,
            c,
            opts.warmup,
            &dir,
            pin.as_deref(),
        )?;
        let mut watched = vec![("envoy", &envoy)];
        if let Some(p) = process {
            watched.push(("authz", p));
        }
        let mut m = measure(name, &watched, metrics, || async {
            load::wrk(
                listener,
                PATH,
                &header_refs,
                fresh,
                c,
                d,
                &dir,
                pin.as_deref(),
            )
        })
        .await?;
        // wrk counts non-2xx answers; for the 401 scenario those are the expected ones.
        if !ok {
            m.load.unexpected = m.load.requests - m.load.unexpected;
        }
        out.push(m);
    }

    out[first_e2e..].sort_by_key(|m| order.iter().position(|name| *name == m.name));

    out.extend(nginx_auth_request(opts, &authz, cached, &wrk_pin).await?);

    // Fixed rate end to end (our open-loop HTTP/1.1 loader).
    let rate = Load::Rate {
        per_second: RATE,
        connections: 16,
    };
    for (name, auth, process, metrics) in [
        (
            "e2e @1000/s envoy jwt_authn (a), JWT cache",
            jwt(true),
            None,
            None,
        ),
        (
            "e2e @1000/s envoy+null-authz",
            to(authz.null_addr, false),
            Some(&authz.null),
            None,
        ),
        (
            "e2e @1000/s envoy+portcullis (a)",
            to(authz.grpc, false),
            Some(&authz.portcullis),
            Some(authz.http),
        ),
    ] {
        if !opts.wanted(name) {
            continue;
        }
        let (envoy, listener) = start_envoy(opts, &auth, "rate")?;
        let requests = Requests::cycle(vec![http_headers(cached)]);
        load::http_get(
            listener,
            PATH,
            Arc::clone(&requests),
            Load::Concurrency(4),
            opts.warmup,
            200,
        )
        .await?;
        let mut watched = vec![("envoy", &envoy)];
        if let Some(p) = process {
            watched.push(("authz", p));
        }
        out.push(
            measure(name, &watched, metrics, || {
                load::http_get(listener, PATH, requests, rate, d, 200)
            })
            .await?,
        );
    }
    let rss = authz.portcullis.rss()? as f64;
    Ok((out, rss, verify_us))
}

/// The portcullis dynamic module inside Envoy (docs/in-proxy.md), scenario (a),
/// with the portcullis server as its ext_authz fallback.
pub const MODULE_ROW: &str = "e2e envoy+module (a)";

/// nginx `auth_request` (the HTTP mode, docs/gateways.md): nginx without auth,
/// asking the do-nothing HTTP endpoint (the floor of the mode), and asking
/// portcullis (a), side by side in alternating slices, each nginx its own
/// process on the Envoys' core.
pub const NGINX_ROWS: [&str; 3] = [
    "e2e nginx, no auth",
    "e2e nginx+null-http, auth_request",
    "e2e nginx+portcullis (a), auth_request",
];

async fn nginx_auth_request(
    opts: &Options,
    authz: &Authorizers,
    cached: Option<&str>,
    wrk_pin: &Option<String>,
) -> anyhow::Result<Vec<Measured>> {
    if !NGINX_ROWS.iter().any(|name| opts.wanted(name)) {
        return Ok(Vec::new());
    }
    // Built beside null_authz (`cargo build --example null_http`, `cargo test`).
    let null_http_bin = opts.null_authz.with_file_name("null_http");
    let null_http_addr = procs::free_port();
    let mut null_http = Process::spawn(
        "null-http",
        &null_http_bin,
        &[null_http_addr.to_string()],
        &opts.out.join("null-http.log"),
        cpus(opts, "1").as_deref(),
    )?;
    procs::wait_listening(null_http_addr, &mut null_http)?;
    let headers = wrk_headers(cached);
    let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let [none, floor, product] = NGINX_ROWS;
    let mut nginxes = Vec::new();
    for (name, check, process, metrics) in [
        (none, None, None, None),
        (floor, Some(null_http_addr), Some(&null_http), None),
        (
            product,
            Some(authz.http),
            Some(&authz.portcullis),
            Some(authz.http),
        ),
    ] {
        let dir = opts.out.join(format!("nginx-{}", nginxes.len()));
        let (process_nginx, listener) = nginx::start(&dir, check, cpus(opts, "0").as_deref())?;
        load::wrk(
            listener,
            PATH,
            &refs,
            None,
            opts.concurrency,
            opts.warmup,
            &opts.out,
            wrk_pin.as_deref(),
        )?;
        nginxes.push((process_nginx, listener, name, process, metrics));
    }
    let sides: Vec<Side> = nginxes
        .iter()
        .map(|(nginx, listener, name, process, metrics)| Side {
            name,
            watched: std::iter::once(("nginx", nginx))
                .chain(process.map(|p| ("authz", p)))
                .collect(),
            metrics: *metrics,
            traffic: Traffic::Wrk {
                listener: *listener,
                path: PATH,
                headers: headers.clone(),
                concurrency: opts.concurrency,
                out: &opts.out,
                pin: wrk_pin.clone(),
            },
        })
        .collect();
    interleave::run(
        &sides,
        slice_count(opts.duration),
        Duration::from_secs(1),
        || Ok(()),
    )
    .await
}

/// A fresh portcullis given `fill` distinct users and tokens; its RSS afterwards.
async fn fill_rss(opts: &Options, fx: &Fixture) -> anyhow::Result<f64> {
    let (process, grpc, _http) = start_portcullis(opts, fx, "portcullis-fill")?;
    let requests = Requests::once(
        fx.fill_tokens
            .iter()
            .map(|t| check_request(PATH, Some(t), None))
            .collect(),
    );
    let started = Instant::now();
    let r = load::grpc_check(
        grpc,
        requests,
        Load::Concurrency(opts.concurrency),
        Duration::from_secs(600),
        GRPC_OK,
    )
    .await?;
    eprintln!(
        "filled {} users/tokens in {:.1} s ({} unexpected answers)",
        r.requests,
        started.elapsed().as_secs_f64(),
        r.unexpected
    );
    anyhow::ensure!(
        r.unexpected == 0,
        "the fill was refused: see {}",
        opts.out.display()
    );
    Ok(process.rss()? as f64)
}

/// µs of one `jsonwebtoken::decode` of a Clerk RS256 token (signature, header and
/// claims: what a verifier without a cache pays), on this core.
/// Bare RS256 verifications in one round: `jsonwebtoken::decode` (aws-lc-rs) of
/// the pool's tokens.
const BARE_RS256_RUNS: usize = 3000;

/// The bare RS256 verification, timed in shares (`verify`) on the harness' core.
struct BareRs256<'a> {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
    tokens: std::iter::Cycle<std::slice::Iter<'a, String>>,
    done: usize,
    /// Wall time of the verifications: CPU time comes in 10 ms ticks, too coarse
    /// for a share, and nothing else runs on this core meanwhile.
    spent: Duration,
}

impl<'a> BareRs256<'a> {
    fn new(fx: &'a Fixture) -> anyhow::Result<Self> {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(fx.key.jwk())?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_issuer(&[tokens::ISSUER]);
        validation.validate_aud = false;
        anyhow::ensure!(!fx.fresh_grpc.is_empty(), "no fresh tokens to verify");
        Ok(Self {
            key: jsonwebtoken::DecodingKey::from_jwk(&jwk)?,
            validation,
            tokens: fx.fresh_grpc.iter().cycle(),
            done: 0,
            spent: Duration::ZERO,
        })
    }

    fn verify(&mut self, n: usize) -> anyhow::Result<()> {
        let started = Instant::now();
        for t in self.tokens.by_ref().take(n.max(1)) {
            jsonwebtoken::decode::<Value>(t, &self.key, &self.validation)?;
            self.done += 1;
        }
        self.spent += started.elapsed();
        Ok(())
    }

    /// µs per verification (NaN before any).
    fn us_each(&self) -> f64 {
        self.spent.as_secs_f64() * 1e6 / self.done as f64
    }
}

fn summary_line(m: &Measured) -> String {
    format!(
        "{:<46} {:>8.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  cpu {}  handler p99 {}  unexpected {}",
        m.name,
        m.load.rps,
        m.load.p50_us,
        m.load.p99_us,
        m.cpu_us
            .iter()
            .map(|(k, v)| format!("{k} {v:.1} µs"))
            .collect::<Vec<_>>()
            .join(", "),
        m.handler_p99_us.map_or("-".into(), |v| format!("{v:.0} µs")),
        m.load.unexpected
    )
}
