//! `POST /webhooks/clerk` (docs/security.md, docs/configuration.md): Clerk's Svix-signed user events keep the
//! user cache honest. `user.updated` evicts the user's entry, `user.deleted`
//! tombstones it (refused at once), both published to the other replicas.
//! With `revocation.sessions_from_webhooks`, `session.revoked`, `session.ended`
//! and `session.removed` revoke that session's tokens (`sid`, docs/revocation.md)
//! on every replica. `user.created` and other events are accepted and ignored.
//! A bad or missing signature, a timestamp outside five minutes or a replayed
//! `svix-id` changes nothing.

use crate::authorizer::Authorizer;
use crate::identity::svix::{SvixHeaders, WebhookError};
use crate::metrics::WebhookLabels;
use crate::replicas::DirectoryEvent;
use crate::revocation::{self, Kind, Revocation};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;

/// Clerk events are small; anything larger is refused before it is read whole.
pub const MAX_BODY: usize = 256 * 1024;

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    data: Option<EventData>,
}

#[derive(Deserialize)]
struct EventData {
    id: Option<String>,
}

fn answer(status: StatusCode, error: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": error, "message": message});
    (status, Json(body)).into_response()
}

pub async fn clerk(
    State(authorizer): State<Arc<Authorizer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pipeline = authorizer.pipeline();
    let count = |result: &'static str| {
        authorizer
            .metrics()
            .webhooks
            .get_or_create(&WebhookLabels {
                webhook: "clerk",
                result,
            })
            .inc();
    };
    let Some((secret, seen)) = pipeline.clerk_webhook() else {
        return answer(
            StatusCode::NOT_FOUND,
            "not_found",
            "no Clerk webhook is configured (webhooks.clerk)",
        );
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let svix = SvixHeaders {
        id: header("svix-id"),
        timestamp: header("svix-timestamp"),
        signature: header("svix-signature"),
    };
    let id = match secret.verify(svix, &body, pipeline.clock().unix_secs()) {
        Ok(id) => id.to_owned(),
        Err(e) => {
            count("rejected");
            let status = match e {
                WebhookError::MissingHeader(_) | WebhookError::BadTimestamp => {
                    StatusCode::BAD_REQUEST
                }
                WebhookError::StaleTimestamp | WebhookError::BadSignature => {
                    StatusCode::UNAUTHORIZED
                }
            };
            tracing::info!(error = %e, "Clerk webhook refused");
            return answer(status, "invalid_signature", &e.to_string());
        }
    };
    // Only a verified delivery may claim an id, so a forger cannot burn one.
    if seen.contains(&id) {
        count("replay");
        tracing::info!(svix_id = %id, "Clerk webhook replay refused");
        return answer(
            StatusCode::UNAUTHORIZED,
            "replay",
            "this svix-id was already delivered",
        );
    }
    let event: Event = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(_) => {
            count("malformed");
            return answer(
                StatusCode::BAD_REQUEST,
                "malformed",
                "the body is not a Clerk event (JSON with type and data)",
            );
        }
    };
    if !seen.insert_new(&id, crate::runtime::WEBHOOK_ID_TTL) {
        count("replay");
        return answer(
            StatusCode::UNAUTHORIZED,
            "replay",
            "this svix-id was already delivered",
        );
    }
    let subject = event.data.and_then(|d| d.id);
    let sessions = pipeline.revocation().sessions_from_webhooks;
    let revocations = authorizer.runtime().revocations();
    let action = match (event.kind.as_str(), subject) {
        ("user.updated", Some(sub)) => Action::Directory(DirectoryEvent::Evict { sub }),
        ("user.deleted", Some(sub)) => Action::Directory(DirectoryEvent::Tombstone { sub }),
        (kind, Some(sid)) if sessions && ends_session(kind) => {
            let made = revocations.revocation(
                Kind::Sid,
                &sid,
                revocation::DEFAULT_TTL,
                format!("webhook:{kind}"),
            );
            match made {
                Ok(revocation) => Action::Revoke(revocation),
                Err(e) => {
                    count("malformed");
                    return answer(StatusCode::BAD_REQUEST, "malformed", &e.to_string());
                }
            }
        }
        (kind, None) if acted_on(kind) || (sessions && ends_session(kind)) => {
            count("malformed");
            return answer(
                StatusCode::BAD_REQUEST,
                "malformed",
                "the event has no data.id",
            );
        }
        _ => Action::None,
    };
    match action {
        Action::Directory(event) => {
            event.apply(pipeline.directory()).await;
            if let Some(shared) = pipeline.shared() {
                let _ = shared.publish(&event).await;
            }
            tracing::info!(svix_id = %id, ?event, "Clerk webhook applied");
        }
        Action::Revoke(revocation) => {
            let sid = revocation.value().to_owned();
            let shared = pipeline.shared().map(|s| &**s);
            if let Err(e) = revocation::store::revoke(revocations, shared, revocation).await {
                // In force here, unknown to the other replicas: Svix retries a
                // 503 with the same id, so the id is given back.
                seen.remove(&id);
                count("unavailable");
                tracing::warn!(svix_id = %id, error = %e, "Clerk session webhook applied on this replica only");
                return answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    &e.to_string(),
                );
            }
            tracing::info!(svix_id = %id, kind = %event.kind, %sid, "Clerk webhook revoked a session");
        }
        Action::None => {
            tracing::debug!(svix_id = %id, kind = %event.kind, "Clerk webhook accepted, nothing to do");
        }
    }
    count("accepted");
    (StatusCode::OK, Json(serde_json::json!({"ok": true}))).into_response()
}

/// The user events that change the directory (their `data.id` is the `sub`).
fn acted_on(kind: &str) -> bool {
    matches!(kind, "user.updated" | "user.deleted")
}

/// The events that end a session (their `data.id` is the `sid`).
fn ends_session(kind: &str) -> bool {
    matches!(
        kind,
        "session.revoked" | "session.ended" | "session.removed"
    )
}

/// What a verified Clerk event asks for.
enum Action {
    /// Evict or tombstone a user, here and on every replica.
    Directory(DirectoryEvent),
    /// Revoke a session, here and on every replica.
    Revoke(Revocation),
    None,
}
