//! portcullis: one authorization service for a whole service mesh.
//!
//! Data flows one way: adapter (`ext_authz`, `http`) → request model (`request`)
//! → identity (`identity`) → user directory (`directory`) → policy (`policy`) →
//! answer (`answer`) → adapter. `authorizer` runs that pipeline over a
//! `runtime` that outlives reloads; `server` wires the listeners.
//!
//! The public surface is what the binary, the tests, the benchmarks and the fuzz
//! targets use: the server and its config, the certificate tool, the pure core
//! (request model, identity, policy) and its parsers. The rest is private.
#![forbid(unsafe_code)]

mod admin_api;
mod answer;
mod authorizer;
pub mod ca;
pub mod clock;
pub mod config;
pub mod directory;
pub mod duration;
pub mod ext_authz;
pub mod headers;
mod http;
pub mod identity;
pub mod metrics;
mod mint;
pub mod policy;
pub mod policy_cases;
pub mod principal;
mod ratelimit;
mod readiness;
mod reload;
mod replicas;
pub mod request;
mod revocation;
mod runtime;
pub mod server;
mod tls;
mod token_api;
mod yaml;

pub use admin_api::pb as admin_pb;

/// What the Envoy dynamic module (`envoy-module/`, docs/in-proxy.md) assembles the
/// same pipeline from, inside Envoy: the authorizer and its runtime, the answer it
/// converts into Envoy callbacks, the hot reload of config and policy, and the
/// subscription to the other replicas' revocations and directory events, and the
/// dynamic metadata the server's allows carry for the module's guard.
pub mod in_proxy {
    pub use crate::answer::{Answer, DenyKind, RequestId};
    pub use crate::authorizer::{Authorizer, Pipeline};
    pub use crate::ext_authz::ALLOWED_METADATA;
    pub use crate::reload::{spawn as spawn_reload, LastReload, Watched, POLL_INTERVAL};
    pub use crate::runtime::Runtime;
    pub use crate::server::hear_other_replicas;
}
