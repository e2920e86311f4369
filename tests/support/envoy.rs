//! A real Envoy front proxy with portcullis as its ext_authz server.
//!
//! The bootstrap is `mesh/envoy/front-proxy.yaml` itself — the config we ship is the
//! config the tests prove — rendered by [`front_proxy_yaml`] with ephemeral ports.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::Method;
use tempfile::TempDir;

use super::client::RequestBuilder;
use super::{free_port, print_log_if_panicking, READY_TIMEOUT};

/// The shipped front proxy, with its fixed quick-start addresses.
const FRONT_PROXY: &str = include_str!("../../mesh/envoy/front-proxy.yaml");

/// Where the front proxy's sockets are.
pub struct FrontProxyAddrs {
    /// Envoy's HTTP listener.
    pub listener: SocketAddr,
    /// Envoy's admin interface.
    pub admin: SocketAddr,
    /// portcullis' ext_authz gRPC listener (cluster `portcullis`).
    pub portcullis: SocketAddr,
    /// The service behind the proxy (cluster `upstream`).
    pub upstream: SocketAddr,
}

impl FrontProxyAddrs {
    /// The addresses `mesh/envoy/front-proxy.yaml` ships with (the quick start's).
    pub fn quickstart() -> Self {
        Self {
            listener: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            portcullis: SocketAddr::from(([127, 0, 0, 1], 9191)),
            upstream: SocketAddr::from(([127, 0, 0, 1], 8000)),
        }
    }
}

/// The front proxy bootstrap for `addrs`: `mesh/envoy/front-proxy.yaml` with its
/// four socket addresses replaced. Panics if the file no longer holds each of them
/// exactly once, so the template and the shipped file cannot drift apart.
pub fn front_proxy_yaml(addrs: &FrontProxyAddrs) -> String {
    let shipped = FrontProxyAddrs::quickstart();
    let mut yaml = FRONT_PROXY.to_owned();
    for (from, to) in [
        (shipped.listener, addrs.listener),
        (shipped.admin, addrs.admin),
        (shipped.portcullis, addrs.portcullis),
        (shipped.upstream, addrs.upstream),
    ] {
        let needle = socket_address(from);
        assert_eq!(
            yaml.matches(&needle).count(),
            1,
            "mesh/envoy/front-proxy.yaml must contain `{needle}` exactly once"
        );
        yaml = yaml.replace(&needle, &socket_address(to));
    }
    yaml
}

/// The shipped sidecar of the receiving service (`channels`).
pub const SIDECAR_CHANNELS: &str = include_str!("../../mesh/envoy/sidecar-channels.yaml");
/// The shipped sidecar of the calling service (`videos`).
pub const SIDECAR_VIDEOS: &str = include_str!("../../mesh/envoy/sidecar-videos.yaml");

/// A shipped template with its socket addresses replaced (each `from` must occur
/// exactly once, so template and test cannot drift apart) and every `certs/...`
/// path rewritten: first the `(from, to)` directory pairs in `dirs` (e.g.
/// `certs/videos/` → `certs/comments/`), then `certs/` → `certs`.
pub fn render_template(
    name: &str,
    template: &str,
    addrs: &[(SocketAddr, SocketAddr)],
    dirs: &[(&str, &str)],
    certs: &Path,
) -> String {
    let mut yaml = template.to_owned();
    for (from, to) in addrs {
        let needle = socket_address(*from);
        assert_eq!(
            yaml.matches(&needle).count(),
            1,
            "mesh/envoy/{name} must contain `{needle}` exactly once"
        );
        yaml = yaml.replace(&needle, &socket_address(*to));
    }
    for (from, to) in dirs {
        assert!(yaml.contains(from), "mesh/envoy/{name} must name {from}");
        yaml = yaml.replace(from, to);
    }
    yaml.replace(
        "filename: certs/",
        &format!("filename: {}/", certs.display()),
    )
}

fn socket_address(addr: SocketAddr) -> String {
    format!(
        "socket_address: {{ address: {}, port_value: {} }}",
        addr.ip(),
        addr.port()
    )
}

