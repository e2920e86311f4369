//! `scope: global` buckets in Redis (`state.redis`), shared by every replica.
//!
//! One check is one round trip: `EVALSHA` of [`SCRIPT`] (the same GCRA as
//! `gcra.rs`) on a multiplexed connection, so concurrent checks are pipelined
//! and nothing is locked. The script is loaded when the connection opens; a
//! Redis that lost it (restarted, `SCRIPT FLUSH`) answers `NOSCRIPT`, and
//! redis-rs then runs `SCRIPT LOAD` and the `EVALSHA` again (two more round
//! trips, once). The script is given the time by the caller (this process'
//! [`Clock`](crate::clock::Clock), in µs), so it computes exactly what the
//! local buckets compute and tests move time instead of sleeping; replicas'
//! clocks must agree (NTP): a replica ahead by δ grants up to min(δ/T, burst)
//! extra requests (docs/rate-limits.md, "Time").
//!
//! A circuit breaker keeps a slow or absent Redis from costing every check:
//! a check waits at most [`TIMEOUT`]; on a timeout or a lost connection, global
//! limits count in the local buckets for a hold-down ([`FIRST_HOLD`], doubling
//! to [`MAX_HOLD`]; back to the first only after a connection served
//! [`HEALTHY_FOR`]), then one task opens a new connection and re-enables Redis
//! only if a PING on it answers within [`TIMEOUT`]. Checks never wait for it.
//! An error Redis *answers* (`OOM`, `WRONGTYPE`, `BUSY`, `READONLY`) says the
//! connection works: that one check counts locally, and the connection stays.
//! The outage is logged once when it starts and once when it ends, each
//! fallen-back check is counted, and [`GlobalBuckets::status`] tells `/readyz`.

use super::gcra::{Gcra, Verdict};
use super::local::BucketId;
use crate::metrics::Metrics;
use crate::policy::LimitPer;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The longest a check waits for Redis before counting locally: a script run
/// on a healthy Redis on the same network answers in well under a
/// millisecond, and this is paid by every check while Redis is slow but not
/// yet declared out (then the breaker opens). A call that timed out may still
/// have counted in Redis.
pub const TIMEOUT: Duration = Duration::from_millis(20);
/// The first hold-down after a failure (global limits count locally)...
const FIRST_HOLD: Duration = Duration::from_millis(100);
/// ...doubling after each failed probe up to this.
const MAX_HOLD: Duration = Duration::from_secs(5);
/// A connection that served this long before failing was healthy: the next
/// outage's hold-down starts again from [`FIRST_HOLD`]. A Redis that keeps
/// failing soon after each recovery keeps the longer hold-downs.
const HEALTHY_FOR: Duration = Duration::from_secs(30);
/// A connect attempt (and loading the script) gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often an idle connection is PINGed, so an outage shows on `/readyz` and
/// the next check does not have to find it out.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Said once when an outage starts.
const OUTAGE: &str =
    "rate limits: Redis unreachable; global limits count locally in each replica until it answers";

/// Where every bucket lives in Redis: `portcullis:ratelimit:RULE:PER:ID`.
pub const KEY_PREFIX: &str = "portcullis:ratelimit:";

/// GCRA in one step. KEYS[1]: the bucket (its TAT, µs). ARGV: now (µs, the
/// caller's clock), the emission interval T (µs), the tolerance τ (µs).
/// Returns `{allowed, retry_after, reset}` (µs). The stored TAT is clamped as
/// [`Gcra::clamp`] does: garbage (not a number, NaN, infinite, negative) is a
/// fresh bucket, a TAT more than a window ahead is read (and rewritten) as one
/// window ahead. The TAT is written with `%d`: Redis would print a number
/// this large as `1.7e+15` and lose the microseconds.
pub const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local window = tolerance + interval
local stored = tonumber(redis.call('GET', KEYS[1]))
local tat = stored
if tat == nil or tat ~= tat or tat == math.huge or tat < 0 then tat = now end
if tat < now then tat = now end
if tat > now + window then tat = now + window end
if now < tat - tolerance then
  if stored ~= tat then
    redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
  end
  return {0, tat - tolerance - now, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, 0, new_tat - now}
";

