//! The YAML shape of `portcullis.yaml`, as serde reads it, shaped so that one
//! read finds every problem: unknown keys are collected (by `serde_ignored`, in
//! `mod.rs`) rather than refused, and typed leaves are [`Checked`], so a bad
//! value is one error among all rather than the end of the parse. Validation
//! into [`super::Config`] happens in `mod.rs`.

use super::byte_size::ByteSize;
use crate::duration::ConfigDuration;
use crate::identity::Algorithm;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// A leaf value as read: what it parsed to, or why not. Read through a YAML
/// value, so a value of the wrong type or shape fails alone, and the validator
/// reports it with its key path and line.
#[derive(Debug, Clone)]
pub struct Checked<T>(pub Result<T, String>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_yaml_ng::Value::deserialize(deserializer)?;
        Ok(Checked(T::deserialize(value).map_err(|e| e.to_string())))
    }
}

/// Deserializes a scalar written as text or as a number (`30s`, `32MiB`,
/// `4096`) through `T`'s `FromStr`, whose error tells what to write.
/// Durations are read from their text (`30s`), like sizes.
impl<'de> serde::Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer)
    }
}

/// `IP:PORT` or `unix:PATH`.
impl<'de> serde::Deserialize<'de> for super::ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer)
    }
}

pub(super) fn from_text<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    struct Text;
    impl Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a scalar such as 30s or 32MiB")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    deserializer
        .deserialize_any(Text)?
        .parse()
        .map_err(de::Error::custom)
}

#[derive(Debug, Deserialize)]
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
    /// Other trust domains whose SPIFFE IDs are accepted (docs/security.md).
    #[serde(default)]
    pub federated_trust_domains: Vec<String>,
    pub mtls: Option<super::east_west::RawMtls>,
    /// The signing key of the tokens portcullis signs (docs/east-west.md).
    pub tokens: Option<super::east_west::RawTokens>,
    // Spec'd keys whose features arrive later: read so that an error says so
    // instead of "unknown field".
    #[serde(default)]
    pub webhooks: RawWebhooks,
    #[serde(default)]
    pub state: RawState,
    /// The verified-token cache.
    #[serde(default)]
    pub token_cache: RawTokenCache,
    #[serde(default)]
    pub revocation: super::gateway::RawRevocation,
    #[serde(default)]
    pub admin: super::gateway::RawAdmin,
}

fn default_trust_domain() -> String {
    "example.org".into()
}

