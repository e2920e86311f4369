//! A stand-in for Clerk's JWKS endpoint, on loopback.
//!
//! Tests swap the published key set (rotation), count the fetches portcullis makes,
//! slow the answers down (so concurrent requests pile up on one fetch) and stop the
//! server (an outage).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::tokens::{jwk_set, SigningKey};
use super::LoopbackServer;

/// The path the JWKS is served under (Clerk's).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// A running JWKS endpoint; stops when dropped.
pub struct JwksServer {
    server: LoopbackServer,
    state: Arc<Published>,
}

/// What the endpoint currently publishes, and how often it was asked.
struct Published {
    keys: Mutex<Value>,
    delay: Mutex<Duration>,
    fetches: AtomicUsize,
}

impl JwksServer {
    /// Starts publishing `keys` on an ephemeral loopback port.
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let state = Arc::new(Published {
            keys: Mutex::new(jwk_set(keys)),
            delay: Mutex::new(Duration::ZERO),
            fetches: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route(JWKS_PATH, get(serve_jwks))
            .with_state(Arc::clone(&state));
        Self {
            server: LoopbackServer::start(router).await,
            state,
        }
    }

    /// The `jwks_uri` to configure.
    pub fn uri(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.server.addr())
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Publishes `keys` from now on (a key rotation).
    pub fn set_keys(&self, keys: &[&SigningKey]) {
        *self.state.keys.lock().unwrap() = jwk_set(keys);
    }

    /// Delays every answer by `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// How many times the JWKS was fetched so far.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Shuts the endpoint down (graceful): connections are refused from now on.
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }
}

async fn serve_jwks(State(published): State<Arc<Published>>) -> Json<Value> {
    published.fetches.fetch_add(1, Ordering::SeqCst);
    let delay = *published.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let keys = published.keys.lock().unwrap().clone();
    Json(keys)
}
