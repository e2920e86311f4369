//! The portcullis binary under test, run as a child process.
//!
//! [`Portcullis::start`] writes `portcullis.yaml` and `policy.yaml` (docs/configuration.md, docs/policy.md) into
//! a temporary directory, runs `portcullis serve --config ...` with its output in
//! `portcullis.log` there, and waits for `/readyz`. The process is killed on drop,
//! and its log printed if the test is failing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::Method;
use tempfile::TempDir;

use super::client::RequestBuilder;
use super::{free_port, print_log_if_panicking, READY_TIMEOUT};

/// The north-south policy of the user-traffic tests: `/public` for anyone, video
/// reads for users, the admin API for admins, everything else denied.
pub const USER_TRAFFIC_POLICY: &str = "\
default: deny
rules:
  - name: public
    to: { paths: [/public, /public/**] }
    from: anyone
  - name: videos-read
    to: { paths: [/api/videos, /api/videos/**], methods: [GET] }
    from: { users: { roles: [USER, ADMIN] } }
  - name: admin
    to: { paths: [/api/admin, /api/admin/**] }
    from: { users: { roles: [ADMIN] } }
";

/// What varies between the portcullis setups of the tests.
pub struct PortcullisConfig {
    /// The `jwks_uri` of the `clerk` issuer.
    pub jwks_uri: String,
    /// The text of `policy.yaml`.
    pub policy: String,
    /// `server.tls` on the gRPC listener: (cert, key, client_ca).
    pub tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    /// More entries of `issuers:` (YAML list items, indented by two spaces).
    pub extra_issuers: String,
    /// `headers.internal_token`.
    pub internal_token: bool,
    /// More top-level YAML (`tokens:`, `mtls:`, ...).
    pub extra: String,
    /// The body of `users:` (indented by two spaces).
    pub users: String,
    /// The body of `headers.user` (a YAML flow map's content).
    pub user_headers: String,
    /// More keys of `server:` (lines indented by two spaces).
    pub server: String,
    /// `server.grpc_listen` instead of an ephemeral TCP port (e.g. `unix:PATH`).
    pub grpc_listen: Option<String>,
}

impl PortcullisConfig {
    /// The Clerk user-traffic setup: JWKS at `jwks_uri`, [`USER_TRAFFIC_POLICY`].
    pub fn user_traffic(jwks_uri: String) -> Self {
        Self {
            jwks_uri,
            policy: USER_TRAFFIC_POLICY.to_owned(),
            tls: None,
            extra_issuers: String::new(),
            internal_token: false,
            extra: String::new(),
            users: "  source: claims\n".to_owned(),
            user_headers: "x-user-id: user.id, x-user-role: user.role".to_owned(),
            server: String::new(),
            grpc_listen: None,
        }
    }

    /// Listens for gRPC at `listen` (e.g. `unix:PATH`) instead of a TCP port.
    pub fn with_grpc_listen(mut self, listen: &str) -> Self {
        self.grpc_listen = Some(listen.to_owned());
        self
    }

    /// Adds keys to `server:` (lines indented by two spaces).
    pub fn with_server(mut self, yaml: &str) -> Self {
        self.server.push_str(yaml);
        self
    }

    /// Uses `yaml` as the body of `users:` (lines indented by two spaces).
    pub fn with_users(mut self, yaml: &str) -> Self {
        self.users = yaml.to_owned();
        self
    }

    /// Sets `headers.user` to `{ mapping }`.
    pub fn with_user_headers(mut self, mapping: &str) -> Self {
        self.user_headers = mapping.to_owned();
        self
    }

    /// Appends top-level YAML (`webhooks:`, `state:`, ...).
    pub fn with_extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self
    }

    /// Uses `policy` as `policy.yaml`.
    pub fn with_policy(mut self, policy: &str) -> Self {
        self.policy = policy.to_owned();
        self
    }

    /// Adds issuers: YAML list items (`  - name: ...`).
    pub fn with_issuers(mut self, yaml: &str) -> Self {
        self.extra_issuers.push_str(yaml);
        self
    }

    /// Adds top-level YAML.
    pub fn with_yaml(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self
    }

    /// Sets `headers.internal_token`.
    pub fn with_internal_token(mut self, on: bool) -> Self {
        self.internal_token = on;
        self
    }

    /// Serves the gRPC listener over TLS with `cert` and `key`; with `client_ca`,
    /// clients must present a certificate chaining to it.
    pub fn with_tls(mut self, cert: &Path, key: &Path, client_ca: Option<&Path>) -> Self {
        self.tls = Some((
            cert.to_owned(),
            key.to_owned(),
            client_ca.map(Path::to_owned),
        ));
        self
    }

    /// `portcullis.yaml` for listeners `grpc` and `http` and the policy at `policy`.
    fn render(&self, grpc: SocketAddr, http: SocketAddr, policy: &Path) -> String {
        format!(
            "\
server:
  grpc_listen: {grpc_listen}
  http_listen: {http}
{server}{tls}trust_domain: example.org
issuers:
  - name: clerk
    kind: user
    issuer: {issuer}
    jwks_uri: {jwks_uri}
    algorithms: [RS256]
    audiences: []
    authorized_parties: [{azp}]
    leeway: 5s
    credentials: [{{ header: authorization }}, {{ cookie: __session }}]
{extra_issuers}users:
{users}headers:
  strip_prefixes: [x-user-, x-service-, x-portcullis-]
  user: {{ {user_headers} }}
  request_id: x-request-id
  internal_token: {internal_token}
policy: {policy}
{extra}",
            grpc_listen = self.grpc_listen.clone().unwrap_or_else(|| grpc.to_string()),
            issuer = super::tokens::ISSUER,
            jwks_uri = self.jwks_uri,
            azp = super::tokens::AUTHORIZED_PARTY,
            policy = policy.display(),
            tls = self.tls_yaml(),
            server = self.server,
            extra_issuers = self.extra_issuers,
            internal_token = self.internal_token,
            extra = self.extra,
            users = self.users,
            user_headers = self.user_headers,
        )
    }

    fn tls_yaml(&self) -> String {
        match &self.tls {
            None => String::new(),
            Some((cert, key, client_ca)) => format!(
                "  tls:\n    cert: {}\n    key: {}\n{}",
                cert.display(),
                key.display(),
                client_ca
                    .as_ref()
                    .map(|ca| format!("    client_ca: {}\n", ca.display()))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Runs `portcullis serve` on `dir/portcullis.yaml`, appending to `log`.
fn spawn(dir: &Path, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open portcullis.log");
    let err = out.try_clone().expect("clone the log file handle");
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("serve")
        .arg("--config")
        .arg(dir.join("portcullis.yaml"))
        .current_dir(dir)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,portcullis=debug".into()),
        )
        // Plain text in the log file, which a failing test prints.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn the portcullis binary")
}

/// A running portcullis; killed on drop.
pub struct Portcullis {
    child: Child,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    log: PathBuf,
    // Last: the directory must outlive the process that reads from it.
    _dir: TempDir,
}

impl Portcullis {
    /// Starts portcullis with `config` and waits until `/readyz` answers 200.
    pub async fn start(config: &PortcullisConfig) -> Self {
        let mut portcullis = Self::launch(config);
        portcullis.wait_ready().await;
        portcullis
    }

    /// Starts portcullis with `config` and waits until its HTTP listener
    /// answers, ready or not (a replica whose Redis is away).
    pub async fn start_unready(config: &PortcullisConfig) -> Self {
        let mut portcullis = Self::launch(config);
        let deadline = Instant::now() + READY_TIMEOUT;
        while portcullis
            .http(Method::GET, "/readyz")
            .try_send()
            .await
            .is_err()
        {
            if let Some(status) = portcullis.child.try_wait().expect("poll the process") {
                panic!("portcullis exited at start ({status}); its log follows");
            }
            assert!(Instant::now() < deadline, "portcullis never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        portcullis
    }

    fn launch(config: &PortcullisConfig) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let grpc_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, &config.policy).expect("write policy.yaml");
        let config_path = dir.path().join("portcullis.yaml");
        std::fs::write(&config_path, config.render(grpc_addr, http_addr, &policy))
            .expect("write portcullis.yaml");

        let log = dir.path().join("portcullis.log");
        let child = spawn(dir.path(), &log);
        Self {
            child,
            grpc_addr,
            http_addr,
            log,
            _dir: dir,
        }
    }

    /// The ext_authz gRPC listener.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The HTTP listener (`/healthz`, `/readyz`, `/metrics`, `/check`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// A request straight to portcullis' HTTP listener.
    pub fn http(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder::new(self.http_addr, method, path)
    }

    /// The directory holding `portcullis.yaml` and `policy.yaml`.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Sends `signal` (`TERM`, `INT`) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit (at most `limit`), returning its status.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the portcullis process") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "portcullis still running {limit:?} after it was told to stop; its log follows"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the process again on the same config, addresses and log (after
    /// it exited), and waits until it is ready.
    pub async fn restart(&mut self) {
        assert!(
            self.child.try_wait().expect("poll").is_some(),
            "restart() needs the previous process to have exited"
        );
        self.child = spawn(self._dir.path(), &self.log);
        self.wait_ready().await;
    }

    /// The process' output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the portcullis process") {
                panic!("portcullis exited before it was ready ({status}); its log follows");
            }
            let readyz = self.http(Method::GET, "/readyz").try_send().await;
            if readyz.is_ok_and(|response| response.status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "portcullis not ready (GET /readyz != 200) after {READY_TIMEOUT:?}; its log follows"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Portcullis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        print_log_if_panicking("portcullis", &self.log);
    }
}
