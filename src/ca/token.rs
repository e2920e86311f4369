//! The service-token signer of `portcullis token issue`/`token jwks` and of the
//! tokens portcullis signs (docs/east-west.md): one ES256
//! key under `certs/tokens/`, created on first use, its `kid` the RFC 7638 JWK
//! thumbprint, its public half published as a JWKS (`tokens/jwks.json`, the
//! `jwks_file:` of a `kind: service` issuer). Tokens have the JWT-SVID shape
//! (JWT-SVID §3): `sub` = the caller's SPIFFE ID, `aud` required, `exp` required.

use super::store::{write_atomic, KEY_MODE, PUBLIC_MODE};
use super::IssueError;
use crate::identity::{SpiffeId, TrustDomain};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rcgen::KeyPair;
use serde_json::{json, Value};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default service token lifetime (`token issue --ttl`).
pub const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// The ES256 signing key and its public JWK coordinates.
pub struct TokenSigner {
    key_pem: String,
    x: String,
    y: String,
    kid: String,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Where the signer lives inside `certs/`.
pub fn key_path(tokens_dir: &Path) -> PathBuf {
    tokens_dir.join("signing-key.pem")
}

/// Where its JWKS is written.
pub fn jwks_path(tokens_dir: &Path) -> PathBuf {
    tokens_dir.join("jwks.json")
}

impl TokenSigner {
    /// Loads the key in `tokens_dir`, or creates it (0600) and its `jwks.json`
    /// when there is none. Returns whether it was created.
    pub fn load_or_create(tokens_dir: &Path) -> Result<(TokenSigner, bool), IssueError> {
        let path = key_path(tokens_dir);
        match std::fs::read_to_string(&path) {
            Ok(pem) => {
                let key = KeyPair::from_pem(&pem).map_err(|e| IssueError::BadPem {
                    path: path.clone(),
                    what: "ES256 signing key",
                    reason: e.to_string(),
                })?;
                Ok((TokenSigner::from_key(&key, &path)?, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                let signer = TokenSigner::from_key(&key, &path)?;
                write_atomic(&path, signer.key_pem.as_bytes(), KEY_MODE)?;
                let jwks = serde_json::to_string_pretty(&signer.jwks()).unwrap_or_default();
                write_atomic(
                    &jwks_path(tokens_dir),
                    format!("{jwks}\n").as_bytes(),
                    PUBLIC_MODE,
                )?;
                Ok((signer, true))
            }
            Err(e) => Err(IssueError::io(path)(e)),
        }
    }

    /// Loads the key in `tokens_dir` without ever creating one (the server's
    /// `tokens.key_dir`: a missing key is a config error, not a new identity).
    pub fn load(tokens_dir: &Path) -> Result<TokenSigner, IssueError> {
        let path = key_path(tokens_dir);
        let pem = std::fs::read_to_string(&path).map_err(IssueError::io(&path))?;
        let key = KeyPair::from_pem(&pem).map_err(|e| IssueError::BadPem {
            path: path.clone(),
            what: "ES256 signing key",
            reason: e.to_string(),
        })?;
        TokenSigner::from_key(&key, &path)
    }

    /// Signs `claims` as a compact JWS (ES256, `kid` = the key's thumbprint,
    /// `typ` = `typ`). The caller chooses every claim.
    pub fn sign(&self, claims: &Value, typ: &str) -> Result<String, IssueError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.into());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.key_pem.as_bytes())
            .map_err(|e| IssueError::Sign(e.to_string()))?;
        jsonwebtoken::encode(&header, claims, &key).map_err(|e| IssueError::Sign(e.to_string()))
    }

    fn from_key(key: &KeyPair, path: &Path) -> Result<TokenSigner, IssueError> {
        // An uncompressed P-256 point: 0x04 || x (32) || y (32).
        let raw = key.public_key_raw();
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 || raw.len() != 65 || raw[0] != 4 {
            return Err(IssueError::BadPem {
                path: path.to_owned(),
                what: "ES256 signing key",
                reason: "not a P-256 key: delete it to have a new one created".into(),
            });
        }
        let x = URL_SAFE_NO_PAD.encode(&raw[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&raw[33..]);
        let kid = thumbprint(&x, &y);
        Ok(TokenSigner {
            key_pem: key.serialize_pem(),
            x,
            y,
            kid,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWKS.
    pub fn jwks(&self) -> Value {
        json!({
            "keys": [{
                "kty": "EC",
                "crv": "P-256",
                "x": self.x,
                "y": self.y,
                "kid": self.kid,
                "alg": "ES256",
                "use": "sig",
            }]
        })
    }

    /// Mints a service token for `subject`, valid from `now` for `ttl`, issued by
    /// the trust domain (`iss` = `spiffe://TD`, as the `kind: service` issuer of
    /// docs/configuration.md expects).
    pub fn issue(
        &self,
        trust_domain: &TrustDomain,
        subject: &SpiffeId,
        audiences: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, IssueError> {
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            return Err(IssueError::NoAudience);
        }
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = json!({
            "iss": trust_domain.id().to_string(),
            "sub": subject.to_string(),
            "aud": audiences,
            "iat": iat,
            "exp": iat + ttl.as_secs(),
            "jti": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
        });
        self.sign(&claims, "JWT")
    }
}

/// RFC 7638 §3: SHA-256 over the required members in lexicographic order, no
/// whitespace, base64url.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_of_the_rfc_7517_p256_example() {
        // RFC 7517 appendix A.1's EC key; the thumbprint computed independently
        // (Python: json.dumps(sort_keys=True, separators=(',', ':')), SHA-256).
        let x = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
        let y = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";
        assert_eq!(
            thumbprint(x, y),
            "cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s"
        );
    }

    #[test]
    fn signer_is_created_once_and_its_tokens_verify_against_its_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, created) = TokenSigner::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (again, created) = TokenSigner::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(signer.kid(), again.kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(key_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let jwks = std::fs::read(jwks_path(dir.path())).unwrap();
        let (keys, skipped) = crate::identity::keys::KeySet::from_jwks(&jwks).unwrap();
        assert!(skipped.is_empty() && keys.has_kid(signer.kid()));

        let td = TrustDomain::new("example.org").unwrap();
        let sub = td.service("default", "videos").unwrap();
        let now = SystemTime::now();
        let token = signer
            .issue(&td, &sub, &["spiffe://example.org".into()], TOKEN_TTL, now)
            .unwrap();
        let jws = crate::identity::jws::CompactJws::parse(&token).unwrap();
        assert_eq!(jws.kid(), Some(signer.kid()));
        let payload = jws
            .verify(&keys, &[crate::identity::Algorithm::ES256])
            .unwrap();
        let claims: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(claims["sub"], "spiffe://example.org/ns/default/sa/videos");
        assert_eq!(claims["iss"], "spiffe://example.org");
        assert_eq!(claims["aud"], json!(["spiffe://example.org"]));
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            900
        );
        assert!(matches!(
            signer.issue(&td, &sub, &[], TOKEN_TTL, now),
            Err(IssueError::NoAudience)
        ));
    }
}