/// Why a global check was answered locally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// The connection to Redis and what is known about it.
struct Link {
    /// Set while global limits count in Redis; `None` during a hold-down.
    connection: Option<redis::aio::MultiplexedConnection>,
    /// Counts connections: a failure reported on an old one is not news.
    generation: u64,
    /// Why global limits count locally, while they do.
    error: Option<String>,
    /// The last error Redis answered (logged when it changes, not per check).
    server_error: Option<String>,
    recovering: bool,
    /// When the current connection went into service.
    since: Instant,
    /// The next hold-down.
    hold: Duration,
}

/// How global limits are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Counting {
    /// In Redis, shared by every replica.
    Redis,
    /// Each replica on its own until Redis answers again.
    LocalFallback,
}

/// How the global limits are counted right now (`/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GlobalStatus {
    pub counting: Counting,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The buckets of one Redis (`state.redis`), kept by the runtime while the URL
/// stays the same. Its background tasks hold it weakly: they end once the
/// runtime drops it (the URL changed).
pub struct GlobalBuckets {
    /// May hold the password (`state.password_env`): compared, never logged.
    url: String,
    /// `None`: the URL is not one (then limits count locally, saying why).
    client: Option<redis::Client>,
    script: redis::Script,
    link: Mutex<Link>,
    metrics: Arc<Metrics>,
}

