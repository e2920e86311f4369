//! Svix-signed Clerk webhook deliveries, as Clerk sends them (test side).

use aws_lc_rs::hmac;
use base64::{engine::general_purpose::STANDARD, Engine};
use std::net::SocketAddr;

/// A Clerk webhook signing secret (Svix's published example secret).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `v1,<base64 HMAC-SHA256 of id.timestamp.body>` with `secret` (Svix's scheme).
pub fn sign(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(hmac::sign(&key, &signed).as_ref()))
}

/// A Clerk event body.
pub fn event(kind: &str, sub: &str) -> Vec<u8> {
    serde_json::json!({"type": kind, "object": "event", "data": {"id": sub, "object": "user"}})
        .to_string()
        .into_bytes()
}

/// POSTs `body` to `http`'s `/webhooks/clerk` with `headers`; (status, body).
pub async fn post(http: SocketAddr, headers: &[(&str, String)], body: Vec<u8>) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{http}/webhooks/clerk"))
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A correctly signed delivery of `body` as message `id` at `ts`.
pub async fn signed(
    http: SocketAddr,
    secret: &str,
    id: &str,
    ts: u64,
    body: &[u8],
) -> (u16, String) {
    let headers = [
        ("svix-id", id.to_owned()),
        ("svix-timestamp", ts.to_string()),
        ("svix-signature", sign(secret, id, ts, body)),
    ];
    post(http, &headers, body.to_vec()).await
}

/// Delivers a fresh, correctly signed `kind` event for `sub`; the status.
pub async fn deliver(http: SocketAddr, kind: &str, sub: &str) -> u16 {
    let id = format!("msg_{:016x}", rand::random::<u64>());
    signed(http, SECRET, &id, now(), &event(kind, sub)).await.0
}
