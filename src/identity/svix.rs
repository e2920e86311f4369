//! Svix webhook signatures (docs/security.md), as Clerk sends them: `svix-id`,
//! `svix-timestamp`, `svix-signature` (space-separated `v1,<base64>` entries, any
//! of which may match), HMAC-SHA256 over `id.timestamp.body` with the base64 key
//! after `whsec_`, a five-minute tolerance either way. Replays are refused by the
//! caller, which remembers ids (see `http::webhooks`).

use aws_lc_rs::hmac;
use base64::{engine::general_purpose::STANDARD, Engine};

/// Timestamps further than this from now are refused (Svix: 5 minutes).
pub const TOLERANCE_SECS: u64 = 300;

/// A webhook signing secret (`whsec_...`).
#[derive(Clone)]
pub struct WebhookSecret {
    key: hmac::Key,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl PartialEq for WebhookSecret {
    fn eq(&self, _: &Self) -> bool {
        // Secrets are never compared; configs holding them compare equal.
        true
    }
}

/// Why a webhook delivery is refused. Safe to tell the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("svix-timestamp is not a number")]
    BadTimestamp,
    #[error("svix-timestamp is outside the 5-minute tolerance")]
    StaleTimestamp,
    #[error("no signature matches")]
    BadSignature,
}

/// The three Svix headers of one delivery.
#[derive(Debug, Clone, Copy)]
pub struct SvixHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

impl WebhookSecret {
    /// Parses `whsec_<base64>` (the prefix is optional, as in Svix's libraries).
    pub fn parse(secret: &str) -> Result<Self, String> {
        let encoded = secret
            .trim()
            .strip_prefix("whsec_")
            .unwrap_or(secret.trim());
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "the webhook secret is not `whsec_` followed by base64 (copy it from the Clerk dashboard)".to_owned())?;
        if key.len() < 16 {
            return Err("the webhook secret is too short".into());
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        })
    }

    /// Verifies one delivery at `now` (seconds since the epoch); returns its id.
    pub fn verify<'a>(
        &self,
        headers: SvixHeaders<'a>,
        body: &[u8],
        now: u64,
    ) -> Result<&'a str, WebhookError> {
        let id = headers.id.ok_or(WebhookError::MissingHeader("svix-id"))?;
        let timestamp = headers
            .timestamp
            .ok_or(WebhookError::MissingHeader("svix-timestamp"))?;
        let signatures = headers
            .signature
            .ok_or(WebhookError::MissingHeader("svix-signature"))?;
        let at: u64 = timestamp
            .trim()
            .parse()
            .map_err(|_| WebhookError::BadTimestamp)?;
        if at.abs_diff(now) > TOLERANCE_SECS {
            return Err(WebhookError::StaleTimestamp);
        }
        let mut signed = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
        signed.extend_from_slice(id.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(timestamp.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        let matches = signatures
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            // Constant-time comparison inside aws-lc.
            .any(|tag| hmac::verify(&self.key, &signed, &tag).is_ok());
        if matches {
            Ok(id)
        } else {
            Err(WebhookError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Svix's published example (docs "Verifying manually" and the svix libraries'
    // tests): this secret, id, timestamp and payload give this signature.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: &str = "1614265330";
    const PAYLOAD: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const NOW: u64 = 1614265330;

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> SvixHeaders<'a> {
        SvixHeaders {
            id: Some(id),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn svix_published_vector_verifies() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(
            secret.verify(headers(ID, TS, SIGNATURE), PAYLOAD, NOW),
            Ok(ID)
        );
        // Several signatures (key rotation): any match is enough.
        let several = format!("v1,Zm9v {SIGNATURE} v2,abc");
        assert_eq!(
            secret.verify(headers(ID, TS, &several), PAYLOAD, NOW),
            Ok(ID)
        );
    }

    #[test]
    fn every_tampering_is_refused() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let other = WebhookSecret::parse("whsec_aGVsbG8gd29ybGQgdGhpcyBpcyBub3Q=").unwrap();
        let cases: Vec<(SvixHeaders, &[u8], u64, WebhookError)> = vec![
            (
                headers(ID, TS, SIGNATURE),
                br#"{"test": 2432232315}"#,
                NOW,
                WebhookError::BadSignature,
            ),
            (
                headers("msg_other", TS, SIGNATURE),
                PAYLOAD,
                NOW,
                WebhookError::BadSignature,
            ),
            (
                headers(ID, "1614265331", SIGNATURE),
                PAYLOAD,
                NOW,
                WebhookError::BadSignature,
            ),
            (
                headers(ID, TS, "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
                PAYLOAD,
                NOW,
                WebhookError::BadSignature,
            ),
            (
                headers(ID, TS, "v1,not base64!"),
                PAYLOAD,
                NOW,
                WebhookError::BadSignature,
            ),
            (
                headers(ID, TS, SIGNATURE),
                PAYLOAD,
                NOW + 301,
                WebhookError::StaleTimestamp,
            ),
            (
                headers(ID, TS, SIGNATURE),
                PAYLOAD,
                NOW - 301,
                WebhookError::StaleTimestamp,
            ),
            (
                headers(ID, "soon", SIGNATURE),
                PAYLOAD,
                NOW,
                WebhookError::BadTimestamp,
            ),
            (
                SvixHeaders {
                    id: None,
                    ..headers(ID, TS, SIGNATURE)
                },
                PAYLOAD,
                NOW,
                WebhookError::MissingHeader("svix-id"),
            ),
        ];
        for (i, (h, body, now, want)) in cases.into_iter().enumerate() {
            assert_eq!(secret.verify(h, body, now), Err(want), "case {i}");
        }
        assert_eq!(
            other.verify(headers(ID, TS, SIGNATURE), PAYLOAD, NOW),
            Err(WebhookError::BadSignature)
        );
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
    }
}
