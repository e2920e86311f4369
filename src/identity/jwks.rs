//! Remote JWKS (docs/configuration.md, issuers): fetched at start without blocking start, refreshed by
//! TTL (`Cache-Control: max-age`, else the configured default), refetched when a
//! token names an unknown `kid` — at most once per `min_refetch` per issuer, all
//! waiting requests sharing that one fetch — and the last good key set kept when
//! a fetch fails. Responses are bounded in size and time.

use super::keys::KeySet;
use crate::metrics::{FetchLabels, Metrics};
use arc_swap::ArcSwapOption;
use std::sync::Arc;
use std::time::Duration;
// tokio's clock, so tests can pause and move it (`tokio::time::pause`).
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A JWKS larger than this is refused (a real one is a few KiB).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Never refresh more often than this, whatever `max-age` says.
const MIN_TTL: Duration = Duration::from_secs(30);
/// Never keep a key set longer than this without refreshing.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Timing knobs of one remote key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksTiming {
    /// Refresh interval when the response has no `max-age`.
    pub default_ttl: Duration,
    /// Minimum interval between unknown-`kid` refetches.
    pub min_refetch: Duration,
    /// Timeout of one fetch.
    pub timeout: Duration,
}

impl Default for JwksTiming {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(600),
            min_refetch: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why one fetch failed (logged and counted; the last good keys stay in use).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a usable JWKS: {0}")]
    Invalid(String),
}

/// While no key set was ever loaded, request-driven fetches are spaced by this, so
/// a JWKS outage at start does not turn every request into a fetch.
const NO_KEYS_RETRY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct RefetchTimes {
    /// The last unknown-`kid` refetch (rate-limited by `min_refetch`).
    kid: Option<Instant>,
    /// The last request-driven attempt of any kind.
    any: Option<Instant>,
}

/// The key set of one issuer, fetched from `uri`.
pub struct JwksCache {
    issuer: String,
    uri: String,
    timing: JwksTiming,
    client: reqwest::Client,
    keys: ArcSwapOption<KeySet>,
    /// Serializes request-driven fetches and remembers when they happened.
    refetch: Mutex<RefetchTimes>,
    metrics: Arc<Metrics>,
}

impl JwksCache {
    pub fn new(issuer: &str, uri: &str, timing: JwksTiming, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::seeded(issuer, uri, timing, metrics, None)
    }

    /// A cache that starts with `keys` (those of the cache it replaces on a
    /// reload that changed the issuer's name or timing but not its URI).
    pub fn seeded(
        issuer: &str,
        uri: &str,
        timing: JwksTiming,
        metrics: Arc<Metrics>,
        keys: Option<Arc<KeySet>>,
    ) -> Arc<Self> {
        let client = reqwest::Client::builder()
            .timeout(timing.timeout)
            .connect_timeout(timing.timeout)
            // A redirect could leave https or loopback: follow none.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            // Mozilla's roots, built in: the same in every image (Cargo.toml).
            .tls_certs_only(
                webpki_root_certs::TLS_SERVER_ROOT_CERTS
                    .iter()
                    .filter_map(|c| reqwest::Certificate::from_der(c).ok()),
            )
            .build()
            .unwrap_or_default();
        Arc::new(Self {
            issuer: issuer.to_owned(),
            uri: uri.to_owned(),
            timing,
            client,
            keys: ArcSwapOption::new(keys),
            refetch: Mutex::new(RefetchTimes::default()),
            metrics,
        })
    }

    /// The issuer name it counts fetches under.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn timing(&self) -> JwksTiming {
        self.timing
    }

    /// The current key set; `None` until the first successful fetch.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Starts the background task: first fetch now, then refresh by TTL; after a
    /// failure, retry with backoff (1 s doubling to 60 s) keeping the last keys.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let wait = match this.fetch_and_store().await {
                    Ok(ttl) => {
                        backoff = Duration::from_secs(1);
                        ttl
                    }
                    Err(_) => {
                        let wait = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        wait
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    }

    /// The key set after making sure `kid` was looked for: refetches when `kid` is
    /// unknown, unless a refetch happened within `min_refetch`. Concurrent callers
    /// queue on one lock; whoever comes after a fetch sees its result without
    /// fetching again.
    pub async fn refetch_for_kid(&self, kid: Option<&str>) -> Option<Arc<KeySet>> {
        let known = |set: &Option<Arc<KeySet>>| match (set, kid) {
            (Some(set), Some(kid)) => set.has_kid(kid),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let before = self.current();
        if known(&before) {
            return before;
        }
        let mut times = self.refetch.lock().await;
        let now = self.current();
        if known(&now) {
            return now;
        }
        let recently =
            |at: Option<Instant>, interval: Duration| at.is_some_and(|at| at.elapsed() < interval);
        if now.is_some() {
            // An unknown kid: at most one refetch per `min_refetch`.
            if recently(times.kid, self.timing.min_refetch) {
                return now;
            }
            times.kid = Some(Instant::now());
        } else if recently(times.any, NO_KEYS_RETRY) {
            // Never loaded and just tried: the endpoint is down, answer at once.
            return None;
        }
        times.any = Some(Instant::now());
        let _ = self.fetch_and_store().await;
        self.current()
    }

    async fn fetch_and_store(&self) -> Result<Duration, FetchError> {
        let result = self.fetch().await;
        let label = match &result {
            Ok(_) => "success",
            Err(_) => "error",
        };
        self.metrics
            .jwks_fetches
            .get_or_create(&FetchLabels {
                issuer: self.issuer.clone(),
                result: label,
            })
            .inc();
        match result {
            Ok((set, ttl)) => {
                tracing::info!(issuer = %self.issuer, keys = set.len(), ttl_s = ttl.as_secs(), "JWKS loaded");
                self.keys.store(Some(Arc::new(set)));
                Ok(ttl)
            }
            Err(e) => {
                let kept = self.current().map_or(0, |k| k.len());
                tracing::warn!(issuer = %self.issuer, uri = %self.uri, error = %e, kept_keys = kept,
                    "JWKS fetch failed; keeping the last good key set");
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Duration), FetchError> {
        let mut response = self
            .client
            .get(&self.uri)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| FetchError::Request(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let ttl = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(self.timing.default_ttl)
            .clamp(MIN_TTL, MAX_TTL);
        if response
            .content_length()
            .is_some_and(|len| len as usize > MAX_JWKS_BYTES)
        {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Request(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let (set, skipped) =
            KeySet::from_jwks(&body).map_err(|e| FetchError::Invalid(e.to_string()))?;
        for reason in skipped {
            tracing::warn!(issuer = %self.issuer, %reason, "JWKS key skipped");
        }
        if set.is_empty() {
            return Err(FetchError::Invalid("no usable key".into()));
        }
        Ok((set, ttl))
    }
}

/// `max-age` of a `Cache-Control` value; `no-store`/`no-cache` mean "as soon as
/// allowed" (the minimum TTL).
fn max_age(cache_control: &str) -> Option<Duration> {
    let mut result = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            result = secs.trim_matches('"').parse().ok().map(Duration::from_secs);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("max-age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
