//! Configuration (SPEC §3): parse → validate (every error at once, each with
//! `file:line` and what to do) → an immutable [`Config`].

pub mod dev;
mod duration;
mod east_west;
mod raw;

pub use duration::ConfigDuration;
pub use east_west::{ServiceField, TokensConfig};

use crate::directory::{DirectoryConfig, OnUnknown, Source};
use crate::identity::svix::WebhookSecret;
use crate::identity::{
    claims::ClaimRules, jwks::JwksTiming, keys::KeySet, keys::VerificationKey, mtls::MtlsSettings,
    Algorithm, Credential, IssuerKind,
};
use crate::policy::{LoadOptions, Policy};
use crate::yaml::{line_of, render, Key};
use raw::{RawConfig, RawCredential, RawIssuer, RawIssuerKind};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Clock skew tolerated on token times when an issuer sets no `leeway`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

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
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// TLS on the gRPC listener; `None`: plaintext (h2c).
    pub tls: Option<TlsConfig>,
    pub trust_domain: String,
    pub issuers: Vec<IssuerConfig>,
    pub headers: HeadersConfig,
    /// Where callers' mTLS identities come from, and the accepted trust domains.
    pub mtls: MtlsSettings,
    /// The signing key of the tokens portcullis signs (SPEC §6), when configured.
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
    pub redis: Option<String>,
}

/// `server.tls`: the files of the gRPC listener's TLS identity, absolute or
/// relative to the working directory (the config's own relative paths are
/// resolved against its directory). Checked to load at validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain, leaf first (e.g. `certs/portcullis/chain.pem`).
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// Roots that client certificates must chain to; `Some` requires one (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// One validated issuer; keys from files and secrets are already loaded.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub name: String,
    pub kind: IssuerKind,
    pub rules: ClaimRules,
    pub algorithms: Vec<Algorithm>,
    pub credentials: Vec<Credential>,
    pub keys: KeySpec,
}

#[derive(Debug, Clone)]
pub enum KeySpec {
    Static(Arc<KeySet>),
    Remote { uri: String, timing: JwksTiming },
}

/// What to put in the upstream request (SPEC §8).
#[derive(Debug, Clone)]
pub struct HeadersConfig {
    /// Client-sent headers under these prefixes are always removed.
    pub strip_prefixes: Vec<String>,
    /// Header name → context field, set on requests with a user principal.
    pub user: Vec<(String, ContextField)>,
    /// Header name → caller field, set on requests with a service principal.
    pub service: Vec<(String, ServiceField)>,
    pub request_id: String,
    /// Also forward the context as a signed JWT (SPEC §6), and accept it as the
    /// user context on east-west calls instead of `x-user-*` headers.
    pub internal_token: bool,
}

impl Default for HeadersConfig {
    /// SPEC §3's defaults: strip `x-user-`, `x-service-`, `x-portcullis-`; set
    /// `x-user-id` and `x-user-role`; keep or make `x-request-id`.
    fn default() -> Self {
        Self {
            strip_prefixes: ["x-user-", "x-service-", "x-portcullis-"]
                .map(String::from)
                .to_vec(),
            user: vec![
                ("x-user-id".into(), ContextField::User("id".into())),
                ("x-user-role".into(), ContextField::User("role".into())),
            ],
            service: vec![
                ("x-service-name".into(), ServiceField::Name),
                ("x-caller-spiffe-id".into(), ServiceField::SpiffeId),
            ],
            request_id: "x-request-id".into(),
            internal_token: false,
        }
    }
}

/// A value of the verified context, named in `headers.user` as `user.<field>` or
/// `token.<claim>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextField {
    User(String),
    Token(String),
}

impl ContextField {
    fn parse(s: &str) -> Option<Self> {
        let (scope, name) = s.split_once('.')?;
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        match scope {
            "user" if valid => Some(ContextField::User(name.to_owned())),
            "token" if valid => Some(ContextField::Token(name.to_owned())),
            _ => None,
        }
    }
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
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("{file}:{}", l.line()))
                .unwrap_or_else(|| file.to_owned());
            Error::Invalid(vec![format!("{at}: {e}")])
        })?;
        let mut v = Validator {
            file,
            text,
            errors: Vec::new(),
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
        let redis = raw.state.redis.clone();
        if let Some(url) = &redis {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                v.error(
                    &[Key::field("state"), Key::field("redis")],
                    format!("{url:?} is not a Redis URL: write redis://HOST:PORT"),
                );
            }
        }
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
        if raw.server.grpc_listen == raw.server.http_listen && raw.server.grpc_listen.port() != 0 {
            v.error(
                &[Key::field("server"), Key::field("http_listen")],
                "grpc_listen and http_listen must differ".into(),
            );
        }
        let policy_options = LoadOptions {
            trust_domain: raw.trust_domain.clone(),
            federated_trust_domains: raw.federated_trust_domains.clone(),
        };
        let (policy_file, policy) = match (&raw.policy, embedded_policy) {
            (Some(p), _) => {
                let path = base.join(p);
                match Policy::load(&path, &policy_options) {
                    Ok(policy) => (Some(path), Some(policy)),
                    Err(e) => {
                        v.errors.extend(e.errors());
                        (Some(path), None)
                    }
                }
            }
            (None, Some(text)) => match Policy::parse("<embedded policy>", text, &policy_options) {
                Ok(policy) => (None, Some(policy)),
                Err(e) => {
                    v.errors.extend(e.errors());
                    (None, None)
                }
            },
            (None, None) => {
                v.error(
                    &[Key::field("policy")],
                    "`policy:` is required: the path of the policy file (SPEC §7)".into(),
                );
                (None, None)
            }
        };
        match (v.errors.is_empty(), policy, mtls) {
            (true, Some(policy), Some(mtls)) => Ok(Config {
                grpc_listen: raw.server.grpc_listen,
                http_listen: raw.server.http_listen,
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
            }),
            _ => Err(Error::Invalid(v.errors)),
        }
    }
}

