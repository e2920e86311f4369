//! Configuration (docs/configuration.md): parse → validate (every error at once, each with
//! `file:line` and what to do) → an immutable [`Config`].

mod byte_size;
pub mod dev;
mod east_west;
mod gateway;
mod listen;
mod raw;

pub use crate::duration::ConfigDuration;
pub use crate::headers::{ContextField, HeadersConfig, ServiceField};
pub use crate::tls::TlsConfig;
pub use east_west::TokensConfig;

use crate::directory::{DirectoryConfig, OnUnknown, Source};
use crate::identity::svix::WebhookSecret;
use crate::identity::{
    claims::ClaimRules, jwks::JwksTiming, keys::KeySet, keys::VerificationKey, mtls::MtlsSettings,
    Algorithm, Credential, IssuerKind,
};
use crate::policy::{LoadOptions, Policy};
use crate::yaml::{line_of, render, Key};
use aws_lc_rs::digest;
use byte_size::{ByteSize, KIB, MIB};
pub use gateway::{RevocationConfig, TrustedProxies};
pub use listen::ListenAddr;
use raw::{Checked, RawConfig, RawCredential, RawIssuer, RawIssuerKind};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Clock skew tolerated on token times when an issuer sets no `leeway`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// `server.drain_delay`: long enough for Envoy's health checks to see NOT_SERVING
/// and move traffic away before the listeners close.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);
/// `server.shutdown_timeout`: the longest wait for in-flight requests.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// `token_cache.max_bytes` below this would hold too few tokens to be worth it.
pub const MIN_TOKEN_CACHE_BYTES: u64 = MIB;
/// `token_cache.max_token_bytes` below this would leave ordinary JWTs uncached.
pub const MIN_CACHED_TOKEN_BYTES: u64 = KIB;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config {file}: {reason}")]
    Read { file: String, reason: String },
    /// Every problem found, one per line, each `file:line: key: what to do`.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl Error {
    pub fn errors(&self) -> Vec<String> {
        match self {
            Error::Read { .. } => vec![self.to_string()],
            Error::Invalid(errors) => errors.clone(),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `server.grpc_listen`: TCP, or a Unix domain socket (`unix:PATH`).
    pub grpc_listen: ListenAddr,
    pub http_listen: SocketAddr,
    /// TLS on the gRPC listener; `None`: plaintext (h2c).
    pub tls: Option<TlsConfig>,
    pub trust_domain: String,
    pub issuers: Vec<IssuerConfig>,
    pub headers: HeadersConfig,
    /// Where callers' mTLS identities come from, and the accepted trust domains.
    pub mtls: MtlsSettings,
    /// The signing key of the tokens portcullis signs (docs/east-west.md), when configured.
    pub tokens: Option<TokensConfig>,
    /// The config file itself; `None` for the embedded dev defaults.
    pub source_file: Option<PathBuf>,
    /// The policy file; `None` with the embedded dev policy.
    pub policy_file: Option<PathBuf>,
    /// The policy as loaded at validation.
    pub policy: Arc<Policy>,
    /// What the policy is checked against (also on reload).
    pub policy_options: LoadOptions,
    /// The user directory (`users:`).
    pub users: DirectoryConfig,
    /// The Clerk webhook signing secret (`webhooks.clerk`).
    pub clerk_webhook: Option<WebhookSecret>,
    /// Shared state for all replicas (`state.redis`).
    pub redis: Option<RedisUrl>,
    /// `server.drain_delay`: after SIGTERM, how long health says NOT_SERVING
    /// while requests are still answered, before the listeners close. May be 0.
    pub drain_delay: Duration,
    /// `server.shutdown_timeout`: then, the longest wait for in-flight requests.
    pub shutdown_timeout: Duration,
    /// `server.http`: limits of the HTTP listener.
    pub http_limits: HttpLimits,
    /// `token_cache`: the verified-token cache's bounds.
    pub token_cache: TokenCacheConfig,
    /// `server.check_listen`: the HTTP check endpoints' own listener; `None`:
    /// they are served on `http_listen`.
    pub check_listen: Option<SocketAddr>,
    /// `server.trusted_proxies`.
    pub trusted_proxies: TrustedProxies,
    /// `revocation` and `admin`.
    pub revocation: RevocationConfig,
}

/// `server.http`: limits of the HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The longest wait for a request's headers (bounds slow clients).
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request is closed after this.
    pub idle_timeout: Duration,
    /// Connections open at once, at most.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// `token_cache`: the verified-token cache, bounded in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCacheConfig {
    /// What all cached tokens may weigh together.
    pub max_bytes: u64,
    /// A token longer than this is verified every time, never cached.
    pub max_token_bytes: usize,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 32 * MIB,
            max_token_bytes: 16 * 1024,
        }
    }
}

