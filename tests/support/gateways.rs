//! Real gateways that ask portcullis over HTTP, in front of the echo upstream:
//! nginx `auth_request` (`mesh/nginx/`), Caddy `forward_auth`
//! (`mesh/caddy/Caddyfile`) and Envoy's HTTP `ext_authz`
//! (`mesh/envoy/front-proxy-http.yaml`). Each runs from the shipped config,
//! rendered with ephemeral ports (every replaced address must occur exactly
//! once, so the template and the file cannot drift apart), as a child process
//! that is stopped on drop; a failing test prints its log.
//!
//! Needs nginx (`NGINX_BIN`, else `nginx` on the PATH or in /usr/sbin) and Caddy
//! (`CADDY_BIN`, else `caddy`); `scripts/test` installs Debian's packages.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::envoy::{render_template, Envoy};
use super::{free_port, print_log_if_panicking, READY_TIMEOUT};

pub const NGINX_CONF: &str = include_str!("../../mesh/nginx/nginx.conf");
pub const NGINX_PORTCULLIS_CONF: &str = include_str!("../../mesh/nginx/portcullis.conf");
pub const NGINX_CHECK_CONF: &str = include_str!("../../mesh/nginx/portcullis-check.conf");
pub const CADDYFILE: &str = include_str!("../../mesh/caddy/Caddyfile");
pub const FRONT_PROXY_HTTP: &str = include_str!("../../mesh/envoy/front-proxy-http.yaml");

/// `template` with each `(from, to)` replaced; panics unless each `from`
/// occurs exactly once in it.
pub fn render(name: &str, template: &str, replacements: &[(&str, String)]) -> String {
    let mut text = template.to_owned();
    for (from, to) in replacements {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{name} must contain `{from}` exactly once"
        );
        text = text.replace(from, to);
    }
    text
}

/// `mesh/nginx/portcullis.conf` for a listener, portcullis' check endpoints and
/// the upstream.
pub fn nginx_portcullis_conf(
    listener: SocketAddr,
    portcullis: SocketAddr,
    upstream: SocketAddr,
) -> String {
    render(
        "mesh/nginx/portcullis.conf",
        NGINX_PORTCULLIS_CONF,
        &[
            ("listen 8080;", format!("listen {listener};")),
            ("server 127.0.0.1:8181;", format!("server {portcullis};")),
            ("server 127.0.0.1:8000;", format!("server {upstream};")),
        ],
    )
}

/// `mesh/caddy/Caddyfile` for a listener, portcullis' check endpoints and the
/// upstream.
pub fn caddyfile(listener: SocketAddr, portcullis: SocketAddr, upstream: SocketAddr) -> String {
    render(
        "mesh/caddy/Caddyfile",
        CADDYFILE,
        &[
            // Any host, as shipped: a site address with an IP would match only that Host.
            ("http://:8080 {", format!("http://:{} {{", listener.port())),
            (
                "forward_auth 127.0.0.1:8181 {",
                format!("forward_auth {portcullis} {{"),
            ),
            (
                "reverse_proxy 127.0.0.1:8000",
                format!("reverse_proxy {upstream}"),
            ),
        ],
    )
}

/// A gateway binary: `$env`, else `name` on the PATH or in /usr/sbin. Panics
/// when there is none: the end-to-end tests never pass by not running.
pub fn gateway_bin(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found (set {env}, or run scripts/test: it installs Debian's {name})")
        })
}

/// A running gateway; stopped on drop.
pub struct Gateway {
    name: &'static str,
    child: Child,
    listener: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Gateway {
    /// nginx with `mesh/nginx/` in front of `upstream`, asking the check
    /// endpoints at `portcullis`.
    pub async fn nginx(portcullis: SocketAddr, upstream: SocketAddr) -> Self {
        let bin = gateway_bin("nginx", "NGINX_BIN");
        let dir = tempfile::tempdir().expect("create a temporary directory");
        // nginx's workers (another user when started by root) read and write
        // their temporary files under the prefix.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("make the prefix readable");
        let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
        std::fs::write(dir.path().join("nginx.conf"), NGINX_CONF).unwrap();
        std::fs::write(dir.path().join("portcullis-check.conf"), NGINX_CHECK_CONF).unwrap();
        std::fs::write(
            dir.path().join("portcullis.conf"),
            nginx_portcullis_conf(listener, portcullis, upstream),
        )
        .unwrap();
        let mut command = Command::new(bin);
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-e", "stderr", "-g", "daemon off;"]);
        Self::spawn("nginx", command, dir, listener).await
    }

    /// Caddy with `mesh/caddy/Caddyfile` in front of `upstream`, asking the
    /// check endpoints at `portcullis`.
    pub async fn caddy(portcullis: SocketAddr, upstream: SocketAddr) -> Self {
        let bin = gateway_bin("caddy", "CADDY_BIN");
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.path().join("Caddyfile");
        std::fs::write(&config, caddyfile(listener, portcullis, upstream)).unwrap();
        let mut command = Command::new(bin);
        command
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--adapter", "caddyfile"])
            // Caddy keeps its state under these: the test's own directory.
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_DATA_HOME", dir.path().join("data"));
        Self::spawn("caddy", command, dir, listener).await
    }

    async fn spawn(
        name: &'static str,
        mut command: Command,
        dir: TempDir,
        listener: SocketAddr,
    ) -> Self {
        let log = dir.path().join(format!("{name}.log"));
        let out = File::create(&log).expect("create the log");
        let err = out.try_clone().expect("clone the log file handle");
        let child = command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut gateway = Self {
            name,
            child,
            listener,
            log,
            _dir: dir,
        };
        gateway.wait_ready().await;
        gateway
    }

    /// The gateway's listener.
    pub fn addr(&self) -> SocketAddr {
        self.listener
    }

    /// The gateway's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the gateway") {
                panic!(
                    "{} exited before it was ready ({status}):\n{}",
                    self.name,
                    self.log()
                );
            }
            if tokio::net::TcpStream::connect(self.listener).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening after {READY_TIMEOUT:?}:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SIGTERM: nginx's master stops its workers (a SIGKILL would orphan them).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        print_log_if_panicking(self.name, &self.log);
    }
}

/// Envoy with `mesh/envoy/front-proxy-http.yaml`: the HTTP `ext_authz` service
/// at `portcullis` (its check endpoints), in front of `upstream`.
pub async fn envoy_http(portcullis: SocketAddr, upstream: SocketAddr) -> Envoy {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let yaml = render_template(
        "front-proxy-http.yaml",
        FRONT_PROXY_HTTP,
        &[
            (SocketAddr::from(([0, 0, 0, 0], 8080)), listener),
            (SocketAddr::from(([127, 0, 0, 1], 9901)), admin),
            (SocketAddr::from(([127, 0, 0, 1], 8181)), portcullis),
            (SocketAddr::from(([127, 0, 0, 1], 8000)), upstream),
        ],
        &[],
        Path::new("certs"),
    );
    Envoy::start_bootstrap(dir, &yaml, listener, admin).await
}