/// The Envoy binary: `$ENVOY_BIN`, else `.venv/bin/envoy` in the crate (where
/// `scripts/test` installs it). Panics when there is none: the end-to-end tests
/// must never pass by silently not running.
pub fn envoy_bin() -> PathBuf {
    let path = std::env::var_os("ENVOY_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/envoy"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "Envoy not found at {} — run scripts/test (it installs Envoy into .venv), \
         or set ENVOY_BIN to an Envoy >= 1.40 binary",
        path.display()
    );
    path
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    child: Child,
    listener: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Envoy {
    /// Starts the front proxy in front of `upstream`, authorizing with the ext_authz
    /// server at `portcullis`, and waits until it is ready and its listener accepts.
    pub async fn start(portcullis: SocketAddr, upstream: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let addrs = FrontProxyAddrs {
            listener: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            portcullis,
            upstream,
        };
        Self::start_bootstrap(dir, &front_proxy_yaml(&addrs), addrs.listener, addrs.admin).await
    }

    /// Starts Envoy on the bootstrap `yaml` (written into `dir`, which it then
    /// owns), whose HTTP listener is `listener` and admin interface `admin`, and
    /// waits until it is ready and its listener accepts.
    pub async fn start_bootstrap(
        dir: TempDir,
        yaml: &str,
        listener: SocketAddr,
        admin: SocketAddr,
    ) -> Self {
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, yaml).expect("write envoy.yaml");

        let log = dir.path().join("envoy.log");
        let out = File::create(&log).expect("create envoy.log");
        let err = out.try_clone().expect("clone the log file handle");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            // No shared memory: parallel tests each run their own Envoy.
            .arg("--disable-hot-restart")
            .args(["--concurrency", "2", "-l", "warning"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn envoy");

        let mut envoy = Self {
            child,
            listener,
            admin,
            log,
            _dir: dir,
        };
        envoy.wait_ready().await;
        envoy
    }

    /// A request through the front proxy; `path` is sent byte-for-byte.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder::new(self.listener, method, path)
    }

    /// A GET through the front proxy.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// Envoy's listener address.
    pub fn addr(&self) -> SocketAddr {
        self.listener
    }

    /// Envoy's admin interface.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Envoy's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the envoy process") {
                panic!("envoy exited before it was ready ({status}); its log follows");
            }
            let ready = RequestBuilder::new(self.admin, Method::GET, "/ready")
                .try_send()
                .await;
            if ready.is_ok_and(|response| response.status == 200)
                && tokio::net::TcpStream::connect(self.listener).await.is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "envoy not ready after {READY_TIMEOUT:?}; its log follows"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        print_log_if_panicking("envoy", &self.log);
    }
}

/// The shipped front proxy in front of `upstream`, balancing over two
/// portcullis replicas, started and waited for until it sees both healthy.
pub async fn front_proxy_for_two(replicas: [SocketAddr; 2], upstream: SocketAddr) -> Envoy {
    let addrs = FrontProxyAddrs {
        listener: SocketAddr::from(([127, 0, 0, 1], free_port())),
        admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
        portcullis: replicas[0],
        upstream,
    };
    let yaml = two_replicas_yaml(&addrs, replicas[1]);
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let envoy = Envoy::start_bootstrap(dir, &yaml, addrs.listener, addrs.admin).await;
    both_healthy(&envoy, replicas).await;
    envoy
}

/// The shipped front proxy with a second `portcullis` endpoint.
fn two_replicas_yaml(addrs: &FrontProxyAddrs, second: SocketAddr) -> String {
    let yaml = front_proxy_yaml(addrs);
    let first = format!(
        "socket_address: {{ address: {}, port_value: {} }}",
        addrs.portcullis.ip(),
        addrs.portcullis.port()
    );
    assert_eq!(yaml.matches(&first).count(), 1);
    yaml.replace(
        &first,
        &format!(
            "{first}\n              - endpoint:\n                  address:\n                    socket_address: {{ address: {}, port_value: {} }}",
            second.ip(),
            second.port()
        ),
    )
}

/// Waits until Envoy's active health checks see both replicas healthy.
pub async fn both_healthy(envoy: &Envoy, replicas: [SocketAddr; 2]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let clusters = RequestBuilder::new(envoy.admin(), http::Method::GET, "/clusters")
            .try_send()
            .await
            .map(|r| r.text())
            .unwrap_or_default();
        let healthy = replicas.iter().all(|addr| {
            clusters
                .lines()
                .any(|line| line == format!("portcullis::{addr}::health_flags::healthy"))
        });
        if healthy {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Envoy never saw both replicas healthy:\n{clusters}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
