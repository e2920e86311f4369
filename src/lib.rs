//! portcullis: one authorization service for a whole service mesh.
//!
//! Data flows one way (SPEC §12): adapter (`ext_authz`, `http`) → request model
//! (`request`) → identity (`identity`) → policy (`policy`) → answer (`answer`) →
//! adapter. The rooms below are private unless a test or the binary needs them.
#![forbid(unsafe_code)]

pub mod policy;
pub mod principal;
mod yaml;