/// The URL portcullis connects to Redis with, the password from the
/// environment included: never printed (`Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl std::ops::Deref for RedisUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match reqwest::Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                write!(f, "{url}")
            }
            Err(_) => f.write_str("<redis url>"),
        }
    }
}

/// One validated issuer; keys from files and secrets are already loaded.
/// Comparable, so a reload can keep what serves an unchanged issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub name: String,
    pub kind: IssuerKind,
    pub rules: ClaimRules,
    pub algorithms: Vec<Algorithm>,
    pub credentials: Vec<Credential>,
    pub keys: KeySpec,
}

impl PartialEq for IssuerConfig {
    fn eq(&self, other: &Self) -> bool {
        // Field by field, destructured so a new field cannot be forgotten:
        // `ClaimRules` has no `PartialEq` of its own.
        let IssuerConfig {
            name,
            kind,
            rules,
            algorithms,
            credentials,
            keys,
        } = self;
        let ClaimRules {
            issuer,
            audiences,
            authorized_parties,
            leeway,
        } = rules;
        *name == other.name
            && *kind == other.kind
            && *issuer == other.rules.issuer
            && *audiences == other.rules.audiences
            && *authorized_parties == other.rules.authorized_parties
            && *leeway == other.rules.leeway
            && *algorithms == other.algorithms
            && *credentials == other.credentials
            && *keys == other.keys
    }
}

impl Eq for IssuerConfig {}

/// Where an issuer's keys come from.
#[derive(Clone)]
pub enum KeySpec {
    /// Loaded at validation, from `jwks_file` or an HMAC secret.
    Static {
        keys: Arc<KeySet>,
        /// SHA-256 of what the keys were read from (the JWKS file, or the
        /// secret), so that two loads compare without comparing keys.
        fingerprint: [u8; 32],
    },
    /// Fetched from `jwks_uri` at run time.
    Remote { uri: String, timing: JwksTiming },
}

impl PartialEq for KeySpec {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (KeySpec::Static { fingerprint: a, .. }, KeySpec::Static { fingerprint: b, .. }) => {
                a == b
            }
            (
                KeySpec::Remote { uri, timing },
                KeySpec::Remote {
                    uri: other_uri,
                    timing: other_timing,
                },
            ) => uri == other_uri && timing == other_timing,
            _ => false,
        }
    }
}

impl Eq for KeySpec {}

impl fmt::Debug for KeySpec {
    /// Without the fingerprint: a digest of a weak secret would let a reader of
    /// the logs guess it offline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Static { keys, .. } => f
                .debug_struct("Static")
                .field("keys", keys)
                .finish_non_exhaustive(),
            KeySpec::Remote { uri, timing } => f
                .debug_struct("Remote")
                .field("uri", uri)
                .field("timing", timing)
                .finish(),
        }
    }
}

