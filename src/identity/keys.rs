//! Verification keys and key sets: JWKs (RFC 7517) and HMAC secrets turned into
//! keys that know which algorithms they may verify.

use super::algorithm::{Algorithm, KeyFamily};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse},
    DecodingKey,
};
use serde_json::Value;

use aws_lc_rs::signature::{ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};

/// RFC 7518 §3.3: RSA keys of 2048 bits or larger MUST be used.
const MIN_RSA_BITS: usize = 2048;
/// RFC 7518 §3.2: an HMAC key at least as long as the hash output (HS256: 32 bytes).
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
    #[error(
        "HMAC secret of {0} bytes is too short for its algorithm (HS256: 32, HS384: 48, HS512: 64)"
    )]
    HmacTooShort(usize),
    #[error("RSA public exponent must be odd and at least 3")]
    RsaBadExponent,
    #[error(
        "RSA modulus has the ROCA fingerprint (CVE-2017-15361): its private key is recoverable"
    )]
    RsaRoca,
    #[error("a public key set must not carry private key material ('d')")]
    PrivateMaterial,
    #[error("duplicate kid {0:?}: a token naming it would be ambiguous")]
    DuplicateKid(String),
    #[error("the key set mixes HMAC secrets with public keys")]
    MixedSymmetry,
}

/// One key: what it is, what it may verify, and the decoded key material.
#[derive(Clone)]
pub struct VerificationKey {
    kid: Option<String>,
    alg: Option<Algorithm>,
    family: KeyFamily,
    key: DecodingKey,
    /// An RSA key parsed once per algorithm it may verify. Verifying with a parsed
    /// key skips rebuilding the key (and its Montgomery constants) per token,
    /// which is about half the cost of an RS256 verification.
    rsa: Box<[(Algorithm, ParsedPublicKey)]>,
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
        let mut rsa_components = None;
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let n = URL_SAFE_NO_PAD
                    .decode(&rsa.n)
                    .map_err(|_| KeyError::Invalid("bad 'n'".into()))?;
                let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
                let bits = n.len() * 8;
                if bits < MIN_RSA_BITS {
                    return Err(KeyError::RsaTooSmall(bits));
                }
                let e = URL_SAFE_NO_PAD
                    .decode(&rsa.e)
                    .map_err(|_| KeyError::Invalid("bad 'e'".into()))?;
                let odd = e.last().is_some_and(|b| b & 1 == 1);
                let at_least_3 =
                    e.iter().rev().skip(1).any(|b| *b != 0) || e.last().is_some_and(|b| *b >= 3);
                if !odd || !at_least_3 {
                    return Err(KeyError::RsaBadExponent);
                }
                if has_roca_fingerprint(&n) {
                    return Err(KeyError::RsaRoca);
                }
                rsa_components = Some((n, e));
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
            if len < alg.map_or(MIN_HMAC_BYTES, hmac_min_bytes) {
                return Err(KeyError::HmacTooShort(len));
            }
        }
        let rsa = match &rsa_components {
            Some((n, e)) => parse_rsa(n, e, alg)?,
            None => Box::default(),
        };
        Ok(Self {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            key,
            rsa,
        })
    }

    /// An HMAC secret (`secret_env` / `secret_file`).
    pub fn hmac(secret: &[u8]) -> Result<Self, KeyError> {
        // HS384/HS512 need longer secrets; `accepts` enforces that per token.
        if secret.len() < MIN_HMAC_BYTES {
            return Err(KeyError::HmacTooShort(secret.len()));
        }
        Ok(Self {
            kid: None,
            alg: None,
            family: KeyFamily::Hmac,
            key: DecodingKey::from_secret(secret),
            rsa: Box::default(),
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// True when this key may verify a signature made with `alg`: the key's family
    /// must be the algorithm's, and a JWK that declares an `alg` verifies that one
    /// only (RFC 7517 §4.4; Wycheproof's "UsingRS256" vectors).
    pub fn accepts(&self, alg: Algorithm) -> bool {
        let long_enough = self.family != KeyFamily::Hmac
            || self
                .key
                .try_get_as_bytes()
                .is_ok_and(|k| k.len() >= hmac_min_bytes(alg));
        self.family == alg.family() && self.alg.is_none_or(|a| a == alg) && long_enough
    }

    /// The `alg` the JWK declares, if any.
    pub fn declared_algorithm(&self) -> Option<Algorithm> {
        self.alg
    }

    /// Whether `signature` (base64url, as in the token) is this key's signature of
    /// `message` under `alg`. The caller has checked [`VerificationKey::accepts`].
    pub(crate) fn verifies(&self, alg: Algorithm, message: &[u8], signature: &str) -> bool {
        if let Some((_, parsed)) = self.rsa.iter().find(|(a, _)| *a == alg) {
            return URL_SAFE_NO_PAD
                .decode(signature)
                .is_ok_and(|sig| parsed.verify_sig(message, &sig).is_ok());
        }
        jsonwebtoken::crypto::verify(signature, message, &self.key, alg.to_jwt()).unwrap_or(false)
    }
}

/// The RSA key parsed for each algorithm it may verify (its declared `alg`, or
/// all six RSA algorithms).
fn parse_rsa(
    n: &[u8],
    e: &[u8],
    declared: Option<Algorithm>,
) -> Result<Box<[(Algorithm, ParsedPublicKey)]>, KeyError> {
    let components = RsaPublicKeyComponents { n, e };
    Algorithm::ALL
        .into_iter()
        .filter(|alg| alg.family() == KeyFamily::Rsa && declared.is_none_or(|d| d == *alg))
        .map(|alg| {
            let parsed = components
                .to_parsed_public_key(rsa_parameters(alg))
                .map_err(|e| KeyError::Invalid(format!("RSA key: {e}")))?;
            Ok((alg, parsed))
        })
        .collect()
}

fn rsa_parameters(alg: Algorithm) -> &'static RsaParameters {
    use aws_lc_rs::signature as sig;
    match alg {
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => &sig::RSA_PKCS1_2048_8192_SHA256,
    }
}

fn hmac_min_bytes(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => MIN_HMAC_BYTES,
    }
}

