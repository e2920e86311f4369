//! The end-to-end harness: real processes and loopback stand-ins, wired as in production.
//!
//! ```text
//! test ──HTTP/1.1──► Envoy (mesh/envoy/front-proxy.yaml) ──► EchoUpstream
//!                      │ ext_authz gRPC
//!                      ▼
//!                   portcullis (the binary under test) ──► JwksServer
//! ```
//!
//! [`Mesh::start`] brings the whole picture up; the pieces ([`Portcullis`], [`Envoy`],
//! [`JwksServer`], [`EchoUpstream`]) also start on their own for tests that need a
//! different wiring. Every port is ephemeral and every process is killed on drop; a
//! failing test prints the logs of the processes it ran.
//!
//! Needs Envoy (`ENVOY_BIN`, else `.venv/bin/envoy`; `scripts/test` installs it).

// Each test crate compiles this module and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod cases;
pub mod check;
pub mod client;
pub mod echo;
pub mod envoy;
pub mod gateways;
pub mod istio;
pub mod jwks;
pub mod pki;
pub mod portcullis;
pub mod proxy;
pub mod redis_server;
pub mod svix;
pub mod tokens;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use client::{RequestBuilder, Response};
pub use echo::{EchoUpstream, Seen};
pub use envoy::Envoy;
pub use jwks::JwksServer;
pub use portcullis::{Portcullis, PortcullisConfig};
pub use tokens::{ClerkClaims, SigningKey};

/// How long a process may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The kid of the key the test issuer signs with when a mesh starts.
pub const FIRST_KID: &str = "key-1";

/// Envoy, portcullis, the JWKS endpoint and the upstream, all running.
///
/// Fields drop in order: Envoy first, then portcullis, then the loopback servers.
pub struct Mesh {
    pub envoy: Envoy,
    pub portcullis: Portcullis,
    pub jwks: JwksServer,
    pub upstream: EchoUpstream,
    /// The key published at start (kid [`FIRST_KID`]).
    pub key: SigningKey,
}

impl Mesh {
    /// Starts the user-traffic setup: one Clerk-like issuer publishing a fresh key,
    /// the [`portcullis::USER_TRAFFIC_POLICY`], and Envoy in front of the echo upstream.
    pub async fn start() -> Self {
        envoy::envoy_bin(); // Fail fast, before anything starts, when Envoy is missing.
        let key = SigningKey::generate(FIRST_KID);
        let jwks = JwksServer::start(&[&key]).await;
        let upstream = EchoUpstream::start().await;
        let portcullis = Portcullis::start(&PortcullisConfig::user_traffic(jwks.uri())).await;
        let envoy = Envoy::start(portcullis.grpc_addr(), upstream.addr()).await;
        Self {
            envoy,
            portcullis,
            jwks,
            upstream,
            key,
        }
    }

    /// A GET through Envoy.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.envoy.get(path)
    }
}

/// A port that was free a moment ago on 127.0.0.1, never handed out twice by this
/// process. For processes that need a port in their config before they start.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("bind an ephemeral port")
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// Prints the log at `path` to stderr when the current thread is panicking (a failing
/// test), so the failure shows what the process said.
pub(crate) fn print_log_if_panicking(process: &str, path: &Path) {
    if std::thread::panicking() {
        let log = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
        eprintln!(
            "----- {process} log ({}) -----\n{log}----- end of {process} log -----",
            path.display()
        );
    }
}

/// An axum server on an ephemeral loopback port, shut down gracefully on
/// [`LoopbackServer::stop`] or drop.
pub struct LoopbackServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl LoopbackServer {
    /// Serves `router` on 127.0.0.1 (ephemeral port).
    pub async fn start(router: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("loopback server failed");
        });
        Self {
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), then returns.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                // A connection did not finish in time: cut it.
                task.abort();
            }
        }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
