//! The HTTP listener (docs/configuration.md, docs/operations.md): `/healthz`, `/readyz`, `/metrics`,
//! `/webhooks/clerk`, and the tokens portcullis signs (`/.well-known/jwks.json`,
//! `/v1/token/exchange`), and the gateways' `/check` endpoints ([`check_router`],
//! docs/gateways.md). Handlers only convert; decisions and status come from
//! the shared core.

mod check;
mod listener;
mod tokens;
mod webhooks;

pub use check::router as check_router;
pub use listener::serve;

use crate::authorizer::Authorizer;
use crate::readiness::Readiness;
use crate::reload::LastReload;
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use std::sync::Arc;

pub fn router(authorizer: Arc<Authorizer>, last_reload: Arc<LastReload>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(tokens::jwks))
        .route("/v1/token/exchange", axum::routing::post(tokens::exchange))
        .route(
            "/webhooks/clerk",
            axum::routing::post(webhooks::clerk)
                .layer(axum::extract::DefaultBodyLimit::max(webhooks::MAX_BODY)),
        )
        // Nothing but webhooks takes a body of any size.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::Extension(last_reload))
        .with_state(authorizer)
}

/// The largest body any route but `/webhooks/clerk` reads (a token exchange
/// sends none).
const MAX_BODY: usize = 16 * 1024;

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Ready when every dependency a decision needs is loaded, and not draining
/// (after SIGTERM it answers 503 at once so endpoints move traffic away).
async fn readyz(
    State(authorizer): State<Arc<Authorizer>>,
    axum::Extension(last_reload): axum::Extension<Arc<LastReload>>,
) -> impl IntoResponse {
    let status = Readiness::of(&authorizer, &last_reload).await;
    let code = if status.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(status))
}

async fn metrics(State(authorizer): State<Arc<Authorizer>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        authorizer.metrics().encode(),
    )
}
