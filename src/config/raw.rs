//! The YAML shape of `portcullis.yaml` (SPEC §3), as serde reads it. Unknown keys
//! are errors everywhere. Validation into [`super::Config`] happens in `mod.rs`.

use crate::identity::Algorithm;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    #[serde(default)]
    pub users: RawUsers,
    #[serde(default)]
    pub headers: RawHeaders,
    pub policy: Option<String>,
    /// Other trust domains whose SPIFFE IDs are accepted (SPEC §4).
    #[serde(default)]
    pub federated_trust_domains: Vec<String>,
    pub mtls: Option<super::east_west::RawMtls>,
    /// The signing key of the tokens portcullis signs (SPEC §6).
    pub tokens: Option<super::east_west::RawTokens>,
    // Spec'd keys whose features arrive later: read so that an error says so
    // instead of "unknown field".
    #[serde(default)]
    pub webhooks: RawWebhooks,
    #[serde(default)]
    pub state: RawState,
}

fn default_trust_domain() -> String {
    "example.org".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    pub tls: Option<RawTls>,
}

/// `server.tls`: TLS on the gRPC listener. Paths are relative to the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// The server certificate chain (PEM: leaf first).
    pub cert: String,
    /// Its private key (PEM).
    pub key: String,
    /// When set, clients must present a certificate chaining to these roots.
    pub client_ca: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            grpc_listen: default_grpc_listen(),
            http_listen: default_http_listen(),
            tls: None,
        }
    }
}

pub fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9191))
}

pub fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8181))
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawIssuerKind {
    User,
    Service,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub name: String,
    pub kind: RawIssuerKind,
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub jwks_file: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub algorithms: Vec<Algorithm>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub authorized_parties: Vec<String>,
    /// Durations are kept as text and parsed in validation, where the error can
    /// name its exact line.
    pub leeway: Option<String>,
    pub credentials: Option<Vec<RawCredential>>,
    /// Refresh interval of `jwks_uri` when the response has no `max-age`.
    pub jwks_refresh: Option<String>,
    /// Minimum interval between unknown-`kid` refetches (SPEC §4: 30 s).
    pub jwks_min_refetch: Option<String>,
    /// Timeout of one JWKS fetch.
    pub jwks_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    pub header: Option<String>,
    /// For `header`: the scheme prefix; defaults to `Bearer ` for `authorization`.
    pub prefix: Option<String>,
    pub cookie: Option<String>,
    pub query: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsers {
    #[serde(default = "default_source")]
    pub source: String,
    pub query: Option<String>,
    pub cache: Option<RawUserCache>,
    pub on_unknown: Option<RawOnUnknown>,
    /// Timeout of one directory lookup (default 2s).
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUserCache {
    pub ttl: Option<String>,
    pub negative_ttl: Option<String>,
    pub max_entries: Option<u64>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum RawOnUnknown {
    Deny,
    Claims,
}

/// `webhooks:` — senders whose Svix signatures portcullis verifies.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawWebhooks {
    pub clerk: Option<RawWebhook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
}

/// `state:` — shared by all replicas.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub redis: Option<String>,
}

fn default_source() -> String {
    "claims".into()
}

impl Default for RawUsers {
    fn default() -> Self {
        Self {
            source: default_source(),
            query: None,
            cache: None,
            on_unknown: None,
            timeout: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    #[serde(default = "default_strip_prefixes")]
    pub strip_prefixes: Vec<String>,
    #[serde(default = "default_user_headers")]
    pub user: BTreeMap<String, String>,
    #[serde(default = "default_service_headers")]
    pub service: BTreeMap<String, String>,
    #[serde(default = "default_request_id")]
    pub request_id: String,
    #[serde(default)]
    pub internal_token: bool,
}

impl Default for RawHeaders {
    fn default() -> Self {
        Self {
            strip_prefixes: default_strip_prefixes(),
            user: default_user_headers(),
            service: default_service_headers(),
            request_id: default_request_id(),
            internal_token: false,
        }
    }
}

fn default_strip_prefixes() -> Vec<String> {
    ["x-user-", "x-service-", "x-portcullis-"]
        .map(String::from)
        .to_vec()
}

fn default_user_headers() -> BTreeMap<String, String> {
    [("x-user-id", "user.id"), ("x-user-role", "user.role")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// SPEC §3: the caller's name and SPIFFE ID.
fn default_service_headers() -> BTreeMap<String, String> {
    [
        ("x-service-name", "service.name"),
        ("x-caller-spiffe-id", "service.spiffe_id"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn default_request_id() -> String {
    "x-request-id".into()
}
