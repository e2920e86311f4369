//! Registered-claim validation (RFC 7519 §4.1) for one issuer: `exp` required,
//! `nbf`/`iat` honoured, all with the issuer's leeway; `iss` exact; `aud` any-of;
//! `azp` allow-list.

use super::error::TokenError;
use serde_json::{Map, Value};
use std::time::Duration;

/// What one issuer requires of a token's claims.
#[derive(Debug, Clone, Default)]
pub struct ClaimRules {
    /// Exact `iss`.
    pub issuer: String,
    /// When non-empty, `aud` must name one of these.
    pub audiences: Vec<String>,
    /// When non-empty, `azp`, if present, must be one of these.
    pub authorized_parties: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

impl ClaimRules {
    /// Validates `claims` at `now` (seconds since the epoch) and returns `exp`.
    pub fn validate(&self, claims: &Map<String, Value>, now: u64) -> Result<u64, TokenError> {
        let leeway = self.leeway.as_secs();
        let exp = numeric_date(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
        if now >= exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = numeric_date(claims, "nbf")? {
            if now.saturating_add(leeway) < nbf {
                return Err(TokenError::NotYetValid);
            }
        }
        if let Some(iat) = numeric_date(claims, "iat")? {
            if now.saturating_add(leeway) < iat {
                return Err(TokenError::IssuedInFuture);
            }
        }
        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.issuer => {}
            Some(Value::String(_)) => return Err(TokenError::UnknownIssuer),
            _ => return Err(TokenError::MissingClaim("iss")),
        }
        if !self.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => self.audiences.contains(aud),
                Some(Value::Array(auds)) => auds
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| self.audiences.iter().any(|want| want == a)),
                None => return Err(TokenError::MissingClaim("aud")),
                _ => false,
            };
            if !ok {
                return Err(TokenError::WrongAudience);
            }
        }
        if !self.authorized_parties.is_empty() {
            match claims.get("azp") {
                None => {}
                Some(Value::String(azp)) if self.authorized_parties.contains(azp) => {}
                Some(_) => return Err(TokenError::WrongAuthorizedParty),
            }
        }
        Ok(exp)
    }
}

/// A NumericDate claim: absent is `None`; present but not a non-negative number is
/// an error. Fractions are allowed by RFC 7519 and truncated.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
            _ => Err(TokenError::MissingClaim(name)),
        },
        Some(_) => Err(TokenError::MissingClaim(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        rules.validate(claims.as_object().unwrap(), NOW)
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
}
