//! Revocations in Redis (`state.redis`, docs/revocation.md): each one a key
//! `portcullis:revocation:<kind>:<value>` holding its JSON, expiring (`PXAT`)
//! when it stops mattering, and announced on [`CHANNEL`] in the same
//! transaction. A replica loads every key at start and after each
//! resubscription (`SCAN` + `MGET`), so nothing announced while it was away is
//! missed.

use super::{Revocation, RevocationError, Revocations};
use crate::replicas::SharedState;

/// The pub/sub channel revocations are announced on.
pub const CHANNEL: &str = "portcullis:revocations";
/// The prefix of every revocation's key.
pub const KEY_PREFIX: &str = "portcullis:revocation:";
/// Keys read per `SCAN` / `MGET` round trip.
const BATCH: usize = 500;

fn key(revocation: &Revocation) -> String {
    format!(
        "{KEY_PREFIX}{}:{}",
        revocation.kind.as_str(),
        revocation.value
    )
}

/// Applies `revocation` here, then stores and announces it through `shared`
/// (when Redis is configured). The local copy refuses at once, even when Redis
/// fails; the error then says the other replicas do not know it.
pub async fn revoke(
    revocations: &Revocations,
    shared: Option<&SharedState>,
    revocation: Revocation,
) -> Result<(), RevocationError> {
    revocations.insert(revocation.clone());
    let Some(shared) = shared else {
        return Ok(());
    };
    let json = serde_json::to_string(&revocation).expect("a revocation serializes");
    let (key, expires_at_ms) = (key(&revocation), revocation.expires_at_ms);
    shared
        .run(|mut connection| {
            let (key, json) = (key.clone(), json.clone());
            async move {
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&key)
                    .arg(&json)
                    .arg("PXAT")
                    .arg(expires_at_ms)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(CHANNEL)
                    .arg(&json)
                    .ignore()
                    .query_async::<()>(&mut connection)
                    .await
            }
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, kind = revocation.kind.as_str(), "a revocation was not stored in Redis: other replicas do not know it");
            RevocationError::NotShared(e)
        })
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

/// A revocation as stored and announced; a malformed one is logged and skipped.
pub fn decode(json: &str) -> Option<Revocation> {
    match serde_json::from_str(json) {
        Ok(revocation) => Some(revocation),
        Err(e) => {
            tracing::warn!(error = %e, "malformed revocation in Redis ignored");
            None
        }
    }
}

/// The catch-up after a (re)subscription: loads the whole set into
/// `revocations`, or records why it could not.
pub async fn reload(revocations: &Revocations, shared: &SharedState) -> Result<(), String> {
    match load_all(shared).await {
        Ok(all) => {
            revocations.load(all);
            Ok(())
        }
        Err(e) => {
            revocations.load_failed(&e);
            Err(format!("loading revocations: {e}"))
        }
    }
}
