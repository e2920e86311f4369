//! Verification keys and key sets: JWKs (RFC 7517) and HMAC secrets turned into
//! keys that know which algorithms they may verify.

use super::algorithm::{Algorithm, KeyFamily};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse},
    DecodingKey,
};
use serde_json::Value;

/// RFC 7518 §3.3: RSA keys of 2048 bits or larger MUST be used.
const MIN_RSA_BITS: usize = 2048;
/// RFC 7518 §3.2: an HMAC key at least as long as the hash output; we require 256 bits.
const MIN_HMAC_BYTES: usize = 32;

/// Why a JWK or secret cannot be used to verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a valid JWK: {0}")]
    Invalid(String),
    #[error("the key's 'use' is not 'sig'")]
    NotForSignatures,
    #[error("the key's 'key_ops' does not include 'verify'")]
    NotForVerify,
    #[error("unsupported key type or curve")]
    Unsupported,
    #[error("the key's 'alg' does not fit its type, or is not one we verify")]
    AlgorithmMismatch,
    #[error("RSA key of {0} bits is too small (minimum {MIN_RSA_BITS})")]
    RsaTooSmall(usize),
    #[error("HMAC secret of {0} bytes is too short (minimum {MIN_HMAC_BYTES})")]
    HmacTooShort(usize),
}

/// One key: what it is, what it may verify, and the decoded key material.
#[derive(Clone)]
pub struct VerificationKey {
    kid: Option<String>,
    alg: Option<Algorithm>,
    family: KeyFamily,
    key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish()
    }
}

impl VerificationKey {
    /// A JWK, honouring `use`, `key_ops` and `alg` when present.
    pub fn from_jwk(value: &Value) -> Result<Self, KeyError> {
        let jwk: Jwk =
            serde_json::from_value(value.clone()).map_err(|e| KeyError::Invalid(e.to_string()))?;
        if let Some(key_use) = &jwk.common.public_key_use {
            if *key_use != PublicKeyUse::Signature {
                return Err(KeyError::NotForSignatures);
            }
        }
        if let Some(ops) = &jwk.common.key_operations {
            if !ops.contains(&KeyOperations::Verify) {
                return Err(KeyError::NotForVerify);
            }
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let n = URL_SAFE_NO_PAD
                    .decode(&rsa.n)
                    .map_err(|_| KeyError::Invalid("bad 'n'".into()))?;
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if bits < MIN_RSA_BITS {
                    return Err(KeyError::RsaTooSmall(bits));
                }
                KeyFamily::Rsa
            }
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => KeyFamily::EcP256,
                EllipticCurve::P384 => KeyFamily::EcP384,
                _ => return Err(KeyError::Unsupported),
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => KeyFamily::Ed25519,
                _ => return Err(KeyError::Unsupported),
            },
            AlgorithmParameters::OctetKey(_) => KeyFamily::Hmac,
            _ => return Err(KeyError::Unsupported),
        };
        let alg = match value.get("alg").and_then(Value::as_str) {
            None => None,
            Some(name) => {
                let alg: Algorithm = name.parse().map_err(|_| KeyError::AlgorithmMismatch)?;
                if alg.family() != family {
                    return Err(KeyError::AlgorithmMismatch);
                }
                Some(alg)
            }
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| KeyError::Invalid(e.to_string()))?;
        if family == KeyFamily::Hmac {
            let len = key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0);
            if len < MIN_HMAC_BYTES {
                return Err(KeyError::HmacTooShort(len));
            }
        }
        Ok(Self {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            key,
        })
    }

    /// An HMAC secret (`secret_env` / `secret_file`).
    pub fn hmac(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_HMAC_BYTES {
            return Err(KeyError::HmacTooShort(secret.len()));
        }
        Ok(Self {
            kid: None,
            alg: None,
            family: KeyFamily::Hmac,
            key: DecodingKey::from_secret(secret),
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// True when this key may verify a signature made with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.family == alg.family() && self.alg.is_none_or(|a| a == alg)
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

/// The keys of one issuer.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
}

impl KeySet {
    pub fn new(keys: Vec<VerificationKey>) -> Self {
        Self { keys }
    }

    /// Parses a JWKS document. Keys we cannot use are skipped and reported, so one
    /// odd key (an encryption key, an unknown curve) does not take the set down.
    pub fn from_jwks(document: &[u8]) -> Result<(Self, Vec<String>), KeyError> {
        let value: Value =
            serde_json::from_slice(document).map_err(|e| KeyError::Invalid(e.to_string()))?;
        let Some(entries) = value.get("keys").and_then(Value::as_array) else {
            return Err(KeyError::Invalid("a JWKS needs a 'keys' array".into()));
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match VerificationKey::from_jwk(entry) {
                Ok(key) => keys.push(key),
                Err(e) => {
                    let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("-");
                    skipped.push(format!("key {i} (kid {kid}): {e}"));
                }
            }
        }
        Ok((Self { keys }, skipped))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid() == Some(kid))
    }

    /// The keys that may verify a token with this `kid` and `alg`: with a `kid`,
    /// the keys of that id (and keys that have none, such as a configured HMAC
    /// secret); without one, every key that accepts `alg`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerificationKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| {
                let kid_fits = match (kid, k.kid()) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                };
                kid_fits && k.accepts(alg)
            })
    }
}
