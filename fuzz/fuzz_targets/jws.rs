//! Token parsing as `Authenticator::authenticate` runs it before any key is
//! touched: the compact JWS, its unverified payload, the registered claims and
//! their validation; and the JWKS reader on the same bytes. An input of the form
//! `TOKEN\nJWKS` also has the token's signature checked with that key set under
//! every algorithm, so fuzzed keys meet fuzzed signatures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::identity::claims::{ClaimRules, RegisteredClaims};
use portcullis::identity::jws::{CompactJws, MAX_TOKEN_BYTES};
use portcullis::identity::keys::KeySet;
use portcullis::identity::Algorithm;
use std::time::Duration;

/// An instant inside the lifetime of the seed tokens (2027).
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        token_claims(token);
    }
    let _ = KeySet::from_jwks(data);
    if let Some(newline) = data.iter().position(|b| *b == b'\n') {
        let (token, jwks) = (&data[..newline], &data[newline + 1..]);
        let (Ok(token), Ok((keys, _))) = (std::str::from_utf8(token), KeySet::from_jwks(jwks))
        else {
            return;
        };
        if let Ok(jws) = CompactJws::parse(token) {
            let _ = jws.verify_signature(&keys, &Algorithm::ALL);
        }
    }
});

fn token_claims(token: &str) {
    let Ok(jws) = CompactJws::parse(token) else {
        return;
    };
    assert!(token.len() <= MAX_TOKEN_BYTES, "an oversized token parsed");
    assert_eq!(token.matches('.').count(), 2, "a JWS has three parts");
    let _ = jws.kid();
    let _ = jws.algorithm(&Algorithm::ALL);
    let Ok(payload) = jws.unverified_payload_text() else {
        return;
    };
    let Ok(claims) = RegisteredClaims::parse(&payload) else {
        return;
    };
    let _ = claims.sub();
    let rules = ClaimRules {
        issuer: claims
            .iss()
            .as_deref()
            .unwrap_or("https://clerk.example.test")
            .into(),
        audiences: vec!["https://api.example.test".into()],
        authorized_parties: vec!["https://app.example.test".into()],
        leeway: Duration::from_secs(30),
    };
    for now in [0, NOW, u64::MAX] {
        if let Ok(exp) = rules.validate(&claims, now) {
            assert!(now < exp.saturating_add(30), "an expired token validated");
        }
    }
}
