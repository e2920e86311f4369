//! portcullis: one authorization service for a whole service mesh.
//!
//! Data flows one way (SPEC §12): adapter (`ext_authz`, `http`) → request model
//! (`request`) → identity (`identity`) → policy (`policy`) → answer (`answer`) →
//! adapter. `authorizer` runs that pipeline; `server` wires the listeners.
#![forbid(unsafe_code)]

mod admin_api;
pub mod answer;
pub mod authorizer;
pub mod ca;
pub mod clock;
pub mod config;
pub mod directory;
pub mod ext_authz;
pub mod headers;
mod http;
pub mod identity;
pub mod metrics;
pub mod mint;
pub mod policy;
pub mod policy_cases;
pub mod principal;
mod readiness;
pub mod reload;
pub mod replicas;
pub mod request;
pub mod runtime;
pub mod server;
pub mod tls;
mod token_api;
mod yaml;

pub use admin_api::pb as admin_pb;
