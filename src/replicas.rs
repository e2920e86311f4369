//! State shared by every replica through Redis (`state.redis`, docs/configuration.md): a user
//! evicted or tombstoned on one replica (a Clerk webhook reaches only one) is
//! published on a pub/sub channel and applied by all. A replica that loses Redis
//! keeps serving — its cache TTL bounds staleness — and resubscribes when Redis
//! returns.

use crate::directory::{DirectoryError, UserDirectory};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

/// The pub/sub channel of directory events.
pub const CHANNEL: &str = "portcullis:directory";

/// One directory event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum DirectoryEvent {
    /// Drop the cached entry (`user.updated`).
    Evict { sub: String },
    /// Refuse the user (`user.deleted`).
    Tombstone { sub: String },
}

impl DirectoryEvent {
    /// Applies the event to `directory` (the one in force).
    pub async fn apply(&self, directory: &UserDirectory) {
        match self {
            DirectoryEvent::Evict { sub } => directory.evict(sub).await,
            DirectoryEvent::Tombstone { sub } => directory.tombstone(sub).await,
        }
    }
}

/// The publishing side: one multiplexed connection, re-made after a failure.
pub struct SharedState {
    url: String,
    client: redis::Client,
    connection: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl SharedState {
    pub fn new(url: &str) -> Result<Self, DirectoryError> {
        let client = redis::Client::open(url)
            .map_err(|e| DirectoryError(format!("invalid Redis URL: {e}")))?;
        Ok(Self {
            url: url.to_owned(),
            client,
            connection: Mutex::new(None),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Publishes `event`; a failure is logged and returned (the local directory
    /// already applied it, the others catch up by TTL).
    pub async fn publish(&self, event: &DirectoryEvent) -> Result<(), String> {
        let message = serde_json::to_string(event).map_err(|e| e.to_string())?;
        let mut slot = self.connection.lock().await;
        for attempt in 0..2 {
            if slot.is_none() {
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    self.client.get_multiplexed_async_connection(),
                )
                .await
                {
                    Ok(Ok(connection)) => *slot = Some(connection),
                    Ok(Err(e)) => return Err(log_publish_error(e.to_string())),
                    Err(_) => return Err(log_publish_error("connect timed out".into())),
                }
            }
            let Some(connection) = slot.as_mut() else {
                break;
            };
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(&message)
                .query_async(connection)
                .await;
            match sent {
                Ok(_) => return Ok(()),
                Err(e) if attempt == 0 => {
                    tracing::debug!(error = %e, "Redis publish failed; reconnecting once");
                    *slot = None;
                }
                Err(e) => return Err(log_publish_error(e.to_string())),
            }
        }
        Err(log_publish_error("no connection".into()))
    }
}

fn log_publish_error(error: String) -> String {
    tracing::warn!(%error, "could not publish a directory event to Redis; other replicas catch up by cache TTL");
    error
}

/// Subscribes to [`CHANNEL`] and hands every event to `apply`, reconnecting
/// with backoff (1 s doubling to 30 s) whenever Redis goes away.
pub fn spawn_subscriber<F, Fut>(url: &str, apply: F) -> Result<JoinHandle<()>, DirectoryError>
where
    F: Fn(DirectoryEvent) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let client =
        redis::Client::open(url).map_err(|e| DirectoryError(format!("invalid Redis URL: {e}")))?;
    Ok(tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            match subscribe(&client, &apply).await {
                Ok(()) => tracing::warn!("Redis subscription ended; resubscribing"),
                Err(e) => tracing::warn!(error = %e, "Redis subscription failed; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }))
}

async fn subscribe<F, Fut>(client: &redis::Client, apply: &F) -> redis::RedisResult<()>
where
    F: Fn(DirectoryEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    tracing::info!(channel = CHANNEL, "subscribed to directory events");
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload: String = match message.get_payload() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable directory event");
                continue;
            }
        };
        match serde_json::from_str::<DirectoryEvent>(&payload) {
            Ok(event) => {
                tracing::debug!(?event, "directory event from another replica");
                apply(event).await;
            }
            Err(e) => tracing::warn!(error = %e, "malformed directory event ignored"),
        }
    }
    Ok(())
}