#[derive(Debug, Deserialize, Default)]
pub struct RawServer {
    pub grpc_listen: Option<Checked<super::ListenAddr>>,
    pub http_listen: Option<Checked<SocketAddr>>,
    pub tls: Option<RawTls>,
    /// After SIGTERM: how long health says NOT_SERVING while requests are still
    /// answered, before the listeners close.
    pub drain_delay: Option<Checked<ConfigDuration>>,
    /// Then: the longest wait for in-flight requests.
    pub shutdown_timeout: Option<Checked<ConfigDuration>>,
    /// Limits of the HTTP listener.
    #[serde(default)]
    pub http: RawHttp,
    /// The HTTP check endpoints' own listener (default: `http_listen`).
    pub check_listen: Option<Checked<SocketAddr>>,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` name the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// `server.tls`: TLS on the gRPC listener. Paths are relative to the config file.
/// `cert` and `key` are required; missing, they are empty, and reported.
#[derive(Debug, Deserialize)]
pub struct RawTls {
    /// The server certificate chain (PEM: leaf first).
    #[serde(default)]
    pub cert: String,
    /// Its private key (PEM).
    #[serde(default)]
    pub key: String,
    /// When set, clients must present a certificate chaining to these roots.
    pub client_ca: Option<String>,
}

/// `server.http`: limits of the HTTP listener.
#[derive(Debug, Deserialize, Default)]
pub struct RawHttp {
    pub header_read_timeout: Option<Checked<ConfigDuration>>,
    /// A keep-alive connection with no request is closed after this.
    pub idle_timeout: Option<Checked<ConfigDuration>>,
    pub max_connections: Option<Checked<usize>>,
}

/// `token_cache:` — the verified-token cache, bounded in bytes.
#[derive(Debug, Deserialize, Default)]
pub struct RawTokenCache {
    pub max_bytes: Option<Checked<ByteSize>>,
    /// A longer token is verified every time, never cached.
    pub max_token_bytes: Option<Checked<ByteSize>>,
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

/// One of `issuers:`. `name`, `kind`, `issuer` and `algorithms` are required;
/// missing, they are empty (or `None`), and the validator says so.
#[derive(Debug, Deserialize)]
pub struct RawIssuer {
    #[serde(default)]
    pub name: String,
    pub kind: Option<Checked<RawIssuerKind>>,
    #[serde(default)]
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub jwks_file: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    #[serde(default)]
    pub algorithms: Vec<Checked<Algorithm>>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub authorized_parties: Vec<String>,
    pub leeway: Option<Checked<ConfigDuration>>,
    pub credentials: Option<Vec<RawCredential>>,
    /// Refresh interval of `jwks_uri` when the response has no `max-age`.
    pub jwks_refresh: Option<Checked<ConfigDuration>>,
    /// Minimum interval between unknown-`kid` refetches (docs/security.md: 30 s).
    pub jwks_min_refetch: Option<Checked<ConfigDuration>>,
    /// Timeout of one JWKS fetch.
    pub jwks_timeout: Option<Checked<ConfigDuration>>,
}

#[derive(Debug, Deserialize)]
pub struct RawCredential {
    pub header: Option<String>,
    /// For `header`: the scheme prefix; defaults to `Bearer ` for `authorization`.
    pub prefix: Option<String>,
    pub cookie: Option<String>,
    pub query: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawUsers {
    #[serde(default = "default_source")]
    pub source: String,
    pub query: Option<String>,
    pub cache: Option<RawUserCache>,
    pub on_unknown: Option<Checked<RawOnUnknown>>,
    /// Timeout of one directory lookup (default 2s).
    pub timeout: Option<Checked<ConfigDuration>>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawUserCache {
    pub ttl: Option<Checked<ConfigDuration>>,
    pub negative_ttl: Option<Checked<ConfigDuration>>,
    pub max_entries: Option<Checked<u64>>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum RawOnUnknown {
    Deny,
    Claims,
}

/// `webhooks:` — senders whose Svix signatures portcullis verifies.
#[derive(Debug, Deserialize, Default)]
pub struct RawWebhooks {
    pub clerk: Option<RawWebhook>,
}

#[derive(Debug, Deserialize)]
pub struct RawWebhook {
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
}

/// `state:` — shared by all replicas.
#[derive(Debug, Deserialize, Default)]
pub struct RawState {
    pub redis: Option<String>,
    /// The environment variable holding Redis' password (default `REDIS_PASSWORD`).
    pub password_env: Option<String>,
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
pub struct RawHeaders {
    #[serde(default = "default_strip_prefixes")]
    pub strip_prefixes: Vec<String>,
    #[serde(default = "default_user_headers")]
    pub user: BTreeMap<String, String>,
    #[serde(default = "default_service_headers")]
    pub service: BTreeMap<String, String>,
    #[serde(default = "default_request_id")]
    pub request_id: String,
    pub internal_token: Option<Checked<bool>>,
}

impl Default for RawHeaders {
    fn default() -> Self {
        Self {
            strip_prefixes: default_strip_prefixes(),
            user: default_user_headers(),
            service: default_service_headers(),
            request_id: default_request_id(),
            internal_token: None,
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

/// docs/configuration.md: the caller's name and SPIFFE ID.
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

/// The keys a mapping at `path` may hold, for naming them beside an unknown one;
/// empty where the path is not a section of ours.
pub fn keys_at(path: &[crate::yaml::Key]) -> &'static [&'static str] {
    use super::east_west::{RawMtls, RawTokens};
    use crate::yaml::Key;
    let names: Vec<&str> = path
        .iter()
        .filter_map(|key| match key {
            Key::Field(name) => Some(name.as_str()),
            Key::Index(_) => None,
        })
        .collect();
    match names[..] {
        [] => fields_of::<RawConfig>(),
        ["server"] => fields_of::<RawServer>(),
        ["server", "tls"] => fields_of::<RawTls>(),
        ["server", "http"] => fields_of::<RawHttp>(),
        ["issuers"] => fields_of::<RawIssuer>(),
        ["issuers", "credentials"] => fields_of::<RawCredential>(),
        ["users"] => fields_of::<RawUsers>(),
        ["users", "cache"] => fields_of::<RawUserCache>(),
        ["headers"] => fields_of::<RawHeaders>(),
        ["mtls"] => fields_of::<RawMtls>(),
        ["tokens"] => fields_of::<RawTokens>(),
        ["webhooks"] => fields_of::<RawWebhooks>(),
        ["webhooks", "clerk"] => fields_of::<RawWebhook>(),
        ["state"] => fields_of::<RawState>(),
        ["token_cache"] => fields_of::<RawTokenCache>(),
        _ => &[],
    }
}

/// The field names of a derived struct: what its `Deserialize` asks a
/// deserializer for, caught by one that only listens.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    #[derive(Debug)]
    struct Fields(&'static [&'static str]);
    impl fmt::Display for Fields {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }
    impl std::error::Error for Fields {}
    impl de::Error for Fields {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Fields(&[])
        }
    }
    struct Listener;
    impl<'de> Deserializer<'de> for Listener {
        type Error = Fields;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    match T::deserialize(Listener) {
        Ok(_) => &[],
        Err(Fields(fields)) => fields,
    }
}
