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
/// A connection to Redis (and the subscription's `SUBSCRIBE`s) gives up after
/// this long: a Redis that drops packets must not hang a replica unready
/// without a reason.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A command on the shared connection gives up after this long.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first pause before subscribing again after a failure...
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// ...doubling up to this.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Where a replica's subscription to the other replicas' events stands
/// (`/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    /// Connecting and subscribing: at start, and again after each failure.
    Connecting,
    /// Subscribed, loading what was missed before handling the first event.
    CatchingUp,
    /// Subscribed and caught up: events apply as they are published.
    Subscribed,
    /// The last attempt failed or the connection was lost; the next one waits
    /// its backoff.
    Down,
}

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

    /// Runs `command` on the shared connection (made on first use, at most
    /// [`CONNECT_TIMEOUT`] to connect and [`RESPONSE_TIMEOUT`] per command); a
    /// command that fails is tried once more on a new connection.
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
                        let config = redis::AsyncConnectionConfig::new()
                            .set_connection_timeout(CONNECT_TIMEOUT)
                            .set_response_timeout(RESPONSE_TIMEOUT);
                        // The whole handshake, not only the TCP connect, is bounded.
                        let connection = tokio::time::timeout(
                            CONNECT_TIMEOUT,
                            self.client
                                .get_multiplexed_async_connection_with_config(&config),
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
/// payload)`, reconnecting with backoff (1 s doubling to 30 s, back to 1 s once
/// a subscription worked) whenever Redis goes away. After each
/// (re)subscription, before its first message, `on_subscribed` catches up on
/// what was missed while away (an error drops the subscription and tries
/// again). `on_change` hears every change of [`Subscription`], with the error
/// when it goes [`Subscription::Down`].
pub fn spawn_subscriber<S, SFut, M, MFut, C>(
    url: &str,
    channels: &'static [&'static str],
    on_subscribed: S,
    on_message: M,
    on_change: C,
) -> Result<JoinHandle<()>, DirectoryError>
where
    S: Fn() -> SFut + Send + Sync + 'static,
    SFut: std::future::Future<Output = Result<(), String>> + Send,
    M: Fn(&str, String) -> MFut + Send + Sync + 'static,
    MFut: std::future::Future<Output = ()> + Send,
    C: Fn(Subscription, Option<&str>) + Send + Sync + 'static,
{
    let client =
        redis::Client::open(url).map_err(|e| DirectoryError(format!("invalid Redis URL: {e}")))?;
    Ok(tokio::spawn(async move {
        let mut backoff = Backoff::default();
        loop {
            on_change(Subscription::Connecting, None);
            let mut subscribed = false;
            let result = subscribe(
                &client,
                channels,
                &on_subscribed,
                &on_message,
                &mut |state| {
                    subscribed |= state == Subscription::Subscribed;
                    on_change(state, None);
                },
            )
            .await;
            let error = match result {
                Ok(()) => "the subscription ended".to_owned(),
                Err(e) => e,
            };
            tracing::warn!(%error, "Redis subscription lost or failed; subscribing again");
            on_change(Subscription::Down, Some(&error));
            tokio::time::sleep(backoff.after(subscribed)).await;
        }
    }))
}

/// The pause before subscribing again: [`FIRST_RETRY`] doubling to
/// [`MAX_RETRY`] while attempts fail, and [`FIRST_RETRY`] again after one that
/// subscribed, so one blip does not leave a replica deaf for long.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_RETRY }
    }
}

impl Backoff {
    /// The pause after an attempt that `subscribed` (and caught up) or not.
    fn after(&mut self, subscribed: bool) -> Duration {
        if subscribed {
            self.next = FIRST_RETRY;
        }
        let pause = self.next;
        self.next = (self.next * 2).min(MAX_RETRY);
        pause
    }
}

async fn subscribe<S, SFut, M, MFut>(
    client: &redis::Client,
    channels: &[&str],
    on_subscribed: &S,
    on_message: &M,
    on_change: &mut impl FnMut(Subscription),
) -> Result<(), String>
where
    S: Fn() -> SFut,
    SFut: std::future::Future<Output = Result<(), String>>,
    M: Fn(&str, String) -> MFut,
    MFut: std::future::Future<Output = ()>,
{
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        for channel in channels {
            pubsub.subscribe(*channel).await?;
        }
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| format!("connecting to Redis timed out after {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("connecting to Redis: {e}"))?;
    tracing::info!(?channels, "subscribed to events of other replicas");
    on_change(Subscription::CatchingUp);
    // Messages published from here on wait in the subscription while the
    // catch-up runs, so none falls between the two.
    on_subscribed().await?;
    on_change(Subscription::Subscribed);
    let mut messages = pubsub.into_on_message();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_while_failing_and_starts_over_after_a_subscription() {
        let mut backoff = Backoff::default();
        let secs = |d: Duration| d.as_secs();
        let failing: Vec<u64> = (0..7).map(|_| secs(backoff.after(false))).collect();
        assert_eq!(failing, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(
            secs(backoff.after(true)),
            1,
            "a blip after a working subscription"
        );
        assert_eq!(secs(backoff.after(false)), 2);
        assert_eq!(secs(backoff.after(true)), 1);
    }
}
