//! What a token costs to verify (BENCHMARKS.md, scenario (b)), side by side in one run:
//!
//! - `bare/jsonwebtoken_decode`: `jsonwebtoken::decode` of a Clerk RS256 token —
//!   what a verifier built on the usual library pays (key rebuilt per call,
//!   signature, header and claims);
//! - `bare/signature_only`: the RSA signature check alone on a key parsed once
//!   (aws-lc-rs `ParsedPublicKey`) — the cryptographic floor;
//! - `portcullis/authenticate_fresh`: portcullis' whole authentication of a token
//!   it has not seen (parse, pick the issuer, verify, validate claims, cache);
//! - `portcullis/authenticate_cached`: the same token again (a cache hit);
//! - `portcullis/token_cache_key`: the cache key of one token.
//!
//! Run: `cargo bench --bench verify`. `scripts/bench` quotes the first two.

#[path = "../tests/support/tokens.rs"]
#[allow(dead_code)]
mod tokens;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::identity::claims::ClaimRules;
use portcullis::identity::keys::KeySet;
use portcullis::identity::{
    Algorithm, Authenticator, Credential, Issuer, IssuerKind, KeySource, TokenCache,
};
use portcullis::metrics::Metrics;
use portcullis::request::AuthzRequest;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use tokens::{ClerkClaims, SigningKey};

/// Distinct tokens, so no verification is a cache hit.
const POOL: usize = 5_000;

fn issuer(key: &SigningKey) -> Issuer {
    let jwks = serde_json::to_vec(&tokens::jwk_set(&[key])).expect("JWKS");
    let (keys, skipped) = KeySet::from_jwks(&jwks).expect("the JWKS loads");
    assert!(skipped.is_empty());
    Issuer {
        name: "clerk".into(),
        kind: IssuerKind::User,
        rules: ClaimRules {
            issuer: tokens::ISSUER.into(),
            audiences: vec![],
            authorized_parties: vec![tokens::AUTHORIZED_PARTY.into()],
            leeway: Duration::from_secs(5),
        },
        algorithms: vec![Algorithm::RS256],
        credentials: vec![Credential::Header {
            name: "authorization".into(),
            prefix: Some("Bearer ".into()),
        }],
        keys: KeySource::Static(Arc::new(keys)),
    }
}

fn request(token: &str) -> AuthzRequest {
    AuthzRequest::builder()
        .method("GET")
        .path("/api/videos")
        .header("authorization", &format!("Bearer {token}"))
        .build()
}

fn bench_verify(c: &mut Criterion) {
    let key = SigningKey::generate("bench");
    let pool: Vec<String> = (0..POOL)
        .map(|_| ClerkClaims::user("USER").sign(&key))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    let mut bare = c.benchmark_group("bare");
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk()).expect("JWK");
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[tokens::ISSUER]);
    validation.validate_aud = false;
    let mut next = pool.iter().cycle();
    bare.bench_function("jsonwebtoken_decode", |b| {
        b.iter(|| {
            let token = next.next().expect("cycle");
            jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation)
                .expect("valid token")
        })
    });
    let (n, e) = (
        URL_SAFE_NO_PAD.decode(jwk_str(&key, "n")).expect("n"),
        URL_SAFE_NO_PAD.decode(jwk_str(&key, "e")).expect("e"),
    );
    let parsed = aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .to_parsed_public_key(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256)
        .expect("parsed key");
    let signed: Vec<(Vec<u8>, Vec<u8>)> = pool
        .iter()
        .map(|t| {
            let (input, sig) = t.rsplit_once('.').expect("three parts");
            (
                input.as_bytes().to_vec(),
                URL_SAFE_NO_PAD.decode(sig).expect("signature"),
            )
        })
        .collect();
    let mut next = signed.iter().cycle();
    bare.bench_function("signature_only", |b| {
        b.iter(|| {
            let (input, sig) = next.next().expect("cycle");
            parsed.verify_sig(input, sig).expect("valid signature")
        })
    });
    bare.finish();

    let mut ours = c.benchmark_group("portcullis");
    let requests: Vec<AuthzRequest> = pool.iter().map(|t| request(t)).collect();
    let fresh_authenticator = || {
        Authenticator::new(
            vec![issuer(&key)],
            TokenCache::new(
                portcullis::identity::token_cache::TokenCacheLimits::default(),
                portcullis::clock::Clock::System,
            ),
            1,
            Arc::new(Metrics::default()),
        )
    };
    // A new authenticator (outside the timing) for every POOL tokens: none is a
    // cache hit.
    ours.bench_function("authenticate_fresh", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let authenticator = fresh_authenticator();
                let chunk = &requests[..left.min(POOL)];
                let started = std::time::Instant::now();
                for request in chunk {
                    black_box(runtime.block_on(authenticator.authenticate(request, false)))
                        .expect("valid token");
                }
                total += started.elapsed();
                left -= chunk.len();
            }
            total
        })
    });
    let cached = fresh_authenticator();
    runtime
        .block_on(cached.authenticate(&requests[0], false))
        .expect("valid token");
    ours.bench_function("authenticate_cached", |b| {
        b.iter(|| runtime.block_on(cached.authenticate(black_box(&requests[0]), false)))
    });
    ours.bench_function("token_cache_key", |b| {
        b.iter(|| TokenCache::key(black_box(&pool[0])))
    });
    ours.finish();
}

fn jwk_str(key: &SigningKey, field: &str) -> String {
    key.jwk()[field].as_str().expect("JWK field").to_owned()
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
