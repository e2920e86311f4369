//! Registered-claim validation (RFC 7519 §4.1) for one issuer: `exp` required,
//! `nbf`/`iat` honoured, all with the issuer's leeway; `iss` exact; `aud` any-of;
//! `azp` allow-list. Only the registered claims are read (borrowed from the
//! payload, no map built): the rest of the claims are parsed only if a rule or
//! header asks for them, and are first checked (in one pass, no map) to name no
//! member twice, so that later parse cannot pick one of two values.

use super::error::TokenError;
use super::token_cache::TokenIds;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// What one issuer requires of a token's claims.
#[derive(Debug, Clone, Default)]
pub struct ClaimRules {
    /// Exact `iss`.
    pub issuer: std::sync::Arc<str>,
    /// When non-empty, `aud` must name one of these.
    pub audiences: Vec<String>,
    /// When non-empty, `azp`, if present, must be one of these.
    pub authorized_parties: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

/// The registered claims of a payload, each as the raw JSON it was written as:
/// `null` is kept apart from absent, and a wrongly typed claim is refused by
/// name rather than failing the whole payload. Any member named twice, at any
/// depth and whatever its name, makes the payload malformed (RFC 7519 §4: no
/// guessing which one counts).
#[derive(Debug, Deserialize)]
pub struct RegisteredClaims<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    iss: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    sub: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    aud: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    azp: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    exp: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    nbf: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    iat: Option<&'a RawValue>,
    /// Not validated: read so a revocation (docs/revocation.md) can name the token.
    #[serde(default, borrow, deserialize_with = "present")]
    jti: Option<&'a RawValue>,
    /// Clerk's session id (not registered, but read the same way for
    /// revocation by session).
    #[serde(default, borrow, deserialize_with = "present")]
    sid: Option<&'a RawValue>,
    /// The IdP subject of a token portcullis signed (docs/east-west.md), which
    /// a `sub` revocation names (docs/revocation.md).
    #[serde(default, borrow, deserialize_with = "present")]
    idp_sub: Option<&'a RawValue>,
}

/// A present claim, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

impl<'a> RegisteredClaims<'a> {
    /// Reads the registered claims of a JSON payload (an object).
    pub fn parse(payload: &'a str) -> Result<Self, TokenError> {
        // A derived struct would also read a JSON array, by position.
        if !payload.trim_start().starts_with('{') {
            return Err(TokenError::Malformed("the payload is not a JSON object"));
        }
        // The derived reader refuses only a repeated registered claim; a custom
        // claim (`role`) named twice would be read last-wins when the claims are
        // parsed for a rule or a header, long after this check.
        super::jws::refuse_duplicate_names(payload.as_bytes(), "the payload is not a JSON object")?;
        serde_json::from_str(payload)
            .map_err(|_| TokenError::Malformed("the payload is not a JSON object"))
    }

    /// `iss`, when it is a string.
    pub fn iss(&self) -> Option<Cow<'a, str>> {
        text(self.iss)
    }

    /// `sub`, when it is a non-empty string.
    pub fn sub(&self) -> Result<Cow<'a, str>, TokenError> {
        text(self.sub)
            .filter(|sub| !sub.is_empty())
            .ok_or(TokenError::MissingClaim("sub"))
    }

    /// What a revocation matches the token by: `jti`, `sid` and `idp_sub` as
    /// text (a number printed: a token must not escape its revocation by
    /// carrying a number where a string was expected), and `iat`.
    pub fn ids(&self) -> TokenIds {
        let id = |raw: Option<&RawValue>| identifier(raw).map(|id| Arc::from(id.as_ref()));
        TokenIds {
            jti: id(self.jti),
            sid: id(self.sid),
            idp_sub: id(self.idp_sub),
            issued_at: self.iat(),
        }
    }

    /// `iat` in whole seconds, when it is a valid NumericDate (validation
    /// refuses one that is not).
    pub fn iat(&self) -> Option<u64> {
        numeric_date(self.iat, "iat").ok().flatten()
    }
}

fn text<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    raw.and_then(|raw| serde_json::from_str::<Cow<'a, str>>(raw.get()).ok())
}