struct Validator<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<String>,
}

impl Validator<'_> {
    fn error(&mut self, path: &[Key], message: String) {
        let at = match line_of(self.text, path) {
            Some(line) => format!("{}:{line}", self.file),
            None => self.file.to_owned(),
        };
        self.errors
            .push(format!("{at}: {}: {message}", render(path)));
    }

    fn issuer(&mut self, i: usize, raw: &RawIssuer, base: &Path) -> Option<IssuerConfig> {
        let at = |key: &str| vec![Key::field("issuers"), Key::Index(i), Key::field(key)];
        let before = self.errors.len();
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
        let hmac = raw
            .algorithms
            .iter()
            .any(|a| a.family() == crate::identity::algorithm::KeyFamily::Hmac);
        let asymmetric = raw
            .algorithms
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
        if raw.kind == RawIssuerKind::Service {
            // JWT-SVID shape (SPEC §4): asymmetric algorithms only, `aud` required.
            if raw
                .algorithms
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
        let leeway = self.duration(&at("leeway"), &raw.leeway, DEFAULT_LEEWAY);
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
                    &raw.jwks_refresh,
                    defaults.default_ttl,
                ),
                min_refetch: self.duration(
                    &at("jwks_min_refetch"),
                    &raw.jwks_min_refetch,
                    defaults.min_refetch,
                ),
                timeout: self.duration(&at("jwks_timeout"), &raw.jwks_timeout, defaults.timeout),
            };
            KeySpec::Remote {
                uri: uri.clone(),
                timing,
            }
        } else if let Some(file) = &raw.jwks_file {
            let path = base.join(file);
            let loaded = std::fs::read(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|bytes| KeySet::from_jwks(&bytes).map_err(|e| e.to_string()))
                .and_then(|(set, skipped)| {
                    if set.is_empty() {
                        Err(format!(
                            "no usable key in {} ({})",
                            path.display(),
                            skipped.join("; ")
                        ))
                    } else {
                        Ok(set)
                    }
                });
            match loaded {
                Ok(set) => KeySpec::Static(Arc::new(set)),
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
            match secret.and_then(|s| VerificationKey::hmac(&s).map_err(|e| e.to_string())) {
                Ok(key) => KeySpec::Static(Arc::new(KeySet::new(vec![key]))),
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
            kind: match raw.kind {
                RawIssuerKind::User => IssuerKind::User,
                RawIssuerKind::Service => IssuerKind::Service,
            },
            rules: ClaimRules {
                issuer: raw.issuer.as_str().into(),
                audiences: raw.audiences.clone(),
                authorized_parties: raw.authorized_parties.clone(),
                leeway,
            },
            algorithms: raw.algorithms.clone(),
            credentials,
            keys,
        })
    }

    /// `server.tls`: every file readable, and together a usable TLS identity.
    fn tls(&mut self, raw: &raw::RawTls, base: &Path) -> Option<TlsConfig> {
        let at = |key: &str| [Key::field("server"), Key::field("tls"), Key::field(key)];
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

    fn duration(&mut self, path: &[Key], text: &Option<String>, default: Duration) -> Duration {
        match text.as_deref().map(str::parse::<ConfigDuration>) {
            None => default,
            Some(Ok(d)) => d.0,
            Some(Err(e)) => {
                self.error(path, e.to_string());
                default
            }
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
        HeadersConfig {
            strip_prefixes: raw.strip_prefixes.clone(),
            user,
            service,
            request_id: raw.request_id.clone(),
            internal_token: raw.internal_token,
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
                &cache.and_then(|c| c.ttl.clone()),
                defaults.ttl,
            ),
            negative_ttl: self.duration(
                &cache_key("negative_ttl"),
                &cache.and_then(|c| c.negative_ttl.clone()),
                defaults.negative_ttl,
            ),
            max_entries: cache
                .and_then(|c| c.max_entries)
                .unwrap_or(defaults.max_entries),
            on_unknown: match raw.on_unknown {
                None | Some(raw::RawOnUnknown::Deny) => OnUnknown::Deny,
                Some(raw::RawOnUnknown::Claims) => OnUnknown::Claims,
            },
            timeout: self.duration(&at("timeout"), &raw.timeout, defaults.timeout),
        }
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

/// `https` only, except for loopback (SPEC §4).
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