/// The ROCA fingerprint (Nemec et al., CCS 2017): moduli generated by the
/// vulnerable Infineon library are, modulo each of these small primes, in the
/// subgroup generated by 65537. A random modulus passes all tests with negligible
/// probability.
fn has_roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let residue = n
            .iter()
            .fold(0u32, |acc, &b| (acc * 256 + u32::from(b)) % p);
        let generator = 65537 % p;
        let mut x = 1;
        loop {
            if x == residue {
                return true;
            }
            x = x * generator % p;
            if x == 1 {
                return false;
            }
        }
    })
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
    /// odd key (an encryption key, an unknown curve) does not take the set down;
    /// a set that is ambiguous or leaks secrets (duplicate `kid`, private key
    /// material, HMAC secrets beside public keys) is refused whole.
    pub fn from_jwks(document: &[u8]) -> Result<(Self, Vec<String>), KeyError> {
        let value: Value =
            serde_json::from_slice(document).map_err(|e| KeyError::Invalid(e.to_string()))?;
        let Some(entries) = value.get("keys").and_then(Value::as_array) else {
            return Err(KeyError::Invalid("a JWKS needs a 'keys' array".into()));
        };
        let mut kids: Vec<&str> = Vec::new();
        for entry in entries {
            if let Some(kid) = entry.get("kid").and_then(Value::as_str) {
                if kids.contains(&kid) {
                    return Err(KeyError::DuplicateKid(kid.to_owned()));
                }
                kids.push(kid);
            }
            let symmetric = entry.get("kty").and_then(Value::as_str) == Some("oct");
            if !symmetric && entry.get("d").is_some() {
                return Err(KeyError::PrivateMaterial);
            }
        }
        let symmetric = entries
            .iter()
            .filter(|e| e.get("kty").and_then(Value::as_str) == Some("oct"))
            .count();
        if symmetric > 0 && symmetric < entries.len() {
            return Err(KeyError::MixedSymmetry);
        }
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
        self.keys.iter().filter(move |k| {
            let kid_fits = match (kid, k.kid()) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            };
            kid_fits && k.accepts(alg)
        })
    }
}