/// A claim naming something (`jti`, `sid`): a non-empty string, or a number as
/// JSON prints it.
fn identifier<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    let raw = raw?;
    match text(Some(raw)) {
        Some(text) => Some(text),
        None => serde_json::from_str::<serde_json::Number>(raw.get())
            .ok()
            .map(|n| n.to_string().into()),
    }
    .filter(|id| !id.is_empty())
}

impl ClaimRules {
    /// Validates `claims` at `now` (seconds since the epoch) and returns `exp`.
    pub fn validate(&self, claims: &RegisteredClaims<'_>, now: u64) -> Result<u64, TokenError> {
        let leeway = self.leeway.as_secs();
        let exp = numeric_date(claims.exp, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
        if now >= exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = numeric_date(claims.nbf, "nbf")? {
            if now.saturating_add(leeway) < nbf {
                return Err(TokenError::NotYetValid);
            }
        }
        if let Some(iat) = numeric_date(claims.iat, "iat")? {
            if now.saturating_add(leeway) < iat {
                return Err(TokenError::IssuedInFuture);
            }
        }
        match claims.iss() {
            Some(iss) if *iss == *self.issuer => {}
            Some(_) => return Err(TokenError::UnknownIssuer),
            None => return Err(TokenError::MissingClaim("iss")),
        }
        if !self.audiences.is_empty() {
            let Some(aud) = claims.aud else {
                return Err(TokenError::MissingClaim("aud"));
            };
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Audience<'a> {
                One(#[serde(borrow)] Cow<'a, str>),
                Many(#[serde(borrow)] Vec<Cow<'a, str>>),
            }
            let ok = match serde_json::from_str::<Audience<'_>>(aud.get()) {
                Ok(Audience::One(aud)) => self.audiences.iter().any(|want| *want == aud),
                Ok(Audience::Many(auds)) => auds
                    .iter()
                    .any(|a| self.audiences.iter().any(|want| want == a)),
                Err(_) => false,
            };
            if !ok {
                return Err(TokenError::WrongAudience);
            }
        }
        if !self.authorized_parties.is_empty() {
            if let Some(raw) = claims.azp {
                match text(Some(raw)) {
                    Some(azp) if self.authorized_parties.iter().any(|p| *p == azp) => {}
                    _ => return Err(TokenError::WrongAuthorizedParty),
                }
            }
        }
        Ok(exp)
    }
}

/// A NumericDate claim: absent is `None`; present but not a non-negative number is
/// an error. Fractions are allowed by RFC 7519 and truncated.
fn numeric_date(raw: Option<&RawValue>, name: &'static str) -> Result<Option<u64>, TokenError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    match serde_json::from_str::<serde_json::Number>(raw.get()) {
        Ok(n) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
            _ => Err(TokenError::MissingClaim(name)),
        },
        Err(_) => Err(TokenError::MissingClaim(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const NOW: u64 = 1_800_000_000;

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: "https://clerk.example.com".into(),
            audiences: vec![],
            authorized_parties: vec!["https://app.example.com".into()],
            leeway: Duration::from_secs(30),
        }
    }

    fn check(rules: &ClaimRules, claims: Value) -> Result<u64, TokenError> {
        let payload = claims.to_string();
        rules.validate(&RegisteredClaims::parse(&payload)?, NOW)
    }

