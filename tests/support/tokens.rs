//! Test signing keys and Clerk-shaped session tokens, good and forged.
//!
//! Keys are RSA-2048, generated at test time with `aws-lc-rs` (no checked-in private
//! keys). Tokens are minted with `jsonwebtoken`, like Clerk's session tokens: `sub`,
//! `azp`, `sid`, `iss`, `iat`, `nbf`, `exp`, a custom `role` claim, and no `aud`.
//! The forgeries ([`tampered`], [`alg_none`], [`hs256_with_public_key`]) are built by
//! hand, because no honest JWT library will produce them.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{json, Value};

/// The `iss` of every token the test issuer mints (the `clerk` issuer of the config).
pub const ISSUER: &str = "https://clerk.example.test";
/// The only `azp` the test config accepts.
pub const AUTHORIZED_PARTY: &str = "https://app.example.test";

/// An RSA signing key of the test issuer, with the public half as a JWK.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    /// The public key's JWK `n` (modulus) and `e` (exponent), base64url.
    n: String,
    e: String,
    public_pem: String,
}

impl SigningKey {
    /// Generates a fresh RSA-2048 key published under `kid`.
    pub fn generate(kid: &str) -> Self {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("generate an RSA-2048 key");
        let pkcs8: Pkcs8V1Der = pair.as_der().expect("PKCS#8 encoding of the RSA key");
        // jsonwebtoken's aws-lc backend signs with an RFC 8017 `RSAPrivateKey`;
        // `from_rsa_pem` unwraps it from the PKCS#8 PEM for us.
        let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
            .expect("jsonwebtoken accepts the PKCS#8 PEM");
        let public = pair.public_key();
        let spki: PublicKeyX509Der = public.as_der().expect("SPKI encoding of the public key");
        Self {
            kid: kid.to_owned(),
            encoding,
            n: URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            e: URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
            public_pem: pem("PUBLIC KEY", spki.as_ref()),
        }
    }

    /// The key id tokens signed with this key carry in their header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK, as Clerk publishes it.
    pub fn jwk(&self) -> Value {
        json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e })
    }

    /// The public key as a SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }
}

/// A JWK set (`{"keys": [...]}`) publishing the public halves of `keys`.
pub fn jwk_set(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|key| key.jwk()).collect::<Vec<_>>() })
}

/// The claims of a Clerk session token. Builder methods make the bad variants.
#[derive(Clone, Debug, Serialize)]
pub struct ClerkClaims {
    pub sub: String,
    pub sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl ClerkClaims {
    /// A valid token for a fresh user (random `user_...` subject) with `role`,
    /// issued now and valid for ten minutes.
    pub fn user(role: &str) -> Self {
        let now = now();
        Self {
            sub: format!("user_{:016x}", rand::random::<u64>()),
            sid: format!("sess_{:016x}", rand::random::<u64>()),
            azp: Some(AUTHORIZED_PARTY.to_owned()),
            iss: ISSUER.to_owned(),
            iat: now,
            nbf: now,
            exp: now + 600,
            role: Some(role.to_owned()),
        }
    }

    /// Expired two minutes ago (well beyond the config's 5 s leeway).
    pub fn expired(mut self) -> Self {
        let now = now();
        (self.iat, self.nbf, self.exp) = (now - 900, now - 900, now - 120);
        self
    }

    /// Not valid before two minutes from now (well beyond the 5 s leeway).
    pub fn not_yet_valid(mut self) -> Self {
        let now = now();
        (self.iat, self.nbf, self.exp) = (now, now + 120, now + 900);
        self
    }

    /// Claims to come from issuer `iss`.
    pub fn issuer(mut self, iss: &str) -> Self {
        self.iss = iss.to_owned();
        self
    }

    /// Names `azp` as the authorized party (the frontend the session belongs to).
    pub fn authorized_party(mut self, azp: &str) -> Self {
        self.azp = Some(azp.to_owned());
        self
    }

    /// Signs these claims with `key` (RS256, `kid` in the header): a compact JWS.
    pub fn sign(&self, key: &SigningKey) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, self, &key.encoding).expect("sign the test token")
    }
}

/// `token` with its payload rewritten by `edit` and the original signature kept.
pub fn tampered(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let [header, payload, signature] = split(token);
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap())
        .expect("the payload is JSON");
    edit(&mut claims);
    format!("{header}.{}.{signature}", b64_json(&claims))
}

/// An unsigned token (`alg: none`, empty signature) carrying `claims`.
pub fn alg_none(claims: &ClerkClaims, kid: &str) -> String {
    let header = json!({ "alg": "none", "typ": "JWT", "kid": kid });
    format!("{}.{}.", b64_json(&header), b64_json(claims))
}

/// The classic algorithm confusion: an HS256 token whose HMAC secret is the bytes of
/// `key`'s public PEM, under `key`'s kid. A verifier that lets the token's `alg` pick
/// the algorithm and feeds it "the key" would accept it.
pub fn hs256_with_public_key(claims: &ClerkClaims, key: &SigningKey) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    let secret = EncodingKey::from_secret(key.public_pem.as_bytes());
    jsonwebtoken::encode(&header, claims, &secret).expect("sign the HS256 forgery")
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since_epoch.as_secs()).unwrap()
}

fn split(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    parts.try_into().expect("a compact JWS has three parts")
}

fn b64_json(value: &impl Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// PEM armour around `der` with the given label, 64 columns per line.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
