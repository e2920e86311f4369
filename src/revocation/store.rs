//! Revocations in Redis (`state.redis`, docs/revocation.md): each one a key
//! `portcullis:revocation:<kind>:<value>` holding its JSON, expiring (`PXAT`)
//! when it stops mattering. [`MERGE`], one script, merges a new revocation
//! with the one its key holds (a later revocation never shortens an earlier
//! one), stores the result and announces it on [`CHANNEL`], atomically. A
//! replica loads every key at start and after each resubscription (`SCAN` +
//! `MGET`), so nothing announced while it was away is missed; [`Feed`] is its
//! side of the subscription.

use super::{Revocation, RevocationError, Revocations};
use crate::replicas::{SharedState, Subscription};
use std::future::Future;
use std::sync::Arc;

/// The pub/sub channel revocations are announced on.
pub const CHANNEL: &str = "portcullis:revocations";
/// The prefix of every revocation's key.
pub const KEY_PREFIX: &str = "portcullis:revocation:";
/// Keys read per `SCAN` / `MGET` round trip.
const BATCH: usize = 500;

/// Merges a revocation into its key, stores and announces the result.
/// KEYS[1]: the key. ARGV: kind, value, revoked_at_ms, expires_at_ms, by, the
/// channel. The later `revoked_at_ms` (with its `by`; the held one on a tie,
/// as [`Revocation::merged`]) and the later `expires_at_ms` win. Returns the
/// JSON stored. Numbers are written with `%d`: Redis' Lua would print a
/// millisecond instant as `1.7646205601e+12`.
pub const MERGE: &str = r#"
local revoked_at = tonumber(ARGV[3])
local expires_at = tonumber(ARGV[4])
local by = ARGV[5]
local held = redis.call('GET', KEYS[1])
if held then
  local ok, h = pcall(cjson.decode, held)
  if ok and type(h) == 'table' and type(h.revoked_at_ms) == 'number'
      and type(h.expires_at_ms) == 'number' and type(h.by) == 'string' then
    if h.revoked_at_ms >= revoked_at then
      revoked_at = h.revoked_at_ms
      by = h.by
    end
    if h.expires_at_ms > expires_at then
      expires_at = h.expires_at_ms
    end
  end
end
local json = string.format(
  '{"kind":%s,"value":%s,"revoked_at_ms":%d,"expires_at_ms":%d,"by":%s}',
  cjson.encode(ARGV[1]), cjson.encode(ARGV[2]), revoked_at, expires_at, cjson.encode(by))
redis.call('SET', KEYS[1], json, 'PXAT', string.format('%d', expires_at))
redis.call('PUBLISH', ARGV[6], json)
return json
"#;

fn key(revocation: &Revocation) -> String {
    format!(
        "{KEY_PREFIX}{}:{}",
        revocation.kind.as_str(),
        revocation.value
    )
}

/// Applies `revocation` here, then merges, stores and announces it through
/// `shared` (when Redis is configured); returns what is in force for its value
/// (merged with what this replica, and Redis, already held). The local copy
/// refuses at once, even when Redis fails; the error then says the other
/// replicas do not know it.
pub async fn revoke(
    revocations: &Revocations,
    shared: Option<&SharedState>,
    revocation: Revocation,
) -> Result<Revocation, RevocationError> {
    let merged = revocations.insert(revocation.clone());
    let Some(shared) = shared else {
        return Ok(merged);
    };
    let script = redis::Script::new(MERGE);
    let key = key(&revocation);
    let stored = shared
        .run(|mut connection| {
            let mut invocation = script.key(&key);
            invocation
                .arg(revocation.kind.as_str())
                .arg(&revocation.value)
                .arg(revocation.revoked_at_ms)
                .arg(revocation.expires_at_ms)
                .arg(&revocation.by)
                .arg(CHANNEL);
            async move { invocation.invoke_async::<String>(&mut connection).await }
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, kind = revocation.kind.as_str(), "a revocation was not stored in Redis: other replicas do not know it");
            RevocationError::NotShared(e)
        })?;
    // What Redis held may reach further than what this replica knew.
    Ok(decode(&stored).map_or(merged, |stored| revocations.insert(stored)))
}

/// Every revocation stored in Redis.
pub async fn load_all(shared: &SharedState) -> Result<Vec<Revocation>, String> {
    shared
        .run(|mut connection| async move {
            let mut found = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{KEY_PREFIX}*"))
                    .arg("COUNT")
                    .arg(BATCH)
                    .query_async(&mut connection)
                    .await?;
                if !keys.is_empty() {
                    // A key that expired since the SCAN reads as nil.
                    let values: Vec<Option<String>> = redis::cmd("MGET")
                        .arg(&keys)
                        .query_async(&mut connection)
                        .await?;
                    found.extend(values.into_iter().flatten().filter_map(|v| decode(&v)));
                }
                if next == 0 {
                    return Ok(found);
                }
                cursor = next;
            }
        })
        .await
}

/// A revocation as stored and announced, validated by [`Revocation::at`]; a
/// malformed or invalid one is logged and skipped.
pub fn decode(json: &str) -> Option<Revocation> {
    match serde_json::from_str(json) {
        Ok(revocation) => Some(revocation),
        Err(e) => {
            tracing::warn!(error = %e, "malformed revocation in Redis ignored");
            None
        }
    }
}

/// The revocation side of this replica's subscription to the others: the
/// catch-up after each (re)subscription, the announcements on [`CHANNEL`], and
/// where the subscription stands (readiness).
#[derive(Clone)]
pub struct Feed {
    revocations: Arc<Revocations>,
    shared: Arc<SharedState>,
}

impl Feed {
    /// The feed of `revocations` through `shared`: from now on the set is not
    /// loaded until the first catch-up succeeds.
    pub fn new(revocations: Arc<Revocations>, shared: Arc<SharedState>) -> Self {
        revocations.expect_load();
        Self {
            revocations,
            shared,
        }
    }

    /// The catch-up after a (re)subscription: loads the whole set.
    pub fn catch_up(&self) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let feed = self.clone();
        async move {
            let all = load_all(&feed.shared)
                .await
                .map_err(|e| format!("loading revocations: {e}"))?;
            feed.revocations.load(all);
            Ok(())
        }
    }

    /// Applies one announcement of another replica.
    pub fn apply(&self, payload: &str) {
        if let Some(revocation) = decode(payload) {
            tracing::debug!(kind = revocation.kind.as_str(), by = %revocation.by, "revocation from another replica");
            self.revocations.insert(revocation);
        }
    }

    /// Records where the subscription stands (readiness).
    pub fn subscription_changed(&self, state: Subscription, error: Option<&str>) {
        self.revocations.subscription_changed(state, error);
    }
}
