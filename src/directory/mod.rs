//! The user directory (docs/configuration.md): a verified token's subject becomes the user
//! context (`user.*`) — from SQLite, PostgreSQL, an HTTP users service, or the
//! token's own claims — through a cache that coalesces concurrent lookups (one
//! query per subject however many requests wait), expires entries (`ttl`,
//! `negative_ttl`), and is told by Clerk webhooks to evict or tombstone a user.
//!
//! When the backend fails, cached entries keep serving and an uncached user gets
//! [`DirectoryError`] (the check answers 503): never an allow.

mod http;
mod sql;

use crate::clock::{millis, Clock, ExpiringSet};
use crate::metrics::{Metrics, ResultLabels};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use http::HttpBackend;
pub use sql::SqlBackend;

/// Where users come from (`users.source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No lookup: the token's claims are the context.
    Claims,
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL URL (the password may come from `PGPASSWORD`).
    Postgres(String),
    /// An HTTP users service; `{sub}` is replaced by the URL-encoded subject.
    Http(String),
}

/// What to do with a verified token whose subject the directory does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnknown {
    /// Refuse (401).
    Deny,
    /// Go on with the token's claims only.
    Claims,
}

/// `users:` of the config, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectoryConfig {
    pub source: Source,
    /// The SQL query; its one parameter is the subject.
    pub query: Option<String>,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_entries: u64,
    pub on_unknown: OnUnknown,
    /// Timeout of one lookup.
    pub timeout: Duration,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            source: Source::Claims,
            query: None,
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(30),
            max_entries: 100_000,
            on_unknown: OnUnknown::Deny,
            timeout: Duration::from_secs(2),
        }
    }
}

/// What the directory says about a subject.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The user's fields (column → value; NULL columns are absent).
    Found(Map<String, Value>),
    /// No such user.
    Unknown,
    /// Deleted (a `user.deleted` webhook) and still in the backend: refused.
    Deleted,
}

/// The directory could not answer: the check is answered 503. The detail is for
/// logs only, never for the client (it may hold an SQL error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the user directory is unavailable: {0}")]
pub struct DirectoryError(pub String);

/// One backend query's answer.
type Row = Option<Map<String, Value>>;

enum Backend {
    Claims,
    Sql(SqlBackend),
    Http(HttpBackend),
}

impl Backend {
    async fn query(&self, subject: &str) -> Result<Row, DirectoryError> {
        match self {
            Backend::Claims => Ok(None),
            Backend::Sql(sql) => sql.query(subject).await,
            Backend::Http(http) => http.query(subject).await,
        }
    }
}

/// A cache entry. A found user is kept as the JSON text of its row (one small
/// allocation, parsed per check: BENCHMARKS.md's 100,000 users fit in a few MiB).
#[derive(Clone)]
enum Cached {
    /// `until`: milliseconds since the epoch, by the directory's clock.
    Found {
        row: Arc<str>,
        until: u64,
    },
    Unknown {
        until: u64,
    },
    /// The backend failed: the lookups waiting on this query share the error;
    /// the next lookup queries again.
    Failed(DirectoryError),
}

impl Cached {
    fn fresh(&self, now: u64) -> bool {
        match self {
            Cached::Found { until, .. } | Cached::Unknown { until } => now < *until,
            Cached::Failed(_) => false,
        }
    }
}

/// How long a `user.deleted` tombstone is remembered while the backend still has
/// the user (the app deletes the row when it handles the same webhook), and,
/// with `users.source: claims`, while the user's tokens may still be presented.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Users deleted by a `user.deleted` webhook, by subject. Owned by the runtime:
/// it outlives config reloads and every directory built by them.
pub type Tombstones = ExpiringSet;

