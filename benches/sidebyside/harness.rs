//! The side-by-side benchmark (SPEC §11, `BENCHMARKS.md`): sets up keys, tokens, a
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

use super::envoy::{bootstrap, Auth};
use super::load::{self, Load, LoadResult, Requests};
use super::procs::{self, Process};
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
    let verify_us = bare_rs256_verify_us(&fixture)?;
    eprintln!("bare RS256 verification (jsonwebtoken, aws-lc-rs): {verify_us:.1} µs");
    let mut rounds: Vec<Vec<Measured>> = Vec::new();
    let mut rss = Vec::new();
    for round in 1..=opts.rounds {
        eprintln!("== round {round}/{}", opts.rounds);
        let (measured, round_rss) = run_round(opts, &fixture).await?;
        for m in &measured {
            eprintln!("  {}", summary_line(m));
        }
        rss.push(round_rss);
        rounds.push(measured);
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
    let report = report(opts, &fixture, &rounds, verify_us, &rss, fill);
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
    fn config(&self, grpc: SocketAddr, http: SocketAddr, mtls: bool) -> String {
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
{mtls}"#,
            iss = tokens::ISSUER,
            azp = tokens::AUTHORIZED_PARTY,
            mtls = if mtls { "mtls: {}\n" } else { "" },
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
/// an east-west rule, and 15 services with read, write and ownership rules.
fn policy() -> String {
    let mut text = String::from(
        "default: deny\nrules:\n  - name: banned\n    action: deny\n    to: { paths: [/**] }\n    from: { users: { roles: [BANNED] } }\n  - name: no-debug\n    action: deny\n    to: { paths: [/debug/**] }\n    from: anyone\n  - name: health\n    to: { paths: [/healthz] }\n    from: anyone\n  - name: internal-videos\n    to: { paths: [/internal/**] }\n    from: { services: [spiffe://example.org/ns/default/sa/videos] }\n  - name: admin\n    to: { paths: [/admin/**] }\n    from: { users: { roles: [ADMIN] } }\n",
    );
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
    portcullis: Process,
    grpc: SocketAddr,
    http: SocketAddr,
}

fn cpus(opts: &Options, which: &str) -> Option<String> {
    opts.pin.then(|| which.to_owned())
}

fn start_portcullis(
    opts: &Options,
    fixture: &Fixture,
    name: &str,
) -> anyhow::Result<(Process, SocketAddr, SocketAddr)> {
    let (grpc, http) = (procs::free_port(), procs::free_port());
    let config = fixture.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&config, fixture.config(grpc, http, fixture.mtls))?;
    let mut process = Process::spawn(
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
    procs::wait_listening(grpc, &mut process)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while procs::http_get(http, "/readyz").map(|r| r.0).unwrap_or(0) != 200 {
        process.alive()?;
        anyhow::ensure!(Instant::now() < deadline, "portcullis never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((process, grpc, http))
}

impl Authorizers {
    fn start(opts: &Options, fixture: &Fixture) -> anyhow::Result<Self> {
        let null_addr = procs::free_port();
        let mut null = Process::spawn(
            "null-authz",
            &opts.null_authz,
            &[null_addr.to_string()],
            &opts.out.join("null-authz.log"),
            cpus(opts, "1").as_deref(),
        )?;
        procs::wait_listening(null_addr, &mut null)?;
        let null_rs256_addr = procs::free_port();
        let jwks = fixture.dir.path().join("jwks.json");
        let mut null_rs256 = Process::spawn(
            "null-authz-rs256",
            &opts.null_authz,
            &[
                null_rs256_addr.to_string(),
                "--verify-rs256".into(),
                jwks.display().to_string(),
            ],
            &opts.out.join("null-authz-rs256.log"),
            cpus(opts, "1").as_deref(),
        )?;
        procs::wait_listening(null_rs256_addr, &mut null_rs256)?;
        let (portcullis, grpc, http) = start_portcullis(opts, fixture, "portcullis")?;
        Ok(Self {
            null,
            null_addr,
            null_rs256,
            null_rs256_addr,
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
    let mut envoy = Process::spawn(
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
async fn measure<F, Fut>(
    name: &str,
    watched: &[(&str, &Process)],
    metrics: Option<SocketAddr>,
    checks_per_request: bool,
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
    let _ = checks_per_request;
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

/// Every measurement of one round. Returns them and portcullis' RSS at the end.
async fn run_round(opts: &Options, fx: &Fixture) -> anyhow::Result<(Vec<Measured>, f64)> {
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
    let grpc_b_floor = Requests::once(fresh_checks.clone());
    let grpc_b = Requests::once(fresh_checks);
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
    /// (name, address, process, requests, expected gRPC code)
    type GrpcCase<'a> = (&'a str, SocketAddr, &'a Process, Arc<Requests<Bytes>>, i32);
    let mut grpc_cases: Vec<GrpcCase> = vec![
        (
            "grpc null-authz",
            authz.null_addr,
            &authz.null,
            Arc::clone(&grpc_a),
            GRPC_OK,
        ),
        (
            "grpc portcullis (a) cached token",
            authz.grpc,
            &authz.portcullis,
            Arc::clone(&grpc_a),
            GRPC_OK,
        ),
        (
            "grpc null-authz + bare RS256 (b) fresh RS256",
            authz.null_rs256_addr,
            &authz.null_rs256,
            grpc_b_floor,
            GRPC_OK,
        ),
        (
            "grpc portcullis (b) fresh RS256",
            authz.grpc,
            &authz.portcullis,
            grpc_b,
            GRPC_OK,
        ),
        (
            "grpc portcullis (c) no token, 401",
            authz.grpc,
            &authz.portcullis,
            grpc_c,
            GRPC_UNAUTHENTICATED,
        ),
    ];
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
        let m = measure(name, &[("authz", process)], metrics, true, || {
            load::grpc_check(addr, requests, Load::Concurrency(c), d, expect)
        })
        .await?;
        out.push(m);
    }
    // Fixed rate, direct gRPC: the handler time SPEC §11 bounds.
    for (name, addr, process) in [
        ("grpc @1000/s null-authz", authz.null_addr, &authz.null),
        ("grpc @1000/s portcullis (a)", authz.grpc, &authz.portcullis),
    ] {
        if !opts.wanted(name) {
            continue;
        }
        let metrics = (addr == authz.grpc).then_some(authz.http);
        let requests = Arc::clone(&grpc_a);
        out.push(
            measure(name, &[("authz", process)], metrics, true, || {
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
        authz,
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
            "e2e envoy+portcullis (a)",
            to(authz.grpc, false),
            Some(&authz.portcullis),
            cached,
            None,
            true,
            Some(authz.http),
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
        let mut m = measure(name, &watched, metrics, true, || async {
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
            measure(name, &watched, metrics, true, || {
                load::http_get(listener, PATH, requests, rate, d, 200)
            })
            .await?,
        );
    }
    let rss = authz.portcullis.rss()? as f64;
    Ok((out, rss))
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
fn bare_rs256_verify_us(fx: &Fixture) -> anyhow::Result<f64> {
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(fx.key.jwk())?;
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[tokens::ISSUER]);
    validation.validate_aud = false;
    let tokens = &fx.fresh_grpc;
    let n = tokens.len().clamp(1, 3000);
    let started = procs::self_cpu();
    let wall = Instant::now();
    for t in tokens.iter().cycle().take(n) {
        jsonwebtoken::decode::<Value>(t, &key, &validation)?;
    }
    let cpu = procs::self_cpu() - started;
    // CPU ticks are 10 ms: trust the wall clock when the loop was short.
    let secs = if cpu.as_secs_f64() > 0.5 {
        cpu.as_secs_f64()
    } else {
        wall.elapsed().as_secs_f64()
    };
    Ok(secs * 1e6 / n as f64)
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

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians over rounds of one figure of one measurement.
struct Medians<'a>(&'a [Vec<Measured>]);

impl Medians<'_> {
    fn get(&self, name: &str, f: impl Fn(&Measured) -> Option<f64>) -> f64 {
        median(
            self.0
                .iter()
                .flat_map(|r| r.iter().filter(|m| m.name == name).filter_map(&f))
                .collect(),
        )
    }
    fn rps(&self, name: &str) -> f64 {
        self.get(name, |m| Some(m.load.rps))
    }
    fn cpu(&self, name: &str, who: &str) -> f64 {
        self.get(name, |m| m.cpu_us.get(who).copied())
    }
    /// Envoy + authorizer CPU per request.
    fn total_cpu(&self, name: &str) -> f64 {
        self.get(name, |m| Some(m.cpu_us.values().sum()))
    }
}

fn report(
    opts: &Options,
    fx: &Fixture,
    rounds: &[Vec<Measured>],
    verify_us: f64,
    rss: &[f64],
    fill_rss: f64,
) -> Report {
    let m = Medians(rounds);
    let names: Vec<String> = rounds
        .first()
        .map_or(vec![], |r| r.iter().map(|m| m.name.clone()).collect());
    let fmt = |v: f64, digits: usize| {
        if v.is_nan() {
            "–".to_owned()
        } else {
            format!("{v:.digits$}")
        }
    };
    let mut md = String::new();
    md.push_str(&format!(
        "Medians of {} round(s), {:.0} s per measurement, concurrency {}, {}. Load average at the end (the benchmark itself keeps both cores busy): {}.\n\n",
        rounds.len(),
        opts.duration.as_secs_f64(),
        opts.concurrency,
        if opts.pin { "pinned (Envoy CPU 0; authorizer and wrk CPU 1; load generator CPU 0)" } else { "not pinned" },
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    ));
    md.push_str("| measurement | req/s | p50 µs | p99 µs | CPU µs/req Envoy | CPU µs/req authorizer | handler p50 / p99 µs | unexpected |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for name in &names {
        let hp50 = m.get(name, |x| x.handler_p50_us);
        let hp99 = m.get(name, |x| x.handler_p99_us);
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |\n",
            fmt(m.rps(name), 0),
            fmt(m.get(name, |x| Some(x.load.p50_us)), 0),
            fmt(m.get(name, |x| Some(x.load.p99_us)), 0),
            fmt(m.cpu(name, "envoy"), 1),
            fmt(m.cpu(name, "authz"), 1),
            if hp50.is_nan() {
                "–".into()
            } else {
                format!("{} / {}", fmt(hp50, 0), fmt(hp99, 0))
            },
            fmt(m.get(name, |x| Some(x.load.unexpected as f64)), 0),
        ));
    }
    let null_cpu = m.cpu("grpc null-authz", "authz");
    let a_cpu = m.cpu("grpc portcullis (a) cached token", "authz");
    let b_cpu = m.cpu("grpc portcullis (b) fresh RS256", "authz");
    let b_floor_cpu = m.cpu("grpc null-authz + bare RS256 (b) fresh RS256", "authz");
    let e2e_null = m.rps("e2e envoy+null-authz");
    let e2e_a = m.rps("e2e envoy+portcullis (a)");
    let jwt_cache = m.rps("e2e envoy jwt_authn (a), JWT cache");
    let jwt_nocache = m.rps("e2e envoy jwt_authn (a), no JWT cache");
    let handler_p99 = m.get("grpc @1000/s portcullis (a)", |x| x.handler_p99_us);
    let e2e_handler_p99 = m.get("e2e @1000/s envoy+portcullis (a)", |x| x.handler_p99_us);
    let rss_mib = fill_rss / 1048576.0;
    let ah_cpu = m.total_cpu("e2e envoy+portcullis (a), allowed_headers");
    let all_cpu = m.total_cpu("e2e envoy+portcullis (a)");
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    let mut ratios: Vec<(String, String, String, String)> = vec![
        (
            "CPU per Check, portcullis (a) / null-authz (direct gRPC)".into(),
            format!("{} / {} µs = {}×", fmt(a_cpu, 1), fmt(null_cpu, 1), fmt(a_cpu / null_cpu, 2)),
            "≤ 1.25×".into(),
            verdict(a_cpu / null_cpu <= 1.25).into(),
        ),
        (
            "throughput, Envoy+portcullis (a) / Envoy+null-authz".into(),
            format!("{} / {} req/s = {}×", fmt(e2e_a, 0), fmt(e2e_null, 0), fmt(e2e_a / e2e_null, 2)),
            "≥ 0.9×".into(),
            verdict(e2e_a / e2e_null >= 0.9).into(),
        ),
        (
            "CPU per Check, portcullis (b) − null-authz, in bare RS256 verifications".into(),
            format!("({} − {}) / {} µs = {}×", fmt(b_cpu, 1), fmt(null_cpu, 1), fmt(verify_us, 1), fmt((b_cpu - null_cpu) / verify_us, 2)),
            "≤ 1.2×".into(),
            verdict(b_cpu <= null_cpu + 1.2 * verify_us).into(),
        ),
        (
            "CPU per Check, portcullis (b) / null-authz + bare RS256 (b) (the measured floor of (b))".into(),
            format!("{} / {} µs = {}×", fmt(b_cpu, 1), fmt(b_floor_cpu, 1), fmt(b_cpu / b_floor_cpu, 2)),
            "reference".into(),
            "–".into(),
        ),
        (
            "handler p99 at 1,000 req/s (direct gRPC; through Envoy)".into(),
            format!("{} µs; {} µs", fmt(handler_p99, 0), fmt(e2e_handler_p99, 0)),
            "< 200 µs".into(),
            verdict(handler_p99 < 200.0 && e2e_handler_p99 < 200.0).into(),
        ),
        (
            format!("RSS with {} cached users and tokens", opts.fill),
            format!("{} MiB (after a round: {} MiB)", fmt(rss_mib, 1), fmt(median(rss.to_vec()) / 1048576.0, 1)),
            "< 64 MiB".into(),
            if opts.fill >= 100_000 { verdict(rss_mib < 64.0).into() } else { "not measured at 100,000 (quick run)".into() },
        ),
        (
            "throughput, Envoy+portcullis (a) / Envoy jwt_authn (JWT cache; no cache)".into(),
            format!("{}×; {}×", fmt(e2e_a / jwt_cache, 2), fmt(e2e_a / jwt_nocache, 2)),
            "reference".into(),
            "–".into(),
        ),
        (
            "throughput, Envoy+portcullis (b) / Envoy jwt_authn (b), fresh tokens".into(),
            format!("{}×", fmt(m.rps("e2e envoy+portcullis (b) fresh RS256") / m.rps("e2e envoy jwt_authn (b) fresh RS256"), 2)),
            "reference".into(),
            "–".into(),
        ),
        (
            "CPU per request (all processes), Envoy+portcullis (a) / Envoy jwt_authn (a, JWT cache)".into(),
            format!("{} / {} µs = {}×", fmt(all_cpu, 1), fmt(m.total_cpu("e2e envoy jwt_authn (a), JWT cache"), 1), fmt(all_cpu / m.total_cpu("e2e envoy jwt_authn (a), JWT cache"), 2)),
            "reference".into(),
            "–".into(),
        ),
        (
            "allowed_headers: CPU per request (Envoy + portcullis), with / without".into(),
            format!("{} / {} µs = {}× ; throughput {}×", fmt(ah_cpu, 1), fmt(all_cpu, 1), fmt(ah_cpu / all_cpu, 2), fmt(m.rps("e2e envoy+portcullis (a), allowed_headers") / e2e_a, 2)),
            "saving".into(),
            "–".into(),
        ),
    ];
    if !fx.mtls {
        ratios.push((
            "scenario (d) east-west mTLS".into(),
            "skipped: `mtls:` not in this build".into(),
            "–".into(),
            "–".into(),
        ));
    }
    md.push_str("\n| ratio | measured (medians) | target | verdict |\n|---|---|---|---|\n");
    for (what, value, target, verdict) in &ratios {
        md.push_str(&format!("| {what} | {value} | {target} | {verdict} |\n"));
    }
    md.push_str(&format!(
        "\nBare RS256 verification (`jsonwebtoken::decode`, aws-lc-rs) on this machine: {} µs.\n",
        fmt(verify_us, 1)
    ));
    let json = json!({
        "options": {
            "rounds": opts.rounds,
            "duration_s": opts.duration.as_secs_f64(),
            "concurrency": opts.concurrency,
            "fresh_tokens_per_run": opts.fresh_tokens,
            "fill": opts.fill,
            "pinned": opts.pin,
        },
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu_model": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())),
            "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        },
        "bare_rs256_verify_us": verify_us,
        "rss_after_round_bytes": rss,
        "rss_filled_bytes": fill_rss,
        "mtls_scenario": fx.mtls,
        "rounds": rounds,
        "ratios": ratios.iter().map(|(w, v, t, r)| json!({"ratio": w, "measured": v, "target": t, "verdict": r})).collect::<Vec<_>>(),
    });
    Report { json, markdown: md }
}