    #[test]
    fn claim_validation_table() {
        let iss = "https://clerk.example.com";
        let base = rules();
        let with_aud = ClaimRules {
            audiences: vec!["api".into(), "other".into()],
            ..rules()
        };
        let cases: Vec<(&ClaimRules, Value, Result<u64, TokenError>)> = vec![
            (&base, json!({"iss": iss, "exp": NOW + 60}), Ok(NOW + 60)),
            (&base, json!({"iss": iss, "exp": NOW - 10}), Ok(NOW - 10)), // within leeway
            (
                &base,
                json!({"iss": iss, "exp": NOW - 30}),
                Err(TokenError::Expired),
            ),
            (
                &base,
                json!({"iss": iss}),
                Err(TokenError::MissingClaim("exp")),
            ),
            (
                &base,
                json!({"iss": iss, "exp": "soon"}),
                Err(TokenError::MissingClaim("exp")),
            ),
            (
                &base,
                json!({"iss": iss, "exp": -5}),
                Err(TokenError::MissingClaim("exp")),
            ),
            (
                &base,
                json!({"iss": iss, "exp": (NOW + 60) as f64 + 0.5}),
                Ok(NOW + 60),
            ),
            (
                &base,
                json!({"iss": iss, "exp": NOW + 60, "nbf": NOW + 20}),
                Ok(NOW + 60),
            ),
            (
                &base,
                json!({"iss": iss, "exp": NOW + 600, "nbf": NOW + 31}),
                Err(TokenError::NotYetValid),
            ),
            (
                &base,
                json!({"iss": iss, "exp": NOW + 600, "iat": NOW + 300}),
                Err(TokenError::IssuedInFuture),
            ),
            (
                &base,
                json!({"iss": "https://evil", "exp": NOW + 60}),
                Err(TokenError::UnknownIssuer),
            ),
            (
                &base,
                json!({"iss": 7, "exp": NOW + 60}),
                Err(TokenError::MissingClaim("iss")),
            ),
            (
                &base,
                json!({"exp": NOW + 60}),
                Err(TokenError::MissingClaim("iss")),
            ),
            // Clerk session tokens carry no aud: not required when none configured.
            (
                &base,
                json!({"iss": iss, "exp": NOW + 60, "aud": "whatever"}),
                Ok(NOW + 60),
            ),
            (
                &with_aud,
                json!({"iss": iss, "exp": NOW + 60, "aud": "api"}),
                Ok(NOW + 60),
            ),
            (
                &with_aud,
                json!({"iss": iss, "exp": NOW + 60, "aud": ["x", "other"]}),
                Ok(NOW + 60),
            ),
            (
                &with_aud,
                json!({"iss": iss, "exp": NOW + 60, "aud": ["x"]}),
                Err(TokenError::WrongAudience),
            ),
            (
                &with_aud,
                json!({"iss": iss, "exp": NOW + 60, "aud": 5}),
                Err(TokenError::WrongAudience),
            ),
            (
                &with_aud,
                json!({"iss": iss, "exp": NOW + 60}),
                Err(TokenError::MissingClaim("aud")),
            ),
            (
                &base,
                json!({"iss": iss, "exp": NOW + 60, "azp": "https://app.example.com"}),
                Ok(NOW + 60),
            ),
            (
                &base,
                json!({"iss": iss, "exp": NOW + 60, "azp": "https://evil.example.com"}),
                Err(TokenError::WrongAuthorizedParty),
            ),
            (
                &base,
                json!({"iss": iss, "exp": NOW + 60, "azp": ["https://app.example.com"]}),
                Err(TokenError::WrongAuthorizedParty),
            ),
        ];
        for (i, (rules, claims, want)) in cases.into_iter().enumerate() {
            assert_eq!(check(rules, claims.clone()), want, "case {i}: {claims}");
        }
    }