/// The fingerprint of key material read from `source` (what kind of source it
/// is, so a JWKS and a secret of the same bytes still differ).
fn fingerprint(source: &str, bytes: &[u8]) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(source.as_bytes());
    context.update(&[0]);
    context.update(bytes);
    let mut out = [0; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

impl Config {
    /// Loads and validates a config file. Relative paths inside it (policy,
    /// jwks_file, secret_file) are relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Config::parse(&path.display().to_string(), &text, base, None)?;
        config.source_file = Some(path.to_owned());
        Ok(config)
    }

    /// Parses config text. `embedded_policy` stands in for a missing `policy:` key
    /// (the dev defaults).
    pub fn parse(
        file: &str,
        text: &str,
        base: &Path,
        embedded_policy: Option<&str>,
    ) -> Result<Config, Error> {
        let mut v = Validator {
            file,
            text,
            errors: Vec::new(),
        };
        let Some(raw) = v.read() else {
            return Err(Error::Invalid(v.finish()));
        };
        let issuers = raw
            .issuers
            .iter()
            .enumerate()
            .filter_map(|(i, issuer)| v.issuer(i, issuer, base))
            .collect::<Vec<_>>();
        v.unique_issuers(&raw.issuers);
        let headers = v.headers(&raw.headers);
        let users = v.users(&raw.users, base);
        let clerk_webhook = v.webhooks(&raw.webhooks, base);
        let redis = raw
            .state
            .redis
            .as_deref()
            .and_then(|url| v.redis(url, raw.state.password_env.as_deref()));
        let trust = v.trust_domains(&raw.trust_domain, &raw.federated_trust_domains);
        let mtls = trust.as_ref().map(|trust| v.mtls(raw.mtls.as_ref(), trust));
        let tokens = match (&raw.tokens, &trust) {
            (Some(tokens), Some(trust)) => v.tokens(tokens, &trust.ours, base),
            _ => None,
        };
        if headers.internal_token && raw.tokens.is_none() {
            v.error(
                &[Key::field("headers"), Key::field("internal_token")],
                "internal tokens are signed with the `tokens` key: add `tokens: { key_dir: certs/tokens }`".into(),
            );
        }
        let tls = raw.server.tls.as_ref().and_then(|tls| v.tls(tls, base));
        let grpc_listen = match raw.server.grpc_listen.as_ref().map(|c| &c.0) {
            None => ListenAddr::Tcp(raw::default_grpc_listen()),
            Some(Ok(addr)) => addr.clone(),
            Some(Err(why)) => {
                v.error(
                    &[Key::field("server"), Key::field("grpc_listen")],
                    why.clone(),
                );
                ListenAddr::Tcp(raw::default_grpc_listen())
            }
        };
        if matches!(grpc_listen, ListenAddr::Unix(_)) && raw.server.tls.is_some() {
            v.error(
                &[Key::field("server"), Key::field("tls")],
                "server.tls applies to a TCP grpc_listen; a unix: socket is guarded by its file permissions (docs/in-pod.md): remove one".into(),
            );
        }
        let http_listen = v.listen(
            "http_listen",
            raw.server.http_listen.as_ref(),
            raw::default_http_listen(),
        );
        if grpc_listen.tcp() == Some(http_listen) && http_listen.port() != 0 {
            v.error(
                &[Key::field("server"), Key::field("http_listen")],
                "grpc_listen and http_listen must differ".into(),
            );
        }
        let server = |key: &str| [Key::field("server"), Key::field(key)];
        let drain_delay = v.duration(
            &server("drain_delay"),
            raw.server.drain_delay.as_ref(),
            DEFAULT_DRAIN_DELAY,
        );
        let shutdown_timeout = v.positive_duration(
            &server("shutdown_timeout"),
            raw.server.shutdown_timeout.as_ref(),
            DEFAULT_SHUTDOWN_TIMEOUT,
        );
        let http_limits = v.http_limits(&raw.server.http);
        let check_listen = raw
            .server
            .check_listen
            .as_ref()
            .map(|checked| v.listen("check_listen", Some(checked), raw::default_http_listen()));
        if check_listen
            .is_some_and(|c| c.port() != 0 && (Some(c) == grpc_listen.tcp() || c == http_listen))
        {
            v.error(
                &server("check_listen"),
                "check_listen must differ from grpc_listen and http_listen (leave it out to serve the checks on http_listen)".into(),
            );
        }
        let trusted_proxies = v.trusted_proxies(&raw.server.trusted_proxies);
        let revocation = v.revocation(&raw.revocation, &raw.admin, trust.as_ref());
        let token_cache = v.token_cache(&raw.token_cache);
        let policy_options = LoadOptions {
            trust_domain: raw.trust_domain.clone(),
            federated_trust_domains: raw.federated_trust_domains.clone(),
        };
        // The policy file's own errors, after the config's.
        let mut policy_errors = Vec::new();
        let (policy_file, policy) = match (&raw.policy, embedded_policy) {
            (Some(p), _) => {
                let path = base.join(p);
                match Policy::load(&path, &policy_options) {
                    Ok(policy) => (Some(path), Some(policy)),
                    Err(e) => {
                        policy_errors = e.errors();
                        (Some(path), None)
                    }
                }
            }
            (None, Some(text)) => match Policy::parse("<embedded policy>", text, &policy_options) {
                Ok(policy) => (None, Some(policy)),
                Err(e) => {
                    policy_errors = e.errors();
                    (None, None)
                }
            },
            (None, None) => {
                v.error(
                    &[Key::field("policy")],
                    "`policy:` is required: the path of the policy file (docs/policy.md)".into(),
                );
                (None, None)
            }
        };
        let mut errors = v.finish();
        errors.append(&mut policy_errors);
        match (errors.is_empty(), policy, mtls) {
            (true, Some(policy), Some(mtls)) => Ok(Config {
                grpc_listen,
                http_listen,
                tls,
                trust_domain: raw.trust_domain,
                source_file: None,
                issuers,
                headers,
                mtls,
                tokens,
                policy_file,
                policy: Arc::new(policy),
                policy_options,
                users,
                clerk_webhook,
                redis,
                drain_delay,
                shutdown_timeout,
                http_limits,
                token_cache,
                check_listen,
                trusted_proxies,
                revocation,
            }),
            _ => Err(Error::Invalid(errors)),
        }
    }
}

struct Validator<'a> {
    file: &'a str,
    text: &'a str,
    /// Each error with its line, if it has one.
    errors: Vec<(Option<usize>, String)>,
}

