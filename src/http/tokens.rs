//! The HTTP side of the tokens portcullis signs (docs/east-west.md): the public JWKS at
//! `/.well-known/jwks.json`, and token exchange at `POST /v1/token/exchange`
//! (seed 000, option 2). Handlers convert; the user context comes from
//! `Pipeline::user_for`, the token from the mint.

use crate::answer::{Answer, DenyKind, RequestId};
use crate::authorizer::{Authorizer, UserError};
use crate::identity::{Authentication, IssuerKind};
use crate::request::AuthzRequest;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;
use std::time::SystemTime;

/// `GET /.well-known/jwks.json`: the public keys of the tokens portcullis signs,
/// for services that verify internal or exchanged tokens locally.
pub async fn jwks(State(authorizer): State<Arc<Authorizer>>) -> Response {
    match authorizer.pipeline().mint() {
        Some(mint) => (
            [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
            Json(mint.jwks()),
        )
            .into_response(),
        None => not_configured(),
    }
}

/// `POST /v1/token/exchange`: an upstream user token in `Authorization` →
/// `{access_token, token_type, expires_in}`, a portcullis token carrying the
/// user's directory context.
pub async fn exchange(State(authorizer): State<Arc<Authorizer>>, headers: HeaderMap) -> Response {
    let pipeline = authorizer.pipeline();
    let Some(mint) = pipeline.mint() else {
        return not_configured();
    };
    // Only the Authorization header counts: cookies are not an API credential.
    let mut request = AuthzRequest::builder();
    if let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        request = request.header("authorization", value);
    }
    let request = request.build();
    let rid = RequestId::of(&request, "x-request-id").value;
    let authenticated = pipeline.authenticator().authenticate(&request, true).await;
    // A revoked token is not exchanged for a fresh one (docs/revocation.md).
    let authenticated = authenticated.and_then(|authentication| match &authentication {
        Authentication::Token(token) => authorizer
            .runtime()
            .revocations()
            .check(token, Some(mint.issuer()))
            .map(|()| authentication),
        Authentication::Anonymous => Ok(authentication),
    });
    let token = match authenticated {
        Ok(Authentication::Token(token)) => token,
        Ok(Authentication::Anonymous) => {
            return deny(Answer::deny(
                DenyKind::MissingCredentials,
                "send the user's token as Authorization: Bearer TOKEN",
                &rid,
            ))
        }
        Err(e) => {
            let kind = if e.is_unavailable() {
                DenyKind::Unavailable
            } else {
                DenyKind::InvalidCredentials
            };
            return deny(Answer::deny(kind, &e.to_string(), &rid));
        }
    };
    let is_user_token = pipeline.authenticator().kind_of(&token.issuer) == Some(IssuerKind::User);
    let is_ours = *token.iss == *mint.issuer();
    if !is_user_token || is_ours {
        // Re-exchanging our own token would extend a session forever; a service
        // token is not a user.
        return deny(Answer::deny(
            DenyKind::InvalidCredentials,
            "only an upstream identity provider's user token can be exchanged",
            &rid,
        ));
    }
    let user = match pipeline.user_for(&token).await {
        Ok(user) => user,
        Err(UserError::Unavailable(e)) => {
            tracing::warn!(request_id = %rid, error = %e, "token exchange: user directory unavailable");
            return deny(Answer::deny(
                DenyKind::Unavailable,
                "the user directory is unavailable; try again shortly",
                &rid,
            ));
        }
        Err(e) => {
            return deny(Answer::deny(
                DenyKind::InvalidCredentials,
                &e.to_string(),
                &rid,
            ))
        }
    };
    match mint.exchange_token(&user, SystemTime::now()) {
        Ok(minted) => {
            tracing::info!(request_id = %rid, issuer = %token.issuer, "token exchange: issued a token");
            (
                [(axum::http::header::CACHE_CONTROL, "no-store")],
                Json(serde_json::json!({
                    "access_token": minted.token,
                    "token_type": "Bearer",
                    "expires_in": minted.expires_in.as_secs(),
                })),
            )
                .into_response()
        }
        Err(error) => {
            tracing::error!(request_id = %rid, %error, "token exchange: signing failed");
            deny(Answer::deny(
                DenyKind::Unavailable,
                "the token could not be signed",
                &rid,
            ))
        }
    }
}

fn not_configured() -> Response {
    (
        StatusCode::NOT_FOUND,
        "portcullis signs no tokens: configure `tokens: { key_dir: ... }`\n",
    )
        .into_response()
}

/// A deny answer as an HTTP response.
fn deny(answer: Answer) -> Response {
    let status = answer.status();
    let Answer::Deny { headers, body, .. } = answer else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
        body,
    )
        .into_response();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
