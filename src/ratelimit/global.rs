//! `scope: global` buckets in Redis (`state.redis`), shared by every replica.
//!
//! One check is one round trip: `EVALSHA` of [`SCRIPT`] (the same GCRA as
//! `gcra.rs`, falling back to `EVAL` when Redis does not know the script yet)
//! on a multiplexed connection, so concurrent checks are pipelined and nothing
//! is locked. The script is given the time by the caller (this process'
//! [`Clock`](crate::clock::Clock), in µs), so it computes exactly what the local
//! buckets compute and tests move time instead of sleeping; replicas' clocks
//! must agree (NTP) — a replica behind counts strictly, never more generously
//! (the TAT never moves back).
//!
//! When Redis does not answer within [`TIMEOUT`], or the connection is gone, the
//! check is answered by the local bucket (the caller's fallback) and one task
//! reconnects with backoff ([`FIRST_RETRY`] doubling to [`MAX_RETRY`]); checks never
//! wait for it. An idle connection is PINGed every second, so an outage is
//! seen without traffic too. The outage is logged once when it starts and once when it ends,
//! each fallen-back check is counted, and [`GlobalBuckets::status`] tells
//! `/readyz`.

use super::gcra::{Gcra, Verdict};
use super::local::BucketId;
use crate::metrics::Metrics;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a check waits for Redis before counting locally.
pub const TIMEOUT: Duration = Duration::from_millis(100);
/// The first reconnect attempt after a failure...
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// ...and the longest pause between attempts.
const MAX_RETRY: Duration = Duration::from_secs(2);
/// A connect attempt gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often an idle connection is PINGed, so an outage shows on `/readyz` and
/// the next check does not have to find it out.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Where every bucket lives in Redis: `portcullis:ratelimit:RULE:PER:ID`.
pub const KEY_PREFIX: &str = "portcullis:ratelimit:";

/// GCRA in one step. KEYS[1]: the bucket (its TAT, µs). ARGV: now (µs, the
/// caller's clock), the emission interval T (µs), the tolerance τ (µs).
/// Returns `{allowed, retry_after, reset}` (µs). The TAT is written with `%d`:
/// Redis would print a number this large as `1.7e+15` and lose the microseconds.
pub const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if now < tat - tolerance then
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
    connection: Option<redis::aio::MultiplexedConnection>,
    /// Counts connections: a failure reported on an old one is not news.
    generation: u64,
    /// Why the last attempt failed, while there is no connection.
    error: Option<String>,
    reconnecting: bool,
}

/// How the global limits are counted right now (`/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GlobalStatus {
    /// `redis`: in Redis; `local-fallback`: each replica on its own until Redis answers.
    pub counting: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The buckets of one Redis (`state.redis`), kept by the runtime while the URL
/// stays the same.
pub struct GlobalBuckets {
    /// May hold the password (`state.password_env`): compared, never logged.
    url: String,
    client: redis::Client,
    script: redis::Script,
    link: Mutex<Link>,
    metrics: Arc<Metrics>,
}

impl GlobalBuckets {
    /// Starts connecting to `url` in the background (needs a tokio runtime).
    pub fn connect(url: &str, metrics: Arc<Metrics>) -> Result<Arc<Self>, redis::RedisError> {
        let buckets = Arc::new(Self {
            url: url.to_owned(),
            client: redis::Client::open(url)?,
            script: redis::Script::new(SCRIPT),
            link: Mutex::new(Link {
                connection: None,
                generation: 0,
                error: Some("connecting".into()),
                reconnecting: true,
            }),
            metrics,
        });
        tokio::spawn(Arc::clone(&buckets).reconnect());
        tokio::spawn(watch(Arc::downgrade(&buckets)));
        Ok(buckets)
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
            Ok(Ok((_, retry_after, reset))) => return Ok(Verdict::Limited { retry_after, reset }),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", TIMEOUT.as_millis()),
        };
        self.lost(generation, error.clone());
        Err(Unreachable(error))
    }

    /// Drops connection `generation` after a failure and starts reconnecting.
    fn lost(self: &Arc<Self>, generation: u64, error: String) {
        let mut link = self.link();
        if link.generation != generation || link.connection.is_none() {
            return;
        }
        tracing::warn!(%error,
            "rate limits: Redis unreachable; global limits count locally in each replica until it answers");
        link.connection = None;
        link.error = Some(error);
        if !link.reconnecting {
            link.reconnecting = true;
            tokio::spawn(Arc::clone(self).reconnect());
        }
    }

    /// Connects (and loads the script) until it works, with backoff.
    async fn reconnect(self: Arc<Self>) {
        let mut pause = FIRST_RETRY;
        let mut first = true;
        loop {
            match self.open().await {
                Ok(connection) => {
                    let mut link = self.link();
                    let was_down = link.generation > 0;
                    link.connection = Some(connection);
                    link.generation += 1;
                    link.error = None;
                    link.reconnecting = false;
                    if was_down {
                        tracing::info!(
                            "rate limits: Redis answers again; global limits count in Redis"
                        );
                    } else {
                        tracing::info!("rate limits: global limits count in Redis");
                    }
                    return;
                }
                Err(error) if first && self.link().generation == 0 => {
                    // Unreachable from the start: said once, like an outage.
                    tracing::warn!(%error,
                        "rate limits: Redis unreachable; global limits count locally in each replica until it answers");
                    self.link().error = Some(error);
                }
                Err(error) => {
                    tracing::debug!(%error, retry_in_ms = pause.as_millis() as u64,
                        "rate limits: Redis still unreachable");
                    self.link().error = Some(error);
                }
            }
            first = false;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY);
        }
    }

    async fn open(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        // TCP_NODELAY: pipelined checks must not wait for Nagle's algorithm (the
        // crate leaves it off unless built with its `tcp_nodelay` feature).
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(TIMEOUT.max(CONNECT_TIMEOUT))
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        // Loaded once per connection, so checks run EVALSHA straight away.
        self.script
            .load_async(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        Ok(connection)
    }

    /// How global limits are counted right now.
    pub fn status(&self) -> GlobalStatus {
        let link = self.link();
        match (&link.connection, &link.error) {
            (Some(_), _) => GlobalStatus {
                counting: "redis",
                error: None,
            },
            (None, error) => GlobalStatus {
                counting: "local-fallback",
                error: error.clone(),
            },
        }
    }
}

/// PINGs the connection every [`WATCH_INTERVAL`] while the buckets exist.
async fn watch(buckets: std::sync::Weak<GlobalBuckets>) {
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
        let pong = tokio::time::timeout(
            TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await;
        match pong {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => buckets.lost(generation, e.to_string()),
            Err(_) => buckets.lost(
                generation,
                format!("no answer to PING within {} ms", TIMEOUT.as_millis()),
            ),
        }
    }
}

/// The Redis key of bucket `id` of `rule` (`per` names the key kind): the rule
/// and kind for whoever looks at Redis, the key itself only as a hash.
pub fn redis_key(rule: &str, per: &str, id: BucketId) -> String {
    format!("{KEY_PREFIX}{rule}:{per}:{id:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hold_no_raw_value() {
        assert_eq!(
            redis_key("videos-read", "user", 0xabc),
            "portcullis:ratelimit:videos-read:user:00000000000000000000000000000abc"
        );
    }
}