impl GlobalBuckets {
    /// Starts connecting to `url` in the background (needs a tokio runtime).
    pub fn connect(url: &str, metrics: Arc<Metrics>) -> Arc<Self> {
        let client = redis::Client::open(url);
        let error = match &client {
            Ok(_) => "connecting".to_owned(),
            Err(e) => format!("invalid Redis URL: {e}"),
        };
        let buckets = Arc::new(Self {
            url: url.to_owned(),
            script: redis::Script::new(SCRIPT),
            link: Mutex::new(Link {
                connection: None,
                generation: 0,
                error: Some(error),
                server_error: None,
                recovering: client.is_ok(),
                since: Instant::now(),
                hold: FIRST_HOLD,
            }),
            client: client.ok(),
            metrics,
        });
        if buckets.client.is_some() {
            tokio::spawn(recover(Arc::downgrade(&buckets), Duration::ZERO));
            tokio::spawn(watch(Arc::downgrade(&buckets)));
        }
        buckets
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request at `now` (µs) in bucket `key`, or says why Redis could
    /// not (the caller then counts locally).
    pub async fn check(
        self: &Arc<Self>,
        gcra: &Gcra,
        key: &str,
        now: u64,
    ) -> Result<Verdict, Unreachable> {
        let (connection, generation) = {
            let link = self.link();
            match &link.connection {
                Some(connection) => (connection.clone(), link.generation),
                None => {
                    let error = link.error.clone().unwrap_or_default();
                    return Err(Unreachable(error));
                }
            }
        };
        let mut connection = connection;
        let started = Instant::now();
        let mut invocation = self.script.key(key);
        invocation
            .arg(now)
            .arg(gcra.interval())
            .arg(gcra.tolerance());
        let answer = tokio::time::timeout(
            TIMEOUT,
            invocation.invoke_async::<(u8, u64, u64)>(&mut connection),
        )
        .await;
        self.metrics
            .rate_limit_redis_duration
            .observe(started.elapsed().as_secs_f64());
        let error = match answer {
            Ok(Ok((1, _, reset))) => return Ok(gcra.allowed(reset)),
            Ok(Ok((_, retry_after, reset))) => return Ok(gcra.limited(retry_after, reset)),
            Ok(Err(e)) if !breaks_connection(&e) => {
                let error = e.to_string();
                self.answered_error(&error);
                return Err(Unreachable(error));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", TIMEOUT.as_millis()),
        };
        self.lost(generation, error.clone());
        Err(Unreachable(error))
    }

    /// Redis answered an error (full, busy, a replica, a key of another
    /// type): the connection works, so it stays; logged when it changes.
    fn answered_error(&self, error: &str) {
        let mut link = self.link();
        if link.server_error.as_deref() != Some(error) {
            tracing::warn!(%error, "rate limits: Redis refused a global check; that check counts locally");
            link.server_error = Some(error.to_owned());
        }
    }

    /// Drops connection `generation` after a timeout or a lost connection:
    /// global limits count locally for a hold-down, then Redis is probed.
    fn lost(self: &Arc<Self>, generation: u64, error: String) {
        let mut link = self.link();
        if link.generation != generation || link.connection.is_none() {
            return;
        }
        tracing::warn!(%error, "{OUTAGE}");
        link.connection = None;
        link.error = Some(error);
        if link.since.elapsed() >= HEALTHY_FOR {
            link.hold = FIRST_HOLD;
        }
        if !link.recovering {
            link.recovering = true;
            let hold = next_hold(&mut link);
            tokio::spawn(recover(Arc::downgrade(self), hold));
        }
    }

    /// A new connection with the script loaded, in service only if a PING on
    /// it answers within [`TIMEOUT`] (a Redis that accepts connections but
    /// answers slowly stays out).
    async fn probe(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let Some(client) = &self.client else {
            return Err("no Redis URL".into());
        };
        // TCP_NODELAY: pipelined checks must not wait for Nagle's algorithm (the
        // crate leaves it off unless built with its `tcp_nodelay` feature).
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(CONNECT_TIMEOUT)
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        // Loaded once per connection, so checks run EVALSHA straight away.
        self.script
            .load_async(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        ping(&mut connection).await?;
        Ok(connection)
    }

    /// How global limits are counted right now.
    pub fn status(&self) -> GlobalStatus {
        let link = self.link();
        match &link.connection {
            Some(_) => GlobalStatus {
                counting: Counting::Redis,
                error: None,
            },
            None => GlobalStatus {
                counting: Counting::LocalFallback,
                error: link.error.clone(),
            },
        }
    }
}

/// Whether `error` means the connection cannot be trusted any more (I/O,
/// closed, timed out, a reply that cannot be read), rather than an error
/// Redis answered on a working connection.
fn breaks_connection(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_unrecoverable_error()
}

/// The hold-down to wait now, doubling the next one.
fn next_hold(link: &mut Link) -> Duration {
    let hold = link.hold;
    link.hold = (hold * 2).min(MAX_HOLD);
    hold
}

/// PING within [`TIMEOUT`].
async fn ping(connection: &mut redis::aio::MultiplexedConnection) -> Result<(), String> {
    match tokio::time::timeout(
        TIMEOUT,
        redis::cmd("PING").query_async::<String>(connection),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer to PING within {} ms",
            TIMEOUT.as_millis()
        )),
    }
}

/// Waits `hold`, then probes Redis until it answers in time, waiting a
/// longer hold-down after each failed probe. Ends when the buckets are
/// dropped.
async fn recover(buckets: Weak<GlobalBuckets>, mut hold: Duration) {
    loop {
        tokio::time::sleep(hold).await;
        let Some(buckets) = buckets.upgrade() else {
            return;
        };
        match buckets.probe().await {
            Ok(connection) => {
                let mut link = buckets.link();
                let was_down = link.generation > 0;
                link.connection = Some(connection);
                link.generation += 1;
                link.error = None;
                link.server_error = None;
                link.recovering = false;
                link.since = Instant::now();
                if was_down {
                    tracing::info!(
                        "rate limits: Redis answers again; global limits count in Redis"
                    );
                } else {
                    tracing::info!("rate limits: global limits count in Redis");
                }
                return;
            }
            Err(error) => {
                let mut link = buckets.link();
                if link.generation == 0 && hold.is_zero() {
                    // Unreachable from the start: said once, like an outage.
                    tracing::warn!(%error, "{OUTAGE}");
                } else {
                    tracing::debug!(%error, retry_in_ms = link.hold.as_millis() as u64,
                        "rate limits: Redis still unreachable");
                }
                link.error = Some(error);
                hold = next_hold(&mut link);
            }
        }
    }
}

/// PINGs the connection every [`WATCH_INTERVAL`] while the buckets exist.
async fn watch(buckets: Weak<GlobalBuckets>) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let Some(buckets) = buckets.upgrade() else {
            return;
        };
        let current = {
            let link = buckets.link();
            link.connection.clone().map(|c| (c, link.generation))
        };
        let Some((mut connection, generation)) = current else {
            continue;
        };
        if let Err(error) = ping(&mut connection).await {
            buckets.lost(generation, error);
        }
    }
}

/// The Redis key of bucket `id` of `rule` (`per` names the key kind): the rule
/// and kind for whoever looks at Redis, the key itself only as a hash.
pub fn redis_key(rule: &str, per: LimitPer, id: BucketId) -> String {
    format!("{KEY_PREFIX}{rule}:{}:{id:032x}", per.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hold_no_raw_value() {
        assert_eq!(
            redis_key("videos-read", LimitPer::User, 0xabc),
            "portcullis:ratelimit:videos-read:user:00000000000000000000000000000abc"
        );
    }
}
