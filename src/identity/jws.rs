//! JWS compact serialization (RFC 7515 §7.1): parsing and signature verification.
//! Only the compact form exists here; JSON serialization is not a token.

use super::algorithm::Algorithm;
use super::error::TokenError;
use super::keys::KeySet;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::Deserialize;

/// Tokens longer than this are refused before any decoding (a Clerk session token
/// is ~1 KiB; a JWT carrying a big claims set rarely passes 8 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The protected header fields we read. Unknown fields are ignored, except the ones
/// below that ask us to trust something we never trust.
#[derive(Debug, Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    jwk: Option<serde_json::Value>,
    #[serde(default)]
    jku: Option<serde_json::Value>,
    #[serde(default)]
    x5u: Option<serde_json::Value>,
    #[serde(default)]
    x5c: Option<serde_json::Value>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
    #[serde(default)]
    b64: Option<serde_json::Value>,
}

/// A parsed (not yet verified) compact JWS.
#[derive(Debug)]
pub struct CompactJws<'a> {
    /// `alg` as written; checked against the issuer's allow-list at verification.
    alg: String,
    kid: Option<String>,
    signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> CompactJws<'a> {
    /// Splits and checks the structure and header; no key is touched.
    pub fn parse(token: &'a str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        if token.starts_with('{') {
            return Err(TokenError::Malformed(
                "only compact serialization is accepted",
            ));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("a JWS has exactly three parts"));
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed("the header is not base64url"))?;
        let raw: RawHeader = serde_json::from_slice(&header_json)
            .map_err(|_| TokenError::Malformed("the header is not a JSON object with 'alg'"))?;
        let forbidden = [
            ("jwk", raw.jwk.is_some()),
            ("jku", raw.jku.is_some()),
            ("x5u", raw.x5u.is_some()),
            ("x5c", raw.x5c.is_some()),
            // We implement no extension, so by RFC 7515 §4.1.11 any `crit` is fatal;
            // `b64` (RFC 7797) changes what is signed.
            ("crit", raw.crit.is_some()),
            ("b64", raw.b64.is_some()),
        ];
        if let Some((name, _)) = forbidden.iter().find(|(_, present)| *present) {
            return Err(TokenError::ForbiddenHeader(name));
        }
        Ok(Self {
            alg: raw.alg,
            kid: raw.kid,
            signing_input: &token[..header.len() + 1 + payload.len()],
            payload,
            signature,
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `alg`, if it is one of `allowed`.
    pub fn algorithm(&self, allowed: &[Algorithm]) -> Result<Algorithm, TokenError> {
        let alg: Algorithm = self
            .alg
            .parse()
            .map_err(|_| TokenError::AlgorithmNotAllowed)?;
        if !allowed.contains(&alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        Ok(alg)
    }

    /// The payload, decoded but unverified: used only to pick the issuer whose keys
    /// then verify it.
    pub fn unverified_payload(&self) -> Result<Vec<u8>, TokenError> {
        URL_SAFE_NO_PAD
            .decode(self.payload)
            .map_err(|_| TokenError::Malformed("the payload is not base64url"))
    }

    /// The payload as text (JSON), decoded but unverified.
    pub fn unverified_payload_text(&self) -> Result<String, TokenError> {
        String::from_utf8(self.unverified_payload()?)
            .map_err(|_| TokenError::Malformed("the payload is not UTF-8 JSON"))
    }

    /// Verifies the signature with `keys` under the `allowed` algorithms and returns
    /// the payload bytes.
    pub fn verify(&self, keys: &KeySet, allowed: &[Algorithm]) -> Result<Vec<u8>, TokenError> {
        self.verify_signature(keys, allowed)?;
        self.unverified_payload()
    }

    /// Verifies the signature (which covers the payload) with `keys` under the
    /// `allowed` algorithms.
    pub fn verify_signature(&self, keys: &KeySet, allowed: &[Algorithm]) -> Result<(), TokenError> {
        let alg = self.algorithm(allowed)?;
        let mut candidates = keys.candidates(self.kid(), alg).peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::UnknownKey);
        }
        let verified =
            candidates.any(|key| key.verifies(alg, self.signing_input.as_bytes(), self.signature));
        if !verified {
            return Err(TokenError::BadSignature);
        }
        Ok(())
    }
}
