//! The upstream service behind Envoy: it answers every request with what it saw.
//!
//! The answer is 200 with a JSON [`Seen`]: method, path (with query) and all request
//! headers (lower-case names, repeated headers joined with `,`). Every request is
//! also recorded, so a test can prove a request never reached the upstream at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::LoopbackServer;

/// One request as the upstream received it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

impl Seen {
    /// The value of header `name` (lower-case), if the upstream received it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A running echo upstream; stops when dropped.
pub struct EchoUpstream {
    server: LoopbackServer,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl EchoUpstream {
    /// Starts the upstream on an ephemeral loopback port.
    pub async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new().fallback(echo).with_state(Arc::clone(&seen));
        Self {
            server: LoopbackServer::start(router).await,
            seen,
        }
    }

    /// The upstream's address (Envoy's `upstream` cluster).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every request received so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn echo(State(log): State<Arc<Mutex<Vec<Seen>>>>, request: Request) -> Json<Seen> {
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    let seen = Seen {
        method: request.method().to_string(),
        path: request
            .uri()
            .path_and_query()
            .map_or_else(|| request.uri().path().to_owned(), |pq| pq.to_string()),
        headers,
    };
    log.lock().unwrap().push(seen.clone());
    Json(seen)
}
