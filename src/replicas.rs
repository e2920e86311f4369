//! State shared by every replica through Redis (`state.redis`, docs/configuration.md): a user
//! evicted or tombstoned on one replica (a Clerk webhook reaches only one) is
//! published on a pub/sub channel and applied by all. A replica that loses Redis
//! keeps serving — its cache TTL bounds staleness — and resubscribes when Redis
//! returns. Revocations (docs/revocation.md) travel the same connections.

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
        self.run(|mut connection| {
            let message = message.clone();
            async move {
                redis::cmd("PUBLISH")
                    .arg(CHANNEL)
                    .arg(message)
                    .query_async::<i64>(&mut connection)
                    .await
            }
        })
        .await
        .map(|_| ())
        .map_err(log_publish_error)
    }

    /// Runs `command` on the shared connection (made on first use, 2 s to
    /// connect); a command that fails is tried once more on a new connection.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, String>
    where
        F: Fn(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        for attempt in 0..2 {
            let connection = {
                let mut slot = self.connection.lock().await;
                match slot.as_ref() {
                    Some(connection) => connection.clone(),
                    None => {
                        let connection = tokio::time::timeout(
                            Duration::from_secs(2),
                            self.client.get_multiplexed_async_connection(),
                        )
                        .await
                        .map_err(|_| "connecting to Redis timed out".to_owned())?
                        .map_err(|e| e.to_string())?;
                        *slot = Some(connection.clone());
                        connection
                    }
                }
            };
            match command(connection).await {
                Ok(value) => return Ok(value),
                Err(e) if attempt == 0 => {
                    tracing::debug!(error = %e, "Redis command failed; reconnecting once");
                    *self.connection.lock().await = None;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("no connection".into())
    }
}

fn log_publish_error(error: String) -> String {
    tracing::warn!(%error, "could not publish a directory event to Redis; other replicas catch up by cache TTL");
    error
}

/// Subscribes to `channels` and hands every message to `on_message(channel,
/// payload)`, reconnecting with backoff (1 s doubling to 30 s) whenever Redis
/// goes away. After each (re)subscription, before its first message,
/// `on_subscribed` catches up on what was missed while away (an error drops the
/// subscription and tries again).
pub fn spawn_subscriber<S, SFut, M, MFut>(
    url: &str,
    channels: &'static [&'static str],
    on_subscribed: S,
    on_message: M,
) -> Result<JoinHandle<()>, DirectoryError>
where
    S: Fn() -> SFut + Send + Sync + 'static,
    SFut: std::future::Future<Output = Result<(), String>> + Send,
    M: Fn(&str, String) -> MFut + Send + Sync + 'static,
    MFut: std::future::Future<Output = ()> + Send,
{
    let client =
        redis::Client::open(url).map_err(|e| DirectoryError(format!("invalid Redis URL: {e}")))?;
    Ok(tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            match subscribe(&client, channels, &on_subscribed, &on_message).await {
                Ok(()) => tracing::warn!("Redis subscription ended; resubscribing"),
                Err(e) => tracing::warn!(error = %e, "Redis subscription failed; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }))
}

async fn subscribe<S, SFut, M, MFut>(
    client: &redis::Client,
    channels: &[&str],
    on_subscribed: &S,
    on_message: &M,
) -> Result<(), String>
where
    S: Fn() -> SFut,
    SFut: std::future::Future<Output = Result<(), String>>,
    M: Fn(&str, String) -> MFut,
    MFut: std::future::Future<Output = ()>,
{
    let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
    for channel in channels {
        pubsub
            .subscribe(*channel)
            .await
            .map_err(|e| e.to_string())?;
    }
    tracing::info!(?channels, "subscribed to events of other replicas");
    // Messages published from here on wait in the subscription while the
    // catch-up runs, so none falls between the two.
    on_subscribed().await?;
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        match message.get_payload::<String>() {
            Ok(payload) => on_message(message.get_channel_name(), payload).await,
            Err(e) => tracing::warn!(error = %e, "unreadable Redis message"),
        }
    }
    Ok(())
}

/// Applies a [`CHANNEL`] message to `directory` (the one in force).
pub async fn apply_directory_event(payload: &str, directory: &UserDirectory) {
    match serde_json::from_str::<DirectoryEvent>(payload) {
        Ok(event) => {
            tracing::debug!(?event, "directory event from another replica");
            event.apply(directory).await;
        }
        Err(e) => tracing::warn!(error = %e, "malformed directory event ignored"),
    }
}