/// The directory with its cache.
pub struct UserDirectory {
    backend: Backend,
    config: DirectoryConfig,
    /// Keyed by subject. Concurrent lookups of one subject wait on one query
    /// (the cache's placeholder guard).
    cache: quick_cache::sync::Cache<Arc<str>, Cached>,
    tombstones: Arc<Tombstones>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl UserDirectory {
    /// Opens the backend with tombstones of its own and the system clock.
    pub fn open(config: DirectoryConfig, metrics: Arc<Metrics>) -> Result<Self, DirectoryError> {
        let tombstones = Arc::new(Tombstones::new(
            usize::try_from(config.max_entries).unwrap_or(usize::MAX),
            Clock::System,
        ));
        Self::open_with(config, metrics, tombstones, Clock::System)
    }

    /// Opens the backend, judging tombstones by `tombstones` (shared with the
    /// runtime) and TTLs by `clock`. SQL pools connect lazily: start never
    /// blocks on the database; readiness ([`UserDirectory::ping`]) and lookups
    /// find out.
    pub fn open_with(
        config: DirectoryConfig,
        metrics: Arc<Metrics>,
        tombstones: Arc<Tombstones>,
        clock: Clock,
    ) -> Result<Self, DirectoryError> {
        let backend = match &config.source {
            Source::Claims => Backend::Claims,
            Source::Sqlite(_) | Source::Postgres(_) => Backend::Sql(SqlBackend::open(&config)?),
            Source::Http(template) => Backend::Http(HttpBackend::new(template, config.timeout)),
        };
        let cache = quick_cache::sync::Cache::new(
            usize::try_from(config.max_entries).unwrap_or(usize::MAX),
        );
        Ok(Self {
            backend,
            cache,
            tombstones,
            config,
            metrics,
            clock,
        })
    }

    pub fn config(&self) -> &DirectoryConfig {
        &self.config
    }

    /// True when the context comes from the token alone.
    pub fn is_claims(&self) -> bool {
        matches!(self.backend, Backend::Claims)
    }

    /// Looks `subject` up through the cache. Concurrent lookups of one uncached
    /// subject share one backend query.
    pub async fn lookup(&self, subject: &Arc<str>) -> Result<Lookup, DirectoryError> {
        let now = self.clock.unix_millis();
        let cached = match self.cache.get(subject) {
            Some(hit) if hit.fresh(now) => {
                self.metrics.cache_lookup("user", true);
                hit
            }
            stale => {
                if stale.is_some() {
                    self.cache.remove_if(subject, |entry| !entry.fresh(now));
                }
                self.metrics.cache_lookup("user", false);
                match self.cache.get_value_or_guard_async(subject).await {
                    // Another lookup's query answered while this one waited.
                    Ok(entry) => entry,
                    Err(guard) => {
                        let entry = self.query(subject).await;
                        let _ = guard.insert(entry.clone());
                        if let Cached::Failed(_) = entry {
                            // Shared with the waiters above, never served later.
                            self.cache
                                .remove_if(subject, |e| matches!(e, Cached::Failed(_)));
                        }
                        entry
                    }
                }
            }
        };
        let tombstoned = self.tombstones.contains(subject);
        Ok(match cached {
            Cached::Failed(e) => return Err(e),
            Cached::Found { .. } if tombstoned => Lookup::Deleted,
            Cached::Found { row, .. } => Lookup::Found(
                serde_json::from_str(&row)
                    .map_err(|e| DirectoryError(format!("a cached row does not parse: {e}")))?,
            ),
            // With `on_unknown: claims` an unknown user still passes on its
            // token's claims: a deleted one must not, until the tombstone ends.
            Cached::Unknown { .. } if tombstoned && self.config.on_unknown == OnUnknown::Claims => {
                Lookup::Deleted
            }
            Cached::Unknown { .. } => {
                if tombstoned {
                    // The backend caught up with the deletion.
                    self.tombstones.remove(subject);
                }
                Lookup::Unknown
            }
        })
    }

    async fn query(&self, subject: &str) -> Cached {
        let started = Instant::now();
        let result = tokio::time::timeout(self.config.timeout, self.backend.query(subject))
            .await
            .unwrap_or_else(|_| {
                Err(DirectoryError(format!(
                    "lookup timed out after {:?}",
                    self.config.timeout
                )))
            });
        self.metrics
            .directory_query_duration
            .observe(started.elapsed().as_secs_f64());
        let label = if result.is_ok() { "success" } else { "error" };
        self.metrics
            .directory_queries
            .get_or_create(&ResultLabels { result: label })
            .inc();
        let now = self.clock.unix_millis();
        match result {
            Ok(Some(fields)) => Cached::Found {
                row: Value::Object(fields).to_string().into(),
                until: now.saturating_add(millis(self.config.ttl)),
            },
            Ok(None) => Cached::Unknown {
                until: now.saturating_add(millis(self.config.negative_ttl)),
            },
            Err(e) => {
                tracing::warn!(error = %e.0, "user directory lookup failed");
                Cached::Failed(e)
            }
        }
    }

    /// Drops the cached entry of `subject` (a `user.updated` webhook): the next
    /// check reads the backend again.
    pub async fn evict(&self, subject: &str) {
        self.cache.remove(subject);
    }

    /// Marks `subject` deleted (a `user.deleted` webhook): refused at once, until
    /// the backend no longer has the user.
    pub async fn tombstone(&self, subject: &str) {
        self.tombstones.insert(subject, TOMBSTONE_TTL);
        self.cache.remove(subject);
    }

    /// Whether a `user.deleted` webhook refused `subject` (for `source: claims`,
    /// which never looks users up).
    pub fn is_tombstoned(&self, subject: &str) -> bool {
        self.tombstones.contains(subject)
    }

    /// Whether the backend answers (readiness).
    pub async fn ping(&self) -> bool {
        match &self.backend {
            Backend::Claims => true,
            Backend::Sql(sql) => tokio::time::timeout(self.config.timeout, sql.ping())
                .await
                .unwrap_or(false),
            Backend::Http(_) => true,
        }
    }
}