    #[test]
    fn null_and_duplicate_registered_claims_are_refused() {
        let rules = rules();
        let iss = "https://clerk.example.com";
        let exp = NOW + 60;
        let parse =
            |payload: &str| RegisteredClaims::parse(payload).and_then(|c| rules.validate(&c, NOW));
        assert_eq!(
            parse(&format!(r#"{{"iss":"{iss}","exp":{exp},"nbf":null}}"#)),
            Err(TokenError::MissingClaim("nbf")),
            "null is not a NumericDate"
        );
        assert_eq!(
            parse(&format!(r#"{{"iss":"{iss}","exp":null}}"#)),
            Err(TokenError::MissingClaim("exp"))
        );
        assert!(
            matches!(
                parse(&format!(
                    r#"{{"iss":"{iss}","exp":{exp},"exp":{}}}"#,
                    NOW + 9999
                )),
                Err(TokenError::Malformed(_))
            ),
            "a claim named twice is refused, not last-wins"
        );
        assert_eq!(
            parse(&format!(
                r#"{{"iss":"https:\/\/clerk.example.com","exp":{exp}}}"#
            )),
            Ok(exp),
            "escapes in strings are decoded"
        );
        for not_an_object in [
            "[1]",
            r#"["https://clerk.example.com",null,null,null,1]"#,
            "1",
            "",
        ] {
            assert!(
                matches!(parse(not_an_object), Err(TokenError::Malformed(_))),
                "{not_an_object}"
            );
        }
        assert_eq!(
            RegisteredClaims::parse(r#"{"sub":""}"#).unwrap().sub(),
            Err(TokenError::MissingClaim("sub"))
        );
    }

    #[test]
    fn revocation_ids_read_strings_and_numbers() {
        let ids = |payload: Value| RegisteredClaims::parse(&payload.to_string()).unwrap().ids();
        let text = |id: Option<Arc<str>>| id.map(|id| id.to_string());
        let cases = [
            (
                json!({"jti": "j-1", "sid": "sess_1"}),
                Some("j-1"),
                Some("sess_1"),
            ),
            // Numbers name a token as well as strings do: never "absent".
            (json!({"jti": 42, "sid": 7}), Some("42"), Some("7")),
            (json!({"jti": 1.5, "sid": -3}), Some("1.5"), Some("-3")),
            (json!({"jti": "", "sid": null}), None, None),
            (json!({"jti": ["j"], "sid": {"id": 1}}), None, None),
            (json!({}), None, None),
        ];
        for (payload, jti, sid) in cases {
            let got = ids(payload.clone());
            assert_eq!(text(got.jti).as_deref(), jti, "{payload}");
            assert_eq!(text(got.sid).as_deref(), sid, "{payload}");
        }
        let got = ids(json!({"idp_sub": "user_2x", "iat": NOW}));
        assert_eq!(text(got.idp_sub).as_deref(), Some("user_2x"));
        assert_eq!(got.issued_at, Some(NOW));
    }

    #[test]
    fn a_member_named_twice_anywhere_is_refused() {
        const TWICE: TokenError = TokenError::Malformed("a JSON member name appears twice");
        let head = r#""iss":"https://clerk.example.com","exp":1800000060,"sub":"u""#;
        let many: String = (0..40).map(|i| format!(r#","c{i}":{i}"#)).collect();
        let cases: &[(&str, String, Result<(), TokenError>)] = &[
            (
                "a normal payload",
                format!(r#"{{{head},"role":"USER","n":{{"a":[1,{{"b":2}}]}}}}"#),
                Ok(()),
            ),
            (
                "one name in sibling objects",
                format!(r#"{{{head},"a":{{"b":1}},"c":{{"b":2}},"b":[{{"b":3}},{{"b":4}}]}}"#),
                Ok(()),
            ),
            (
                "a custom claim",
                format!(r#"{{{head},"role":"USER","role":"ADMIN"}}"#),
                Err(TWICE),
            ),
            (
                "a registered claim",
                format!(r#"{{{head},"sub":"admin"}}"#),
                Err(TWICE),
            ),
            (
                "a nested key",
                format!(r#"{{{head},"a":{{"b":1,"b":2}}}}"#),
                Err(TWICE),
            ),
            (
                "a key inside an array",
                format!(r#"{{{head},"a":[{{}},{{"b":1,"b":1}}]}}"#),
                Err(TWICE),
            ),
            (
                "equal after unescaping",
                format!(r#"{{{head},"role":"USER","r\u006fle":"ADMIN"}}"#),
                Err(TWICE),
            ),
            (
                "many members, none twice",
                format!(r#"{{{head}{many}}}"#),
                Ok(()),
            ),
            (
                "many members, the first again last",
                format!(r#"{{{head}{many},"iss":"x"}}"#),
                Err(TWICE),
            ),
            (
                "many members, a late one twice",
                format!(r#"{{{head}{many},"c39":0}}"#),
                Err(TWICE),
            ),
            (
                "not JSON",
                format!(r#"{{{head},"role":}}"#),
                Err(TokenError::Malformed("the payload is not a JSON object")),
            ),
        ];
        for (case, payload, want) in cases {
            let got = RegisteredClaims::parse(payload).map(|_| ());
            assert_eq!(&got, want, "{case}: {payload}");
        }
    }
}
