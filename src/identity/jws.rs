//! JWS compact serialization (RFC 7515 §7.1): parsing and signature verification.
//! Only the compact form exists here; JSON serialization is not a token.

use super::algorithm::Algorithm;
use super::error::TokenError;
use super::keys::KeySet;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

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
        // Before the derived reader, which refuses a repeated field it knows but
        // not an unknown one.
        refuse_duplicate_names(&header_json, "the header is not JSON")?;
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

/// Refuses JSON in which some object names a member twice, at any depth (and
/// JSON that does not parse, as `not_json`). RFC 7515 §4 and RFC 7519 §4 let a
/// parser either refuse such JSON or keep the last value; keeping one means a
/// signer and a reader can disagree about which `role` a token carries, so
/// portcullis refuses. Names are compared after unescaping (`"r\u006fle"` is
/// `"role"`).
///
/// One pass, no tree built: values are skipped, only the names of the objects
/// being read are kept (borrowed from the input unless they contain escapes).
pub(super) fn refuse_duplicate_names(
    json: &[u8],
    not_json: &'static str,
) -> Result<(), TokenError> {
    let mut reader = serde_json::Deserializer::from_slice(json);
    match UniqueNames
        .deserialize(&mut reader)
        .and_then(|()| reader.end())
    {
        Ok(()) => Ok(()),
        // The walk accepts every type, so its only data error is a repeated name;
        // bad syntax, early end or too deep a nesting are other categories.
        Err(e) if e.is_data() => Err(TokenError::Malformed("a JSON member name appears twice")),
        Err(_) => Err(TokenError::Malformed(not_json)),
    }
}

/// Objects up to this many members keep their names in a `Vec` (a linear scan
/// beats hashing for the handful of claims a token has); larger ones switch to a
/// set, so a crafted object costs O(n), not O(n²).
const LINEAR_NAMES: usize = 16;

/// Walks one JSON value, failing on the first object that repeats a name.
struct UniqueNames;

impl<'de> DeserializeSeed<'de> for UniqueNames {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueNames {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(UniqueNames)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(name) = map.next_key_seed(MemberName)? {
            let repeated = if many.is_empty() && few.len() < LINEAR_NAMES {
                let seen = few.contains(&name);
                few.push(name);
                seen
            } else {
                many.extend(few.drain(..));
                !many.insert(name)
            };
            if repeated {
                return Err(de::Error::custom("a member name appears twice"));
            }
            map.next_value_seed(UniqueNames)?;
        }
        Ok(())
    }
}

/// A member name, unescaped; borrowed from the input when it has no escapes.
struct MemberName;

impl<'de> DeserializeSeed<'de> for MemberName {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for MemberName {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(name))
    }

    fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str) -> String {
        let part = |json: &str| URL_SAFE_NO_PAD.encode(json);
        format!("{}.{}.c2ln", part(header), part(r#"{"sub":"u"}"#))
    }

    #[test]
    fn a_header_member_named_twice_is_refused() {
        const TWICE: TokenError = TokenError::Malformed("a JSON member name appears twice");
        let cases: &[(&str, Result<(), TokenError>)] = &[
            (r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#, Ok(())),
            (r#"{"alg":"RS256","kid":"k1","kid":"k2"}"#, Err(TWICE)),
            (r#"{"alg":"RS256","alg":"HS256"}"#, Err(TWICE)),
            (r#"{"alg":"RS256","x":1,"x":2}"#, Err(TWICE)),
            (r#"{"alg":"RS256","\u0061lg":"HS256"}"#, Err(TWICE)),
            (r#"{"alg":"RS256","x":{"y":[{"z":1,"z":1}]}}"#, Err(TWICE)),
            (
                r#"{"alg":"RS256","#,
                Err(TokenError::Malformed("the header is not JSON")),
            ),
        ];
        for (header, want) in cases {
            let got = CompactJws::parse(&token(header)).map(|_| ());
            assert_eq!(&got, want, "{header}");
        }
    }
}