impl Validator<'_> {
    fn error(&mut self, path: &[Key], message: String) {
        let line = line_of(self.text, path);
        self.push(line, format!("{}: {message}", render(path)));
    }

    fn push(&mut self, line: Option<usize>, message: String) {
        let at = match line {
            Some(line) => format!("{}:{line}", self.file),
            None => self.file.to_owned(),
        };
        self.errors.push((line, format!("{at}: {message}")));
    }

    /// The errors in the order of the file; those without a line last.
    fn finish(mut self) -> Vec<String> {
        self.errors
            .sort_by_key(|(line, _)| line.unwrap_or(usize::MAX));
        self.errors.into_iter().map(|(_, error)| error).collect()
    }

    /// Reads the text into its raw shape, reporting every unknown key. `None`
    /// when the text is not that shape at all (a YAML syntax error, a section
    /// of the wrong type): that error, with its line, ends the check.
    fn read(&mut self) -> Option<RawConfig> {
        let mut unknown = Vec::new();
        let read: Result<RawConfig, _> =
            serde_ignored::deserialize(serde_yaml_ng::Deserializer::from_str(self.text), |path| {
                unknown.push(crate::yaml::keys_of(&path))
            });
        for path in unknown {
            let message = match path.split_last() {
                Some((Key::Field(name), parent)) => {
                    let expected = raw::keys_at(parent);
                    if expected.is_empty() {
                        format!("unknown field `{name}`: remove it")
                    } else {
                        let expected: Vec<String> =
                            expected.iter().map(|key| format!("`{key}`")).collect();
                        format!(
                            "unknown field `{name}`: remove it, or use one of {}",
                            expected.join(", ")
                        )
                    }
                }
                _ => "unexpected value: remove it".to_owned(),
            };
            self.error(&path, message);
        }
        match read {
            Ok(raw) => Some(raw),
            Err(e) => {
                self.push(
                    e.location().map(|l| l.line()),
                    format!("{e} (the rest of the config was not checked: fix this first)"),
                );
                None
            }
        }
    }

    /// A leaf value, or its error reported at `path`.
    fn value<T: Clone>(&mut self, path: &[Key], checked: &Checked<T>) -> Option<T> {
        match &checked.0 {
            Ok(value) => Some(value.clone()),
            Err(why) => {
                self.error(path, why.clone());
                None
            }
        }
    }

    /// `server.<key>`: a listen address.
    fn listen(
        &mut self,
        key: &str,
        checked: Option<&Checked<SocketAddr>>,
        default: SocketAddr,
    ) -> SocketAddr {
        match checked.map(|c| &c.0) {
            None => default,
            Some(Ok(addr)) => *addr,
            Some(Err(why)) => {
                self.error(
                    &[Key::field("server"), Key::field(key)],
                    format!("{why}: write IP:PORT, e.g. {default}"),
                );
                default
            }
        }
    }

    fn issuer(&mut self, i: usize, raw: &RawIssuer, base: &Path) -> Option<IssuerConfig> {
        let at = |key: &str| vec![Key::field("issuers"), Key::Index(i), Key::field(key)];
        let before = self.errors.len();
        let kind = match &raw.kind {
            Some(kind) => self.value(&at("kind"), kind),
            None => {
                self.error(
                    &at("kind"),
                    "`kind` is required: user (end-user tokens) or service (JWT-SVIDs)".into(),
                );
                None
            }
        };
        let algorithms: Vec<Algorithm> = raw
            .algorithms
            .iter()
            .enumerate()
            .filter_map(|(j, alg)| {
                let mut path = at("algorithms");
                path.push(Key::Index(j));
                self.value(&path, alg)
            })
            .collect();
        if raw.name.trim().is_empty() {
            self.error(&at("name"), "every issuer needs a name".into());
        }
        if raw.issuer.is_empty() {
            self.error(
                &at("issuer"),
                "the exact `iss` its tokens carry is required".into(),
            );
        }
        if raw.algorithms.is_empty() {
            self.error(
                &at("algorithms"),
                "list the algorithms this issuer signs with, e.g. [RS256]".into(),
            );
        }
        let hmac = algorithms
            .iter()
            .any(|a| a.family() == crate::identity::algorithm::KeyFamily::Hmac);
        let asymmetric = algorithms
            .iter()
            .any(|a| a.family() != crate::identity::algorithm::KeyFamily::Hmac);
        let sources = [
            ("jwks_uri", raw.jwks_uri.is_some()),
            ("jwks_file", raw.jwks_file.is_some()),
            ("secret_env", raw.secret_env.is_some()),
            ("secret_file", raw.secret_file.is_some()),
        ];
        let given: Vec<&str> = sources
            .iter()
            .filter(|(_, p)| *p)
            .map(|(k, _)| *k)
            .collect();
        if given.len() != 1 {
            self.error(
                &at("name"),
                format!(
                    "issuer '{}' needs exactly one key source of jwks_uri, jwks_file, secret_env, secret_file (found {})",
                    raw.name,
                    if given.is_empty() { "none".to_owned() } else { given.join(", ") }
                ),
            );
            return None;
        }
        let secret = raw.secret_env.is_some() || raw.secret_file.is_some();
        if secret && asymmetric {
            self.error(&at("algorithms"), "an HMAC secret verifies only HS256/HS384/HS512; asymmetric algorithms need jwks_uri or jwks_file".into());
        }
        if !secret && hmac {
            self.error(&at("algorithms"), "HS256/384/512 need a shared secret (secret_env or secret_file), never a JWKS: a public key used as an HMAC secret is the classic algorithm-confusion attack".into());
        }
        if kind == Some(RawIssuerKind::Service) {
            // JWT-SVID shape (docs/security.md): asymmetric algorithms only, `aud` required.
            if algorithms
                .iter()
                .any(|a| !east_west::is_jwt_svid_algorithm(*a))
            {
                self.error(
                    &at("algorithms"),
                    "service tokens are JWT-SVIDs: use RS256/384/512, PS256/384/512 or ES256/384"
                        .into(),
                );
            }
            if raw.audiences.is_empty() {
                self.error(&at("audiences"), "service tokens must name their audience: list ours, e.g. [spiffe://example.org]".into());
            }
        }
        let leeway = self.duration(&at("leeway"), raw.leeway.as_ref(), DEFAULT_LEEWAY);
        let credentials = match &raw.credentials {
            None => vec![Credential::Header {
                name: "authorization".into(),
                prefix: Some("Bearer ".into()),
            }],
            Some(list) => list
                .iter()
                .filter_map(|c| match credential(c) {
                    Ok(c) => Some(c),
                    Err(why) => {
                        self.error(&at("credentials"), why);
                        None
                    }
                })
                .collect(),
        };
        let keys = if let Some(uri) = &raw.jwks_uri {
            if let Err(why) = check_jwks_uri(uri) {
                self.error(&at("jwks_uri"), why);
            }
            let defaults = JwksTiming::default();
            let timing = JwksTiming {
                default_ttl: self.duration(
                    &at("jwks_refresh"),
                    raw.jwks_refresh.as_ref(),
                    defaults.default_ttl,
                ),
                min_refetch: self.duration(
                    &at("jwks_min_refetch"),
                    raw.jwks_min_refetch.as_ref(),
                    defaults.min_refetch,
                ),
                timeout: self.duration(
                    &at("jwks_timeout"),
                    raw.jwks_timeout.as_ref(),
                    defaults.timeout,
                ),
            };
            KeySpec::Remote {
                uri: uri.clone(),
                timing,
            }
        } else if let Some(file) = &raw.jwks_file {
            let path = base.join(file);
            let loaded = std::fs::read(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|bytes| {
                    let (set, skipped) = KeySet::from_jwks(&bytes).map_err(|e| e.to_string())?;
                    if set.is_empty() {
                        Err(format!(
                            "no usable key in {} ({})",
                            path.display(),
                            skipped.join("; ")
                        ))
                    } else {
                        Ok(KeySpec::Static {
                            keys: Arc::new(set),
                            fingerprint: fingerprint("jwks", &bytes),
                        })
                    }
                });
            match loaded {
                Ok(spec) => spec,
                Err(why) => {
                    self.error(&at("jwks_file"), why);
                    return None;
                }
            }
        } else {
            let (key, secret) = match (&raw.secret_env, &raw.secret_file) {
                (Some(var), _) => (
                    "secret_env",
                    std::env::var(var).map(String::into_bytes).map_err(|_| {
                        format!("environment variable {var} is not set: export the issuer's HMAC secret there")
                    }),
                ),
                (_, Some(file)) => {
                    let path = base.join(file);
                    (
                        "secret_file",
                        std::fs::read(&path)
                            .map(|mut bytes| {
                                // A trailing newline is an editor's, not the secret's.
                                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                                    bytes.pop();
                                }
                                bytes
                            })
                            .map_err(|e| format!("cannot read {}: {e}", path.display())),
                    )
                }
                _ => return None,
            };
            let loaded = secret.and_then(|s| {
                let key = VerificationKey::hmac(&s).map_err(|e| e.to_string())?;
                Ok(KeySpec::Static {
                    keys: Arc::new(KeySet::new(vec![key])),
                    fingerprint: fingerprint("hmac", &s),
                })
            });
            match loaded {
                Ok(spec) => spec,
                Err(why) => {
                    self.error(&at(key), why);
                    return None;
                }
            }
        };
        if self.errors.len() > before {
            return None;
        }
        Some(IssuerConfig {
            name: raw.name.clone(),
            kind: match kind? {
                RawIssuerKind::User => IssuerKind::User,
                RawIssuerKind::Service => IssuerKind::Service,
            },
            rules: ClaimRules {
                issuer: raw.issuer.as_str().into(),
                audiences: raw.audiences.clone(),
                authorized_parties: raw.authorized_parties.clone(),
                leeway,
            },
            algorithms,
            credentials,
            keys,
        })
    }

    /// `server.tls`: every file readable, and together a usable TLS identity.
    fn tls(&mut self, raw: &raw::RawTls, base: &Path) -> Option<TlsConfig> {
        let at = |key: &str| [Key::field("server"), Key::field("tls"), Key::field(key)];
        let mut given = true;
        for (key, path, what) in [
            (
                "cert",
                &raw.cert,
                "the certificate chain, e.g. certs/portcullis/chain.pem",
            ),
            (
                "key",
                &raw.key,
                "its private key, e.g. certs/portcullis/key.pem",
            ),
        ] {
            if path.is_empty() {
                given = false;
                self.error(&at(key), format!("`{key}` is required: {what}"));
            }
        }
        if !given {
            return None;
        }
        let config = TlsConfig {
            cert: base.join(&raw.cert),
            key: base.join(&raw.key),
            client_ca: raw.client_ca.as_ref().map(|ca| base.join(ca)),
        };
        let mut readable = true;
        for (key, path) in [
            ("cert", Some(&config.cert)),
            ("key", Some(&config.key)),
            ("client_ca", config.client_ca.as_ref()),
        ] {
            if let Some(Err(e)) = path.map(std::fs::metadata) {
                readable = false;
                let path = path.map(|p| p.display().to_string()).unwrap_or_default();
                self.error(
                    &at(key),
                    format!("cannot read {path}: {e} (issue one with `portcullis cert issue`)"),
                );
            }
        }
        if !readable {
            return None;
        }
        match crate::tls::server_config(&config) {
            Ok(_) => Some(config),
            Err(e) => {
                self.error(&at(e.key()), e.to_string());
                None
            }
        }
    }

    fn duration(
        &mut self,
        path: &[Key],
        checked: Option<&Checked<ConfigDuration>>,
        default: Duration,
    ) -> Duration {
        checked
            .and_then(|c| self.value(path, c))
            .map_or(default, |d| d.0)
    }

    /// A duration where zero makes no sense.
    fn positive_duration(
        &mut self,
        path: &[Key],
        checked: Option<&Checked<ConfigDuration>>,
        default: Duration,
    ) -> Duration {
        let duration = self.duration(path, checked, default);
        if duration.is_zero() {
            self.error(
                path,
                format!("must be longer than zero (the default is {default:?})"),
            );
        }
        duration
    }

    /// `server.http`.
    fn http_limits(&mut self, raw: &raw::RawHttp) -> HttpLimits {
        let at = |key: &str| [Key::field("server"), Key::field("http"), Key::field(key)];
        let defaults = HttpLimits::default();
        let limits = HttpLimits {
            header_read_timeout: self.positive_duration(
                &at("header_read_timeout"),
                raw.header_read_timeout.as_ref(),
                defaults.header_read_timeout,
            ),
            idle_timeout: self.positive_duration(
                &at("idle_timeout"),
                raw.idle_timeout.as_ref(),
                defaults.idle_timeout,
            ),
            max_connections: raw
                .max_connections
                .as_ref()
                .and_then(|c| self.value(&at("max_connections"), c))
                .unwrap_or(defaults.max_connections),
        };
        if limits.max_connections == 0 {
            self.error(
                &at("max_connections"),
                format!(
                    "must be at least 1 (the default is {})",
                    defaults.max_connections
                ),
            );
        }
        limits
    }

    /// `token_cache`.
    fn token_cache(&mut self, raw: &raw::RawTokenCache) -> TokenCacheConfig {
        let at = |key: &str| [Key::field("token_cache"), Key::field(key)];
        let defaults = TokenCacheConfig::default();
        let mut size = |key: &str, checked: Option<&Checked<ByteSize>>, default: u64, min: u64| {
            let size = checked
                .and_then(|c| self.value(&at(key), c))
                .map_or(default, |b| b.0);
            if size < min {
                self.error(
                    &at(key),
                    format!(
                        "{} is too small: at least {} (the default is {})",
                        ByteSize(size),
                        ByteSize(min),
                        ByteSize(default)
                    ),
                );
            }
            size
        };
        let max_bytes = size(
            "max_bytes",
            raw.max_bytes.as_ref(),
            defaults.max_bytes,
            MIN_TOKEN_CACHE_BYTES,
        );
        let max_token_bytes = size(
            "max_token_bytes",
            raw.max_token_bytes.as_ref(),
            defaults.max_token_bytes as u64,
            MIN_CACHED_TOKEN_BYTES,
        );
        let max_token_bytes = usize::try_from(max_token_bytes).unwrap_or_else(|_| {
            self.error(
                &at("max_token_bytes"),
                format!(
                    "{} does not fit this machine's memory",
                    ByteSize(max_token_bytes)
                ),
            );
            defaults.max_token_bytes
        });
        TokenCacheConfig {
            max_bytes,
            max_token_bytes,
        }
    }

    fn unique_issuers(&mut self, issuers: &[RawIssuer]) {
        for (i, a) in issuers.iter().enumerate() {
            if issuers[..i].iter().any(|b| b.name == a.name) {
                self.error(
                    &[Key::field("issuers"), Key::Index(i), Key::field("name")],
                    format!("duplicate issuer name '{}'", a.name),
                );
            }
            if issuers[..i].iter().any(|b| b.issuer == a.issuer) {
                self.error(
                    &[Key::field("issuers"), Key::Index(i), Key::field("issuer")],
                    format!(
                        "two issuers claim iss '{}': a token could not be attributed",
                        a.issuer
                    ),
                );
            }
        }
    }

    fn headers(&mut self, raw: &raw::RawHeaders) -> HeadersConfig {
        let mut user = Vec::new();
        for (name, field) in &raw.user {
            let at = [Key::field("headers"), Key::field("user"), Key::field(name)];
            if !is_header_name(name) {
                self.error(&at, format!("{name:?} is not a lower-case header name"));
                continue;
            }
            match ContextField::parse(field) {
                Some(f) => user.push((name.clone(), f)),
                None => self.error(
                    &at,
                    format!(
                        "{field:?} is not a context field: write user.<field> or token.<claim>"
                    ),
                ),
            }
        }
        let service = self.service_headers(&raw.service);
        for prefix in &raw.strip_prefixes {
            if prefix.is_empty() || prefix.to_ascii_lowercase() != *prefix {
                self.error(
                    &[Key::field("headers"), Key::field("strip_prefixes")],
                    format!("{prefix:?}: prefixes must be non-empty and lower-case"),
                );
            }
        }
        if !is_header_name(&raw.request_id) {
            self.error(
                &[Key::field("headers"), Key::field("request_id")],
                format!("{:?} is not a lower-case header name", raw.request_id),
            );
        }
        let internal_token = raw
            .internal_token
            .as_ref()
            .and_then(|c| self.value(&[Key::field("headers"), Key::field("internal_token")], c))
            .unwrap_or(false);
        HeadersConfig {
            strip_prefixes: raw.strip_prefixes.clone(),
            user,
            service,
            request_id: raw.request_id.clone(),
            internal_token,
        }
    }

    fn users(&mut self, raw: &raw::RawUsers, base: &Path) -> DirectoryConfig {
        let at = |key: &str| [Key::field("users"), Key::field(key)];
        let defaults = DirectoryConfig::default();
        let source = match raw.source.as_str() {
            "claims" => Source::Claims,
            s if s.starts_with("sqlite://") => Source::Sqlite(base.join(&s["sqlite://".len()..])),
            s if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
                if reqwest::Url::parse(s).is_ok_and(|u| u.password().is_some()) {
                    self.error(&at("source"), "the PostgreSQL URL holds a password: secrets never go in the config text; drop it from the URL and set PGPASSWORD".into());
                }
                Source::Postgres(s.to_owned())
            }
            s if (s.starts_with("http://") || s.starts_with("https://")) && s.contains("{sub}") => {
                Source::Http(s.to_owned())
            }
            other => {
                self.error(&at("source"), format!("{other:?} is not a user directory: write claims, sqlite://PATH, postgres://HOST/DB or http(s)://HOST/users/{{sub}}"));
                Source::Claims
            }
        };
        let sql = matches!(source, Source::Sqlite(_) | Source::Postgres(_));
        match (&raw.query, sql) {
            (None, true) => self.error(&at("source"), "a SQL directory needs `users.query`, e.g. SELECT id, role FROM users WHERE clerk_id = $1".into()),
            (Some(_), false) => self.error(&at("query"), "`users.query` only applies to sqlite:// and postgres:// sources".into()),
            _ => {}
        }
        let cache = raw.cache.as_ref();
        let cache_key = |key: &str| [Key::field("users"), Key::field("cache"), Key::field(key)];
        DirectoryConfig {
            source,
            query: raw.query.clone(),
            ttl: self.duration(
                &cache_key("ttl"),
                cache.and_then(|c| c.ttl.as_ref()),
                defaults.ttl,
            ),
            negative_ttl: self.duration(
                &cache_key("negative_ttl"),
                cache.and_then(|c| c.negative_ttl.as_ref()),
                defaults.negative_ttl,
            ),
            max_entries: cache
                .and_then(|c| c.max_entries.as_ref())
                .and_then(|m| self.value(&cache_key("max_entries"), m))
                .unwrap_or(defaults.max_entries),
            on_unknown: match raw
                .on_unknown
                .as_ref()
                .and_then(|o| self.value(&at("on_unknown"), o))
            {
                None | Some(raw::RawOnUnknown::Deny) => OnUnknown::Deny,
                Some(raw::RawOnUnknown::Claims) => OnUnknown::Claims,
            },
            timeout: self.duration(&at("timeout"), raw.timeout.as_ref(), defaults.timeout),
        }
    }

    /// `state.redis`, with the password from the environment (never from the
    /// config text): the URL portcullis connects to. Never logged.
    fn redis(&mut self, url: &str, password_env: Option<&str>) -> Option<RedisUrl> {
        let at = [Key::field("state"), Key::field("redis")];
        let parsed = match reqwest::Url::parse(url) {
            Ok(parsed) if parsed.scheme() == "redis" => parsed,
            Ok(parsed) if parsed.scheme() == "rediss" => {
                self.error(&at, "rediss:// (TLS) is not supported by this build: reach Redis over a private network or a TLS sidecar with redis://".into());
                return None;
            }
            _ => {
                self.error(
                    &at,
                    format!("{url:?} is not a Redis URL: write redis://HOST:PORT"),
                );
                return None;
            }
        };
        if parsed.password().is_some() {
            self.error(&at, "the Redis URL holds a password: secrets never go in the config text; drop it from the URL and set REDIS_PASSWORD (or the variable named by state.password_env)".into());
            return None;
        }
        let variable = password_env.unwrap_or("REDIS_PASSWORD");
        let mut with_password = parsed;
        let password = match std::env::var(variable) {
            Ok(password) => Some(password).filter(|p| !p.is_empty()),
            Err(_) if password_env.is_some() => {
                self.error(
                    &[Key::field("state"), Key::field("password_env")],
                    format!(
                        "environment variable {variable} is not set: export Redis' password there"
                    ),
                );
                return None;
            }
            Err(_) => None,
        };
        if let Some(password) = password {
            if with_password.set_password(Some(&password)).is_err() {
                self.error(&at, "this Redis URL cannot carry a password".into());
                return None;
            }
        }
        Some(RedisUrl(with_password.to_string()))
    }

    fn webhooks(&mut self, raw: &raw::RawWebhooks, base: &Path) -> Option<WebhookSecret> {
        let clerk = raw.clerk.as_ref()?;
        let at = |key: &str| [Key::field("webhooks"), Key::field("clerk"), Key::field(key)];
        let (key, secret) = match (&clerk.secret_env, &clerk.secret_file) {
            (Some(var), None) => ("secret_env", std::env::var(var).map_err(|_| format!("environment variable {var} is not set: export the Clerk webhook signing secret (whsec_...) there"))),
            (None, Some(file)) => {
                let path = base.join(file);
                ("secret_file", std::fs::read_to_string(&path).map(|s| s.trim().to_owned()).map_err(|e| format!("cannot read {}: {e}", path.display())))
            }
            _ => {
                self.error(&[Key::field("webhooks"), Key::field("clerk")], "give exactly one of secret_env, secret_file".into());
                return None;
            }
        };
        match secret.and_then(|s| WebhookSecret::parse(&s)) {
            Ok(secret) => Some(secret),
            Err(why) => {
                self.error(&at(key), why);
                None
            }
        }
    }
}

fn credential(raw: &RawCredential) -> Result<Credential, String> {
    match (&raw.header, &raw.cookie, &raw.query) {
        (Some(name), None, None) => {
            let name = name.to_ascii_lowercase();
            if !is_header_name(&name) {
                return Err(format!("{name:?} is not a header name"));
            }
            let prefix = match &raw.prefix {
                Some(p) if p.is_empty() => None,
                Some(p) => Some(p.clone()),
                None if name == "authorization" => Some("Bearer ".into()),
                None => None,
            };
            Ok(Credential::Header { name, prefix })
        }
        (None, Some(name), None) if raw.prefix.is_none() => Ok(Credential::Cookie { name: name.clone() }),
        (None, None, Some(name)) if raw.prefix.is_none() => Ok(Credential::Query { name: name.clone() }),
        _ => Err("each credential is exactly one of {header: NAME[, prefix: P]}, {cookie: NAME}, {query: NAME}".into()),
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// `https` only, except for loopback (docs/security.md).
fn check_jwks_uri(uri: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(uri).map_err(|e| format!("{uri:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "{uri:?}: JWKS must be fetched over https (plain http only on loopback)"
                ))
            }
        }
        other => Err(format!("{uri:?}: unsupported scheme {other:?}, use https")),
    }
}

#[cfg(test)]
mod tests;
